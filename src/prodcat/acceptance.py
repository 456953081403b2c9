"""Which predictions to accept without a look: thresholds on calibrated confidence at a target precision.

The figure a catalog team sets is a *precision* (say 98% of auto-categorised products must be right); the figure
it then wants as high as possible is the *coverage* (the share of products that need no look).

- :func:`risk_coverage_curve` and :func:`coverage_at_precision` describe a scored set: sort by confidence, accept
  the most confident first, and see how precision falls as coverage grows. Both are measured on the rows they
  describe (an oracle threshold), so they say what the confidence *could* buy, not what a rule learnt elsewhere
  achieves.
- :class:`AcceptanceRule` learns thresholds on out-of-fold rows and is then applied to new rows. A threshold is
  accepted only when a **lower confidence bound** on the precision of the rows it accepts reaches the target
  (one-sided Clopper-Pearson by default, Wilson optional), not the observed precision: 60 right out of 60 looks
  like 100% but only proves about 95% at the 95% level, so a small class cannot talk itself into auto-acceptance.
  Per-class thresholds are learnt for classes with enough rows whose own bound reaches the target; every other
  class shares one threshold learnt on their rows pooled. Each group of accepted rows thus meets the bound, and so
  does their union. Each class's bound costs a margin on its few rows, so this per-class rule is kept only when it
  accepts more of the fitting rows than a single threshold on all rows (which pays one margin on many rows);
  otherwise the single threshold is used for every class.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from prodcat.params import Interval, Options, validate_params

#: Precision levels at which evaluation reports coverage.
REPORTED_PRECISIONS = (0.95, 0.98, 0.99)


def precision_lower_bound(
    k: np.ndarray | int, n: np.ndarray | int, *, level: float = 0.95, method: str = "clopper-pearson"
) -> np.ndarray:
    """One-sided lower confidence bound at ``level`` on a binomial proportion, ``k`` successes out of ``n``.

    ``method``: ``"clopper-pearson"`` (exact, conservative: the ``1 - level`` quantile of Beta(k, n - k + 1)) or
    ``"wilson"`` (score interval, closer to nominal coverage). Vectorised over ``k`` and ``n``; 0 where ``n = 0``.
    """
    from scipy import stats

    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if not 0.5 <= level < 1:
        raise ValueError(f"level must be in [0.5, 1), got {level}")
    if method == "clopper-pearson":
        with np.errstate(invalid="ignore"):
            lb = stats.beta.ppf(1 - level, k, n - k + 1)
        lb = np.where(k <= 0, 0.0, lb)
    elif method == "wilson":
        z = float(stats.norm.ppf(level))
        safe = np.maximum(n, 1)
        p = k / safe
        centre = p + z * z / (2 * safe)
        half = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe))
        lb = (centre - half) / (1 + z * z / safe)
    else:
        raise ValueError(f"method must be 'clopper-pearson' or 'wilson', got {method!r}")
    return np.where(n > 0, np.clip(lb, 0.0, 1.0), 0.0)


def _cuts(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accept-the-top-k cuts at distinct confidence values: ``(threshold, accepted, right)`` arrays, one entry per
    distinct confidence (descending): accepting ``confidence >= threshold`` takes ``accepted`` rows, ``right``
    of them correct."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    if conf.shape != ok.shape or conf.ndim != 1:
        raise ValueError(
            f"confidence and correct must be 1-D of equal length, got {conf.shape} and {ok.shape}"
        )
    order = np.argsort(-conf, kind="stable")
    c, right = conf[order], np.cumsum(ok[order])
    last = np.r_[c[1:] != c[:-1], True] if len(c) else np.zeros(0, dtype=bool)  # end of each tie run
    return c[last], np.flatnonzero(last) + 1, right[last]


def risk_coverage_curve(confidence: np.ndarray, correct: np.ndarray) -> dict[str, np.ndarray]:
    """Selective-prediction curve: accept rows in decreasing confidence.

    Parameters
    ----------
    confidence : (n,) confidence of each predicted label. correct : (n,) bool.

    Returns
    -------
    ``{"threshold", "coverage", "precision", "risk"}``, arrays of one entry per distinct confidence (descending
    threshold, increasing coverage); ``risk = 1 - precision`` (the error rate of the accepted rows).
    """
    thr, accepted, right = _cuts(confidence, correct)
    n = max(len(np.asarray(confidence)), 1)
    precision = right / np.maximum(accepted, 1)
    return {"threshold": thr, "coverage": accepted / n, "precision": precision, "risk": 1 - precision}


def coverage_at_precision(confidence: np.ndarray, correct: np.ndarray, target: float) -> dict[str, float]:
    """The largest coverage whose accepted rows (most confident first) have observed precision >= ``target``.

    Returns ``{"target", "coverage", "precision", "threshold", "accepted"}``; coverage 0 and threshold inf when
    even the most confident rows miss the target. Measured on the rows given (an oracle threshold).
    """
    thr, accepted, right = _cuts(confidence, correct)
    ok = right >= target * accepted - 1e-9
    if not ok.any():
        return {"target": target, "coverage": 0.0, "precision": float("nan"), "threshold": float("inf"),
                "accepted": 0}  # fmt: skip
    i = int(np.flatnonzero(ok)[-1])
    return {
        "target": target,
        "coverage": float(accepted[i] / len(np.asarray(confidence))),
        "precision": float(right[i] / accepted[i]),
        "threshold": float(thr[i]),
        "accepted": int(accepted[i]),
    }


def bounded_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    *,
    target: float,
    level: float = 0.95,
    method: str = "clopper-pearson",
) -> float:
    """The lowest confidence threshold whose accepted rows' precision has a lower ``level`` bound >= ``target``.

    ``inf`` when no threshold does (then nothing is accepted). Accept a row when ``confidence >= threshold``.
    """
    thr, accepted, right = _cuts(confidence, correct)
    ok = precision_lower_bound(right, accepted, level=level, method=method) >= target
    return float(thr[np.flatnonzero(ok)[-1]]) if ok.any() else float("inf")


def selective_scores(accept: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """``{"coverage", "precision", "precision_se", "accepted", "n"}`` of a set of accepted rows; ``precision_se``
    is the binomial standard error ``sqrt(p (1 - p) / accepted)``."""
    acc, ok = np.asarray(accept, dtype=bool), np.asarray(correct, dtype=bool)
    k, n = int(acc.sum()), len(acc)
    p = float(ok[acc].mean()) if k else float("nan")
    return {
        "coverage": k / n if n else float("nan"),
        "precision": p,
        "precision_se": float(np.sqrt(p * (1 - p) / k)) if k else float("nan"),
        "accepted": k,
        "n": n,
    }


class AcceptanceRule(BaseEstimator):
    """Thresholds on calibrated confidence, learnt so that the accepted rows reach ``target_precision``.

    Parameters
    ----------
    target_precision : required precision of the accepted rows, in (0, 1).
    confidence_level : level of the one-sided lower bound on precision each threshold must clear.
    bound : ``"clopper-pearson"`` or ``"wilson"`` (see :func:`precision_lower_bound`).
    min_class_rows : a predicted class gets its own threshold when it has at least this many fitting rows and a
        threshold on them clears the bound; the other classes share ``global_threshold_``. The per-class rule is
        kept only when it accepts more fitting rows than one threshold for all (see the module docstring).

    Attributes
    ----------
    thresholds_ : (C,) threshold per predicted class code (``inf``: never accepted).
    own_threshold_ : (C,) bool, whether the class's threshold was learnt on its own rows.
    global_threshold_ : the threshold learnt on the pooled rows of the classes without their own (on all rows when
        every class has its own, or when the single threshold won).
    fit_scores_ : :func:`selective_scores` of the rule on its own fitting rows, and the coverage of both candidates.
    """

    _constraints: ClassVar[dict[str, list[Any]]] = {
        "target_precision": [Interval(Real, 0, 1, closed="neither")],
        "confidence_level": [Interval(Real, 0.5, 1, closed="left")],
        "bound": [Options({"clopper-pearson", "wilson"})],
        "min_class_rows": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        target_precision: float = 0.98,
        confidence_level: float = 0.95,
        bound: str = "clopper-pearson",
        min_class_rows: int = 100,
    ) -> None:
        self.target_precision = target_precision
        self.confidence_level = confidence_level
        self.bound = bound
        self.min_class_rows = min_class_rows

    def _threshold(self, confidence: np.ndarray, correct: np.ndarray) -> float:
        return bounded_threshold(
            confidence, correct, target=self.target_precision, level=self.confidence_level, method=self.bound
        )

    def fit(
        self, confidence: np.ndarray, correct: np.ndarray, predicted: np.ndarray, *, n_classes: int
    ) -> AcceptanceRule:
        """Learn thresholds from ``confidence`` (n,) of predicted class codes ``predicted`` (n,) and whether each
        prediction was right, ``correct`` (n,) bool. Returns self."""
        validate_params(self, self._constraints)
        conf, ok, pred = np.asarray(confidence, float), np.asarray(correct, bool), np.asarray(predicted)
        if not (conf.shape == ok.shape == pred.shape) or conf.ndim != 1:
            raise ValueError(f"need three (n,) arrays, got {conf.shape}, {ok.shape}, {pred.shape}")
        if len(pred) and (pred.min() < 0 or pred.max() >= n_classes):
            raise ValueError(f"predicted class codes must lie in [0, {n_classes})")
        self.thresholds_ = np.full(n_classes, np.inf)
        self.own_threshold_ = np.zeros(n_classes, dtype=bool)
        counts = np.bincount(pred, minlength=n_classes)
        for c in np.flatnonzero(counts >= self.min_class_rows):
            rows = pred == c
            t = self._threshold(conf[rows], ok[rows])
            if np.isfinite(t):
                self.thresholds_[c], self.own_threshold_[c] = t, True
        pooled = ~self.own_threshold_[pred] if len(pred) else np.zeros(0, dtype=bool)
        if not pooled.any():
            pooled = np.ones(len(pred), dtype=bool)
        self.global_threshold_ = self._threshold(conf[pooled], ok[pooled])
        self.thresholds_[~self.own_threshold_] = self.global_threshold_
        per_class = selective_scores(self.accept(conf, pred), ok)
        # Each class's own bound costs a margin on its few rows; keep per-class thresholds only when they accept
        # more of the fitting rows than one threshold on every row (both candidates clear the bound).
        t_all = self._threshold(conf, ok)
        one = selective_scores(conf >= t_all, ok)
        if self.own_threshold_.any() and not per_class["accepted"] > one["accepted"]:
            self.thresholds_[:], self.own_threshold_[:], self.global_threshold_ = t_all, False, t_all
        self.fit_scores_ = {
            **selective_scores(self.accept(conf, pred), ok),
            "coverage_per_class_candidate": per_class["coverage"],
            "coverage_one_threshold_candidate": one["coverage"],
        }
        return self

    def accept(self, confidence: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """(n,) bool: ``confidence >= thresholds_[predicted]``."""
        return (
            np.asarray(confidence, dtype=np.float64)
            >= self.thresholds_[np.asarray(predicted, dtype=np.int64)]
        )

    def to_dict(self, classes: list[str]) -> dict[str, Any]:
        """JSON-able state; thresholds keyed by class name (``None`` for never). Inverse: :meth:`from_dict`."""
        return {
            "params": self.get_params(),
            "global_threshold": _finite_or_none(self.global_threshold_),
            "class_thresholds": {
                c: _finite_or_none(t)
                for c, t, own in zip(classes, self.thresholds_, self.own_threshold_, strict=True)
                if own
            },
            "fit_scores": self.fit_scores_,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], classes: list[str]) -> AcceptanceRule:
        """Rebuild from :meth:`to_dict` output for the model's ``classes`` (a class it does not know is an error)."""
        rule = cls(**state["params"])
        validate_params(rule, rule._constraints)
        pos = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(state.get("class_thresholds", {})) - set(pos))
        if unknown:
            raise ValueError(f"thresholds for classes the model does not have: {unknown[:5]}")
        rule.global_threshold_ = _threshold_value(state.get("global_threshold"), "global")
        rule.thresholds_ = np.full(len(classes), rule.global_threshold_)
        rule.own_threshold_ = np.zeros(len(classes), dtype=bool)
        for c, t in state.get("class_thresholds", {}).items():
            rule.thresholds_[pos[c]], rule.own_threshold_[pos[c]] = _threshold_value(t, c), True
        rule.fit_scores_ = dict(state.get("fit_scores", {}))
        return rule


def _finite_or_none(t: float) -> float | None:
    return float(t) if np.isfinite(t) else None


def _threshold_value(t: Any, name: str) -> float:
    if t is None:
        return float("inf")
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 1:
        raise ValueError(f"threshold {name!r}: expected a number in [0, 1] or null, got {t!r}")
    return float(t)
