"""Step `hetero_lr`: vertical logistic regression (guest with labels, one or more hosts, an arbiter).

Arbiter mode (Hardy et al. 2017, the coordinated LR of FATE). With the sigmoid's Taylor expansion
sigma(z) ~ 1/2 + z/4, the scaled residual of row i is d'_i = 4 (sigma(z_i) - y_i) = z_i + 2 - 4 y_i,
which is linear in every party's partial score u_p = X_p w_p. Per mini-batch:

1. Each host sends [[u_h]] (Paillier or OU under the arbiter's key) to the guest, and [[sum u_h^2]].
   With several hosts, host k also receives [[u_h]] from each earlier host h and returns
   [[sum u_h u_k]] to the guest (for the loss's cross terms).
2. The guest forms [[d']] = sum_h [[u_h]] + (u_g + 2 - 4 y) and sends it to every host.
3. Every party computes its encrypted gradient [[X_p^T d']] (a multi-exponentiation per feature),
   masks it and has the arbiter decrypt it (`operators.he_arith.masked_decrypt`): the arbiter only
   ever sees gradient + uniform mask. The party divides by 4m and steps, with its L1/L2 penalty.
4. The guest sends the arbiter [[L]], the Taylor log-loss of the batch,
   log 2 - y'z/2 + z^2/8 with y' = 2y - 1, assembled from the ciphertexts above.
   The arbiter decrypts the epoch's loss, decides on early stopping and tells every party.

Two-party mode (no arbiter, one host): each of guest and host holds its own key pair. The host sends
[[u_h]]_H; the guest sends [[v]]_G with v = u_g + 2 - 4 y. Each computes the cross part of its
gradient on the other's ciphertexts (guest: X_g^T [[u_h]]_H, host: X_h^T [[v]]_G) and has the other
decrypt it under a mask; its own part (X_g^T v, X_h^T u_h) it computes in the clear. The loss's cross
part [[sum c_i u_h,i]]_H is decrypted masked by the host, who adds sum u_h^2 / 8 before returning it.

What each party learns, by design: the arbiter (or, in two-party mode, the guest) learns the
per-epoch training loss; the other parties learn it too (it drives early stopping and the loss
curve). Each party learns its own gradients. Nobody receives another party's features, labels,
partial scores or gradients in the clear. In two-party mode the guest learns, per batch, the sum
of the masked loss cross term and sum u_h^2 / 8 (one scalar, aggregated over the batch).

Prediction (`HeteroLrModel.predict`): each host sends its partial scores u_h to the guest, as
fixed-point numbers in Z_2^64 blinded with pairwise masks that cancel in the sum when there are
several hosts; the guest adds its own part and applies the sigmoid. With one host the guest sees
u_h itself — the same information that the prediction and its own part already reveal.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from sharelearn.algorithms.context import BaselineData, Dataset, StepContext, StepDef
from sharelearn.algorithms.metrics import binary_metrics, pool_vertical
from sharelearn.algorithms.package import ModelPackage, publish_model
from sharelearn.core.codec import expect_array, expect_type
from sharelearn.core.errors import ConfigError, DataError, ProtocolError
from sharelearn.core.executor import Executor
from sharelearn.core.link import Link
from sharelearn.crypto import he
from sharelearn.crypto.fixedpoint import FixedPoint
from sharelearn.crypto.he import EncArray
from sharelearn.crypto.prg import expand_u64
from sharelearn.operators.he_arith import (
    MaskedDecryption,
    recv_encrypted,
    recv_public_key,
    send_encrypted,
    serve_masked_decrypt,
)

__all__ = [
    "HETERO_LR_STEP",
    "HeteroLrModel",
    "HeteroLrParams",
    "baseline",
    "batches",
    "fit_plain",
    "learning_rate_at",
    "load",
    "run_hetero_lr",
]

STEP = "hetero_lr"
MODES = ("arbiter", "two_party")
PENALTIES = ("l2", "l1", "none")
_X_FRAC = 16  # fixed-point bits of features in X^T [[d]] (features are scaled; 2^-16 ~ 1.5e-5)
_LOG2 = math.log(2.0)
_PREDICT_FP = FixedPoint(24)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class HeteroLrParams:
    """Parameters of `hetero_lr` (defaults follow FATE's hetero LR).

    Attributes:
        epochs: passes over the data (at most; early stopping may end sooner).
        batch_size: rows per mini-batch; 0 = the whole data set in one batch.
        learning_rate: step size at epoch 0.
        decay: learning-rate decay; epoch e uses lr / (1 + decay * e) (or / sqrt(1 + decay * e)).
        decay_sqrt: use the square-root form of the decay.
        penalty: "l2", "l1" or "none" (the intercept is never penalised).
        alpha: penalty strength.
        tol: stop when the epoch loss changes by less than this; 0 never stops early.
        mode: "arbiter" (needs one party with role arbiter) or "two_party" (guest + one host).
        he_scheme: "paillier" or "ou".
        key_bits: HE key size (2048 for real use; tests use 1024).
        fit_intercept: learn an intercept (held by the guest).
        shuffle: reshuffle the rows every epoch (the guest draws the order's seed).
        seed: fixes the batch order (tests, reproducible runs); None draws one at random.
        frac_bits: fixed-point bits of encrypted partial scores.
    """

    epochs: int = 20
    batch_size: int = 1024
    learning_rate: float = 0.15
    decay: float = 0.0
    decay_sqrt: bool = False
    penalty: str = "l2"
    alpha: float = 0.01
    tol: float = 1e-4
    mode: str = "arbiter"
    he_scheme: str = "paillier"
    key_bits: int = 2048
    fit_intercept: bool = True
    shuffle: bool = True
    seed: int | None = None
    frac_bits: int = 24

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 0, "batch_size must be >= 0 (0 = full batch)"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.decay >= 0, "decay must be >= 0"),
            (self.penalty in PENALTIES, f"penalty must be one of {', '.join(PENALTIES)}"),
            (self.alpha >= 0, "alpha must be >= 0"),
            (self.tol >= 0, "tol must be >= 0"),
            (self.mode in MODES, f"mode must be one of {', '.join(MODES)}"),
            (self.he_scheme in he.SCHEMES, f"he_scheme must be one of {', '.join(he.SCHEMES)}"),
            (
                self.key_bits >= 1024 and self.key_bits % 256 == 0,
                "key_bits must be >= 1024, a multiple of 256",
            ),
            (8 <= self.frac_bits <= 40, "frac_bits must be in 8..40"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"hetero_lr.{message}")


def learning_rate_at(params: HeteroLrParams, epoch: int) -> float:
    scale = 1.0 + params.decay * epoch
    return params.learning_rate / (math.sqrt(scale) if params.decay_sqrt else scale)


def batches(n: int, params: HeteroLrParams, seed: int, epoch: int) -> list[np.ndarray]:
    """The row indices of every mini-batch of `epoch` (identical at every party)."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if params.shuffle else np.arange(n)
    size = params.batch_size or n
    return [order[i : i + size] for i in range(0, n, size)]


def _step(w: np.ndarray, grad: np.ndarray, lr: float, params: HeteroLrParams, intercept: bool) -> np.ndarray:
    """One gradient step with the penalty on every weight but the intercept (the last, when present)."""
    reg = np.zeros_like(w)
    k = len(w) - 1 if intercept else len(w)
    if params.penalty == "l2":
        reg[:k] = params.alpha * w[:k]
    elif params.penalty == "l1":
        reg[:k] = params.alpha * np.sign(w[:k])
    out: np.ndarray = w - lr * (grad + reg)
    return out


def _taylor_loss(z: np.ndarray, y: np.ndarray) -> float:
    ys = 2.0 * y - 1.0
    return float(np.sum(_LOG2 - 0.5 * ys * z + 0.125 * z * z))


def fit_plain(
    blocks: Sequence[np.ndarray],
    y: np.ndarray,
    params: HeteroLrParams,
    seed: int,
    *,
    gradients: list[list[np.ndarray]] | None = None,
) -> tuple[list[np.ndarray], list[float]]:
    """The same training in the clear on the parties' column blocks (guest first): the test oracle.

    Returns each block's weights (the guest's with the intercept last) and the epoch losses; when
    `gradients` is a list, each batch's per-block gradients are appended to it (for leak tests).
    """
    n = len(y)
    ws = [np.zeros(b.shape[1] + (1 if i == 0 and params.fit_intercept else 0)) for i, b in enumerate(blocks)]
    xs = [np.hstack([blocks[0], np.ones((n, 1))]) if params.fit_intercept else blocks[0], *blocks[1:]]
    losses: list[float] = []
    for epoch in range(params.epochs):
        lr, total = learning_rate_at(params, epoch), 0.0
        for rows in batches(n, params, seed, epoch):
            z = sum(x[rows] @ w for x, w in zip(xs, ws, strict=True))
            total += _taylor_loss(z, y[rows])
            d = z + 2.0 - 4.0 * y[rows]
            grads = [x[rows].T @ d / (4 * len(rows)) for x in xs]
            if gradients is not None:
                gradients.append(grads)
            ws = [
                _step(w, g, lr, params, i == 0 and params.fit_intercept)
                for i, (g, w) in enumerate(zip(grads, ws, strict=True))
            ]
        losses.append(total / n)
        if params.tol and len(losses) > 1 and abs(losses[-2] - losses[-1]) < params.tol:
            break
    return ws, losses


# -- roles ---------------------------------------------------------------------------------------


@dataclass
class _Setup:
    guest: str
    hosts: list[str]
    arbiter: str | None


def _setup(ctx: StepContext, params: HeteroLrParams) -> _Setup:
    guests = [p for p, r in ctx.roles.items() if r == "guest"]
    hosts = [p for p, r in ctx.roles.items() if r == "host"]
    arbiters = [p for p, r in ctx.roles.items() if r == "arbiter"]
    if len(guests) != 1:
        raise ConfigError(f"hetero_lr needs exactly one party with role guest, the job has {guests}")
    if not hosts:
        raise ConfigError("hetero_lr needs at least one party with role host")
    if params.mode == "arbiter" and len(arbiters) != 1:
        raise ConfigError(f"hetero_lr mode arbiter needs exactly one party with role arbiter, got {arbiters}")
    if params.mode == "two_party" and len(hosts) != 1:
        raise ConfigError(f"hetero_lr mode two_party supports exactly one host, the job has {hosts}")
    missing = [p for p in [*guests, *hosts] if p not in ctx.data_parties]
    if missing:
        raise ConfigError(f"hetero_lr: parties {missing} have no data")
    return _Setup(guests[0], hosts, arbiters[0] if params.mode == "arbiter" else None)


def _require_data(ctx: StepContext, label: bool) -> Dataset:
    data = ctx.data
    if data is None:
        raise ConfigError(f"hetero_lr: party {ctx.party!r} has no data")
    if label and data.y is None:
        raise DataError(f"hetero_lr: guest {ctx.party!r} has no label column ({data.source})")
    if label:
        bad = ~np.isin(np.asarray(data.y), [0.0, 1.0])
        if bad.any():
            raise DataError(
                f"hetero_lr: guest {ctx.party!r}: labels must be 0 or 1, row {int(np.argmax(bad))} "
                f"has {np.asarray(data.y)[np.argmax(bad)]!r} ({data.source})"
            )
    if not ctx.aligned:
        raise ConfigError("hetero_lr needs aligned rows: run `psi` before it")
    return data


def _scalar(value: Any, peer: str, tag: str) -> float:
    v = expect_type(value, (int, float), peer=peer, tag=tag)
    if isinstance(v, bool) or not math.isfinite(float(v)):
        raise ProtocolError(f"{peer}/{tag}: expected a finite number")
    return float(v)


def _shared_seed(ctx: StepContext, setup: _Setup, params: HeteroLrParams) -> int:
    """The guest draws the batch-order seed and tells the hosts (row order is not secret)."""
    if ctx.party == setup.guest:
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        for h in setup.hosts:
            ctx.link.send(h, "seed", seed)
        return seed
    return int(expect_type(ctx.link.recv(setup.guest, "seed"), int, peer=setup.guest, tag="seed"))


def _epoch_end(link: Link, setup: _Setup, decider: str, loss: float | None, stop: bool) -> tuple[float, bool]:
    """The decider (arbiter, or the guest in two-party mode) tells everyone the loss and the verdict."""
    if link.me == decider:
        for p in [setup.guest, *setup.hosts]:
            if p != decider:
                link.send(p, "epoch_end", {"loss": loss, "stop": stop})
        return float(loss or 0.0), stop
    msg = expect_type(link.recv(decider, "epoch_end"), dict, peer=decider, tag="epoch_end")
    return _scalar(msg.get("loss"), decider, "epoch_end.loss"), bool(msg.get("stop"))


@dataclass
class _Trainer:
    """Per-role bookkeeping: the loss curve, and the seconds spent computing on ciphertexts."""

    ctx: StepContext
    params: HeteroLrParams
    setup: _Setup
    history: list[float] = field(default_factory=list)
    he_seconds: float = 0.0

    @property
    def executor(self) -> Executor | None:
        """The party's executor for HE batches (None: the calling thread)."""
        return self.ctx.executor

    def he(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run one HE computation (encrypt, X^T [[d]], decrypt, ...) and count its time."""
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.he_seconds += time.perf_counter() - started

    def progress(self, epoch: int, loss: float) -> None:
        self.history.append(loss)
        self.ctx.progress(
            f"epoch {epoch + 1}/{self.params.epochs} loss {loss:.6f}", {"epoch": epoch + 1, "loss": loss}
        )

    def converged(self) -> bool:
        h, tol = self.history, self.params.tol
        return bool(tol and len(h) > 1 and abs(h[-2] - h[-1]) < tol)


def _arbiter(ctx: StepContext, params: HeteroLrParams, setup: _Setup) -> HeteroLrModel:
    trainer = _Trainer(ctx, params, setup)
    pk, sk = trainer.he(he.keygen, params.he_scheme, params.key_bits)
    for p in [setup.guest, *setup.hosts]:
        ctx.link.send(p, "pk", pk.to_wire())
    sizes = expect_type(ctx.link.recv(setup.guest, "plan"), dict, peer=setup.guest, tag="plan")
    n = int(expect_type(sizes.get("rows"), int, peer=setup.guest, tag="plan.rows"))
    n_batches = int(expect_type(sizes.get("batches"), int, peer=setup.guest, tag="plan.batches"))
    for epoch in range(params.epochs):
        link, total = ctx.link.scope("epoch", epoch), 0.0
        for b in range(n_batches):
            bl = link.scope("batch", b)
            for p in [setup.guest, *setup.hosts]:
                serve_masked_decrypt(bl, p, "grad", sk, max_size=4096, executor=trainer.executor)
            loss_c = recv_encrypted(bl, setup.guest, "loss", pk, shape=(1,))
            total += float(trainer.he(he.decrypt, sk, loss_c)[0])
        trainer.progress(epoch, total / n)
        stop = trainer.converged()
        _epoch_end(link, setup, ctx.party, total / n, stop or epoch == params.epochs - 1)
        if stop:
            break
    return HeteroLrModel("arbiter", np.zeros(0), 0.0, trainer.history, trainer.he_seconds)


def _guest(ctx: StepContext, params: HeteroLrParams, setup: _Setup) -> HeteroLrModel:
    trainer = _Trainer(ctx, params, setup)
    data = _require_data(ctx, label=True)
    x, y = np.asarray(data.x, dtype=np.float64), np.asarray(data.y, dtype=np.float64)
    n = len(y)
    x1 = np.hstack([x, np.ones((n, 1))]) if params.fit_intercept else x
    w = np.zeros(x1.shape[1])
    seed = _shared_seed(ctx, setup, params)
    two_party = setup.arbiter is None
    host = setup.hosts[0]
    if two_party:
        pk, sk = trainer.he(he.keygen, params.he_scheme, params.key_bits)
        ctx.link.send(host, "pk", pk.to_wire())
        pk_other = recv_public_key(ctx.link, host, "pk", scheme=params.he_scheme, min_bits=params.key_bits)
    else:
        assert setup.arbiter is not None
        pk = recv_public_key(ctx.link, setup.arbiter, "pk", scheme=params.he_scheme, min_bits=params.key_bits)
        ctx.link.send(setup.arbiter, "plan", {"rows": n, "batches": len(batches(n, params, seed, 0))})
    for epoch in range(params.epochs):
        link, lr, total = ctx.link.scope("epoch", epoch), learning_rate_at(params, epoch), 0.0
        for b, rows in enumerate(batches(n, params, seed, epoch)):
            bl = link.scope("batch", b)
            xb, yb, m = x1[rows], y[rows], len(rows)
            ug = xb @ w
            v = ug + 2.0 - 4.0 * yb
            coef = -0.5 * (2.0 * yb - 1.0) + 0.25 * ug  # loss terms linear in the hosts' scores
            plain_loss = float(np.sum(_LOG2 - 0.5 * (2.0 * yb - 1.0) * ug + 0.125 * ug * ug))
            if two_party:
                u_h = recv_encrypted(bl, host, "u", pk_other, shape=(m,))
                send_encrypted(
                    bl,
                    host,
                    "v",
                    trainer.he(he.encrypt, pk, v, frac_bits=params.frac_bits, executor=trainer.executor),
                )
                cross = MaskedDecryption.start(
                    bl, host, "grad", trainer.he(he.matmul_plain, xb.T, u_h, frac_bits=_X_FRAC)
                )
                loss_c = trainer.he(he.matmul_plain, coef[None, :], u_h, frac_bits=params.frac_bits)
                loss_req = MaskedDecryption.start(bl, host, "loss", loss_c)
                serve_masked_decrypt(bl, host, "grad", sk, max_size=4096, executor=trainer.executor)
                grad = (xb.T @ v + cross.finish()) / (4 * m)
                total += plain_loss + float(loss_req.finish()[0])
            else:
                u_hosts = [recv_encrypted(bl, h, "u", pk, shape=(m,)) for h in setup.hosts]
                d = trainer.he(he.add_all, u_hosts) + v
                for h in setup.hosts:
                    send_encrypted(bl, h, "d", d)
                g_enc = trainer.he(he.matmul_plain, xb.T, d, frac_bits=_X_FRAC)
                grad = MaskedDecryption.start(bl, setup.arbiter or "", "grad", g_enc).finish() / (4 * m)
                loss = _encrypted_loss(bl, trainer, pk, u_hosts, coef) + plain_loss
                send_encrypted(bl, setup.arbiter or "", "loss", loss)
            w = _step(w, grad, lr, params, params.fit_intercept)
        if two_party:
            past, loss_e = trainer.history, total / n
            stop = (
                bool(params.tol and past and abs(past[-1] - loss_e) < params.tol)
                or epoch == params.epochs - 1
            )
            loss_e, stop = _epoch_end(link, setup, ctx.party, loss_e, stop)
        else:
            loss_e, stop = _epoch_end(link, setup, setup.arbiter or "", None, False)
        trainer.progress(epoch, loss_e)
        if stop:
            break
    weights, intercept = (w[:-1], float(w[-1])) if params.fit_intercept else (w, 0.0)
    return HeteroLrModel("guest", weights, intercept, trainer.history, trainer.he_seconds)


def _encrypted_loss(
    link: Link, trainer: _Trainer, pk: he.HEPublicKey, u_hosts: list[EncArray], coef: np.ndarray
) -> EncArray:
    """[[sum_i c_i U_i + sum_h sum u_h^2 / 8 + sum_{h<k} sum u_h u_k / 4]] (U = sum of host scores)."""
    setup, frac = trainer.setup, trainer.params.frac_bits
    parts = [trainer.he(he.matmul_plain, coef[None, :], u, frac_bits=frac) for u in u_hosts]
    for h in setup.hosts:
        parts.append(recv_encrypted(link, h, "uu", pk, shape=(1,)).mul(0.125))
    for k, hk in enumerate(setup.hosts):
        for hj in setup.hosts[:k]:
            parts.append(recv_encrypted(link, hk, f"cross.{hj}", pk, shape=(1,)).mul(0.25))
    return trainer.he(he.add_all, parts)


def _host(ctx: StepContext, params: HeteroLrParams, setup: _Setup) -> HeteroLrModel:
    trainer = _Trainer(ctx, params, setup)
    data = _require_data(ctx, label=False)
    x = np.asarray(data.x, dtype=np.float64)
    n = len(x)
    w = np.zeros(x.shape[1])
    seed = _shared_seed(ctx, setup, params)
    two_party = setup.arbiter is None
    g = setup.guest
    if two_party:
        pk_guest = recv_public_key(ctx.link, g, "pk", scheme=params.he_scheme, min_bits=params.key_bits)
        pk, sk = trainer.he(he.keygen, params.he_scheme, params.key_bits)
        ctx.link.send(g, "pk", pk.to_wire())
    else:
        assert setup.arbiter is not None
        pk = recv_public_key(ctx.link, setup.arbiter, "pk", scheme=params.he_scheme, min_bits=params.key_bits)
    me = setup.hosts.index(ctx.party)
    for epoch in range(params.epochs):
        link, lr = ctx.link.scope("epoch", epoch), learning_rate_at(params, epoch)
        for b, rows in enumerate(batches(n, params, seed, epoch)):
            bl = link.scope("batch", b)
            xb, m = x[rows], len(rows)
            u = xb @ w
            cu = trainer.he(he.encrypt, pk, u, frac_bits=params.frac_bits, executor=trainer.executor)
            send_encrypted(bl, g, "u", cu)
            if two_party:
                v = recv_encrypted(bl, g, "v", pk_guest, shape=(m,))
                cross = MaskedDecryption.start(
                    bl, g, "grad", trainer.he(he.matmul_plain, xb.T, v, frac_bits=_X_FRAC)
                )
                serve_masked_decrypt(bl, g, "grad", sk, max_size=4096, executor=trainer.executor)
                _serve_loss(bl, g, sk, 0.125 * float(u @ u), 2 * params.frac_bits)
                grad = (xb.T @ u + cross.finish()) / (4 * m)
            else:
                send_encrypted(
                    bl,
                    g,
                    "uu",
                    trainer.he(he.encrypt, pk, np.array([float(u @ u)]), frac_bits=params.frac_bits),
                )
                for later in setup.hosts[me + 1 :]:
                    send_encrypted(bl, later, "u_cross", cu)
                for earlier in setup.hosts[:me]:
                    c_other = recv_encrypted(bl, earlier, "u_cross", pk, shape=(m,))
                    dot = trainer.he(he.matmul_plain, u[None, :], c_other, frac_bits=params.frac_bits)
                    send_encrypted(bl, g, f"cross.{earlier}", dot)
                d = recv_encrypted(bl, g, "d", pk, shape=(m,))
                g_enc = trainer.he(he.matmul_plain, xb.T, d, frac_bits=_X_FRAC)
                grad = MaskedDecryption.start(bl, setup.arbiter or "", "grad", g_enc).finish() / (4 * m)
            w = _step(w, grad, lr, params, False)
        decider = g if two_party else setup.arbiter or ""
        loss_e, stop = _epoch_end(link, setup, decider, None, False)
        trainer.progress(epoch, loss_e)
        if stop:
            break
    return HeteroLrModel("host", w, 0.0, trainer.history, trainer.he_seconds)


def _serve_loss(link: Link, guest: str, sk: he.HEPrivateKey, extra: float, frac_bits: int) -> None:
    """Two-party loss: decrypt the guest's masked cross term and add sum u_h^2 / 8 before returning it."""
    value = link.recv(guest, "loss")
    c = EncArray.from_wire(value, sk.public)
    if c.size != 1 or c.frac_bits != 0:
        raise ProtocolError(f"{guest}/loss: expected one integer-scale ciphertext")
    plain = int(np.asarray(he.decrypt(sk, c), dtype=object).ravel()[0])
    link.send(guest, "loss.plain", [plain + round(extra * 2**frac_bits)])


# -- model ---------------------------------------------------------------------------------------


@dataclass
class HeteroLrModel:
    """One party's half of a hetero LR model: the guest's weights and intercept, or a host's weights."""

    role: str
    weights: np.ndarray
    intercept: float
    losses: list[float]
    he_seconds: float = 0.0
    step: str = STEP
    task: str = "binary"

    @property
    def history(self) -> Mapping[str, Sequence[float]]:
        return {"loss": self.losses} if self.losses else {}

    def predict(self, ctx: StepContext, data: Dataset | None) -> np.ndarray | None:
        """Collaborative scoring: hosts send blinded partial scores, only the guest learns P(y=1)."""
        hosts = [p for p, r in ctx.roles.items() if r == "host"]
        guests = [p for p, r in ctx.roles.items() if r == "guest"]
        if self.role == "arbiter":
            return None
        if data is None or not guests:
            raise ConfigError(f"hetero_lr predict: party {ctx.party!r} has no data or the job has no guest")
        x = np.asarray(data.x, dtype=np.float64)
        if x.shape[1] != len(self.weights):
            raise DataError(
                f"hetero_lr predict: party {ctx.party!r} has {x.shape[1]} features, its model expects "
                f"{len(self.weights)} ({data.source})"
            )
        u = x @ self.weights
        link = ctx.link.scope("predict")
        if self.role == "host":
            me = hosts.index(ctx.party)
            masked = _PREDICT_FP.encode(u)
            for other in hosts[me + 1 :]:
                seed = secrets.token_bytes(32)
                link.send(other, "pair_seed", seed)
                masked = masked + expand_u64(seed, len(u))
            for other in hosts[:me]:
                seed = expect_type(link.recv(other, "pair_seed"), bytes, peer=other, tag="pair_seed")
                masked = masked - expand_u64(bytes(seed), len(u))
            link.send(guests[0], "partial", masked)
            return None
        total = np.zeros(len(u), dtype=np.uint64)
        for h in hosts:
            total = total + expect_array(
                link.recv(h, "partial"), peer=h, tag="partial", dtype=np.uint64, shape=(len(u),)
            )
        z = u + self.intercept + _PREDICT_FP.decode(total)
        scores: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return scores

    @property
    def aligned_rows(self) -> bool:
        return True

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"role": self.role, "intercept": self.intercept, "losses": list(self.losses)}
        return meta, {"weights": np.asarray(self.weights, dtype=np.float64)}


def load(package: ModelPackage) -> HeteroLrModel:
    meta, arrays = package.meta, package.arrays
    role = meta.get("role")
    weights = arrays.get("weights")
    if role not in ("guest", "host", "arbiter") or weights is None or weights.ndim != 1:
        raise DataError(f"model {package.identity.model_id}: not a hetero_lr model part")
    return HeteroLrModel(
        str(role), weights.astype(np.float64), float(meta.get("intercept", 0.0)), list(meta.get("losses", []))
    )


def baseline(params: HeteroLrParams, datasets: Mapping[str, BaselineData]) -> dict[str, float]:
    """scikit-learn's LogisticRegression with the same penalty on the pooled data, scored in-sample."""
    from sklearn.linear_model import LogisticRegression

    x, y = pool_vertical(datasets)
    n = len(y)
    if params.penalty == "none" or params.alpha == 0:
        clf = LogisticRegression(C=np.inf, max_iter=2000, fit_intercept=params.fit_intercept)
    else:
        # mean log-loss + alpha * R(w)  <=>  C * sum log-loss + R(w) with C = 1 / (alpha * n)
        clf = LogisticRegression(
            C=1.0 / (params.alpha * n),
            l1_ratio=1.0 if params.penalty == "l1" else 0.0,
            solver="liblinear" if params.penalty == "l1" else "lbfgs",
            max_iter=2000,
            fit_intercept=params.fit_intercept,
        )
    clf.fit(x, y)
    m = binary_metrics(y, clf.predict_proba(x)[:, 1])
    return {k: m[k] for k in ("auc", "ks", "accuracy") if k in m}


def run_hetero_lr(ctx: StepContext, params: HeteroLrParams) -> dict[str, Any]:
    """Train; every party keeps (and saves) only its own part of the model."""
    setup = _setup(ctx, params)
    if ctx.role == "arbiter":
        model = _arbiter(ctx, params, setup)
    elif ctx.role == "guest":
        model = _guest(ctx, params, setup)
    elif ctx.role == "host":
        model = _host(ctx, params, setup)
    else:
        return {}
    path = publish_model(ctx, model)
    out: dict[str, Any] = {
        "epochs_run": len(model.losses),
        "final_loss": round(model.losses[-1], 6) if model.losses else None,
        "converged": len(model.losses) < params.epochs,
        "mode": params.mode,
        "he_scheme": params.he_scheme,
        "key_bits": params.key_bits,
        "model": str(path),
        "he_s": round(model.he_seconds, 3),
    }
    if model.role != "arbiter":
        out["features"] = len(model.weights)
    return out


HETERO_LR_STEP = StepDef(
    STEP,
    HeteroLrParams,
    run_hetero_lr,
    "vertical logistic regression with Paillier/OU (guest, hosts, arbiter or two-party)",
    load=load,
    baseline=baseline,
)
