"""train -> evaluate -> predict through the command line, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from prodcat.cli import app

runner = CliRunner()
TINY_YAML = """
text_models: [{name: tfidf}]
image_models: [{name: "embed:test-tiny"}]
n_folds: 3
fusion: {method: paper-mlp-tiny}
"""


@pytest.fixture(scope="module")
def model_dir(demo_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "tiny.yaml").write_text(TINY_YAML)
    out = tmp / "model"
    result = runner.invoke(
        app, ["train", str(demo_catalog), "--out", str(out), "--config", str(tmp / "tiny.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert "validation" in result.output and "fusion" in result.output
    return out


def test_evaluate_writes_metrics_and_report(model_dir: Path, demo_catalog: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(model_dir), str(demo_catalog), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert {"macro_f1", "macro_f1_ci", "n", "per_modality"} <= set(metrics)
    assert set(metrics["per_modality"]) == {"text", "image", "fusion"}
    assert metrics["n"] == 240
    for f in ("confusion.png", "per_class.csv", "report.html", "table.csv"):
        assert (tmp_path / "r" / f).stat().st_size > 0
    assert "data:image/png;base64" in (tmp_path / "r" / "report.html").read_text()


def test_predict_writes_one_row_per_product(model_dir: Path, demo_catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    result = runner.invoke(
        app, ["predict", str(model_dir), str(demo_catalog), "--out", str(out), "--top-k", "2"]
    )
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out)
    assert len(df) == 240 and {"label", "probability", "top2_label"} <= set(df.columns)


def test_bad_inputs_are_clear_errors(model_dir: Path, demo_catalog: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["predict", str(model_dir), str(demo_catalog), "--out", str(tmp_path / "p.txt")])
    assert r.exit_code == 2 and "must end in .csv or .parquet" in r.output
    r = runner.invoke(app, ["evaluate", str(tmp_path), str(demo_catalog)])
    assert r.exit_code == 2 and "no manifest.json" in r.output
    r = runner.invoke(app, ["train", str(demo_catalog), "--out", str(tmp_path / "m"), "--n-folds", "1"])
    assert r.exit_code == 2 and "n_folds" in r.output
    r = runner.invoke(
        app, ["train", str(demo_catalog), "--out", str(tmp_path / "m"), "--label-column", "nope"]
    )
    assert r.exit_code == 2 and "label column 'nope' not found" in r.output
