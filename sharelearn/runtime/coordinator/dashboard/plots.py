"""The job page's charts as plotly figures (plotly.js is served from the package: no CDN).

Input is the `plots` object of `data.job_report` (loss per epoch/round, ROC and KS points at a fixed
threshold grid, feature importance), output is an HTML fragment per chart.
"""

from __future__ import annotations

from typing import Any

__all__ = ["plot_divs", "plotly_js"]

_LAYOUT = {"template": "simple_white", "height": 320, "margin": {"l": 50, "r": 20, "t": 40, "b": 45}}
_JS: list[str] = []


def plotly_js() -> str:
    """The plotly.js bundle shipped inside the plotly Python package (read once)."""
    if not _JS:
        from plotly.offline import get_plotlyjs

        _JS.append(get_plotlyjs())
    return _JS[0]


def _html(fig: Any, div_id: str) -> str:
    import plotly.io as pio

    return str(
        pio.to_html(
            fig, include_plotlyjs=False, full_html=False, div_id=div_id, config={"displaylogo": False}
        )
    )


def _loss(curves: dict[str, list[float]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(
        [
            go.Scatter(x=list(range(1, len(v) + 1)), y=v, mode="lines+markers", name=k)
            for k, v in curves.items()
        ]
    )
    return fig.update_layout(title="loss per epoch / round", xaxis_title="epoch / round", **_LAYOUT)


def _roc(roc: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(
        [
            go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", name=f"federated (AUC {roc.get('auc')})"),
            go.Scatter(
                x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dash", "color": "grey"}
            ),
        ]
    )
    return fig.update_layout(
        title=f"ROC ({roc.get('step')})",
        xaxis_title="false positive rate",
        yaxis_title="true positive rate",
        **_LAYOUT,
    )


def _ks(roc: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    gap = [round(t - f, 4) for t, f in zip(roc["tpr"], roc["fpr"], strict=True)]
    fig = go.Figure(
        [
            go.Scatter(x=roc["threshold"], y=roc["tpr"], mode="lines", name="TPR (positives above)"),
            go.Scatter(x=roc["threshold"], y=roc["fpr"], mode="lines", name="FPR (negatives above)"),
            go.Scatter(x=roc["threshold"], y=gap, mode="lines", name=f"TPR - FPR (KS {roc.get('ks')})"),
        ]
    )
    return fig.update_layout(title="KS", xaxis_title="score threshold", xaxis_autorange="reversed", **_LAYOUT)


def _importance(step: str, values: dict[str, float]) -> Any:
    import plotly.graph_objects as go

    items = sorted(values.items(), key=lambda kv: kv[1])[-20:]
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h"))
    return fig.update_layout(title=f"feature importance ({step})", **_LAYOUT)


def plot_divs(plots: dict[str, Any]) -> dict[str, str]:
    """Chart name -> HTML fragment, for each chart the job has data for."""
    out: dict[str, str] = {}
    if plots.get("loss"):
        out["loss"] = _html(_loss(plots["loss"]), "plot-loss")
    roc = plots.get("roc")
    if roc and roc.get("fpr"):
        out["roc"] = _html(_roc(roc), "plot-roc")
        out["ks"] = _html(_ks(roc), "plot-ks")
    for i, (step, values) in enumerate((plots.get("importance") or {}).items()):
        out[f"importance-{step}"] = _html(_importance(step, values), f"plot-importance-{i}")
    return out
