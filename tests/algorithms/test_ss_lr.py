"""ss_lr in-process: accuracy against scikit-learn, shares that look uniform, model files, reveal_to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sharelearn.algorithms.alignment import PsiParams
from sharelearn.algorithms.evaluation import EvaluateParams, PredictParams
from sharelearn.algorithms.mpc.ss_lr import SSLRModel, SSLRParams, batch_specs, load_ss_lr, ss_lr_baseline
from sharelearn.algorithms.package import load_package
from sharelearn.algorithms.split import SplitParams, converged_reference
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
    # raw columns, plain SGD, every epoch: the test recomputes the Taylor loss from the weights
    params = SSLRParams(
        epochs=20,
        batch_size=100,
        learning_rate=0.5,
        sigmoid="piecewise",
        reveal_to=("bank",),
        standardize=False,
        tol=0.0,
        optimizer="sgd",
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


def _bundled(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    if name == "breast":
        x, y = load_breast_cancer(return_X_y=True)
    elif name == "wine":  # class 1 against the rest
        x, y = load_wine(return_X_y=True)
        y = y == 1
    else:  # digits 5-9 against 0-4
        x, y = load_digits(return_X_y=True)
        y = y >= 5
    return x, np.asarray(y, dtype=np.float64)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["breast", "wine", "digits"])
def test_default_ss_lr_is_within_0_01_auc_of_the_converged_pooled_model_on_held_out_rows(
    name: str, tmp_path: Path
) -> None:
    # Raw (unscaled) columns split between the parties, rows in different orders; nothing tuned.
    x, y = _bundled(name)
    d = x.shape[1] // 2
    ids = [f"p{i}" for i in range(len(y))]
    tables = {"bank": ("guest", dataset(ids, x[:, :d], y)), "shop": ("host", dataset(ids[::-1], x[::-1, d:]))}
    split = SplitParams(train=0.7, test=0.3)
    steps = [
        ("psi", PsiParams()),
        ("split", split),
        ("ss_lr", SSLRParams()),
        ("evaluate", EvaluateParams(plots=False)),
    ]

    run = run_steps({**tables, "third": ("dealer", None)}, steps, tmp_path, timeout=280)

    ev = run.parties["bank"].outputs["evaluate"]
    reference = converged_reference("ss_lr", tables, psi_seed=0, split=split)
    assert ev["evaluated_on"] == "test"
    assert reference["auc"] - ev["auc"] <= 0.01, (ev["auc"], reference["auc"])
    assert run.parties["bank"].outputs["ss_lr"]["epochs_run"] < SSLRParams().epochs  # converged


def test_a_malformed_table_shape_is_a_decode_error_naming_peer_and_tag() -> None:
    from sharelearn.algorithms.mpc.ss_lr import TableShape
    from sharelearn.core.errors import DecodeError
    from sharelearn.core.messages import recv
    from sharelearn.testing.roles import run_roles

    def liar(link: Any) -> None:
        link.send("bank", TableShape.TAG, {"rows": "569", "columns": 3})

    def bank(link: Any) -> str:
        with pytest.raises(DecodeError) as info:
            recv(link, "shop", TableShape)
        return str(info.value)

    out = run_roles({"bank": bank, "shop": liar})

    assert "'shop'" in out["bank"] and "shape" in out["bank"] and "rows" in out["bank"]


def test_the_scaler_travels_in_the_package_and_scores_new_rows_alike(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(loc=50.0, scale=20.0, size=(200, 4))
    y = (x @ np.array([0.1, -0.05, 0.02, 0.08]) > 5.0).astype(float)
    parties = _parties(dataset(range(200), x[:, :2], y), dataset(range(200), x[:, 2:]), True)

    train = run_steps(parties, [("ss_lr", SSLRParams(epochs=30))], tmp_path / "t", aligned=True)  # type: ignore[arg-type]
    models = {p: load_ss_lr(load_package(tmp_path / "t" / p / "models" / "ss_lr.model")) for p in parties}
    again = run_steps(
        parties,  # type: ignore[arg-type]
        [("evaluate", EvaluateParams(plots=False))],
        tmp_path / "e",
        models=models,
        aligned=True,
    )

    scaler = models["bank"].scaler
    assert scaler is not None and np.allclose(scaler.mean, x[:, :2].mean(axis=0))
    assert models["third"].scaler is None and train.parties["bank"].outputs["ss_lr"]["rows"] == 200
    assert again.parties["bank"].outputs["evaluate"]["auc"] > 0.95
