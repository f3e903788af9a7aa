from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from sharelearn.algorithms.evaluation import EvaluateParams
from sharelearn.algorithms.horizontal.fedavg import FedAvgParams, baseline_fedavg, infer_spec
from sharelearn.algorithms.horizontal.options import SecAggOptions, SimulationOptions
from sharelearn.algorithms.horizontal.simulation import ClientPool, simulate
from sharelearn.testing.steps import load_csv, run_steps

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "fate"

# Starting a local Ray takes several seconds and its workers import numpy/torch: one test, 3 rounds.
pytestmark = pytest.mark.timeout(300)


def test_hundred_clients_on_ray_with_secure_aggregation_run_three_rounds(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    table = load_csv(DATA / "default_credit_homo_guest.csv", label="y")
    params = FedAvgParams(
        rounds=3,
        secure_aggregation=True,
        secagg=SecAggOptions(neighbours=8),
        simulate_dropouts=("sim_0007:share", "sim_0042:masked"),
        simulation=SimulationOptions(compute="ray", clients=100, ray_cpus=2, ray_actors=2),
    )

    # `fedavg` with simulation: {compute: ray}: the server splits its table into 100 simulated clients.
    run = run_steps(
        {"agg": ("server", table)}, [("fedavg", params), ("evaluate", EvaluateParams())], tmp_path
    )

    out = run.parties["agg"].outputs["fedavg"]
    assert out["compute"] == "ray" and out["clients"] == 100 and out["rounds"] == 3
    assert out["dropouts"] == 3  # sim_0007 each round; sim_0042's input still counts
    assert len(out["history"]["test_auc"]) == 3 and out["test_rows"] == 1600
    assert run.parties["agg"].outputs["evaluate"]["auc"] == pytest.approx(out["test_auc"], abs=1e-6)
    assert Path(out["model_path"]).is_file()
    # The report's centralised twin pools the same 100 shards and scores the same test rows.
    assert baseline_fedavg(params, {"agg": ("server", table)})["auc"] > 0.6
    # The same client code in-process gives the same model as on the Ray actors.
    order = np.random.default_rng([params.seed, 23]).permutation(len(table))
    shards = np.array_split(order[1600:], 100)
    clients = {f"sim_{k:04d}": table.take(np.sort(s)) for k, s in enumerate(shards)}
    local = simulate(params, clients, table.take(np.sort(order[:1600])), compute="local")
    assert np.allclose(run.parties["agg"].model.weights, local.model.weights, atol=1e-6)


@pytest.mark.parametrize("own_process", [True, False])
def test_a_pool_alone_in_its_process_freezes_its_long_lived_objects_after_the_first_round(
    own_process: bool,
) -> None:
    table = load_csv(DATA / "breast_homo_guest.csv", label="y")
    clients = {"a": table.take(np.arange(0, 100)), "b": table.take(np.arange(100, 200))}
    params = FedAvgParams(rounds=2)
    pool = ClientPool(clients, params, 2, own_process=own_process)
    infos = pool.info()
    pool.set_spec(infer_spec(params, [infos["a"], infos["b"]], ["a", "b"]).to_meta())
    weights = np.zeros(table.x.shape[1] + 1)
    gc.unfreeze()
    try:
        first = pool.plain_round(weights, 0, ["a", "b"])
        frozen = gc.get_freeze_count()
        second = pool.plain_round(weights, 1, ["a", "b"])
        # Frozen once, after the first round only (frozen objects freed later leave the count).
        assert (frozen > 0) == own_process and gc.get_freeze_count() <= frozen
        assert set(first) == set(second) == {"a", "b"}
    finally:
        gc.unfreeze()
