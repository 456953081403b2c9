"""prodcat's estimators through scikit-learn's own estimator checks.

Documented exceptions:

- The single-modality models (``TfidfTextClassifier``, ``EmbeddingClassifier``, ``HFTextClassifier``,
  ``ImageFineTuneClassifier``) take a catalog DataFrame, not a numeric 2-D array; they say so in their tags
  (``input_tags.two_d_array = False``, ``string = True``), so scikit-learn runs the checks that apply to such
  estimators (construction, parameters, cloning) and skips the numeric-array ones, with no failure expected.
- ``VotingEnsemble`` takes any X its members take: all checks, no exception.
- ``FoldEnsemble`` (the K out-of-fold models predicting together) takes any X its estimator takes; checked on a
  logistic regression, with two expected failures: a fold needs each class K times, so one sample cannot be fit
  (``check_fit2d_1sample`` wants its own wording of that error), and weighting a row is not the same as repeating
  it, since a repeated row lands in other folds (``check_sample_weight_equivalence_*``).
- The decision-level fusers take blocks of class probabilities: ``tests/test_sklearn_checks_fusion.py`` runs the
  checks on that domain.
"""

from __future__ import annotations

import warnings

from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.utils.estimator_checks import parametrize_with_checks

from prodcat.ensemble import VotingEnsemble
from prodcat.folds import FoldEnsemble
from prodcat.image.finetune import ImageFineTuneClassifier
from prodcat.models import EmbeddingClassifier
from prodcat.text.finetune import HFTextClassifier
from prodcat.text.models import TfidfTextClassifier

ESTIMATORS = [
    TfidfTextClassifier(),
    EmbeddingClassifier("test-tiny"),
    HFTextClassifier("/nonexistent/backbone"),  # nothing is loaded before fit
    ImageFineTuneClassifier("test-tiny-cnn"),
    VotingEnsemble([("logreg", LogisticRegression()), ("bayes", GaussianNB())], refit=True),
    FoldEnsemble(LogisticRegression(), n_splits=2),
]


EXPECTED_FAILURES = {
    "check_fit2d_1sample": "each class needs n_splits rows; the error says so in its own words",
    "check_sample_weight_equivalence_on_dense_data": "repeated rows land in other folds than a weighted one",
    "check_sample_weight_equivalence_on_sparse_data": "repeated rows land in other folds than a weighted one",
}


def expected_failures(estimator) -> dict[str, str]:
    return EXPECTED_FAILURES if isinstance(estimator, FoldEnsemble) else {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failures)
def test_sklearn_estimator_checks(estimator, check) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the tiny check data
        check(estimator)
