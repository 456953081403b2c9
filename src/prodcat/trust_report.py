"""How far the confidence can be trusted on a scored catalog: metrics and figures for ``prodcat evaluate``.

:func:`score_trust` is pure (arrays in, a JSON-able dict out); :func:`reliability_figure` and
:func:`risk_coverage_figure` build bare matplotlib figures (saved by :func:`prodcat.evaluate.save_figure`);
:func:`write_trust_report` is the one function here that writes files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from prodcat.acceptance import (
    REPORTED_PRECISIONS,
    coverage_at_precision,
    risk_coverage_curve,
    selective_scores,
)
from prodcat.calibration import calibration_scores, reliability_bins, scale_temperature

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from prodcat.model import StackOutputs, TrainedModel

#: The figures :func:`write_trust_report` writes, by name (the report template's ``trust_figures``).
TRUST_FIGURES = {"reliability": "reliability.png", "risk_coverage": "risk_coverage.png"}


def trust_inputs(
    model: TrainedModel, df: pd.DataFrame, outputs: StackOutputs | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fused (n, C), predicted codes (n,), availability groups (n,))`` of catalog ``df``; ``outputs``
    (``model.outputs(df)``) is reused when given."""
    from prodcat.trust import training_groups

    scored = model.outputs(df) if outputs is None else outputs
    pos = {c: i for i, c in enumerate(model.classes.tolist())}
    predicted = np.array([pos[v] for v in scored.labels.tolist()], dtype=np.int64)
    return scored.fused, predicted, training_groups(model.models, df, masks=scored.masks)


def score_trust(
    model: TrainedModel,
    fused: np.ndarray,
    predicted: np.ndarray,
    groups: np.ndarray,
    y: np.ndarray,
    *,
    probas: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Calibration and acceptance figures of ``model`` on scored rows.

    Parameters
    ----------
    fused : (n, C) fused probabilities; predicted : (n,) predicted class codes; groups : (n,) availability
        groups; y : (n,) true labels (rows whose label the model does not know count as wrong and are left out
        of the probability scores, which need a class column).
    probas : optional per-model (n, C) probabilities, for the per-model ECE / Brier before and after their
        temperature.

    Returns
    -------
    ``{"before", "after"}`` (ECE, Brier, NLL of the raw and the calibrated fused probabilities), ``"acceptance"``
    (coverage, precision and its binomial SE of the auto-accepted rows at the trained target), ``"coverage_at"``
    (oracle coverage at precision 0.95 / 0.98 / 0.99), ``"per_group"``, ``"per_model"``, and the curves.
    """
    pos = {str(c): i for i, c in enumerate(model.classes.tolist())}
    codes = np.array([pos.get(str(v), -1) for v in np.asarray(y).tolist()], dtype=np.int64)
    known = codes >= 0
    correct = predicted == codes
    cal = model.calibration
    if cal is None:
        proba, conf, accepted = fused, fused[np.arange(len(fused)), predicted], np.zeros(len(fused), bool)
    else:
        proba, conf, accepted = cal.apply(fused, predicted, groups)
    out: dict[str, Any] = {
        "before": calibration_scores(fused[known], codes[known], predicted[known]),
        "after": calibration_scores(proba[known], codes[known], predicted[known]),
        "coverage_at": {str(t): coverage_at_precision(conf, correct, t) for t in REPORTED_PRECISIONS},
        "per_group": {},
        "per_model": {},
    }
    if cal is not None:
        out["acceptance"] = {"target_precision": cal.target_precision, **selective_scores(accepted, correct)}
        out["temperature"] = cal.scaler.temperature_
        out["group_temperatures"] = cal.scaler.group_temperatures_
    for name in dict.fromkeys(np.asarray(groups).tolist()):
        rows = (groups == name) & known
        out["per_group"][name] = {
            "n": int((groups == name).sum()),
            "after": calibration_scores(proba[rows], codes[rows], predicted[rows]) if rows.any() else None,
            "acceptance": selective_scores(accepted[groups == name], correct[groups == name]),
        }
    temps = {} if cal is None else cal.model_temperatures
    for (name, role, _), P in zip(model.models, probas or [], strict=False):
        key = f"{role}:{name}"
        entry = {"before": calibration_scores(P[known], codes[known])}
        if key in temps:
            entry["temperature"] = temps[key]
            entry["after"] = calibration_scores(scale_temperature(P[known], temps[key]), codes[known])
        out["per_model"][key] = entry
    out = _finite(out)
    curve = risk_coverage_curve(conf, correct)
    out["curves"] = {
        "risk_coverage": {k: v.tolist() for k, v in _thin(curve).items()},
        "reliability_before": reliability_bins(fused[np.arange(len(fused)), predicted], correct).to_dict(
            "list"
        ),
        "reliability_after": reliability_bins(conf, correct).to_dict("list"),
    }
    return out


def _finite(value: Any) -> Any:
    """``value`` with every NaN / infinite float (nested in dicts and lists) replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return value


def _thin(curve: dict[str, np.ndarray], points: int = 400) -> dict[str, np.ndarray]:
    """At most ``points`` evenly spaced entries of a curve (the last one kept), for metrics.json."""
    n = len(curve["coverage"])
    if n <= points:
        return curve
    idx = np.unique(np.r_[np.linspace(0, n - 1, points).astype(int), n - 1])
    return {k: v[idx] for k, v in curve.items()}


def reliability_figure(scores: dict[str, Any]) -> Figure:
    """Reliability diagram (accuracy against mean confidence per equal-mass bin), before and after calibration."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--", label="perfect calibration")
    for key, name, color in (
        ("reliability_before", "before", "#d62728"),
        ("reliability_after", "after", "#1f77b4"),
    ):
        bins = scores["curves"][key]
        ece = scores[name]["ece"]
        ax.plot(
            bins["confidence"], bins["accuracy"], "o-", color=color, ms=4, label=f"{name} (ECE {ece:.3f})"
        )
    ax.set_xlabel("confidence of the predicted label (bin mean)")
    ax.set_ylabel("accuracy in the bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def risk_coverage_figure(scores: dict[str, Any]) -> Figure:
    """Precision of the accepted products against coverage (most confident first), with the trained target and
    the rule's operating point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    curve = scores["curves"]["risk_coverage"]
    ax.plot(curve["coverage"], curve["precision"], color="#1f77b4", label="accept most confident first")
    acc = scores.get("acceptance")
    if acc and acc["accepted"] and acc["precision_se"] is not None:
        ax.axhline(
            acc["target_precision"], color="#999", ls="--", lw=1, label=f"target {acc['target_precision']}"
        )
        ax.errorbar([acc["coverage"]], [acc["precision"]], yerr=[acc["precision_se"]], fmt="o", color="#d62728",
                    label="trained rule (± 1 SE)")  # fmt: skip
    ax.set_xlabel("coverage (share of products accepted)")
    ax.set_ylabel("precision of the accepted products")
    ax.set_xlim(0, 1)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def write_trust_report(
    model: TrainedModel,
    df: pd.DataFrame,
    y: np.ndarray,
    out_dir: str | Path,
    *,
    outputs: StackOutputs | None = None,
) -> dict[str, Any]:
    """:func:`score_trust` on catalog ``df`` with labels ``y``; writes the reliability and risk-coverage PNGs to
    ``out_dir``. ``outputs`` (``model.outputs(df)``) is reused when given. Returns the scores (for
    ``metrics.json["calibration"]``)."""
    from prodcat.evaluate import save_figure

    scored = model.outputs(df) if outputs is None else outputs
    fused, predicted, groups = trust_inputs(model, df, scored)
    scores = score_trust(model, fused, predicted, groups, y, probas=scored.probas)
    out = Path(out_dir)
    save_figure(reliability_figure(scores), out / TRUST_FIGURES["reliability"])
    save_figure(risk_coverage_figure(scores), out / TRUST_FIGURES["risk_coverage"])
    return scores
