"""`prodcat predict` streams: bad rows cost only themselves, output is written chunk by chunk, same predictions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from prodcat.bundle import load_bundle
from prodcat.catalog import CatalogError, read_catalog
from prodcat.cli import app
from prodcat.predict import batch_predict, flatten
from prodcat.trust import review_order

runner = CliRunner()


def test_bad_rows_are_reported_and_the_rest_predicted(
    tiny_bundle: Path, demo_catalog: Path, tmp_path: Path
) -> None:
    lines = demo_catalog.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    bad = demo_catalog.with_name(f"bad-{tmp_path.name}.csv")  # next to the catalog: its image paths resolve
    # row 3: one field too many; row 7: the id of row 0 again
    rows[3] = rows[3] + ",extra"
    rows[7] = rows[0]
    bad.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    out = tmp_path / "p.parquet"
    result = runner.invoke(
        app, ["predict", str(tiny_bundle), str(bad), "--out", str(out), "--chunk-size", "16"]
    )
    bad.unlink()
    assert result.exit_code == 0, result.output
    pred = pd.read_parquet(out)
    assert len(pred) == len(rows) - 2
    assert "2 rows left out: row 3: malformed record" in result.output
    assert "row 7 (id=" in result.output and "duplicate id" in result.output
    assert pq.ParquetFile(out).num_row_groups == -(-len(pred) // 16)  # one row group per chunk
    whole = read_catalog(demo_catalog)[0].drop(index=[3, 7])
    expected = flatten(load_bundle(tiny_bundle).predict_frame(whole))
    assert pred["id"].tolist() == expected["id"].tolist()
    assert pred["label"].tolist() == expected["label"].tolist()
    assert (pred["probability"] - expected["probability"]).abs().max() < 1e-6


def test_review_queue_is_the_global_review_order(
    tiny_bundle: Path, demo_catalog: Path, tmp_path: Path
) -> None:
    out, queue = tmp_path / "p.csv", tmp_path / "q.csv"
    args = ["predict", str(tiny_bundle), str(demo_catalog), "--out", str(out), "--review-queue", str(queue)]
    result = runner.invoke(app, [*args, "--chunk-size", "10"])
    assert result.exit_code == 0, result.output
    pred, q = pd.read_csv(out), pd.read_csv(queue)
    predictor = load_bundle(tiny_bundle)
    counts = {} if predictor.model.calibration is None else predictor.model.calibration.class_counts
    expected = review_order(pred, counts)
    assert len(q) > 0 and q["id"].tolist() == expected["id"].tolist()
    assert q["review_rank"].tolist() == list(range(1, len(q) + 1))
    assert not list(tmp_path.glob("*.spill.arrow")) and not list(tmp_path.glob("*.partial"))


def test_an_interrupted_run_leaves_no_output(tiny_bundle: Path, demo_catalog: Path, tmp_path: Path) -> None:
    """A failure after some chunks were written (here: the third batch) leaves neither the output nor its
    partial file: only a complete file gets the final name."""
    predictor = load_bundle(tiny_bundle)
    df = read_catalog(demo_catalog)[0]

    def batches() -> Iterator[pd.DataFrame]:
        yield df.iloc[:10]
        yield df.iloc[10:20]
        raise CatalogError("disk went away")

    for out in (tmp_path / "p.csv", tmp_path / "p.parquet"):
        with pytest.raises(CatalogError):
            batch_predict(predictor, batches(), out, progress=False, review_queue=tmp_path / "q.csv")
        assert not list(tmp_path.iterdir())


def test_cache_dir_serves_embeddings_seen_before(
    tiny_bundle: Path, demo_catalog: Path, tmp_path: Path
) -> None:
    """--cache-dir: the first run fills the embedding cache, a second run reads it: same predictions."""
    cache = tmp_path / "cache"
    outs = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for out in outs:
        args = ["predict", str(tiny_bundle), str(demo_catalog), "--out", str(out), "--cache-dir", str(cache)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert list((cache / "embeddings").glob("*/*.npz"))  # filled by the first run
    a, b = pd.read_csv(outs[0]), pd.read_csv(outs[1])
    assert a["label"].tolist() == b["label"].tolist()
    assert (a["probability"] - b["probability"]).abs().max() < 1e-6
