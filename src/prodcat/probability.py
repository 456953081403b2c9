"""The one check that an array holds class probabilities, shared by fusion, model outputs and the label audit."""

from __future__ import annotations

from typing import Any

import numpy as np

#: How far a value may leave [0, 1] and a row sum may leave 1. float32 softmax outputs drift ~1e-7 and
#: probabilities saved with 4 decimals ~1e-4; logits and unnormalised scores are far beyond it.
PROBA_ATOL = 1e-3


def check_probabilities(
    P: Any, *, name: str = "input", n_rows: int | None = None, renormalise: bool = False
) -> np.ndarray:
    """``P`` as a float64 ``(n, C)`` array after checking that it holds class probabilities.

    Every value must be finite and within [0, 1] and every row must sum to 1, both up to :data:`PROBA_ATOL`.
    ``n_rows`` (optional) is the expected number of rows. With ``renormalise`` the rows are divided by their sums
    (removing the allowed drift); otherwise the values are returned unchanged.

    Raises ``ValueError`` naming ``name``, the first offending row and what to do (a softmax for values that look
    like logits or scores, renormalising for rows that do not sum to 1).
    """
    p = np.asarray(P, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (n, C) probability array, got shape {p.shape}")
    if n_rows is not None and p.shape[0] != n_rows:
        raise ValueError(f"{name} has {p.shape[0]} rows for {n_rows} labels")
    if p.size == 0:
        return p
    finite = np.isfinite(p).all(axis=1)
    if not finite.all():
        raise ValueError(f"{name}: contains NaN or infinite values (row {int(np.argmin(finite))})")
    sums = p.sum(axis=1)
    out_of_range = ((p < -PROBA_ATOL) | (p > 1 + PROBA_ATOL)).any(axis=1)
    bad = out_of_range | (np.abs(sums - 1) > PROBA_ATOL)
    if bad.any():
        row = int(np.argmax(bad))
        hint = (
            "these look like logits or scores: apply a softmax first"
            if out_of_range.any()
            else "renormalise the rows (or apply a softmax to scores)"
        )
        raise ValueError(
            f"{name}: not probabilities (min {p.min():.4g}, max {p.max():.4g}; row {row} sums to "
            f"{sums[row]:.4g}): values must be non-negative and at most 1, and rows must sum to 1; {hint}"
        )
    return p / sums[:, None] if renormalise else p


def clipped_log(P: Any, low: float, high: float | None = None) -> np.ndarray:
    """``log(clip(P, low, high))`` as a new float64 array, computed in place: one array of ``P``'s size is
    allocated (``np.log(np.clip(P, ...))`` allocates two), which counts at thousands of classes (issue 16)."""
    out = np.array(P, dtype=np.float64)
    np.maximum(out, low, out=out)
    if high is not None:
        np.minimum(out, high, out=out)
    return np.log(out, out=out)


def top_k_indices(P: np.ndarray, k: int) -> np.ndarray:
    """(n, k) column indices of each row's ``k`` largest values, largest first, ties in column order: the same
    as ``np.argsort(-P, axis=1, kind="stable")[:, :k]``, in O(C + k log k) per row instead of O(C log C)
    (a partition, then a sort of the k; a row whose k-th value is tied across the partition is sorted whole)."""
    P = np.asarray(P)
    C = P.shape[1]
    k = max(0, min(k, C))
    if k == 0 or k == C:
        return np.argsort(-P, axis=1, kind="stable")[:, :k]
    part = np.argpartition(-P, k - 1, axis=1)[:, :k]  # the k largest, in no order
    vals = np.take_along_axis(P, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)  # by value, then column
    top = np.take_along_axis(part, order, axis=1)
    kth = vals.min(axis=1)
    # ties at the k-th value split by the partition: the stable order keeps the lowest columns of them
    spill = (P == kth[:, None]).sum(axis=1) > (vals == kth[:, None]).sum(axis=1)
    if spill.any():
        top[spill] = np.argsort(-P[spill], axis=1, kind="stable")[:, :k]
    return top


def align_proba(proba: np.ndarray, model_classes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Re-order/expand ``proba`` (n, len(model_classes)) into ``classes`` order, zeros for absent classes: a new
    float64 array. ``KeyError`` names a model class that is not among ``classes``.

    Vectorised (one sort and one column scatter; a copy when the classes already match): it runs for every model,
    fold member and fuser on every prediction call, at thousands of classes too."""
    model_classes, classes = np.asarray(model_classes), np.asarray(classes)
    if model_classes.shape == classes.shape and np.array_equal(model_classes, classes):
        return np.array(proba, dtype=np.float64)
    try:
        order = np.argsort(classes, kind="stable")
        at = np.searchsorted(classes, model_classes, sorter=order)
        found = at < len(classes)
        found[found] = classes[order[at[found]]] == model_classes[found]
        cols = order[np.minimum(at, len(classes) - 1)]
    except TypeError:  # labels that do not sort together (object arrays of mixed types)
        pos = {c: i for i, c in enumerate(classes.tolist())}
        found = np.array([c in pos for c in model_classes.tolist()], dtype=bool)
        cols = np.array([pos.get(c, 0) for c in model_classes.tolist()], dtype=np.intp)
    if not found.all():
        raise KeyError(model_classes[np.argmin(found)])
    out = np.zeros((proba.shape[0], len(classes)), dtype=np.float64)
    out[:, cols] = proba
    return out
