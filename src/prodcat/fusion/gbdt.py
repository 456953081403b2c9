"""``gbdt``: gradient-boosted trees (scikit-learn ``HistGradientBoostingClassifier``) on the probabilities.

After fitting, the trees are exported to flat numpy arrays (feature, threshold, children, leaf value per node)
that a small numpy evaluator (:func:`predict_raw`) walks, in the fitting session and after loading alike (one
prediction path). The export is checked against scikit-learn's public ``predict_proba`` at fit time, so a change
in scikit-learn internals fails loudly at training, never silently at prediction.

Why not keep the scikit-learn object and call ``predict_proba``: scikit-learn has no public API to read a
fitted ``HistGradientBoostingClassifier``'s trees (its ``TreePredictor`` objects are private by design,
scikit-learn PR #12807 and issue #29731), and the public route costs far more where prodcat predicts: one row
(a served request) took 15 ms through ``predict_proba`` with one OpenMP thread and 45 ms with the default threads
on a busy 2-core machine, against 0.1 ms here; storing the object needs skops (5.9 MB, 2.5 s to load for a
Rakuten fuser) instead of 1-2 MB of arrays. Measured by ``benchmarks/bench_gbdt_predict.py``
(docs/bench/fusion.md). :func:`export_trees` is therefore the one place in prodcat that reads scikit-learn
private attributes (``_predictors``, ``_baseline_prediction``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit, softmax

from prodcat.fusion.decision import DecisionFusion
from prodcat.params import Interval

#: OpenMP threads of the boosting. One: the fusion inputs are small (thousands of rows, a few hundred columns), so
#: each split's parallel region is short and its threads wait on one another; on a machine busy with other work
#: (or with the pipeline's own BLAS and encoder threads) two threads made each fit ~10x slower in wall time than
#: one (docs/bench/speed.md, "Training"). The trees are the same with any thread count.
BOOSTING_THREADS = 1

_TREE_FIELDS = ("feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf", "value")


def export_trees(hgb: Any) -> dict[str, np.ndarray]:
    """Flatten a fitted ``HistGradientBoostingClassifier`` (numerical features only) into arrays.

    Returns ``feature`` (int32), ``threshold`` (float64), ``missing_left`` (bool), ``left`` / ``right`` (int64,
    global node ids), ``is_leaf`` (bool), ``value`` (float64), one entry per node of all trees; ``roots``
    (T,) the root node of each tree in boosting order (iteration-major, then class); ``baseline`` (K,).
    """
    nodes, roots, offset = [], [], 0
    for iteration in hgb._predictors:
        for pred in iteration:
            nd = pred.nodes
            if nd["is_categorical"].any():
                raise ValueError("categorical splits are not supported by the tree export")
            cols = {f: np.asarray(nd[f]) for f in _TREE_FIELDS}
            cols["left"] = cols["left"].astype(np.int64) + offset
            cols["right"] = cols["right"].astype(np.int64) + offset
            nodes.append(cols)
            roots.append(offset)
            offset += len(nd)
    cat = {f: np.concatenate([c[f] for c in nodes]) for f in _TREE_FIELDS}
    return {
        "feature": cat["feature_idx"].astype(np.int32),
        "threshold": cat["num_threshold"].astype(np.float64),
        "missing_left": cat["missing_go_to_left"].astype(bool),
        "left": cat["left"],
        "right": cat["right"],
        "is_leaf": cat["is_leaf"].astype(bool),
        "value": cat["value"].astype(np.float64),
        "roots": np.asarray(roots, dtype=np.int64),
        "baseline": np.asarray(hgb._baseline_prediction, dtype=np.float64).ravel(),
    }


#: (row, tree) walks advanced together: bounds the evaluator's working memory (about 40 bytes a walk, ~5 MB)
#: whatever the number of trees (iterations x classes: 2,420 in a 55-class fashion fuser), and small enough to
#: stay in the CPU caches (8,192 rows: peak 211 vs 353 MB and 0.88x the CPU of 1,024-row chunks, docs/bench/fusion.md).
_WALKS_PER_CHUNK = 1 << 17


def predict_raw(trees: dict[str, np.ndarray], X: np.ndarray, *, chunk: int | None = None) -> np.ndarray:
    """Raw scores (n, K) of exported trees on ``X`` (n, d): baseline + sum of leaf values of each class's trees.
    A row goes left when ``x <= threshold`` (NaN: by ``missing_left``), as in scikit-learn.

    All (row, tree) walks advance one level per step and only the walks not yet at a leaf are carried on, so
    the cost follows the actual path lengths, not the deepest tree (3x faster than stepping every walk).
    ``chunk`` rows are walked at a time; ``None`` picks it so that about 131k walks are in flight (the working
    memory stays flat in the number of trees: 1,024 rows at once took 130 MB with 2,420 trees).
    """
    K = len(trees["baseline"])
    roots = trees["roots"]
    T = len(roots)
    if chunk is None:
        chunk = max(1, min(1024, _WALKS_PER_CHUNK // max(T, 1)))
    is_leaf, feature, threshold = trees["is_leaf"], trees["feature"], trees["threshold"]
    left, right, missing_left = trees["left"], trees["right"], trees["missing_left"]
    out = np.empty((len(X), K))
    for start in range(0, len(X), chunk):
        xb = np.ascontiguousarray(X[start : start + chunk], dtype=np.float64)
        b, d = xb.shape
        flat, has_nan = xb.ravel(), bool(np.isnan(xb).any())
        pos = np.tile(roots, b)  # (b * T,) current node of each walk, row-major
        offset = np.repeat(np.arange(b, dtype=np.int64) * d, T)  # where each walk's row starts in ``flat``
        active = np.flatnonzero(~is_leaf[pos])
        while active.size:
            node = pos[active]
            x = flat[offset[active] + feature[node]]
            go_left = x <= threshold[node]
            if has_nan:
                go_left = np.where(np.isnan(x), missing_left[node], go_left)
            node = np.where(go_left, left[node], right[node])
            pos[active] = node
            active = active[~is_leaf[node]]
        # Trees are stored iteration-major, then class: tree t scores class t % K.
        out[start : start + b] = trees["value"][pos].reshape(b, T // K, K).sum(1) + trees["baseline"]
    return out


def _raw_to_proba(raw: np.ndarray) -> np.ndarray:
    if raw.shape[1] == 1:  # binary: one tree per iteration, sigmoid link
        p1 = expit(raw[:, 0])
        return np.column_stack([1 - p1, p1])
    return softmax(raw, axis=1)


class GBDTFusion(DecisionFusion):
    """Histogram gradient boosting on the concatenated probabilities (plus, by default, their per-class mean).

    Parameters
    ----------
    add_mean : also feed the C per-class means over the m models (trees split one feature at a time and find
        sums hard to express).
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization : boosting settings.
    early_stopping : hold out ``validation_fraction`` of the rows and stop after ``n_iter_no_change``
        iterations without improvement of the log-loss.
    seed : random state (validation split). classes, n_models, n_extra : block structure.
    """

    _constraints: ClassVar[dict[str, list[Any]]] = {
        **DecisionFusion._constraints,
        "add_mean": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "max_leaf_nodes": [Interval(Integral, 2, None, closed="left")],
        "min_samples_leaf": [Interval(Integral, 1, None, closed="left")],
        "l2_regularization": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "seed": [Integral],
    }

    def __init__(
        self,
        *,
        add_mean: bool = True,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 20,
        l2_regularization: float = 1.0,
        early_stopping: bool = True,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        seed: int = 0,
        classes: Sequence[Any] | None = None,
        n_models: int | None = None,
        n_extra: int = 0,
    ) -> None:
        self.add_mean = add_mean
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.seed = seed
        self.classes = classes
        self.n_models = n_models
        self.n_extra = n_extra

    def _features(self, X: np.ndarray) -> np.ndarray:
        return np.hstack([X, self._blocks(X).mean(1)]) if self.add_mean else X

    def adapt_to_labels(self, y: Any) -> list[str]:
        """Turn early stopping off when its stratified ``validation_fraction`` holdout of the training labels
        ``y`` cannot hold one row of every class (scikit-learn would refuse to split); returns the change in
        words (nothing when no change was needed)."""
        if not self.early_stopping or self._holdout_fits(y):
            return []
        y = np.asarray(y)
        n, n_classes = len(y), len(np.unique(y))
        n_val = math.ceil(self.validation_fraction * n)
        self.early_stopping = False
        return [
            f"{type(self).__name__}: early stopping off ({n} rows: a {self.validation_fraction:g} holdout of "
            f"{n_val} rows cannot hold each of {n_classes} classes)"
        ]

    def _holdout_fits(self, y: Any) -> bool:
        """Whether the stratified ``validation_fraction`` holdout of labels ``y`` can hold (and leave) one row of
        every class."""
        y = np.asarray(y)
        n, n_classes = len(y), len(np.unique(y))
        n_val = math.ceil(self.validation_fraction * n)
        return n_val >= n_classes and n - n_val >= n_classes

    def _fit(self, X: np.ndarray, codes: np.ndarray, sample_weight: np.ndarray | None) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier

        # Too few rows for the holdout: boost without early stopping (scikit-learn would refuse to split;
        # adapt_to_labels says so before a pipeline fits).
        if len(np.unique(codes)) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes in y, got one class")
        early_stopping = self.early_stopping and self._holdout_fits(codes)
        from threadpoolctl import threadpool_limits

        F = self._features(X)
        hgb = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            early_stopping=early_stopping,
            validation_fraction=self.validation_fraction if early_stopping else None,
            n_iter_no_change=self.n_iter_no_change,
            random_state=self.seed,
        )
        with threadpool_limits(limits=BOOSTING_THREADS, user_api="openmp"):
            hgb.fit(F, codes, sample_weight=sample_weight)
        self.trees_ = export_trees(hgb)
        self.seen_classes_ = np.asarray(hgb.classes_, dtype=np.int64)  # codes present in y
        self.n_iter_ = int(hgb.n_iter_)
        sample = F[:: max(1, len(F) // 256)]
        if not np.allclose(
            _raw_to_proba(predict_raw(self.trees_, sample)), hgb.predict_proba(sample), atol=1e-6
        ):
            raise RuntimeError(
                "tree export does not reproduce scikit-learn; this scikit-learn is unsupported"
            )

    def _proba(self, X: np.ndarray) -> np.ndarray:
        p = _raw_to_proba(predict_raw(self.trees_, self._features(X)))
        out = np.zeros((len(X), len(self.classes_)))
        out[:, self.seen_classes_] = p
        return out

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {f"trees.{k}": v for k, v in self.trees_.items()}
        arrays["seen_classes_"] = self.seen_classes_
        return {"n_iter_": self.n_iter_}, arrays

    def _restore_state(self, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.trees_ = {k[len("trees.") :]: v for k, v in arrays.items() if k.startswith("trees.")}
        self.seen_classes_ = np.asarray(arrays["seen_classes_"], dtype=np.int64)
        self.n_iter_ = int(info["n_iter_"])
