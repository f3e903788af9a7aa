"""hetero_lr's shared pieces: parameters, batches, the plaintext twin, role setup and the weight store.

The two modes live in `hetero_lr_arbiter` and `hetero_lr_two_party`; the step, the model and the
loader in `hetero_lr`. What each role learns is stated in `hetero_lr`'s module docstring.

Encrypted weights (`EncWeights`): a host never holds its weights in the clear while training.
They stay encrypted under the key holder's key (the arbiter's, or the guest's in two-party mode)
at frac_bits F. After each update their scale is F + `UPDATE_SHIFT`; the host refreshes them
through the key holder: it sends [[W + r]] with r uniform in [0, max_int / 2) (statistically
hiding, as in `operators.he_arith`), the key holder decrypts, shifts right by `UPDATE_SHIFT` and
re-encrypts, and the host subtracts floor(r / 2^shift): [[w]] at scale F again, off by at most
one unit in the last place (2^-F). The key holder sees only W + r. At the end the host has its
final weights decrypted the same way (the model reveals them).
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from sharelearn.algorithms.context import Dataset, StepContext
from sharelearn.core.codec import expect_type
from sharelearn.core.errors import ConfigError, CryptoError, DataError, ProtocolError
from sharelearn.core.executor import Executor
from sharelearn.core.link import Link
from sharelearn.core.messages import Message
from sharelearn.core.types import Wire
from sharelearn.crypto import he
from sharelearn.crypto.he import EncArray, Encoded
from sharelearn.operators.he_arith import MaskedDecryption

__all__ = [
    "COEF_FRAC",
    "MODES",
    "PENALTIES",
    "UPDATE_SHIFT",
    "X_FRAC",
    "EncWeights",
    "EpochEnd",
    "Fitted",
    "HeteroLrParams",
    "Plan",
    "Scaler",
    "Setup",
    "Tags",
    "Trainer",
    "batch_sizes",
    "batches",
    "check_loss",
    "check_scale",
    "converged",
    "decrypt_expected",
    "decrypt_ints",
    "epoch_end",
    "fit_plain",
    "fitted",
    "guest_block",
    "host_block",
    "learning_rate_at",
    "masked_start",
    "obj",
    "recv_plan",
    "recv_request",
    "require_data",
    "serve_decrypt",
    "serve_refresh",
    "setup_roles",
    "shared_seed",
    "sigma_mask_bits",
    "small_masks",
    "step_plain",
    "to_ints",
]

STEP = "hetero_lr"
MODES = ("arbiter", "two_party")
PENALTIES = ("l2", "none")
X_FRAC = 16  # fixed-point bits of features in X [[w]] and X^T [[d]] (features are scaled; 2^-16 ~ 1.5e-5)
COEF_FRAC = 40  # bits of the step's scalars (lr / 4m, 1 - lr * alpha): relative error 2^-40 / 1e-4 < 1e-8
UPDATE_SHIFT = 2 * X_FRAC + COEF_FRAC  # an update's scale above the weights' (X, X^T and a scalar)
STAT_BITS = 80  # statistical hiding of the small masks used where values are squared (2^-80)
_LOG2 = math.log(2.0)
_T = TypeVar("_T")


class Tags:
    """Every tag hetero_lr uses (scoped per epoch / batch by the role functions)."""

    PK: ClassVar[str] = "pk"
    SEED: ClassVar[str] = "seed"
    PLAN: ClassVar[str] = "plan"
    SCORES: ClassVar[str] = "u"  # [[u_h]] (arbiter mode) or [[u_h + s]]_G (two-party)
    MASK: ClassVar[str] = "s"  # two-party: [[s]]_H, the host's score mask under its own key
    RESIDUAL: ClassVar[str] = "d"  # [[d]] (arbiter mode) or [[d + s]]_G (two-party)
    GRAD: ClassVar[str] = "grad"  # the guest's masked gradient decryption
    LOSS_Z: ClassVar[str] = "loss.z"  # arbiter mode: [[z + r]] for the sum of squares
    LOSS_C: ClassVar[str] = "loss.c"  # arbiter mode: [[-2 r.z - r.r - 4 y'.z 2^S]]
    LOSS_Q: ClassVar[str] = "loss.q"  # two-party: [[-2Q + 4 y' 2^S]]_G
    LOSS_R: ClassVar[str] = "loss.r"  # two-party: [[s.(-2Q + 4 y' 2^S) + s.s]]_G
    REFRESH: ClassVar[str] = "refresh"  # a host's [[W + r]] to be shifted back to frac_bits
    FINAL: ClassVar[str] = "final"  # a host's final weights, decrypted under a mask
    EPOCH_END: ClassVar[str] = "epoch_end"


@dataclass(frozen=True, slots=True)
class HeteroLrParams:
    """Parameters of `hetero_lr`.

    Defaults train to convergence on data nobody tuned them for: scaled features, Nesterov
    momentum, and a generous epoch cap with a convergence test.

    Attributes:
        epochs: passes over the data (at most; early stopping may end sooner).
        batch_size: rows per mini-batch; 0 = the whole data set in one batch.
        learning_rate: step size at epoch 0 (with momentum, the settled step; see `step_plain`).
        decay: learning-rate decay; epoch e uses lr / (1 + decay * e) (or / sqrt(1 + decay * e)).
        decay_sqrt: use the square-root form of the decay.
        penalty: "l2" or "none" (the intercept is never penalised). L1 is not offered: its
            subgradient needs the sign of the host's weights, which stay encrypted while training.
        alpha: penalty strength.
        tol: stop when the epoch loss changes by less than tol * (1 + loss) in two epochs running;
            0 never stops early (`epochs` is then the exact count).
        momentum: Nesterov momentum mu (0 = plain mini-batch gradient descent).
        scale: each party standardises its own columns (mean 0, sd 1, computed locally) and
            the saved weights are folded back onto the raw columns.
        mode: "arbiter" (needs one party with role arbiter) or "two_party" (guest + one host).
        he_scheme: "paillier" or "ou".
        key_bits: HE key size (2048 for real use; tests use 1024).
        fit_intercept: learn an intercept (held by the guest).
        shuffle: reshuffle the rows every epoch (the guest draws the order's seed).
        seed: fixes the batch order (tests, reproducible runs); None draws one at random.
        frac_bits: fixed-point bits of encrypted partial scores.
    """

    epochs: int = 300
    batch_size: int = 1024
    learning_rate: float = 1.0
    decay: float = 0.0
    decay_sqrt: bool = False
    penalty: str = "l2"
    alpha: float = 0.01
    tol: float = 1e-5
    momentum: float = 0.9
    scale: bool = True
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
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
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


def step_plain(
    w: np.ndarray, v: np.ndarray, grad: np.ndarray, lr: float, params: HeteroLrParams, intercept: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One Nesterov step (Sutskever et al. 2013, in the look-ahead form Bengio et al. 2013 use).

    With G = grad + alpha w (the intercept, last when present, is not penalised) and the damped
    rate a = (1 - mu) lr (so that, once the velocity settles, a step is lr G as without momentum):
    v <- mu v - a G and w <- w + mu v_new - a G = w - a (1 + mu) G + mu^2 v. Every term is
    linear in w, v and grad, so hosts apply it to encrypted weights (`EncWeights.update`).
    """
    reg = np.zeros_like(w)
    k = len(w) - 1 if intercept else len(w)
    if params.penalty == "l2":
        reg[:k] = params.alpha * w[:k]
    g = grad + reg
    mu = params.momentum
    a = (1 - mu) * lr
    return w - a * (1 + mu) * g + mu * mu * v, mu * v - a * g


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
    offsets: list[float] | None = None,
) -> tuple[list[np.ndarray], list[float]]:
    """The same training in the clear on the parties' column blocks (guest first): the test oracle.

    Returns each block's weights (the guest's with the intercept last) and the epoch losses; when
    `gradients` is a list, each batch's per-block gradients are appended to it (for leak tests).
    Weights are on the raw columns; with `scale`, each host's constant -mean.(w / std) (which the
    host keeps as its intercept) is appended to `offsets` when given.
    """
    n = len(y)
    scalers = [Scaler.fit(b, params.scale) for b in blocks]
    blocks = [sc.apply(b) for sc, b in zip(scalers, blocks, strict=True)]
    ws = [np.zeros(b.shape[1] + (1 if i == 0 and params.fit_intercept else 0)) for i, b in enumerate(blocks)]
    vs = [np.zeros_like(w) for w in ws]
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
            steps = [
                step_plain(w, v, g, lr, params, i == 0 and params.fit_intercept)
                for i, (g, w, v) in enumerate(zip(grads, ws, vs, strict=True))
            ]
            ws, vs = [st[0] for st in steps], [st[1] for st in steps]
        losses.append(total / n)
        check_loss(losses, epoch)
        if converged(losses, params.tol):
            break
    folded = [
        sc.fold(w[:-1] if i == 0 and params.fit_intercept else w)
        for i, (sc, w) in enumerate(zip(scalers, ws, strict=True))
    ]
    if offsets is not None:
        offsets.extend(c for _, c in folded[1:])
    guest_w, guest_c = folded[0]
    first = np.append(guest_w, ws[0][-1] + guest_c) if params.fit_intercept else guest_w
    return [first, *(w for w, _ in folded[1:])], losses


def converged(losses: Sequence[float], tol: float) -> bool:
    """Stop when the epoch loss changed by less than `tol` (relative to 1 + loss) twice in a row."""
    if not tol or len(losses) < 3:
        return False
    a, b, c = losses[-3:]
    return abs(a - b) < tol * (1 + abs(b)) and abs(b - c) < tol * (1 + abs(c))


def check_loss(losses: Sequence[float], epoch: int) -> None:
    """Stop with a clear error instead of diverging silently (unscaled features, a large rate)."""
    loss = losses[-1]
    if not math.isfinite(loss) or loss > 100 * max(losses[0], _LOG2):
        raise DataError(
            f"hetero_lr diverged at epoch {epoch + 1} (training loss {loss:.4g}, started at "
            f"{losses[0]:.4g}): keep `scale: true` (the default) or lower `learning_rate`"
        )


@dataclass(frozen=True, slots=True)
class Scaler:
    """A party's own standardisation of its columns (local: nothing about it crosses the wire)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, on: bool) -> Scaler:
        k = x.shape[1]
        if not on:
            return cls(np.zeros(k), np.ones(k))
        std = np.std(x, axis=0)
        return cls(np.mean(x, axis=0), np.where(std > 0, std, 1.0))

    def apply(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        return out

    def fold(self, w: np.ndarray) -> tuple[np.ndarray, float]:
        """Weights on the raw columns and the constant they add: x_s.w = x.(w / std) - mean.(w / std)."""
        raw = w / self.std
        return raw, -float(self.mean @ raw)


# -- roles ---------------------------------------------------------------------------------------


@dataclass
class Setup:
    guest: str
    hosts: list[str]
    arbiter: str | None


def setup_roles(ctx: StepContext, params: HeteroLrParams) -> Setup:
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
    return Setup(guests[0], hosts, arbiters[0] if params.mode == "arbiter" else None)


def require_data(ctx: StepContext, label: bool) -> Dataset:
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


def shared_seed(ctx: StepContext, setup: Setup, params: HeteroLrParams) -> int:
    """The guest draws the batch-order seed and tells the hosts (row order is not secret)."""
    if ctx.party == setup.guest:
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        for h in setup.hosts:
            ctx.link.send(h, "seed", seed)
        return seed
    return int(expect_type(ctx.link.recv(setup.guest, "seed"), int, peer=setup.guest, tag="seed"))


def epoch_end(link: Link, setup: Setup, decider: str, loss: float | None, stop: bool) -> tuple[float, bool]:
    """The decider (arbiter, or the guest in two-party mode) tells everyone the loss and the verdict."""
    if link.me == decider:
        for p in [setup.guest, *setup.hosts]:
            if p != decider:
                link.send(p, Tags.EPOCH_END, EpochEnd(float(loss or 0.0), stop).to_wire())
        return float(loss or 0.0), stop
    msg = EpochEnd.from_wire(link.recv(decider, Tags.EPOCH_END), peer=decider, tag=Tags.EPOCH_END)
    if not math.isfinite(msg.loss):
        raise ProtocolError(f"{decider}/{Tags.EPOCH_END}: expected a finite loss, got {msg.loss}")
    return msg.loss, msg.stop


@dataclass
class Trainer:
    """Per-role bookkeeping: the loss curve, and the seconds spent computing on ciphertexts."""

    ctx: StepContext
    params: HeteroLrParams
    setup: Setup
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
        return converged(self.history, self.params.tol)


# -- messages ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan(Message):
    """A party tells the key holder its sizes, so it knows the shape of every request to expect."""

    TAG: ClassVar[str] = Tags.PLAN
    rows: int
    features: int


@dataclass(frozen=True, slots=True)
class EpochEnd(Message):
    """The decider's verdict after an epoch: the epoch's mean loss and whether to stop."""

    TAG: ClassVar[str] = Tags.EPOCH_END
    loss: float
    stop: bool


def recv_plan(link: Link, peer: str) -> Plan:
    plan = Plan.from_wire(link.recv(peer, Tags.PLAN), peer=peer)
    if plan.rows < 1 or plan.features < 1:
        raise ProtocolError(f"{peer}/{Tags.PLAN}: sizes must be positive, got {plan}")
    return plan


# -- fixed-point helpers -------------------------------------------------------------------------


def batch_sizes(n: int, params: HeteroLrParams) -> list[int]:
    """The number of rows of each mini-batch (what the key holder expects, batch by batch)."""
    size = params.batch_size or n
    return [min(size, n - i) for i in range(0, n, size)]


def obj(values: Sequence[int] | np.ndarray) -> np.ndarray:
    """Python ints as a 1-d object array (exact big-integer arithmetic in numpy)."""
    out = np.empty(len(values), dtype=object)
    out[:] = [int(v) for v in values]
    return out


def to_ints(x: np.ndarray, frac_bits: int) -> np.ndarray:
    """round(x * 2^frac_bits) as an object array of Python ints (exact, as the HE encoder does)."""
    out: np.ndarray = (
        np.rint(np.ldexp(np.asarray(x, dtype=np.float64), frac_bits)).astype(np.int64).astype(object)
    )
    return out


def sigma_mask_bits(pk: he.HEPublicKey, value_bits: int, m: int) -> int:
    """Bits of the masks for values that get squared: hide `value_bits`-bit values to 2^-80.

    Sums of m squares of masked values must stay below the key's max_int.

    Raises:
        CryptoError: the key is too small for that (use a larger key or fewer frac_bits).
    """
    bits = value_bits + STAT_BITS
    room = (pk.max_int.bit_length() - 8 - m.bit_length()) // 2
    if bits > room:
        raise CryptoError(
            f"hetero_lr: a {pk.scheme} key with max_int of {pk.max_int.bit_length()} bits cannot hold "
            f"the masked loss terms ({2 * bits} bits); use a larger key_bits or fewer frac_bits"
        )
    return bits


def small_masks(bits: int, m: int) -> np.ndarray:
    return obj([secrets.randbits(bits) for _ in range(m)])


# -- strict decryption service -------------------------------------------------------------------


def masked_start(link: Link, keyholder: str, tag: str, c: EncArray) -> MaskedDecryption:
    """Start a masked decryption that keeps its scale label, so the key holder can check it."""
    bound = c.pk.max_int // 2
    masks = [secrets.randbelow(bound) for _ in range(c.size)]
    masked = c + Encoded(obj(masks).reshape(c.shape), c.frac_bits)
    link.send(keyholder, tag, masked.to_wire())
    return MaskedDecryption(link, keyholder, tag, c.frac_bits, c.shape, masks)


def recv_request(
    link: Link, peer: str, tag: str, sk: he.HEPrivateKey, shape: tuple[int, ...], frac_bits: int
) -> EncArray:
    """Receive a decryption request from `peer`, refusing any other shape or precision."""
    try:
        c = EncArray.from_wire(link.recv(peer, tag), sk.public)
    except (ProtocolError, CryptoError) as exc:
        raise ProtocolError(f"{link.me}: refused {peer}'s {tag!r} decryption request: {exc}") from exc
    if c.pack is not None or c.shape != shape or c.frac_bits != frac_bits:
        raise ProtocolError(
            f"{link.me}: refused {peer}'s {tag!r} decryption request: expected shape {shape} at "
            f"frac_bits {frac_bits}, got shape {c.shape} at frac_bits {c.frac_bits}"
            + (" (packed)" if c.pack is not None else ""),
            peer=peer,
            tag=tag,
        )
    return c


def serve_decrypt(
    link: Link,
    peer: str,
    tag: str,
    sk: he.HEPrivateKey,
    *,
    shape: tuple[int, ...],
    frac_bits: int,
    executor: Executor | None = None,
) -> list[int]:
    """Decrypt the one request the protocol expects now from `peer` under `tag` and answer it.

    Returns the decrypted integers (the key holder's view: masked values only).
    """
    c = recv_request(link, peer, tag, sk, shape, frac_bits)
    ints = decrypt_ints(sk, c, executor)
    link.send(peer, f"{tag}.plain", list[Wire](ints))
    return ints


def decrypt_ints(sk: he.HEPrivateKey, c: EncArray, executor: Executor | None) -> list[int]:
    plain = he.decrypt(sk, dataclasses.replace(c, frac_bits=0), executor=executor)
    return [int(v) for v in np.asarray(plain, dtype=object).ravel().tolist()]


def decrypt_expected(
    link: Link, peer: str, tag: str, sk: he.HEPrivateKey, shape: tuple[int, ...]
) -> list[int]:
    """Decrypt an expected integer-scale request for the key holder's own use (nothing is sent back)."""
    return decrypt_ints(sk, recv_request(link, peer, tag, sk, shape, 0), None)


def serve_refresh(
    link: Link, peer: str, sk: he.HEPrivateKey, *, size: int, frac_bits: int, executor: Executor | None = None
) -> None:
    """Shift a host's masked weights [[W + r]] back by UPDATE_SHIFT bits and return them encrypted."""
    c = recv_request(link, peer, Tags.REFRESH, sk, (size,), frac_bits + UPDATE_SHIFT)
    shifted = [v >> UPDATE_SHIFT for v in decrypt_ints(sk, c, executor)]
    out = he.encrypt(sk.public, obj(shifted), executor=executor)
    link.send(peer, f"{Tags.REFRESH}.enc", out.to_wire())


@dataclass
class EncWeights:
    """A host's weights and Nesterov velocity, encrypted under the key holder's key.

    The host never sees either in the clear; the key holder sees them only under masks.
    """

    keyholder: str
    w: EncArray  # at frac_bits F
    v: EncArray  # the velocity, at frac_bits F
    frac_bits: int

    @classmethod
    def zeros(cls, keyholder: str, pk: he.HEPublicKey, k: int, frac_bits: int) -> EncWeights:
        zero = he.encrypt(pk, np.zeros(k), frac_bits=frac_bits)
        return cls(keyholder, zero, he.encrypt(pk, np.zeros(k), frac_bits=frac_bits), frac_bits)

    def scores(self, x: np.ndarray) -> EncArray:
        """[[X w]] at frac_bits F + X_FRAC."""
        return he.matmul_plain(x, self.w, frac_bits=X_FRAC)

    def update(self, link: Link, x: np.ndarray, d: EncArray, lr: float, params: HeteroLrParams) -> None:
        """`step_plain` on ciphertexts with grad = X^T d / 4m, then a refresh through the key holder."""
        m, k, mu = len(x), self.w.size, params.momentum
        lr = (1 - mu) * lr  # the damped rate of `step_plain`
        g = he.matmul_plain(x.T, d, frac_bits=X_FRAC)
        if g.frac_bits != self.frac_bits + 2 * X_FRAC:
            expected = self.frac_bits + X_FRAC
            raise CryptoError(f"hetero_lr: residual at frac_bits {d.frac_bits}, expected {expected}")
        a, c = (lr * params.alpha if params.penalty == "l2" else 0.0), lr / (4 * m)
        w, v = self.w, self.v
        v_new = (
            w.mul(-a, frac_bits=COEF_FRAC) + v.mul(mu, frac_bits=COEF_FRAC) - g.mul(c, frac_bits=COEF_FRAC)
        )
        w_new = (
            w.mul(1.0 - a * (1 + mu), frac_bits=COEF_FRAC)
            + v.mul(mu * mu, frac_bits=COEF_FRAC)
            - g.mul(c * (1 + mu), frac_bits=COEF_FRAC)
        )
        both = he.concatenate([w_new, v_new])
        bound = both.pk.max_int // 2
        masks = [secrets.randbelow(bound) for _ in range(both.size)]
        link.send(self.keyholder, Tags.REFRESH, (both + Encoded(obj(masks), both.frac_bits)).to_wire())
        back = EncArray.from_wire(link.recv(self.keyholder, f"{Tags.REFRESH}.enc"), both.pk)
        if back.shape != both.shape or back.frac_bits != 0:
            where = f"{self.keyholder}/{Tags.REFRESH}.enc"
            raise ProtocolError(f"{where}: expected {both.shape} integer ciphertexts", peer=self.keyholder)
        fresh = dataclasses.replace(
            back - Encoded(obj([r >> UPDATE_SHIFT for r in masks]), 0), frac_bits=self.frac_bits
        )
        self.w, self.v = fresh[:k], fresh[k:]

    def reveal(self, link: Link) -> np.ndarray:
        """The final weights, decrypted by the key holder under a mask (the model reveals them)."""
        out: np.ndarray = masked_start(link, self.keyholder, Tags.FINAL, self.w).finish()
        return out


@dataclass(frozen=True, slots=True)
class Fitted:
    """What a role function returns: its part of the model and its bookkeeping."""

    role: str
    weights: np.ndarray
    intercept: float
    history: list[float]
    he_seconds: float


def fitted(role: str, trainer: Trainer, w: np.ndarray, intercept: bool, scaler: Scaler) -> Fitted:
    """The party's weights folded back onto its raw columns; the scaling's constant joins its intercept."""
    weights, b = (w[:-1], float(w[-1])) if intercept else (w, 0.0)
    raw, shift = scaler.fold(np.asarray(weights, dtype=np.float64))
    return Fitted(role, raw, b + shift, trainer.history, trainer.he_seconds)


def check_scale(c: EncArray, frac_bits: int, peer: str, tag: str) -> EncArray:
    if c.frac_bits != frac_bits or c.pack is not None:
        raise ProtocolError(
            f"{peer}/{tag}: expected unpacked ciphertexts at frac_bits {frac_bits}, got {c.frac_bits}",
            peer=peer,
            tag=tag,
        )
    return c


def guest_block(ctx: StepContext, params: HeteroLrParams) -> tuple[np.ndarray, np.ndarray, Scaler]:
    """The guest's scaled features (with a column of ones for the intercept), 0/1 labels, scaler."""
    data = require_data(ctx, label=True)
    x, y = np.asarray(data.x, dtype=np.float64), np.asarray(data.y, dtype=np.float64)
    scaler = Scaler.fit(x, params.scale)
    x = scaler.apply(x)
    return (np.hstack([x, np.ones((len(y), 1))]) if params.fit_intercept else x), y, scaler


def host_block(ctx: StepContext, params: HeteroLrParams) -> tuple[np.ndarray, Scaler]:
    """A host's scaled features and its scaler."""
    x = np.asarray(require_data(ctx, label=False).x, dtype=np.float64)
    scaler = Scaler.fit(x, params.scale)
    return scaler.apply(x), scaler
