"""Fine-tuning recipe on a tiny random CNN (CPU, seconds), DCL's region confusion, backbone adapters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from prodcat import registry
from prodcat.image.backbones import build_backbone
from prodcat.image.dcl import destruct, identity_coords, rcm_permutation
from prodcat.image.finetune import ImageFineTuneClassifier, augment, eval_view

torch = pytest.importorskip("torch")

TINY = {"stages": ((24, 3), (32, 2)), "batch_size": 8, "progress": False, "threads": 1, "val_size": 0.3}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """3 classes (red squares, green discs, blue triangles) x 10 images of 40x48 px, plus one missing image."""
    folder = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    rows = []
    for label, colour in (("square", (200, 30, 30)), ("disc", (30, 160, 30)), ("triangle", (30, 30, 200))):
        for i in range(10):
            im = Image.new("RGB", (40, 48), "white")
            draw = ImageDraw.Draw(im)
            x, y = (int(v) for v in rng.integers(2, 14, 2))
            s = int(rng.integers(18, 24))
            fill = tuple(int(v) for v in np.clip(np.array(colour) + rng.integers(-30, 30, 3), 0, 255))
            if label == "square":
                draw.rectangle([x, y, x + s, y + s], fill=fill)
            elif label == "disc":
                draw.ellipse([x, y, x + s, y + s], fill=fill)
            else:
                draw.polygon([(x, y + s), (x + s, y + s), (x + s // 2, y)], fill=fill)
            path = folder / f"{label}{i}.png"
            im.save(path)
            rows.append({"image": str(path), "label": label})
    rows.append({"image": str(folder / "missing.png"), "label": "square"})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ DCL pieces


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 9), k=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_rcm_is_a_local_permutation(n: int, k: int, seed: int) -> None:
    src = rcm_permutation(n, k, np.random.default_rng(seed))
    assert src.shape == (n, n, 2)
    flat = src[..., 0] * n + src[..., 1]
    assert sorted(flat.ravel().tolist()) == list(range(n * n))  # every region used exactly once
    dest = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), axis=-1)
    assert np.abs(src - dest).max() < 2 * k  # regions stay within their neighbourhood


def test_rcm_actually_shuffles() -> None:
    src = rcm_permutation(7, 2, np.random.default_rng(0))
    dest = np.stack(np.meshgrid(np.arange(7), np.arange(7), indexing="ij"), axis=-1)
    assert (src != dest).any()


def test_destruct_moves_regions_to_their_coordinates() -> None:
    n, r = 4, 3
    x = torch.arange(2 * 3 * 13 * 12, dtype=torch.float32).reshape(2, 3, 13, 12)  # 13 rows: 1 leftover strip
    out, coords = destruct(x, n, 2, np.random.default_rng(0))
    assert out.shape == x.shape and coords.shape == (2, 2, n, n)
    assert torch.equal(out[:, :, 12:], x[:, :, 12:])  # border strip untouched
    src = torch.round(coords * (n - 1)).long()
    for b in range(2):
        for i in range(n):
            for j in range(n):
                si, sj = int(src[b, 0, i, j]), int(src[b, 1, i, j])
                block = out[b, :, i * r : (i + 1) * r, j * r : (j + 1) * r]
                assert torch.equal(block, x[b, :, si * r : (si + 1) * r, sj * r : (sj + 1) * r])
    assert identity_coords(2, n).shape == (2, 2, n, n)
    with pytest.raises(ValueError, match="too small"):
        destruct(torch.zeros(1, 3, 3, 3), 4, 1, np.random.default_rng(0))


def test_augment_and_eval_views() -> None:
    im = Image.new("RGB", (30, 50), (10, 200, 10))
    a1 = augment(im, 24, np.random.default_rng(3), rotation=15)
    a2 = augment(im, 24, np.random.default_rng(3), rotation=15)
    assert a1.shape == (24, 24, 3) and a1.dtype == np.uint8 and np.array_equal(a1, a2)
    views = {augment(im, 24, np.random.default_rng(s), rotation=15).tobytes() for s in range(5)}
    assert len(views) > 1  # random crops/rotations/flips differ
    e = eval_view(im, 24)
    assert e.shape == (24, 24, 3) and tuple(e[12, 12]) == (10, 200, 10)


# ---------------------------------------------------------------------------------------------- fine-tuning


def test_finetune_tiny_cnn_with_dcl(shapes: pd.DataFrame) -> None:
    clf = registry.create("image-model", "test-tiny-cnn", dcl=True, dcl_regions=4, **TINY)
    assert isinstance(clf, ImageFineTuneClassifier)
    clf.fit(shapes, shapes["label"])
    assert list(clf.classes_) == ["disc", "square", "triangle"]
    assert len(clf.history_) == 5 and [h["size"] for h in clf.history_] == [24, 24, 24, 32, 32]
    for stage in clf.best_:  # best epoch of each stage is the one with the highest validation macro-F1
        f1s = [h["val_f1"] for h in clf.history_ if h["stage"] == stage["stage"]]
        assert stage["val_f1"] == max(f1s) and f1s[stage["epoch"] - 1] == max(f1s)
    assert clf.input_size_ == 32 and clf.model_.adversary is not None  # DCL heads exist but are unused
    proba = clf.predict_proba(shapes)
    assert proba.shape == (31, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba[-1], clf.prior_)  # missing image -> class prior
    assert (clf.predict(shapes)[:-1] == shapes["label"][:-1]).mean() > 0.5  # well above chance (1/3)


def test_finetune_is_deterministic_and_uses_weights(shapes: pd.DataFrame) -> None:
    kw = {**TINY, "stages": ((24, 2),)}
    p1 = (
        ImageFineTuneClassifier("test-tiny-cnn", seed=3, **kw)
        .fit(shapes, shapes["label"])
        .predict_proba(shapes)
    )
    p2 = (
        ImageFineTuneClassifier("test-tiny-cnn", seed=3, **kw)
        .fit(shapes, shapes["label"])
        .predict_proba(shapes)
    )
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    # Down-weighting a class to zero removes it from the learned decisions (prior still counts weights).
    w = np.where(shapes["label"] == "disc", 0.0, 1.0)
    clf = ImageFineTuneClassifier("test-tiny-cnn", seed=3, **{**kw, "val_size": 0.0})
    clf.fit(shapes, shapes["label"], sample_weight=w)
    assert clf.prior_[list(clf.classes_).index("disc")] == 0.0
    assert clf.best_[0]["epoch"] == 2  # without validation the last epoch is kept


@pytest.mark.slow
def test_finetune_with_dataloader_workers(shapes: pd.DataFrame) -> None:
    kw = {**TINY, "stages": ((24, 1),), "val_size": 0.0, "num_workers": 2}
    clf = ImageFineTuneClassifier("test-tiny-cnn", **kw).fit(shapes, shapes["label"])
    proba = clf.predict_proba(shapes)
    assert proba.shape == (31, 3) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba[-1], clf.prior_)


def test_sklearn_clone_and_params() -> None:
    from sklearn.base import clone

    clf = ImageFineTuneClassifier("test-tiny-cnn", lr=0.05, dcl=True)
    c2 = clone(clf)
    assert c2.get_params()["lr"] == 0.05 and c2.get_params()["dcl"] is True
    assert ImageFineTuneClassifier().get_params()["stages"] == ((224, 24), (448, 12))
    assert (clf.momentum, clf.step_size, clf.gamma) == (0.9, 12, 0.1)


# ------------------------------------------------------------------------------------------------ backbones


def test_backbone_weights_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    a = build_backbone("test-tiny-cnn")
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in a.module.state_dict().items()}, str(path))
    torch.manual_seed(123)
    b = build_backbone("test-tiny-cnn", weights=path)
    for k, v in a.module.state_dict().items():
        assert torch.equal(v, b.module.state_dict()[k])
    with pytest.raises(FileNotFoundError, match="never downloads"):
        build_backbone("test-tiny-cnn", weights=tmp_path / "nope.pth")
    with pytest.raises(KeyError, match="unknown image backbone"):
        build_backbone("resnet152")


@pytest.mark.parametrize("name", ["torchvision:resnet152", "timm:resnet50"])
def test_vision_extra_missing_gives_clear_error(name: str) -> None:
    package = name.split(":")[0]
    try:
        __import__(package)
        pytest.skip(f"{package} is importable here")
    except Exception:
        pass
    clf = registry.create("image-model", name)  # building the estimator needs nothing
    assert clf.backbone == name
    with pytest.raises(ImportError, match=r"prodcat\[vision\]"):
        build_backbone(name)


def test_lite_backbone_feature_map() -> None:
    bb = build_backbone("efficientnet-lite0")
    with torch.no_grad():
        f = bb.module.eval()(torch.zeros(1, 3, 64, 64))
    assert bb.channels == 1280 and f.shape == (1, 1280, 2, 2) and bb.spatial
