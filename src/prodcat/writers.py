"""Prediction files written as the chunks come: CSV appends or Parquet row groups, renamed into place when done.

:class:`TableWriter` writes ``<out>.partial`` chunk by chunk and gives it the final name only once every chunk is
written (an interrupted run never leaves a file that looks complete). :func:`write_review_queue` orders the
``review`` rows of a whole run (:func:`prodcat.trust.review_order`: the order is global) from a spill file, so the
rows themselves are never all in memory: only their sort keys (label, confidence: ~100 bytes a row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

OUTPUT_FORMATS = (".csv", ".parquet")


def check_output(path: str | Path) -> Path:
    """``path`` as a Path; ValueError unless it ends in .csv or .parquet."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise ValueError(f"{path}: output must end in {' or '.join(OUTPUT_FORMATS)}")
    return path


class TableWriter:
    """Append DataFrames with the same columns to a .csv or .parquet file (a context manager).

    Parquet: one row group per :meth:`write`, with the first chunk's schema (later chunks are cast to it, so a
    chunk whose optional column is all-null keeps the type). ``commit()`` renames the partial file into place.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = check_output(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.rows = 0
        self._parquet: Any = None
        self._columns: list[str] | None = None

    def __enter__(self) -> TableWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def write(self, chunk: pd.DataFrame) -> None:
        if self.path.suffix.lower() == ".csv":
            chunk.to_csv(
                self.partial, mode="a" if self._columns else "w", header=not self._columns, index=False
            )
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(chunk, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.partial, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        self._columns = list(chunk.columns)
        self.rows += len(chunk)

    def commit(self, empty: pd.DataFrame | None = None) -> Path:
        """Close and give the file its final name; with nothing written, write ``empty`` (a header) instead."""
        self.close()
        if self._columns is None:
            frame = pd.DataFrame() if empty is None else empty
            if self.path.suffix.lower() == ".csv":
                frame.to_csv(self.partial, index=False)
            else:
                frame.to_parquet(self.partial, index=False)
        self.partial.replace(self.path)
        return self.path

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None

    def __exit__(self, *exc: object) -> None:
        self.close()
        if exc[0] is not None:  # failed: keep no partial file around
            self.partial.unlink(missing_ok=True)


class ReviewSpill:
    """The ``review`` rows of a run, appended chunk by chunk to an uncompressed Arrow file next to the queue
    (read back memory-mapped), and their sort keys in memory."""

    def __init__(self, queue: str | Path) -> None:
        self.queue = check_output(queue)
        self.path = self.queue.with_name(self.queue.name + ".spill.arrow")
        self._writer: Any = None
        self._schema: Any = None
        self._keys: list[pd.DataFrame] = []

    def add(self, chunk: pd.DataFrame) -> None:
        import pyarrow as pa

        rows = chunk[chunk["decision"] == "review"]
        if not len(rows):
            return
        table = pa.Table.from_pandas(rows, preserve_index=False)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._schema = table.schema
            self._writer = pa.ipc.new_file(str(self.path), self._schema)
        self._writer.write_table(table.cast(self._schema))
        keys = rows[["label", "confidence", "decision"]].reset_index(drop=True)
        self._keys.append(keys.astype({"label": "category"}))

    def write(self, class_counts: dict[str, int], *, chunk_rows: int = 8192) -> int:
        """Write the queue in review order (header-only when no row is to review); returns its length."""
        from prodcat.trust import review_order

        self.close()
        if not self._keys:
            empty = review_order(pd.DataFrame(columns=["label", "confidence", "decision"]), class_counts)
            TableWriter(self.queue).commit(empty)
            return 0
        import pyarrow as pa

        keys = pd.concat(self._keys, ignore_index=True)
        keys["label"] = keys["label"].astype(str)
        keys["_spill"] = np.arange(len(keys))
        order = review_order(keys, class_counts)  # the one ordering rule; adds p_error and review_rank
        with pa.memory_map(str(self.path)) as source, TableWriter(self.queue) as out:
            rows = pa.ipc.open_file(source).read_all()
            for start in range(0, len(order), chunk_rows):
                part = order.iloc[start : start + chunk_rows]
                chunk = rows.take(pa.array(part["_spill"].to_numpy())).to_pandas()
                out.write(
                    chunk.assign(
                        p_error=part["p_error"].to_numpy(), review_rank=part["review_rank"].to_numpy()
                    )
                )
            out.commit()
        self.path.unlink(missing_ok=True)
        return len(order)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
