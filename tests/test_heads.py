"""Heads that stay cheap at many classes: shrinkage LDA, the ``auto`` head and tfidf's ``auto`` classifier."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, SGDClassifier

from prodcat.heads import GroupedClassifier, SharedCovarianceClassifier
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


def test_tfidf_auto_classifier_groups_the_classes_above_the_class_limit() -> None:
    rng = np.random.default_rng(0)
    C = LOGREG_MAX_CLASSES + 5
    words = [f"w{k}x" for k in range(C)]
    y = np.repeat(np.arange(C), 4).astype(str)
    titles = [f"{words[int(c)]} {rng.choice(words)} item" for c in y]
    X = pd.DataFrame({"title": titles, "description": [""] * len(y)})
    est = TfidfTextClassifier(min_df=1).fit(X, y)
    assert isinstance(est.linear_, GroupedClassifier) and len(est.linear_.estimators_) == 10  # ~sqrt(105)
    assert isinstance(est.linear_.group_estimator_, LogisticRegression)
    assert est.linear_.group_estimator_.class_weight is None  # classes balanced by sample weights instead
    assert (est.predict(X) == y).mean() > 0.9
    np.testing.assert_allclose(est.predict_proba(X).sum(1), 1.0, atol=1e-9)
    long = X.assign(description=["a long description of the product " * 10] * len(X))
    assert isinstance(TfidfTextClassifier(min_df=1).fit(long, y).linear_.group_estimator_, SGDClassifier)
    assert isinstance(TfidfTextClassifier(min_df=1, classifier="sgd").fit(X, y).linear_, SGDClassifier)
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


def _families(n: int, d: int, families: int, per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative points of ``families x per`` classes: classes of one family have nearby centres (as
    article types of one category do in n-gram space)."""
    rng = np.random.default_rng(seed)
    centres = np.repeat(rng.normal(size=(families, d)) * 4, per, axis=0) + rng.normal(
        size=(families * per, d)
    )
    y = rng.integers(0, families * per, n)
    return np.maximum(centres[y] + rng.normal(size=(n, d)), 0), y


def test_grouped_classifier_gives_proper_probabilities_from_small_stages() -> None:
    X, y = _families(3000, 40, 8, 8, seed=2)
    labels = np.array([f"c{k:02d}" for k in y])
    est = GroupedClassifier(max_group_size=1.5).fit(X[:2400], labels[:2400])
    P = est.predict_proba(X[2400:])
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-9)
    assert list(est.classes_) == sorted(set(labels))
    # sqrt(64) groups, every class in one group, none above 1.5x the average: each solver sees few classes
    sizes = np.bincount(est.group_of_)
    assert len(sizes) == len(est.estimators_) == len(est.group_estimator_.classes_) == 8
    assert sizes.sum() == 64 and sizes.max() <= 12
    assert all(e is None or len(e.classes_) == k for e, k in zip(est.estimators_, sizes, strict=True))
    flat = LogisticRegression(C=10.0, max_iter=300).fit(X[:2400], labels[:2400])
    assert (est.predict(X[2400:]) == labels[2400:]).mean() >= (
        flat.predict(X[2400:]) == labels[2400:]
    ).mean() - 0.03


def test_grouped_classifier_puts_alike_classes_together_and_reads_sparse_input() -> None:
    import scipy.sparse as sp

    X, y = _families(800, 40, 4, 4, seed=3)
    est = GroupedClassifier(n_groups=4, max_group_size=1.0).fit(sp.csr_matrix(X), y)
    assert sorted(len(set(est.group_of_[4 * f : 4 * f + 4])) for f in range(4)) == [1, 1, 1, 1]
    assert (est.predict(sp.csr_matrix(X)) == y).mean() > 0.8


def test_grouped_classifier_balanced_weights_and_one_group() -> None:
    X, y = _blobs(n=400, d=10, C=4, seed=4)
    keep = (y != 0) | (np.arange(len(y)) % 8 == 0)  # class 0 rare
    X, y = X[keep], y[keep]
    one = GroupedClassifier(n_groups=1).fit(X, y)
    assert one.group_estimator_ is None and len(one.estimators_) == 1
    counts = np.bincount(y)
    flat = LogisticRegression(C=10.0, max_iter=300).fit(X, y, sample_weight=len(y) / (4 * counts[y]))
    np.testing.assert_allclose(one.predict_proba(X), flat.predict_proba(X), atol=1e-6)
    with pytest.raises(ValueError, match="n_groups"):
        GroupedClassifier(n_groups=0).fit(X, y)


def test_grouped_classifier_on_a_group_whose_rows_hold_no_feature() -> None:
    import scipy.sparse as sp

    X, y = _families(200, 10, 2, 2, seed=5)
    X[y >= 2] = (
        0  # two classes whose rows are all empty (texts whose n-grams were all too rare) share a group
    )
    est = GroupedClassifier(n_groups=2, max_group_size=1.0).fit(sp.csr_matrix(X), y)
    assert est.group_of_[2] == est.group_of_[3] != est.group_of_[0]
    np.testing.assert_allclose(est.predict_proba(sp.csr_matrix(X)).sum(1), 1.0, atol=1e-9)
