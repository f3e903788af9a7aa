"""Simulate many FedAvg clients on one machine, on a local Ray (`simulation: {compute: ray}`) or in-process.

The clients run the same code as in a deployment (`fedavg.ClientTrainer` for local training and the
`secagg` client stages), hosted by a pool of `simulation.ray_actors` Ray actors, each holding a share of the
virtual clients: Flower's virtual client engine does the same, since hundreds of OS processes would
not fit on a laptop. The driver plays the server (`fedavg.ServerLoop` and the `secagg` server
stages) and passes each stage's messages between server and clients, as the Link would.

Ray moves the clients' data to the actors with its own (pickle-based) serialisation: this is a
single-owner simulation, never a way to talk to another organisation.

`run_simulation_step` is the `fedavg` step with `simulation: {compute: ray}`: the server party's own table
is split into `simulation.clients` IID clients and a held-out test set.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sharelearn.algorithms.context import Dataset, StepContext
from sharelearn.algorithms.horizontal import models, secagg
from sharelearn.algorithms.horizontal.fedavg import (
    ClientTrainer,
    FedAvgModel,
    FedAvgParams,
    ServerLoop,
    infer_spec,
    secagg_config,
)
from sharelearn.algorithms.horizontal.identity import Identity, ephemeral_identities
from sharelearn.algorithms.package import publish_model
from sharelearn.core.errors import ConfigError
from sharelearn.core.types import F64Array

__all__ = ["ClientPool", "SimulationResult", "run_simulation_step", "simulate", "split_table"]


class ClientPool:
    """A group of virtual clients living in one worker (a Ray actor, or the driver itself).

    `own_process`: the pool is the only tenant of its process (a Ray actor). After its first round
    it then moves everything alive into Python's permanent GC generation (`gc.freeze`): torch,
    numba and fifty clients' trainers are ~0.5 M tracked objects, so every full collection took
    150-250 ms, and one landing inside a stage held up the whole round (every other round under
    secure aggregation, whose stages keep more containers alive). Objects made later are still
    collected as usual.
    """

    def __init__(
        self,
        clients: Mapping[str, Dataset],
        params: FedAvgParams,
        n_total: int,
        own_process: bool = False,
        *,
        identities: Mapping[str, Identity] | None = None,
    ) -> None:
        self.params = params
        self.identities = dict(identities or {})
        self.freeze_pending = own_process
        self.n_total = n_total
        self.trainers = {name: ClientTrainer(name, data, params) for name, data in clients.items()}
        self.drops = params.dropouts()
        self.sa: dict[str, secagg.ClientState] = {}
        self.index: dict[int, str] = {}
        try:  # one thread per virtual client worker: the pool runs them one after another
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover - torch is a dependency
            pass

    def info(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, t in self.trainers.items():
            y = t.y if not len(t.y_val) else np.concatenate([t.y, t.y_val])
            out[name] = {
                "n_features": int(t.x.shape[1]),
                "max_label": float(y.max()),
                "integral": bool(np.all(y == np.round(y)) and y.min() >= 0),
            }
        return out

    def set_spec(self, meta: dict[str, Any]) -> None:
        spec = models.ModelSpec.from_meta(meta)
        for t in self.trainers.values():
            t.spec = spec

    def plain_round(self, weights: F64Array, round_index: int, names: Sequence[str]) -> dict[str, F64Array]:
        """Each selected client's update vector (clients with a dropout knob send none)."""
        out = {
            n: self.trainers[n].update(weights, round_index)
            for n in names
            if n in self.trainers and n not in self.drops
        }
        self._round_done()
        return out

    def _round_done(self) -> None:
        if self.freeze_pending:  # see the class docstring
            self.freeze_pending = False
            gc.collect()
            gc.freeze()

    def _quantized(
        self, name: str, weights: F64Array, round_index: int
    ) -> npt.NDArray[np.unsignedinteger[Any]]:
        vector = self.trainers[name].update(weights, round_index)
        p = self.params
        return secagg.quantize(
            vector,
            frac_bits=p.secagg.frac_bits,
            modulus_bits=p.secagg.modulus_bits,
            max_summands=self.n_total,
            overwrite=True,
        )

    def sa_advertise(self, cfg: secagg.SecAggConfig, indices: Mapping[str, int]) -> dict[int, Any]:
        self.sa, self.index, out = {}, {}, {}
        roster = sorted(indices, key=indices.__getitem__)
        policy = secagg.ClientPolicy(
            expected=lambda n: secagg_config(self.params, n, cfg.length, cfg.round_id),
            clients=None,  # the roster is checked against the simulation CA's certificates
        )
        for name, i in indices.items():
            if name in self.trainers:
                self.sa[name], out[i] = secagg.client_advertise(cfg, i, self.identities[name], roster, policy)
                self.index[i] = name
        return out

    def _alive(self, routed: Mapping[int, Any], after: str) -> list[tuple[int, str]]:
        """Clients with a message waiting that have not left (dropout knob) after stage `after`."""
        stages = secagg.DROP_STAGES[: secagg.DROP_STAGES.index(after) + 1]
        return [(i, n) for i, n in self.index.items() if i in routed and self.drops.get(n) not in stages]

    def sa_share(self, routed: Mapping[int, Any]) -> dict[int, Any]:
        return {
            i: secagg.client_share_keys(self.sa[n], routed[i]) for i, n in self._alive(routed, "advertise")
        }

    def sa_masked(
        self, routed: Mapping[int, Any], weights: F64Array, round_index: int
    ) -> dict[int, np.ndarray]:
        """Each surviving client's masked input (uint32 words in Z_2^k for k <= 32, else uint64)."""
        return {
            i: secagg.client_masked_input(
                self.sa[n], routed[i], self._quantized(n, weights, round_index), overwrite=True
            )
            for i, n in self._alive(routed, "share")
        }

    def sa_sign(self, survivors: np.ndarray) -> dict[int, Any]:
        alive = {int(u) for u in survivors}
        members = {i: survivors for i in self.index if i in alive}
        return {
            i: secagg.client_sign_survivors(self.sa[n], members[i]) for i, n in self._alive(members, "masked")
        }

    def sa_unmask(self, signed: Mapping[int, Any]) -> dict[int, Any]:
        out = {i: secagg.client_unmask(self.sa[n], signed[i]) for i, n in self.index.items() if i in signed}
        self._round_done()
        return out


@dataclass
class SimulationResult:
    """The trained global model and the run's figures."""

    model: FedAvgModel
    outputs: dict[str, Any]


class _Workers:
    """Calls one method on every pool, on Ray (in parallel) or in-process; merges dict results."""

    def __init__(self, pools: Sequence[Any], on_ray: bool) -> None:
        self.pools, self.on_ray = pools, on_ray

    def call(self, method: str, *args: Any) -> dict[Any, Any]:
        merged: dict[Any, Any] = {}
        if self.on_ray:
            import ray

            refs = [getattr(p, method).remote(*args) for p in self.pools]
            results = ray.get(refs)
        else:
            results = [getattr(p, method)(*args) for p in self.pools]
        for r in results:
            if r:
                merged.update(r)
        return merged


def _start_pools(
    clients: Mapping[str, Dataset], params: FedAvgParams, compute: str
) -> tuple[_Workers, Callable[[], None]]:
    names = list(clients)
    n_workers = min(params.simulation.ray_actors, len(names)) if compute == "ray" else 1
    groups = [names[k::n_workers] for k in range(n_workers)]
    # One throwaway CA for the simulated clients: they sign their keys and survivor sets with it.
    ids = ephemeral_identities(names) if params.secure_aggregation else {}
    if compute != "ray":
        return _Workers([ClientPool(clients, params, len(names), identities=ids)], False), lambda: None
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=params.simulation.ray_cpus, include_dashboard=False, log_to_driver=False)
        started = True
    actor = ray.remote(num_cpus=params.simulation.ray_cpus / n_workers)(ClientPool)
    pools: list[Any] = [
        actor.remote(
            {n: clients[n] for n in g},
            params,
            len(names),
            identities={n: ids[n] for n in g if n in ids},
            own_process=True,
        )
        for g in groups
    ]

    def stop() -> None:
        for p in pools:
            ray.kill(p)
        if started:
            ray.shutdown()

    return _Workers(pools, True), stop


def simulate(
    params: FedAvgParams,
    clients: Mapping[str, Dataset],
    test: Dataset | None,
    *,
    compute: str | None = None,
    progress: Callable[[str, Mapping[str, Any]], None] = lambda message, metrics: None,
) -> SimulationResult:
    """Run FedAvg over `clients` (name -> table) locally: `params.rounds` rounds, or until converged.

    `compute`: "ray" (local Ray, `params.simulation`'s `ray_cpus` CPUs and `ray_actors` actors) or
    "local" (this process).
    """
    mode = compute or params.compute
    if mode not in ("ray", "local"):
        raise ConfigError(f"simulation compute must be 'ray' or 'local', got {mode!r}")
    names = list(clients)
    if len(names) < 2:
        raise ConfigError("a simulation needs at least two clients")
    workers, stop = _start_pools(clients, params, mode)
    try:
        infos = workers.call("info")
        spec = infer_spec(params, [infos[n] for n in names], names)
        workers.call("set_spec", spec.to_meta())
        loop = ServerLoop(spec, params, len(names), test)
        started, dropouts, durations = time.perf_counter(), 0, []
        for r in range(params.round_limit):
            round_start = time.perf_counter()
            total, dropped = _round(workers, params, loop, [names[i] for i in loop.select(r)], r)
            dropouts += dropped
            metrics = loop.apply(np.asarray(total, dtype=np.float64))
            durations.append(time.perf_counter() - round_start)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            progress(f"round {r + 1}/{params.round_limit}: {shown}", metrics)
            if loop.converged:
                break
        elapsed = time.perf_counter() - started
    finally:
        stop()
    outputs = _outputs(params, loop, len(names), mode, elapsed, durations, dropouts)
    return SimulationResult(loop.model(), outputs)


def _round(
    workers: _Workers, params: FedAvgParams, loop: ServerLoop, chosen: Sequence[str], r: int
) -> tuple[F64Array, int]:
    """One simulated round: the summed vector of the chosen clients and how many dropped."""
    length = loop.weights.size + 4
    if params.secure_aggregation:
        return _secagg_round(workers, params, loop.weights, chosen, length, r)
    updates = workers.call("plain_round", loop.weights, r, chosen)
    total = np.zeros(length, dtype=np.float64)
    for n in chosen:  # in place, in a fixed order: no (clients x length) stack
        if n in updates:
            total += updates[n]
    return total, len(chosen) - len(updates)


def _outputs(
    params: FedAvgParams,
    loop: ServerLoop,
    n_clients: int,
    mode: str,
    elapsed: float,
    durations: Sequence[float],
    dropouts: int,
) -> dict[str, Any]:
    """The simulation step's outputs (as `fedavg`'s summary, plus the compute mode and timings)."""
    spec = loop.spec
    outputs: dict[str, Any] = {
        "model": spec.kind,
        "task": spec.task,
        "clients": n_clients,
        "rounds": len(durations),
        "parameters": int(loop.weights.size),
        "secure_aggregation": params.secure_aggregation,
        "compute": mode,
        "round_time_s": round(elapsed / max(len(durations), 1), 4),
        # Rounds after the first: on Ray the first also pays the actors' start-up and first torch calls.
        "steady_round_time_s": round(float(np.mean(durations[1:] or durations)), 4),
        "dropouts": dropouts,
        "history": {k: [round(float(v), 6) for v in vals] for k, vals in loop.history.items()},
    }
    for key, values in loop.history.items():
        outputs[key] = round(values[-1], 6)
    if loop.dp is not None:
        outputs["dp_epsilon"] = round(loop.dp.epsilons[-1], 6)
        outputs["dp_delta"] = params.dp.delta
    return outputs


def _secagg_round(
    workers: _Workers, params: FedAvgParams, weights: F64Array, chosen: Sequence[str], length: int, r: int
) -> tuple[F64Array, int]:
    cfg = secagg_config(params, len(chosen), length, r)
    indices = {n: i for i, n in enumerate(chosen)}
    state, routed = secagg.server_collect_keys(cfg, workers.call("sa_advertise", cfg, indices))
    inboxes = secagg.server_route_shares(state, workers.call("sa_share", routed))
    survivors = secagg.server_collect_masked(state, workers.call("sa_masked", inboxes, weights, r))
    signed = secagg.server_collect_signatures(state, workers.call("sa_sign", survivors))
    total = secagg.server_unmask(state, workers.call("sa_unmask", signed))
    values = secagg.dequantize(total, frac_bits=params.secagg.frac_bits, modulus_bits=cfg.modulus_bits)
    return values, len(chosen) - len(survivors)


def split_table(data: Dataset, params: FedAvgParams) -> tuple[dict[str, Dataset], Dataset]:
    """Split a table into `simulation.clients` IID clients and a held-out test set (seeded)."""
    n = len(data)
    order = np.random.default_rng([params.seed, 23]).permutation(n)
    n_test = max(1, int(n * params.simulation.test_fraction))
    if n - n_test < params.simulation.clients:
        raise ConfigError(
            f"fedavg.simulation.clients={params.simulation.clients} needs at least that many training rows, "
            f"the server's table has {n - n_test} after holding out the test set"
        )
    shards = np.array_split(order[n_test:], params.simulation.clients)
    clients = {f"sim_{k:04d}": data.take(np.sort(s)) for k, s in enumerate(shards)}
    return clients, data.take(np.sort(order[:n_test]))


def run_simulation_step(ctx: StepContext, params: FedAvgParams) -> dict[str, Any]:
    """`fedavg` with `simulation: {compute: ray}`: the server simulates `simulation.clients` clients."""
    if ctx.role != "server":
        if ctx.role == "client":
            raise ConfigError(
                "fedavg.compute 'ray' simulates the clients: list only a server party with data"
            )
        return {}
    if ctx.data is None:
        raise ConfigError(
            "fedavg.compute 'ray' needs the server party to hold the table to split into clients"
        )
    clients, test = split_table(ctx.data, params)
    result = simulate(params, clients, test, compute="ray", progress=ctx.progress)
    ctx.data = test
    path = publish_model(ctx, result.model)
    return {**result.outputs, "model_path": str(path), "test_rows": len(test)}
