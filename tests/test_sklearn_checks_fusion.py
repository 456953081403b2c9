"""The decision-level fusers through scikit-learn's estimator checks, on their own input domain.

A decision-level fuser's X is blocks of class probabilities (each row of a block non-negative, summing to 1); it
refuses anything else on purpose (logits, raw scores), while scikit-learn's checks feed arbitrary numbers.
:class:`OnProbabilities` maps each check's numeric X to that domain before it reaches the fuser: every input
column becomes one block of probabilities (a softmax over the classes of ``y``), so the fuser sees ``d`` "models"
and the checks exercise its own learning contract: ``fit`` returning self, ``classes_``, ``predict`` /
``predict_proba`` consistency, sample weights (shape, zeros, equivalence with repetition), invariance to row
order and subsets, idempotent refits, cloning, pickling, parameters left untouched. The checks of input
validation (NaN, sparse, complex, empty, 1-D X) then test the adapter's :func:`sklearn.utils.validation.check_array`;
the fusers' own refusal of non-probabilities is tested in ``tests/test_fusion.py``.

Documented exceptions: ``check_sample_weight_equivalence_on_dense_data`` for ``gbdt`` and ``paper-mlp``, as\nscikit-learn marks its own HistGradientBoostingClassifier and MLPClassifier (see ``WEIGHTS_NOT_REPETITION``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from prodcat.fusion import GBDTFusion, LogisticFusion, LogLinearFusion, MeanFusion, PaperMLPFusion


class OnProbabilities(ClassifierMixin, BaseEstimator):
    """``fuser`` fitted on probability blocks made from any numeric X (see the module docstring)."""

    def __init__(self, fuser: Any) -> None:
        self.fuser = fuser

    def _blocks(self, X: np.ndarray) -> np.ndarray:
        # column j -> softmax_c(-(z_j - centre_jc)^2 / 2): each column a weak "model" of the classes, on the
        # standardised column and the (weighted) class means seen in fit
        z = (X - self.mean_) / self.scale_
        logits = -0.5 * (z[:, :, None] - self.centres_[None, :, :]) ** 2
        logits -= logits.max(axis=2, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=2, keepdims=True)).reshape(len(X), -1)

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> OnProbabilities:
        X, y = validate_data(self, X, y, y_numeric=False)
        y = column_or_1d(y)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        if w.shape == (len(X),) and w.sum() > 0:  # else the fuser refuses the weights itself
            self.mean_ = np.average(X, axis=0, weights=w)
            self.scale_ = np.sqrt(np.average((X - self.mean_) ** 2, axis=0, weights=w)) + 1e-9
            z = (X - self.mean_) / self.scale_
            self.centres_ = np.stack(
                [
                    np.average(z[y == c], axis=0, weights=w[y == c])
                    if w[y == c].sum() > 0
                    else np.zeros(X.shape[1])
                    for c in self.classes_
                ],
                axis=1,
            )
        else:
            self.mean_, self.scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
            self.centres_ = np.zeros((X.shape[1], len(self.classes_)))
        self.fuser_ = clone(self.fuser).fit(self._blocks(X), y, sample_weight=sample_weight)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return self.fuser_.predict_proba(self._blocks(validate_data(self, X, reset=False)))

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return self.fuser_.predict(self._blocks(validate_data(self, X, reset=False)))


FUSERS = [
    OnProbabilities(MeanFusion()),
    OnProbabilities(LogLinearFusion()),
    OnProbabilities(LogisticFusion()),
    OnProbabilities(GBDTFusion()),
    # soft voting: predict is the argmax of predict_proba, as the checks require; the default hard vote of the
    # nets (the paper's rule) can differ from the argmax of their mean on close calls, and is tested on its own
    # in tests/test_fusion.py
    OnProbabilities(PaperMLPFusion(epochs=60, hidden=16, n_splits=3, voting="soft")),
]
# As scikit-learn marks its own HistGradientBoostingClassifier and MLPClassifier: boosting bins and holds out
# rows, and the nets train by mini-batch SGD, so a weight of 2 is not the same fit as a repeated row.
WEIGHTS_NOT_REPETITION = {
    "check_sample_weight_equivalence_on_dense_data": "sample_weight is not equivalent to repeating rows"
}


def expected_failures(estimator: OnProbabilities) -> dict[str, str]:
    return WEIGHTS_NOT_REPETITION if isinstance(estimator.fuser, GBDTFusion | PaperMLPFusion) else {}


@parametrize_with_checks(FUSERS, expected_failed_checks=expected_failures)
def test_fuser_estimator_checks(estimator, check) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the tiny check data
        check(estimator)
