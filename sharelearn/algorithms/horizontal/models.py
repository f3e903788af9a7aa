"""Models for horizontal federated learning, all held as one flat float64 weight vector.

* `logistic`: numpy logistic regression (sigmoid for two classes, softmax for more).
* `linear`: numpy linear regression (squared loss).
* `mlp`: a PyTorch multi-layer perceptron (ReLU hidden layers).
* `cnn`: a small PyTorch convolutional network for image-shaped rows (`image_shape` = C, H, W).

A flat vector is what FedAvg averages and secure aggregation masks, so every model exposes the same
four functions: `init_weights`, `train_local` (local epochs of mini-batch SGD/Adam, with the FedProx
proximal term when `proximal_mu` > 0), `predict` and `evaluate_loss`. Torch is imported lazily: the
numpy models never load it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sharelearn.core.errors import ConfigError, DataError
from sharelearn.core.types import F64Array

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = [
    "MODELS",
    "TASKS",
    "ModelSpec",
    "TrainConfig",
    "evaluate_loss",
    "init_weights",
    "num_params",
    "predict",
    "train_local",
]

MODELS = ("logistic", "linear", "mlp", "cnn")
TASKS = ("binary", "multiclass", "regression")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The architecture every party must agree on.

    Attributes:
        kind: one of MODELS.
        task: "binary", "multiclass" or "regression".
        n_features: input width.
        n_classes: number of classes (1 for regression).
        hidden: hidden layer widths of `mlp` (and the dense layer of `cnn`).
        image_shape: (channels, height, width) of `cnn` inputs; their product is n_features.
        seed: seed of the initial weights (public: every party can rebuild them).
    """

    kind: str
    task: str
    n_features: int
    n_classes: int = 2
    hidden: tuple[int, ...] = (64,)
    image_shape: tuple[int, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MODELS:
            raise ConfigError(f"fedavg.model must be one of {', '.join(MODELS)}, got {self.kind!r}")
        if self.task not in TASKS:
            raise ConfigError(f"fedavg.task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.kind == "logistic" and self.task == "regression":
            raise ConfigError("fedavg.model 'logistic' is a classifier; use 'linear' for regression")
        if self.kind == "linear" and self.task != "regression":
            raise ConfigError("fedavg.model 'linear' is a regression model; use 'logistic' to classify")
        if self.n_features < 1:
            raise ConfigError(f"a model needs at least one feature, got {self.n_features}")
        if self.task == "multiclass" and self.n_classes < 3:
            raise ConfigError(f"a multiclass model needs >= 3 classes, got {self.n_classes}")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"fedavg.hidden layer widths must be >= 1, got {list(self.hidden)}")
        if self.kind == "cnn":
            if len(self.image_shape) != 3 or any(s < 1 for s in self.image_shape):
                raise ConfigError("fedavg.image_shape must be [channels, height, width] for model 'cnn'")
            if int(np.prod(self.image_shape)) != self.n_features:
                raise ConfigError(
                    f"fedavg.image_shape {list(self.image_shape)} has {int(np.prod(self.image_shape))} "
                    f"values per row, but the data has {self.n_features} features"
                )

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.task == "multiclass" else 1

    def to_meta(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "task": self.task,
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "hidden": list(self.hidden),
            "image_shape": list(self.image_shape),
            "seed": self.seed,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> ModelSpec:
        try:
            return cls(
                kind=str(meta["kind"]),
                task=str(meta["task"]),
                n_features=int(meta["n_features"]),
                n_classes=int(meta["n_classes"]),
                hidden=tuple(int(h) for h in meta["hidden"]),
                image_shape=tuple(int(s) for s in meta["image_shape"]),
                seed=int(meta["seed"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed model description: {exc}") from exc


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Local training settings (one client, one round).

    Attributes:
        local_epochs: passes over the client's rows per round.
        batch_size: rows per gradient step.
        learning_rate: step size.
        optimizer: "sgd" (with `momentum`) or "adam"; state is reset every round.
        momentum: SGD momentum.
        weight_decay: L2 penalty coefficient.
        proximal_mu: FedProx (Li et al. 2020) proximal term mu/2 ||w - w_global||^2; 0 = FedAvg.
    """

    local_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    proximal_mu: float = 0.0


def _numpy_shape(spec: ModelSpec) -> tuple[int, int]:
    return spec.n_features + 1, spec.n_outputs


def _torch_module(spec: ModelSpec) -> torch.nn.Module:
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        if spec.kind == "mlp":
            layers: list[nn.Module] = []
            width = spec.n_features
            for h in spec.hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            layers.append(nn.Linear(width, spec.n_outputs))
            return nn.Sequential(*layers)
        channels, height, width_px = spec.image_shape
        pooled_h, pooled_w = max(height // 4, 1), max(width_px // 4, 1)
        return nn.Sequential(
            nn.Unflatten(1, (channels, height, width_px)),
            nn.Conv2d(channels, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True) if height >= 2 and width_px >= 2 else nn.Identity(),
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d((pooled_h, pooled_w)),
            nn.Flatten(),
            nn.Linear(16 * pooled_h * pooled_w, spec.hidden[0] if spec.hidden else 32),
            nn.ReLU(),
            nn.Linear(spec.hidden[0] if spec.hidden else 32, spec.n_outputs),
        )


_SCRATCH = threading.local()


def _scratch_module(spec: ModelSpec) -> torch.nn.Module:
    """A module of this spec to load weights into, reused per thread: building one per update
    costs a seeded initialisation (torch.manual_seed records a stack trace per device type) whose
    values are overwritten at once."""
    cache: dict[ModelSpec, torch.nn.Module] = _SCRATCH.__dict__.setdefault("modules", {})
    module = cache.get(spec)
    if module is None:
        module = cache[spec] = _torch_module(spec)
    return module


def num_params(spec: ModelSpec) -> int:
    """Length of the model's flat weight vector."""
    if spec.kind in ("logistic", "linear"):
        rows, cols = _numpy_shape(spec)
        return rows * cols
    return sum(int(p.numel()) for p in _torch_module(spec).parameters())


def init_weights(spec: ModelSpec) -> F64Array:
    """The initial weights, a function of the spec (and its seed) only."""
    if spec.kind in ("logistic", "linear"):
        return np.zeros(num_params(spec), dtype=np.float64)
    from torch.nn.utils import parameters_to_vector

    module = _torch_module(spec)
    return parameters_to_vector(module.parameters()).detach().numpy().astype(np.float64)


def _check_xy(spec: ModelSpec, x: np.ndarray, y: np.ndarray | None) -> None:
    if x.ndim != 2 or x.shape[1] != spec.n_features:
        raise DataError(f"model expects {spec.n_features} features, got an array of shape {x.shape}")
    if y is not None and spec.task != "regression":
        labels = np.asarray(y)
        if labels.size and (labels.min() < 0 or labels.max() >= spec.n_classes or np.any(labels % 1)):
            raise DataError(f"class labels must be integers in 0..{spec.n_classes - 1}")


# --- numpy models -------------------------------------------------------------------------------


def _np_forward(spec: ModelSpec, w: F64Array, x: np.ndarray) -> np.ndarray:
    rows, cols = _numpy_shape(spec)
    mat = w.reshape(rows, cols)
    return np.asarray(x @ mat[:-1] + mat[-1], dtype=np.float64)


def _np_output(spec: ModelSpec, z: np.ndarray) -> np.ndarray:
    if spec.task == "binary":
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z[:, 0], -500, 500))))
    if spec.task == "multiclass":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))
    return np.asarray(z[:, 0])


def _np_loss_grad(spec: ModelSpec, w: F64Array, x: np.ndarray, y: np.ndarray) -> tuple[float, F64Array]:
    out = _np_output(spec, _np_forward(spec, w, x))
    n = max(len(y), 1)
    if spec.task == "binary":
        p = np.clip(out, 1e-12, 1 - 1e-12)
        loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        dz = ((out - y) / n)[:, None]
    elif spec.task == "multiclass":
        onehot = np.zeros_like(out)
        onehot[np.arange(len(y)), y.astype(np.int64)] = 1.0
        loss = float(-np.mean(np.log(np.clip(out[np.arange(len(y)), y.astype(np.int64)], 1e-12, None))))
        dz = (out - onehot) / n
    else:
        loss = float(np.mean((out - y) ** 2))
        dz = (2.0 * (out - y) / n)[:, None]
    grad = np.vstack([x.T @ dz, dz.sum(axis=0, keepdims=True)])
    return loss, grad.reshape(-1)


def _train_numpy(
    spec: ModelSpec, w0: F64Array, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, rng: np.random.Generator
) -> tuple[F64Array, float]:
    w = w0.copy()
    velocity = np.zeros_like(w)
    m, v, t = np.zeros_like(w), np.zeros_like(w), 0
    losses: list[float] = []
    for _ in range(cfg.local_epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start : start + cfg.batch_size]
            loss, grad = _np_loss_grad(spec, w, x[rows], y[rows])
            losses.append(loss)
            grad = grad + cfg.weight_decay * w + cfg.proximal_mu * (w - w0)
            if cfg.optimizer == "adam":
                t += 1
                m = 0.9 * m + 0.1 * grad
                v = 0.999 * v + 0.001 * grad * grad
                step = (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
                w -= cfg.learning_rate * step
            else:
                velocity = cfg.momentum * velocity + grad
                w -= cfg.learning_rate * velocity
    return w, float(np.mean(losses)) if losses else 0.0


# --- torch models -------------------------------------------------------------------------------


def _torch_loss(spec: ModelSpec, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from torch.nn import functional

    if spec.task == "binary":
        return functional.binary_cross_entropy_with_logits(logits[:, 0], target)
    if spec.task == "multiclass":
        return functional.cross_entropy(logits, target.long())
    return functional.mse_loss(logits[:, 0], target)


def _train_torch(
    spec: ModelSpec,
    w0: F64Array,
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    rng: np.random.Generator,
    state: dict[str, Any] | None,
) -> tuple[F64Array, float]:
    import torch
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    module = _scratch_module(spec)
    start_vec = torch.from_numpy(w0.astype(np.float32))
    vector_to_parameters(start_vec.clone(), module.parameters())
    anchor = [p.detach().clone() for p in module.parameters()]
    optim: torch.optim.Optimizer
    if cfg.optimizer == "adam":
        optim = torch.optim.Adam(module.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    else:
        optim = torch.optim.SGD(
            module.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if state is not None and "optimizer" in state:
        optim.load_state_dict(state["optimizer"])
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    losses: list[float] = []
    module.train()
    for _ in range(cfg.local_epochs):
        order = torch.from_numpy(rng.permutation(len(y)))
        for begin in range(0, len(order), cfg.batch_size):
            rows = order[begin : begin + cfg.batch_size]
            optim.zero_grad()
            loss = _torch_loss(spec, module(xt[rows]), yt[rows])
            losses.append(float(loss.detach()))
            if cfg.proximal_mu > 0:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(module.parameters(), anchor, strict=True))
                loss = loss + 0.5 * cfg.proximal_mu * prox
            loss.backward()  # type: ignore[no-untyped-call]
            optim.step()
    weights = parameters_to_vector(module.parameters()).detach().numpy().astype(np.float64)
    if state is not None:
        state["optimizer"] = optim.state_dict()
    return weights, float(np.mean(losses)) if losses else 0.0


def _torch_predict(spec: ModelSpec, w: F64Array, x: np.ndarray) -> np.ndarray:
    import torch
    from torch.nn.utils import vector_to_parameters

    module = _scratch_module(spec)
    vector_to_parameters(torch.from_numpy(w.astype(np.float32)), module.parameters())
    module.eval()
    with torch.no_grad():
        z = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).double().numpy()
    return _np_output(spec, z)


# --- the common interface -----------------------------------------------------------------------


def train_local(
    spec: ModelSpec,
    weights: F64Array,
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    rng: np.random.Generator,
    state: dict[str, Any] | None = None,
) -> tuple[F64Array, float]:
    """Train from `weights` on (x, y) for `cfg.local_epochs`; return new weights and the mean batch loss.

    `state` (torch models): a dict kept by the caller across calls; the optimiser's state (Adam
    moments, SGD momentum) is restored from and saved into it instead of starting fresh.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    _check_xy(spec, x, y)
    if len(y) == 0:
        return np.asarray(weights, dtype=np.float64).copy(), 0.0
    if spec.kind in ("logistic", "linear"):
        return _train_numpy(spec, np.asarray(weights, dtype=np.float64), x, y, cfg, rng)
    return _train_torch(spec, np.asarray(weights, dtype=np.float64), x, y, cfg, rng, state)


def predict(spec: ModelSpec, weights: F64Array, x: np.ndarray) -> np.ndarray:
    """Scores: P(y=1) (n,) for binary, probabilities (n, k) for multiclass, values (n,) for regression."""
    x = np.asarray(x, dtype=np.float64)
    _check_xy(spec, x, None)
    if spec.kind in ("logistic", "linear"):
        return _np_output(spec, _np_forward(spec, np.asarray(weights, dtype=np.float64), x))
    return _torch_predict(spec, np.asarray(weights, dtype=np.float64), x)


def evaluate_loss(spec: ModelSpec, weights: F64Array, x: np.ndarray, y: np.ndarray) -> float:
    """The training loss (log-loss or squared error) of `weights` on (x, y)."""
    scores = predict(spec, weights, x)
    y = np.asarray(y, dtype=np.float64)
    if spec.task == "binary":
        p = np.clip(scores, 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    if spec.task == "multiclass":
        return float(-np.mean(np.log(np.clip(scores[np.arange(len(y)), y.astype(np.int64)], 1e-12, None))))
    return float(np.mean((scores - y) ** 2))
