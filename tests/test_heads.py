"""Heads that stay cheap at many classes: shrinkage LDA, the ``auto`` head and tfidf's ``auto`` classifier."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, SGDClassifier

from prodcat.heads import SharedCovarianceClassifier
from prodcat.models import LOGREG_MAX_CLASSES, make_head
from prodcat.text.models import TfidfTextClassifier


def _blobs(n: int = 600, d: int = 20, C: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    return rng.normal(size=(C, d))[y] * 1.5 + rng.normal(size=(n, d)), y


def test_lda_learns_separable_classes_with_proper_probabilities() -> None:
    X, y = _blobs()
    est = SharedCovarianceClassifier().fit(X[:400], y[:400])
    P = est.predict_proba(X[400:])
    np.testing.assert_allclose(P.sum(1), 1.0)
    assert (est.predict(X[400:]) == y[400:]).mean() > 0.9
    assert est.temperature_ > 0 and 0 <= est.shrinkage_ <= 1


def test_lda_fitted_temperature_beats_a_fixed_one_on_log_loss() -> None:
    X, y = _blobs(n=800, d=60, C=10)
    rows = np.arange(400, 800)

    def nll(est: SharedCovarianceClassifier) -> float:
        return float(-np.log(est.predict_proba(X[rows])[np.arange(400), y[rows]] + 1e-12).mean())

    fitted = SharedCovarianceClassifier().fit(X[:400], y[:400])
    assert nll(fitted) <= nll(SharedCovarianceClassifier(temperature=0.05).fit(X[:400], y[:400]))


def test_lda_sample_weight_zero_removes_rows() -> None:
    X, y = _blobs()
    w = (y != 0).astype(float)
    est = SharedCovarianceClassifier(temperature=1.0).fit(X, y, sample_weight=w)
    assert (est.predict(X) != 0).all()  # a class without weight is never predicted
    same = SharedCovarianceClassifier(temperature=1.0).fit(X[y != 0], y[y != 0])
    np.testing.assert_allclose(est.coef_[:, 1:], same.coef_, atol=1e-6)


def test_auto_head_switches_to_lda_above_the_class_limit() -> None:
    small = make_head("auto", {"C": 0.05}, random_state=0, n_classes=LOGREG_MAX_CLASSES)
    large = make_head("auto", {"C": 0.05}, random_state=0, n_classes=LOGREG_MAX_CLASSES + 1)
    assert isinstance(small.steps[-1][1], LogisticRegression) and small.steps[-1][1].C == 0.05
    assert isinstance(large.steps[-1][1], SharedCovarianceClassifier)  # C is the logistic's: not passed on
    with pytest.raises(ValueError, match="unknown head 'nope'"):
        make_head("nope", None, random_state=0)


def test_tfidf_auto_classifier_uses_sgd_above_the_class_limit() -> None:
    rng = np.random.default_rng(0)
    C = LOGREG_MAX_CLASSES + 5
    words = [f"w{k}x" for k in range(C)]
    y = np.repeat(np.arange(C), 4).astype(str)
    titles = [f"{words[int(c)]} {rng.choice(words)} item" for c in y]
    X = pd.DataFrame({"title": titles, "description": [""] * len(y)})
    est = TfidfTextClassifier(min_df=1).fit(X, y)
    assert isinstance(est.linear_, SGDClassifier)
    assert (est.predict(X) == y).mean() > 0.9
    np.testing.assert_allclose(est.predict_proba(X).sum(1), 1.0, atol=1e-9)
    small = TfidfTextClassifier(min_df=1).fit(X.iloc[:40], y[:40])
    assert isinstance(small.linear_, LogisticRegression)
    with pytest.raises(ValueError, match="classifier must be"):
        TfidfTextClassifier(classifier="svm").check_params()


def test_tfidf_caps_ngrams_so_weights_stay_within_max_weights() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(10), 30).astype(str)
    titles = [" ".join(f"t{rng.integers(5000)}" for _ in range(8)) for _ in y]
    X = pd.DataFrame({"title": titles, "description": [""] * len(y)})
    capped = TfidfTextClassifier(min_df=1, max_weights=40_000).fit(X, y)  # 2,000 n-grams per vectorizer
    free = TfidfTextClassifier(min_df=1, max_weights=None).fit(X, y)
    assert len(capped.word_.vocabulary_) == 2000 < len(free.word_.vocabulary_)
    assert len(capped.char_.vocabulary_) == 2000 < len(free.char_.vocabulary_)
