from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from prodcat.oof import align_proba, oof_predict_proba


class Memoriser(ClassifierMixin, BaseEstimator):
    """Predicts the label it saw for a row id with certainty, and a uniform distribution for ids it never saw.

    If any row were predicted by a model trained on it, its OOF probabilities would be one-hot.
    """

    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> Memoriser:
        self.memory_ = dict(zip(X["id"], y, strict=True))
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        out = np.full((len(X), len(self.classes_)), 1.0 / len(self.classes_))
        for i, key in enumerate(X["id"]):
            if key in self.memory_:
                out[i] = self.classes_ == self.memory_[key]
        return out

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class CountingLogReg(LogisticRegression):
    fits = 0

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> CountingLogReg:
        type(self).fits += 1
        return super().fit(X, y, sample_weight=sample_weight)


def _data(n: int = 60, n_classes: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    y = np.array([f"c{i % n_classes}" for i in range(n)])
    return pd.DataFrame({"id": [f"p{i}" for i in range(n)], "title": y}), y


def test_no_row_is_predicted_by_a_model_that_saw_it() -> None:
    X, y = _data()
    res = oof_predict_proba(Memoriser(), X, y, n_splits=5, progress=False)
    assert res.classes.tolist() == ["c0", "c1", "c2"]
    np.testing.assert_allclose(res.proba, 1.0 / 3)  # every row was unseen by the model that predicted it
    # Each row belongs to exactly one test fold and folds are balanced.
    assert set(res.folds.tolist()) == set(range(5))
    assert np.bincount(res.folds).tolist() == [12] * 5
    # The refit model saw everything.
    assert (res.estimator.predict(X) == y).all()


def test_oof_probabilities_are_aligned_and_seeded() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 20)
    X = rng.normal(size=(60, 4)) + (np.searchsorted(["a", "b", "c"], y)[:, None] * 2.0)
    one = oof_predict_proba(LogisticRegression(), X, y, n_splits=4, seed=7, progress=False, refit=False)
    two = oof_predict_proba(LogisticRegression(), X, y, n_splits=4, seed=7, progress=False, refit=False)
    other = oof_predict_proba(LogisticRegression(), X, y, n_splits=4, seed=8, progress=False, refit=False)
    np.testing.assert_array_equal(one.proba, two.proba)
    assert not np.array_equal(one.folds, other.folds)
    np.testing.assert_allclose(one.proba.sum(axis=1), 1.0)
    assert one.estimator is None
    assert (one.classes[one.proba.argmax(axis=1)] == y).mean() > 0.9


def test_align_proba_fills_absent_classes() -> None:
    out = align_proba(np.array([[0.4, 0.6]]), np.array(["b", "c"]), np.array(["a", "b", "c"]))
    np.testing.assert_allclose(out, [[0.0, 0.4, 0.6]])


@pytest.mark.parametrize("seed", range(5))
def test_align_proba_places_each_column_under_its_class(seed: int) -> None:
    """Any order of the target classes (sorted or not), any subset of model classes, strings or integers: each
    column lands under its own class, the rest are 0, and the result is a new float64 array."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.array([f"c{i}" for i in range(40)]))
    if seed % 2:
        classes = rng.permutation(np.arange(40) * 7)
    model_classes = rng.permutation(classes)[: rng.integers(1, 41)]
    proba = rng.random((6, len(model_classes))).astype(np.float32)
    out = align_proba(proba, model_classes, classes)
    for j, c in enumerate(model_classes):
        np.testing.assert_array_equal(out[:, list(classes).index(c)], proba[:, j])
    absent = ~np.isin(classes, model_classes)
    assert out.dtype == np.float64 and (out[:, absent] == 0).all()
    full = rng.random((6, 40))
    same = align_proba(full, classes, classes)  # classes already in place: a copy
    np.testing.assert_array_equal(same, full)
    assert not np.shares_memory(same, full)


def test_align_proba_names_a_class_it_cannot_place() -> None:
    with pytest.raises(KeyError, match="z"):
        align_proba(np.ones((1, 2)) / 2, np.array(["a", "z"]), np.array(["a", "b"]))
    with pytest.raises(KeyError):
        align_proba(np.ones((1, 1)), np.array([5]), np.array([1, 2]))
    mixed = np.array([1, "a"], dtype=object)  # labels that do not sort together
    np.testing.assert_allclose(align_proba(np.array([[0.3, 0.7]]), mixed[::-1], mixed), [[0.7, 0.3]])


def test_oof_cache_hit_skips_fold_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y = np.repeat(["a", "b"], 15)
    X = rng.normal(size=(30, 3)) + (y == "b")[:, None]
    CountingLogReg.fits = 0
    first = oof_predict_proba(CountingLogReg(), X, y, n_splits=3, progress=False, cache_dir=tmp_path)
    assert CountingLogReg.fits == 4  # 3 folds + refit
    second = oof_predict_proba(CountingLogReg(), X, y, n_splits=3, progress=False, cache_dir=tmp_path)
    assert CountingLogReg.fits == 5  # only the refit
    np.testing.assert_array_equal(first.proba, second.proba)
    np.testing.assert_array_equal(first.folds, second.folds)
    # Anything that changes the result changes the key.
    oof_predict_proba(
        CountingLogReg(C=0.3), X, y, n_splits=3, progress=False, refit=False, cache_dir=tmp_path
    )
    oof_predict_proba(
        CountingLogReg(), X, y, n_splits=3, seed=1, progress=False, refit=False, cache_dir=tmp_path
    )
    oof_predict_proba(CountingLogReg(), X + 1, y, n_splits=3, progress=False, refit=False, cache_dir=tmp_path)
    assert CountingLogReg.fits == 5 + 9


def test_oof_cache_corruption_recomputes(tmp_path: Path) -> None:
    X, y = _data(30)
    oof_predict_proba(Memoriser(), X, y, n_splits=3, progress=False, refit=False, cache_dir=tmp_path)
    (entry,) = list((tmp_path / "arrays").rglob("*.npz"))
    entry.write_bytes(b"broken")
    with pytest.warns(UserWarning, match="corrupt entry"):
        res = oof_predict_proba(
            Memoriser(), X, y, n_splits=3, progress=False, refit=False, cache_dir=tmp_path
        )
    np.testing.assert_allclose(res.proba, 1.0 / 3)
    assert entry.exists()  # rewritten


def test_sample_weight_reaches_fit() -> None:
    seen: list[np.ndarray] = []

    class Recorder(Memoriser):
        def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> Recorder:
            seen.append(np.asarray(sample_weight))
            return super().fit(X, y)

    X, y = _data(30)
    w = np.arange(30, dtype=float)
    res = oof_predict_proba(Recorder(), X, y, n_splits=3, sample_weight=w, progress=False)
    assert sum(len(s) for s in seen[:3]) == 2 * 30 and len(seen[3]) == 30
    held_out = np.flatnonzero(res.folds == 0)
    assert not set(held_out.tolist()) & set(seen[0].astype(int).tolist())


def test_cache_key_changes_when_an_image_file_is_replaced(tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression

    from prodcat.oof import oof_cache_key

    img = tmp_path / "a.jpg"
    img.write_bytes(b"first image bytes")
    X = pd.DataFrame({"title": ["t1", "t2"], "image": [str(img), str(tmp_path / "missing.jpg")]})
    y = np.array(["a", "b"])
    est = LogisticRegression()
    before = oof_cache_key(est, X, y, None, 2, 0)
    assert oof_cache_key(est, X, y, None, 2, 0) == before
    img.write_bytes(b"another, longer image at the same path")
    assert oof_cache_key(est, X, y, None, 2, 0) != before


def test_cache_key_changes_when_a_second_photo_is_replaced(tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression

    from prodcat.oof import oof_cache_key

    first, second = tmp_path / "a.jpg", tmp_path / "b.jpg"
    first.write_bytes(b"front")
    second.write_bytes(b"back")
    X = pd.DataFrame({"image": [str(first), None], "images": [(str(first), str(second)), ()]})
    y = np.array(["a", "b"])
    before = oof_cache_key(LogisticRegression(), X, y, None, 2, 0)
    second.write_bytes(b"another, longer back photo")
    assert oof_cache_key(LogisticRegression(), X, y, None, 2, 0) != before


class RecordingMemoriser(Memoriser):
    """A :class:`Memoriser` that writes the id of the process fitting it into ``record_dir``."""

    def __init__(self, record_dir: str = "") -> None:
        self.record_dir = record_dir

    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> RecordingMemoriser:
        (Path(self.record_dir) / f"{os.getpid()}-{X['id'].iloc[0]}").touch()
        return super().fit(X, y, sample_weight)  # type: ignore[return-value]


class ParallelMemoriser(RecordingMemoriser):
    parallel_folds = True


def test_folds_fit_in_worker_processes_only_for_estimators_that_allow_it(tmp_path: Path) -> None:
    X, y = _data()
    X["title"] = [f"t{i}" for i in range(len(X))]
    results, fitters = {}, {}
    for cls, n_jobs in ((ParallelMemoriser, 1), (ParallelMemoriser, 2), (RecordingMemoriser, 2)):
        record = tmp_path / f"{cls.__name__}-{n_jobs}"
        record.mkdir()
        res = oof_predict_proba(
            cls(str(record)), X, y, n_splits=4, progress=False, refit=False, n_jobs=n_jobs
        )
        results[cls, n_jobs] = res.proba
        fitters[cls, n_jobs] = {int(p.name.split("-")[0]) for p in record.iterdir()}
    assert fitters[ParallelMemoriser, 1] == {os.getpid()} == fitters[RecordingMemoriser, 2]
    assert os.getpid() not in fitters[ParallelMemoriser, 2]  # the folds ran in worker processes
    np.testing.assert_array_equal(results[ParallelMemoriser, 1], results[ParallelMemoriser, 2])
    np.testing.assert_array_equal(results[ParallelMemoriser, 1], results[RecordingMemoriser, 2])


def test_tfidf_out_of_fold_probabilities_do_not_depend_on_the_worker_count() -> None:
    from prodcat.registry import create

    X, y = _data(n=90)
    X["title"] = [f"{label} item{i % 7} brand{i % 5}" for i, label in enumerate(y)]
    X["description"] = ""
    est = create("text-model", "tfidf", max_iter=50)
    one = oof_predict_proba(est, X, y, n_splits=3, progress=False, refit=False, n_jobs=1)
    two = oof_predict_proba(est, X, y, n_splits=3, progress=False, refit=False, n_jobs=2)
    np.testing.assert_array_equal(one.proba, two.proba)
