from __future__ import annotations

import functools
import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from prodcat.noise import (
    FILTERS,
    RANKINGS,
    PruningPolicy,
    check_proba,
    compare_pruning,
    find_label_issues,
    fit_weighted,
    label_quality,
    prune_training_rows,
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


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), fraction=st.floats(0, 1), min_weight=st.floats(0, 1))
def test_pruning_policies(seed: int, fraction: float, min_weight: float) -> None:
    labels, proba = dirichlet_case(seed)
    issues = find_label_issues(labels, proba)
    m = issues.n_issues
    top = pruning_weights(issues, PruningPolicy("top-fraction", fraction=fraction))
    k = int(np.floor(fraction * m + 0.5))
    assert (top == 0).sum() == k and set(np.flatnonzero(top == 0)) == set(issues.ranked[:k].tolist())
    assert np.array_equal(pruning_weights(issues, "all") == 0, issues.mask)
    down = pruning_weights(issues, PruningPolicy("downweight", min_weight=min_weight))
    assert np.all(down[~issues.mask] == 1.0)
    assert np.all((down[issues.mask] >= min_weight) & (down[issues.mask] <= 1.0))
    assert np.all(pruning_weights(issues, "none") == 1.0)


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


def test_fit_weighted_routes_and_refuses() -> None:
    X, y = blobs(200, seed=6)
    w = np.linspace(0, 1, len(y))  # first row dropped, the rest weighted
    pipe = fit_weighted(make_pipeline(StandardScaler(), LogisticRegression()), X, y, w)
    assert pipe.steps[-1][1].n_features_in_ == X.shape[1]

    class NoWeights(DecisionTreeClassifier):
        def fit(self, X: np.ndarray, y: np.ndarray) -> NoWeights:  # type: ignore[override]
            return super().fit(X, y)

    with pytest.raises(TypeError, match="sample_weight"):
        fit_weighted(NoWeights(), X, y, w)
    # 0/1 weights only drop rows: no sample_weight needed
    dropped = fit_weighted(NoWeights(), pd.DataFrame(X), y, (w > 0.5).astype(float))
    assert dropped.tree_.n_node_samples[0] == int((w > 0.5).sum())


def test_prune_training_rows_flags_flips_on_training_rows_only() -> None:
    X, y = blobs(600, seed=7)
    labels, flipped = flip(y, 0.1, seed=8)
    res = prune_training_rows(LinearDiscriminantAnalysis(), X[:400], labels[:400], policy="all")
    assert res.weights.shape == (400,) and res.proba.shape == (400, N_CLASSES)
    assert np.array_equal(res.keep, ~res.issues.mask)
    hits = (res.issues.mask & flipped[:400]).sum()
    assert hits / max(res.issues.n_issues, 1) >= 0.8


def test_compare_pruning_never_cleans_held_out_rows() -> None:
    X, y = blobs(600, seed=9, sep=1.2)
    labels, _ = flip(y, 0.2, seed=10)
    truth = np.array([f"class-{v}" for v in y])
    cmp = compare_pruning(
        LinearDiscriminantAnalysis(),
        X,
        labels,
        policies=["top-fraction:0.1", "all"],
        n_splits=3,
        inner_splits=3,
        y_eval=truth,
        n_boot=50,
        progress=False,
    )
    assert set(cmp.summary["policy"]) == {"none", "top-fraction:0.1", "all"}
    # every row gets exactly one held-out prediction per policy, training sizes exclude the held-out fold
    assert all(len(p) == len(labels) for p in cmp.predictions.values())
    assert cmp.folds.groupby("policy")["n_train"].sum().eq(2 * len(labels)).all()
    none = cmp.summary.set_index("policy").loc["none"]
    assert none["delta"] == 0 and none["dropped_mean"] == 0
    pruned = cmp.folds[cmp.folds["policy"] == "all"]
    assert (pruned["n_dropped"] == pruned["n_flagged"]).all() and (pruned["n_dropped"] > 0).all()
    for row in cmp.summary.itertuples():
        assert 0.0 <= row.macro_f1 <= 1.0
        assert row.delta_lo <= row.delta + 1e-12 and row.delta - 1e-12 <= row.delta_hi
