"""The evaluation report on a small real sample past the confusion-matrix limit (fashion type x colour)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from prodcat.evaluate import MAX_CONFUSION_CLASSES


@pytest.mark.slow
@pytest.mark.realdata
def test_report_at_more_classes_than_a_matrix_can_show(shared_data: Path, tmp_path: Path) -> None:
    from prodcat.catalog import read_catalog
    from prodcat.config import FusionConfig, ModelSpec, NoiseConfig, TrainConfig
    from prodcat.pipeline import train
    from prodcat.report import evaluate_to_dir

    raw = pd.read_csv(shared_data / "fashion" / "products.csv")
    raw["label"] = raw["label"] + " / " + raw["base_colour"].fillna("unknown")
    counts = raw["label"].value_counts()
    classes = counts.index[counts >= 12][:90]  # 90 classes, 8 products each for training, 4 for evaluation
    sample = raw.loc[raw["label"].isin(classes)].groupby("label").head(12).reset_index(drop=True)
    sample["image"] = [str(shared_data / "fashion" / p) for p in sample["image"]]
    sample.to_csv(tmp_path / "sample.csv", index=False)
    df, _ = read_catalog(tmp_path / "sample.csv", text_columns=["title_masked"], label_column="label")
    held = df.groupby("label").cumcount() >= 8
    config = TrainConfig(
        text_models=[ModelSpec(name="tfidf")],
        image_models=[ModelSpec(name="embed:test-tiny")],
        validation_fraction=0,
        n_folds=3,
        noise=NoiseConfig(enabled=False),
        fusion=FusionConfig(method="mean"),
    )
    model = train(df.loc[~held].reset_index(drop=True), config, progress=False)
    test = df.loc[held & ~df["label"].isin(classes[:3])].reset_index(drop=True)  # 3 known classes absent
    metrics = evaluate_to_dir(model, test, tmp_path / "report", thumbnails="embed")

    assert metrics["label_set"]["n_classes_averaged"] == 87 > MAX_CONFUSION_CLASSES
    assert sorted(metrics["label_set"]["model_classes_absent_from_data"]) == sorted(classes[:3])
    out = tmp_path / "report"
    assert not (out / "confusion.png").exists() and (out / "per_class_f1.png").is_file()
    table = pd.read_csv(out / "table.csv", index_col="method")
    assert table.loc["fusion", "macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert ((table["ci_low"] <= table["macro_f1"]) & (table["macro_f1"] <= table["ci_high"])).all()
    pred = pd.read_csv(out / "predictions.csv", dtype=str)
    from sklearn.metrics import f1_score

    expected = f1_score(pred["label"], pred["predicted"], labels=np.unique(pred["label"]), average="macro")
    assert metrics["macro_f1"] == pytest.approx(expected)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/jpeg;base64,") >= 10 and "Most confident errors" in page
    assert json.loads((out / "metrics.json").read_text())["n"] == len(test)


def test_report_runs_each_model_once_and_matches_separate_calls(
    tiny_bundle: Path, demo_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``prodcat evaluate`` computes each modality model's probabilities (and the fusion) once: the report,
    its metrics and its calibration section all read that one pass, and say what separate calls say."""
    from prodcat.bundle import load_model
    from prodcat.catalog import read_catalog
    from prodcat.model import evaluate_models
    from prodcat.report import evaluate_to_dir

    model, _ = load_model(tiny_bundle)
    df, _ = read_catalog(demo_catalog)
    df = df.head(60).reset_index(drop=True)
    y = df["label"].astype(str).to_numpy()
    expected_metrics = evaluate_models(model, df, y)
    expected_pred = np.asarray(model.predict(df)).astype(str)

    calls: list[str] = []
    for name, _, est in model.models:
        for method in ("predict_proba", "predict_proba_with_mask"):
            original = getattr(est, method, None)
            if original is not None:
                monkeypatch.setattr(est, method, _counted(original, f"{name}.{method}", calls))
    metrics = evaluate_to_dir(model, df, tmp_path / "report", thumbnails="none")

    assert len(calls) == len(model.models)  # one call per modality model, not one per figure
    assert metrics["macro_f1"] == pytest.approx(expected_metrics["macro_f1"])
    assert metrics["per_model"] == expected_metrics["per_model"]
    pred = pd.read_csv(tmp_path / "report" / "predictions.csv", dtype=str)
    assert pred["predicted"].tolist() == expected_pred.tolist()


def _counted(
    method: Callable[[pd.DataFrame], Any], key: str, calls: list[str]
) -> Callable[[pd.DataFrame], Any]:
    def wrapper(X: pd.DataFrame) -> Any:
        calls.append(key)
        return method(X)

    return wrapper
