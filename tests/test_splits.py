from __future__ import annotations

import numpy as np
import pytest

from prodcat.splits import holdout_split, kfold_indices


def test_holdout_is_stratified_disjoint_and_seeded() -> None:
    y = np.repeat(["a", "b", "c"], [100, 50, 30])
    tr, va = holdout_split(y, test_size=0.1, seed=3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
    assert {k: int((y[va] == k).sum()) for k in "abc"} == {"a": 10, "b": 5, "c": 3}
    _, va2 = holdout_split(y, test_size=0.1, seed=3)
    assert np.array_equal(va, va2)


def test_holdout_keeps_singleton_classes_in_train() -> None:
    y = np.array(["a"] * 20 + ["b"] * 20 + ["rare"])
    tr, va = holdout_split(y, test_size=0.2)
    assert 40 in tr and 40 not in va


def test_kfold_covers_every_row_once() -> None:
    y = np.repeat(["a", "b"], [30, 20])
    seen = np.concatenate([te for _, te in kfold_indices(y, n_splits=5)])
    assert np.array_equal(np.sort(seen), np.arange(50))


def test_kfold_names_the_too_small_class() -> None:
    with pytest.raises(ValueError, match="'tiny'"):
        list(kfold_indices(["a"] * 10 + ["tiny"] * 2, n_splits=5))


def test_holdout_small_catalog_keeps_one_validation_row_per_class():
    # 55 classes x 8 products: 10% would be 44 rows, fewer than the classes (sklearn refused this before).
    y = np.repeat([f"c{i}" for i in range(55)], 8)
    tr, va = holdout_split(y, test_size=0.1, seed=0)
    assert len(va) == 55 and set(y[va]) == set(y)
    assert len(tr) + len(va) == len(y) and not set(tr) & set(va)


def test_holdout_too_small_to_split_names_the_problem():
    y = np.repeat(["a", "b", "c"], 2)  # 3 classes x 2: one row per class each side is the minimum
    tr, va = holdout_split(y, test_size=0.1)
    assert len(tr) == 3
    assert len(va) == 3
    with pytest.raises(ValueError, match="validation rows"):
        holdout_split(y, test_size=0.9)  # 6 validation rows would leave none to train on


def test_holdout_accepts_a_row_count_like_sklearn():
    y = np.repeat(["a", "b", "c"], 16)
    tr, va = holdout_split(y, test_size=12, seed=0)
    assert len(va) == 12 and len(tr) == 36
