"""Confident-learning label issues (cleanlab) and pruning policies for training rows.

The paper removes likely mislabelled training products before training its image model: cleanlab on 4-fold
out-of-fold probabilities, dropping the top 10% of the ranked list of flagged rows (about 2.5% of the data). This
module is the functional core of that step, on arrays only:

- :func:`find_label_issues` flags rows whose given label disagrees with out-of-sample probabilities of any model
  (text, image or fused), with cleanlab's filters (``FILTERS``) and ranking scores (``RANKINGS``) chosen by name.
- :class:`PruningPolicy` / :func:`pruning_weights` turn flagged rows into per-row training weights: drop the top
  fraction of the ranked list (paper), drop every flagged row, or down-weight them.
- :func:`cleaning_weights` is the step training runs on out-of-fold probabilities of the TRAINING rows only (rows
  a model is evaluated on are never cleaned: the paper's code also cleaned its validation split, which inflates
  scores), and :func:`fit_with_weights` how training applies the weights.

Like cleanlab itself, nothing here touches a model other than through its probabilities, except
:func:`fit_with_weights`. Experiments comparing policies live in ``benchmarks/noise_experiments.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from prodcat.probability import check_probabilities

# cleanlab's `filter_by` options (cleanlab.filter.find_label_issues).
FilterBy = Literal[
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
    "low_normalized_margin",
    "low_self_confidence",
]
# cleanlab's label quality scores (cleanlab.rank.get_label_quality_scores `method`); low = suspicious.
RankBy = Literal["self_confidence", "normalized_margin", "confidence_weighted_entropy"]
FILTERS: tuple[str, ...] = get_args(FilterBy)
RANKINGS: tuple[str, ...] = get_args(RankBy)
POLICIES: tuple[str, ...] = ("top-fraction", "all", "downweight", "none")


@dataclass(frozen=True)
class LabelIssues:
    """Label issues found in ``n`` rows with ``C`` classes.

    Attributes
    ----------
    mask : (n,) bool, True where the given label is probably wrong.
    ranked : (m,) int, indices of the ``m`` flagged rows, most likely mislabelled first.
    quality : (n,) float label quality score of the given label (``rank_by``); low means suspicious.
    given : (n,) int index of the given label in ``classes``.
    suggested : (n,) int index of the most probable class.
    classes : (C,) class labels, the column order of the probabilities.
    filter_by, rank_by : the cleanlab methods used.
    """

    mask: np.ndarray
    ranked: np.ndarray
    quality: np.ndarray
    given: np.ndarray
    suggested: np.ndarray
    classes: np.ndarray
    filter_by: str
    rank_by: str

    @property
    def n_issues(self) -> int:
        """Number of flagged rows."""
        return int(self.mask.sum())

    @property
    def rate(self) -> float:
        """Flagged fraction of the rows."""
        return self.n_issues / max(len(self.mask), 1)


def encode_labels(labels: Sequence[Any] | np.ndarray, classes: Sequence[Any] | np.ndarray) -> np.ndarray:
    """(n,) int positions of ``labels`` in ``classes``; raises ``ValueError`` naming labels not in ``classes``."""
    pos = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
    values = np.asarray(labels).tolist()
    unknown = sorted({str(v) for v in values if v not in pos})
    if unknown:
        raise ValueError(f"labels not among the {len(pos)} classes: {', '.join(unknown[:5])}")
    return np.fromiter((pos[v] for v in values), dtype=np.int64, count=len(values))


def check_proba(pred_probs: np.ndarray, n_rows: int | None = None) -> np.ndarray:
    """(n, C >= 2) probabilities as float64 rows renormalised to sum to 1 (cleanlab's input), checked by
    :func:`prodcat.probability.check_probabilities`."""
    p = check_probabilities(pred_probs, name="pred_probs", n_rows=n_rows, renormalise=True)
    if p.shape[1] < 2:
        raise ValueError(f"pred_probs must be (n, C) with C >= 2, got shape {p.shape}")
    return p


def present_classes(given: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop the columns of classes that no row is labelled with (cleanlab requires every class present).

    ``given`` (n,) int class indices, ``p`` (n, C) probabilities. Returns ``(kept_columns, given_reduced,
    p_reduced)``: (C',) kept column indices, (n,) labels re-indexed into them, (n, C') renormalised rows.
    """
    counts = np.bincount(given, minlength=p.shape[1])
    keep = np.flatnonzero(counts > 0)
    if keep.size == p.shape[1]:
        return keep, given, p
    remap = np.full(p.shape[1], -1, dtype=np.int64)
    remap[keep] = np.arange(keep.size)
    q = p[:, keep]
    # rows whose whole mass sat on absent classes become uniform over the present ones
    s = q.sum(axis=1, keepdims=True)
    q = np.where(s > 0, q / np.where(s > 0, s, 1.0), 1.0 / keep.size)
    return keep, remap[given], q


def label_quality(
    labels: Sequence[Any] | np.ndarray,
    pred_probs: np.ndarray,
    *,
    classes: Sequence[Any] | np.ndarray | None = None,
    rank_by: str = "self_confidence",
) -> np.ndarray:
    """(n,) cleanlab label quality score of each given label (``rank_by`` in ``RANKINGS``); low = suspicious."""
    from cleanlab.rank import get_label_quality_scores

    if rank_by not in RANKINGS:
        raise ValueError(f"rank_by must be one of {RANKINGS}, not {rank_by!r}")
    classes = np.unique(np.asarray(labels)) if classes is None else np.asarray(classes)
    p = check_proba(pred_probs, len(labels))
    _, y, q = present_classes(encode_labels(labels, classes), p)
    if q.shape[1] < 2:
        return np.ones(len(y))
    return np.asarray(get_label_quality_scores(y, q, method=rank_by), dtype=np.float64)


def find_label_issues(
    labels: Sequence[Any] | np.ndarray,
    pred_probs: np.ndarray,
    *,
    classes: Sequence[Any] | np.ndarray | None = None,
    filter_by: str = "prune_by_noise_rate",
    rank_by: str = "self_confidence",
    frac_noise: float = 1.0,
    min_examples_per_class: int = 1,
    n_jobs: int | None = 1,
) -> LabelIssues:
    """Flag rows whose given label is probably wrong, with cleanlab's confident learning.

    Parameters
    ----------
    labels : (n,) given labels (any hashable: strings, ints).
    pred_probs : (n, C) OUT-OF-SAMPLE class probabilities (e.g. ``oof.oof_predict_proba``) of any model or of a
        fusion of models, columns in ``classes`` order. In-sample probabilities hide most issues.
    classes : (C,) column labels; default ``np.unique(labels)`` (then C must equal the number of distinct labels).
        Classes absent from ``labels`` are dropped before cleanlab runs (it requires every class present).
    filter_by : one of ``FILTERS`` (cleanlab's ``filter_by``), which rows count as issues.
    rank_by : one of ``RANKINGS``, the label quality score used to order issues (lowest first).
    frac_noise : cleanlab's ``frac_noise`` in (0, 1]: keep only the top fraction of estimated issues per class
        pair (``prune_by_*`` and ``both`` filters only).
    min_examples_per_class : never flag a class below this many unflagged rows.
    n_jobs : cleanlab worker processes (1 = no multiprocessing; None = one per core).

    Returns
    -------
    LabelIssues (mask, ranked indices, quality scores, given and suggested class indices).
    """
    from cleanlab.filter import find_label_issues as cl_find_label_issues

    if filter_by not in FILTERS:
        raise ValueError(f"filter_by must be one of {FILTERS}, not {filter_by!r}")
    if rank_by not in RANKINGS:
        raise ValueError(f"rank_by must be one of {RANKINGS}, not {rank_by!r}")
    if not 0.0 < frac_noise <= 1.0:
        raise ValueError(f"frac_noise must be in (0, 1], got {frac_noise}")
    classes = np.unique(np.asarray(labels)) if classes is None else np.asarray(classes)
    p = check_proba(pred_probs, len(labels))
    if p.shape[1] != len(classes):
        raise ValueError(f"pred_probs has {p.shape[1]} columns for {len(classes)} classes")
    given = encode_labels(labels, classes)
    _, y, q = present_classes(given, p)
    if q.shape[1] < 2:  # a single observed class: nothing to confuse it with
        mask = np.zeros(len(y), dtype=bool)
        quality = np.ones(len(y))
    else:
        mask = np.asarray(
            cl_find_label_issues(
                y,
                q,
                filter_by=filter_by,
                frac_noise=frac_noise,
                min_examples_per_class=min_examples_per_class,
                n_jobs=n_jobs,
            ),
            dtype=bool,
        )
        quality = label_quality(y, q, classes=np.arange(q.shape[1]), rank_by=rank_by)
    flagged = np.flatnonzero(mask)
    ranked = flagged[np.argsort(quality[flagged], kind="stable")]
    return LabelIssues(
        mask=mask,
        ranked=ranked,
        quality=quality,
        given=given,
        suggested=p.argmax(axis=1),
        classes=classes,
        filter_by=filter_by,
        rank_by=rank_by,
    )


@dataclass(frozen=True)
class PruningPolicy:
    """How flagged training rows are treated (see :func:`pruning_weights`).

    ``kind``: ``"top-fraction"`` drops the ``fraction`` of flagged rows with the lowest label quality (the paper:
    0.1 of the flagged list, about 2.5% of its data); ``"all"`` drops every flagged row; ``"downweight"`` keeps
    every row and weights flagged ones by their label quality clipped to ``[min_weight, 1]``; ``"none"`` keeps all.
    """

    kind: str = "top-fraction"
    fraction: float = 0.1
    min_weight: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {self.kind!r}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if not 0.0 <= self.min_weight <= 1.0:
            raise ValueError(f"min_weight must be in [0, 1], got {self.min_weight}")

    @classmethod
    def parse(cls, spec: str | PruningPolicy) -> PruningPolicy:
        """From ``"top-fraction"``, ``"top-fraction:0.1"``, ``"all"``, ``"downweight:0.05"`` or ``"none"``."""
        if isinstance(spec, PruningPolicy):
            return spec
        kind, _, arg = spec.strip().partition(":")
        if not arg:
            return cls(kind=kind)
        value = float(arg)
        return cls(kind=kind, min_weight=value) if kind == "downweight" else cls(kind=kind, fraction=value)

    def __str__(self) -> str:
        if self.kind == "top-fraction":
            return f"top-fraction:{self.fraction:g}"
        return f"downweight:{self.min_weight:g}" if self.kind == "downweight" else self.kind


def pruning_weights(issues: LabelIssues, policy: PruningPolicy | str = "top-fraction") -> np.ndarray:
    """(n,) training weights in [0, 1] for the rows of ``issues``: 0 = drop, 1 = keep as is."""
    policy = PruningPolicy.parse(policy)
    w = np.ones(len(issues.mask), dtype=np.float64)
    if policy.kind == "all":
        w[issues.mask] = 0.0
    elif policy.kind == "top-fraction":
        k = int(np.floor(policy.fraction * len(issues.ranked) + 0.5))
        w[issues.ranked[:k]] = 0.0
    elif policy.kind == "downweight":
        w[issues.mask] = np.clip(issues.quality[issues.mask], policy.min_weight, 1.0)
    return w


def cleaning_weights(
    labels: Sequence[Any] | np.ndarray,
    oof_proba: np.ndarray,
    *,
    classes: Sequence[Any] | np.ndarray | None = None,
    policy: PruningPolicy | str = "top-fraction",
    filter_by: str = "prune_by_noise_rate",
    rank_by: str = "self_confidence",
) -> tuple[LabelIssues, np.ndarray]:
    """The label issues of training rows and the policy's ``(n,)`` training weights, from out-of-fold
    probabilities of those rows only (rows a model is evaluated on are never cleaned).

    This is the cleaning step of training (:mod:`prodcat.pipeline`); the weights are applied by
    :func:`fit_with_weights`, and ``benchmarks/noise_experiments.py`` measures the same two steps.
    """
    issues = find_label_issues(labels, oof_proba, classes=classes, filter_by=filter_by, rank_by=rank_by)
    return issues, pruning_weights(issues, policy)


def fit_with_weights(estimator: Any, X: Any, y: np.ndarray, weights: np.ndarray | None) -> Any:
    """Fit ``estimator`` as training does: every row, with ``weights`` as ``sample_weight`` (0 = the row does
    not count; dropping is a weight of 0, not a removed row). ``None`` fits without weights. Returns the estimator.
    """
    return estimator.fit(X, y) if weights is None else estimator.fit(X, y, sample_weight=weights)
