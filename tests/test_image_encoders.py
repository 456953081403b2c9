"""Image embedders: the batch pipeline and mask (test-tiny), resizing, the ONNX export cache, EfficientNet-Lite."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from prodcat import registry
from prodcat.image.encoders import EfficientNetLiteEmbedder, TinyImageEmbedder, input_shape, prepare_image
from prodcat.image.onnx_export import cached_onnx_session


def _solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (60, 80)) -> Path:
    Image.new("RGB", size, colour).save(path, quality=95)
    return path


@pytest.fixture
def sources(tmp_path: Path) -> list:
    """Ten items: good images of three colours mixed with every kind of unusable source."""
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    red = _solid(tmp_path / "red.jpg", (220, 20, 20))
    buf = io.BytesIO()
    Image.new("RGB", (50, 50), (20, 20, 220)).save(buf, format="PNG")
    return [
        red,
        None,
        str(_solid(tmp_path / "green.jpg", (20, 200, 20))),
        tmp_path / "missing.jpg",
        buf.getvalue(),
        tmp_path / "empty.jpg",
        Image.new("RGBA", (30, 40), (220, 20, 20, 255)),
        tmp_path / "text.jpg",
        red,
        float("nan"),
    ]


GOOD = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0], dtype=bool)


def test_registry_names() -> None:
    names = registry.available("image-embedder")
    assert {"efficientnet-lite0", "efficientnet-lite2", "test-tiny"} <= set(names)
    emb = registry.create("image-embedder", "test-tiny", cache_dir="ignored", threads=1)
    assert isinstance(emb, TinyImageEmbedder) and emb.dim == 112


def test_tiny_mask_zero_rows_and_order(sources: list) -> None:
    emb = TinyImageEmbedder(batch_size=3, progress=False)
    vec, ok = emb.embed_with_mask(sources)
    assert vec.shape == (10, emb.dim) and vec.dtype == np.float32
    np.testing.assert_array_equal(ok, GOOD)
    assert not vec[~ok].any()  # undecodable -> zero rows
    assert (vec[ok].sum(axis=1) > 0).all()
    # Batching and threading never reorder rows: each row equals the item embedded alone.
    for i in np.flatnonzero(ok):
        np.testing.assert_allclose(vec[i], emb.embed([sources[i]])[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(vec[0], vec[8])  # same file
    np.testing.assert_allclose(vec[0], vec[6], atol=0.05)  # same colour, PIL input with alpha
    assert np.abs(vec[0] - vec[2]).max() > 0.5  # red vs green differ
    np.testing.assert_array_equal(emb.embed(sources), vec)  # deterministic; embed == embed_with_mask[0]


def test_empty_input() -> None:
    vec, ok = TinyImageEmbedder().embed_with_mask([])
    assert vec.shape == (0, 112) and ok.shape == (0,)


def test_histogram_part_sums_to_one(sources: list) -> None:
    vec, ok = TinyImageEmbedder().embed_with_mask(sources)
    np.testing.assert_allclose(vec[ok, :64].sum(axis=1), 1.0, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    w=st.integers(1, 300),
    h=st.integers(1, 300),
    size=st.sampled_from([16, 32, 224]),
    fit=st.sampled_from(["pad", "crop", "stretch"]),
)
def test_prepare_image_shape(w: int, h: int, size: int, fit: str) -> None:
    out = prepare_image(Image.new("RGB", (w, h), (10, 20, 30)), size, fit=fit)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8


def test_prepare_image_pad_keeps_the_product_on_white() -> None:
    tall = Image.new("RGB", (60, 120), (0, 0, 0))
    padded = prepare_image(tall, 64, fit="pad")
    assert (padded[:, :8] == 255).all() and (padded[:, -8:] == 255).all()  # white side bands
    assert (padded[:, 24:40] == 0).all()
    assert (prepare_image(tall, 64, fit="crop") == 0).all()  # crop keeps only product pixels
    with pytest.raises(ValueError, match="fit"):
        prepare_image(tall, 64, fit="zoom")


# ------------------------------------------------------------------------------------------------- ONNX cache


def _tiny_net():
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, S, S, 3) uint8 -> (B, 4)
            return self.conv(x.permute(0, 3, 1, 2).float() / 255.0).mean(dim=(2, 3))

    torch.manual_seed(0)
    return Net().eval(), torch.zeros((1, 16, 16, 3), dtype=torch.uint8)


def test_onnx_cache_hit_and_corruption(tmp_path: Path) -> None:
    import torch

    calls: list[int] = []

    def build():
        calls.append(1)
        return _tiny_net()

    sess, path = cached_onnx_session("tiny", "k1", build, cache_dir=tmp_path, num_threads=1)
    assert path.exists() and path.with_suffix(".json").exists() and len(calls) == 1
    x = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    net, _ = _tiny_net()
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(sess.run(None, {"images": x})[0], expected, atol=1e-5)  # dynamic batch
    # Hit: no export.
    cached_onnx_session("tiny", "k1", build, cache_dir=tmp_path)
    assert len(calls) == 1
    # Partial write: re-exported.
    path.write_bytes(path.read_bytes()[:100])
    sess, _ = cached_onnx_session("tiny", "k1", build, cache_dir=tmp_path)
    assert len(calls) == 2
    np.testing.assert_allclose(sess.run(None, {"images": x})[0], expected, atol=1e-5)
    # Lost sidecar: re-exported. Different key: separate file.
    path.with_suffix(".json").unlink()
    cached_onnx_session("tiny", "k1", build, cache_dir=tmp_path)
    _, other = cached_onnx_session("tiny", "k2", build, cache_dir=tmp_path)
    assert len(calls) == 4 and other != path
    assert not list((tmp_path / "onnx").glob("*.tmp"))  # no temporary files left behind


# ----------------------------------------------------------------------------------------- EfficientNet-Lite


def test_lite_configuration() -> None:
    l0, l2 = (
        registry.create("image-embedder", "efficientnet-lite0"),
        EfficientNetLiteEmbedder("efficientnet-lite2"),
    )
    assert (l0.image_size, l0.dim, l2.image_size, l2.dim) == (224, 1280, 260, 1280)
    assert l0.fingerprint != l2.fingerprint
    with pytest.raises(ValueError, match="variant"):
        EfficientNetLiteEmbedder("efficientnet-b7")
    with pytest.raises(ValueError, match="backend"):
        EfficientNetLiteEmbedder(backend="tflite")


def test_lite0_onnx_matches_torch(sources: list, tmp_path: Path) -> None:
    onnx = EfficientNetLiteEmbedder("efficientnet-lite0", cache_dir=tmp_path, threads=2, progress=False)
    vec, ok = onnx.embed_with_mask(sources)
    np.testing.assert_array_equal(ok, GOOD)
    assert vec.shape == (10, 1280) and not vec[~ok].any()
    assert onnx.onnx_path is not None and onnx.onnx_path.parent == tmp_path / "onnx"
    # ReLU6 features are in [0, 6]; distinct images give distinct vectors.
    assert vec.min() >= 0 and vec.max() <= 6 and np.abs(vec[0] - vec[2]).max() > 0.1
    eager = EfficientNetLiteEmbedder("efficientnet-lite0", backend="torch", threads=2, progress=False)
    np.testing.assert_allclose(eager.embed([sources[0], sources[2]]), vec[[0, 2]], atol=1e-3)
    # A second embedder reuses the export.
    again = EfficientNetLiteEmbedder("efficientnet-lite0", cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(again.embed([sources[4]]), vec[[4]], atol=1e-5)
    assert again.onnx_path == onnx.onnx_path


def test_embedding_classifier_with_tiny_embedder(tmp_path: Path) -> None:
    from prodcat import models

    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 200)}
    rows = []
    for label, base in colours.items():
        for i in range(12):
            rgb = tuple(int(np.clip(c + rng.integers(-25, 25), 0, 255)) for c in base)
            rows.append({"image": str(_solid(tmp_path / f"{label}{i}.jpg", rgb)), "label": label})
    rows.append({"image": str(tmp_path / "gone.jpg"), "label": "red"})
    df = pd.DataFrame(rows)
    clf = models.EmbeddingClassifier("test-tiny", column="image", cache_dir=tmp_path / "cache")
    clf.fit(df, df["label"])
    proba = clf.predict_proba(df)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (clf.classes_[proba[:-1].argmax(axis=1)] == df["label"][:-1]).mean() == 1.0
    np.testing.assert_allclose(proba[-1], clf.prior_)  # missing image -> class prior


def test_embedding_classifier_sees_undecodable_images_as_missing(tmp_path: Path) -> None:
    from prodcat import models

    (tmp_path / "fake.jpg").write_text("not an image")
    df = pd.DataFrame({"image": [str(_solid(tmp_path / "a.jpg", (1, 2, 3))), str(tmp_path / "fake.jpg")]})
    _, ok = models.EmbeddingClassifier("test-tiny", column="image", cache_dir=tmp_path / "c").embed(df)
    np.testing.assert_array_equal(ok, [True, False])


def test_embed_image_model_registry_defaults() -> None:
    clf = registry.create("image-model", "embed:efficientnet-lite0")
    assert (clf.embedder, clf.column, clf.head_params) == ("efficientnet-lite0", "image", {"C": 0.05})
    mlp = registry.create("image-model", "embed:test-tiny", head="mlp")
    assert mlp.head == "mlp" and mlp.head_params is None


def test_lite_image_size_is_a_separate_export_and_cache_entry(sources: list, tmp_path: Path) -> None:
    small = EfficientNetLiteEmbedder(image_size=160, cache_dir=tmp_path, threads=2, progress=False)
    native = EfficientNetLiteEmbedder(cache_dir=tmp_path, threads=2, progress=False)
    assert (small.image_size, native.image_size) == (160, 224)
    assert small.fingerprint != native.fingerprint  # embeddings at different sizes never share a cache entry
    vec, ok = small.embed_with_mask(sources)
    np.testing.assert_array_equal(ok, GOOD)
    assert vec.shape == (10, 1280) and vec.min() >= 0 and vec.max() <= 6
    assert small._load(sources[0]).shape == (160, 160, 3)
    native.embed([sources[0]])
    assert small.onnx_path != native.onnx_path
    # The same product is still recognisably the same: closer to itself at 224 than to another product.
    big = native.embed([sources[0], sources[2]])
    assert np.linalg.norm(vec[0] - big[0]) < np.linalg.norm(vec[0] - big[1])
    for bad in (8, 4096):
        with pytest.raises(ValueError, match="image_size"):
            EfficientNetLiteEmbedder(image_size=bad)
    clf = registry.create(
        "image-model", "embed:efficientnet-lite0", embedder_params={"image_size": 160}, cache_dir=tmp_path
    )
    assert clf._build_embedder()[0].image_size == 160


def test_input_shape_follows_aspect_with_the_short_side_a_multiple_of_8() -> None:
    assert input_shape(160, 1.0) == (160, 160)
    assert input_shape(160, 0.75) == (160, 120)  # 3:4 portrait: height stays 160
    assert input_shape(160, 4 / 3) == (120, 160)
    assert input_shape(160, 0.98) == (160, 160)  # within rounding of square
    assert input_shape(224, 0.7) == (224, 160)
    for bad in (0.1, 5, "wide", float("nan")):
        with pytest.raises(ValueError, match="aspect"):
            TinyImageEmbedder(aspect=bad)


def test_prepare_image_fits_a_non_square_box() -> None:
    portrait = Image.new("RGB", (60, 80), (200, 0, 0))
    for fit in ("pad", "crop", "stretch"):
        assert prepare_image(portrait, (160, 120), fit=fit).shape == (160, 120, 3)
    # Same aspect as the box: pad fills it completely with the product, no white bands.
    assert (prepare_image(portrait, (160, 120), fit="pad")[..., 1] < 50).all()
    # A landscape photo in a portrait box: white bands above and below, product in the middle.
    wide = prepare_image(Image.new("RGB", (120, 60), (200, 0, 0)), (160, 120), fit="pad")
    assert (wide[0] == 255).all() and (wide[-1] == 255).all() and (wide[80, :, 1] < 50).all()
    assert (
        prepare_image(Image.new("RGB", (120, 60), (200, 0, 0)), (160, 120), fit="crop")[..., 1] < 50
    ).all()


def test_adapt_sets_the_box_from_the_training_images(sources: list, tmp_path: Path) -> None:
    emb = TinyImageEmbedder(aspect="auto", progress=False)
    assert emb.input_shape == (32, 32)  # square until adapted
    portraits = [_solid(tmp_path / f"p{i}.jpg", (10 * i, 0, 0), (60, 80)) for i in range(5)]
    # Unreadable and missing items are skipped; the PIL image and PNG bytes count with their own sizes.
    assert emb.adapt(portraits + sources) == {"aspect": 0.75}
    assert emb.input_shape == (32, 24)
    vec, ok = emb.embed_with_mask(sources)
    assert vec.shape == (10, emb.dim) and (vec[~GOOD] == 0).all()
    np.testing.assert_array_equal(ok, GOOD)
    assert emb._load(sources[0]).shape == (32, 24, 3) and "32x24" in emb.fingerprint
    assert TinyImageEmbedder(aspect="auto").adapt([None, tmp_path / "missing.jpg"]) == {"aspect": 1.0}
    assert TinyImageEmbedder(aspect=0.75).adapt(portraits) == {}  # a fixed aspect is kept
    assert TinyImageEmbedder().adapt(portraits) == {}


def test_classifier_keeps_the_adapted_box_through_save_and_load(tmp_path: Path) -> None:
    from prodcat.safe_io import dumps_estimator, loads_estimator

    colours = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
    rows = [
        {"image": str(_solid(tmp_path / f"{name}{i}.jpg", rgb, (60, 80))), "label": name}
        for name, rgb in colours.items()
        for i in range(4)
    ]
    X = pd.DataFrame(rows)
    clf = registry.create("image-model", "embed:test-tiny", embedder_params={"aspect": "auto"})
    clf.fit(X, X["label"])
    assert clf.embedder_adapted_ == {"aspect": 0.75} and clf.embedder_.input_shape == (32, 24)
    loaded = loads_estimator(dumps_estimator(clf))
    assert loaded._build_embedder()[0].input_shape == (32, 24)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    assert (loaded.predict(X) == X["label"]).all()
    refit = clf.fit(X.assign(image=[tmp_path / "missing.jpg"] * 6 + list(X["image"][6:])), X["label"])
    assert refit.embedder_adapted_ == {"aspect": 0.75}


def test_lite_non_square_box_is_its_own_export_and_rebuilt_after_adapt(sources: list, tmp_path: Path) -> None:
    emb = EfficientNetLiteEmbedder(
        image_size=64, aspect="auto", cache_dir=tmp_path, threads=2, progress=False
    )
    square = emb.embed([sources[0]])
    square_path = emb.onnx_path
    emb.adapt([sources[0]])  # a 60 x 80 photo
    assert emb.input_shape == (64, 48)
    vec, ok = emb.embed_with_mask(sources)
    np.testing.assert_array_equal(ok, GOOD)
    assert vec.shape == (10, 1280) and emb.onnx_path != square_path
    assert np.linalg.norm(vec[0] - square[0]) < np.linalg.norm(vec[2] - square[0])  # still the red product


def test_lite_stage_table_matches_the_networks() -> None:
    from efficientnet_lite_pytorch import EfficientNet

    from prodcat.image.encoders import LITE_STAGE_CHANNELS, lite_dim, stage_ends

    for variant, channels in LITE_STAGE_CHANNELS.items():
        net = EfficientNet.from_name(variant)
        ends = stage_ends(net)
        assert tuple(net._blocks[i]._block_args.output_filters for i in ends) == channels
        assert ends[-1] == len(net._blocks) - 1
    assert (
        lite_dim("efficientnet-lite0") == 1280 and lite_dim("efficientnet-lite0", 3) == 1280 + 112 + 192 + 320
    )


def test_lite_stage_features_equal_the_network_walked_by_hand() -> None:
    """The hooked forward pass computes what walking the network's own layers gives (so cached embeddings of
    earlier versions stay valid)."""
    import torch

    from prodcat.image.encoders import build_lite_features

    module = build_lite_features("efficientnet-lite0", extra_stages=3)
    x = torch.randint(0, 256, (2, 64, 48, 3), dtype=torch.uint8)
    with torch.no_grad():
        got = module(x)
        net = module.net
        h = (x.permute(0, 3, 1, 2).float() - 127.0) / 128.0
        h = net._swish(net._bn0(net._conv_stem(h)))
        parts, ends = [], stage_ends_of(net)
        for i, block in enumerate(net._blocks):
            h = block(h, drop_connect_rate=None)
            if i in ends[-3:]:
                parts.append(h.mean(dim=(2, 3)))
        parts.append(net._swish(net._bn1(net._conv_head(h))).mean(dim=(2, 3)))
    torch.testing.assert_close(got, torch.cat(parts, dim=1))


def stage_ends_of(net) -> list[int]:
    outs = [b._block_args.output_filters for b in net._blocks]
    return [i for i in range(len(outs)) if i == len(outs) - 1 or outs[i + 1] != outs[i]]


def test_lite_extra_stages_add_pooled_stage_features_before_the_head(sources: list, tmp_path: Path) -> None:
    plain = EfficientNetLiteEmbedder(image_size=64, cache_dir=tmp_path, threads=2, progress=False)
    multi = EfficientNetLiteEmbedder(
        image_size=64, extra_stages=3, cache_dir=tmp_path, threads=2, progress=False
    )
    assert multi.dim == 1904 and multi.fingerprint != plain.fingerprint
    vec, ok = multi.embed_with_mask(sources)
    np.testing.assert_array_equal(ok, GOOD)
    assert vec.shape == (10, 1904) and (vec[~GOOD] == 0).all() and multi.onnx_path != plain.onnx_path
    # The last 1280 columns are the plain head features; the stage features are real, not padding.
    np.testing.assert_allclose(vec[:, -1280:], plain.embed(sources), atol=1e-4)
    assert np.abs(vec[GOOD, :624]).sum(axis=1).min() > 0
    eager = EfficientNetLiteEmbedder(
        image_size=64, extra_stages=3, backend="torch", threads=2, progress=False
    )
    np.testing.assert_allclose(eager.embed(sources[:1]), vec[:1], atol=1e-3)
    for bad in (-1, 8, 1.5, "3"):
        with pytest.raises(ValueError, match="extra_stages"):
            EfficientNetLiteEmbedder(extra_stages=bad)


def test_fit_adapts_a_copy_of_a_passed_embedder_object(tmp_path: Path) -> None:
    """Regression: fitting with ``embedder=<an embedder object>`` and ``aspect="auto"`` changed the caller's
    object in place (scikit-learn's rule: ``fit`` never alters a parameter), so reusing it for another catalog
    kept the first catalog's box."""
    from prodcat.models import EmbeddingClassifier

    rows = [
        {"image": str(_solid(tmp_path / f"{c}{i}.jpg", rgb, (60, 80))), "label": c}
        for c, rgb in {"red": (220, 20, 20), "blue": (20, 20, 220)}.items()
        for i in range(3)
    ]
    X = pd.DataFrame(rows)
    mine = TinyImageEmbedder(aspect="auto", progress=False)
    clf = EmbeddingClassifier(embedder=mine, column="image", progress=False).fit(X, X["label"])
    assert clf.embedder_.input_shape == (32, 24) and clf.embedder_ is not mine
    assert mine.aspect == "auto" and mine.input_shape == (32, 32)
