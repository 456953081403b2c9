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
