"""Image backbones: feature extractors that :mod:`prodcat.image.finetune` trains end to end.

``build_backbone(name, weights=...)`` knows ``torchvision:<name>``, ``timm:<name>`` (the ``vision`` extra),
``efficientnet-lite0`` / ``efficientnet-lite2`` (weights shipped by pip packages) and ``test-tiny-cnn`` (random,
for tests). Weights are never downloaded. ``weights`` is a local file (a state dict, or a full pickled model is
refused), or for torchvision a weights enum name (``"DEFAULT"``, ``"IMAGENET1K_V2"``) whose file must already sit in
torch's hub cache (``$TORCH_HOME/hub/checkpoints``, where ``torchvision`` itself would store it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_LITE_MEAN = (127.0 / 255.0,) * 3  # (x - 127) / 128 on 0..255 pixels, written on 0..1 pixels
TF_LITE_STD = (128.0 / 255.0,) * 3


@dataclass
class Backbone:
    """A feature extractor ``module``: ``(B, 3, H, W)`` normalised floats -> ``(B, channels, h, w)`` maps.

    ``spatial`` is False for token models (ViT) whose output is ``(B, tokens, channels)``: they can be
    fine-tuned but not with destruction-and-construction learning. ``mean``/``std`` normalise 0..1 pixels.
    """

    module: Any
    channels: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    spatial: bool = True


def _missing_extra(package: str) -> ImportError:
    return ImportError(
        f"{package} is needed for this backbone but cannot be imported; install the optional extra "
        f"`pip install 'prodcat[vision]'` (torchvision/timm matching your torch version)"
    )


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """A state dict from a local ``.pth``/``.pt``/``.bin`` (tensors only) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (prodcat never downloads weights)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def _probe_channels(module: Any) -> tuple[int, bool]:
    import torch

    with torch.no_grad():
        out = module.eval()(torch.zeros(1, 3, 64, 64))
    return (int(out.shape[1]), True) if out.dim() == 4 else (int(out.shape[-1]), False)


def _torchvision_backbone(name: str, weights: str | Path | None) -> Backbone:
    try:
        import torchvision
    except Exception as exc:  # ImportError, or the RuntimeError of a torchvision built for another torch
        raise _missing_extra("torchvision") from exc
    import torch

    model = torchvision.models.get_model(name, weights=None)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():  # a weights enum name: look for its file in torch's hub cache, never download
            enum = torchvision.models.get_model_weights(name)[str(weights)]
            path = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
            if not path.is_file():
                raise FileNotFoundError(
                    f"weights {name}/{weights} not found at {path}; download {enum.url} there yourself "
                    "(prodcat never downloads weights)"
                )
        model.load_state_dict(load_state_dict(path), strict=True)
    if hasattr(model, "features"):  # VGG, DenseNet, MobileNet, EfficientNet, ConvNeXt
        module = model.features
    elif hasattr(model, "fc") and hasattr(model, "avgpool"):  # ResNet, ResNeXt, Wide ResNet, RegNet
        module = torch.nn.Sequential(*[m for n, m in model.named_children() if n not in ("avgpool", "fc")])
    else:
        raise ValueError(f"torchvision:{name}: cannot find a convolutional feature extractor")
    channels, spatial = _probe_channels(module)
    return Backbone(module, channels, spatial=spatial)


def _timm_backbone(name: str, weights: str | Path | None) -> Backbone:
    try:
        import timm
    except Exception as exc:
        raise _missing_extra("timm") from exc
    import torch

    kwargs: dict[str, Any] = {"num_classes": 0, "global_pool": ""}
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights file not found: {weights} (prodcat never downloads weights)")
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    model = timm.create_model(name, **kwargs)
    cfg = getattr(model, "pretrained_cfg", {}) or {}

    class Features(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.forward_features(x)

    module = Features(model)
    channels, spatial = _probe_channels(module)
    return Backbone(
        module,
        channels,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
        std=tuple(cfg.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
        spatial=spatial,
    )


def _lite_backbone(variant: str, weights: str | Path | None) -> Backbone:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from prodcat.image.encoders import lite_weights_path

    net = EfficientNet.from_name(variant)
    net.load_state_dict(load_state_dict(weights or lite_weights_path(variant)), strict=True)

    class Features(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(x)  # (B, 1280, h, w)

    return Backbone(Features(net), 1280, mean=TF_LITE_MEAN, std=TF_LITE_STD)


def _tiny_cnn(weights: str | Path | None) -> Backbone:
    from torch import nn

    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
    )
    if weights is not None:
        module.load_state_dict(load_state_dict(weights))
    return Backbone(module, 16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def build_backbone(name: str, *, weights: str | Path | None = None) -> Backbone:
    """Feature extractor for a backbone name (``torchvision:<n>``, ``timm:<n>``, ``efficientnet-lite0``,
    ``efficientnet-lite2``, ``test-tiny-cnn``), loading ``weights`` from local disk only."""
    prefix, sep, rest = name.partition(":")
    if sep and prefix == "torchvision":
        return _torchvision_backbone(rest, weights)
    if sep and prefix == "timm":
        return _timm_backbone(rest, weights)
    if name in ("efficientnet-lite0", "efficientnet-lite2"):
        return _lite_backbone(name, weights)
    if name == "test-tiny-cnn":
        return _tiny_cnn(weights)
    raise KeyError(
        f"unknown image backbone {name!r}; use torchvision:<name>, timm:<name>, efficientnet-lite0, "
        "efficientnet-lite2 or test-tiny-cnn"
    )
