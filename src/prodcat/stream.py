"""Catalogs read in batches, so that a file of any size is mapped, cleaned and validated with memory flat in rows.

:func:`open_catalog` reads the header (CSV/TSV: :func:`pyarrow.csv.open_csv`; Parquet: the footer), maps the
columns once (:func:`prodcat.catalog.map_columns`: a missing named column fails here, before any row is read) and
returns a :class:`CatalogStream` whose iteration yields catalog-schema DataFrames of ``batch_rows`` rows, each
built by the same code as a whole-file read (:func:`prodcat.catalog.to_schema`, :func:`~prodcat.catalog.row_problems`,
:func:`~prodcat.catalog.modality_report`). Only the columns the schema needs are read (passthrough columns are
skipped unless asked for).

What a whole-file read refuses, a stream leaves out row by row and reports in ``stream.report.rejected`` with the
row's position in the file (0-based, header excluded, as in :mod:`prodcat.catalog`'s messages) and its id: a
malformed CSV record (wrong number of fields), a cell that is not valid UTF-8, an empty id, an empty label (when
labels are read), and a repeated id (the first row keeps it; later ones are left out: the first one's prediction
is already written). Repeated ids are found across batches with one 8-byte hash per id kept in sorted arrays
(:class:`HashSet`: 8 MB per million rows). Missing images and empty texts are kept, as in a whole-file read.

A Rakuten challenge folder (two files joined on their index) is read whole and then sliced into batches.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodcat.catalog import (
    CatalogError,
    ColumnMap,
    ReadReport,
    delimiter,
    map_columns,
    modality_report,
    read_catalog,
    row_problems,
    to_schema,
)

#: Bytes pyarrow reads and parses at a time. Its streaming CSV reader reads ahead in a background thread, up to
#: :data:`CSV_READAHEAD_BLOCKS` blocks whatever the consumer's pace (pyarrow has no option for it), so the block
#: size is what bounds the reader's memory: about 34 MB at 1 MB blocks; at the former 4 MB it was ~136 MB for any
#: file over ~136 MB and the whole file below that, which made peak memory step up with the catalog's size.
CSV_BLOCK_BYTES = 1 << 20
#: Blocks pyarrow's streaming CSV reader holds read ahead (measured with pyarrow 26: 32 queued plus the ones
#: being parsed; its ``MakeBackgroundGenerator`` queue).
CSV_READAHEAD_BLOCKS = 34
#: A record longer than a block makes pyarrow fail ("straddling object"); the file is then read again with
#: blocks 4 times as large (the rows already yielded are skipped), up to this size.
CSV_MAX_BLOCK_BYTES = 16 << 20


class CatalogStream:
    """A catalog read batch by batch; built by :func:`open_catalog`.

    Attributes
    ----------
    source : the catalog path.
    columns : the :class:`~prodcat.catalog.ColumnMap` (which raw columns feed the schema).
    names : every column of the file, as named there.
    total : rows in the file when known without reading it (Parquet footer, a folder read whole), else None.
    report : a :class:`~prodcat.catalog.ReadReport` that grows as batches are read (first 1,000 ids per list,
        totals of all).
    """

    def __init__(
        self,
        source: Path,
        columns: ColumnMap,
        names: list[str],
        raw_batches: Iterator[tuple[pd.DataFrame, np.ndarray, list[str]]],
        *,
        base_dir: Path | None,
        total: int | None,
        labels: bool,
    ) -> None:
        self.source = source
        self.columns = columns
        self.names = names
        self.total = total
        self.report = ReadReport(
            source=str(source), no_image_column=columns.image is None, no_text_column=not columns.texts
        )
        self.report.numbered_ids = columns.id is None
        self._raw = raw_batches
        self._base_dir = base_dir
        self._labels = labels
        self._seen = HashSet()  # hashes of the ids read so far

    def __iter__(self) -> Iterator[pd.DataFrame]:
        for raw, rows, rejected in self._raw:
            df, report = clean_batch(
                raw, self.columns, base_dir=self._base_dir, row_numbers=rows, labels=self._labels
            )
            report.rejected = rejected + report.rejected
            df, report = self._drop_seen_ids(df, report)
            self.report.absorb(report)
            if len(df):
                yield df

    def _drop_seen_ids(self, df: pd.DataFrame, report: ReadReport) -> tuple[pd.DataFrame, ReadReport]:
        """Leave out rows whose id an earlier batch had; remember this batch's ids."""
        hashes = pd.util.hash_pandas_object(df["id"], index=False).to_numpy(dtype=np.uint64)
        seen = self._seen.contains(hashes)
        if seen.any():
            rows = df["_row"].to_numpy()[seen]
            report.rejected += [
                f"row {r} (id={i}): duplicate id (an earlier row has it)"
                for r, i in zip(rows, df["id"].to_numpy()[seen], strict=True)
            ]
            df = df[~seen]
            hashes = hashes[~seen]
            report = modality_report(df, replace(report, n_rows=len(df)))
        self._seen.add(hashes)
        return df, report


class HashSet:
    """A set of 64-bit hashes kept as a few sorted arrays (8 bytes per member), merged like a log-structured
    tree: a run is merged into the one before it once that one is at most twice its size, so adding n members
    in batches costs O(n log n) in all and a lookup searches O(log n) runs."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs)

    def contains(self, values: np.ndarray) -> np.ndarray:
        """(n,) bool: which of ``values`` (uint64) are members."""
        found = np.zeros(len(values), dtype=bool)
        for run in self._runs:
            pos = np.minimum(np.searchsorted(run, values), len(run) - 1)
            found |= run[pos] == values
        return found

    def add(self, values: np.ndarray) -> None:
        if len(values):
            self._runs.append(np.sort(values))
        while len(self._runs) >= 2 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            last = self._runs.pop()
            self._runs[-1] = np.sort(np.concatenate([self._runs[-1], last]), kind="stable")


def clean_batch(
    raw: pd.DataFrame,
    columns: ColumnMap,
    *,
    base_dir: Path | None,
    row_numbers: np.ndarray | None,
    labels: bool,
) -> tuple[pd.DataFrame, ReadReport]:
    """One raw batch in the catalog schema with its unusable rows left out (and listed in the report's
    ``rejected``, by row number and id). The kept rows' file positions are in a ``_row`` column.

    ``row_numbers`` (n,): each raw row's position in the whole file (None where it is not known, on a Ray
    worker: rows are then named by id only, and a numbered catalog cannot be read). ``labels``: read the label column (its
    empty cells are row problems); without it the schema's ``label`` is None."""
    if row_numbers is None and columns.id is None:
        raise CatalogError("rows are numbered (--id-column none) but their positions are not known here")
    df = to_schema(raw, columns, base_dir=base_dir, row_numbers=row_numbers)
    problems = row_problems(df, has_label=labels and columns.label is not None, keep_first=True)
    bad = np.logical_or.reduce(list(problems.values()))
    ids = df["id"].to_numpy()
    where = [f"row {r} " for r in row_numbers] if row_numbers is not None else [""] * len(df)
    rejected = [
        f"{where[i]}(id={ids[i]}): {', '.join(name for name, m in problems.items() if m[i])}"
        for i in np.flatnonzero(bad)
    ]
    df = df.loc[~bad].reset_index(drop=True)
    df.insert(0, "_row", -1 if row_numbers is None else np.asarray(row_numbers)[~bad])
    report = ReadReport(source="", n_rows=len(df), no_image_column=columns.image is None, rejected=rejected)
    return df, modality_report(df, report)


def open_catalog(
    path: str | Path,
    *,
    batch_rows: int = 2048,
    labels: bool = False,
    passthrough: bool = False,
    encoding: str | None = None,
    split: str = "train",
    **columns: Any,
) -> CatalogStream:
    """Open a catalog (CSV/TSV/Parquet file, or Rakuten folder) for reading in batches of ``batch_rows`` rows.

    ``columns``: the column mapping of :func:`prodcat.catalog.read_catalog` (``text_columns``, ``label_column``,
    ``image_column``, ``id_column``; its taxonomy options are accepted and ignored: a stream checks no tree).
    ``labels``: read the label column; ``passthrough``: keep the other columns too.
    Raises :class:`~prodcat.catalog.CatalogError` when the file or a named column is missing.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    path = Path(path)
    if path.is_dir():
        id_column = columns.get("id_column")
        df = read_catalog(path, split=split, encoding=encoding, id_column=id_column, require_label=labels)[0]
        cmap = ColumnMap(
            texts=("title", "description"), label="label" if labels else None, image="image", id="id"
        )
        frames = _frame_batches(
            df, batch_rows, keep=cmap.used() + ([] if not passthrough else list(df.columns))
        )
        return CatalogStream(
            path, cmap, list(df.columns), frames, base_dir=None, total=len(df), labels=labels
        )
    if not path.is_file():
        raise CatalogError(f"{path}: no such file")
    layout = inspect_file(path, encoding=encoding, labels=labels, passthrough=passthrough, **columns)
    if layout.delimiter is None:
        import pyarrow.parquet as pq

        raw = _parquet_batches(pq.ParquetFile(path), layout.read, batch_rows)
    else:
        raw = _csv_batches(path, layout, encoding=encoding, batch_rows=batch_rows)
    cmap, total = layout.columns, layout.total
    return CatalogStream(
        path, cmap, layout.names, raw, base_dir=path.parent.resolve(), total=total, labels=labels
    )


@dataclass(frozen=True)
class FileLayout:
    """What :func:`inspect_file` found in a catalog file's header: the column mapping, every column name, the raw
    columns to read,
    the CSV field separator (None for Parquet) and the row count when the file states it (Parquet)."""

    columns: ColumnMap
    names: list[str]
    read: list[str]
    delimiter: str | None
    total: int | None


def inspect_file(
    path: Path,
    *,
    encoding: str | None = None,
    labels: bool = False,
    passthrough: bool = False,
    **columns: Any,
) -> FileLayout:
    """Read a CSV/TSV/Parquet file's header (not its rows) and map its columns; ``columns`` as in
    :func:`open_catalog`. Raises :class:`~prodcat.catalog.CatalogError` for a missing file, an unsupported
    format or a named column that is absent."""
    if not path.is_file():
        raise CatalogError(f"{path}: no such file")
    suffix = path.suffix.lower()
    sep: str | None = None
    total: int | None = None
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        pfile = pq.ParquetFile(path)
        names, total = list(pfile.schema_arrow.names), pfile.metadata.num_rows
    elif suffix in (".csv", ".tsv", ".txt"):
        names, sep = _csv_header(path, encoding)
    else:
        raise CatalogError(f"{path}: unsupported catalog format {suffix!r} (use .csv, .tsv or .parquet)")
    mapping = {k: columns.get(k) for k in ("text_columns", "label_column", "image_column", "id_column")}
    cmap = map_columns(names, source=path, require_label=labels, **mapping)
    if not labels:
        cmap = replace(cmap, label=None)
    read = names if passthrough else [c for c in names if c in set(cmap.used())]
    return FileLayout(cmap, names, read, sep, total)


def csv_options(
    layout: FileLayout, *, encoding: str | None, block_size: int = 4 * CSV_BLOCK_BYTES
) -> dict[str, Any]:
    """pyarrow CSV reader options for a file of ``layout``: its separator, values spanning lines, every read
    column as bytes (decoded by :func:`decode_table`, so one bad cell costs only its row), empty cells null, a
    malformed record skipped (and counted by the caller's ``invalid_row_handler``); ``block_size`` bytes parsed at
    a time (the local stream passes its own, see :data:`CSV_BLOCK_BYTES`)."""
    import pyarrow as pa
    import pyarrow.csv as pv

    return {
        "read_options": pv.ReadOptions(block_size=block_size, encoding=encoding or "utf8", use_threads=False),
        "parse_options": pv.ParseOptions(delimiter=layout.delimiter, newlines_in_values=True),
        "convert_options": pv.ConvertOptions(
            column_types=dict.fromkeys(layout.read, pa.binary()),
            include_columns=layout.read,
            strings_can_be_null=True,
            null_values=[""],
        ),
    }


def _frame_batches(
    df: pd.DataFrame, batch_rows: int, keep: list[str]
) -> Iterator[tuple[pd.DataFrame, np.ndarray, list[str]]]:
    cols = list(dict.fromkeys(c for c in keep if c in df.columns))
    for start in range(0, len(df), batch_rows):
        yield (
            df.iloc[start : start + batch_rows][cols],
            np.arange(start, min(start + batch_rows, len(df))),
            [],
        )


def _parquet_batches(
    pfile: Any, columns: list[str], batch_rows: int
) -> Iterator[tuple[pd.DataFrame, np.ndarray, list[str]]]:
    start = 0
    for batch in pfile.iter_batches(batch_size=batch_rows, columns=columns):
        yield batch.to_pandas(), np.arange(start, start + batch.num_rows), []
        start += batch.num_rows


def _csv_header(path: Path, encoding: str | None) -> tuple[list[str], str]:
    """The column names and field separator of a CSV/TSV file, from its first 64 KB."""
    with path.open("rb") as fh:
        sample = fh.read(1 << 16).decode(encoding or "utf-8-sig", errors="replace")
    if not sample.strip():
        raise CatalogError(f"{path}: empty file")
    sep = delimiter(path, sample[:20000])
    return next(csv.reader(io.StringIO(sample), delimiter=sep)), sep


def _csv_batches(
    path: Path, layout: FileLayout, *, encoding: str | None, batch_rows: int
) -> Iterator[tuple[pd.DataFrame, np.ndarray, list[str]]]:
    """Raw batches of ``batch_rows`` rows (strings, NaN where empty), their file row numbers, and the rows left
    out (a malformed record; a cell that is not valid UTF-8). Cells are read as bytes and decoded here, so one bad
    cell costs its row, not the file. Blocks of :data:`CSV_BLOCK_BYTES`; a record longer than that makes the file
    be read again with larger blocks from where it stopped (:data:`CSV_MAX_BLOCK_BYTES`)."""
    import pyarrow as pa

    malformed: list[tuple[int, str]] = []  # (file row, why), in file order; rebuilt by each pass
    done = 0  # good records yielded so far
    reported = 0  # malformed records reported so far
    block = CSV_BLOCK_BYTES
    while True:
        malformed.clear()
        try:
            reader = _open_csv(path, layout, encoding, block, malformed)
            for table in _rebatch(reader, batch_rows, skip=done, pa=pa, path=path):
                bad = np.array([r for r, _ in malformed], dtype=np.int64)
                ordinal = np.arange(done, done + table.num_rows)
                # a good record's file row: its ordinal plus the malformed records before it
                rows = ordinal + np.searchsorted(bad - np.arange(len(bad)), ordinal, side="right")
                done += table.num_rows
                upto = rows[-1] if len(rows) else -1
                rejected = [
                    f"row {r}: malformed record ({why})" for r, why in malformed[reported:] if r <= upto
                ]
                reported += len(rejected)
                frame, undecodable = decode_table(table, encoding)
                rejected += [f"row {rows[i]}: {why}" for i, why in undecodable.items()]
                keep = np.ones(len(frame), dtype=bool)
                keep[list(undecodable)] = False
                yield frame[keep], rows[keep], rejected
            break
        except _RecordTooLong as e:
            if block >= CSV_MAX_BLOCK_BYTES:
                raise CatalogError(
                    f"{path}: row {e.records + len(malformed)} is longer than {CSV_MAX_BLOCK_BYTES:,} bytes, "
                    f"the most one parse block holds ({e})"
                ) from None
            block *= 4  # the records yielded so far are read again and skipped
    if reported < len(malformed):  # malformed records after the last good one
        yield (
            pd.DataFrame(columns=layout.read),
            np.zeros(0, dtype=np.int64),
            [f"row {r}: malformed record ({why})" for r, why in malformed[reported:]],
        )


class _RecordTooLong(Exception):
    """pyarrow met a record longer than its block size after ``records`` good records."""

    def __init__(self, message: str, records: int = 0) -> None:
        super().__init__(message)
        self.records = records


def _open_csv(
    path: Path, layout: FileLayout, encoding: str | None, block: int, malformed: list[tuple[int, str]]
) -> Any:
    """pyarrow's streaming reader of ``path`` in blocks of ``block`` bytes; malformed records are skipped and
    appended to ``malformed``. (It reads the first block now.)"""
    import pyarrow as pa
    import pyarrow.csv as pv

    def on_invalid(row: Any) -> str:
        where = row.number - 2 if row.number is not None else -1  # record number counts the header as 1
        malformed.append((where, f"{row.actual_columns} fields where the header has {row.expected_columns}"))
        return "skip"

    options = csv_options(layout, encoding=encoding, block_size=block)
    options["parse_options"].invalid_row_handler = on_invalid
    try:
        return pv.open_csv(path, **options)
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        raise _csv_error(e, path) from e


def _csv_error(e: Exception, path: Path, records: int = 0) -> Exception:
    """``e`` as a :class:`~prodcat.catalog.CatalogError`, or :class:`_RecordTooLong` when pyarrow met a record
    longer than a block after ``records`` good records."""
    if "straddl" in str(e):  # pyarrow: "straddling object straddles two block boundaries"
        return _RecordTooLong(str(e), records)
    return CatalogError(f"{path}: cannot read as a table: {e}")


def _rebatch(reader: Any, batch_rows: int, *, skip: int, pa: Any, path: Path) -> Iterator[Any]:
    """pyarrow's record batches (sized in bytes) regrouped into tables of ``batch_rows`` rows, the first ``skip``
    records left out."""
    pending: list[Any] = []
    buffered = 0
    records = 0  # read from the file, skipped ones included
    try:
        for batch in reader:
            records += batch.num_rows
            if skip:
                drop = min(skip, batch.num_rows)
                batch, skip = batch.slice(drop), skip - drop
            pending.append(batch)
            buffered += batch.num_rows
            while buffered >= batch_rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, batch_rows)
                rest = table.slice(batch_rows)
                pending[:] = rest.to_batches()
                buffered = rest.num_rows
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        raise _csv_error(e, path, records) from e
    if buffered:
        yield pa.Table.from_batches(pending)


def decode_table(table: Any, encoding: str | None = None) -> tuple[pd.DataFrame, dict[int, str]]:
    """A pyarrow table as a DataFrame: byte cells as string columns (NaN where empty, as :func:`pandas.read_csv`
    reads them), other types as pandas converts them, and {row in table: why} for rows with a cell that is not
    valid UTF-8 (pyarrow has already transcoded another ``encoding`` to UTF-8)."""
    import pyarrow as pa

    columns: dict[str, Any] = {}
    bad: dict[int, str] = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if not pa.types.is_binary(col.type):
            columns[name] = col.to_pandas()
            continue
        try:
            columns[name] = col.cast(pa.string()).to_pandas()
        except pa.ArrowInvalid:  # rare: find the cells one by one
            values: list[str | None] = []
            for i, cell in enumerate(col.to_pylist()):
                try:
                    values.append(None if cell is None else cell.decode("utf-8"))
                except UnicodeDecodeError as e:
                    values.append(None)
                    hint = (
                        ""
                        if encoding
                        else "; if the file uses another encoding pass it, e.g. --encoding cp1252"
                    )
                    bad.setdefault(
                        i, f"column {name!r} is not valid UTF-8 (byte 0x{cell[e.start]:02x}){hint}"
                    )
            columns[name] = pd.Series(values, dtype="str")
    return pd.DataFrame(columns), bad
