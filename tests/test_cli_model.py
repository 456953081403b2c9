"""train -> evaluate -> predict through the command line, as a user runs them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

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
        app,
        ["train", str(demo_catalog), "--out", str(out), "--config", str(tmp / "tiny.yaml"),
         "--target-precision", "0.8"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "validation" in result.output and "fusion" in result.output
    assert "auto-accepted at target precision 0.8" in result.output
    return out


def test_evaluate_writes_metrics_and_report(model_dir: Path, demo_catalog: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(model_dir), str(demo_catalog), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert {"macro_f1", "macro_f1_ci", "n", "per_modality"} <= set(metrics)
    assert set(metrics["per_modality"]) == {"text", "image", "fusion"}
    assert metrics["n"] == 240
    for f in (
        "confusion.png",
        "per_class.csv",
        "report.html",
        "table.csv",
        "reliability.png",
        "risk_coverage.png",
    ):
        assert (tmp_path / "r" / f).stat().st_size > 0
    page = (tmp_path / "r" / "report.html").read_text()
    assert "data:image/png;base64" in page and "Auto-accepted at target precision 0.8" in page
    cal = metrics["calibration"]
    assert {"ece", "brier"} <= set(cal["before"]) and {"ece", "brier"} <= set(cal["after"])
    assert cal["acceptance"]["target_precision"] == 0.8 and 0 <= cal["acceptance"]["coverage"] <= 1
    assert set(cal["coverage_at"]) == {"0.95", "0.98", "0.99"}
    assert set(cal["per_model"]) == {"text:tfidf", "image:embed:test-tiny"}
    assert all("after" in v for v in cal["per_model"].values())  # per-model temperatures were learnt


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


def test_report_on_a_catalog_lacking_classes_agrees_with_itself(
    model_dir: Path, demo_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23: the table, the headline and the intervals use one label set; absent classes are set apart."""
    import prodcat.report
    from prodcat.evaluate import weakest_classes

    demo = pd.read_csv(demo_catalog)
    dropped = sorted(demo["label"].unique())[:2]
    part = demo.loc[~demo["label"].isin(dropped)]
    part.to_csv(demo_catalog.parent / "part.csv", index=False)
    monkeypatch.setattr(prodcat.report, "MAX_CONFUSION_CLASSES", 3)  # as if the catalog had hundreds
    result = runner.invoke(
        app, ["evaluate", str(model_dir), str(demo_catalog.parent / "part.csv"), "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"macro_f1", "macro_f1_ci", "n", "per_modality", "per_model"} <= set(metrics)
    ls = metrics["label_set"]
    assert ls["model_classes_absent_from_data"] == dropped and ls["n_classes_averaged"] == 6
    table = pd.read_csv(tmp_path / "table.csv", index_col="method")
    assert table.loc["fusion", "macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert metrics["per_modality"]["fusion"] == pytest.approx(metrics["macro_f1"])
    for key, s in metrics["per_model"].items():
        assert table.loc[key, "macro_f1"] == pytest.approx(s["macro_f1"])
    assert (table["ci_low"] <= table["macro_f1"]).all() and (table["macro_f1"] <= table["ci_high"]).all()
    per_class = pd.read_csv(tmp_path / "per_class.csv")
    assert per_class.loc[per_class["support"] > 0, "f1"].mean() == pytest.approx(metrics["macro_f1"])
    assert per_class.loc[per_class["class"].isin(dropped), "f1"].isna().all()
    page = (tmp_path / "report.html").read_text()
    weakest = page.split('id="classes"')[1].split("</table>")[0]
    assert not any(
        f"<td>{c}</td>" in weakest for c in dropped
    )  # weakest classes only among classes with support
    assert not (tmp_path / "confusion.png").exists() and "No confusion matrix" in page
    assert (tmp_path / "per_class_f1.png").is_file() and (tmp_path / "confusions.csv").is_file()
    # gallery: most confident errors with their thumbnails copied next to the page, never the catalog's paths
    wrong = pd.read_csv(tmp_path / "predictions.csv").query("label != predicted")
    if len(wrong):
        assert "Most confident errors" in page and 'src="thumbs/' in page
        srcs = re.findall(r'<img[^>]* src="([^"]*)"', page)
        assert srcs and all(src.startswith(("thumbs/", "data:image/png;base64,")) for src in srcs)
        top = wrong.sort_values("confidence", ascending=False)["id"].iloc[0]
        assert f'data-id="{top}"' in page
        weakest_class = weakest_classes(per_class.astype({"class": str}))["class"].iloc[0]
        assert f"Errors in weak class “{weakest_class}”" in page


def _expected_decision(row: Any, state: dict[str, Any]) -> str:
    """What calibration.json says about a prediction row: its group's threshold for its label."""
    group = "+".join(r for r, ok in (("text", row.text_available), ("image", row.image_available)) if ok)
    rule = state["acceptance"].get(group or "none")
    if rule is None:
        return "review"
    t = rule["class_thresholds"].get(str(row.label), rule["global_threshold"])
    return "auto" if t is not None and row.confidence >= t else "review"


def test_predict_decides_with_the_bundle_thresholds_and_writes_the_review_queue(
    model_dir: Path, demo_catalog: Path, tmp_path: Path
) -> None:
    out, queue = tmp_path / "pred.csv", tmp_path / "queue.parquet"
    result = runner.invoke(
        app, ["predict", str(model_dir), str(demo_catalog), "--out", str(out), "--review-queue", str(queue)]
    )
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(out)
    assert pred["confidence"].between(0, 1).all()
    assert set(pred["decision"]) == {"auto", "review"}
    state = json.loads((model_dir / "calibration.json").read_text())
    assert [_expected_decision(r, state) for r in pred.itertuples()] == pred["decision"].tolist()
    reviewed = pred[pred["decision"] == "review"]
    q = pd.read_parquet(queue)
    assert f"{len(q)} products to review" in result.output
    assert sorted(q["id"].astype(str)) == sorted(reviewed["id"].astype(str))
    assert q["p_error"].is_monotonic_decreasing and q["review_rank"].tolist() == list(range(1, len(q) + 1))


def test_bundle_keeps_the_calibration_and_refuses_an_edited_one(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from prodcat.bundle import BundleError, load_model

    model, manifest = load_model(model_dir)
    classes = [str(c) for c in model.classes]
    assert model.calibration.to_dict(classes) == json.loads((model_dir / "calibration.json").read_text())
    assert "calibration.json" in manifest["files"]
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    state = json.loads((copy / "calibration.json").read_text())
    state["acceptance"]["text+image"]["global_threshold"] = 0.0  # accept everything
    (copy / "calibration.json").write_text(json.dumps(state))
    with pytest.raises(BundleError, match=r"calibration\.json: checksum mismatch"):
        load_model(copy)


def test_report_of_a_model_without_calibration(model_dir: Path, demo_catalog: Path, tmp_path: Path) -> None:
    """A bundle trained without (or before) the calibration stage still gets its report: everything to review."""
    from prodcat.bundle import load_model
    from prodcat.catalog import read_catalog
    from prodcat.report import evaluate_to_dir

    model, _ = load_model(model_dir)
    model.calibration = None
    df, _ = read_catalog(demo_catalog)
    metrics = evaluate_to_dir(model, df, tmp_path, thumbnails="none")
    assert "acceptance" not in metrics["calibration"]
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "no acceptance rule" in page and "Most confident errors" in page


def test_server_answers_with_the_bundle_decision_and_confidence(model_dir: Path, demo_catalog: Path) -> None:
    from fastapi.testclient import TestClient

    from prodcat.bundle import load_bundle
    from prodcat.serve import ServeSettings, create_app

    predictor = load_bundle(model_dir)
    demo = pd.read_csv(demo_catalog).head(8)
    items = [{"id": str(r.id), "title": str(r.title)} for r in demo.itertuples()]
    expected = predictor.predict_frame(pd.DataFrame(items).assign(description="", image=None))
    with TestClient(create_app(predictor, settings=ServeSettings())) as client:
        response = client.post("/predict/batch", json=items)
    assert response.status_code == 200, response.text
    preds = response.json()["predictions"]
    assert [p["decision"] for p in preds] == expected["decision"].tolist()
    assert [p["confidence"] for p in preds] == pytest.approx(expected["confidence"].tolist())
