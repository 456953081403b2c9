from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression

from prodcat.noise import (
    FILTERS,
    RANKINGS,
    LabelIssues,
    PruningPolicy,
    check_proba,
    cleaning_weights,
    find_label_issues,
    fit_with_weights,
    label_quality,
    pruning_weights,
)
from prodcat.oof import oof_predict_proba

N_CLASSES = 6


def blobs(n: int, *, seed: int, sep: float = 2.5, dim: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs: (n, dim) features and (n,) true class ids."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(N_CLASSES, dim)) * sep
    y = rng.integers(0, N_CLASSES, n)
    return centers[y] + rng.normal(size=(n, dim)), y


def flip(y: np.ndarray, rate: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ``rate`` of them moved to another class, and the (n,) mask of flipped rows.

    Flips are nested across rates for a fixed seed: the rows flipped at a lower rate are flipped at a higher one.
    """
    rng = np.random.default_rng(seed)
    u = rng.random(len(y))
    shift = rng.integers(1, N_CLASSES, len(y))
    flipped = u < rate
    noisy = np.where(flipped, (y + shift) % N_CLASSES, y)
    return np.array([f"class-{v}" for v in noisy]), flipped


def oof(X: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # LDA is the Bayes classifier of these blobs and fits in milliseconds
    res = oof_predict_proba(LinearDiscriminantAnalysis(), X, labels, n_splits=4, refit=False, progress=False)
    return res.proba, res.classes


@functools.cache
def noisy_blobs(rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(flipped mask, labels, OOF proba, classes) of 1200 blobs with ``rate`` flipped labels."""
    X, y = blobs(1200, seed=1)
    labels, flipped = flip(y, rate, seed=2)
    return (flipped, labels, *oof(X, labels))


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.2])
@pytest.mark.parametrize("filter_by", ["prune_by_noise_rate", "prune_by_class", "both"])
def test_known_flips_found_with_precision_and_recall_floors(rate: float, filter_by: str) -> None:
    flipped, labels, proba, classes = noisy_blobs(rate)
    issues = find_label_issues(labels, proba, classes=classes, filter_by=filter_by)
    hits = int((issues.mask & flipped).sum())
    precision, recall = hits / max(issues.n_issues, 1), hits / flipped.sum()
    assert precision >= 0.8, (precision, recall)
    assert recall >= 0.75, (precision, recall)


def test_more_noise_more_flagged() -> None:
    counts = []
    for rate in (0.0, 0.05, 0.1, 0.2, 0.3):
        _, labels, proba, classes = noisy_blobs(rate)
        counts.append(find_label_issues(labels, proba, classes=classes).n_issues)
    assert counts[0] <= 0.01 * len(labels)
    assert all(a < b for a, b in itertools.pairwise(counts)), counts


def dirichlet_case(seed: int, n: int = 120, c: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Random probabilities peaked on a class and labels mostly equal to that class."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, c, n)
    true[:c] = np.arange(c)  # every class present
    alpha = np.ones((n, c)) * 0.5
    alpha[np.arange(n), true] += 6
    proba = np.vstack([rng.dirichlet(a) for a in alpha])
    labels = np.where(rng.random(n) < 0.15, rng.integers(0, c, n), true)
    labels[:c] = np.arange(c)
    return labels, proba


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), filter_by=st.sampled_from(FILTERS), rank_by=st.sampled_from(RANKINGS))
def test_issue_invariants(seed: int, filter_by: str, rank_by: str) -> None:
    labels, proba = dirichlet_case(seed)
    issues = find_label_issues(labels, proba, filter_by=filter_by, rank_by=rank_by)
    assert issues.mask.shape == labels.shape and issues.mask.dtype == bool
    assert sorted(issues.ranked.tolist()) == np.flatnonzero(issues.mask).tolist()
    assert np.all(np.diff(issues.quality[issues.ranked]) >= 0)  # most suspicious first
    assert np.array_equal(issues.suggested, proba.argmax(axis=1))
    assert np.array_equal(issues.given, labels)
    # string labels give the same answer as their integer codes
    named = np.array([f"c{v}" for v in labels])
    again = find_label_issues(
        named, proba, classes=[f"c{k}" for k in range(4)], filter_by=filter_by, rank_by=rank_by
    )
    assert np.array_equal(again.mask, issues.mask)


def ten_flagged() -> LabelIssues:
    """20 rows; rows 10..19 flagged, with label quality 0.10 (row 19), 0.15 (row 18), ... 0.55 (row 10)."""
    mask = np.arange(20) >= 10
    quality = np.ones(20)
    quality[10:] = np.linspace(0.55, 0.10, 10)
    ranked = np.arange(19, 9, -1)  # least plausible first
    zeros = np.zeros(20, dtype=np.int64)
    return LabelIssues(
        mask, ranked, quality, zeros, zeros, np.arange(2), "prune_by_noise_rate", "self_confidence"
    )


@pytest.mark.parametrize(
    ("fraction", "dropped"), [(0.1, [19]), (0.25, [17, 18, 19]), (1.0, list(range(10, 20)))]
)
def test_top_fraction_drops_the_least_plausible_flagged_rows(fraction: float, dropped: list[int]) -> None:
    w = pruning_weights(ten_flagged(), PruningPolicy("top-fraction", fraction=fraction))
    assert np.flatnonzero(w == 0).tolist() == dropped  # 0.25 of 10 = 2.5 rounds up to 3
    assert np.all(w[w != 0] == 1.0)


def test_all_drops_every_flagged_row_and_none_keeps_all() -> None:
    assert np.flatnonzero(pruning_weights(ten_flagged(), "all") == 0).tolist() == list(range(10, 20))
    assert np.all(pruning_weights(ten_flagged(), "none") == 1.0)


def test_downweight_keeps_every_row_weighted_by_quality_with_a_floor() -> None:
    w = pruning_weights(ten_flagged(), PruningPolicy("downweight", min_weight=0.2))
    assert np.all(w[:10] == 1.0)  # unflagged rows untouched
    assert w[10] == pytest.approx(0.55) and w[15] == pytest.approx(0.30)
    np.testing.assert_allclose(w[17:], 0.2)  # qualities 0.20, 0.15, 0.10 are floored at min_weight
    assert np.all(w > 0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), lo=st.floats(0, 1), hi=st.floats(0, 1))
def test_a_larger_fraction_drops_a_superset_of_less_plausible_rows(seed: int, lo: float, hi: float) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    labels, proba = dirichlet_case(seed)
    issues = find_label_issues(labels, proba)
    few = pruning_weights(issues, PruningPolicy("top-fraction", fraction=lo)) == 0
    many = pruning_weights(issues, PruningPolicy("top-fraction", fraction=hi)) == 0
    assert np.all(many[few])  # nested
    kept_flagged = issues.mask & ~many
    if (
        many.any() and kept_flagged.any()
    ):  # every dropped row is at most as plausible as every kept flagged one
        assert issues.quality[many].max() <= issues.quality[kept_flagged].min()


def test_policy_parse_round_trip() -> None:
    for spec in ("top-fraction:0.1", "all", "downweight:0.05", "none"):
        assert str(PruningPolicy.parse(spec)) == spec
    assert PruningPolicy.parse("top-fraction").fraction == 0.1  # the paper's default
    with pytest.raises(ValueError, match="policy must be one of"):
        PruningPolicy.parse("drop-some")
    with pytest.raises(ValueError, match="fraction"):
        PruningPolicy("top-fraction", fraction=1.5)


def test_bad_names_and_inputs_are_clear_errors() -> None:
    labels, proba = dirichlet_case(0)
    with pytest.raises(ValueError, match="filter_by must be one of"):
        find_label_issues(labels, proba, filter_by="nope")
    with pytest.raises(ValueError, match="rank_by must be one of"):
        find_label_issues(labels, proba, rank_by="nope")
    with pytest.raises(ValueError, match="sum to 1"):
        check_proba(proba * 2)
    with pytest.raises(ValueError, match="non-negative"):
        check_proba(proba - 1)
    with pytest.raises(ValueError, match="rows for"):
        find_label_issues(labels[:-1], proba)
    with pytest.raises(ValueError, match="not among"):
        find_label_issues(np.append(labels[:-1], 9), proba, classes=np.arange(4))


def test_float32_drift_is_renormalised() -> None:
    p = np.array([[0.7, 0.3001], [0.2, 0.7999]], dtype=np.float32)
    assert np.allclose(check_proba(p).sum(axis=1), 1.0)


def test_absent_class_column_is_ignored() -> None:
    labels, proba = dirichlet_case(5)
    padded = np.hstack([proba, np.zeros((len(labels), 1))])  # a fifth class nobody is labelled with
    a = find_label_issues(labels, proba)
    b = find_label_issues(labels, padded, classes=np.arange(5))
    assert np.array_equal(a.mask, b.mask)
    assert np.allclose(a.quality, b.quality)
    assert np.allclose(label_quality(labels, padded, classes=np.arange(5)), a.quality)


def test_cleaning_weights_are_the_policy_applied_to_the_issues_found() -> None:
    labels, proba = dirichlet_case(3)
    issues, w = cleaning_weights(labels, proba, policy="all")
    assert issues.n_issues > 0
    assert np.array_equal(w == 0, issues.mask)
    again, _ = cleaning_weights(labels, proba, policy="none", filter_by="both")
    assert again.filter_by == "both"


def test_fit_with_weights_keeps_every_row_and_passes_the_weights() -> None:
    """Training never removes a row: a weight of 0 goes to fit as sample_weight (the rows still shape, e.g., a
    vectorizer's vocabulary), and a fit without weights is a plain fit."""
    seen: dict[str, object] = {}

    class Spy(LogisticRegression):
        def fit(self, X, y, sample_weight=None):  # type: ignore[override]
            seen["n"], seen["w"] = len(X), sample_weight
            return super().fit(X, y, sample_weight=sample_weight)

    X, y = blobs(120, seed=6)
    w = np.where(np.arange(len(y)) % 4 == 0, 0.0, 0.5)
    fitted = fit_with_weights(Spy(), X, y, w)
    assert seen["n"] == len(y) and np.array_equal(seen["w"], w)
    assert fitted.n_features_in_ == X.shape[1]
    fit_with_weights(Spy(), X, y, None)
    assert seen["w"] is None
