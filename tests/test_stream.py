"""Catalogs read in batches (prodcat.stream): same rows as a whole-file read, bad rows left out by row number."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prodcat.catalog import CatalogError, read_catalog
from prodcat.stream import open_catalog

SCHEMA = ["id", "title", "description", "image", "label"]


def _catalog(n: int = 23) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sku": [f"p{i}" for i in range(n)],
            "title": [f"<b>Item</b> {i} &amp; co" if i % 5 else "" for i in range(n)],
            "description": ["long\ntext, with comma" if i % 3 else None for i in range(n)],
            "image": [f"img/{i}.jpg" if i % 4 else None for i in range(n)],
            "cat": [f"c{i % 3}" for i in range(n)],
            "blob": ["x" * 50] * n,
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_batches_hold_the_rows_of_a_whole_file_read(tmp_path: Path, suffix: str) -> None:
    raw = _catalog()
    path = tmp_path / f"c{suffix}"
    if suffix == ".parquet":
        raw.to_parquet(path)
    else:
        raw.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    mapping = {"id_column": "sku", "label_column": "cat"}
    whole, report = read_catalog(path, **mapping)
    stream = open_catalog(path, batch_rows=5, labels=True, **mapping)
    batches = list(stream)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    got = pd.concat(batches, ignore_index=True)
    pd.testing.assert_frame_equal(got[SCHEMA], whole[SCHEMA], check_dtype=False)
    assert got["_row"].tolist() == list(range(len(raw)))
    assert "blob" not in got  # passthrough columns are not read unless asked for
    assert stream.total == (len(raw) if suffix == ".parquet" else None)
    assert stream.report.summary_lines() == report.summary_lines()


def test_bad_rows_are_left_out_by_row_number_and_the_rest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(
        b"id,title\n"
        b"a,Mug\n"  # row 0
        b'b,"two\nlines",EXTRA\n'  # row 1: three fields
        b"c,Caf\xe9\n"  # row 2: latin-1, not UTF-8
        b",no id\n"  # row 3
        b"a,again\n"  # row 4: a's second row (next batch)
        b"f,Fine\n"  # row 5
        b"g,Also fine,too many\n"  # row 6: malformed, after the last good row but one
        b"h,Last\n"  # row 7
    )
    stream = open_catalog(path, batch_rows=2)
    got = pd.concat(list(stream), ignore_index=True)
    assert got["id"].tolist() == ["a", "f", "h"]
    assert got["_row"].tolist() == [0, 5, 7]
    rejected = stream.report.rejected
    assert [r.split(":")[0].split(" (")[0] for r in rejected] == ["row 1", "row 2", "row 3", "row 4", "row 6"]
    assert "malformed record (3 fields where the header has 2)" in rejected[0]
    assert "'title' is not valid UTF-8" in rejected[1] and "--encoding" in rejected[1]
    assert "empty id" in rejected[2] and "row 4 (id=a): duplicate id" in rejected[3]
    assert "5 rows left out" in "\n".join(stream.report.summary_lines())


def test_numbered_rows_and_another_encoding(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes("title;image\nCafé crème;\nThé;x.jpg\n".encode("cp1252"))
    got = pd.concat(list(open_catalog(path, id_column="none", encoding="cp1252")))
    assert got["id"].tolist() == ["0", "1"] and got["title"].tolist() == ["Café crème", "Thé"]
    assert pd.isna(got["image"].iloc[0]) and got["image"].iloc[1] == str((tmp_path / "x.jpg").resolve())


def test_header_problems_fail_before_any_row(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("sku,name\n1,a\n")
    with pytest.raises(CatalogError, match="text column 'title' not found"):
        open_catalog(path, text_columns=["title"])
    with pytest.raises(CatalogError, match="no such file"):
        open_catalog(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CatalogError, match="empty file"):
        open_catalog(tmp_path / "empty.csv")


def test_report_of_a_long_stream_keeps_totals_not_every_id(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    pd.DataFrame({"id": range(3000), "title": "t", "image": "gone.jpg"}).to_csv(path, index=False)
    stream = open_catalog(path, batch_rows=512)
    assert sum(len(b) for b in stream) == 3000
    assert stream.report.total("missing_image") == 3000 and len(stream.report.missing_image) == 1000
    assert "3000 image files missing" in stream.report.summary_lines()[1]


def test_hash_set_finds_every_member_across_merges() -> None:
    from prodcat.stream import HashSet

    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**63, size=5000, dtype=np.uint64)
    members = HashSet()
    for start in range(0, 4000, 37):  # uneven batches force merges of runs of different sizes
        members.add(values[start : min(start + 37, 4000)])
    assert len(members) == 4000
    assert members.contains(values[:4000]).all() and not members.contains(values[4000:]).any()


def test_memory_the_csv_reader_holds_does_not_grow_with_the_file(tmp_path: Path) -> None:
    """pyarrow's streaming reader reads ahead on its own thread: what it holds is bounded by the block size, not
    by the file (it held 4 MB blocks x 34, or the whole file below that, while one batch was being predicted)."""
    import time

    import pyarrow as pa

    from prodcat.stream import CSV_BLOCK_BYTES, CSV_READAHEAD_BLOCKS

    bound = (CSV_READAHEAD_BLOCKS + 4) * CSV_BLOCK_BYTES  # plus the blocks being parsed and one batch
    note = "n" * 4000
    rows = 2 * bound // len(note)  # a file twice the bound
    path = tmp_path / "big.csv"
    with path.open("w") as fh:
        fh.write("id,title,notes\n")
        for start in range(0, rows, 1000):
            fh.write("".join(f"p{i},Item {i},{note}\n" for i in range(start, min(start + 1000, rows))))
    before = pa.total_allocated_bytes()
    batches = iter(open_catalog(path, batch_rows=256))
    first = next(batches)
    held = [pa.total_allocated_bytes() - before]
    for _ in range(20):  # the reader fills its queue in the background: watch it for a while
        time.sleep(0.05)
        held.append(pa.total_allocated_bytes() - before)
    assert len(first) == 256
    assert max(held) <= bound, f"{max(held) >> 20} MB held for a {path.stat().st_size >> 20} MB file"
    assert sum(len(b) for b in batches) == rows - 256


def test_a_record_longer_than_a_block_is_read_with_larger_blocks(tmp_path: Path) -> None:
    from prodcat.stream import CSV_BLOCK_BYTES

    long_text = "word " * (2 * CSV_BLOCK_BYTES // 5)  # twice a block
    raw = pd.DataFrame(
        {
            "id": [f"p{i}" for i in range(40)],
            "title": [long_text if i == 25 else f"Item {i}\nsecond line" for i in range(40)],
        }
    )
    records = [raw.iloc[[i]].to_csv(index=False, header=False) for i in range(len(raw))]
    (tmp_path / "clean.csv").write_text("id,title\n" + "".join(records))
    whole = read_catalog(tmp_path / "clean.csv")[0]  # what a whole-file read makes of the same rows
    records.insert(3, "bad,record,extra\n")  # a malformed record before the long one (file row 3)
    records.insert(30, "bad2,again,extra\n")  # and one after it (file row 30)
    path = tmp_path / "c.csv"
    path.write_text("id,title\n" + "".join(records))
    stream = open_catalog(path, batch_rows=8)
    got = pd.concat(list(stream), ignore_index=True)
    assert got["id"].tolist() == raw["id"].tolist()
    assert got["title"].tolist() == whole["title"].tolist()
    assert got["_row"].tolist() == [r for r in range(42) if r not in (3, 30)]
    assert [r.split(":")[0] for r in stream.report.rejected] == ["row 3", "row 30"]


def test_a_record_longer_than_the_largest_block_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prodcat.stream as stream_module

    monkeypatch.setattr(stream_module, "CSV_BLOCK_BYTES", 1 << 10)
    monkeypatch.setattr(stream_module, "CSV_MAX_BLOCK_BYTES", 4 << 10)
    path = tmp_path / "c.csv"
    short = [f"p{i},t\n" for i in range(300)]
    short.insert(100, "bad,record,extra\n")  # row 100: malformed, so the long record is row 301
    path.write_text("id,title\n" + "".join(short) + "p300," + "x" * 20000 + "\n")
    with pytest.raises(CatalogError, match="row 301 is longer than 4,096 bytes"):
        list(open_catalog(path, batch_rows=64))
