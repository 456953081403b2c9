"""Fine-tuned Hugging Face transformer text classifier (``hf:<name-or-path>``), the paper's CamemBERT recipe.

Title and description go in as a sentence pair (``<s> title </s></s> description </s>``), truncated to
``max_length`` (128) tokens; the backbone's pooled output (``pooler_output``, else the first token's hidden state)
goes through dropout and one linear layer. Training: AdamW (no weight decay on biases and LayerNorm), linear
warm-up then linear decay, gradient clipping at 1.0, and the checkpoint with the best validation macro-F1 (a
seeded stratified ``val_fraction`` of the training rows) is kept. The defaults of epochs, batch size and learning
rate are common CamemBERT fine-tuning values, not tuned here.

Needs the optional extra ``hf`` (``transformers``). Weights must be local: ``local_files_only=True`` by default, so
nothing is downloaded at run time. A GPU is used when present (``device="auto"``); on CPU this is slow for real
backbones and meant for small checks. Rows with neither title nor description get the training class prior.

In a model bundle (skops, no pickle) the fitted network is stored as its state dict of numpy arrays; loading
rebuilds the architecture and the tokenizer from ``model_name_or_path`` (local files only, never a download) and
loads those arrays. :meth:`HFTextClassifier.backbone_fingerprint` (a digest of that folder's configuration and
tokenizer files) is recorded in the bundle, so a bundle is refused where the base model there is another one.
"""

from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from prodcat.clean import clean_text
from prodcat.evaluate import macro_f1
from prodcat.missing import MissingModalityMixin
from prodcat.splits import holdout_split
from prodcat.threads import available_cpus, torch_threads
from prodcat.weights import NumpyWeightsMixin

_LAZY: dict[str, type] = {}


def _pair_classifier_class() -> type:
    """The torch module class, built on first use so that importing this file does not import torch."""
    if "PairClassifier" not in _LAZY:
        import torch

        class PairClassifier(torch.nn.Module):
            """``backbone`` (a transformers base model) -> pooled output -> dropout -> linear: logits (B, C)."""

            def __init__(self, backbone: Any, n_classes: int, dropout: float) -> None:
                super().__init__()
                self.backbone = backbone
                self.dropout = torch.nn.Dropout(dropout)
                self.out = torch.nn.Linear(backbone.config.hidden_size, n_classes)

            def forward(self, **inputs: Any) -> Any:
                hidden = self.backbone(**inputs)
                pooled = getattr(hidden, "pooler_output", None)
                if pooled is None:
                    pooled = hidden.last_hidden_state[:, 0]  # (B, H): the <s>/[CLS] token
                return self.out(self.dropout(pooled))  # (B, C)

        PairClassifier.__module__ = __name__
        PairClassifier.__qualname__ = "PairClassifier"
        _LAZY["PairClassifier"] = PairClassifier
    return _LAZY["PairClassifier"]


def __getattr__(name: str) -> Any:
    # Lets pickle find ``prodcat.text.finetune.PairClassifier`` (a ``model_`` pickled on its own).
    if name == "PairClassifier":
        return _pair_classifier_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Tokens(NamedTuple):
    ids: list[list[int]]  # per row, variable length
    types: list[list[int]] | None  # segment ids, only for backbones that use them


# Files of a ``save_pretrained`` folder left out of the fingerprint: weights (all of them are in the bundle: the
# fine-tuned state dict overwrites every parameter) and documentation.
_NOT_FINGERPRINTED = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".onnx", ".md")


def _column(X: pd.DataFrame, name: str) -> list[str]:
    return [clean_text(t) for t in X[name]] if name in X else [""] * len(X)


class HFTextClassifier(NumpyWeightsMixin, MissingModalityMixin, ClassifierMixin, BaseEstimator):
    """Fine-tune a local Hugging Face encoder on (title, description) pairs; sklearn classifier contract.

    Parameters
    ----------
    model_name_or_path : a local folder (``save_pretrained`` layout: config, weights, tokenizer) or a name already
        in the Hugging Face cache (e.g. ``"camembert-base"``).
    max_length : tokens per pair, truncating the longer segment first.
    epochs, batch_size, learning_rate, weight_decay, warmup_ratio : AdamW and linear warm-up schedule.
    val_fraction : share of training rows held out (stratified, seeded) to pick the best epoch by macro-F1;
        0 keeps the last epoch.
    dropout : before the linear layer.
    device : ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    local_files_only : never download (default True).
    threads : torch CPU threads during fit/predict (default: the cores this process may use).

    Attributes
    ----------
    classes_, prior_, model_ (torch module), tokenizer_, history_ (per-epoch dicts: loss, val_macro_f1),
    best_epoch_.
    """

    # the tokenizer is reloaded from ``model_name_or_path``; the device is chosen again from ``device`` on load
    _unsaved = ("tokenizer_", "device_")

    def __init__(
        self,
        model_name_or_path: str = "camembert-base",
        *,
        max_length: int = 128,
        epochs: int = 4,
        batch_size: int = 32,
        learning_rate: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        val_fraction: float = 0.1,
        dropout: float = 0.1,
        device: str = "auto",
        local_files_only: bool = True,
        threads: int | None = None,
        title_column: str = "title",
        description_column: str = "description",
        progress: bool = True,
        random_state: int = 0,
    ) -> None:
        self.model_name_or_path = model_name_or_path
        self.max_length = max_length
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.val_fraction = val_fraction
        self.dropout = dropout
        self.device = device
        self.local_files_only = local_files_only
        self.threads = threads
        self.title_column = title_column
        self.description_column = description_column
        self.progress = progress
        self.random_state = random_state

    # -- inputs -------------------------------------------------------------------------------------------------
    def _pairs(self, X: Any) -> tuple[list[str], list[str]]:
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame({self.title_column: list(X)})
        return _column(X, self.title_column), _column(X, self.description_column)

    def _encode(self, titles: list[str], descs: list[str]) -> _Tokens:
        """Token ids (and segment ids for BERT-style backbones) per row: a pair when both parts exist, else the
        one that does; rows without text get ``[]``."""
        ids: list[list[int]] = [[] for _ in titles]
        types: list[list[int]] = [[] for _ in titles]
        groups: dict[str, list[int]] = {"pair": [], "title": [], "desc": []}
        for i, (t, d) in enumerate(zip(titles, descs, strict=True)):
            if t or d:  # rows with no text keep [] and get the prior
                groups["pair" if t and d else "title" if t else "desc"].append(i)
        kw = {"truncation": True, "max_length": self.max_length, "return_token_type_ids": self.token_types_}
        for group, rows in groups.items():
            if not rows:
                continue
            if group == "pair":
                enc = self.tokenizer_([titles[i] for i in rows], [descs[i] for i in rows], **kw)
            else:
                enc = self.tokenizer_([(titles if group == "title" else descs)[i] for i in rows], **kw)
            segments = enc.get("token_type_ids") or [[0] * len(r) for r in enc["input_ids"]]
            for i, row, seg in zip(rows, enc["input_ids"], segments, strict=True):
                ids[i], types[i] = list(row), list(seg)
        return _Tokens(ids, types if self.token_types_ else None)

    def _batch(self, tokens: _Tokens, rows: np.ndarray) -> dict[str, Any]:
        import torch

        ids = tokens.ids
        width = max(len(ids[i]) for i in rows)
        pad = self.tokenizer_.pad_token_id or 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        segments = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        for r, i in enumerate(rows):
            input_ids[r, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
            mask[r, : len(ids[i])] = 1
            if tokens.types is not None:
                segments[r, : len(ids[i])] = torch.tensor(tokens.types[i], dtype=torch.long)
        batch = {"input_ids": input_ids.to(self.device_), "attention_mask": mask.to(self.device_)}
        if tokens.types is not None:
            batch["token_type_ids"] = segments.to(self.device_)
        return batch

    # -- training -----------------------------------------------------------------------------------------------
    def _optimizer(self, n_steps: int) -> tuple[Any, Any]:
        import torch

        decay: list[Any] = []
        no_decay: list[Any] = []
        for name, p in self.model_.named_parameters():
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.learning_rate,
        )
        warm = max(1, int(self.warmup_ratio * n_steps))

        def schedule(step: int) -> float:  # linear warm-up to 1, then linear decay to 0
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (n_steps - step) / max(1, n_steps - warm))

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)

    def _device(self) -> Any:
        import torch

        if self.device != "auto":
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _split(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(len(y))
        n_classes = len(np.unique(y))
        n_val = round(self.val_fraction * len(y))
        if self.val_fraction <= 0 or n_val < n_classes or len(y) - n_val < n_classes:
            return idx, idx[:0]
        return holdout_split(y.tolist(), test_size=n_val, seed=self.random_state)

    def fit(self, X: Any, y: Any, sample_weight: np.ndarray | None = None) -> HFTextClassifier:
        """Fine-tune on ``X`` (catalog DataFrame with title/description, n rows) and labels ``y`` (n,)."""
        import torch
        import torch.nn.functional as F
        from transformers import AutoModel, AutoTokenizer

        y = self._fit_prior(y, sample_weight)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self.device_ = self._device()
        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        path, local = self.model_name_or_path, self.local_files_only
        self.tokenizer_ = AutoTokenizer.from_pretrained(path, local_files_only=local)
        backbone = AutoModel.from_pretrained(path, local_files_only=local)
        self.model_ = _pair_classifier_class()(backbone, len(self.classes_), self.dropout).to(self.device_)

        titles, descs = self._pairs(X)
        # Segment ids only for backbones trained with them (BERT); RoBERTa/CamemBERT have a single segment.
        self.token_types_ = getattr(backbone.config, "type_vocab_size", 1) > 1
        tokens = self._encode(titles, descs)
        has_text = np.array([len(r) > 0 for r in tokens.ids])
        target = np.searchsorted(self.classes_, y)
        tr, va = self._split(y)
        tr, va = tr[has_text[tr]], va[has_text[va]]
        steps_per_epoch = math.ceil(len(tr) / self.batch_size)
        opt, sched = self._optimizer(max(1, steps_per_epoch * self.epochs))
        self.history_: list[dict[str, float]] = []
        best_f1, best_state = -1.0, None
        with torch_threads(self.threads or available_cpus()):
            for epoch in range(self.epochs):
                self.model_.train()
                order = rng.permutation(tr)
                losses = []
                bar = tqdm(
                    range(0, len(order), self.batch_size),
                    desc=f"epoch {epoch + 1}/{self.epochs}",
                    disable=not self.progress,
                    leave=False,
                )
                for start in bar:
                    rows = order[start : start + self.batch_size]
                    logits = self.model_(**self._batch(tokens, rows))  # (B, C)
                    yb = torch.as_tensor(target[rows], device=self.device_)
                    wb = torch.as_tensor(w[rows], dtype=logits.dtype, device=self.device_)
                    loss = (F.cross_entropy(logits, yb, reduction="none") * wb).sum() / wb.sum().clamp_min(
                        1e-12
                    )
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.model_.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    losses.append(float(loss.detach()))
                record = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan")}
                if len(va):
                    pred = self._logits(tokens, va).argmax(axis=1)
                    record["val_macro_f1"] = macro_f1(target[va], pred)
                self.history_.append(record)
                score = record.get("val_macro_f1", float(epoch))
                if score > best_f1:
                    best_f1, self.best_epoch_ = score, epoch + 1
                    best_state = copy.deepcopy(
                        {k: v.detach().cpu() for k, v in self.model_.state_dict().items()}
                    )
        if best_state is not None:
            self.model_.load_state_dict(best_state)
        self.model_.eval()
        return self

    # -- persistence (pickle-free: skops stores the weights as numpy arrays) ---------------------------------------
    def _rebuild(self, weights: dict[str, np.ndarray]) -> Any:
        """The fitted network and tokenizer: architecture, vocabulary and tokenizer from ``model_name_or_path``
        (local files only, whatever ``local_files_only`` says: loading never downloads), values from ``weights``."""
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = self.model_name_or_path
        self.tokenizer_ = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # from the configuration only: the base weights would all be overwritten below
        backbone = AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
        net = _pair_classifier_class()(backbone, len(self.classes_), self.dropout)
        try:
            net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"the fine-tuned weights do not fit the model at {path!r} (was it replaced?): "
                f"{' '.join(str(e).split())[:300]}"
            ) from None
        self.device_ = self._device()
        return net.to(self.device_).eval()

    def backbone_fingerprint(self) -> str:
        """sha256 of the configuration and tokenizer files of ``model_name_or_path`` (its local folder, or its
        snapshot in the Hugging Face cache), recorded in model bundles and checked on load. Weight files are
        left out: a bundle holds every fine-tuned parameter."""
        from transformers.utils import cached_file

        config = cached_file(self.model_name_or_path, "config.json", local_files_only=True)
        if config is None:
            raise ValueError(f"{self.model_name_or_path!r}: no config.json in local files")
        digest = hashlib.sha256()
        for file in sorted(Path(config).parent.iterdir()):
            if (
                file.is_file()
                and not file.name.startswith(".")
                and not file.name.endswith(_NOT_FINGERPRINTED)
            ):
                digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
                digest.update(file.read_bytes())
        return f"hf-files-sha256:{digest.hexdigest()}"

    def _logits(self, tokens: _Tokens, rows: np.ndarray) -> np.ndarray:
        """(len(rows), C) logits, batched by length so little padding is computed."""
        import torch

        self.model_.eval()
        out = np.zeros((len(rows), len(self.classes_)), dtype=np.float64)
        order = np.argsort([len(tokens.ids[i]) for i in rows], kind="stable")
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size * 2):
                pos = order[start : start + self.batch_size * 2]
                out[pos] = self.model_(**self._batch(tokens, rows[pos])).float().cpu().numpy()
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, C) softmax probabilities in ``classes_`` order; rows with no text get ``prior_``."""
        check_is_fitted(self, "model_")
        tokens = self._encode(*self._pairs(X))
        has_text = np.flatnonzero([len(r) > 0 for r in tokens.ids])
        if not has_text.size:
            return self._proba_with_prior(len(tokens.ids), has_text, None)
        with torch_threads(self.threads or available_cpus()):
            logits = self._logits(tokens, has_text)
        return self._proba_with_prior(len(tokens.ids), has_text, softmax(logits, axis=1))
