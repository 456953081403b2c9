"""Catalogs as they come: text-only and image-only catalogs through train -> predict -> evaluate, as a user runs
them, mostly-missing images, and catalogs without usable ids (``--id-column none``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from prodcat.catalog import CatalogError, read_catalog
from prodcat.cli import app
from prodcat.config import TrainConfig
from prodcat.pipeline import train

runner = CliRunner()
TINY_YAML = """
text_models: [{name: tfidf}, {name: "embed:test-tiny"}]
image_models: [{name: "embed:test-tiny"}]
n_folds: 3
noise: {enabled: true, modalities: [image], policy: "top-fraction:0.2"}
fusion: {method: logistic}
"""


@pytest.fixture(scope="module")
def demo(demo_catalog: Path) -> pd.DataFrame:
    """The synthetic catalog with absolute image paths (so derived catalogs can live anywhere)."""
    raw = pd.read_csv(demo_catalog, dtype=str, keep_default_na=False)
    raw["image"] = [str(demo_catalog.parent / p) for p in raw["image"]]
    return raw


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path


def _train(catalog: Path, out: Path, config: Path, *extra: str) -> str:
    result = runner.invoke(app, ["train", str(catalog), "--out", str(out), "--config", str(config), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def _roles(model_dir: Path) -> list[tuple[str, str]]:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    return [(e["role"], e["name"]) for e in manifest["models"]]


def _predict(model_dir: Path, catalog: Path, out: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    result = runner.invoke(app, ["predict", str(model_dir), str(catalog), "--out", str(out)])
    assert result.exit_code == 0, result.output
    counts = json.loads(
        next(line[line.index("{") :] for line in result.output.splitlines() if '{"rows"' in line)
    )
    return pd.read_csv(out), counts


@pytest.mark.parametrize("variant", ["no image column", "image column, no usable file"])
def test_text_only_catalog_trains_and_predicts_text_models_only(
    demo: pd.DataFrame, tiny_yaml: Path, tmp_path: Path, variant: str
) -> None:
    frame = demo[["id", "title", "description", "label"]].copy()
    if variant != "no image column":
        frame["image"] = ["" if i % 2 else "/nowhere/missing.png" for i in range(len(frame))]
    frame.to_csv(tmp_path / "texts.csv", index=False)
    output = _train(tmp_path / "texts.csv", tmp_path / "m", tiny_yaml)
    assert _roles(tmp_path / "m") == [("text", "tfidf"), ("text", "embed:test-tiny")]
    assert "image model(s) embed:test-tiny not trained" in output
    assert "image:" not in output.split("validation")[-1]  # the summary lists text models and the fusion only
    # Predicting needs text only: the prediction catalog has no image column at all.
    demo[["id", "title", "description"]].head(30).to_csv(tmp_path / "new.csv", index=False)
    pred, counts = _predict(tmp_path / "m", tmp_path / "new.csv", tmp_path / "p.csv")
    assert len(pred) == 30 and pred["label"].isin(demo["label"]).all()
    assert pred["text_available"].all() and not pred["image_available"].any()
    assert "no_text" in counts and "no_image" not in counts
    result = runner.invoke(
        app, ["evaluate", str(tmp_path / "m"), str(tmp_path / "texts.csv"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(metrics["per_modality"]) == {"text", "fusion"}
    # A catalog with images but no text column gives this model nothing to read: one error, nothing written
    # (every prediction was the class prior before).
    demo[["id", "image", "label"]].head(5).to_csv(tmp_path / "photos.csv", index=False)
    _refused(tmp_path / "m", tmp_path / "photos.csv", tmp_path, "the model reads text (")


def test_image_only_catalog_trains_and_predicts_image_models_only(
    demo: pd.DataFrame, tiny_yaml: Path, tmp_path: Path
) -> None:
    demo[["id", "image", "label"]].to_csv(tmp_path / "images.csv", index=False)
    _, report = read_catalog(tmp_path / "images.csv")
    assert report.no_text_column and "no text column: image-only catalog" in report.summary_lines()
    # One image model left: the fusion passes its probabilities through (the configured logistic is not fit).
    output = _train(tmp_path / "images.csv", tmp_path / "m", tiny_yaml)
    assert _roles(tmp_path / "m") == [("image", "embed:test-tiny")]
    assert "text model(s) tfidf, embed:test-tiny not trained" in output
    assert "fusion (pass-through: one model)" in output
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["fusion"]["method"] == "mean"
    # Predicting needs images only: no text column in the prediction catalog.
    demo[["id", "image"]].head(30).to_csv(tmp_path / "new.csv", index=False)
    pred, counts = _predict(tmp_path / "m", tmp_path / "new.csv", tmp_path / "p.csv")
    assert len(pred) == 30 and not pred["text_available"].any()
    usable = [Path(p).is_file() and not p.endswith("corrupt.png") for p in demo["image"].head(30)]
    assert pred["image_available"].tolist() == usable  # the demo catalog has missing and corrupt images
    assert "no_image" in counts and "no_text" not in counts
    demo[["id", "title", "label"]].head(5).to_csv(tmp_path / "titles.csv", index=False)
    _refused(tmp_path / "m", tmp_path / "titles.csv", tmp_path, "the model reads image (")


def _refused(model_dir: Path, catalog: Path, tmp_path: Path, message: str) -> None:
    """``predict`` and ``evaluate`` refuse ``catalog`` with one error naming what the model reads; no file."""
    for command, out in (("predict", tmp_path / "refused.csv"), ("evaluate", tmp_path / "refused")):
        result = runner.invoke(app, [command, str(model_dir), str(catalog), "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert message in result.output and "no such column" in result.output
        assert not out.exists()


def test_single_model_fusion_is_that_models_probabilities(demo_catalog: Path) -> None:
    df, _ = read_catalog(demo_catalog)
    cfg = TrainConfig.model_validate(
        {"text_models": [{"name": "tfidf"}], "image_models": [], "n_folds": 3, "noise": {"enabled": False}}
    )
    model = train(df, cfg, progress=False)
    assert (
        model.config.fusion.method == "mean" and cfg.fusion.method == "ensemble"
    )  # the caller's is unchanged
    pd.testing.assert_frame_equal(
        pd.DataFrame(model.predict_proba(df.head(40))), pd.DataFrame(model.model_probas(df.head(40))[0])
    )


def test_mostly_missing_images_keep_the_image_model_and_report_the_share(
    demo: pd.DataFrame, tmp_path: Path
) -> None:
    frame = demo.copy()
    frame.loc[frame.index % 10 != 0, "image"] = ""  # 90% of the products name no image
    frame.to_csv(tmp_path / "sparse.csv", index=False)
    df, _ = read_catalog(tmp_path / "sparse.csv")
    cfg = TrainConfig.model_validate(
        {
            "text_models": [{"name": "tfidf"}],
            "image_models": [{"name": "embed:test-tiny"}],
            "n_folds": 3,
            "noise": {"enabled": False},
            "fusion": {"method": "logistic"},
        }
    )
    model = train(df, cfg, progress=False)
    assert [role for _, role, _ in model.models] == ["text", "image"]
    image = model.metrics["modalities"]["image"]
    assert image["models"] == ["embed:test-tiny"] and 0.05 < image["share"] < 0.15
    assert model.metrics["modalities"]["text"]["share"] == 1.0


def test_catalog_with_no_usable_modality_for_the_config_is_a_clear_error() -> None:
    df = pd.DataFrame(
        {"id": list("abcdefgh"), "title": "mug", "description": "", "image": None, "label": list("xyxyxyxy")}
    )
    cfg = TrainConfig.model_validate(
        {
            "text_models": [],
            "image_models": [{"name": "embed:test-tiny"}],
            "n_folds": 2,
            "calibration": {"enabled": False},
        }
    )
    with pytest.raises(ValueError, match=r"no usable image for the configured models \(rows with text: 6"):
        train(df, cfg, progress=False)


# -- ids -----------------------------------------------------------------------------------------------------


def _unusable_ids(tmp_path: Path) -> Path:
    path = tmp_path / "c.csv"
    path.write_text("productid,title,label\n11,red mug,a\n,blue mug,a\n11,green cup,b\n")
    return path


def test_empty_id_error_says_how_to_number_the_rows(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"empty id in 1 rows: row 1 .*--id-column none"):
        read_catalog(_unusable_ids(tmp_path))
    result = runner.invoke(app, ["inspect", str(_unusable_ids(tmp_path))])
    assert result.exit_code == 2 and "--id-column none" in result.output


def test_id_column_none_numbers_the_rows(tmp_path: Path) -> None:
    df, report = read_catalog(_unusable_ids(tmp_path), id_column="none")
    assert df["id"].tolist() == ["0", "1", "2"]
    assert df["productid"].fillna("").tolist() == ["11", "", "11"]  # the unusable column passes through
    assert report.numbered_ids and "ids: row numbers (0, 1, ...)" in report.summary_lines()
    result = runner.invoke(app, ["inspect", str(_unusable_ids(tmp_path)), "--id-column", "NONE"])
    assert result.exit_code == 0, result.output and "rows: 3" in result.output


def test_id_column_none_on_train_predict_evaluate_and_audit(
    demo: pd.DataFrame, tiny_yaml: Path, tmp_path: Path
) -> None:
    frame = demo[["title", "description", "label"]].assign(id="")  # an id column with nothing in it
    frame.to_csv(tmp_path / "c.csv", index=False)
    args = ["--out", str(tmp_path / "m"), "--config", str(tiny_yaml)]
    refused = runner.invoke(app, ["train", str(tmp_path / "c.csv"), *args])
    assert refused.exit_code == 2 and "--id-column none" in refused.output
    _train(tmp_path / "c.csv", tmp_path / "m", tiny_yaml, "--id-column", "none")
    # The bundle remembers the mapping: predict and evaluate number the rows of the same kind of catalog.
    pred, _ = _predict(tmp_path / "m", tmp_path / "c.csv", tmp_path / "p.csv")
    assert pred["id"].tolist() == list(range(len(frame)))
    result = runner.invoke(
        app, ["evaluate", str(tmp_path / "m"), str(tmp_path / "c.csv"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    # predict can also override the mapping for a catalog that does have ids.
    demo[["id", "title", "description"]].head(5).to_csv(tmp_path / "ids.csv", index=False)
    result = runner.invoke(
        app, ["predict", str(tmp_path / "m"), str(tmp_path / "ids.csv"), "--out", str(tmp_path / "q.csv"),
              "--id-column", "id"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert pd.read_csv(tmp_path / "q.csv", dtype=str)["id"].tolist() == demo["id"].head(5).tolist()
    audit = runner.invoke(
        app, ["audit", str(tmp_path / "c.csv"), "--out", str(tmp_path / "a"), "--id-column", "none", "--folds", "3",
              "--image-embedder", "test-tiny"]
    )  # fmt: skip
    assert audit.exit_code == 0, audit.output
