"""The `ss_lr` step: logistic regression on secret shares (SecureML, Mohassel & Zhang 2017, §4).

Vertically split data after `psi`: the guest (party 0) holds features X_g and labels y, the host
(party 1) holds X_h, rows aligned. An optional `dealer` party deals Beaver triples; without one the
two parties make them with additively homomorphic encryption (`operators.triples`).

Protocol (over the `ss` engine, `operators.ss_arith`):

0. Each party standardises its own columns with its own training rows' mean and standard
   deviation (`standardize`, local: nothing is sent; the model keeps them for prediction).
1. Each party secret-shares its features (the guest appends the intercept column of ones), the
   guest shares y (`TableShape`, tag `shape`, announces the public row and column counts). The
   weights and the velocity start as shares of zero.
2. Every mini-batch B (a public order drawn from `seed`), with Nesterov momentum mu (Sutskever et
   al. 2013; mu = 0 is plain SGD): u = w + mu v, z = X_B u (matrix Beaver triple),
   p = sigmoid(z) (the chosen polynomial / piecewise approximation, `operators.ops`),
   g = X_B^T (p - y_B) / |B| + alpha u, v <- mu v - lr g, w <- w + v. The momentum terms are
   products with public constants (local, truncated). Triples for an epoch are prefetched in
   one exchange.
3. Training stops when the epoch's Brier score (mean (p - y)^2 over the epoch's rows, one Beaver
   product, opened as one scalar) has not improved by `tol` for `patience` epochs, or after
   `epochs` (a generous maximum). Both parties see the same score, so they stop together. (The
   Taylor loss of the loss curve is no stopping signal: it rises again once |logit| > 2.)
4. The model stays shared; parties named in `reveal_to` receive the weights in the clear
   (written to `ss_lr_weights.csv` in their folder, never into the step outputs); they are the
   weights of the standardised columns (each party's part keeps its own `mean` and `scale`).

Prediction (`SSLRModel.predict`, used by `evaluate` / `predict`): both parties share their rows,
compute z = X w on shares and open z to the guest only, who applies the exact sigmoid.

What each party learns: the row count and the feature counts (public); both learn each epoch's
training loss (one scalar, the Taylor log-loss of `_epoch_loss`, opened by design for the loss
curve, as hetero_lr's) and its Brier score (one scalar, for convergence stopping); the guest
learns the logits of the rows it predicts on (the scores, by design); `reveal_to` parties learn
the weights.
Comparisons (the clip of the `minimax` sigmoid, the ReLUs of `piecewise`) assume
|logit| < 2^LOGIT_BOUND_BITS = 2^12 (in reals; a logit of 4096 is far above any model trained on
standardised features, whose logits stay within a few tens): the engine's sign circuits read
frac_bits + 13 share bits, and the `minimax` clip reads the logit at 2^-10 resolution on 24
share bits (`ss_nonlinear._clip`). The bound cannot be checked without opening the logits.
Everything else a party receives is a uniform share, a uniform Beaver opening (e = x - a), a
dealer seed/correction, garbled tables and labels, or an HE ciphertext. The dealer learns the
triples and the shapes only.
Semi-honest, non-colluding parties.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from sharelearn.algorithms.context import BaselineData, Dataset, StepContext, StepDef
from sharelearn.algorithms.metrics import pool_vertical
from sharelearn.algorithms.package import ModelPackage, publish_model
from sharelearn.core.errors import ConfigError, DataError
from sharelearn.core.fileio import atomic_write_text
from sharelearn.core.messages import Message, recv, send
from sharelearn.core.types import F64Array, PartyId, U64Array
from sharelearn.crypto.fixedpoint import FixedPoint
from sharelearn.operators import ops as opsdef
from sharelearn.operators.ss_arith import SSOps
from sharelearn.operators.triples import (
    DealerTripleSource,
    HETripleSource,
    TripleSpec,
    he_triple_setup,
    matmul_spec,
    mul_spec,
    run_dealer,
)

__all__ = [
    "LOGIT_BOUND_BITS",
    "SS_LR_STEP",
    "Parties",
    "SSLRModel",
    "SSLRParams",
    "Scaler",
    "TableShape",
    "batch_specs",
    "load_ss_lr",
    "run_ss_lr",
    "ss_lr_baseline",
]

STEP = "ss_lr"
LOGIT_BOUND_BITS = 12  # |logit| < 2^12 (reals): the domain of ss_lr's garbled comparisons
_SIGMOID_MULS = {"minimax": 5, "minimax_unclipped": 5, "taylor": 3, "piecewise": 0}


@dataclass(frozen=True, slots=True)
class SSLRParams:
    """Parameters of `ss_lr`.

    Attributes:
        epochs: the most passes over the data (training usually stops earlier, see `tol`).
        batch_size: rows per mini-batch.
        learning_rate: gradient step.
        optimizer: "nesterov" (momentum `momentum`, the default) or "sgd".
        momentum: Nesterov's mu, in [0, 1).
        tol / patience: stop once the epoch's Brier score has not fallen by more than `tol` below its best
            for `patience` epochs in a row (tol = 0: run every epoch).
        standardize: scale each party's columns to mean 0, variance 1 (its own rows; local).
        sigmoid: "minimax" (default), "taylor" or "piecewise" (see `operators.ops` for the bounds).
        alpha: L2 penalty (weight decay per step lr * alpha).
        frac_bits: fixed-point fractional bits of the shares. Local truncation (SecureML) fails with
            probability 2^(l + 1 - 64) per value of magnitude 2^l ring units: with 16 bits a
            gradient entry below 2^9 fails with probability below 2^-22 (about 0.2 % for ten
            epochs of default_credit); more fractional bits make this worse, not better.
        fit_intercept: add an intercept (a column of ones at the guest).
        seed: public seed of the mini-batch order.
        reveal_to: parties that receive the trained weights in the clear.
        he_scheme: "ou" or "paillier" for dealer-free triples.
        key_bits: HE key size for dealer-free triples.
    """

    epochs: int = 100
    batch_size: int = 1024
    learning_rate: float = 0.2
    optimizer: Literal["sgd", "nesterov"] = "nesterov"
    momentum: float = 0.9
    tol: float = 1e-4
    patience: int = 5
    standardize: bool = True
    sigmoid: str = "minimax"
    alpha: float = 0.0
    frac_bits: int = 16
    fit_intercept: bool = True
    seed: int = 0
    reveal_to: tuple[str, ...] = field(default=())
    he_scheme: str = "ou"
    key_bits: int = 2048

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(
                f"ss_lr.epochs and ss_lr.batch_size must be positive, got {self.epochs}, {self.batch_size}"
            )
        if self.optimizer not in ("sgd", "nesterov") or not 0.0 <= self.momentum < 1.0:
            raise ConfigError(
                f"ss_lr.optimizer must be sgd or nesterov and momentum in [0, 1), got "
                f"{self.optimizer!r}, {self.momentum}"
            )
        if self.tol < 0 or self.patience < 1:
            raise ConfigError(f"ss_lr.tol must be >= 0 and patience >= 1, got {self.tol}, {self.patience}")
        if not 0.0 < self.learning_rate <= 10.0:
            raise ConfigError(f"ss_lr.learning_rate must be in (0, 10], got {self.learning_rate}")
        if self.alpha < 0:
            raise ConfigError(f"ss_lr.alpha must be non-negative, got {self.alpha}")
        if self.sigmoid not in opsdef.SIGMOID_METHODS:
            raise ConfigError(
                f"ss_lr.sigmoid must be one of {', '.join(opsdef.SIGMOID_METHODS)}, got {self.sigmoid!r}"
            )
        if not 8 <= self.frac_bits <= 24:
            raise ConfigError(f"ss_lr.frac_bits must be in 8..24, got {self.frac_bits}")
        if self.he_scheme not in ("ou", "paillier"):
            raise ConfigError(f"ss_lr.he_scheme must be 'ou' or 'paillier', got {self.he_scheme!r}")
        if self.key_bits < 1024:
            raise ConfigError(f"ss_lr.key_bits must be at least 1024, got {self.key_bits}")


@dataclass(frozen=True, slots=True)
class TableShape(Message):
    """Each party's public table shape: its row count and its column count (intercept included)."""

    TAG: ClassVar[str] = "shape"
    rows: int
    columns: int


@dataclass(frozen=True, slots=True)
class Scaler:
    """One party's standardisation: its columns' means and standard deviations (never sent)."""

    mean: F64Array
    scale: F64Array

    @classmethod
    def fit(cls, x: F64Array) -> Scaler:
        scale = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(scale > 0, scale, 1.0))

    def apply(self, x: F64Array, party: PartyId) -> F64Array:
        if x.shape[1] != self.mean.shape[0]:
            raise DataError(
                f"ss_lr: party {party!r} has {x.shape[1]} columns, its scaler {self.mean.shape[0]}"
            )
        return (x - self.mean) / self.scale


@dataclass(frozen=True, slots=True)
class Parties:
    """Who computes: the guest (party 0), the host (party 1) and the optional dealer."""

    guest: PartyId
    host: PartyId
    dealer: PartyId | None

    @classmethod
    def from_roles(cls, roles: Mapping[PartyId, str]) -> Parties:
        def one(role: str, required: bool) -> PartyId | None:
            found = [p for p, r in roles.items() if r == role]
            if len(found) > 1 or (required and not found):
                raise ConfigError(f"ss_lr needs exactly one {role} party, the job has {found or 'none'}")
            return found[0] if found else None

        guest, host = one("guest", True), one("host", True)
        assert guest is not None and host is not None  # required=True
        return cls(guest, host, one("dealer", False))

    def index(self, party: PartyId) -> int:
        return 0 if party == self.guest else 1


def batch_specs(b: int, d: int, sigmoid: str) -> list[TripleSpec]:
    """The triples one mini-batch of b rows and d columns consumes, in order."""
    mids = {
        "piecewise": [mul_spec((2 * b,)), mul_spec((2, b, 1))],  # B2A, then x [x >= 0]
        "minimax": [mul_spec((2, 2, b, 1))],  # the clip's bits times x -+ 8 (`gc_bridge.mul_bits`)
    }.get(sigmoid, [])
    mids += [mul_spec((b, 1))] * _SIGMOID_MULS[sigmoid]
    return [matmul_spec(b, d, 1), *mids, matmul_spec(d, b, 1)]


def _engine(ctx: StepContext, parties: Parties, params: SSLRParams) -> SSOps:
    index = parties.index(ctx.party)
    peer = parties.host if index == 0 else parties.guest
    link = ctx.link.scope("mpc")
    triples: DealerTripleSource | HETripleSource
    if parties.dealer is not None:
        triples = DealerTripleSource(link, dealer=parties.dealer, index=index)
    else:
        ctx.progress(f"generating {params.he_scheme} keys for dealer-free triples", {})
        triples = he_triple_setup(
            link,
            peer=peer,
            index=index,
            scheme=params.he_scheme,
            key_bits=params.key_bits,
            executor=ctx.executor,
        )
    # garbled sign tests read frac_bits + 13 share bits: exact while |value| < 2^12 (logits, clip)
    fixed = FixedPoint(params.frac_bits)
    cmp_bits = params.frac_bits + LOGIT_BOUND_BITS + 1
    return SSOps(link, peer=peer, index=index, triples=triples, fixed=fixed, cmp_bits=cmp_bits)


def _raw_features(data: Dataset | None, party: PartyId) -> F64Array:
    if data is None:
        raise DataError(f"ss_lr: party {party!r} has no data")
    x = np.asarray(data.x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise DataError(f"ss_lr: party {party!r} has non-finite feature values ({data.source})")
    return x


def _features(data: Dataset | None, party: PartyId, *, intercept: bool, scaler: Scaler | None) -> F64Array:
    x = _raw_features(data, party)
    x = scaler.apply(x, party) if scaler is not None else x
    return np.hstack([x, np.ones((x.shape[0], 1))]) if intercept else x


def _share_table(
    ctx: StepContext, engine: SSOps, data: Dataset | None, params: SSLRParams, scaler: Scaler | None = None
) -> tuple[U64Array, int, int]:
    """Share both parties' features; announce the column counts (public). Returns (X, d_g, d_h)."""
    x_own = _features(data, ctx.party, intercept=params.fit_intercept and engine.index == 0, scaler=scaler)
    n, d_own = x_own.shape
    send(engine.link, engine.peer, TableShape(n, d_own))
    got = recv(engine.link, engine.peer, TableShape)
    n_peer, d_peer = got.rows, got.columns
    if n_peer != n or not 0 <= d_peer < 1 << 16:
        raise DataError(
            f"ss_lr: {ctx.party!r} has {n} rows, {engine.peer!r} reports {n_peer}; run `psi` first"
        )
    d_g, d_h = (d_own, d_peer) if engine.index == 0 else (d_peer, d_own)
    x_g = engine.share(x_own if engine.index == 0 else None, owner=0, shape=(n, d_g))
    x_h = engine.share(x_own if engine.index == 1 else None, owner=1, shape=(n, d_h))
    return np.hstack([x_g, x_h]), d_g, d_h


def _labels(ctx: StepContext, engine: SSOps, data: Dataset | None, n: int) -> U64Array:
    y = None
    if engine.index == 0:
        if data is None or data.y is None:
            raise DataError(f"ss_lr: the guest {ctx.party!r} has no label column")
        y = np.asarray(data.y, dtype=np.float64).reshape(-1, 1)
        if not np.isin(y, (0.0, 1.0)).all():
            raise DataError(f"ss_lr: labels of {ctx.party!r} must be 0/1 for binary logistic regression")
    return engine.share(y, owner=0, shape=(n, 1))


def _converged(losses: Sequence[float], params: SSLRParams) -> bool:
    """No epoch of the last `patience` fell more than `tol` below the best score before them."""
    if params.tol == 0 or len(losses) <= params.patience:
        return False
    return min(losses[-params.patience :]) > min(losses[: -params.patience]) - params.tol


def _batch_step(
    engine: SSOps, x: U64Array, y: U64Array, state: tuple[U64Array, U64Array], params: SSLRParams
) -> tuple[U64Array, U64Array, U64Array, U64Array]:
    """One Nesterov (or SGD, mu = 0) step on a mini-batch; returns (w, v, logits, p - y)."""
    w, v = state
    mu = params.momentum if params.optimizer == "nesterov" else 0.0
    look = engine.add(w, engine.mul_public(v, mu)) if mu else w
    z = engine.matmul(x, look)
    residual = engine.sub(engine.sigmoid(z, params.sigmoid), y)
    g = engine.matmul(np.ascontiguousarray(x.T), residual)
    step = engine.mul_public(g, params.learning_rate / x.shape[0])
    if params.alpha:
        step = engine.add(step, engine.mul_public(look, params.learning_rate * params.alpha))
    v = engine.sub(engine.mul_public(v, mu), step) if mu else engine.neg(step)
    return engine.add(w, v), v, z, residual


def _brier(engine: SSOps, residual: U64Array) -> float:
    """Mean of (p - y)^2 over the epoch's rows: one Beaver product, the sum opened to both."""
    total = engine.mul(residual, residual).sum(dtype=np.uint64)
    opened = engine.reveal(total.reshape(1))
    assert opened is not None  # opened to both parties
    return float(opened[0] / residual.shape[0])


def _train(
    engine: SSOps, x: U64Array, y: U64Array, params: SSLRParams, progress: Any
) -> tuple[U64Array, list[float]]:
    """Mini-batch training on shares until the loss converges; returns the weight shares and losses."""
    n, d = x.shape
    w = np.zeros((d, 1), dtype=np.uint64)
    v = np.zeros((d, 1), dtype=np.uint64)
    order_rng = np.random.default_rng(params.seed)
    losses: list[float] = []
    brier: list[float] = []
    for epoch in range(params.epochs):
        order = order_rng.permutation(n)
        batches = [order[i : i + params.batch_size] for i in range(0, n, params.batch_size)]
        specs = [s for rows in batches for s in batch_specs(rows.size, d, params.sigmoid)]
        engine.triples.prefetch([*specs, mul_spec((2, n, 1)), mul_spec((n, 1))])  # type: ignore[attr-defined]
        logits, residuals = [], []
        for rows in batches:
            w, v, z, r = _batch_step(engine, x[rows], y[rows], (w, v), params)
            logits.append(z)
            residuals.append(r)
        losses.append(_epoch_loss(engine, np.concatenate(logits), y[order]))
        brier.append(_brier(engine, np.concatenate(residuals)))
        progress(f"epoch {epoch + 1}/{params.epochs}: loss {losses[-1]:.4f}", {"epoch": epoch + 1})
        if _converged(brier, params):
            break
    return w, losses


def _epoch_loss(engine: SSOps, z: U64Array, y: U64Array) -> float:
    """The epoch's Taylor log-loss from the logits the batches computed, opened as one scalar.

    log(1 + e^z) - y z ~ log 2 - (2y - 1) z / 2 + z^2 / 8 (second order, as `hetero_lr`), averaged
    over the epoch's rows with the weights each batch saw (the usual running training loss). One
    Beaver round makes y z and z^2 on shares; the parties sum locally and open only
    sum(z^2 - 8 y z + 4 z), i.e. the loss, to both (revealed by design, like hetero_lr's loss).
    The products are truncated like every fixed-point product (`SSOps.truncate`): a logit of
    magnitude 2^5 fails with probability 2^-21 per row, which would spoil that epoch's loss value
    only; training never reads it.
    """
    prod = engine.mul(np.stack([y, z]), np.stack([z, z]))
    sums = np.stack([prod[1].sum(dtype=np.uint64), z.sum(dtype=np.uint64), prod[0].sum(dtype=np.uint64)])
    total = sums @ np.array([1, 4, (1 << 64) - 8], dtype=np.uint64)  # wraps mod 2^64, as shares do
    opened = engine.reveal(total.reshape(1))
    assert opened is not None  # opened to both parties
    return float(np.log(2.0) + opened[0] / (8.0 * z.shape[0]))


@dataclass
class SSLRModel:
    """One party's part of a shared LR model: its weight share (and the weights, if revealed to it)."""

    role: str
    params: SSLRParams
    w_share: U64Array | None
    d_guest: int = 0
    d_host: int = 0
    weights: F64Array | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    scaler: Scaler | None = None
    step: str = STEP
    task: str = "binary"

    def predict(self, ctx: StepContext, data: Dataset | None) -> np.ndarray | None:
        """Collaborative prediction on shares; only the guest gets scores (exact sigmoid of z)."""
        parties = Parties.from_roles(ctx.roles)
        if ctx.party == parties.dealer:
            run_dealer(ctx.link.scope("mpc"), party0=parties.guest, party1=parties.host)
            return None
        if ctx.party not in (parties.guest, parties.host) or self.w_share is None:
            return None
        engine = _engine(ctx, parties, self.params)
        try:
            x, d_g, d_h = _share_table(ctx, engine, data, self.params, self.scaler)
            if (d_g, d_h) != (self.d_guest, self.d_host):
                raise DataError(
                    f"ss_lr model expects {self.d_guest}+{self.d_host} columns, the data has {d_g}+{d_h}"
                )
            z = engine.reveal(engine.matmul(x, self.w_share), to=0)
        finally:
            engine.triples.close()  # type: ignore[attr-defined]
        if z is None:
            return None
        return np.asarray(1.0 / (1.0 + np.exp(-z.reshape(-1))))

    @property
    def aligned_rows(self) -> bool:
        return True

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "role": self.role,
            "d_guest": self.d_guest,
            "d_host": self.d_host,
            "params": _params_meta(self.params),
            "history": {k: [float(v) for v in vs] for k, vs in self.history.items()},
        }
        arrays: dict[str, np.ndarray] = {}
        if self.w_share is not None:
            arrays["w_share"] = self.w_share
        if self.weights is not None:
            arrays["weights"] = self.weights
        if self.scaler is not None:
            arrays["mean"], arrays["scale"] = self.scaler.mean, self.scaler.scale
        return meta, arrays


def _params_meta(params: SSLRParams) -> dict[str, Any]:
    return {
        "sigmoid": params.sigmoid,
        "frac_bits": params.frac_bits,
        "fit_intercept": params.fit_intercept,
        "he_scheme": params.he_scheme,
        "key_bits": params.key_bits,
    }


def load_ss_lr(package: ModelPackage) -> SSLRModel:
    """Rebuild one party's part from its package (`SSLRModel.export`)."""
    meta, arrays = package.meta, package.arrays
    try:
        p = meta["params"]
        params = SSLRParams(
            sigmoid=p["sigmoid"],
            frac_bits=p["frac_bits"],
            fit_intercept=p["fit_intercept"],
            he_scheme=p["he_scheme"],
            key_bits=p["key_bits"],
        )
        role, d_g, d_h = str(meta["role"]), int(meta["d_guest"]), int(meta["d_host"])
        history = {str(k): [float(v) for v in vs] for k, vs in dict(meta.get("history", {})).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"model {package.identity.model_id}: malformed ss_lr metadata ({exc})") from exc
    w = arrays.get("w_share")
    if w is not None and (w.dtype != np.uint64 or w.shape != (d_g + d_h, 1)):
        raise DataError(f"model {package.identity.model_id}: w_share must be uint64 ({d_g + d_h}, 1)")
    scaler = None
    if "mean" in arrays or "scale" in arrays:
        mean, scale = arrays.get("mean"), arrays.get("scale")
        if mean is None or scale is None or mean.shape != scale.shape or mean.ndim != 1 or (scale <= 0).any():
            raise DataError(f"model {package.identity.model_id}: malformed ss_lr scaler (mean, scale)")
        scaler = Scaler(np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64))
    return SSLRModel(role, params, w, d_g, d_h, arrays.get("weights"), history, scaler)


def _reveal_weights(
    ctx: StepContext, engine: SSOps, parties: Parties, w: U64Array, targets: Sequence[str]
) -> F64Array | None:
    mine = None
    for target in targets:
        if target not in (parties.guest, parties.host):
            raise ConfigError(f"ss_lr.reveal_to: {target!r} is not the guest or the host of this job")
        out = engine.reveal(w, to=parties.index(target))
        if out is not None:
            mine = out.reshape(-1)
    return mine


def run_ss_lr(ctx: StepContext, params: SSLRParams) -> dict[str, Any]:
    """Run this party's role of SS logistic regression; leave the model in ctx.model."""
    parties = Parties.from_roles(ctx.roles)
    if ctx.party == parties.dealer:
        dealt = run_dealer(ctx.link.scope("mpc"), party0=parties.guest, party1=parties.host)
        publish_model(ctx, SSLRModel("dealer", params, None))
        return {"triples_dealt": dealt}
    if ctx.party not in (parties.guest, parties.host):
        return {}
    scaler = Scaler.fit(_raw_features(ctx.data, ctx.party)) if params.standardize else None
    engine = _engine(ctx, parties, params)
    try:
        x, d_g, d_h = _share_table(ctx, engine, ctx.data, params, scaler)
        y = _labels(ctx, engine, ctx.data, x.shape[0])
        ctx.progress(f"training on {x.shape[0]} shared rows, {d_g}+{d_h} columns", {})
        w, losses = _train(engine, x, y, params, ctx.progress)
        weights = _reveal_weights(ctx, engine, parties, w, params.reveal_to)
    finally:
        engine.triples.close()  # type: ignore[attr-defined]
    role = "guest" if engine.index == 0 else "host"
    model = SSLRModel(role, params, w, d_g, d_h, weights, {"loss": losses}, scaler)
    out: dict[str, Any] = {
        "rows": int(x.shape[0]),
        "columns": d_g + d_h,
        "loss": [round(v, 6) for v in losses],
        "epochs_run": len(losses),
        "traffic": engine.stats.as_dict(),
    }
    out["model"] = str(publish_model(ctx, model))
    if weights is not None:
        names = [f"guest_x{i}" for i in range(d_g)] + [f"host_x{i}" for i in range(d_h)]
        if params.fit_intercept:
            names[d_g - 1] = "intercept"
        atomic_write_text(
            ctx.workdir / "ss_lr_weights.csv",
            "name,weight\n" + "".join(f"{k},{v:.9g}\n" for k, v in zip(names, weights, strict=True)),
        )
        out["revealed"] = True
    return out


def ss_lr_baseline(params: SSLRParams, datasets: Mapping[PartyId, BaselineData]) -> dict[str, float]:
    """scikit-learn LogisticRegression on the pooled data; returns its training AUC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    x, y = pool_vertical(datasets)
    model = LogisticRegression(max_iter=2000, fit_intercept=params.fit_intercept).fit(x, y)
    return {"auc": float(roc_auc_score(y, model.predict_proba(x)[:, 1]))}


SS_LR_STEP = StepDef(
    STEP,
    SSLRParams,
    run_ss_lr,
    "logistic regression on secret shares (Beaver triples from a dealer or HE)",
    load=load_ss_lr,
    baseline=ss_lr_baseline,
)
