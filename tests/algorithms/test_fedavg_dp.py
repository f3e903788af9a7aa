from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sharelearn.algorithms.evaluation import EvaluateParams
from sharelearn.algorithms.horizontal.dp_fedavg import DpConfig, clip_update, noisy_average
from sharelearn.algorithms.horizontal.fedavg import FedAvgParams, load_fedavg_model
from sharelearn.algorithms.horizontal.options import DpOptions
from sharelearn.algorithms.horizontal.simulation import simulate
from sharelearn.algorithms.package import load_package
from sharelearn.core.errors import ConfigError
from sharelearn.crypto.dp import GaussianAccountant, noise_grid
from sharelearn.crypto.rng import SeededRng
from sharelearn.testing.steps import load_csv, run_steps

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "fate"


def test_dp_fedavg_reports_the_budget_per_round_and_its_accuracy_cost(tmp_path: Path) -> None:
    train = load_csv(DATA / "default_credit_homo_guest.csv", label="y")
    test = load_csv(DATA / "default_credit_homo_test.csv", label="y")
    shards = np.array_split(np.arange(4000), 20)
    clients = {f"c{i}": train.take(s) for i, s in enumerate(shards)}
    common = {"rounds": 4, "learning_rate": 0.1, "fraction": 0.5, "seed": 1}
    plain = simulate(FedAvgParams(**common), clients, test, compute="local").outputs
    private = simulate(
        FedAvgParams(
            **common, dp=DpOptions(noise_multiplier=1.0, clip_norm=0.5, delta=1e-4), secure_aggregation=True
        ),
        clients,
        test,
        compute="local",
    ).outputs

    eps = private["history"]["dp_epsilon"]
    reference = GaussianAccountant(1.0, 0.5, 1e-4)
    assert eps == pytest.approx([round(reference.step(), 6) for _ in range(4)])
    assert private["dp_epsilon"] == eps[-1] and private["dp_delta"] == 1e-4
    assert all(a < b for a, b in itertools.pairwise(eps))
    # The accuracy cost of privacy: still a useful model, not better than without noise by much.
    assert private["test_auc"] > 0.6
    assert private["test_auc"] < plain["test_auc"] + 0.02
    assert "dp_epsilon" not in plain


def test_dp_fedavg_step_puts_epsilon_in_the_output_and_model(tmp_path: Path) -> None:
    parties = {
        "agg": ("server", load_csv(DATA / "breast_homo_test.csv", label="y")),
        "guest": ("client", load_csv(DATA / "breast_homo_guest.csv", label="y")),
        "host": ("client", load_csv(DATA / "breast_homo_host.csv", label="y")),
    }
    params = FedAvgParams(rounds=3, dp=DpOptions(noise_multiplier=2.0, clip_norm=1.0))

    run = run_steps(parties, [("fedavg", params), ("evaluate", EvaluateParams(plots=False))], tmp_path)

    out = run.parties["agg"].outputs["fedavg"]
    assert out["dp_epsilon"] > 0 and out["dp_delta"] == 1e-5 and len(out["history"]["dp_epsilon"]) == 3
    assert load_fedavg_model(load_package(Path(out["model_path"]))).dp_epsilon == pytest.approx(
        out["dp_epsilon"]
    )
    assert "auc" in run.parties["agg"].outputs["evaluate"]
    assert run.parties["agg"].outputs["evaluate"]["dp_epsilon"] == pytest.approx(out["dp_epsilon"], rel=1e-5)


def test_clipping_and_noise_follow_the_config() -> None:
    cfg = DpConfig(clip_norm=1.0, noise_multiplier=0.5)
    clipped = clip_update(np.full(100, 1.0), cfg)
    assert np.isclose(np.linalg.norm(clipped), 1.0)
    avg = noisy_average(np.zeros(50_000), 4, cfg, SeededRng(0))
    assert abs(float(avg.std()) - 0.5 / 4) < 0.005
    with pytest.raises(ConfigError, match="dp.noise_multiplier"):
        DpConfig(clip_norm=1.0, noise_multiplier=0.0)
    with pytest.raises(ConfigError, match="dp.clip_norm"):
        FedAvgParams(dp=DpOptions(noise_multiplier=1.0, clip_norm=-1.0))


def _breast_clients(folder: Path) -> tuple[dict[str, object], object]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    columns = [f"x{j}" for j in range(x.shape[1])]
    folder.mkdir(parents=True, exist_ok=True)
    tables = {}
    for name, rows in {"c0": slice(0, 200), "c1": slice(200, 400), "test": slice(400, None)}.items():
        frame = pd.DataFrame(x[rows], columns=columns)
        frame.insert(0, "y", y[rows])
        frame.insert(0, "id", np.arange(len(frame)) + rows.start)
        frame.to_csv(folder / f"{name}.csv", index=False)
        tables[name] = load_csv(folder / f"{name}.csv", label="y")
    test = tables.pop("test")
    return tables, test


def test_dp_noise_is_fresh_in_every_run_not_drawn_from_the_job_seed(tmp_path: Path) -> None:
    clients, test = _breast_clients(tmp_path)
    params = FedAvgParams(rounds=1, seed=5, dp=DpOptions(noise_multiplier=1.0, clip_norm=1.0))
    plain = FedAvgParams(rounds=1, seed=5)

    first = simulate(params, clients, test, compute="local").model.weights  # type: ignore[arg-type]
    second = simulate(params, clients, test, compute="local").model.weights  # type: ignore[arg-type]
    reference = simulate(plain, clients, test, compute="local").model.weights  # type: ignore[arg-type]

    # Same job, same seed: the noise differs (a seeded generator would repeat it, and anyone who
    # knows the job's seed could subtract it), while the noise-free run repeats exactly.
    assert not np.allclose(first, second)
    assert np.array_equal(reference, simulate(plain, clients, test, compute="local").model.weights)  # type: ignore[arg-type]


def test_noisy_average_lies_on_the_fixed_grid_whatever_the_sum() -> None:
    cfg = DpConfig(clip_norm=1.0, noise_multiplier=1.0)
    total = np.full(1000, 0.123456789123)

    avg = noisy_average(total, 2, cfg, SeededRng(1))

    steps = avg * 2 / noise_grid(1000, 1.0, 1.0).resolution
    assert np.array_equal(steps, np.rint(steps))
