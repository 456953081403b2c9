"""Out-of-fold class probabilities for any sklearn-style classifier.

Every row's probabilities come from a model that never saw that row; a final model is then refit on all rows.
These OOF probabilities feed label-noise detection and the fusion stage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from tqdm.auto import tqdm

from prodcat.probability import align_proba
from prodcat.splits import kfold_indices

# Estimator parameters that never change predictions; left out of the OOF cache key.
_NEUTRAL_PARAMS = frozenset({"cache_dir", "progress", "batch_size", "threads", "device"})


@dataclass
class OOFResult:
    """``proba`` (n, C) out-of-fold probabilities in ``classes`` order; ``folds`` (n,) fold id of each row;
    ``estimator`` the model refit on all rows (None when ``refit=False``)."""

    proba: np.ndarray
    classes: np.ndarray
    folds: np.ndarray
    estimator: Any | None


def _take(X: Any, idx: np.ndarray) -> Any:
    if isinstance(X, pd.DataFrame | pd.Series):
        return X.iloc[idx]
    return X[idx]


def oof_predict_proba(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    n_splits: int = 5,
    seed: int = 42,
    refit: bool = True,
    sample_weight: np.ndarray | None = None,
    progress: bool = True,
    desc: str = "folds",
    cache_dir: str | os.PathLike[str] | None = None,
    n_jobs: int | None = 1,
) -> OOFResult:
    """K-fold (stratified, seeded) out-of-fold probabilities of a clone of ``estimator``.

    Parameters
    ----------
    X : DataFrame or array, n rows; y : (n,) labels.
    sample_weight : optional (n,) training weights (e.g. from label-noise down-weighting), used in fit only.
    cache_dir : when set (``"auto"`` = the default cache folder), the OOF probabilities are stored under a hash of
        the estimator's class and parameters, ``X``, ``y``, ``sample_weight``, ``n_splits``, ``seed`` and the
        prodcat version, and reused by an identical call (the refit, when asked, still runs).
    n_jobs : worker processes fitting the folds at once (None: one per available CPU, at most ``n_splits``), for
        estimators whose class sets ``parallel_folds = True``; others fit their folds one after the other. The
        probabilities do not depend on it.

    Returns
    -------
    OOFResult with ``proba`` (n, C), C = number of distinct labels in ``y`` (sorted).
    """
    y = np.asarray(y)
    classes = np.unique(y)
    key = None if cache_dir is None else oof_cache_key(estimator, X, y, sample_weight, n_splits, seed)
    if key is not None:
        from prodcat.cache import ArrayStore

        store = ArrayStore(cache_dir, "oof")
        hit = store.load(key, ["proba", "folds"])
        if hit is not None:
            final = _refit(estimator, X, y, sample_weight) if refit else None
            return OOFResult(proba=hit["proba"], classes=classes, folds=hit["folds"], estimator=final)
    proba = np.zeros((len(y), len(classes)), dtype=np.float64)
    folds = np.full(len(y), -1, dtype=np.int64)
    splits = list(kfold_indices(y, n_splits=n_splits, seed=seed))
    fits = fold_parallel(estimator, n_jobs, len(splits))(
        delayed(_fold_proba)(estimator, X, y, tr, te, sample_weight)
        for tr, te in tqdm(splits, desc=desc, disable=not progress, leave=False)
    )
    for k, ((_, te), (model_classes, fold_proba)) in enumerate(zip(splits, fits, strict=True)):
        proba[te] = align_proba(fold_proba, model_classes, classes)
        folds[te] = k
    if key is not None:
        store.save(key, proba=proba, folds=folds)
    final = _refit(estimator, X, y, sample_weight) if refit else None
    return OOFResult(proba=proba, classes=classes, folds=folds, estimator=final)


def fold_parallel(estimator: Any, n_jobs: int | None, n_splits: int) -> Parallel:
    """A joblib ``Parallel`` over the folds: ``n_jobs`` processes (None: one per available CPU), at most one per
    fold, for an estimator whose class allows it (``parallel_folds = True``: its folds share no work, e.g. tfidf);
    one process otherwise (an embedding model's first fold fills the embedding cache the other folds read)."""
    from prodcat.threads import available_cpus

    jobs = available_cpus() if n_jobs is None else n_jobs
    if not getattr(estimator, "parallel_folds", False):
        jobs = 1
    return Parallel(n_jobs=max(1, min(jobs, n_splits)))


def _fold_proba(
    estimator: Any, X: Any, y: np.ndarray, tr: np.ndarray, te: np.ndarray, sample_weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(classes_, predict_proba of rows te)`` of a clone of ``estimator`` fit on rows ``tr``."""
    model = clone(estimator)
    fit_kw = {} if sample_weight is None else {"sample_weight": sample_weight[tr]}
    model.fit(_take(X, tr), y[tr], **fit_kw)
    return model.classes_, model.predict_proba(_take(X, te))


def _refit(estimator: Any, X: Any, y: np.ndarray, sample_weight: np.ndarray | None) -> Any:
    final = clone(estimator)
    fit_kw = {} if sample_weight is None else {"sample_weight": sample_weight}
    return final.fit(X, y, **fit_kw)


def _file_signatures(paths: pd.Series) -> np.ndarray:
    """(n, 2) int64 ``(mtime_ns, size)`` of each path (``-1`` for a missing file, ``0`` for a non-path item)."""
    out = np.zeros((len(paths), 2), dtype=np.int64)
    for i, p in enumerate(paths):
        if isinstance(p, str | os.PathLike) and str(p):
            try:
                st = os.stat(p)
            except OSError:
                out[i] = -1
            else:
                out[i] = (st.st_mtime_ns, st.st_size)
    return out


def oof_cache_key(
    estimator: Any, X: Any, y: np.ndarray, sample_weight: np.ndarray | None, n_splits: int, seed: int
) -> str:
    """Hex digest identifying one OOF computation (estimator class + parameters, data, labels, folds, version)."""
    import joblib

    import prodcat

    params = {
        k: v for k, v in estimator.get_params(deep=True).items() if k.split("__")[-1] not in _NEUTRAL_PARAMS
    }
    if isinstance(X, pd.DataFrame | pd.Series):
        data: Any = pd.util.hash_pandas_object(X, index=False).to_numpy()
        data = (data, tuple(map(str, X.columns)) if isinstance(X, pd.DataFrame) else X.name)
        if isinstance(X, pd.DataFrame) and "image" in X:
            # An image replaced under the same path must not reuse results computed from the old file.
            data = (*data, _file_signatures(X["image"]))
        if isinstance(X, pd.DataFrame) and "images" in X:  # several photos per product (prodcat.photos)
            data = (*data, _file_signatures(pd.Series([p for row in X["images"] for p in row], dtype=object)))
    else:
        data = X
    parts = (
        type(estimator).__qualname__,
        params,
        data,
        y.astype(str),
        sample_weight,
        n_splits,
        seed,
        prodcat.__version__,
    )
    return str(joblib.hash(parts))
