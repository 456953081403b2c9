"""The missing-modality rule, in one place: a row without its input (no text, no usable image) is not trained on
and is predicted as the training class prior.

:class:`MissingModalityMixin` gives the single-modality classifiers (``EmbeddingClassifier``, ``tfidf``, the
fine-tuned text and image models) that rule, ``predict`` and their sklearn tags (a catalog DataFrame, not a 2-D
numeric array, is their ``X``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prodcat.probability import align_proba


def class_prior(y: Any, classes: np.ndarray, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """(C,) weighted class frequencies of ``y`` in ``classes`` order (sums to 1); ``classes`` sorted, every label of
    ``y`` among them (``ValueError`` naming the others)."""
    y = np.asarray(y)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    pos = np.searchsorted(classes, y)
    unknown = (pos >= len(classes)) | (classes[np.minimum(pos, len(classes) - 1)] != y)
    if unknown.any():
        names = ", ".join(repr(str(v)) for v in np.unique(y[unknown])[:5])
        raise ValueError(f"labels not among the {len(classes)} classes: {names}")
    counts = np.bincount(pos, weights=w, minlength=len(classes)).astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.full(len(classes), 1.0 / len(classes))


def expand_proba(proba: np.ndarray, model_classes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Place columns of ``proba`` (n, len(model_classes)) into ``classes`` order (absent classes get 0) and
    renormalise rows in float64."""
    out = align_proba(proba, model_classes, classes)  # a new float64 array
    total = out.sum(axis=1, keepdims=True)  # float32 heads drift ~1e-7 from 1
    out /= np.where(total > 0, total, 1.0)
    return out


class MissingModalityMixin:
    """Rows without an input get the training class prior ``prior_``; put it first among the bases.

    ``fit`` starts with :meth:`_fit_prior`; ``predict_proba`` builds its result with :meth:`_proba_with_prior`
    (probabilities computed for the rows that have an input) or :meth:`_head_proba` (a fitted head's, with the
    one-class case handled).
    """

    classes_: np.ndarray
    prior_: np.ndarray

    def _fit_prior(self, y: Any, sample_weight: np.ndarray | None = None) -> np.ndarray:
        """Set ``classes_`` (sorted labels) and ``prior_`` (weighted class frequencies); returns ``y`` as array."""
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        self.prior_ = class_prior(y, self.classes_, sample_weight)
        return y

    def _proba_with_prior(
        self, n: int, rows: np.ndarray, rows_proba: np.ndarray | None, rows_classes: np.ndarray | None = None
    ) -> np.ndarray:
        """(n, C) float64 in ``classes_`` order: ``rows_proba`` (len(rows), columns ``rows_classes``, default
        ``classes_``) at ``rows``, ``prior_`` on every other row (and on all rows when ``rows_proba`` is None)."""
        classes = self.classes_ if rows_classes is None else rows_classes
        if rows_proba is not None and len(rows) == n:  # every row has its input: no prior rows to fill
            return expand_proba(rows_proba, classes, self.classes_)
        proba = np.tile(self.prior_, (n, 1))
        if rows_proba is not None and len(rows):
            proba[rows] = expand_proba(rows_proba, classes, self.classes_)
        return proba

    def _head_proba(self, n: int, rows: np.ndarray, head: Any | None, features: Any) -> np.ndarray:
        """:meth:`_proba_with_prior` from a fitted ``head`` on ``features`` (the rows ``rows``); without a head
        (training saw items of fewer than two classes) the rows with an item get certainty of ``only_class_``."""
        if not len(rows):
            return self._proba_with_prior(n, rows, None)
        if head is not None:
            return self._proba_with_prior(n, rows, head.predict_proba(features), head.classes_)
        only = getattr(self, "only_class_", None)
        certain = None if only is None else np.tile(self.classes_ == only, (len(rows), 1)).astype(np.float64)
        return self._proba_with_prior(n, rows, certain)

    @staticmethod
    def _only_class(seen: np.ndarray) -> Any:
        """The one label among ``seen`` (labels of the training rows that had an item), else None."""
        labels = np.unique(seen)
        return labels[0] if len(labels) == 1 else None

    def predict_proba(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X: Any) -> np.ndarray:
        """(n,) most probable labels."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags
