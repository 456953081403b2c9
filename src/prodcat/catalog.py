"""Catalog schema and readers: CSV / TSV / Parquet with a column mapping, and the Rakuten challenge layout.

Every reader returns the same in-memory schema (a DataFrame) plus a :class:`ReadReport`:

=============  ==========================================================================
``id``         str, unique
``title``      str, cleaned (may be "")
``description`` str, cleaned (may be "")
``image``      str absolute path, or None when the row names no image (several photos: the first usable one)
``images``     only for several photos per product (a ``;``-joined list in a cell, or several image columns,
               ``image_column="front,back"`` / ``--image-columns front,back``): per row the tuple of every
               photo's absolute path, in column order (image models embed each and pool them)
``label``      str, or None for unlabelled catalogs (the leaf of a taxonomy; a path label is
               rewritten canonically: parts stripped, joined with the separator)
...            passthrough columns, unchanged (taxonomy parent columns among them)
=============  ==========================================================================

A catalog may name its category tree (:mod:`prodcat.taxonomy`): parent columns, coarse to fine
(``taxonomy_columns``), or path labels split on ``path_separator``. The reader checks that the labels form a
tree (a leaf under two parents is an error naming the rows); :func:`catalog_taxonomy` builds the tree.

Fatal problems (missing columns, duplicate ids, empty labels, undecodable text) raise :class:`CatalogError` naming
the rows. Missing image files and empty texts are not fatal: they are counted in the report and the row is kept as a
product with a missing modality. A catalog may lack a modality altogether: no image column (text-only), or no text
column but an image column (image-only). ``id_column="none"`` numbers the rows instead of reading ids
(:data:`NO_ID`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from prodcat.clean import clean_text, join_texts
from prodcat.image.decode import is_url
from prodcat.photos import PHOTOS_COLUMN, catalog_photos, split_image_columns
from prodcat.taxonomy import Taxonomy, TaxonomyError, canonical_path

SCHEMA = ("id", "title", "description", "image", "label")
TITLE_CANDIDATES = ("title", "designation", "name", "product_name", "product_title")
DESCRIPTION_CANDIDATES = ("description", "desc", "product_description")
LABEL_CANDIDATES = ("label", "prdtypecode", "category", "class")
IMAGE_CANDIDATES = ("image", "image_path", "img", "image_file")
ID_CANDIDATES = ("id", "productid", "product_id", "sku")
RAKUTEN_FILES = {"train": ("X_train_update.csv", "Y_train_CVw08PX.csv"), "test": ("X_test_update.csv", None)}
MAX_ROWS_IN_MESSAGE = 5
#: ``id_column`` value (``--id-column none``) that numbers the rows (0, 1, ...) instead of reading an id column.
NO_ID = "none"


class CatalogError(ValueError):
    """A catalog cannot be read as given; the message names the file, column and rows at fault."""


@dataclass
class ReadReport:
    """What the reader found. Row lists hold ids (at most a few are printed, all are kept)."""

    source: str
    n_rows: int = 0
    missing_image: list[str] = field(default_factory=list)  # an image path is given, no file is there
    no_image: list[str] = field(default_factory=list)  # the row names no image
    image_urls: list[str] = field(default_factory=list)  # the row names a URL, which is not fetched
    empty_text: list[str] = field(default_factory=list)
    no_image_column: bool = False
    no_text_column: bool = False
    numbered_ids: bool = False  # ids are row numbers (``--id-column none``, or no id column found)
    warnings: list[str] = field(default_factory=list)
    # Rows left out (streamed reading only: a whole-file read raises instead): "row 12 (id=x): duplicate id".
    rejected: list[str] = field(default_factory=list)
    # Totals of the lists above when they keep only their first entries (a streamed catalog's report).
    totals: dict[str, int] = field(default_factory=dict)

    _LISTS: ClassVar[tuple[str, ...]] = ("missing_image", "no_image", "image_urls", "empty_text", "rejected")

    def total(self, name: str) -> int:
        """How many rows the list ``name`` counts (all of them, even where only the first are kept)."""
        return self.totals.get(name, len(getattr(self, name)))

    def absorb(self, other: ReadReport, *, keep: int = 1000) -> None:
        """Add a batch's report to this one; each list keeps its first ``keep`` entries, :meth:`total` counts
        all (so the report of a million-row stream stays small)."""
        self.n_rows += other.n_rows
        for name in self._LISTS:
            mine, theirs = getattr(self, name), getattr(other, name)
            self.totals[name] = self.total(name) + other.total(name)
            mine.extend(theirs[: max(0, keep - len(mine))])

    def summary_lines(self) -> list[str]:
        lines = [f"{_n(self.n_rows, 'product', 'products')} read from {self.source}"]
        if self.numbered_ids:
            lines.append("ids: row numbers (0, 1, ...)")
        if self.no_text_column:
            lines.append("no text column: image-only catalog")
        if self.no_image_column:
            lines.append("no image column: text-only catalog")
        else:
            lines += self._listed("missing_image", ("image file", "image files"), "missing (kept, text only)")
            lines += self._listed(
                "no_image", ("product names", "products name"), "no image (kept, text only)"
            )
            lines += self._listed(
                "image_urls",
                ("image URL", "image URLs"),
                "not fetched (kept, text only; prodcat reads local image files: download the images and put "
                "their paths in the image column)",
            )
        lines += self._listed("empty_text", ("product", "products"), "with empty text (kept, image only)")
        lines += self._listed("rejected", ("row", "rows"), "left out")
        return lines + self.warnings

    def _listed(self, name: str, noun: tuple[str, str], what: str) -> list[str]:
        """``["<total> <noun> <what>: <first few> ... (+k more)"]``, or ``[]`` when the list is empty."""
        items = getattr(self, name)
        total = self.total(name)
        return [f"{_n(total, *noun)} {what}: {_some(items, total)}"] if items else []


def _n(count: int, singular: str, plural: str) -> str:
    """``"1 product"`` / ``"3 products"``."""
    return f"{count} {singular if count == 1 else plural}"


def _some(ids: Sequence[object], total: int | None = None) -> str:
    """The first few of ``ids`` and how many more there are (of ``total``, default ``len(ids)``)."""
    total = len(ids) if total is None else total
    shown = ", ".join(str(i) for i in ids[:MAX_ROWS_IN_MESSAGE])
    shown_n = min(len(ids), MAX_ROWS_IN_MESSAGE)
    return shown + (f" ... (+{total - shown_n} more)" if total > shown_n else "")


def _decode_bytes(raw: bytes, path: Path, encoding: str | None) -> str:
    if encoding:
        try:
            return raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as e:
            raise CatalogError(f"{path}: cannot decode as {encoding}: {e}") from e
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CatalogError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "if the file uses another encoding pass it, e.g. --encoding cp1252"
        ) from e


def read_table(path: str | Path, *, encoding: str | None = None) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file into a DataFrame of strings (Parquet keeps its types)."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix not in (".csv", ".tsv", ".txt"):
        raise CatalogError(f"{path}: unsupported catalog format {suffix!r} (use .csv, .tsv or .parquet)")
    text = _decode_bytes(path.read_bytes(), path, encoding)
    sep = delimiter(path, text[:20000])
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.ParserError as e:
        raise CatalogError(f"{path}: malformed table: {e}") from e


def delimiter(path: Path, sample: str) -> str:
    """The field separator of a text table: tab for ``.tsv``, else sniffed from ``sample`` (its first
    characters) among ``, ; tab |``, comma when nothing stands out."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _pick(
    columns: Sequence[str], wanted: str | None, candidates: Sequence[str], role: str, path: Path
) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise CatalogError(
                f"{path}: {role} column {wanted!r} not found; columns are: {', '.join(map(str, columns))}"
            )
        return wanted
    lower = {str(c).lower(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def _row_names(df: pd.DataFrame, mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    return _some([f"row {r} (id={df['id'].iat[int(r)]})" for r in rows])


@dataclass(frozen=True)
class ColumnMap:
    """Which raw columns feed the schema: ``texts`` (the first is the title, the rest the description), ``label``,
    ``image`` and ``id`` (None: rows are numbered); None where the catalog has no such column. ``images``: every
    image column when several are named (their photos are pooled per product; ``image`` is the first)."""

    texts: tuple[str, ...]
    label: str | None
    image: str | None
    id: str | None
    images: tuple[str, ...] = ()

    def used(self) -> list[str]:
        """The raw columns read into the schema (the rest are passthrough)."""
        return [*self.texts, *(c for c in (self.label, self.image, self.id) if c), *self.images]


def map_columns(
    columns: Sequence[str],
    *,
    source: Path,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    image_column: str | Sequence[str] | None = None,
    id_column: str | None = None,
    require_label: bool = False,
) -> ColumnMap:
    """Pick the raw columns of the schema from a table's column names (given names, else common ones).

    Raises :class:`CatalogError` for a named column that is absent, a required label column that is not found,
    or a table with neither a text nor an image column."""
    cols = [str(c) for c in columns]
    if text_columns:
        texts = [_pick(cols, c, (), "text", source) for c in text_columns]
    else:
        title_col = _pick(cols, None, TITLE_CANDIDATES, "title", source)
        texts = [title_col, _pick(cols, None, DESCRIPTION_CANDIDATES, "description", source)]
    label_col = _pick(cols, label_column, LABEL_CANDIDATES, "label", source)
    if require_label and label_col is None:
        raise CatalogError(
            f"{source}: no label column found (looked for {', '.join(LABEL_CANDIDATES)}); use --label-column"
        )
    images = [str(_pick(cols, c, (), "image", source)) for c in split_image_columns(image_column, cols) or ()]
    image_col = images[0] if images else _pick(cols, None, IMAGE_CANDIDATES, "image", source)
    text_cols = tuple(t for t in texts if t is not None)
    if not text_cols and image_col is None:
        raise CatalogError(
            f"{source}: no title column found (looked for {', '.join(TITLE_CANDIDATES)}) and no image column "
            f"(looked for {', '.join(IMAGE_CANDIDATES)}); name them with --text-columns / --image-column; "
            f"columns are: {', '.join(cols)}"
        )
    numbered = id_column is not None and id_column.lower() == NO_ID
    id_col = None if numbered else _pick(cols, id_column, ID_CANDIDATES, "id", source)
    return ColumnMap(
        texts=text_cols,
        label=label_col,
        image=image_col,
        id=id_col,
        images=tuple(images) if len(images) > 1 else (),
    )


def to_schema(
    raw: pd.DataFrame, cmap: ColumnMap, *, base_dir: Path | None, row_numbers: np.ndarray | None = None
) -> pd.DataFrame:
    """The catalog schema of a raw table (or one batch of it): ids, cleaned texts, resolved image paths, string
    labels, then the passthrough columns. ``row_numbers`` (n,): each row's position in the whole catalog, the
    ids of a numbered catalog (default ``0..n-1``)."""
    raw = raw.reset_index(drop=True)
    df = pd.DataFrame(index=raw.index)
    if cmap.id:
        df["id"] = raw[cmap.id].astype(str).str.strip()
    else:
        df["id"] = (raw.index.to_numpy() if row_numbers is None else np.asarray(row_numbers)).astype(str)
    texts = list(cmap.texts)
    df["title"] = raw[texts[0]].map(clean_text) if texts else ""
    rest = [raw[c].map(clean_text) for c in texts[1:]]
    df["description"] = [join_texts(*parts) for parts in zip(*rest, strict=True)] if rest else ""
    lists = _photo_lists(raw, list(cmap.images) or [cmap.image], base_dir) if cmap.image else None
    if lists is not None:  # several photos per product: every one, and the first usable as ``image``
        df[PHOTOS_COLUMN] = lists
        df["image"] = [next((p for p in row if not is_url(p) and Path(p).is_file()), row[0] if row else None)
                       for row in lists]  # fmt: skip
    else:
        df["image"] = _resolve_images(raw[cmap.image], base_dir) if cmap.image else None
    df["label"] = raw[cmap.label].map(_label_str) if cmap.label else None
    used = set(cmap.used())
    for c in raw.columns:
        if c not in used and c not in SCHEMA and c != PHOTOS_COLUMN:
            df[c] = raw[c]
    return df


def normalise(
    raw: pd.DataFrame,
    *,
    source: Path,
    base_dir: Path | None,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    image_column: str | Sequence[str] | None = None,
    id_column: str | None = None,
    require_label: bool = False,
    taxonomy_columns: Sequence[str] | None = None,
    path_separator: str | None = None,
) -> tuple[pd.DataFrame, ReadReport]:
    """Map a raw table onto the catalog schema, clean texts, resolve image paths and validate (the taxonomy
    too, when the catalog is labelled and names one)."""
    raw = raw.set_axis([str(c) for c in raw.columns], axis=1)
    cmap = map_columns(
        list(raw.columns),
        source=source,
        text_columns=text_columns,
        label_column=label_column,
        image_column=image_column,
        id_column=id_column,
        require_label=require_label,
    )
    df = to_schema(raw, cmap, base_dir=base_dir)
    report = _validate(
        df, source, has_label=cmap.label is not None, no_image_column=cmap.image is None, id_col=cmap.id
    )
    report.no_text_column = not cmap.texts
    report.numbered_ids = cmap.id is None
    if cmap.label is not None and (taxonomy_columns or path_separator):
        if path_separator:
            df["label"] = _canonical_paths(df, path_separator, source)
        catalog_taxonomy(df, taxonomy_columns=taxonomy_columns, path_separator=path_separator, source=source)
    return df, report


def _canonical_paths(df: pd.DataFrame, separator: str, source: Path) -> pd.Series:
    paths = df["label"].map(lambda v: canonical_path(v, separator))
    bad = paths.isna().to_numpy()
    if bad.any():
        raise CatalogError(
            f"{source}: path label with an empty part (separator {separator!r}) in {_row_names(df, bad)}"
        )
    return paths


def catalog_taxonomy(
    df: pd.DataFrame,
    *,
    taxonomy_columns: Sequence[str] | None = None,
    path_separator: str | None = None,
    source: str | Path = "catalog",
) -> Taxonomy | None:
    """The category tree of a labelled catalog (parent columns or path labels), None when it names none.

    Raises :class:`CatalogError` naming the rows (position and id) when the labels do not form a tree.
    """
    if taxonomy_columns and path_separator:
        raise CatalogError(f"{source}: give taxonomy columns or a path separator, not both")
    try:
        if taxonomy_columns:
            missing = [c for c in taxonomy_columns if c not in df.columns]
            if missing:
                raise CatalogError(
                    f"{source}: taxonomy column(s) {missing} not found; columns are: {', '.join(map(str, df.columns))}"
                )
            return Taxonomy.from_columns(df, list(taxonomy_columns))
        if path_separator:
            return Taxonomy.from_paths(df["label"].tolist(), path_separator)
    except TaxonomyError as e:
        mask = np.zeros(len(df), dtype=bool)
        mask[e.rows] = True
        raise CatalogError(f"{source}: {e}: {_row_names(df, mask)}") from None
    return None


def _label_str(v: object) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    s = str(v).strip()
    if s.endswith(".0") and s[:-2].isdigit():  # Parquet/float-typed integer codes
        s = s[:-2]
    return s or None


def _photo_lists(
    raw: pd.DataFrame, columns: list[str], base_dir: Path | None
) -> list[tuple[str, ...]] | None:
    """Per row, every photo named by ``columns`` (``;`` lists split), resolved; None for a one-photo table."""
    photos, multi = catalog_photos(raw, columns)
    if not multi and len(columns) < 2:
        return None
    return [tuple(p for p in _resolve_images(pd.Series(row, dtype=object), base_dir) if p) for row in photos]


def _resolve_images(paths: pd.Series, base_dir: Path | None) -> list[str | None]:
    out: list[str | None] = []
    for p in paths:
        if not isinstance(p, str) or not p.strip():
            out.append(None)
            continue
        if is_url(p):  # kept as given (never fetched); reported by the reader
            out.append(p.strip())
            continue
        q = Path(p.strip()).expanduser()
        if not q.is_absolute() and base_dir is not None:
            q = base_dir / q
        out.append(str(q.resolve()))
    return out


def row_problems(df: pd.DataFrame, *, has_label: bool, keep_first: bool = False) -> dict[str, np.ndarray]:
    """Per problem, the ``(n,)`` mask of schema rows that cannot be used: ``"empty id"``, ``"duplicate id"``
    (every row of a repeated id, or with ``keep_first`` every row but the first) and, for a labelled catalog,
    ``"empty label"``."""
    ids = df["id"]
    problems = {
        "empty id": ((ids == "") | ids.isna() | (ids.str.lower() == "nan")).to_numpy(dtype=bool),
        "duplicate id": ids.duplicated(keep="first" if keep_first else False).to_numpy(dtype=bool),
    }
    if has_label:
        problems["empty label"] = df["label"].isna().to_numpy(dtype=bool)
    return problems


def modality_report(df: pd.DataFrame, report: ReadReport) -> ReadReport:
    """Fill ``report``'s per-row modality lists (empty texts; rows naming no image, an image URL, a missing image
    file) from the schema rows ``df``. Image files are checked for existence, not opened."""
    empty = (df["title"] == "") & (df["description"] == "")
    report.empty_text = df.loc[empty, "id"].tolist()
    if not report.no_image_column:
        named = np.array([isinstance(p, str) for p in df["image"]], dtype=bool)
        url = np.array([is_url(p) for p in df["image"]], dtype=bool)
        exists = np.array(
            [
                bool(n and not u and Path(p).is_file())
                for p, n, u in zip(df["image"], named, url, strict=True)
            ],
            dtype=bool,
        )
        report.no_image = df.loc[~named, "id"].tolist()
        report.image_urls = df.loc[url, "id"].tolist()
        report.missing_image = df.loc[named & ~url & ~exists, "id"].tolist()
    return report


def _validate(
    df: pd.DataFrame, source: Path, *, has_label: bool, no_image_column: bool, id_col: str | None
) -> ReadReport:
    # Ids identify products in predictions and audits, so unusable ones are refused rather than silently
    # replaced; --id-column none is the explicit way to number the rows instead.
    renumber = (
        f"; fix the ids, or pass --id-column none (id_column: none in the config) to number the rows "
        f"instead of reading the {id_col!r} column"
    )
    problems = row_problems(df, has_label=has_label)
    empty_id = problems["empty id"]
    if empty_id.any():
        raise CatalogError(
            f"{source}: empty id in {int(empty_id.sum())} rows: {_row_names(df, empty_id)}{renumber}"
        )
    if problems["duplicate id"].any():
        raise CatalogError(f"{source}: duplicate ids: {_row_names(df, problems['duplicate id'])}{renumber}")
    no_label = problems.get("empty label")
    if no_label is not None and no_label.any():
        raise CatalogError(f"{source}: empty label in {int(no_label.sum())} rows: {_row_names(df, no_label)}")
    return modality_report(
        df, ReadReport(source=str(source), n_rows=len(df), no_image_column=no_image_column)
    )


def read_catalog(
    path: str | Path,
    *,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    image_column: str | Sequence[str] | None = None,
    id_column: str | None = None,
    encoding: str | None = None,
    split: str = "train",
    require_label: bool = False,
    taxonomy_columns: Sequence[str] | None = None,
    path_separator: str | None = None,
) -> tuple[pd.DataFrame, ReadReport]:
    """Read a catalog file (CSV/TSV/Parquet) or a Rakuten challenge folder into the catalog schema.

    Image paths relative to the catalog file's folder are resolved; a cell may name several photos joined with
    ``;``, and ``image_column`` may name several columns (a list or ``"front,back"``). ``text_columns``: the first
    is the title, the
    others are joined (" - ") into the description. Without a mapping, common column names are recognised.
    ``taxonomy_columns`` (parent columns, coarse to fine) or ``path_separator`` (path labels) name the category
    tree; it is checked when the catalog is labelled.
    """
    path = Path(path)
    if path.is_dir():
        numbered = id_column is not None and id_column.lower() == NO_ID
        return read_rakuten(
            path, split=split, encoding=encoding, require_label=require_label, number_rows=numbered
        )
    raw = read_table(path, encoding=encoding)
    return normalise(
        raw,
        source=path,
        base_dir=path.parent.resolve(),
        text_columns=text_columns,
        label_column=label_column,
        image_column=image_column,
        id_column=id_column,
        require_label=require_label,
        taxonomy_columns=taxonomy_columns,
        path_separator=path_separator,
    )


def read_rakuten(
    folder: str | Path,
    *,
    split: str = "train",
    encoding: str | None = None,
    require_label: bool = False,
    number_rows: bool = False,
) -> tuple[pd.DataFrame, ReadReport]:
    """Read the SIGIR 2020 eCom / Rakuten challenge layout as shipped.

    ``X_<split>_update.csv`` (``,designation,description,productid,imageid``), for train also
    ``Y_train_CVw08PX.csv`` (``,prdtypecode``), images at
    ``images/image_<split>/image_<imageid>_product_<productid>.jpg``. Rows are joined on the unnamed index column.
    Ids are the ``productid`` column, or row numbers with ``number_rows``.
    """
    folder = Path(folder)
    if split not in RAKUTEN_FILES:
        raise CatalogError(f"split must be one of {sorted(RAKUTEN_FILES)}, not {split!r}")
    x_name, y_name = RAKUTEN_FILES[split]
    if not (folder / x_name).is_file():
        raise CatalogError(f"{folder}: not a Rakuten challenge folder (no {x_name})")
    x = read_table(folder / x_name, encoding=encoding)
    missing = [c for c in ("designation", "description", "productid", "imageid") if c not in x.columns]
    if missing:
        raise CatalogError(f"{folder / x_name}: missing columns {missing}")
    x = x.rename(columns={x.columns[0]: "row"})
    if y_name and (folder / y_name).is_file():
        y = read_table(folder / y_name, encoding=encoding)
        y = y.rename(columns={y.columns[0]: "row"})
        if "prdtypecode" not in y.columns:
            raise CatalogError(f"{folder / y_name}: missing column 'prdtypecode'")
        unmatched = ~x["row"].isin(y["row"])
        if unmatched.any():
            rows = x.loc[unmatched, "row"].tolist()
            raise CatalogError(f"{folder / y_name}: no label for X rows {_some(rows)}")
        x = x.merge(y[["row", "prdtypecode"]], on="row", how="left", validate="one_to_one")
    elif require_label:
        raise CatalogError(f"{folder}: labels file {y_name} not found")
    x["image"] = [
        f"images/image_{split}/image_{i}_product_{p}.jpg"
        for i, p in zip(x["imageid"], x["productid"], strict=True)
    ]
    return normalise(
        x,
        source=folder,
        base_dir=folder.resolve(),
        text_columns=["designation", "description"],
        label_column="prdtypecode" if "prdtypecode" in x.columns else None,
        image_column="image",
        id_column=NO_ID if number_rows else "productid",
        require_label=require_label,
    )


def usable_rows(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per modality, the ``(n,)`` mask of rows a model of that modality can learn from: ``"text"`` (a non-empty
    title or description) and ``"image"`` (a local image file that exists; URLs and missing files are not). Cheap:
    image files are not opened."""
    text = np.array([bool(t) or bool(d) for t, d in zip(df["title"], df["description"], strict=True)])
    image = np.array(
        [isinstance(p, str) and not is_url(p) and Path(p).is_file() for p in df["image"]], dtype=bool
    )
    return {"text": text.astype(bool).reshape(len(df)), "image": image.reshape(len(df))}


def product_text(df: pd.DataFrame) -> pd.Series:
    """Title and description joined, the text most models read."""
    return pd.Series(
        [join_texts(t, d) for t, d in zip(df["title"], df["description"], strict=True)],
        index=df.index,
        name="text",
    )


def summarize(df: pd.DataFrame, *, decode: bool = False, progress: bool = True) -> dict[str, object]:
    """Summary of a catalog: rows, class counts, missing texts/images and image size statistics.

    Image headers are probed (cheap); with ``decode=True`` every image is fully decoded, which also finds
    truncated or corrupt pixel data. Unreadable images are listed with their reason (keyed by product id, and
    ``"<id> (photo k)"`` in a catalog with several photos per product, where every photo is checked).
    """
    from tqdm.auto import tqdm

    from prodcat.image.decode import decode_image, probe_image
    from prodcat.photos import PHOTOS_COLUMN, photo_lists

    multi = PHOTOS_COLUMN in df
    lists = photo_lists(df)
    sizes: list[tuple[int, int]] = []
    bad: dict[str, str] = {}
    without = 0
    for pid, photos in tqdm(
        zip(df["id"], lists, strict=True), total=len(df), desc="images", disable=not progress, leave=False
    ):
        if not photos:  # the row names no image
            bad[pid] = "no image given"
            without += 1
            continue
        readable = 0
        for k, path in enumerate(photos, start=1):
            if decode:
                d = decode_image(path)
                ok, size, reason = d.image is not None, d.size, d.reason
            else:
                ok, size, reason = probe_image(path)
            if ok and size:
                sizes.append(size)
                readable += 1
            else:
                bad[f"{pid} (photo {k})" if multi else pid] = reason or "unreadable"
        without += readable == 0
    labels = df["label"].dropna()
    arr = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    stats = {
        f"{q}_{dim}": int(np.percentile(arr[:, k], p)) if len(arr) else None
        for q, p in (("min", 0), ("median", 50), ("max", 100))
        for k, dim in enumerate(("width", "height"))
    }
    return {
        "rows": len(df),
        "classes": int(labels.nunique()),
        "labelled": len(labels),
        "class_counts": labels.value_counts().to_dict(),
        "empty_title": int((df["title"] == "").sum()),
        "empty_description": int((df["description"] == "").sum()),
        "empty_text": int(((df["title"] == "") & (df["description"] == "")).sum()),
        "images_ok": len(arr),
        "images_unreadable": bad,
        "image_size": stats,
        "products_without_image": without,
        "photos_per_product": (
            dict(sorted(pd.Series([len(p) for p in lists]).value_counts().items())) if multi else None
        ),
    }
