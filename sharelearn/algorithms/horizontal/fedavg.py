"""The `fedavg` step: horizontal federated averaging with optional secure aggregation and DP.

Roles: one `server` (its optional data is a test set), clients (`client` role, rows with labels).

1. Each client sends the server its column names and dtypes, its largest label and its class set;
   the server checks them against its spec before round 1 (`schema`: a mismatch names the party
   and the column) and agrees the model shape.
2. The server sends the model description; then, per round, each client the global weights and
   whether it takes part (a seeded `fraction` of the clients).
3. Each selected client trains locally (`local_epochs` of SGD/Adam, FedProx term if `proximal_mu` >
   0) and forms the vector [w_k * delta_k, w_k, w_k * train_loss, n_val * val_loss, n_val] with
   w_k its sample count (`weighted`) or 1; under DP delta_k is clipped and w_k = 1.
4. Plain: the server receives the vectors. `secure_aggregation`: the vectors are quantised into
   Z_2^k and summed with `secagg` (Bonawitz et al.), so the server learns only the sum, and not
   even each client's sample count or loss.
5. The server sets w += sum(w_k delta_k) / sum(w_k) (plus Gaussian noise under DP), scores its
   test set and records the round in `history`. After the last round every client gets the model.

Leaks: plain mode shows the server each client's update, sample count and loss; with secure
aggregation only their sums over the round's survivors (and the survivor set). The final model is
known to every party, and every party can score its own rows with it (`predict`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from sharelearn.algorithms.context import BaselineData, Dataset, StepContext, StepDef
from sharelearn.algorithms.horizontal import models, schema, secagg
from sharelearn.algorithms.horizontal.dp_fedavg import DpConfig, DpTracker, clip_update, noisy_average
from sharelearn.algorithms.horizontal.identity import Identity
from sharelearn.algorithms.horizontal.options import (
    RENAMED,
    Compute,
    DpOptions,
    SecAggOptions,
    ServerOptions,
    SimulationOptions,
)
from sharelearn.algorithms.horizontal.server_opt import Convergence, ServerOptimizer
from sharelearn.algorithms.metrics import metrics_for
from sharelearn.algorithms.package import ModelPackage, publish_model
from sharelearn.core import codec
from sharelearn.core.errors import ConfigError, DataError, DecodeError
from sharelearn.core.link import Link
from sharelearn.core.types import F64Array, PartyId

__all__ = [
    "FEDAVG_STEP",
    "ClientTrainer",
    "DpOptions",
    "FedAvgModel",
    "FedAvgParams",
    "SecAggOptions",
    "ServerLoop",
    "ServerOptions",
    "SimulationOptions",
    "baseline_fedavg",
    "infer_spec",
    "load_fedavg_model",
    "run_fedavg",
    "secagg_config",
    "train_centralized",
]

HEADLINE = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}
_EXTRA = 4  # weight, weight * loss, n_val * val_loss, n_val


@dataclass(frozen=True, slots=True)
class FedAvgParams:
    """Parameters of `fedavg`.

    Attributes:
        model: "logistic", "linear" (numpy), "mlp" or "cnn" (PyTorch).
        task: "auto" (linear -> regression, else classification from the labels) or a task name.
        rounds: federated rounds; 0 (the default) = until the training loss converges
            (`stop_patience` rounds without a relative improvement of `stop_tolerance`), at most
            `max_rounds`.
        local_epochs / batch_size / learning_rate / optimizer / momentum / weight_decay: local training.
        proximal_mu: FedProx proximal coefficient (0 = plain FedAvg).
        keep_optimizer_state: torch models: each client keeps its optimiser state (Adam moments,
            momentum) from round to round instead of restarting it (it never leaves the client).
        weighted: weight client updates by sample count (FedAvg); False = plain mean.
        fraction: fraction of clients invited per round (seeded, at least one).
        hidden: hidden layer widths (mlp, cnn dense layer).
        image_shape: [channels, height, width] of each row, for `cnn`.
        seed: seed of the initial model, the client sampling and the local shuffles.
        validation_fraction: rows each client holds out; the global model's loss on them is
            aggregated every round (history "client_val_loss").
        secure_aggregation: sum the updates with Bonawitz et al. secure aggregation, configured by
            `secagg` (`SecAggOptions`).
        dp: DP-FedAvg (`DpOptions`; `noise_multiplier` > 0 turns it on).
        simulation: where the clients run (`SimulationOptions`: `compute: ray` simulates them).
        server: the server optimiser (`ServerOptions`).
        simulate_dropouts: TEST/SIMULATION KNOB: "client:stage" items; that client leaves every
            round after `stage` ("advertise", "share", "masked" with secure aggregation; "update"
            (sends no update) without).
    """

    RENAMED: ClassVar[Mapping[str, str]] = RENAMED

    model: Literal["logistic", "linear", "mlp", "cnn"] = "logistic"
    task: Literal["auto", "binary", "multiclass", "regression"] = "auto"
    rounds: int = 0
    max_rounds: int = 300
    stop_patience: int = 5
    stop_tolerance: float = 1e-3
    local_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 0.1
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    proximal_mu: float = 0.0
    keep_optimizer_state: bool = False
    weighted: bool = True
    fraction: float = 1.0
    hidden: tuple[int, ...] = (64,)
    image_shape: tuple[int, ...] = ()
    seed: int = 0
    validation_fraction: float = 0.0
    secure_aggregation: bool = False
    secagg: SecAggOptions = field(default_factory=SecAggOptions)
    dp: DpOptions = field(default_factory=DpOptions)
    simulation: SimulationOptions = field(default_factory=SimulationOptions)
    server: ServerOptions = field(default_factory=ServerOptions)
    simulate_dropouts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.model not in models.MODELS:
            raise ConfigError(f"fedavg.model must be one of {', '.join(models.MODELS)}, got {self.model!r}")
        if self.task != "auto" and self.task not in models.TASKS:
            raise ConfigError(
                f"fedavg.task must be 'auto' or one of {', '.join(models.TASKS)}, got {self.task!r}"
            )
        for name in ("max_rounds", "local_epochs", "batch_size"):
            if not 1 <= getattr(self, name) <= 1_000_000:
                raise ConfigError(f"fedavg.{name} must be in 1..1000000, got {getattr(self, name)}")
        if not 0 <= self.rounds <= 1_000_000:
            raise ConfigError(f"fedavg.rounds must be in 0..1000000 (0 = until converged), got {self.rounds}")
        if self.stop_patience < 1 or not self.stop_tolerance >= 0:
            raise ConfigError("fedavg.stop_patience must be >= 1 and fedavg.stop_tolerance >= 0")
        if not self.learning_rate > 0:
            raise ConfigError(f"fedavg.learning_rate must be > 0, got {self.learning_rate}")
        if self.optimizer not in models.OPTIMIZERS:
            raise ConfigError(
                f"fedavg.optimizer must be one of {', '.join(models.OPTIMIZERS)}, got {self.optimizer!r}"
            )
        for name in ("momentum", "weight_decay", "proximal_mu"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"fedavg.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"fedavg.fraction must be in (0, 1], got {self.fraction}")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError(f"fedavg.validation_fraction must be in [0, 1), got {self.validation_fraction}")
        self._check_groups()
        self.dropouts()

    def _check_groups(self) -> None:
        """Each option group is its own type (a mapping in a Python call is a mistake, not a spelling)."""
        for name, kind in (
            ("secagg", SecAggOptions),
            ("dp", DpOptions),
            ("simulation", SimulationOptions),
            ("server", ServerOptions),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(
                    f"fedavg.{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}"
                )

    @property
    def compute(self) -> Compute:
        """`simulation.compute`: "local" or "ray"."""
        return self.simulation.compute

    @property
    def round_limit(self) -> int:
        """The most rounds this job runs: `rounds`, or `max_rounds` when it stops on convergence."""
        return self.rounds or self.max_rounds

    def server_opt(self) -> ServerOptimizer:
        """A fresh server optimiser as configured."""
        o = self.server
        return ServerOptimizer(o.optimizer, o.learning_rate, o.beta1, o.beta2, o.tau)

    def dp_config(self) -> DpConfig | None:
        if not self.dp.enabled:
            return None
        return DpConfig(self.dp.clip_norm, self.dp.noise_multiplier, self.dp.delta)

    def dropouts(self) -> dict[str, str]:
        """client -> stage of the `simulate_dropouts` knob."""
        out: dict[str, str] = {}
        for item in self.simulate_dropouts:
            client, sep, stage = str(item).partition(":")
            if not sep or not client or stage not in (*secagg.DROP_STAGES, "update"):
                raise ConfigError(
                    f"fedavg.simulate_dropouts items must be 'client:stage' with stage one of "
                    f"{', '.join((*secagg.DROP_STAGES, 'update'))}, got {item!r}"
                )
            if (stage == "update") == self.secure_aggregation:
                allowed = ", ".join(secagg.DROP_STAGES) if self.secure_aggregation else "update"
                raise ConfigError(
                    f"fedavg.simulate_dropouts {item!r}: with secure_aggregation={self.secure_aggregation} "
                    f"the stage must be one of {allowed}"
                )
            out[client] = stage
        return out

    def train_config(self) -> models.TrainConfig:
        return models.TrainConfig(
            self.local_epochs,
            self.batch_size,
            self.learning_rate,
            self.optimizer,
            self.momentum,
            self.weight_decay,
            self.proximal_mu,
        )


# --- the trained model ------------------------------------------------------------------------


@dataclass
class FedAvgModel:
    """The global model as one party holds it; every party with rows can score them."""

    spec: models.ModelSpec
    weights: F64Array
    role: str
    history: dict[str, list[float]] = field(default_factory=dict)
    dp_epsilon: float | None = None
    step: str = "fedavg"

    @property
    def task(self) -> str:
        return self.spec.task

    def predict(self, ctx: StepContext, data: Dataset | None) -> np.ndarray | None:
        """Every party scores its own rows locally with the global model (no messages); None without rows."""
        if data is None:
            return None
        if np.asarray(data.x).ndim != 2 or np.asarray(data.x).shape[1] != self.spec.n_features:
            raise DataError(
                f"fedavg: party {ctx.party!r}'s rows ({data.source}) have {np.asarray(data.x).shape[-1]} "
                f"columns, the model {self.spec.n_features}"
            )
        return models.predict(self.spec, self.weights, np.asarray(data.x, dtype=np.float64))

    @property
    def aligned_rows(self) -> bool:
        return False

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {
            "spec": self.spec.to_meta(),
            "role": self.role,
            "history": {k: [float(v) for v in vals] for k, vals in self.history.items()},
        }
        if self.dp_epsilon is not None:
            meta["dp_epsilon"] = float(self.dp_epsilon)
        return meta, {"weights": self.weights}


def load_fedavg_model(package: ModelPackage) -> FedAvgModel:
    """Rebuild a party's copy of the global model from its package (`FedAvgModel.export`)."""
    meta, arrays = package.meta, package.arrays
    where = f"model {package.identity.model_id} ({package.identity.party})"
    spec = models.ModelSpec.from_meta(meta.get("spec", {}))
    weights = arrays.get("weights")
    if weights is None or weights.dtype != np.float64 or weights.shape != (models.num_params(spec),):
        raise DataError(f"{where}: weights do not match the model description")
    history = meta.get("history", {})
    if not isinstance(history, dict):
        raise DataError(f"{where}: malformed history")
    eps = meta.get("dp_epsilon")
    return FedAvgModel(
        spec,
        weights,
        str(meta.get("role", "server")),
        {str(k): [float(v) for v in vals] for k, vals in history.items()},
        None if eps is None else float(eps),
    )


# --- the client's side (shared by the Link protocol and the Ray simulation) --------------------


class ClientTrainer:
    """One client: its rows split into train/validation, and the update it computes per round."""

    def __init__(self, party: str, data: Dataset, params: FedAvgParams) -> None:
        self.party = party
        self.params = params
        x = np.asarray(data.x, dtype=np.float64)
        y = np.asarray(data.y, dtype=np.float64) if data.y is not None else None
        if y is None:
            raise DataError(f"fedavg: client {party!r} has no label column")
        n_val = int(len(y) * params.validation_fraction)
        order = np.random.default_rng([params.seed, _party_seed(party)]).permutation(len(y))
        self.x_val, self.y_val = x[order[:n_val]], y[order[:n_val]]
        self.x, self.y = x[order[n_val:]], y[order[n_val:]]
        if len(self.y) == 0:
            raise DataError(f"fedavg: client {party!r} keeps no training rows after validation_fraction")
        self.spec: models.ModelSpec | None = None
        self.optimizer_state: dict[str, Any] | None = {} if params.keep_optimizer_state else None

    def update(self, weights: F64Array, round_index: int) -> F64Array:
        """Train from the global weights; return [w*delta, w, w*loss, n_val*val_loss, n_val]."""
        if self.spec is None:
            raise ConfigError(f"fedavg: client {self.party!r} got no model description")
        params, spec = self.params, self.spec
        val_n = float(len(self.y_val))
        val_loss = models.evaluate_loss(spec, weights, self.x_val, self.y_val) if val_n else 0.0
        rng = np.random.default_rng([params.seed, round_index, _party_seed(self.party)])
        new, loss = models.train_local(
            spec, weights, self.x, self.y, params.train_config(), rng, self.optimizer_state
        )
        delta = new - weights
        dp = params.dp_config()
        if dp is not None:
            delta, weight = clip_update(delta, dp), 1.0
        else:
            weight = float(len(self.y)) if params.weighted else 1.0
        tail = np.array([weight, weight * loss, val_n * val_loss, val_n], dtype=np.float64)
        return np.concatenate([weight * delta, tail])


def _party_seed(party: str) -> int:
    return int.from_bytes(party.encode()[:8].ljust(8, b"\0"), "little") ^ len(party)


# --- the server's side ------------------------------------------------------------------------


class ServerLoop:
    """The server's state across rounds: weights, history, DP accounting; no network code."""

    def __init__(
        self, spec: models.ModelSpec, params: FedAvgParams, n_clients: int, test: Dataset | None
    ) -> None:
        self.spec, self.params, self.n_clients, self.test = spec, params, n_clients, test
        self.weights = models.init_weights(spec)
        self.optimizer = params.server_opt()
        # Explicit `rounds` run all of them; rounds = 0 stops once the training loss has converged.
        self.convergence = (
            Convergence(params.stop_patience, params.stop_tolerance) if not params.rounds else None
        )
        self.converged = False
        self.history: dict[str, list[float]] = {"train_loss": []}
        dp = params.dp_config()
        per_round = self.per_round()
        self.dp = None if dp is None else DpTracker(dp, per_round / n_clients)

    def per_round(self) -> int:
        return max(1, round(self.params.fraction * self.n_clients))

    def select(self, round_index: int) -> list[int]:
        """Indices of the clients invited to this round (seeded sample)."""
        rng = np.random.default_rng([self.params.seed, round_index, 11])
        return sorted(int(i) for i in rng.choice(self.n_clients, self.per_round(), replace=False))

    def apply(self, total: F64Array) -> dict[str, float]:
        """Apply one round's summed vector; return the round's metrics."""
        size = self.weights.size
        if total.shape != (size + _EXTRA,):
            raise ConfigError(f"fedavg: aggregate of length {total.shape} for a model of {size} weights")
        weight, loss_sum, val_sum, val_n = (float(v) for v in total[size:])
        if weight <= 0:
            raise ConfigError("fedavg: no client contributed to the round")
        dp_cfg = self.params.dp_config()
        if dp_cfg is not None:
            step = noisy_average(total[:size], round(weight), dp_cfg)
        else:
            step = total[:size] / weight
        self.weights = self.optimizer.step(self.weights, step)
        out = {"train_loss": loss_sum / weight}
        if self.convergence is not None:
            self.converged = self.convergence.done(out["train_loss"])
        if val_n > 0:
            out["client_val_loss"] = val_sum / val_n
        if self.dp is not None:
            out["dp_epsilon"] = self.dp.charge_round()
        if self.test is not None and self.test.y is not None:
            scores = models.predict(self.spec, self.weights, np.asarray(self.test.x, dtype=np.float64))
            metric = HEADLINE[self.spec.task]
            out[f"test_{metric}"] = metrics_for(self.spec.task, np.asarray(self.test.y), scores)[metric]
        for key, value in out.items():
            self.history.setdefault(key, []).append(float(value))
        return out

    def model(self) -> FedAvgModel:
        eps = self.dp.epsilons[-1] if self.dp is not None and self.dp.epsilons else None
        return FedAvgModel(self.spec, self.weights.copy(), "server", dict(self.history), eps)


def infer_spec(
    params: FedAvgParams, infos: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> models.ModelSpec:
    """Agree the model shape from the clients' feature counts and label ranges."""
    widths = {int(i["n_features"]) for i in infos}
    if len(widths) != 1:
        detail = ", ".join(f"{n}: {int(i['n_features'])}" for n, i in zip(names, infos, strict=True))
        raise DataError(f"fedavg: clients disagree on the number of features ({detail})")
    task: str = params.task
    if task == "auto":
        task = "regression" if params.model == "linear" else "classification"
    n_classes = 1
    if task in ("classification", "binary", "multiclass"):
        bad = [n for n, i in zip(names, infos, strict=True) if not i["integral"]]
        if bad:
            raise DataError(
                f"fedavg: clients {bad} have non-integer labels; a classifier needs classes 0..k-1"
            )
        n_classes = max(2, int(max(float(i["max_label"]) for i in infos)) + 1)
        if task == "classification":
            task = "binary" if n_classes == 2 else "multiclass"
    return models.ModelSpec(
        params.model,
        task,
        widths.pop(),
        n_classes,
        tuple(params.hidden),
        tuple(params.image_shape),
        params.seed,
    )


def secagg_config(params: FedAvgParams, n: int, length: int, round_index: int) -> secagg.SecAggConfig:
    """The round's secure-aggregation parameters (threshold 0 = majority of share holders)."""
    neighbours = params.secagg.neighbours if params.secagg.neighbours < n - 1 else 0
    probe = secagg.SecAggConfig(n, 2, length, params.secagg.modulus_bits, neighbours, bytes(32), round_index)
    threshold = params.secagg.threshold or probe.holders // 2 + 1
    if threshold > probe.holders:
        raise ConfigError(
            f"fedavg.secagg.threshold {threshold} exceeds the {probe.holders} share holders per client"
        )
    seed = np.random.default_rng([params.seed, round_index, 13]).bytes(32)
    return secagg.SecAggConfig(
        n, threshold, length, params.secagg.modulus_bits, neighbours, seed, round_index
    )


# --- the step over a Link ---------------------------------------------------------------------


def _clients(ctx: StepContext) -> list[PartyId]:
    return [p for p, role in ctx.roles.items() if role == "client"]


def _server(ctx: StepContext) -> PartyId:
    servers = [p for p, role in ctx.roles.items() if role == "server"]
    if len(servers) != 1:
        raise ConfigError(f"fedavg needs exactly one party with role 'server', the job has {servers}")
    return servers[0]


def _agree_spec(ctx: StepContext, params: FedAvgParams, clients: Sequence[PartyId]) -> models.ModelSpec:
    """Check every client's schema against the server's spec (before round 1); agree the model shape."""
    infos = {c: schema.parse_info(ctx.link.recv(c, "info"), c) for c in clients}
    test = ctx.data
    if test is not None:
        reference, source = list(test.feature_names), f"the server's test set ({test.source})"
    else:
        first = clients[0]
        reference, source = (
            list(infos[first]["features"]),
            f"the columns of client {first!r} (first in the job)",
        )
    schema.check_columns(infos, reference, source)
    spec = infer_spec(params, list(infos.values()), clients)
    if spec.task in ("binary", "multiclass"):
        schema.check_classes(infos, test)
    return spec


def _run_server(ctx: StepContext, params: FedAvgParams) -> dict[str, Any]:
    clients = _clients(ctx)
    if not clients:
        raise ConfigError("fedavg needs at least one party with role 'client'")
    if params.secure_aggregation and len(clients) < 2:
        raise ConfigError("fedavg.secure_aggregation needs at least two clients")
    link = ctx.link
    spec = _agree_spec(ctx, params, clients)
    for c in clients:
        link.send(c, "spec", spec.to_meta())
    loop = ServerLoop(spec, params, len(clients), ctx.data)
    length = loop.weights.size + _EXTRA
    started = time.perf_counter()
    dropped: list[PartyId] = []
    rounds = 0
    for r in range(params.round_limit):
        total, gone = _server_round(link, params, loop, clients, r, length)
        dropped += gone
        metrics = loop.apply(total)
        rounds = r + 1
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        ctx.progress(f"round {rounds}/{params.round_limit}: {shown}", {"round": rounds, **metrics})
        if loop.converged and rounds < params.round_limit:
            stop = link.scope("round", rounds)
            for c in clients:  # the clients' next round message says training is over
                stop.send(c, "global", {"w": loop.weights, "selected": False, "stop": True})
            break
    for c in clients:
        link.send(c, "final", {"w": loop.weights})
    path = publish_model(ctx, loop.model())
    out = _summary(params, spec, loop, len(clients), time.perf_counter() - started, len(dropped), path)
    out.update(rounds=rounds, converged=loop.converged, dropped_clients=sorted(set(dropped)))
    return out


def _server_round(
    link: Link, params: FedAvgParams, loop: ServerLoop, clients: Sequence[PartyId], r: int, length: int
) -> tuple[F64Array, list[PartyId]]:
    """One round at the server: invite, collect (plain or secure) the sum; return it and who dropped."""
    rlink = link.scope("round", r)
    chosen = loop.select(r)
    for i, c in enumerate(clients):
        rlink.send(c, "global", {"w": loop.weights, "selected": i in chosen, "stop": False})
    members = [clients[i] for i in chosen]
    if params.secure_aggregation:
        cfg = secagg_config(params, len(members), length, r)
        result = secagg.run_secagg_server(
            rlink.scope("sa"), members, cfg, stage_timeout=params.secagg.stage_timeout_s
        )
        total = secagg.dequantize(
            result.total, frac_bits=params.secagg.frac_bits, modulus_bits=cfg.modulus_bits
        )
        return total, [m for m in members if m not in result.survivors]
    total = np.zeros(length, dtype=np.float64)
    gone = []
    for c in members:
        value = rlink.recv(c, "update")
        if value is None:  # the dropout knob of plain mode
            gone.append(c)
            continue
        total += codec.expect_array(value, peer=c, tag="update", dtype=np.float64, shape=(length,))
    return total, gone


def _summary(
    params: FedAvgParams,
    spec: models.ModelSpec,
    loop: ServerLoop,
    n_clients: int,
    elapsed: float,
    dropped: int,
    path: Path | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": spec.kind,
        "task": spec.task,
        "clients": n_clients,
        "rounds": len(loop.history["train_loss"]),
        "parameters": int(loop.weights.size),
        "secure_aggregation": params.secure_aggregation,
        "round_time_s": round(elapsed / max(len(loop.history["train_loss"]), 1), 4),
        "dropouts": dropped,
        "history": {k: [round(float(v), 6) for v in vals] for k, vals in loop.history.items()},
    }
    for key, values in loop.history.items():
        if values:
            out[key] = round(values[-1], 6)
    if loop.dp is not None:
        out["dp_epsilon"] = round(loop.dp.epsilons[-1], 6)
        out["dp_delta"] = params.dp.delta
        out["dp_noise_multiplier"] = params.dp.noise_multiplier
        out["dp_clip_norm"] = params.dp.clip_norm
    if path is not None:
        out["model_path"] = str(path)
    return out


def _identity(ctx: StepContext) -> Identity:
    """This client's signing identity (its mTLS certificate and key, handed over by the worker)."""
    if ctx.identity is None:
        raise ConfigError(
            f"fedavg.secure_aggregation: party {ctx.party!r} has no certificate to sign with "
            "(run the job with `sharelearn run` or `sharelearn node --certs`)"
        )
    i = ctx.identity
    return Identity(i.party, i.cert_pem, i.key_pem, i.ca_pem)


def _policy(ctx: StepContext, params: FedAvgParams, length: int, round_index: int) -> secagg.ClientPolicy:
    """What a client accepts in a round's setup: the configuration this job fixes, the job's clients."""
    return secagg.ClientPolicy(
        expected=lambda n: secagg_config(params, n, length, round_index),
        clients=frozenset(_clients(ctx)),
    )


def _client_spec(
    ctx: StepContext, data: Dataset, trainer: ClientTrainer, server: PartyId
) -> models.ModelSpec:
    """Send this client's schema; receive and check the model description the server agreed."""
    ctx.link.send(server, "info", schema.client_info(data, ctx.party))
    spec = models.ModelSpec.from_meta(
        codec.expect_type(ctx.link.recv(server, "spec"), dict, peer=server, tag="spec")
    )
    if spec.n_features != trainer.x.shape[1]:
        raise DecodeError(
            f"message 'spec' from {server!r}: feature count differs from the data", peer=server, tag="spec"
        )
    return spec


def _send_update(
    ctx: StepContext, params: FedAvgParams, rlink: Link, vector: F64Array, r: int, identity: Identity | None
) -> int:
    """Send one round's update vector (plain, or through secure aggregation); 1 if it counted."""
    server, drop = _server(ctx), params.dropouts().get(ctx.party)
    if identity is not None:  # secure aggregation
        q = secagg.quantize(
            vector,
            frac_bits=params.secagg.frac_bits,
            modulus_bits=params.secagg.modulus_bits,
            max_summands=len(_clients(ctx)),
            overwrite=True,
        )
        policy = _policy(ctx, params, q.size, r)
        return secagg.run_secagg_client(
            rlink.scope("sa"), server, q, identity=identity, policy=policy, drop_after=drop, overwrite=True
        )
    rlink.send(server, "update", None if drop is not None else vector)
    return int(drop is None)


def _run_client(ctx: StepContext, params: FedAvgParams) -> dict[str, Any]:
    """A client's side: the server learns its update per round (or, under secagg, only the sum)."""
    if ctx.data is None:
        raise ConfigError(f"fedavg: client {ctx.party!r} has no data")
    server, link = _server(ctx), ctx.link
    trainer = ClientTrainer(ctx.party, ctx.data, params)
    trainer.spec = _client_spec(ctx, ctx.data, trainer, server)
    size = models.num_params(trainer.spec)
    identity = _identity(ctx) if params.secure_aggregation else None
    joined = 0
    for r in range(params.round_limit):
        rlink = link.scope("round", r)
        doc = codec.expect_type(rlink.recv(server, "global"), dict, peer=server, tag="global")
        weights = codec.expect_array(doc.get("w"), peer=server, tag="global", dtype=np.float64, shape=(size,))
        if codec.expect_type(doc.get("stop", False), bool, peer=server, tag="global"):
            break  # the server's loss converged
        if not codec.expect_type(doc.get("selected"), bool, peer=server, tag="global"):
            continue
        joined += _send_update(ctx, params, rlink, trainer.update(weights, r), r, identity)
        ctx.progress(f"round {r + 1}/{params.round_limit}: local update sent", {})
    doc = codec.expect_type(link.recv(server, "final"), dict, peer=server, tag="final")
    weights = codec.expect_array(doc.get("w"), peer=server, tag="final", dtype=np.float64, shape=(size,))
    publish_model(ctx, FedAvgModel(trainer.spec, weights, "client"))
    return {"rows": len(trainer.y), "rounds_joined": joined}


def run_fedavg(ctx: StepContext, params: FedAvgParams) -> dict[str, Any]:
    """Run this party's role of federated averaging (server or client)."""
    if params.compute == "ray":
        from sharelearn.algorithms.horizontal.simulation import run_simulation_step

        return run_simulation_step(ctx, params)
    if ctx.role == "server":
        return _run_server(ctx, params)
    if ctx.role == "client":
        return _run_client(ctx, params)
    return {}


# --- the centralised twin ---------------------------------------------------------------------


def train_centralized(
    params: FedAvgParams, x: np.ndarray, y: np.ndarray
) -> tuple[models.ModelSpec, F64Array]:
    """Train the same model on pooled rows: rounds (or max_rounds) x local_epochs epochs, same optimiser."""
    labels = np.asarray(y, dtype=np.float64)
    info = {
        "n_features": int(x.shape[1]),
        "max_label": float(labels.max()),
        "integral": bool(np.all(labels == np.round(labels))),
    }
    spec = infer_spec(params, [info], ["pooled"])
    cfg = params.train_config()
    central = models.TrainConfig(
        cfg.local_epochs * params.round_limit,
        cfg.batch_size,
        cfg.learning_rate,
        cfg.optimizer,
        cfg.momentum,
        cfg.weight_decay,
        0.0,
    )
    rng = np.random.default_rng([params.seed, 17])
    weights, _ = models.train_local(spec, models.init_weights(spec), x, labels, central, rng)
    return spec, weights


def baseline_fedavg(params: FedAvgParams, datasets: Mapping[PartyId, BaselineData]) -> dict[str, float]:
    """Train on the clients' pooled rows and score the server's test set (the report's V_SUM)."""
    clients = [d for role, d in datasets.values() if role == "client"]
    tests = [d for role, d in datasets.values() if role == "server"]
    if params.compute == "ray" and tests:
        from sharelearn.algorithms.horizontal.simulation import split_table

        # The simulation's clients and test set are the server table's split: pool the same rows.
        shards, test = split_table(tests[0], params)
        clients, tests = list(shards.values()), [test]
    if not clients or not tests or tests[0].y is None:
        return {}
    x = np.vstack([np.asarray(d.x, dtype=np.float64) for d in clients])
    y = np.concatenate([np.asarray(d.y, dtype=np.float64) for d in clients if d.y is not None])
    spec, weights = train_centralized(params, x, y)
    scores = models.predict(spec, weights, np.asarray(tests[0].x, dtype=np.float64))
    metric = HEADLINE[spec.task]
    return {metric: metrics_for(spec.task, np.asarray(tests[0].y), scores)[metric]}


FEDAVG_STEP = StepDef(
    "fedavg",
    FedAvgParams,
    run_fedavg,
    "horizontal federated averaging (FedAvg/FedProx) with optional secure aggregation and DP",
    load=load_fedavg_model,
    baseline=baseline_fedavg,
)
