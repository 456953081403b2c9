"""Several photos per product: each photo is embedded once (through the embedding cache) and the photos of a
product are pooled.

A catalog row holds one photo (a path, bytes or a ``PIL.Image`` in the ``image`` column) or, when the catalog
has several photos per product (a ``;``-joined list or ``--image-columns``, see :mod:`prodcat.catalog`), a tuple
of them in the ``images`` column; ``image`` then holds the first. Missing photos are skipped; a product with no
usable photo is image-missing (the class prior, :mod:`prodcat.missing`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from prodcat.cache import is_missing

PHOTOS_COLUMN = "images"  # the catalog column of photo tuples (present only for multi-photo catalogs)
PHOTO_SEPARATOR = ";"  # between the photos of one cell of an image column
POOLINGS = ("mean", "max")


def split_image_columns(wanted: str | Sequence[str] | None, columns: Sequence[str]) -> list[str] | None:
    """The image columns a reader was asked for: a list, a column name, or comma-separated names
    (``--image-columns front,back``; a name that is itself a column wins); None when not asked."""
    if wanted is None:
        return None
    if isinstance(wanted, str):
        return (
            [wanted]
            if wanted in columns or "," not in wanted
            else [c.strip() for c in wanted.split(",") if c.strip()]
        )
    return list(wanted)


def cell_photos(value: Any) -> list[str]:
    """The photo references of one image-column cell: ``"a.jpg;b.jpg"`` -> ``["a.jpg", "b.jpg"]`` (blanks dropped);
    a non-string (NaN, None) has none."""
    if not isinstance(value, str):
        return []
    return [p.strip() for p in value.split(PHOTO_SEPARATOR) if p.strip()]


def catalog_photos(raw: pd.DataFrame, columns: Sequence[str]) -> tuple[list[list[str]], bool]:
    """Per row, the photo references of ``columns`` of ``raw`` in column order, and whether any row names more than
    one (a multi-photo catalog)."""
    per_column = [[cell_photos(v) for v in raw[c]] for c in columns]
    rows = [[p for cells in row for p in cells] for row in zip(*per_column, strict=True)]
    return rows, any(len(r) > 1 for r in rows)


def _present(item: Any) -> bool:
    return not is_missing(item)


def row_photos(value: Any) -> list[Any]:
    """The photos of one row: a sequence (list / tuple / array) of sources, or one source; missing ones dropped."""
    if isinstance(value, list | tuple | np.ndarray):
        return [v for v in value if _present(v)]
    return [value] if _present(value) else []


def photo_lists(X: Any, column: str = "image") -> list[list[Any]]:
    """Per row, the list of its photos (possibly empty).

    ``X`` is a catalog DataFrame (the ``images`` tuples when ``column`` is ``"image"`` and the catalog has them,
    else ``column``) or a bare sequence with one item (a source or a sequence of sources) per row.
    """
    if isinstance(X, pd.DataFrame):
        if column == "image" and PHOTOS_COLUMN in X:
            values = X[PHOTOS_COLUMN].tolist()
        elif column in X:
            values = X[column].tolist()
        else:
            raise KeyError(
                f"column {column!r} not in the catalog (columns: {', '.join(map(str, X.columns))})"
            )
    else:
        values = list(X)
    return [row_photos(v) for v in values]


def flatten(lists: Sequence[Sequence[Any]]) -> tuple[list[Any], np.ndarray]:
    """``(photos, owner)``: every photo once, in row order, and ``(m,)`` int64 the row each one belongs to."""
    photos = [p for row in lists for p in row]
    owner = np.repeat(np.arange(len(lists), dtype=np.int64), [len(row) for row in lists])
    return photos, owner


def pool(
    values: np.ndarray, ok: np.ndarray, owner: np.ndarray, n: int, how: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Pool per-photo rows ``values`` ``(m, d)`` into per-product rows ``(n, d)`` over the photos with ``ok``.

    ``how="mean"`` averages, ``"max"`` takes the element-wise maximum. Returns ``(pooled (n, d) float32,
    available (n,) bool)``; a product without a usable photo gets a zero row and ``available=False``.
    """
    if how not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {how!r}")
    d = values.shape[1] if values.ndim == 2 else 0
    out = np.zeros((n, d), dtype=np.float32)
    counts = np.bincount(owner[ok], minlength=n)
    if how == "mean":
        np.add.at(out, owner[ok], values[ok])
        out /= np.maximum(counts, 1)[:, None]
    else:
        out[:] = -np.inf
        np.maximum.at(out, owner[ok], values[ok])
        out[counts == 0] = 0.0
    return out, counts > 0


def embed_photos(
    embed: Any, lists: Sequence[Sequence[Any]], *, how: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Embed each photo once with ``embed(photos) -> (vectors (m, d), ok (m,))`` and pool them per row.

    Returns ``(vectors (n, d) float32, available (n,) bool)``.
    """
    photos, owner = flatten(lists)
    vectors, ok = embed(photos)
    return pool(np.asarray(vectors, dtype=np.float32), np.asarray(ok, dtype=bool), owner, len(lists), how)
