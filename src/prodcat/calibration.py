"""Calibrated confidence and how to read it: a functional core on arrays (no I/O, no pipeline knowledge).

- :class:`TemperatureScaling` rescales class probabilities ``p`` to ``softmax(log p / T)``, one temperature ``T``
  per group of rows (e.g. per set of available modalities) fit by minimising the negative log-likelihood (NLL).
  ``T > 1`` softens an over-confident model, ``T < 1`` sharpens an under-confident one; the ranking of the classes
  of a row never changes, so labels and macro-F1 stay exactly as they were.
- :func:`expected_calibration_error` and :func:`reliability_bins` compare the *top-label* confidence (the
  probability given to the predicted label) with how often that label is right; :func:`brier_score` and
  :func:`log_loss` score the whole probability vector.

Binning: equal-mass bins by default (each bin holds the same number of rows). A good classifier puts most rows
near confidence 1, so equal-width bins leave the low bins nearly empty and their noise dominates the estimate;
equal-mass bins keep every bin's accuracy estimate equally precise. ``strategy="width"`` gives the classic
equal-width ECE (Guo et al., 2017) for comparison with published figures.

Acceptance at a target precision lives in :mod:`prodcat.acceptance`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from numbers import Integral
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from prodcat.params import Interval, validate_params
from prodcat.probability import clipped_log

_EPS = 1e-12  # probability floor before taking logs
_T_BOUNDS = (0.02, 50.0)  # temperatures searched (log-uniform)


_CHUNK = 4096  # rows per pass over an (n, C) array: temporaries stay (chunk, C) whatever n is (issue 16)


def _log_proba(proba: np.ndarray) -> np.ndarray:
    return clipped_log(proba, _EPS)


def scale_temperature(proba: np.ndarray, temperature: float | np.ndarray) -> np.ndarray:
    """``softmax(log(proba) / T)``: (n, C) probabilities -> (n, C) probabilities.

    ``temperature``: a scalar or an (n,) array (one temperature per row), every value > 0.
    """
    from scipy.special import softmax

    T = np.asarray(temperature, dtype=np.float64)
    if (T <= 0).any() or not np.isfinite(T).all():
        raise ValueError(f"temperatures must be finite and > 0, got {T.min() if T.size else T}")
    P = np.asarray(proba)
    out = np.empty(P.shape, dtype=np.float64)
    for s in range(0, len(P), _CHUNK):  # by row blocks: one (n, C) array allocated, the result
        rows = slice(s, s + _CHUNK)
        out[rows] = softmax(_log_proba(P[rows]) / (T[rows, None] if T.ndim == 1 else T), axis=1)
    return out


def log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of integer class codes ``y`` (n,) under ``proba`` (n, C) (nats)."""
    P = np.asarray(proba)
    return float(-_log_proba(P[np.arange(len(P)), np.asarray(y)]).mean())


def brier_score(proba: np.ndarray, y: np.ndarray) -> float:
    """Multiclass Brier score: mean over rows of ``sum_c (p_c - [y = c])^2``, in [0, 2] (0 is perfect).

    ``proba`` (n, C); ``y`` (n,) integer class codes into the columns.
    """
    P = np.asarray(proba)
    picked = P[np.arange(len(P)), np.asarray(y)].astype(np.float64)
    # sum_c (p_c - [y = c])^2 = sum_c p_c^2 - 2 p_y + 1, without an (n, C) one-hot, difference or float64 copy
    squares = np.einsum("ij,ij->i", P, P, dtype=np.float64)
    return float((squares - 2 * picked + 1).mean())


def fit_temperature(proba: np.ndarray, y: np.ndarray, *, sample_weight: np.ndarray | None = None) -> float:
    """The temperature ``T`` minimising the (weighted) NLL of ``scale_temperature(proba, T)`` on codes ``y``.

    One parameter, searched on ``log T`` in [log 0.02, log 50] (a bounded Brent search: the NLL is smooth and, in
    ``1 / T``, convex). Returns 1.0 when there are no rows.
    """

    if len(y) == 0:
        return 1.0
    return _fit_log_temperature(_log_proba(proba), np.asarray(y), sample_weight, None)


def _fit_log_temperature(
    logp: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None, rows: np.ndarray | None
) -> float:
    """:func:`fit_temperature` on log-probabilities ``logp`` (n, C), restricted to the row indices ``rows``
    (all when None) without copying them: the NLL is summed over blocks of rows."""
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    idx = np.arange(len(logp)) if rows is None else np.asarray(rows)
    w = np.ones(len(logp)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    w = w[idx]
    picked = w @ logp[idx, y[idx]]  # weighted sum of the true classes' log-probabilities

    def nll(log_t: float) -> float:
        inv = np.exp(-log_t)
        lse = sum(
            float(w[s : s + _CHUNK] @ logsumexp(logp[idx[s : s + _CHUNK]] * inv, axis=1))
            for s in range(0, len(idx), _CHUNK)
        )
        return (lse - inv * picked) / w.sum()

    res = minimize_scalar(nll, bounds=tuple(np.log(_T_BOUNDS)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def top_label_confidence(proba: np.ndarray, predicted: np.ndarray | None = None) -> np.ndarray:
    """(n,) probability of the predicted class: ``proba[i, predicted[i]]`` (default: the argmax)."""
    P = np.asarray(proba)
    idx = P.argmax(1) if predicted is None else np.asarray(predicted)
    return P[np.arange(len(P)), idx].astype(np.float64)


def _bin_edges(confidence: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "width":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy != "mass":
        raise ValueError(f"strategy must be 'mass' or 'width', got {strategy!r}")
    edges = np.quantile(confidence, np.linspace(0.0, 1.0, n_bins + 1))
    edges[0], edges[-1] = 0.0, 1.0
    return np.unique(edges)  # ties (many rows at exactly 1.0) merge bins


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 15, strategy: str = "mass"
) -> pd.DataFrame:
    """Reliability-diagram data: one row per non-empty bin of top-label confidence.

    Parameters
    ----------
    confidence : (n,) confidence of each predicted label, in [0, 1].
    correct : (n,) bool, whether the predicted label is the true one.
    n_bins : number of bins (equal-mass bins can merge when many rows share a confidence).
    strategy : ``"mass"`` (equal number of rows per bin, default) or ``"width"`` (equal-width bins on [0, 1]).

    Returns
    -------
    DataFrame with ``low, high`` (bin edges), ``confidence`` (mean confidence), ``accuracy`` (fraction correct),
    ``count`` (rows).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    if conf.shape != ok.shape or conf.ndim != 1:
        raise ValueError(
            f"confidence and correct must be 1-D of equal length, got {conf.shape} and {ok.shape}"
        )
    columns = ["low", "high", "confidence", "accuracy", "count"]
    if len(conf) == 0:
        return pd.DataFrame(columns=columns)
    edges = _bin_edges(conf, n_bins, strategy)
    which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, len(edges) - 2)  # (n,) bin index
    count = np.bincount(which, minlength=len(edges) - 1)
    mean_conf = np.bincount(which, conf, minlength=len(count)) / np.maximum(count, 1)
    acc = np.bincount(which, ok.astype(np.float64), minlength=len(count)) / np.maximum(count, 1)
    keep = count > 0
    return pd.DataFrame(
        {"low": edges[:-1][keep], "high": edges[1:][keep], "confidence": mean_conf[keep],
         "accuracy": acc[keep], "count": count[keep]}
    )  # fmt: skip


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 15, strategy: str = "mass"
) -> float:
    """Top-label ECE: ``sum_b (n_b / n) |accuracy_b - confidence_b|`` over the bins of :func:`reliability_bins`.

    In [0, 1]; 0 means that among rows given confidence ~c, a fraction ~c is right. NaN for no rows.
    """
    bins = reliability_bins(confidence, correct, n_bins=n_bins, strategy=strategy)
    if bins.empty:
        return float("nan")
    w = bins["count"].to_numpy() / bins["count"].sum()
    return float((w * (bins["accuracy"] - bins["confidence"]).abs().to_numpy()).sum())


def calibration_scores(
    proba: np.ndarray, y: np.ndarray, predicted: np.ndarray | None = None, *, n_bins: int = 15
) -> dict[str, float]:
    """``{"ece", "ece_width", "brier", "nll", "accuracy", "n"}`` of probabilities ``proba`` (n, C) against codes
    ``y`` (n,); ``predicted`` (n,) codes of the predicted labels (default: the argmax) set the top label."""
    y = np.asarray(y)
    pred = np.asarray(proba).argmax(1) if predicted is None else np.asarray(predicted)
    conf, ok = top_label_confidence(proba, pred), pred == y
    return {
        "ece": expected_calibration_error(conf, ok, n_bins=n_bins, strategy="mass"),
        "ece_width": expected_calibration_error(conf, ok, n_bins=n_bins, strategy="width"),
        "brier": brier_score(proba, y) if len(y) else float("nan"),
        "nll": log_loss(proba, y) if len(y) else float("nan"),
        "accuracy": float(ok.mean()) if len(y) else float("nan"),
        "n": len(y),
    }


class TemperatureScaling(BaseEstimator):
    """Temperature scaling with one temperature per group of rows, and a global one for small or unseen groups.

    Parameters
    ----------
    min_group_rows : a group gets its own temperature when it has at least this many fitting rows; others (and
        groups never seen in ``fit``) use ``temperature_``.

    Attributes
    ----------
    temperature_ : float, fit on every row.
    group_temperatures_ : dict group -> float, for the groups with enough rows.
    group_counts_ : dict group -> int, fitting rows per group.
    """

    _constraints: ClassVar[dict[str, list[Any]]] = {
        "min_group_rows": [Interval(Integral, 1, None, closed="left")]
    }

    def __init__(self, *, min_group_rows: int = 200) -> None:
        self.min_group_rows = min_group_rows

    def fit(
        self,
        proba: np.ndarray,
        y: np.ndarray,
        *,
        groups: Sequence[Hashable] | np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> TemperatureScaling:
        """Fit on probabilities ``proba`` (n, C) and integer class codes ``y`` (n,); ``groups`` (n,) optional."""
        validate_params(self, self._constraints)
        P, y = np.asarray(proba), np.asarray(y)
        if P.ndim != 2 or len(P) != len(y):
            raise ValueError(f"need proba (n, C) and y (n,), got {P.shape} and {y.shape}")
        g = np.zeros(len(y), dtype=object) if groups is None else np.asarray(groups, dtype=object)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        logp = _log_proba(P) if len(y) else P  # once for every group: (n, C) float64
        self.temperature_ = _fit_log_temperature(logp, y, w, None) if len(y) else 1.0
        self.group_temperatures_: dict[Any, float] = {}
        self.group_counts_: dict[Any, int] = {}
        if groups is None:
            return self
        for key in dict.fromkeys(g.tolist()):
            rows = np.flatnonzero(g == key)
            self.group_counts_[key] = len(rows)
            if len(rows) >= self.min_group_rows:
                self.group_temperatures_[key] = _fit_log_temperature(logp, y, w, rows)
        return self

    def temperatures(self, groups: Sequence[Hashable] | np.ndarray | None, n: int) -> np.ndarray:
        """(n,) temperature of each row: its group's, else the global one."""
        if groups is None:
            return np.full(n, self.temperature_)
        get = self.group_temperatures_.get
        return np.array([get(k, self.temperature_) for k in np.asarray(groups, dtype=object).tolist()])

    def transform(
        self, proba: np.ndarray, *, groups: Sequence[Hashable] | np.ndarray | None = None
    ) -> np.ndarray:
        """(n, C) calibrated probabilities of ``proba`` (n, C) (rows of ``groups`` scaled by their temperature)."""
        P = np.asarray(proba)
        return scale_temperature(P, self.temperatures(groups, len(P)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fitted state (inverse: :meth:`from_dict`); group keys must be strings."""
        return {
            "min_group_rows": self.min_group_rows,
            "temperature": self.temperature_,
            "group_temperatures": {str(k): v for k, v in self.group_temperatures_.items()},
            "group_counts": {str(k): v for k, v in self.group_counts_.items()},
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TemperatureScaling:
        """Rebuild from :meth:`to_dict` output, checking every temperature."""
        est = cls(min_group_rows=int(state.get("min_group_rows", 200)))
        temps = {"": state["temperature"], **state.get("group_temperatures", {})}
        for key, t in temps.items():
            if isinstance(t, bool) or not isinstance(t, int | float) or not np.isfinite(t) or t <= 0:
                raise ValueError(f"temperature {key or 'global'!r}: expected a number > 0, got {t!r}")
        est.temperature_ = float(state["temperature"])
        est.group_temperatures_ = {k: float(v) for k, v in state.get("group_temperatures", {}).items()}
        est.group_counts_ = {k: int(v) for k, v in state.get("group_counts", {}).items()}
        return est
