"""Flower's figures for `sharelearn bench fedavg`: the same FedAvg workload in Flower's simulation.

Runs ONLY in the separate `.venv-flower` (made by `benchmarks/envs/flower.sh`; flwr[simulation]
pins ray, typer and protobuf versions that conflict with sharelearn's venv), so it imports nothing
from sharelearn. `bench_fedavg` starts it as a subprocess and reads the one JSON object it prints
last on stdout:

    .venv-flower/bin/python benchmarks/flower_workload.py --data ../shared/datasets/fate \\
        --clients 100 --rounds 3 [--cpus 1]

The workload is `bench_fedavg`'s plain FedAvg (keep the two in step): default_credit_homo guest +
host_1 + host_2 pooled (24,000 rows, 23 features) and split IID into N clients with the same
numpy permutation (`default_rng(N)`); an MLP 23 -> 1024 -> 72 -> 1 (98,449 parameters, float32,
PyTorch's default initialisation); each round every client trains one local epoch of SGD
(learning rate 0.05, batch 64, binary cross-entropy, rows shuffled by numpy) from the global model;
FedAvg weights the updates by sample count; after every round the server scores the global model
on default_credit_homo_test (AUC). Torch uses one thread per client, as in sharelearn's pools.

It runs Flower 1.x's Message API (`ServerApp` + `ClientApp`, `flwr.serverapp.strategy.FedAvg`,
`flwr.simulation.run_simulation` on Ray with `--cpus` CPUs and one CPU per virtual client, so
`--cpus` clients train at once). A round's time is the time between two consecutive calls of the
server-side evaluation function, so it covers sending the model, local training, aggregation and
the test-set evaluation, like sharelearn's `round_time_s`. The first round also pays Ray actors'
start-up and their first torch calls, so `round_time_s` is the mean of the later rounds (all rounds
when there is only one) and `first_round_s` is reported apart.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["auc", "load_workload", "main"]


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


def run(args: argparse.Namespace) -> dict[str, Any]:
    import flwr
    import torch
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    hidden = tuple(int(h) for h in args.hidden.split(","))
    clients, (x_test, y_test) = load_workload(Path(args.data), args.clients)
    n_features = clients[0][0].shape[1]
    lr, batch, epochs = args.learning_rate, args.batch_size, args.local_epochs
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        k = int(context.node_config["partition-id"])
        x, y = clients[k]
        model = _model(n_features, hidden)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        optim = torch.optim.SGD(model.parameters(), lr=lr)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
        rng = np.random.default_rng([k, int(msg.content["config"]["server-round"])])
        losses = []
        model.train()
        for _ in range(epochs):
            order = torch.from_numpy(rng.permutation(len(y)))
            for begin in range(0, len(order), batch):
                rows = order[begin : begin + batch]
                optim.zero_grad()
                loss = loss_fn(model(xt[rows])[:, 0], yt[rows])
                losses.append(float(loss.detach()))
                loss.backward()
                optim.step()
        metrics = MetricRecord({"train_loss": float(np.mean(losses)), "num-examples": len(y)})
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    stamps: list[float] = []
    aucs: list[float] = []

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = _model(n_features, hidden)
        model.load_state_dict(arrays.to_torch_state_dict())
        model.eval()
        with torch.no_grad():
            z = model(torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)))[:, 0].double().numpy()
        score = auc(y_test, z)
        aucs.append(score)
        stamps.append(time.perf_counter())
        return MetricRecord({"test_auc": score})

    server_app = ServerApp()

    @server_app.main()
    def main_fn(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=args.clients,
            min_available_nodes=args.clients,
        )
        initial = ArrayRecord(_model(n_features, hidden).state_dict())
        strategy.start(grid=grid, initial_arrays=initial, num_rounds=args.rounds, evaluate_fn=evaluate)

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
    steady = rounds[1:] or rounds
    return {
        "flwr": flwr.__version__,
        "torch": torch.__version__,
        "clients": args.clients,
        "rounds": args.rounds,
        "cpus": args.cpus,
        "parameters": sum(int(p.numel()) for p in _model(n_features, hidden).parameters()),
        "round_times_s": rounds,
        "first_round_s": rounds[0],
        "round_time_s": round(float(np.mean(steady)), 4),
        "wall_s": round(total, 3),
        "test_auc": round(aucs[-1], 6),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", required=True, help="the fate datasets directory")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=1, help="Ray CPUs (one per virtual client at a time)")
    parser.add_argument("--hidden", default="1024,72")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--local-epochs", type=int, default=1)
    args = parser.parse_args(argv)
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
