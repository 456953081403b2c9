"""Fine-tune the top of EfficientNet-Lite on a CPU: the frozen lower part runs once per photo and is cached.

:class:`LiteTopClassifier` cuts the network before its last ``train_stages`` stages
(:mod:`prodcat.image.activations`). Every training photo goes through the frozen lower part once, by ONNX Runtime,
with its horizontal mirror; the activations are kept in prodcat's embedding cache, so K-fold OOF, the refit and
later runs reuse them. Then the last stage(s), the head conv and a new linear classifier train on the cached
activations (AdamW, cosine learning rate, label smoothing, a random view, photo or mirror, per step), with early
stopping on the log-loss of a stratified inner split of the products. Prediction averages the photo's and the
mirror's probabilities (``tta``) and, with several photos per product, the photos' (``pooling``).

Costs on fashion (Lite0, 160 x 120, ``train_stages=1``): see docs/bench/image.md. The same code runs on a GPU
(``device="auto"``). Rows without a usable photo are left out of training and predicted as the class prior.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from prodcat.cache import cached_embed
from prodcat.evaluate import macro_f1
from prodcat.image.activations import LiteActivations, build_lite_net, build_lite_split
from prodcat.image.finetune import NumpyWeightsMixin
from prodcat.missing import MissingModalityMixin
from prodcat.photos import POOLINGS, flatten, photo_lists, pool
from prodcat.splits import holdout_split
from prodcat.threads import available_cpus, torch_threads


class LiteTopClassifier(NumpyWeightsMixin, MissingModalityMixin, ClassifierMixin, BaseEstimator):
    """EfficientNet-Lite with its last stage(s) and head fine-tuned on cached lower-part activations.

    Parameters
    ----------
    variant : ``"efficientnet-lite0"`` or ``"efficientnet-lite2"``.
    column : catalog column of photos (``"image"``: also the ``images`` tuples of multi-photo catalogs).
    train_stages : how many of the last MBConv stages train (1: Lite0's 320-channel stage; the head conv and the
        classifier always train). More stages: larger cached activations and slower epochs.
    image_size, aspect, image_fit : the input box (``image_fit``: ``fit`` of
        :class:`prodcat.image.encoders.ImageEmbedder`); default 160 px
        and the training photos' median aspect.
    flip : cache the mirrored photo too; training draws photo or mirror at random each time a row is seen.
    tta : predict the mean of the photo's and the mirror's probabilities (needs ``flip``).
    max_epochs, patience : early stopping: at most ``max_epochs`` passes; stop after ``patience`` epochs without a
        lower inner-split log-loss, keeping the best epoch's weights. max_seconds : optional wall-clock budget of
        the training loop (the best epoch so far is kept when it runs out).
    lr, weight_decay, label_smoothing, batch_size : AdamW with a cosine schedule over ``max_epochs``.
    dropout, drop_connect : before the classifier / stochastic depth in the trained blocks.
    multiscale : the classifier also sees the pooled cached activations and the last block's pooled output
        (Lite0, ``train_stages=1``: 192 + 320 + 1280 features), like the frozen embedders' ``extra_stages``.
    freeze_bn : BatchNorm layers keep their pretrained running statistics (their scale and shift still train).
    val_size : fraction of the products (stratified) held out for early stopping.
    pooling : ``"mean"`` or ``"max"`` of per-photo probabilities for products with several photos.
    device : ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``... threads : CPU threads (default: all).
    backend : lower part run by ``"onnx"`` (default) or ``"torch"``. cache_dir : embedding cache (None: none).
    tiny : a small random network instead of the ImageNet weights (tests only). seed, progress.

    Attributes
    ----------
    classes_, prior_, embedder_adapted_ (the settled ``aspect``), top_ (torch module, CPU, eval),
    history_ (per epoch: loss, val_loss, val_f1, seconds), best_epoch_, best_val_f1_, n_photos_ (training photos used).
    """

    embedder_: LiteActivations | None  # built by ``backbone()``, not saved
    _module_attr, _weights_attr, _unsaved = "top_", "top_weights_", ("embedder_",)

    def __init__(
        self,
        variant: str = "efficientnet-lite0",
        *,
        column: str = "image",
        train_stages: int = 1,
        image_size: int | None = 160,
        aspect: float | str | None = "auto",
        image_fit: str = "pad",
        flip: bool = True,
        tta: bool = True,
        max_epochs: int = 6,
        patience: int = 3,
        max_seconds: float | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        label_smoothing: float = 0.1,
        batch_size: int = 64,
        dropout: float = 0.3,
        drop_connect: float = 0.2,
        multiscale: bool = True,
        freeze_bn: bool = True,
        val_size: float = 0.1,
        pooling: str = "mean",
        device: str = "auto",
        threads: int | None = None,
        backend: str = "onnx",
        cache_dir: str | None = None,
        tiny: bool = False,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.variant = variant
        self.column = column
        self.train_stages = train_stages
        self.image_size = image_size
        self.aspect = aspect
        self.image_fit = image_fit
        self.flip = flip
        self.tta = tta
        self.max_epochs = max_epochs
        self.patience = patience
        self.max_seconds = max_seconds
        self.lr = lr
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.batch_size = batch_size
        self.dropout = dropout
        self.drop_connect = drop_connect
        self.multiscale = multiscale
        self.freeze_bn = freeze_bn
        self.val_size = val_size
        self.pooling = pooling
        self.device = device
        self.threads = threads
        self.backend = backend
        self.cache_dir = cache_dir
        self.tiny = tiny
        self.seed = seed
        self.progress = progress

    # -- the frozen lower part ------------------------------------------------------------------------------------
    def backbone(self) -> LiteActivations:
        """The activations embedder (frozen lower part); its ``fingerprint`` is recorded in bundles."""
        emb = getattr(self, "embedder_", None)
        if emb is None:
            emb = self.embedder_ = LiteActivations(
                self.variant, train_stages=self.train_stages, flip=self.flip, tiny=self.tiny,
                backend=self.backend, threads=self.threads, cache_dir=self._onnx_dir(), image_size=self.image_size,
                aspect=getattr(self, "embedder_adapted_", {}).get("aspect", self.aspect), fit=self.image_fit,
                progress=self.progress,
            )  # fmt: skip
        return emb

    def _onnx_dir(self) -> Any:
        from prodcat.cache import resolve_cache_dir

        return resolve_cache_dir(self.cache_dir)  # None: the default cache folder for the ONNX export

    def check_params(self) -> None:
        """Raise ``ValueError`` for settings that cannot work (cheap: builds nothing heavy)."""
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.tta and not self.flip:
            raise ValueError("tta needs flip=True (the mirrored photo is what it averages with)")
        for name in ("max_epochs", "patience", "batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.val_size < 1:
            raise ValueError(f"val_size must be in [0, 1), got {self.val_size!r}")
        try:
            LiteActivations(self.variant, train_stages=self.train_stages, image_size=self.image_size,
                            aspect=self.aspect, fit=self.image_fit, backend=self.backend)  # fmt: skip
        except TypeError as e:
            raise ValueError(str(e)) from None

    def activations(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cached lower-part activations of every photo of ``X``: ``(A (m, views * C*h*w) float32, ok (m,) bool,
        owner (m,) int64)``, ``owner`` the row of each photo."""
        photos, owner = flatten(photo_lists(X, self.column))
        emb = self.backbone()
        A, ok = cached_embed(emb, photos, modality="image", cache_dir=self.cache_dir, progress=self.progress)
        return A, ok, owner

    # -- training -------------------------------------------------------------------------------------------------
    def _device(self) -> Any:
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _build_top(self, *, pretrained: bool) -> Any:
        net = build_lite_net(self.variant, tiny=self.tiny, pretrained=pretrained)
        return build_lite_split(
            net, self.train_stages, len(self.classes_), flip=self.flip, dropout=self.dropout,
            drop_connect=self.drop_connect, multiscale=self.multiscale, check=pretrained,
        )[1]  # fmt: skip

    def _views(self, A: np.ndarray, rows: np.ndarray, view: np.ndarray | int) -> Any:
        """``(len(rows), C, h, w)`` float32 tensor of the chosen view (0 photo, 1 mirror) of each row."""
        import torch

        c, h, w = self.backbone().map_shape
        per = c * h * w
        cols = (
            (np.asarray(view)[..., None] * per + np.arange(per)).reshape(-1, per) if np.ndim(view) else None
        )
        block = (
            A[rows][:, view * per : (view + 1) * per]
            if cols is None
            else np.take_along_axis(A[rows], cols, 1)
        )
        return torch.from_numpy(np.ascontiguousarray(block)).view(len(rows), c, h, w)

    def _logits(self, top: Any, A: np.ndarray, rows: np.ndarray, device: Any) -> np.ndarray:
        """``(views, len(rows), C)`` float64 logits of ``rows`` for each cached view used at prediction."""
        import torch

        views = range(2 if self.flip and self.tta else 1)
        out = np.zeros((len(views), len(rows), len(self.classes_)))
        top.eval()
        with torch.inference_mode():
            for s in range(0, len(rows), 256):
                part = rows[s : s + 256]
                for v in views:
                    out[v, s : s + len(part)] = top(self._views(A, part, v).to(device)).float().cpu().numpy()
        return out

    def _epoch(self, top: Any, opt: Any, sched: Any, A: np.ndarray, rows: np.ndarray, codes: np.ndarray,
               weights: np.ndarray, rng: np.random.Generator, device: Any) -> float:  # fmt: skip
        import torch
        from torch.nn import functional as F

        top.train()
        if self.freeze_bn:  # keep the pretrained statistics: train and predict see the same normalisation
            for m in top.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()
        order = rng.permutation(len(rows))
        total = 0.0
        for s in range(0, len(order), self.batch_size):
            b = order[s : s + self.batch_size]
            if len(b) < 2:  # BatchNorm needs two rows
                continue
            view = rng.integers(0, 2, len(b)) if self.flip else 0
            x = self._views(A, rows[b], view).to(device)
            y = torch.as_tensor(codes[b], device=device)
            if weights[b].sum() <= 0:  # every row of the batch weighted out (noise cleaning)
                continue
            w = torch.as_tensor(weights[b], dtype=torch.float32, device=device)
            loss = F.cross_entropy(top(x), y, reduction="none", label_smoothing=self.label_smoothing)
            loss = (loss * w).sum() / w.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        return total / max(len(order), 1)

    def fit(self, X: Any, y: Any, sample_weight: np.ndarray | None = None) -> LiteTopClassifier:
        """Cache the activations of ``X``'s photos (n rows) and train the top on them. Returns self."""
        import torch

        self.check_params()
        y = self._fit_prior(y, sample_weight)
        sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self.embedder_ = None
        self.embedder_adapted_: dict[str, Any] = {}
        lists = photo_lists(X, self.column)
        self.embedder_adapted_ = dict(self.backbone().adapt([p for row in lists for p in row]))
        A, ok, owner = self.activations(X)
        usable = np.flatnonzero(np.bincount(owner[ok], minlength=len(y)) > 0)
        if len(usable) == 0:
            raise ValueError("no usable image in the training data")
        codes = np.searchsorted(self.classes_, y)
        train_rows, val_rows = usable, usable[:0]
        if self.val_size > 0 and len(np.unique(y[usable])) > 1:
            tr, va = holdout_split(y[usable], test_size=self.val_size, seed=self.seed)
            train_rows, val_rows = usable[tr], usable[va]
        # Training samples are photos; a product's photos share its weight, so every product counts once.
        per_row = np.bincount(owner[ok], minlength=len(y)).astype(np.float64)
        photo = np.flatnonzero(ok & np.isin(owner, train_rows))
        weights = sw[owner[photo]] / per_row[owner[photo]]
        self.n_photos_ = len(photo)

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        device = self._device()
        with torch_threads(self.threads or available_cpus()):
            top = self._build_top(pretrained=not self.tiny).to(device)
            self._train(top, A, ok, owner, photo, codes, weights, val_rows, y, rng, device)
        self.top_ = top.cpu().eval()
        return self

    def _train(self, top: Any, A: np.ndarray, ok: np.ndarray, owner: np.ndarray, photo: np.ndarray,
               codes: np.ndarray, weights: np.ndarray, val_rows: np.ndarray, y: np.ndarray,
               rng: np.random.Generator, device: Any) -> None:  # fmt: skip
        import torch

        opt = torch.optim.AdamW(top.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps = self.max_epochs * max(1, -(-len(photo) // self.batch_size))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=steps + 1, pct_start=0.1)
        val_photo = np.flatnonzero(ok & np.isin(owner, val_rows))
        self.history_: list[dict[str, Any]] = []
        best_loss, best_state, since = np.inf, None, 0
        start = time.perf_counter()
        self.best_epoch_, self.best_val_f1_ = 0, float("nan")
        bar = tqdm(range(self.max_epochs), desc="train top", disable=not self.progress, leave=False)
        for epoch in bar:
            loss = self._epoch(top, opt, sched, A, photo, codes[owner[photo]], weights, rng, device)
            f1, val_loss = float("nan"), float("nan")
            if len(val_rows):
                proba = self._pooled(top, A, val_photo, owner, len(y), device)[val_rows]
                f1 = macro_f1(y[val_rows], self.classes_[proba.argmax(axis=1)])
                val_loss = float(
                    -np.mean(np.log(np.clip(proba[np.arange(len(val_rows)), codes[val_rows]], 1e-12, 1)))
                )
            self.history_.append({"epoch": epoch + 1, "loss": loss, "val_loss": val_loss, "val_f1": f1,
                                  "seconds": time.perf_counter() - start})  # fmt: skip
            bar.set_postfix(loss=f"{loss:.3f}", val_loss=f"{val_loss:.3f}", val_f1=f"{f1:.4f}")
            # Early stopping on the inner split's log-loss: far less noisy than its macro-F1 on a few rows per class.
            if not len(val_rows) or val_loss < best_loss:
                best_loss, since = val_loss, 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in top.state_dict().items()})
                self.best_epoch_, self.best_val_f1_ = epoch + 1, f1
            else:
                since += 1
            if since >= self.patience:
                break
            if self.max_seconds is not None and time.perf_counter() - start > self.max_seconds:
                break
        if best_state is not None:
            top.load_state_dict(best_state)

    def _pooled(
        self, top: Any, A: np.ndarray, photo: np.ndarray, owner: np.ndarray, n: int, device: Any
    ) -> np.ndarray:
        """``(n, C)`` probabilities pooled over each row's photos in ``photo`` (rows without any: zeros)."""
        proba = softmax(self._logits(top, A, photo, device), axis=2).mean(axis=0)  # (m, C), mean over views
        ok = np.ones(len(photo), dtype=bool)
        return pool(proba, ok, owner[photo], n, self.pooling)[0]

    # -- inference ------------------------------------------------------------------------------------------------
    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, C) probabilities in ``classes_`` order; rows without a usable photo get ``prior_``."""
        return self.predict_proba_with_mask(X)[0]

    def predict_proba_with_mask(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """``predict_proba(X)`` and the ``(n,)`` mask of rows with at least one usable photo, from one pass."""

        check_is_fitted(self, "top_")
        A, ok, owner = self.activations(X)
        n = len(X)
        photo = np.flatnonzero(ok)
        device = self._device()
        with torch_threads(self.threads or available_cpus()):
            top = self.top_.to(device)
            pooled = self._pooled(top, A, photo, owner, n, device)
            self.top_ = top.cpu()
        available = np.bincount(owner[ok], minlength=n) > 0
        rows = np.flatnonzero(available)
        proba = pooled[rows] / pooled[rows].sum(axis=1, keepdims=True) if len(rows) else None
        return self._proba_with_prior(n, rows, proba), available

    # -- persistence: NumpyWeightsMixin (the weights as numpy arrays) -------------------------------------------
    def _rebuild(self, weights: dict[str, np.ndarray]) -> Any:
        """The fitted top: the architecture from ``variant`` (no weights file read), the values from ``weights``."""
        import torch

        top = self._build_top(pretrained=False)
        top.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)
        return top.eval()
