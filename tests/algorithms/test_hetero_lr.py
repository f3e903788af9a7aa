from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sharelearn.algorithms.evaluation import EvaluateParams, PredictParams
from sharelearn.algorithms.metrics import binary_metrics
from sharelearn.algorithms.vertical import hetero_lr
from sharelearn.algorithms.vertical.hetero_lr import HeteroLrParams, fit_plain
from sharelearn.core.audit import WireAudit
from sharelearn.core.codec import encode
from sharelearn.core.errors import ConfigError, PartyFailed
from sharelearn.operators.psi import PsiParams
from sharelearn.testing.leaks import assert_no_leak
from sharelearn.testing.steps import dataset, load_csv, run_steps

FATE = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "fate"


def _breast() -> tuple[object, object]:
    return load_csv(FATE / "breast_hetero_guest.csv", label="y"), load_csv(FATE / "breast_hetero_host.csv")


def _params(**kw: object) -> HeteroLrParams:
    base: dict[str, object] = {"epochs": 3, "batch_size": 200, "key_bits": 1024, "seed": 7, "tol": 0.0}
    base.update(kw)
    return HeteroLrParams(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("mode", "scheme"), [("arbiter", "paillier"), ("two_party", "ou")])
def test_matches_the_plaintext_twin_and_predicts_at_the_guest_only(
    tmp_path: Path, mode: str, scheme: str
) -> None:
    guest, host = _breast()
    parties = {"bank": ("guest", guest), "shop": ("host", host)}
    if mode == "arbiter":
        parties["coord"] = ("arbiter", None)
    params = _params(mode=mode, he_scheme=scheme, penalty="l2", alpha=0.01)
    run = run_steps(
        parties, [("psi", PsiParams()), ("hetero_lr", params), ("evaluate", EvaluateParams())], tmp_path
    )

    g, h = run.parties["bank"], run.parties["shop"]
    ws, losses = fit_plain([g.data.x, h.data.x], g.data.y, params, seed=7)
    gm, hm = g.model, h.model
    np.testing.assert_allclose(gm.weights, ws[0][:-1], atol=1e-5)
    np.testing.assert_allclose(gm.intercept, ws[0][-1], atol=1e-5)
    np.testing.assert_allclose(hm.weights, ws[1], atol=1e-5)
    np.testing.assert_allclose(gm.losses, losses, atol=1e-5)
    assert hm.losses == gm.losses  # every party learns the loss curve
    ev = g.outputs["evaluate"]
    assert ev["auc"] > 0.97 and ev["rows"] == 569
    assert h.outputs["evaluate"] == {}
    assert (tmp_path / "bank" / "roc.png").is_file() and (tmp_path / "bank" / "loss_curve.png").is_file()


def test_two_hosts_loss_cross_terms_and_masked_prediction(tmp_path: Path) -> None:
    guest, host = _breast()
    h1 = dataset(host.ids, host.x[:, :8])
    h2 = dataset(host.ids, host.x[:, 8:])
    parties = {"bank": ("guest", guest), "h1": ("host", h1), "h2": ("host", h2), "coord": ("arbiter", None)}
    params = _params(epochs=2, he_scheme="ou")
    run = run_steps(
        parties, [("psi", PsiParams()), ("hetero_lr", params), ("evaluate", EvaluateParams())], tmp_path
    )
    g = run.parties["bank"]
    ws, losses = fit_plain(
        [g.data.x, run.parties["h1"].data.x, run.parties["h2"].data.x], g.data.y, params, 7
    )
    np.testing.assert_allclose(run.parties["h2"].model.weights, ws[2], atol=1e-5)
    np.testing.assert_allclose(g.model.losses, losses, atol=1e-5)
    # the guest's collaborative scores equal the plaintext model's
    z = (
        g.data.x @ ws[0][:-1]
        + ws[0][-1]
        + run.parties["h1"].data.x @ ws[1]
        + run.parties["h2"].data.x @ ws[2]
    )
    expected = binary_metrics(g.data.y, 1 / (1 + np.exp(-z)))["auc"]
    assert g.outputs["evaluate"]["auc"] == pytest.approx(expected, abs=1e-6)


def test_early_stopping_and_saved_models_predict_in_a_later_job(tmp_path: Path) -> None:
    guest, host = _breast()
    parties = {"bank": ("guest", guest), "shop": ("host", host), "coord": ("arbiter", None)}
    params = _params(epochs=200, batch_size=0, tol=1e-4)
    run = run_steps(parties, [("psi", PsiParams()), ("hetero_lr", params)], tmp_path / "train")
    out = run.parties["bank"].outputs["hetero_lr"]
    assert out["converged"] and out["epochs_run"] < 200
    scores = run.parties["bank"].model.predict  # noqa: F841 - the model object exists
    predict = PredictParams(
        model=str(tmp_path / "train" / "{party}" / "models" / "hetero_lr.model"), step="hetero_lr"
    )
    later = run_steps(parties, [("psi", PsiParams()), ("predict", predict)], tmp_path / "predict")
    lines = (tmp_path / "predict" / "bank" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "id,score" and len(lines) == 570
    assert later.parties["shop"].outputs["predict"] == {}


def test_bad_configuration_names_the_parameter_or_party(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hetero_lr.penalty"):
        HeteroLrParams(penalty="l3")
    guest, host = _breast()
    with pytest.raises(PartyFailed, match="role arbiter"):
        run_steps(
            {"bank": ("guest", guest), "shop": ("host", host)},
            [("psi", PsiParams()), ("hetero_lr", _params())],
            tmp_path,
        )
    with pytest.raises(PartyFailed, match="run `psi` before"):
        run_steps(
            {"bank": ("guest", guest), "shop": ("host", host)},
            [("hetero_lr", _params(mode="two_party"))],
            tmp_path,
        )


def test_baseline_is_sklearn_on_the_pooled_columns() -> None:
    guest, host = _breast()
    out = hetero_lr.baseline(HeteroLrParams(), {"bank": ("guest", guest), "shop": ("host", host)})
    assert 0.98 < out["auc"] <= 1.0 and set(out) == {"auc", "ks", "accuracy"}


def _nontrivial(values: np.ndarray) -> list[float]:
    """Values that cannot appear in a payload by coincidence (not 0, +-1, 0.5, ...)."""
    flat = np.unique(np.asarray(values, dtype=np.float64).ravel())
    return [float(v) for v in flat if abs(v * 1024 - round(v * 1024)) > 1e-9]


def label_patterns(y: np.ndarray, window: int = 16) -> list[bytes]:
    """The label column as it could cross the wire: runs of labels as float64, int64 and uint8 bytes.

    Only well-mixed runs (at least 4 of each class): a run like 1,0,0,0,... also spells the integer 1.
    """
    out: list[bytes] = []
    for dtype in (np.float64, np.int64, np.uint8):
        raw = np.asarray(y).astype(dtype)
        for i in range(0, len(raw) - window, window):
            chunk = raw[i : i + window]
            if 4 <= chunk.sum() <= window - 4:
                out.append(chunk.tobytes())
    return out


@pytest.mark.parametrize("mode", ["arbiter", "two_party"])
def test_wire_carries_no_feature_label_or_plain_gradient(tmp_path: Path, mode: str) -> None:
    guest, host = _breast()
    parties = {"bank": ("guest", guest), "shop": ("host", host)}
    if mode == "arbiter":
        parties["coord"] = ("arbiter", None)
    params = _params(mode=mode, epochs=2, batch_size=128, he_scheme="ou")
    run = run_steps(
        parties, [("psi", PsiParams()), ("hetero_lr", params), ("evaluate", EvaluateParams())], tmp_path
    )
    g, h = run.parties["bank"], run.parties["shop"]
    grads: list[list[np.ndarray]] = []
    fit_plain([g.data.x, h.data.x], g.data.y, params, 7, gradients=grads)
    guest_grads = _nontrivial(np.concatenate([b[0] for b in grads]))
    host_grads = _nontrivial(np.concatenate([b[1] for b in grads]))
    assert len(guest_grads) > 20 and len(host_grads) > 40
    audit = run.audit
    for receiver in parties:
        if receiver != "bank":
            assert_no_leak(audit, receiver, _nontrivial(guest.x), what="guest feature")
            assert_no_leak(audit, receiver, label_patterns(g.data.y), what="label run")
            assert_no_leak(audit, receiver, guest_grads, what="guest gradient")
        if receiver != "shop":
            assert_no_leak(audit, receiver, _nontrivial(host.x), what="host feature")
            assert_no_leak(audit, receiver, host_grads, what="host gradient")
    # the patterns are findable: the same check does fire on a payload that carries them
    probe = WireAudit()
    probe.record("bank", "shop", "probe", encode(np.asarray(guest_grads[:3])))
    assert probe.count_leaks("shop", guest_grads[:3]) == 3
