"""ss_lr in-process: accuracy against scikit-learn, shares that look uniform, model files, reveal_to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sharelearn.algorithms.alignment import PsiParams
from sharelearn.algorithms.evaluation import EvaluateParams, PredictParams
from sharelearn.algorithms.mpc.ss_lr import SSLRModel, SSLRParams, batch_specs, load_ss_lr, ss_lr_baseline
from sharelearn.algorithms.package import load_package
from sharelearn.core.audit import WireAudit
from sharelearn.core.codec import decode
from sharelearn.core.errors import ConfigError, PartyFailed
from sharelearn.testing.leaks import assert_no_leak
from sharelearn.testing.steps import dataset, load_csv, run_steps

pytestmark = pytest.mark.timeout(180)

FATE = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "fate"


@pytest.fixture(scope="module")
def breast() -> tuple[object, object]:
    return load_csv(FATE / "breast_hetero_guest.csv", label="y"), load_csv(FATE / "breast_hetero_host.csv")


def _parties(guest: object, host: object, dealer: bool) -> dict[str, tuple[str, object]]:
    parties: dict[str, tuple[str, object]] = {"bank": ("guest", guest), "shop": ("host", host)}
    if dealer:
        parties["third"] = ("dealer", None)
    return parties


def _uint_words(payloads: list[bytes], dtype: type) -> np.ndarray:
    words: list[np.ndarray] = []

    def walk(v: object) -> None:
        if isinstance(v, np.ndarray) and v.dtype == dtype and (dtype != np.uint8 or v.max(initial=0) > 1):
            words.append(v.reshape(-1))
        elif isinstance(v, list):
            for item in v:
                walk(item)

    for p in payloads:
        walk(decode(p))
    return np.concatenate(words) if words else np.zeros(0, dtype=dtype)


def test_breast_with_a_dealer_matches_sklearn_and_every_received_share_looks_uniform(
    breast: tuple[object, object], tmp_path: Path
) -> None:
    guest, host = breast
    params = SSLRParams(epochs=10, batch_size=1024, learning_rate=0.2, sigmoid="minimax")

    run = run_steps(
        _parties(guest, host, True),  # type: ignore[arg-type]
        [("psi", PsiParams()), ("ss_lr", params), ("evaluate", EvaluateParams(plots=False))],
        tmp_path,
    )

    auc = run.parties["bank"].outputs["evaluate"]["auc"]
    central = ss_lr_baseline(params, {"bank": ("guest", guest), "shop": ("host", host)})["auc"]  # type: ignore[dict-item]
    assert central - auc <= 0.01, (auc, central)
    for party in ("bank", "shop"):
        received = [
            p
            for m, p in zip(
                [m for m in run.audit.messages if m.dst == party], run.audit.received(party), strict=True
            )
            if "/ss_lr/" in m.tag and not m.tag.endswith("/shape")
        ]
        words = _uint_words(received, np.uint64)
        assert words.size > 10_000
        bit_means = np.unpackbits(words.view(np.uint8)).reshape(-1, 64).mean(axis=0)
        assert np.all(np.abs(bit_means - 0.5) < 0.02), bit_means  # no bit position is biased
        octets = _uint_words(received, np.uint8)  # OT extension matrices, base-OT points
        assert abs(np.unpackbits(octets).mean() - 0.5) < 0.01
    sample = np.random.default_rng(0)
    x_g = sample.choice(np.unique(np.asarray(guest.x)), 300).tolist()  # type: ignore[attr-defined]
    x_h = sample.choice(np.unique(np.asarray(host.x)), 300).tolist()  # type: ignore[attr-defined]
    # the byte scan is slow on garbled tables and OT matrices, which the bit test above covers
    small = WireAudit()
    for party in ("bank", "shop"):
        msgs = [m for m in run.audit.messages if m.dst == party]
        for m, p in zip(msgs, run.audit.received(party), strict=True):
            if "/gc/" not in m.tag and "/ss_ot/" not in m.tag:
                small.record(m.src, m.dst, m.tag, p)
    assert_no_leak(small, "shop", x_g, what="guest feature")
    assert_no_leak(small, "bank", x_h, what="host feature")
    model = run.parties["shop"].model
    assert isinstance(model, SSLRModel) and model.weights is None  # stays shared


def test_dealer_free_he_triples_train_to_the_same_model_quality(
    breast: tuple[object, object], tmp_path: Path
) -> None:
    guest, host = breast
    keep = np.arange(160)
    g, h = guest.take(keep), host.take(keep)  # type: ignore[attr-defined]
    params = SSLRParams(epochs=4, batch_size=256, learning_rate=0.5, key_bits=1024)

    run = run_steps(
        _parties(g, h, False),
        [("ss_lr", params), ("evaluate", EvaluateParams(plots=False))],
        tmp_path,
        aligned=True,
    )  # type: ignore[arg-type]

    auc = run.parties["bank"].outputs["evaluate"]["auc"]
    central = ss_lr_baseline(params, {"bank": ("guest", g), "shop": ("host", h)})["auc"]
    assert central - auc <= 0.01, (auc, central)


def test_saved_parts_predict_in_a_later_job_and_reveal_to_writes_weights_only_there(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = (x @ np.array([1.5, -2.0, 0.5, 1.0]) + 0.3 * rng.normal(size=300) > 0).astype(float)
    ids = np.arange(300)
    parties = _parties(dataset(ids, x[:, :2], y), dataset(ids, x[:, 2:]), True)
    params = SSLRParams(
        epochs=20, batch_size=100, learning_rate=0.5, sigmoid="piecewise", reveal_to=("bank",)
    )

    train = run_steps(
        parties, [("ss_lr", params), ("evaluate", EvaluateParams())], tmp_path / "train", aligned=True
    )  # type: ignore[arg-type]
    models = {p: load_ss_lr(load_package(tmp_path / "train" / p / "models" / "ss_lr.model")) for p in parties}
    again = run_steps(parties, [("predict", PredictParams())], tmp_path / "predict", models=models)  # type: ignore[arg-type]

    assert train.parties["bank"].outputs["evaluate"]["auc"] > 0.95
    # the per-epoch Taylor loss: one opened scalar per epoch, falling, drawn by evaluate
    loss = train.parties["bank"].outputs["ss_lr"]["loss"]
    assert len(loss) == 20 and loss == train.parties["shop"].outputs["ss_lr"]["loss"]
    assert loss[-1] < loss[0] < np.log(2.0) + 1e-3
    w = np.loadtxt(tmp_path / "train" / "bank" / "ss_lr_weights.csv", delimiter=",", skiprows=1, usecols=1)
    z = np.hstack([x[:, :2], np.ones((300, 1)), x[:, 2:]]) @ w
    taylor = np.mean(np.log(2.0) + z / 2 - y * z + z**2 / 8)  # at the final weights
    assert abs(loss[-1] - taylor) < 0.03, (loss[-1], taylor)
    assert train.parties["bank"].outputs["evaluate"]["history"]["loss"] == loss
    assert (tmp_path / "train" / "bank" / "loss_curve.png").stat().st_size > 1000
    assert models["bank"].history == {"loss": pytest.approx(loss, abs=1e-6)}
    weights = (tmp_path / "train" / "bank" / "ss_lr_weights.csv").read_text().splitlines()
    assert weights[0] == "name,weight" and len(weights) == 1 + 5
    assert not (tmp_path / "train" / "shop" / "ss_lr_weights.csv").exists()
    assert "weight" not in str(train.parties["bank"].outputs["ss_lr"])  # never in the step outputs
    scores = np.loadtxt(
        tmp_path / "predict" / "bank" / "predictions.csv", delimiter=",", skiprows=1, usecols=1
    )
    assert scores.shape == (300,) and np.all((scores > 0) & (scores < 1))
    assert again.parties["shop"].outputs["predict"] == {}  # only the label holder learns scores


def test_batch_specs_follow_the_sigmoid_method() -> None:
    assert len(batch_specs(8, 3, "taylor")) == 2 + 3
    assert len(batch_specs(8, 3, "minimax")) == 2 + 1 + 5  # the clip: one fused bit-times-value round
    assert len(batch_specs(8, 3, "piecewise")) == 2 + 2


def test_bad_parameters_and_missing_roles_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ss_lr.sigmoid"):
        SSLRParams(sigmoid="tanh")
    with pytest.raises(ConfigError, match="learning_rate"):
        SSLRParams(learning_rate=0.0)
    only_guest = {"bank": ("guest", dataset([1, 2], np.ones((2, 1)), np.array([0.0, 1.0])))}
    with pytest.raises(PartyFailed, match="exactly one host"):
        run_steps(only_guest, [("ss_lr", SSLRParams())], tmp_path)  # type: ignore[arg-type]
