"""Evaluation: macro-F1 with a bootstrap confidence interval, per-class scores, confusions, figures, Table 1.

One definition of macro-F1 for every figure prodcat reports: the mean F1 over the classes present in the evaluated
labels (:func:`evaluated_labels`); classes a model knows but the data lack are listed apart, never averaged in as
zeros, and bootstrap resamples are scored by the same rule. Pure functions on label arrays (no file I/O except :func:`save_figure`); the fusion CLI and the catalog
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

#: Past this many classes a confusion matrix is not legible: reports list the top confused pairs instead.
MAX_CONFUSION_CLASSES = 60

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


def evaluated_labels(y_true: Sequence[Any] | np.ndarray) -> np.ndarray:
    """The label set every macro-F1 of prodcat averages over: the sorted classes present in ``y_true``.

    Classes a model knows but the evaluated catalog lacks have no F1 (no product to recall); averaging them in
    as zeros would score the catalog, not the model. They are listed apart (:func:`absent_classes`).
    """
    return np.unique(np.asarray(y_true))


def absent_classes(y_true: Sequence[Any] | np.ndarray, classes: Sequence[Any] | np.ndarray) -> list[Any]:
    """The ``classes`` (e.g. a model's ``classes_``) with no product in ``y_true``, in ``classes`` order."""
    present = set(np.asarray(y_true).tolist())
    return [c for c in np.asarray(classes).tolist() if c not in present]


def _encode(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    labels: Sequence[Any] | np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer-code both label arrays on ``labels`` (default: :func:`evaluated_labels`). Labels outside get -1."""
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and of equal length, got {t.shape} and {p.shape}")
    if len(t) == 0:
        raise ValueError("cannot score zero predictions")
    lab = evaluated_labels(t) if labels is None else np.asarray(labels)
    pos = {v: i for i, v in enumerate(lab.tolist())}
    ti = np.fromiter((pos.get(v, -1) for v in t.tolist()), dtype=np.int64, count=len(t))
    pi = np.fromiter((pos.get(v, -1) for v in p.tolist()), dtype=np.int64, count=len(p))
    if (ti < 0).any():
        raise ValueError(f"y_true holds labels outside `labels`: {sorted(set(t[ti < 0].tolist()))[:5]}")
    return ti, pi, lab


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the per-class F1 = 2tp / (2tp + fp + fn) of the ``active`` classes."""
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros(tp.shape, dtype=np.float64), where=denom > 0)
    return (f1 * active).sum(-1) / np.maximum(active.sum(-1), 1)


def macro_f1(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    *,
    labels: Sequence[Any] | np.ndarray | None = None,
) -> float:
    """Unweighted mean of per-class F1 (the challenge metric), in [0, 1].

    The one definition prodcat reports everywhere: the mean over the classes present in ``y_true``
    (:func:`evaluated_labels`), i.e. scikit-learn's ``f1_score(y_true, y_pred, labels=np.unique(y_true),
    average="macro")``. A prediction of any other class is an error (a false negative of the true class) but that
    class's own F1 is not averaged in. Passing ``labels`` averages over exactly those classes instead, as
    scikit-learn does (a listed class with no product then counts as F1 = 0).
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
    batch: int = 100,
) -> MetricCI:
    """Percentile bootstrap interval of ``metric`` (``"macro_f1"`` or ``"accuracy"``) over resampled rows.

    Each replicate computes the same statistic as the point estimate on its resample: macro-F1 averages over
    the classes present in that resample's true labels (:func:`macro_f1`'s definition). Averaging over a fixed
    class list instead scores every class a resample happens to miss as 0, which drags the whole interval below
    the point estimate when classes are rare (issue 23: [0.718, 0.765] around 0.782 at 331 classes).

    Vectorised: ``batch`` replicates at a time are scored from per-class counts (true, predicted, right) with
    three ``bincount`` calls: memory and time grow with rows + classes, not classes squared.

    Returns
    -------
    MetricCI with ``value`` the metric on all rows and ``(low, high)`` the ``confidence`` interval.
    """
    if metric not in ("macro_f1", "accuracy"):
        raise ValueError(f"metric must be 'macro_f1' or 'accuracy', got {metric!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    ti, pi, lab = _encode(y_true, y_pred, None)
    n, c = len(ti), len(lab)
    value = macro_f1(y_true, y_pred) if metric == "macro_f1" else float(np.mean(ti == pi))
    rng = np.random.default_rng(seed)
    # Predictions of classes absent from y_true (-1) become an extra "other" column c: false negatives only.
    pc = np.where(pi >= 0, pi, c)
    scores = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, batch):
        b = min(batch, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))  # (b, n) resampled row ids
        t, p = ti[idx], pc[idx]
        if metric == "accuracy":
            scores[start : start + b] = (t == p).mean(1)
            continue
        # Per-class counts of each replicate, O(b * (n + c)): a (b, c, c) confusion matrix was 7 GB per batch of
        # 100 replicates at 3,000 classes (issue 16).
        rep = np.arange(b)[:, None]
        t_key, p_key = (rep * c + t).ravel(), (rep * (c + 1) + p).ravel()
        n_true = np.bincount(t_key, minlength=b * c).reshape(b, c)
        n_pred = np.bincount(p_key, minlength=b * (c + 1)).reshape(b, c + 1)[:, :c]
        tp = np.bincount(t_key[(t == p).ravel()], minlength=b * c).reshape(b, c)
        scores[start : start + b] = _f1_from_counts(tp, n_pred - tp, n_true - tp, n_true > 0)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(scores, [alpha, 1 - alpha])
    return MetricCI(value=value, low=float(low), high=float(high), n_boot=n_boot, confidence=confidence)


def per_class_report(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    *,
    labels: Sequence[Any] | np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per class: ``class, precision, recall, f1, support, predicted``.

    Rows follow ``labels`` (default: the classes present in ``y_true``, then the other predicted classes).
    ``recall`` and ``f1`` are NaN for a class with no true row (``support`` 0: nothing to recall; such a class is
    never averaged into :func:`macro_f1`), so ``report["f1"].mean()`` is the macro-F1; ``precision`` is 0 for a
    class never predicted.
    """
    if labels is None:
        present = evaluated_labels(y_true)
        seen = set(present.tolist())
        extra = sorted({v for v in np.asarray(y_pred).tolist() if v not in seen}, key=str)
        labels = [*present.tolist(), *extra]
    ti, pi, lab = _encode(y_true, y_pred, labels)
    c = len(lab)
    ok = pi >= 0
    tp = np.bincount(ti[ok & (ti == pi)], minlength=c).astype(np.float64)
    support = np.bincount(ti, minlength=c)
    predicted = np.bincount(pi[ok], minlength=c)
    precision = np.divide(tp, predicted, out=np.zeros(c), where=predicted > 0)
    recall = np.divide(tp, support, out=np.full(c, np.nan), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(c), where=denom > 0)
    f1[support == 0] = np.nan
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


def weakest_classes(report: pd.DataFrame, k: int | None = None) -> pd.DataFrame:
    """The rows of a :func:`per_class_report` with products (``support > 0``), lowest F1 first; among equal F1
    the larger support first (an F1 of 0 on 20 products says more than on one). ``k`` keeps the first ``k``."""
    rows = report.loc[report["support"] > 0].sort_values(
        ["f1", "support"], ascending=[True, False], kind="stable"
    )
    return rows if k is None else rows.head(k)


def confusion_matrix(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    *,
    labels: Sequence[Any] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts ``(C, C)`` (rows: true class, columns: predicted) and the ``labels`` used, in that order
    (default: :func:`evaluated_labels`). Predictions outside ``labels`` are not counted."""
    ti, pi, lab = _encode(y_true, y_pred, labels)
    c = len(lab)
    ok = pi >= 0
    cm = np.bincount(ti[ok] * c + pi[ok], minlength=c * c).reshape(c, c)
    return cm, lab


def top_confusions(
    y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray, *, k: int | None = 30
) -> pd.DataFrame:
    """The most frequent (true, predicted) error pairs, largest first: the confusion matrix as a list.

    Columns ``true, predicted, count, share_of_true`` (``count`` over the true class's support); predictions of
    classes absent from ``y_true`` are included. ``k=None`` keeps every pair.
    """
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and of equal length, got {t.shape} and {p.shape}")
    wrong = pd.DataFrame({"true": t[t != p], "predicted": p[t != p]})
    pairs = wrong.value_counts(sort=False).rename("count").reset_index()
    support = pd.Series(t).value_counts()
    pairs["share_of_true"] = pairs["count"] / support.loc[pairs["true"]].to_numpy()
    pairs = pairs.sort_values(["count", "share_of_true"], ascending=False, kind="stable").reset_index(
        drop=True
    )
    return pairs if k is None else pairs.head(k)


def confusion_figure(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    *,
    labels: Sequence[Any] | np.ndarray | None = None,
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


def f1_figure(report: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Per-class F1 as horizontal bars sorted from the weakest class up, with each class's support written
    next to its bar; readable at hundreds of classes (one 0.14-inch row per class).

    ``report`` is a :func:`per_class_report`; classes with no support (F1 undefined) are left out.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = weakest_classes(report)
    c = len(rows)
    fig = Figure(figsize=(7.5, 1.2 + 0.14 * max(c, 4)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    pos = np.arange(c)[::-1]  # weakest class on top
    colours = np.where(rows["f1"] < 0.5, "#c0392b", np.where(rows["f1"] < 0.8, "#e6a23c", "#3c78b4"))
    ax.barh(pos, rows["f1"], color=colours, height=0.8)
    ax.set_yticks(pos, labels=[str(v) for v in rows["class"]], fontsize=6)
    for y_pos, f1, n in zip(pos, rows["f1"], rows["support"], strict=True):
        ax.text(f1 + 0.01, y_pos, f"n={n}", va="center", fontsize=5, color="#444")
    ax.set_xlim(0, 1.12)
    ax.set_ylim(-0.6, c - 0.4)
    ax.set_xlabel("F1 (n = products of the class in the evaluated catalog)")
    ax.xaxis.set_ticks_position("both")
    ax.tick_params(axis="x", labeltop=True)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


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
    classes : the class order of 2-D probabilities. Macro-F1 averages over the classes present in ``y_true``
        (:func:`macro_f1`), whatever the models know.
    reference : row whose macro-F1 is subtracted in the ``delta`` column (skipped when absent or None).

    Returns
    -------
    DataFrame indexed by ``method`` with columns ``macro_f1, ci_low, ci_high, n`` (and ``delta``).
    """
    names = [r for r in TABLE1_ROWS if r in predictions] + [r for r in predictions if r not in TABLE1_ROWS]
    rows = []
    scores: dict[str, float] = {}
    for name in names:
        ci = bootstrap_ci(
            y_true, _as_labels(predictions[name], classes), n_boot=n_boot, confidence=confidence, seed=seed
        )
        rows.append({"method": name, "macro_f1": ci.value, "ci_low": ci.low, "ci_high": ci.high})
        scores[name] = ci.value
    table = pd.DataFrame(rows, columns=["method", "macro_f1", "ci_low", "ci_high"]).set_index("method")
    table["n"] = len(np.asarray(y_true))
    if reference is not None and reference in scores:
        table["delta"] = table["macro_f1"] - scores[reference]
    return table
