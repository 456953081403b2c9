"""Seeded stratified splits: the paper's 9:1 holdout and K-fold.

Classes too small to stratify are handled rather than refused: a class with a single member always stays on the
training side, and K is checked against the smallest class with a message naming it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split


def holdout_split(
    labels: Sequence[object] | np.ndarray, *, test_size: float | int = 0.1, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation split. Returns ``(train_idx, val_idx)`` as sorted int arrays.

    ``test_size``: a fraction of the rows (``0.1``) or, as in scikit-learn, a row count (``12``).

    Singleton classes cannot be stratified; they are put in the training part. On a small catalog the
    validation part is grown to one row per (non-singleton) class when ``test_size`` would give fewer rows than
    classes; ``ValueError`` says so when even that leaves too few training rows.
    """
    y = np.asarray(labels, dtype=object)
    idx = np.arange(len(y))
    values, counts = np.unique(y.astype(str), return_counts=True)
    singletons = np.isin(y.astype(str), values[counts < 2])
    n, n_classes = int((~singletons).sum()), int((counts >= 2).sum())
    wanted = int(test_size) if isinstance(test_size, int) or test_size >= 1 else math.ceil(test_size * n)
    n_val = max(wanted, n_classes)
    if n - n_val < n_classes:
        raise ValueError(
            f"cannot hold out {n_val} validation rows (test_size={test_size}, {n_classes} classes with 2+ "
            f"products) from {n} products and keep one per class for training; lower the validation fraction "
            "or add products"
        )
    train_idx, val_idx = train_test_split(
        idx[~singletons], test_size=n_val, random_state=seed, stratify=y[~singletons].astype(str)
    )
    return np.sort(np.concatenate([train_idx, idx[singletons]])), np.sort(val_idx)


def smallest_class(labels: Sequence[object] | np.ndarray) -> tuple[str, int]:
    """The rarest label (as a string) and its count; the limit on any stratified K-fold of ``labels``."""
    values, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
    i = int(counts.argmin())
    return str(values[i]), int(counts[i])


def kfold_indices(
    labels: Sequence[object] | np.ndarray, *, n_splits: int = 5, seed: int = 42, strict: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(train_idx, test_idx)`` for a seeded stratified K-fold.

    With ``strict`` (default), raises ``ValueError`` naming the smallest class when it has fewer than
    ``n_splits`` members. ``strict=False`` accepts such classes (they are missing from some test folds), which
    suits internal folds such as a fuser's own model selection; at least ``n_splits`` rows are still needed.
    """
    y = np.asarray(labels).astype(str)
    small, count = smallest_class(y)
    if strict and count < n_splits:
        raise ValueError(
            f"class {small!r} has {count} product(s), fewer than n_splits={n_splits}; "
            "lower the number of folds or drop that class"
        )
    if len(y) < n_splits:
        raise ValueError(f"{len(y)} samples cannot be split into n_splits={n_splits} folds")
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(skf.split(np.zeros(len(y)), y))
    yield from splits
