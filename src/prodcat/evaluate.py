"""Evaluation: macro-F1 with a bootstrap confidence interval, per-class scores, confusion matrix, Table 1.

Pure functions on label arrays (no file I/O except :func:`save_figure`); the fusion CLI and the catalog
pipeline both build their reports from them. Labels may be any hashable values; they are compared as given.
Figures are built on a bare :class:`matplotlib.figure.Figure` (Agg canvas), so no pyplot global state is touched
and nothing needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The row names of the paper's Table 1, in its order; :func:`table1` puts known names first in this order.
TABLE1_ROWS: tuple[str, ...] = (
    "text alone",
    "image alone",
    "feature-level fusion",
    "decision-level fusion",
    "ensemble",
)


@dataclass(frozen=True)
class MetricCI:
    """A point estimate with a percentile bootstrap interval: ``value`` in [0, 1], ``low <= high``."""

    value: float
    low: float
    high: float
    n_boot: int
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "n_boot": self.n_boot,
            "confidence": self.confidence,
        }


def _encode(
    y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray, labels: Sequence[Any] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer-code both label arrays on ``labels`` (default: sorted union). Unknown labels get code -1."""
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and of equal length, got {t.shape} and {p.shape}")
    if len(t) == 0:
        raise ValueError("cannot score zero predictions")
    lab = np.unique(np.concatenate([t, p])) if labels is None else np.asarray(labels)
    pos = {v: i for i, v in enumerate(lab.tolist())}
    ti = np.fromiter((pos.get(v, -1) for v in t.tolist()), dtype=np.int64, count=len(t))
    pi = np.fromiter((pos.get(v, -1) for v in p.tolist()), dtype=np.int64, count=len(p))
    if (ti < 0).any():
        raise ValueError(f"y_true holds labels outside `labels`: {sorted(set(t[ti < 0].tolist()))[:5]}")
    return ti, pi, lab


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Macro-F1 over the last axis from per-class counts; classes with no true and no predicted rows
    (``active`` False) are left out of the average, as scikit-learn does. F1 = 2tp / (2tp + fp + fn)."""
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros(tp.shape, dtype=np.float64), where=denom > 0)
    return (f1 * active).sum(-1) / np.maximum(active.sum(-1), 1)


def macro_f1(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    *,
    labels: Sequence[Any] | None = None,
) -> float:
    """Unweighted mean of per-class F1 (the challenge metric), in [0, 1].

    Averages over ``labels`` when given (a class never true nor predicted then counts as F1 = 0, as in
    scikit-learn), else over the classes that occur in ``y_true`` or ``y_pred``. Predicted labels outside
    ``labels`` count as errors.
    """
    ti, pi, lab = _encode(y_true, y_pred, labels)
    c = len(lab)
    ok = pi >= 0
    tp = np.bincount(ti[ok & (ti == pi)], minlength=c)
    n_true = np.bincount(ti, minlength=c)
    n_pred = np.bincount(pi[ok], minlength=c)
    active = np.ones(c, dtype=bool)
    return float(_f1_from_counts(tp, n_pred - tp, n_true - tp, active))


def bootstrap_ci(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    *,
    metric: str = "macro_f1",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    labels: Sequence[Any] | None = None,
    batch: int = 100,
) -> MetricCI:
    """Percentile bootstrap interval of ``metric`` (``"macro_f1"`` or ``"accuracy"``) over resampled rows.

    Vectorised: ``batch`` replicates at a time are scored from per-class counts with one ``bincount``
    (about 0.4 s for 1,000 replicates of 10,827 rows and 27 classes on a busy 2-core machine). In each replicate macro-F1 averages over
    the classes present in that replicate (true or predicted), as scikit-learn would on that sample.

    Returns
    -------
    MetricCI with ``value`` the metric on all rows and ``(low, high)`` the ``confidence`` interval.
    """
    if metric not in ("macro_f1", "accuracy"):
        raise ValueError(f"metric must be 'macro_f1' or 'accuracy', got {metric!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    ti, pi, lab = _encode(y_true, y_pred, labels)
    n, c = len(ti), len(lab)
    value = macro_f1(y_true, y_pred, labels=labels) if metric == "macro_f1" else float(np.mean(ti == pi))
    rng = np.random.default_rng(seed)
    # Unknown predictions (-1) become an extra "other" column c, so they count as false negatives only.
    pc = np.where(pi >= 0, pi, c)
    scores = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, batch):
        b = min(batch, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))  # (b, n) resampled row ids
        t, p = ti[idx], pc[idx]
        if metric == "accuracy":
            scores[start : start + b] = (t == p).mean(1)
            continue
        rep = np.arange(b)[:, None]
        cm = np.bincount(((rep * c + t) * (c + 1) + p).ravel(), minlength=b * c * (c + 1))
        cm = cm.reshape(b, c, c + 1)  # (b, true, pred + other)
        tp = cm[:, np.arange(c), np.arange(c)]
        n_true = cm.sum(2)
        n_pred = cm[:, :, :c].sum(1)
        active = (n_true + n_pred) > 0 if labels is None else np.ones_like(n_true, dtype=bool)
        scores[start : start + b] = _f1_from_counts(tp, n_pred - tp, n_true - tp, active)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(scores, [alpha, 1 - alpha])
    return MetricCI(value=value, low=float(low), high=float(high), n_boot=n_boot, confidence=confidence)


def per_class_report(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    *,
    labels: Sequence[Any] | None = None,
) -> pd.DataFrame:
    """One row per class: ``class, precision, recall, f1, support, predicted`` (zero where undefined).

    Rows follow ``labels`` (default: sorted union of true and predicted labels).
    """
    ti, pi, lab = _encode(y_true, y_pred, labels)
    c = len(lab)
    ok = pi >= 0
    tp = np.bincount(ti[ok & (ti == pi)], minlength=c).astype(np.float64)
    support = np.bincount(ti, minlength=c)
    predicted = np.bincount(pi[ok], minlength=c)
    precision = np.divide(tp, predicted, out=np.zeros(c), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(c), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(c), where=denom > 0)
    return pd.DataFrame(
        {
            "class": lab,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "predicted": predicted,
        }
    )


def confusion_matrix(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    *,
    labels: Sequence[Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts ``(C, C)`` (rows: true class, columns: predicted) and the ``labels`` used, in that order.
    Predictions outside ``labels`` are not counted."""
    ti, pi, lab = _encode(y_true, y_pred, labels)
    c = len(lab)
    ok = pi >= 0
    cm = np.bincount(ti[ok] * c + pi[ok], minlength=c * c).reshape(c, c)
    return cm, lab


def confusion_figure(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    *,
    labels: Sequence[Any] | None = None,
    normalize: bool = True,
    title: str | None = None,
    annotate: bool | None = None,
) -> Figure:
    """Confusion-matrix heat map; with ``normalize`` each row is divided by its support (row = recall).

    ``annotate`` writes the cell values (default: when there are at most 30 classes). Returns the Figure;
    save it with :func:`save_figure`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm, lab = confusion_matrix(y_true, y_pred, labels=labels)
    values = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm.astype(np.float64)
    c = len(lab)
    size = min(4 + 0.35 * c, 24)
    fig = Figure(figsize=(size + 1.5, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(c)
    names = [str(v) for v in lab]
    ax.set_xticks(ticks, labels=names, rotation=90, fontsize=8)
    ax.set_yticks(ticks, labels=names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if annotate if annotate is not None else c <= 30:
        top = values.max() if values.size else 1.0
        for i, j in zip(*np.nonzero(cm), strict=True):
            text = f"{values[i, j]:.2f}" if normalize else str(cm[i, j])
            color = "white" if values[i, j] > 0.6 * top else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=6, color=color)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG (or the format of ``path``'s suffix) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


def _as_labels(pred: Any, classes: Sequence[Any] | None) -> np.ndarray:
    arr = np.asarray(pred)
    if arr.ndim == 2:
        if classes is None:
            raise ValueError("2-D probabilities need `classes` to turn them into labels")
        return np.asarray(classes)[arr.argmax(1)]
    return arr


def table1(
    y_true: Sequence[Any] | np.ndarray,
    predictions: Mapping[str, Any],
    *,
    classes: Sequence[Any] | None = None,
    reference: str | None = "text alone",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """The paper's Table 1 for any data: one row per method with macro-F1 and its bootstrap interval.

    Parameters
    ----------
    y_true : (n,) true labels.
    predictions : row name -> (n,) predicted labels or (n, C) probabilities in ``classes`` order. Names from
        :data:`TABLE1_ROWS` come first in the paper's order; other names follow in the given order.
    classes : the class order of 2-D probabilities; also the classes averaged over (plus any true label outside
        them, which then always counts as an error). Default: the labels that occur.
    reference : row whose macro-F1 is subtracted in the ``delta`` column (skipped when absent or None).

    Returns
    -------
    DataFrame indexed by ``method`` with columns ``macro_f1, ci_low, ci_high, n`` (and ``delta``).
    """
    names = [r for r in TABLE1_ROWS if r in predictions] + [r for r in predictions if r not in TABLE1_ROWS]
    labels = None
    if classes is not None:  # score over the classes plus any true label the models never knew (always wrong)
        known = set(np.asarray(classes).tolist())
        labels = list(np.asarray(classes).tolist()) + sorted(
            {v for v in np.asarray(y_true).tolist() if v not in known}, key=str
        )
    rows = []
    scores: dict[str, float] = {}
    for name in names:
        ci = bootstrap_ci(
            y_true,
            _as_labels(predictions[name], classes),
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
            labels=labels,
        )
        rows.append({"method": name, "macro_f1": ci.value, "ci_low": ci.low, "ci_high": ci.high})
        scores[name] = ci.value
    table = pd.DataFrame(rows, columns=["method", "macro_f1", "ci_low", "ci_high"]).set_index("method")
    table["n"] = len(np.asarray(y_true))
    if reference is not None and reference in scores:
        table["delta"] = table["macro_f1"] - scores[reference]
    return table
