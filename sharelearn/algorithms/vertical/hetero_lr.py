"""Step `hetero_lr`: vertical logistic regression (guest with labels, one or more hosts; arbiter optional).

The sigmoid's Taylor expansion sigma(z) ~ 1/2 + z/4 makes the scaled residual of row i,
d_i = 4 (sigma(z_i) - y_i) ~ z_i + 2 - 4 y_i, linear in every party's partial score u_p = X_p w_p,
so it can be formed under additively homomorphic encryption (Hardy et al. 2017). The loss is the
second-order Taylor log-loss log 2 - y'z/2 + z^2/8 with y' = 2y - 1. Two modes, one module each:
`hetero_lr_arbiter` (an arbiter holds the only private key) and `hetero_lr_two_party` (guest and
one host, each with a key pair). The message sequences are in those modules' docstrings.

The host's weights stay encrypted under the key holder's key (the arbiter's, or the guest's in
two-party mode) for the whole training, and are updated with X_h^T [[d]] without ever being
decrypted: the host never sees its gradient, its weights or its scores in the clear, so it cannot
solve for the residual (the old leak: g = X_h^T d / m gives d, and d's sign gives the labels,
whenever a batch has no more rows than the host has features). Rescaling after each update goes
through the key holder under a statistically hiding mask (`hetero_lr_core.EncWeights`).

What each role learns (every batch size, every epoch count, both modes):
- Host: the per-epoch training loss (it drives early stopping and the loss curve), the number of
  rows and the batch order, and at the end its own final weights (the model reveals them).
  Nothing else: everything it receives is a ciphertext under a key it does not hold.
- Guest: its own gradients X_g^T d / 4m in the clear (it steps plaintext weights), hence X_g^T u_h
  per batch, and the per-epoch loss; with an arbiter nothing else; in two-party mode it also
  decrypts, as the host's key holder, values masked by the host (u_h + s, 80 bits of statistical
  hiding; W + r under a mask of max_int / 2) and the batch's summed loss terms. A batch of at most
  the guest's feature count (+1) of rows lets the guest solve X_g^T u_h for the host's partial
  scores u_h of that batch (not its features): use batches larger than the guest's feature count.
- Arbiter: the per-batch Taylor loss sums and the per-epoch loss; every other value it decrypts is
  masked (gradients and weights under masks of max_int / 2, scores z + r under 80-bit masks).
  It answers only the requests the protocol expects (party, step, shape, frac_bits).
No party receives another party's features or labels, or the host's gradients, in the clear.
Feature scaling (`scale`, on by default) is local: each party standardises its own columns and
folds the scaling back into its own saved weights (a host keeps its constant as its intercept).

Prediction (`HeteroLrModel.predict`): each host sends its partial scores u_h to the guest, as
fixed-point numbers in Z_2^64 blinded with pairwise masks that cancel in the sum when there are
several hosts; the guest adds its own part and applies the sigmoid. With one host the guest sees
u_h itself — the same information that the prediction and its own part already reveal.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sharelearn.algorithms.context import BaselineData, Dataset, StepContext, StepDef
from sharelearn.algorithms.metrics import binary_metrics, pool_vertical
from sharelearn.algorithms.package import ModelPackage, publish_model
from sharelearn.algorithms.vertical import hetero_lr_arbiter, hetero_lr_two_party
from sharelearn.algorithms.vertical.hetero_lr_core import (
    STEP,
    Fitted,
    HeteroLrParams,
    batches,
    fit_plain,
    learning_rate_at,
    setup_roles,
)
from sharelearn.core.codec import expect_array, expect_type
from sharelearn.core.errors import ConfigError, DataError
from sharelearn.crypto.fixedpoint import FixedPoint
from sharelearn.crypto.prg import expand_u64

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

_PREDICT_FP = FixedPoint(24)


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
        u = x @ self.weights + (self.intercept if self.role == "host" else 0.0)  # a host's scaling constant
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
            C=1.0 / (params.alpha * n), max_iter=2000, fit_intercept=params.fit_intercept
        )
    clf.fit(x, y)
    m = binary_metrics(y, clf.predict_proba(x)[:, 1])
    return {k: m[k] for k in ("auc", "ks", "accuracy") if k in m}


def run_hetero_lr(ctx: StepContext, params: HeteroLrParams) -> dict[str, Any]:
    """Train; every party keeps (and saves) only its own part of the model."""
    setup = setup_roles(ctx, params)
    mode = hetero_lr_arbiter if params.mode == "arbiter" else hetero_lr_two_party
    roles = {"guest": mode.run_guest, "host": mode.run_host}
    if params.mode == "arbiter":
        roles["arbiter"] = hetero_lr_arbiter.run_arbiter
    if ctx.role not in roles:
        return {}
    part: Fitted = roles[ctx.role](ctx, params, setup)
    model = HeteroLrModel(part.role, part.weights, part.intercept, part.history, part.he_seconds)
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
