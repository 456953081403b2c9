"""`prodcat fuse train / evaluate / predict` on tiny synthetic model-output folders (and the real one, slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from prodcat.commands.fuse import app
from prodcat.predictions import ModelOutputs, read_model_outputs, write_model_outputs

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CLASSES = ["10", "40", "1140", "2403"]


def _folder(path: Path, *, n: int = 160, models: tuple[str, ...] = ("text_a", "image_b", "text_c")) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % len(CLASSES)

    def peaked(strength: float) -> np.ndarray:
        z = rng.normal(size=(n, len(CLASSES)))
        z[np.arange(n), y] += strength
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    all_probas = {"text_a": peaked(3.0), "image_b": peaked(1.5), "text_c": rng.dirichlet(np.ones(4), n)}
    index = pd.DataFrame({"productid": np.arange(n), "label": np.asarray(CLASSES)[y]})
    out = ModelOutputs(index, list(CLASSES), {m: all_probas[m] for m in models}, "label")
    return write_model_outputs(out, path)


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_train_evaluate_predict(tmp_path: Path) -> None:
    data = _folder(tmp_path / "val")
    out = _ok(
        [
            "train",
            data,
            "--out",
            tmp_path / "fz",
            "--models",
            "text_a,image_b",
            "--method",
            "mean",
            "--cv",
            "4",
        ]
    )
    assert "4-fold out-of-fold estimate" in out and "saved fuser" in out
    manifest = json.loads((tmp_path / "fz" / "manifest.json").read_text())
    assert manifest["models"] == ["text_a", "image_b"] and manifest["classes"] == CLASSES
    assert manifest["cv"]["oof_macro_f1"] > 0.8

    out = _ok(["evaluate", tmp_path / "fz", data, "--out", tmp_path / "ev", "--n-boot", "100"])
    assert "macro-F1" in out
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {"macro_f1", "macro_f1_ci", "n", "input_models"} <= set(metrics)
    assert metrics["n"] == 160 and set(metrics["input_models"]) == {"text_a", "image_b"}
    lo, hi = metrics["macro_f1_ci"]
    assert lo <= metrics["macro_f1"] <= hi
    assert metrics["macro_f1"] >= metrics["input_models"]["text_a"]["macro_f1"] - 0.02
    per_class = pd.read_csv(tmp_path / "ev" / "per_class.csv", dtype={"class": str})
    assert list(per_class["class"]) == CLASSES
    assert (tmp_path / "ev" / "confusion.png").read_bytes()[:4] == b"\x89PNG"

    _ok(["predict", tmp_path / "fz", data, "--out", tmp_path / "pred.csv"])
    pred = pd.read_csv(tmp_path / "pred.csv", dtype={"prediction": str})
    assert len(pred) == 160 and {"prediction", "confidence", "fused/2403"} <= set(pred.columns)
    assert set(pred["prediction"]) <= set(CLASSES)


def test_evaluate_on_outputs_lacking_a_class_sets_it_apart(tmp_path: Path) -> None:
    """Issue 23: macro-F1 over the classes present; the fuser's other classes are listed, not averaged as 0."""
    data = _folder(tmp_path / "val")
    _ok(["train", data, "--out", tmp_path / "fz", "--models", "text_a,image_b", "--method", "mean"])
    full = read_model_outputs(data)
    keep = (full.index["label"] != "2403").to_numpy()
    part = ModelOutputs(
        full.index.loc[keep], full.classes, {m: p[keep] for m, p in full.probas.items()}, "label"
    )
    write_model_outputs(part, tmp_path / "part")
    out = _ok(["evaluate", tmp_path / "fz", tmp_path / "part", "--out", tmp_path / "ev", "--n-boot", "200"])
    assert "over the 3 classes present (1 of the fuser's classes absent: not averaged)" in out
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["label_set"]["model_classes_absent_from_data"] == ["2403"]
    assert metrics["label_set"]["n_classes_averaged"] == 3
    _ok(["predict", tmp_path / "fz", tmp_path / "part", "--out", tmp_path / "pred.csv"])
    pred = pd.read_csv(tmp_path / "pred.csv", dtype=str)["prediction"].to_numpy()
    y = part.index["label"].to_numpy()
    assert metrics["macro_f1"] == pytest.approx(f1_score(y, pred, labels=CLASSES[:3], average="macro"))
    for v in [metrics, *metrics["input_models"].values()]:
        assert v["macro_f1_ci"][0] <= v["macro_f1"] <= v["macro_f1_ci"][1]
    per_class = pd.read_csv(tmp_path / "ev" / "per_class.csv", dtype={"class": str}).set_index("class")
    assert np.isnan(per_class.loc["2403", "f1"]) and per_class.loc["2403", "support"] == 0


def test_paper_mlp_with_params_and_table_input(tmp_path: Path) -> None:
    data = _folder(tmp_path / "val")
    table = write_model_outputs(read_model_outputs(data), tmp_path / "val.parquet")
    args = ["train", table, "--out", tmp_path / "fz", "--method", "paper-mlp"]
    _ok([*args, "--param", "n_layers=2", "-p", "epochs=4", "-p", "n_splits=3"])
    manifest = json.loads((tmp_path / "fz" / "manifest.json").read_text())
    assert manifest["estimator"]["params"]["n_layers"] == 2
    assert manifest["models"] == ["image_b", "text_a", "text_c"]  # all models by default
    _ok(["evaluate", tmp_path / "fz", data, "--out", tmp_path / "ev", "--n-boot", "50"])


def test_fuser_applies_to_a_folder_with_a_superset_or_subset_of_models(tmp_path: Path) -> None:
    data = _folder(tmp_path / "val")
    _ok(["train", data, "--out", tmp_path / "fz", "--models", "text_a,image_b", "--method", "logistic"])
    subset = _folder(tmp_path / "test", n=40, models=("image_b", "text_a"))
    _ok(["predict", tmp_path / "fz", subset, "--out", tmp_path / "p.parquet"])
    assert len(pd.read_parquet(tmp_path / "p.parquet")) == 40
    lacking = _folder(tmp_path / "other", n=40, models=("text_a", "text_c"))
    result = runner.invoke(
        app, ["predict", str(tmp_path / "fz"), str(lacking), "--out", str(tmp_path / "q.csv")]
    )
    assert result.exit_code == 2
    assert "needs models" in result.output and "image_b" in result.output


def test_clear_errors(tmp_path: Path) -> None:
    data = _folder(tmp_path / "val")
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "f"), "--method", "magic"])
    assert result.exit_code == 2 and "unknown method 'magic'" in result.output
    result = runner.invoke(
        app, ["train", str(data), "--out", str(tmp_path / "f"), "--method", "mean", "-p", "x=1"]
    )
    assert result.exit_code == 2 and "no option(s) ['x']" in result.output
    np.save(data / "logits.npy", np.random.default_rng(0).normal(size=(160, 4)))
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "f"), "--models", "logits"])
    assert result.exit_code == 2 and "softmax" in result.output
    result = runner.invoke(
        app, ["evaluate", str(tmp_path / "nothing"), str(data), "--out", str(tmp_path / "e")]
    )
    assert result.exit_code == 2 and "not a fuser folder" in result.output


def test_table1_command(tmp_path: Path) -> None:
    data = _folder(tmp_path / "val")
    rng = np.random.default_rng(1)
    y = np.arange(160) % len(CLASSES)
    emb = tmp_path / "emb"
    emb.mkdir()
    np.save(emb / "text.npy", np.eye(len(CLASSES))[y] * 3 + rng.normal(size=(160, 4)))
    np.save(emb / "image.npy", rng.normal(size=(160, 6)))
    args = ["table", data, "--text", "text_a", "--image", "image_b", "--out", tmp_path / "t1", "--folds", "4"]
    out = _ok(
        [*args, "--method", "mean", "--members", "mean+logistic+mean[pooling=linear]", "--embeddings", emb]
    )
    assert "decision-level fusion" in out
    result = pd.read_csv(tmp_path / "t1" / "table1.csv", index_col=0)
    assert list(result.index) == [
        "text alone",
        "image alone",
        "feature-level fusion",
        "decision-level fusion",
        "ensemble",
    ]
    assert result.loc["text alone", "delta"] == 0 and (result["n"] == 160).all()
    assert result.loc["decision-level fusion", "macro_f1"] > result.loc["image alone", "macro_f1"]
    assert (tmp_path / "t1" / "table1.md").read_text().startswith("| method")


@pytest.mark.slow
@pytest.mark.realdata
def test_real_fuser_applies_unchanged_to_a_subset_folder(tmp_path: Path) -> None:
    """Train on split_a_val, apply to a folder shaped like the held-back test split (subset of the models)."""
    folder = SHARED / "rakuten" / "model_outputs" / "split_a_val"
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder}")
    _ok(
        [
            "train",
            folder,
            "--out",
            tmp_path / "fz",
            "--models",
            "text_camembert,image_swin",
            "--method",
            "mean",
        ]
    )
    test_models = ["text_camembert", "text_xlmr_f1", "text_xlmr_loss", "text_tfidf", "image_swin"]
    sub = read_model_outputs(folder, models=test_models)
    rows = np.arange(0, sub.n, 5)
    small = ModelOutputs(
        sub.index.iloc[rows].reset_index(drop=True),
        sub.classes,
        {m: p[rows] for m, p in sub.probas.items()},
        sub.label_column,
    )
    test_like = write_model_outputs(small, tmp_path / "test_like")
    _ok(["evaluate", tmp_path / "fz", test_like, "--out", tmp_path / "ev", "--n-boot", "200"])
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["macro_f1"] > metrics["input_models"]["text_camembert"]["macro_f1"]
