"""Several photos per product: catalog parsing (``;`` lists, several image columns), each photo embedded once,
pooling, and products with 0, 1 and 3 photos through the image models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from prodcat import registry
from prodcat.catalog import read_catalog
from prodcat.image.encoders import TinyImageEmbedder
from prodcat.photos import PHOTOS_COLUMN, photo_lists, pool

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 50, 230)}


def _save(folder: Path, name: str, colour: tuple[int, int, int], shade: int = 0) -> str:
    pixels = np.full((40, 30, 3), np.clip(np.array(colour) + shade, 0, 255), dtype=np.uint8)
    pixels[:8] = 255  # a white band
    pixels[0, : len(name)] = [
        [ord(c)] * 3 for c in name
    ]  # every file's bytes differ (the cache dedups by content)
    Image.fromarray(pixels).save(folder / name)
    return name


@pytest.fixture
def multi_catalog(tmp_path: Path) -> Path:
    """30 products of 3 colour classes: product 0 names no photo, 1 names one missing file, every third has one
    photo, the others three (``;``-joined, shades of their colour; one of product 2's files is missing)."""
    rows = []
    for i in range(30):
        label = list(COLOURS)[i % 3]
        names = [
            _save(tmp_path, f"p{i}_{k}.png", COLOURS[label], 20 * k) for k in range(1 if i % 3 == 0 else 3)
        ]
        if i == 0:
            names = []
        if i == 1:
            names = ["gone.png"]
        if i == 2:
            names[1] = "missing.png"
        rows.append({"id": f"p{i}", "title": f"product {i}", "image": ";".join(names), "label": label})
    pd.DataFrame(rows).to_csv(tmp_path / "catalog.csv", index=False)
    return tmp_path / "catalog.csv"


def test_reader_splits_photo_lists(multi_catalog: Path) -> None:
    df, report = read_catalog(multi_catalog)
    folder = multi_catalog.parent.resolve()
    assert df[PHOTOS_COLUMN].iloc[0] == () and pd.isna(df["image"].iloc[0])
    assert df[PHOTOS_COLUMN].iloc[4] == tuple(str(folder / f"p4_{k}.png") for k in range(3))
    assert df["image"].iloc[4] == str(folder / "p4_0.png")
    assert df["image"].iloc[1] == str(folder / "gone.png")  # named, none exists: reported missing
    assert report.no_image == ["p0"] and report.missing_image == ["p1"]


def test_reader_joins_several_image_columns(tmp_path: Path) -> None:
    front = _save(tmp_path, "f.png", COLOURS["red"])
    back = _save(tmp_path, "b.png", COLOURS["red"], 30)
    raw = pd.DataFrame(
        {"id": ["a", "b", "c"], "title": ["x", "y", "z"], "label": ["u", "u", "v"],
         "front": [front, None, None], "back": [back, back, None]}
    )  # fmt: skip
    raw.to_csv(tmp_path / "c.csv", index=False)
    for spec in ("front,back", ["front", "back"]):
        df, report = read_catalog(tmp_path / "c.csv", image_column=spec)
        assert [len(p) for p in df[PHOTOS_COLUMN]] == [2, 1, 0]
        assert df["image"].iloc[1] == str((tmp_path / back).resolve()) and report.no_image == ["c"]
        assert "front" not in df.columns and "back" not in df.columns


def test_single_photo_catalog_has_no_photo_lists(tmp_path: Path) -> None:
    name = _save(tmp_path, "one.png", COLOURS["blue"])
    pd.DataFrame({"id": ["a"], "title": ["t"], "image": [name]}).to_csv(tmp_path / "c.csv", index=False)
    df, _ = read_catalog(tmp_path / "c.csv")
    assert PHOTOS_COLUMN not in df.columns and df["image"].iloc[0].endswith("one.png")


@pytest.mark.parametrize("how", ["mean", "max"])
def test_pool(how: str) -> None:
    values = np.array([[1.0, 4.0], [3.0, 0.0], [5.0, 5.0], [9.0, 9.0]], dtype=np.float32)
    ok = np.array([True, True, True, False])
    owner = np.array([0, 0, 2, 2])
    out, available = pool(values, ok, owner, 3, how)
    expected = [[2.0, 2.0] if how == "mean" else [3.0, 4.0], [0.0, 0.0], [5.0, 5.0]]
    np.testing.assert_allclose(out, expected)
    assert available.tolist() == [True, False, True]


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    forward = TinyImageEmbedder._forward

    def counting(self: Any, batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return forward(self, batch)

    monkeypatch.setattr(TinyImageEmbedder, "_forward", counting)
    return calls


def test_embedding_model_pools_each_photo_once(multi_catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    df, _ = read_catalog(multi_catalog)
    calls = _counting(monkeypatch)
    est = registry.create("image-model", "embed:test-tiny")
    vectors, available = est.embed(df)
    usable = sum(Path(p).is_file() for row in df[PHOTOS_COLUMN] for p in row)
    assert sum(calls) == usable  # every decodable photo once
    assert not available[0] and not available[1] and available[2:].all()
    singles, _ = est.embed(pd.Series([p for p in df[PHOTOS_COLUMN].iloc[4]]))
    np.testing.assert_allclose(vectors[4], singles.mean(axis=0), rtol=1e-6)  # three photos: their mean
    two, _ = est.embed(pd.Series([df[PHOTOS_COLUMN].iloc[2][0], df[PHOTOS_COLUMN].iloc[2][2]]))
    np.testing.assert_allclose(vectors[2], two.mean(axis=0), rtol=1e-6)  # the missing file is skipped
    proba = est.fit(df, df["label"]).predict_proba(df)
    np.testing.assert_allclose(proba[:2], np.tile(est.prior_, (2, 1)))  # no usable photo: image-missing


def test_top_model_with_0_1_and_3_photos(multi_catalog: Path) -> None:
    df, _ = read_catalog(multi_catalog)
    est = registry.create("image-model", "test-tiny-lite-top", max_epochs=2, progress=False)
    proba, available = est.fit(df, df["label"]).predict_proba_with_mask(df)
    assert available.tolist() == [False, False] + [True] * 28
    np.testing.assert_allclose(proba[:2], np.tile(est.prior_, (2, 1)))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    photos = photo_lists(df)[5]
    per_photo = est.predict_proba(pd.DataFrame({"image": photos}))
    np.testing.assert_allclose(proba[5], per_photo.mean(axis=0), atol=1e-6)  # mean of its photos


def test_photo_lists_of_bare_sequences() -> None:
    assert photo_lists(["a.png", None, ("b.png", "", "c.png"), float("nan")]) == [
        ["a.png"],
        [],
        ["b.png", "c.png"],
        [],
    ]


def test_cli_image_columns_flag(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from prodcat.cli import app

    front = _save(tmp_path, "f.png", COLOURS["red"])
    pd.DataFrame({"id": ["a"], "title": ["x"], "label": ["u"], "front": [front], "back": [front]}).to_csv(
        tmp_path / "c.csv", index=False
    )
    runner = CliRunner()
    ok = runner.invoke(app, ["inspect", str(tmp_path / "c.csv"), "--image-columns", "front,back"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["inspect", str(tmp_path / "c.csv"), "--image-columns", "front,side"])
    assert bad.exit_code != 0 and "'side' not found" in bad.output
