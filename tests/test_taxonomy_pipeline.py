"""Taxonomy through the reader, training, bundle, prediction output and server response (tiny models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from prodcat.bundle import load_bundle, load_model, save_bundle
from prodcat.catalog import CatalogError, read_catalog
from prodcat.config import TrainConfig
from prodcat.pipeline import TrainedModel, train
from prodcat.predict import flatten

GROUPS = {"t-shirts": "wear", "shoes": "wear", "bags": "wear", "watches": "wear", "mugs": "home"}
TINY = {
    "text_models": [{"name": "tfidf"}],
    "image_models": [{"name": "embed:test-tiny"}],
    "n_folds": 3,
    "validation_fraction": 0.2,
    "fusion": {"method": "mean"},
    "noise": {"enabled": False},
    "target_precision": 0.9,
    "columns": {"taxonomy_columns": ["group"]},
}


@pytest.fixture(scope="module")
def tax_catalog(demo_catalog: Path) -> Path:
    raw = pd.read_csv(demo_catalog, dtype=str, keep_default_na=False)
    raw["group"] = raw["label"].map(lambda c: GROUPS.get(c, "leisure"))
    out = demo_catalog.with_name("taxonomy.csv")
    raw.to_csv(out, index=False)
    return out


@pytest.fixture(scope="module")
def trained(tax_catalog: Path) -> TrainedModel:
    df, _ = read_catalog(tax_catalog, taxonomy_columns=["group"])
    return train(df, TrainConfig.model_validate(TINY), progress=False)


def test_reader_names_rows_of_a_leaf_under_two_parents(tax_catalog: Path, tmp_path: Path) -> None:
    raw = pd.read_csv(tax_catalog, dtype=str, keep_default_na=False)
    row = int(np.flatnonzero(raw["label"] == "mugs")[3])
    raw.loc[row, "group"] = "wear"
    bad = tmp_path / "bad.csv"
    raw.to_csv(bad, index=False)
    with pytest.raises(CatalogError, match=rf"'mugs' is under 2 group values.*id={raw['id'][row]}"):
        read_catalog(bad, taxonomy_columns=["group"])
    with pytest.raises(CatalogError, match=r"taxonomy column\(s\) \['nope'\] not found"):
        read_catalog(tax_catalog, taxonomy_columns=["nope"])
    df, _ = read_catalog(tax_catalog, require_label=False)
    assert "group" in df  # parent columns pass through


def test_path_labels_are_canonical_and_checked(tmp_path: Path) -> None:
    f = tmp_path / "paths.csv"
    pd.DataFrame(
        {"id": ["a", "b", "c"], "title": ["x", "y", "z"], "label": ["Home>Mugs", "Home > Lamps", "Toys"]}
    ).to_csv(f, index=False)
    df, _ = read_catalog(f, path_separator=" > ")
    assert df["label"].tolist() == ["Home > Mugs", "Home > Lamps", "Toys"]
    pd.DataFrame({"id": ["a", "b"], "title": ["x", "y"], "label": ["Home >  > Mugs", "Toys"]}).to_csv(
        f, index=False
    )
    with pytest.raises(CatalogError, match=r"empty part .* row 0 \(id=a\)"):
        read_catalog(f, path_separator=" > ")


def test_training_scores_every_level_and_learns_back_off(trained: TrainedModel) -> None:
    assert trained.taxonomy is not None and list(trained.taxonomy.leaves) == list(trained.classes)
    tax = trained.metrics["validation"]["taxonomy"]
    assert list(tax["levels"]) == ["group", "label"]
    for level in tax["levels"].values():
        assert 0.0 <= level["macro_f1"] <= 1.0 and 0.0 <= level["accuracy"] <= 1.0
    assert tax["levels"]["group"]["accuracy"] >= tax["levels"]["label"]["accuracy"]
    assert 0.0 <= tax["hierarchical"]["f1"] <= 1.0
    shares = [d["share"] for d in tax["back_off"]["decided"].values()]
    assert sum(shares) == pytest.approx(1.0)
    assert trained.thresholds is not None and trained.thresholds.shape == (2,)


def test_bundle_and_prediction_carry_the_path(
    trained: TrainedModel, tax_catalog: Path, tmp_path: Path
) -> None:
    save_bundle(trained, tmp_path / "m")
    loaded, manifest = load_model(tmp_path / "m")
    assert manifest["taxonomy"]["levels"] == ["group", "label"]
    assert loaded.taxonomy is not None and (loaded.taxonomy.paths == trained.taxonomy.paths).all()
    np.testing.assert_array_equal(loaded.thresholds, trained.thresholds)
    df, _ = read_catalog(tax_catalog)
    out = load_bundle(tmp_path / "m").predict_frame(df.head(12))
    for path, label, proba in zip(out["path"], out["label"], out["probability"], strict=True):
        assert [s["level"] for s in path] == ["group", "label"]
        assert path[-1]["label"] == label and path[-1]["probability"] == pytest.approx(proba)
        assert path[0]["label"] == GROUPS.get(label, "leisure")
        assert path[0]["probability"] >= path[1]["probability"] - 1e-12
    decided = out["decided_level"].dropna()
    assert set(decided) <= {"group", "label"}
    flat = flatten(out)
    assert {"group", "group_probability", "decided_level", "decided_label"} <= set(flat.columns)
    assert "path" not in flat


def test_server_response_includes_the_path(trained: TrainedModel, tmp_path: Path) -> None:
    from prodcat.serve.inputs import to_predictions

    save_bundle(trained, tmp_path / "m")
    frame = pd.DataFrame({"id": ["1"], "title": ["Mug premium rouge"], "description": [""], "image": [None]})
    out = load_bundle(tmp_path / "m").predict_frame(frame)

    class _Row:
        id, image_error = "1", None

    pred = to_predictions(out, [_Row()], 3)[0]  # type: ignore[list-item]
    assert pred.path is not None and [s.level for s in pred.path] == ["group", "label"]
    assert pred.path[-1].label == pred.label


def test_evaluate_report_has_every_level(trained: TrainedModel, tax_catalog: Path, tmp_path: Path) -> None:
    from prodcat.report import evaluate_to_dir

    df, _ = read_catalog(tax_catalog, taxonomy_columns=["group"])
    metrics = evaluate_to_dir(trained, df, tmp_path / "r")
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(saved["taxonomy"]["levels"]) == {"group", "label"} == set(metrics["taxonomy"]["levels"])
    assert "Hierarchical precision" in (tmp_path / "r" / "report.html").read_text()


def test_cli_train_and_predict_with_taxonomy_columns(tax_catalog: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from prodcat.cli import app

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != "columns"}))
    runner = CliRunner()
    args = ["train", str(tax_catalog), "--out", str(tmp_path / "m"), "--config", str(config)]
    result = runner.invoke(app, [*args, "--taxonomy-columns", "group"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["predict", str(tmp_path / "m"), str(tax_catalog), "--out", str(tmp_path / "p.csv")]
    )
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(tmp_path / "p.csv")
    assert {"group", "group_probability", "decided_level", "decided_label"} <= set(pred.columns)
    bare = (
        tmp_path / "bare.csv"
    )  # a catalog to predict need not carry the parent columns: the bundle has the tree
    pd.read_csv(tax_catalog).drop(columns=["group"]).to_csv(bare, index=False)
    result = runner.invoke(app, ["predict", str(tmp_path / "m"), str(bare), "--out", str(tmp_path / "q.csv")])
    assert result.exit_code == 0, result.output
    assert "group" in pd.read_csv(tmp_path / "q.csv").columns
    bad = runner.invoke(app, [*args, "--taxonomy-columns", "nope"])
    assert bad.exit_code == 2 and "taxonomy column(s) ['nope'] not found" in bad.output
