"""Model-outputs folders and tables: round trips, checks with clear errors, fuser save/load without pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prodcat.predictions import (
    Fuser,
    ModelOutputs,
    ModelOutputsError,
    load_fuser,
    outputs_to_table,
    predictions_table,
    read_model_outputs,
    save_fuser,
    write_model_outputs,
)
from prodcat.registry import create

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CLASSES = ["10", "2403", "40"]  # deliberately not in string-sorted order


def _outputs(n: int = 60, *, seed: int = 0) -> ModelOutputs:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    good = np.full((n, 3), 0.05)
    good[np.arange(n), y] = 0.9
    index = pd.DataFrame({"productid": [f"p{i}" for i in range(n)], "prdtypecode": [CLASSES[k] for k in y]})
    probas = {"text_a": good, "image_b": rng.dirichlet(np.ones(3), n)}
    return ModelOutputs(index=index, classes=list(CLASSES), probas=probas, label_column="prdtypecode")


@pytest.mark.parametrize("target", ["folder", "t.csv", "t.parquet", "t.tsv"])
def test_round_trip(tmp_path: Path, target: str) -> None:
    out = _outputs()
    path = write_model_outputs(out, tmp_path / target)
    back = read_model_outputs(path)
    assert back.classes == CLASSES and sorted(back.models) == ["image_b", "text_a"]
    assert back.label_column == "prdtypecode"
    assert list(back.labels) == list(out.labels)  # type: ignore[arg-type]
    np.testing.assert_allclose(back.probas["text_a"], out.probas["text_a"], atol=1e-6)
    assert back.n == 60


def test_integer_classes_and_labels_become_strings(tmp_path: Path) -> None:
    out = _outputs()
    path = write_model_outputs(out, tmp_path / "f")
    (path / "classes.json").write_text(json.dumps([10, 2403, 40]))
    back = read_model_outputs(path, models=["text_a"])
    assert back.classes == CLASSES and back.models == ["text_a"]
    assert set(back.require_labels()) == set(CLASSES)


def test_label_column_choice(tmp_path: Path) -> None:
    out = _outputs()
    out.index = out.index.rename(columns={"prdtypecode": "category"})
    out.label_column = "category"
    path = write_model_outputs(out, tmp_path / "f")
    assert read_model_outputs(path).labels is None
    with pytest.raises(ModelOutputsError, match="no label column"):
        read_model_outputs(path).require_labels()
    assert read_model_outputs(path, label_column="category").labels is not None
    with pytest.raises(ModelOutputsError, match="not found"):
        read_model_outputs(path, label_column="nope")


def test_errors_are_specific(tmp_path: Path) -> None:
    path = write_model_outputs(_outputs(), tmp_path / "f")
    with pytest.raises(ModelOutputsError, match=r"missing model\(s\) \['image_c'\]"):
        read_model_outputs(path, models=["text_a", "image_c"])
    np.save(path / "short.npy", np.full((10, 3), 1 / 3))
    with pytest.raises(ModelOutputsError, match="'short' has shape"):
        read_model_outputs(path)
    (path / "short.npy").unlink()
    np.save(path / "logit.npy", np.random.default_rng(0).normal(size=(60, 3)))
    with pytest.raises(ModelOutputsError, match="softmax"):
        read_model_outputs(path)
    (path / "logit.npy").unlink()
    (path / "classes.json").unlink()
    with pytest.raises(ModelOutputsError, match=r"no classes\.json"):
        read_model_outputs(path)
    with pytest.raises(ModelOutputsError, match="no such"):
        read_model_outputs(tmp_path / "absent")
    bad_labels = _outputs()
    bad_labels.index.loc[0, "prdtypecode"] = "999"
    with pytest.raises(ModelOutputsError, match="not in classes"):
        bad_labels.require_labels()


def test_table_checks(tmp_path: Path) -> None:
    table = outputs_to_table(_outputs())
    table = table.drop(columns=["image_b/40"])
    with pytest.raises(ModelOutputsError, match="different classes"):
        read_model_outputs(_write(table, tmp_path / "t.csv"))
    with pytest.raises(ModelOutputsError, match="no probability columns"):
        read_model_outputs(_write(pd.DataFrame({"a": [1]}), tmp_path / "u.csv"))
    with pytest.raises(ModelOutputsError, match="unsupported"):
        read_model_outputs(_write(pd.DataFrame({"a": [1]}), tmp_path / "u.json"))


def _write(table: pd.DataFrame, path: Path) -> Path:
    table.to_csv(path, index=False)
    return path


def test_with_classes_reorders_and_refuses_other_sets() -> None:
    out = _outputs()
    re = out.with_classes(["40", "10", "2403"])
    np.testing.assert_array_equal(re.probas["text_a"][:, 0], out.probas["text_a"][:, 2])
    with pytest.raises(ModelOutputsError, match="class set differs"):
        out.with_classes(["10", "40", "99"])
    assert out.stack(["image_b", "text_a"]).shape == (60, 6)


@pytest.mark.parametrize("method", ["mean", "paper-mlp-tiny", "gbdt"])
def test_fuser_save_load_without_pickle(tmp_path: Path, method: str) -> None:
    out = _outputs(90)
    est = create("fusion", method, classes=out.classes, n_models=2)
    est.fit(out.stack(["text_a", "image_b"]), out.require_labels())
    fuser = Fuser(est, models=["text_a", "image_b"], classes=out.classes, method=method)
    folder = save_fuser(fuser, tmp_path / "fz")
    assert sorted(p.name for p in folder.iterdir()) == ["arrays.safetensors", "manifest.json"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["models"] == ["text_a", "image_b"] and manifest["classes"] == CLASSES
    back = load_fuser(folder)
    np.testing.assert_allclose(back.predict_proba(out), fuser.predict_proba(out), atol=1e-9)
    np.testing.assert_array_equal(back.predict(out), fuser.predict(out))
    # The arrays are checked against the manifest's sha256 (they were read unchecked before).
    data = bytearray((folder / "arrays.safetensors").read_bytes())
    data[-1] ^= 1
    (folder / "arrays.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelOutputsError, match="sha256 does not match"):
        load_fuser(folder)


def test_fuser_selects_models_reorders_classes_and_refuses_missing(tmp_path: Path) -> None:
    out = _outputs(90)
    est = create("fusion", "mean", classes=out.classes).fit(
        out.stack(["text_a", "image_b"]), out.require_labels()
    )
    fuser = Fuser(est, models=["text_a", "image_b"], classes=out.classes, method="mean")
    extra = ModelOutputs(
        out.index, out.classes, {**out.probas, "other": out.probas["image_b"]}, "prdtypecode"
    )
    shuffled = extra.with_classes(["40", "2403", "10"])
    np.testing.assert_allclose(fuser.predict_proba(shuffled), fuser.predict_proba(out))
    lacking = ModelOutputs(out.index, out.classes, {"text_a": out.probas["text_a"]}, "prdtypecode", "dir_x")
    with pytest.raises(ModelOutputsError, match=r"needs models .* dir_x lacks \['image_b'\]"):
        fuser.predict(lacking)
    with pytest.raises(ModelOutputsError, match="not a fuser folder"):
        load_fuser(tmp_path)


def test_predictions_table_is_itself_readable(tmp_path: Path) -> None:
    out = _outputs()
    proba = out.probas["text_a"]
    table = predictions_table(out, proba, out.classes)
    assert {"prediction", "confidence", "fused/10"} <= set(table.columns)
    table.to_csv(tmp_path / "p.csv", index=False)
    back = read_model_outputs(tmp_path / "p.csv")
    assert back.models == ["fused"]
    np.testing.assert_allclose(back.probas["fused"], proba)


@pytest.mark.realdata
def test_reads_the_real_model_outputs() -> None:
    folder = SHARED / "rakuten" / "model_outputs" / "split_a_val"
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder}")
    out = read_model_outputs(folder, models=["text_camembert", "image_swin"])
    assert out.n == 10827 and len(out.classes) == 27 and out.label_column == "prdtypecode"
    y = out.require_labels()
    acc = np.mean(np.asarray(out.classes)[out.probas["text_camembert"].argmax(1)] == y)
    assert acc > 0.85
