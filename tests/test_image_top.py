"""The fine-tuned-top image model: the network split, cached activations, training, persistence (tiny random
networks, no weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from prodcat import registry
from prodcat.image.activations import LiteActivations, build_lite_net, build_lite_split
from prodcat.image.top import LiteTopClassifier
from prodcat.safe_io import dumps_estimator, loads_estimator

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 50, 230)}


def _photo(path: Path, colour: tuple[int, int, int], rng: np.random.Generator) -> str:
    noise = rng.integers(-25, 26, size=(40, 30, 3))
    pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture
def colour_catalog(tmp_path: Path) -> pd.DataFrame:
    """36 products, 3 colour classes, one 30x40 photo each; product 0 has none."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(36):
        label = list(COLOURS)[i % 3]
        image = None if i == 0 else _photo(tmp_path / f"p{i}.png", COLOURS[label], rng)
        rows.append({"id": str(i), "title": "", "description": "", "image": image, "label": label})
    return pd.DataFrame(rows)


def _tiny(**params: Any) -> LiteTopClassifier:
    return registry.create("image-model", "test-tiny-lite-top", **{"progress": False, **params})


def test_split_reproduces_the_network_and_onnx_matches_torch(tmp_path: Path) -> None:
    import torch

    net = build_lite_net("efficientnet-lite0", tiny=True)
    lower, top = build_lite_split(net, 2, 5)
    x = torch.randint(0, 256, (3, 64, 48, 3), dtype=torch.uint8)
    with torch.no_grad():
        whole = net.extract_features((x.permute(0, 3, 1, 2).float() - 127.0) / 128.0).mean(dim=(2, 3))
        maps = lower.maps(x)  # (2 * 3, C, h, w): photos then mirrors
        np.testing.assert_allclose(top.features(maps[:3]).numpy(), whole.numpy(), atol=1e-4)
        mirrored = net.extract_features((x.flip(2).permute(0, 3, 1, 2).float() - 127.0) / 128.0)
        np.testing.assert_allclose(
            top.features(maps[3:]).numpy(), mirrored.mean(dim=(2, 3)).numpy(), atol=1e-4
        )
    batch = x.numpy()
    onnx = LiteActivations(
        train_stages=2, tiny=True, image_size=64, aspect=0.75, cache_dir=tmp_path, progress=False
    )
    eager = LiteActivations(
        train_stages=2, tiny=True, image_size=64, aspect=0.75, backend="torch", progress=False
    )
    assert onnx.input_shape == (64, 48) and onnx.dim == 2 * int(np.prod(onnx.map_shape))
    np.testing.assert_allclose(onnx._forward(batch), eager._forward(batch), atol=1e-4)


def test_more_train_stages_cut_earlier() -> None:
    a1 = LiteActivations(train_stages=1, tiny=True, image_size=64, backend="torch")
    a2 = LiteActivations(train_stages=2, tiny=True, image_size=64, backend="torch")
    assert a2.map_shape[1] * a2.map_shape[2] > a1.map_shape[1] * a1.map_shape[2]  # a larger map, earlier
    with pytest.raises(ValueError, match="train_stages"):
        LiteActivations(train_stages=0, tiny=True, backend="torch").map_shape  # noqa: B018


def test_fit_predict_contract_and_missing_photo(colour_catalog: pd.DataFrame) -> None:
    est = _tiny(max_epochs=2).fit(colour_catalog, colour_catalog["label"])
    proba, available = est.predict_proba_with_mask(colour_catalog)
    assert proba.shape == (36, 3) and list(est.classes_) == ["blue", "green", "red"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert not available[0] and available[1:].all()
    np.testing.assert_allclose(proba[0], est.prior_)  # no photo: the class prior
    assert est.n_photos_ + 0 < 35  # the inner split's products are held out of training
    assert 1 <= est.best_epoch_ <= 2 and len(est.history_) <= 2


def test_learns_colours(colour_catalog: pd.DataFrame) -> None:
    est = _tiny(max_epochs=12, patience=12, lr=3e-3, val_size=0.0).fit(
        colour_catalog, colour_catalog["label"]
    )
    pred = est.predict(colour_catalog)[1:]
    assert np.mean(pred == colour_catalog["label"].to_numpy()[1:]) > 0.8


def test_activations_are_cached_between_fits(
    colour_catalog: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    forward = LiteActivations._forward

    def counting(self: LiteActivations, batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return forward(self, batch)

    monkeypatch.setattr(LiteActivations, "_forward", counting)
    _tiny(max_epochs=1, cache_dir=str(tmp_path)).fit(colour_catalog, colour_catalog["label"])
    assert sum(calls) == 35  # each photo once (its mirror comes from the same pass)
    _tiny(max_epochs=1, cache_dir=str(tmp_path), lr=0.01).fit(colour_catalog, colour_catalog["label"])
    assert sum(calls) == 35  # the second model reads them from the cache


def test_saved_and_loaded_through_the_allow_list(colour_catalog: pd.DataFrame) -> None:
    est = _tiny(max_epochs=1).fit(colour_catalog, colour_catalog["label"])
    loaded = loads_estimator(dumps_estimator(est))
    np.testing.assert_allclose(
        loaded.predict_proba(colour_catalog), est.predict_proba(colour_catalog), atol=1e-6
    )
    assert loaded.backbone().fingerprint == est.backbone().fingerprint


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"pooling": "median"}, "pooling"),
        ({"flip": False, "tta": True}, "tta needs flip"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"val_size": 1.0}, "val_size"),
        ({"image_size": 8}, "image_size"),
        ({"backend": "tf"}, "backend"),
    ],
)
def test_check_params_names_the_bad_setting(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _tiny(**params).check_params()


def test_registered_variants_build_with_imagenet_defaults() -> None:
    for name, variant in (
        ("effnet-lite0-top", "efficientnet-lite0"),
        ("effnet-lite2-top", "efficientnet-lite2"),
    ):
        est = registry.create("image-model", name)
        assert isinstance(est, LiteTopClassifier) and est.variant == variant and not est.tiny
        est.check_params()


def test_trains_in_the_pipeline_and_predicts_from_a_bundle(demo_catalog: Path, tmp_path: Path) -> None:
    """Any config can name the model: K-fold OOF, noise down-weighting, refit, bundle save and load."""
    from prodcat.bundle import load_bundle, save_bundle
    from prodcat.catalog import read_catalog
    from prodcat.config import TrainConfig
    from prodcat.pipeline import train

    df = read_catalog(demo_catalog)[0].iloc[::3].reset_index(drop=True)  # 80 products, 8 classes
    config = {
        "text_models": [{"name": "embed:test-tiny"}],
        "image_models": [{"name": "test-tiny-lite-top", "params": {"max_epochs": 1, "progress": False}}],
        "n_folds": 2, "validation_fraction": 0.2, "fusion": {"method": "mean"}, "cache_dir": None,
        "calibration": {"enabled": False},
    }  # fmt: skip
    model = train(df, TrainConfig.model_validate(config), progress=False)
    predictor = load_bundle(save_bundle(model, tmp_path / "m"))
    out = predictor.predict_frame(df)
    from prodcat.image.decode import decode_image

    decodable = [isinstance(p, str) and decode_image(p).ok for p in df["image"]]
    assert out["image_available"].tolist() == decodable and out["label"].notna().all()


def test_zero_weights_leave_rows_out(colour_catalog: pd.DataFrame) -> None:
    """Rows weighted 0 (noise cleaning) do not train, and batches holding only such rows are skipped (their loss
    was 0 / 0: NaN weights before)."""
    y = colour_catalog["label"].to_numpy()
    w = np.zeros(len(y))
    w[[i for c in ("red", "green") for i in np.flatnonzero(y == c)[:2]]] = 1.0  # 4 of 36 rows count
    est = _tiny(max_epochs=6, patience=6, lr=3e-3, val_size=0.0, batch_size=4)
    proba = est.fit(colour_catalog, y, sample_weight=w).predict_proba(colour_catalog)
    assert np.all(np.isfinite(proba)) and est.prior_[list(est.classes_).index("blue")] == 0
