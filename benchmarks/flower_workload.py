"""Flower's figures for `sharelearn bench fedavg`: the same FedAvg workload in Flower's simulation.

Runs ONLY in the separate `.venv-flower` (made by `benchmarks/envs/flower.sh`; flwr[simulation]
pins ray, typer and protobuf versions that conflict with sharelearn's venv), so it imports nothing
from sharelearn. `bench_fedavg` starts it as a subprocess and reads the one JSON object it prints
last on stdout:

    .venv-flower/bin/python benchmarks/flower_workload.py --data ../shared/datasets/fate \\
        --clients 100 --rounds 3 [--cpus 1] [--secagg-shares 17 --secagg-threshold 9 [--drop-client 1]]

The workload is `bench_fedavg`'s plain FedAvg (keep the two in step): default_credit_homo guest +
host_1 + host_2 pooled (24,000 rows, 23 features) and split IID into N clients with the same
numpy permutation (`default_rng(N)`); an MLP 23 -> 1024 -> 72 -> 1 (98,449 parameters, float32,
PyTorch's default initialisation); each round every client trains one local epoch of SGD
(learning rate 0.05, batch 64, binary cross-entropy, rows shuffled by numpy) from the global model;
FedAvg weights the updates by sample count; after every round the server scores the global model
on default_credit_homo_test (AUC). Torch uses one thread per client, as in sharelearn's pools.

Plain (the default) runs Flower 1.x's Message API (`ServerApp` + `ClientApp`,
`flwr.serverapp.strategy.FedAvg`, `flwr.simulation.run_simulation` on Ray with `--cpus` CPUs and
one CPU per virtual client, so `--cpus` clients train at once). A round's time is the time between
two consecutive calls of the server-side evaluation function, so it covers sending the model, local
training, aggregation and the test-set evaluation, like sharelearn's `round_time_s`. The first
round also pays Ray actors' start-up and their first torch calls, so `round_time_s` is the mean of
the later rounds (all rounds when there is only one) and `first_round_s` is reported apart. A
failed client reply fails the run: Flower's FedAvg would quietly average the other replies.

SecAgg+ (`--secagg-shares S --secagg-threshold T`): the same data, model, local training
(`Workload.fit`, shared with the plain path), Ray resources, server-side AUC and round timing, but
Flower's only SecAgg+ implementation, which lives in its legacy API: a `ServerApp` main running
`DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(S, T))` over a `LegacyContext` with the legacy
`flwr.server.strategy.FedAvg` (`evaluate_fn` gives the test AUC), and a `ClientApp(client_fn=...,
mods=[secaggplus_mod])` around a `NumPyClient`. What is the same as sharelearn's secure rounds:
four stages (keys, encrypted Shamir shares, masked input, unmask), a circulant neighbour graph with
S share holders per client counting itself (Bell et al.), t = T, masks in Z_2^32, the same
client (`--drop-client`, `bench_fedavg` passes 1 = c0001) trains and then leaves after sharing its
keys in every round, so the server rebuilds its pairwise masks. What differs: Flower quantises each
update after scaling it by num_examples / max_weight (max_weight = the largest shard here, so no
weight exceeds 1), clipping to [-clipping_range, clipping_range] and mapping to
[0, quantization_range) with stochastic rounding, where sharelearn uses 16 fractional bits and no
clipping; Flower's graph is a fresh random shuffle of a ring each round, ours one seeded per round;
Flower expands masks with numpy's Mersenne Twister seeded by 32 bits folded from the key, ours
with AES-CTR; Flower's masked vectors travel as int64 arrays, ours as uint32 words; the plain and
SecAgg+ runs use two different Flower APIs (Message-API strategy vs legacy strategy + workflow),
as SecAgg+ exists only in the latter. Neither side signs messages or checks consistency
(semi-honest server in both).
The JSON has the plain path's keys plus "secagg": Flower's values actually used in the rounds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Workload", "auc", "load_workload", "main"]


def _load_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(features, label) of a FATE csv with columns id, y, x0..."""
    with path.open() as f:
        header = f.readline().strip().split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    label = header.index("y")
    features = [i for i, name in enumerate(header) if name not in ("id", "y")]
    return data[:, features], data[:, label]


def load_workload(
    data_dir: Path, n_clients: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[Any, Any]]:
    """The clients' shards and the test set, split exactly as `bench_fedavg._pooled` + `run_one`."""
    parts = [_load_csv(data_dir / f"default_credit_homo_{p}.csv") for p in ("guest", "host_1", "host_2")]
    x = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    shards = np.array_split(np.random.default_rng(n_clients).permutation(len(y)), n_clients)
    clients = [(x[np.sort(s)], y[np.sort(s)]) for s in shards]
    return clients, _load_csv(data_dir / "default_credit_homo_test.csv")


def auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (average ranks for ties)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / max(n_pos * n_neg, 1))


def _model(n_features: int, hidden: tuple[int, ...]) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class Workload:
    """The shards, the test set, the model and the local training that both runs share."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.hidden = tuple(int(h) for h in args.hidden.split(","))
        self.clients, (self.x_test, self.y_test) = load_workload(Path(args.data), args.clients)
        self.n_features = self.clients[0][0].shape[1]
        self.lr, self.batch, self.epochs = args.learning_rate, args.batch_size, args.local_epochs

    def model(self) -> Any:
        return _model(self.n_features, self.hidden)

    def fit(self, k: int, server_round: int, state: dict[str, Any]) -> tuple[dict[str, Any], float, int]:
        """Client k's local epochs from the global `state`: (new state, mean batch loss, rows)."""
        import torch

        torch.set_num_threads(1)
        x, y = self.clients[k]
        model = self.model()
        model.load_state_dict(state)
        optim = torch.optim.SGD(model.parameters(), lr=self.lr)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
        rng = np.random.default_rng([k, server_round])
        losses = []
        model.train()
        for _ in range(self.epochs):
            order = torch.from_numpy(rng.permutation(len(y)))
            for begin in range(0, len(order), self.batch):
                rows = order[begin : begin + self.batch]
                optim.zero_grad()
                loss = loss_fn(model(xt[rows])[:, 0], yt[rows])
                losses.append(float(loss.detach()))
                loss.backward()
                optim.step()
        return model.state_dict(), float(np.mean(losses)), len(y)

    def test_auc(self, state: dict[str, Any]) -> float:
        import torch

        model = self.model()
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(self.x_test, dtype=np.float32))
            z = model(x)[:, 0].double().numpy()
        return auc(self.y_test, z)

    def state_from_arrays(self, arrays: list[np.ndarray]) -> dict[str, Any]:
        """A state dict from Flower's legacy NDArrays (state-dict order, as `initial_parameters`)."""
        import torch

        keys = self.model().state_dict().keys()
        # A copy: Flower's deserialised arrays are read-only, which torch.from_numpy warns about.
        return {k: torch.tensor(np.asarray(a)) for k, a in zip(keys, arrays, strict=True)}


def _plain_apps(
    args: argparse.Namespace, work: Workload, on_eval: Callable[[float], None], failed: list[str]
) -> Any:
    """Flower's Message-API FedAvg: (server_app, client_app); `failed` gets failed replies' errors."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    client_app = ClientApp()

    @client_app.train()  # type: ignore[untyped-decorator]
    def train(msg: Message, context: Context) -> Message:
        import torch  # noqa: F401  # to_torch_state_dict needs torch imported in this Ray worker

        k = int(context.node_config["partition-id"])
        server_round = int(msg.content["config"]["server-round"])
        state, loss, n = work.fit(k, server_round, msg.content["arrays"].to_torch_state_dict())
        metrics = MetricRecord({"train_loss": loss, "num-examples": n})
        return Message(content=RecordDict({"arrays": ArrayRecord(state), "metrics": metrics}), reply_to=msg)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        score = work.test_auc(arrays.to_torch_state_dict())
        on_eval(score)
        return MetricRecord({"test_auc": score})

    class CheckedFedAvg(FedAvg):  # type: ignore[misc]  # flwr is Any to mypy in sharelearn's venv
        def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
            replies = list(replies)
            failed.extend(str(m.error.reason) for m in replies if m.has_error())
            return super().aggregate_train(server_round, replies)

    server_app = ServerApp()

    @server_app.main()  # type: ignore[untyped-decorator]
    def main_fn(grid: Grid, context: Context) -> None:
        strategy = CheckedFedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=args.clients,
            min_available_nodes=args.clients,
        )
        initial = ArrayRecord(work.model().state_dict())
        strategy.start(grid=grid, initial_arrays=initial, num_rounds=args.rounds, evaluate_fn=evaluate)

    return server_app, client_app


class SimulatedDropout(RuntimeError):
    """Raised by the `--drop-client` client after training: Flower sees an error reply, i.e. a dropout."""


def _secagg_client_app(args: argparse.Namespace, work: Workload) -> Any:
    """A legacy `NumPyClient` training as `Workload.fit`, wrapped by Flower's `secaggplus_mod`."""
    from flwr.app import Context
    from flwr.client import Client, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp

    # flwr is not in sharelearn's venv, so its classes are Any to mypy: hence the ignores.
    class TrainingClient(NumPyClient):  # type: ignore[misc]
        def __init__(self, k: int) -> None:
            self.k = k

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            state, loss, n = work.fit(self.k, int(config["server-round"]), work.state_from_arrays(parameters))
            if self.k == args.drop_client:  # trained, shared its keys, now leaves before its masked input
                raise SimulatedDropout(f"client {self.k} leaves (--drop-client)")
            return [v.numpy() for v in state.values()], n, {"train_loss": loss}

    def client_fn(context: Context) -> Client:
        return TrainingClient(int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


def _secagg_apps(
    args: argparse.Namespace, work: Workload, on_eval: Callable[[float], None], used: dict[str, Any]
) -> Any:
    """Flower's legacy FedAvg under SecAgg+: (server_app, client_app); fills `used` as rounds run."""
    from flwr.app import Context
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.serverapp import Grid, ServerApp

    class CountingFedAvg(FedAvg):  # type: ignore[misc]
        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            # Not len(failures): Flower's collect stage lists each dropped client's error twice.
            used["dropouts_per_round"].append(args.clients - len(results))
            return super().aggregate_fit(server_round, results, failures)

    class RecordingSecAggPlus(SecAggPlusWorkflow):  # type: ignore[misc]
        def setup_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
            ok: bool = super().setup_stage(grid, context, state)
            # Flower may round num_shares up to odd at run time: report what the round used.
            used.update(num_shares=state.num_shares, reconstruction_threshold=state.threshold)
            return ok

    def evaluate(server_round: int, arrays: list[np.ndarray], config: dict[str, Any]) -> Any:
        score = work.test_auc(work.state_from_arrays(arrays))
        on_eval(score)
        # The legacy API wants a loss; the plain path computes none, so neither does this one.
        return float("nan"), {"test_auc": score}

    workflow = RecordingSecAggPlus(
        num_shares=args.secagg_shares,
        reconstruction_threshold=args.secagg_threshold,
        # No client's weight num_examples / max_weight exceeds 1 (Flower warns of overflow past it).
        max_weight=float(max(len(y) for _, y in work.clients)),
    )
    used.update(
        clipping_range=workflow.clipping_range,
        quantization_range=workflow.quantization_range,
        modulus_range=workflow.modulus_range,
        max_weight=workflow.max_weight,
        dropped_client=args.drop_client,
        dropouts_per_round=[],
    )
    initial = work.model().state_dict()
    server_app = ServerApp()

    @server_app.main()  # type: ignore[untyped-decorator]
    def main_fn(grid: Grid, context: Context) -> None:
        strategy = CountingFedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=args.clients,
            min_available_clients=args.clients,
            evaluate_fn=evaluate,
            on_fit_config_fn=lambda server_round: {"server-round": server_round},
            initial_parameters=ndarrays_to_parameters([v.numpy() for v in initial.values()]),
        )
        config = ServerConfig(num_rounds=args.rounds)
        legacy = LegacyContext(context=context, config=config, strategy=strategy)
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)

    return server_app, _secagg_client_app(args, work)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import flwr
    import torch
    from flwr.simulation import run_simulation

    work = Workload(args)
    stamps: list[float] = []
    aucs: list[float] = []

    def on_eval(score: float) -> None:
        aucs.append(score)
        stamps.append(time.perf_counter())

    used: dict[str, Any] = {}
    failed: list[str] = []
    if args.secagg_shares is None:
        server_app, client_app = _plain_apps(args, work, on_eval, failed)
    else:
        server_app, client_app = _secagg_apps(args, work, on_eval, used)
    started = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=args.clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": args.cpus, "log_to_driver": False},
        },
    )
    total = time.perf_counter() - started
    rounds = [round(b - a, 4) for a, b in itertools.pairwise(stamps)]
    if len(rounds) != args.rounds:
        raise RuntimeError(f"Flower ran {len(rounds)} of {args.rounds} rounds (see its log on stderr)")
    # FedAvg averages whatever replies came: a failed client would silently change the workload.
    if failed:
        raise RuntimeError(
            f"{len(failed)} client replies failed in Flower's plain rounds, first: {failed[0]}"
        )
    # A halted SecAgg+ round still evaluates (DefaultWorkflow goes on): only aggregated rounds count.
    if used and len(used["dropouts_per_round"]) != args.rounds:
        raise RuntimeError(
            f"Flower's SecAgg+ aggregated {len(used['dropouts_per_round'])} of {args.rounds} rounds "
            "(see 'Secure aggregation halted' in its log on stderr)"
        )
    steady = rounds[1:] or rounds
    result = {
        "flwr": flwr.__version__,
        "torch": torch.__version__,
        "clients": args.clients,
        "rounds": args.rounds,
        "cpus": args.cpus,
        "parameters": sum(int(p.numel()) for p in work.model().parameters()),
        "round_times_s": rounds,
        "first_round_s": rounds[0],
        "round_time_s": round(float(np.mean(steady)), 4),
        "wall_s": round(total, 3),
        "test_auc": round(aucs[-1], 6),
    }
    if used:
        result["secagg"] = used
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", required=True, help="the fate datasets directory")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=1, help="Ray CPUs (one per virtual client at a time)")
    parser.add_argument("--hidden", default="1024,72")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument(
        "--secagg-shares", type=int, default=None, help="run under Flower's SecAgg+ with S shares per client"
    )
    parser.add_argument(
        "--secagg-threshold", type=int, default=None, help="SecAgg+ reconstruction threshold T"
    )
    parser.add_argument(
        "--drop-client",
        type=int,
        default=None,
        help="under SecAgg+: this partition trains, then leaves after sharing its keys, every round",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.secagg_shares is None) != (args.secagg_threshold is None):
        parser.error("--secagg-shares and --secagg-threshold go together")
    dropped = args.drop_client
    if dropped is not None and (args.secagg_shares is None or not 0 <= dropped < args.clients):
        parser.error("--drop-client needs --secagg-shares and a partition in 0..clients-1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        result = run(args)
    except Exception as exc:  # report, as JSON, why there is no figure
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
