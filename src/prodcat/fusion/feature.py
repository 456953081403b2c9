"""Feature-level (early) fusion: combine per-modality embeddings, then classify — the paper's baseline.

Input ``X`` is one of
- a dict ``{modality name: (n, d_i) array}`` (block order = key order; predict must give the same keys),
- a list/tuple of (n, d_i) arrays,
- a 2-D array (n, sum d_i) together with ``block_sizes=(d_1, d_2, ...)``,
- a DataFrame (its columns are the 2-D array; ``block_sizes`` required).

Combinations (``combine``), each followed by the same head ``Linear -> ReLU -> Dropout -> Linear(C)``:
- ``"concat"``: the standardised blocks side by side;
- ``"sum"``: each block projected to ``proj_dim`` by its own linear layer, then summed;
- ``"attention"``: projected blocks (tanh) weighted by a per-row softmax over modalities of a learned score
  (``attention_weights`` returns those weights, (n, m)).
Training keeps the epoch with the best macro-F1 on a stratified ``val_fraction`` holdout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any, ClassVar, cast

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from prodcat.fusion._torch import (
    state_to_arrays,
    train_net,
)
from prodcat.params import Interval, Options, validate_params
from prodcat.splits import holdout_split
from prodcat.threads import torch_threads

COMBINES = ("concat", "sum", "attention")


def _to_blocks(X: Any, block_sizes: Sequence[int] | None) -> tuple[list[str] | None, list[np.ndarray]]:
    """(names or None, list of (n, d_i) float32 arrays)."""
    if isinstance(X, Mapping):
        names = [str(k) for k in X]
        blocks = [np.asarray(v, dtype=np.float32) for v in X.values()]
    elif isinstance(X, list | tuple):
        names, blocks = None, [np.asarray(v, dtype=np.float32) for v in X]
    else:
        arr = np.asarray(X, dtype=np.float32)
        if arr.ndim != 2:
            raise ValueError(f"X must be a dict/list of 2-D blocks or a 2-D array, got shape {arr.shape}")
        if block_sizes is None:
            raise ValueError("a 2-D X needs `block_sizes` (the width of each modality's embedding)")
        if sum(block_sizes) != arr.shape[1] or min(block_sizes) < 1:
            raise ValueError(f"block_sizes {list(block_sizes)} do not add up to X's {arr.shape[1]} columns")
        cuts = np.cumsum(block_sizes)[:-1]
        names, blocks = None, list(np.split(arr, cuts, axis=1))
    if not blocks or any(b.ndim != 2 for b in blocks) or len({len(b) for b in blocks}) != 1:
        raise ValueError("every block must be a 2-D array with the same number of rows")
    return names, blocks


def _make_net(sizes: list[int], n_classes: int, *, combine: str, proj_dim: int, hidden: int, dropout: float):
    import torch
    import torch.nn as nn

    class FeatureFusionNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sizes = sizes
            if combine == "concat":
                width = sum(sizes)
            else:
                self.proj = nn.ModuleList(nn.Linear(d, proj_dim) for d in sizes)
                width = proj_dim
            if combine == "attention":
                self.score = nn.Linear(proj_dim, 1)
            self.head = nn.Sequential(
                nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
            )

        def weights(self, parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            H = torch.stack([torch.tanh(p(x)) for p, x in zip(self.proj, parts, strict=True)], 1)  # (B, m, P)
            return torch.softmax(self.score(H).squeeze(-1), dim=1), H  # (B, m), (B, m, P)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, sum d_i)
            if combine == "concat":
                return self.head(x)
            parts = list(x.split(self.sizes, dim=1))
            if combine == "sum":
                return self.head(torch.relu(sum(p(v) for p, v in zip(self.proj, parts, strict=True))))
            a, H = self.weights(parts)
            return self.head((a.unsqueeze(-1) * H).sum(1))

    return FeatureFusionNet()


def _linear(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def _softmax(z: np.ndarray, axis: int) -> np.ndarray:
    z = z.astype(np.float64)
    z -= z.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(axis=axis, keepdims=True)


def forward_numpy(
    w: dict[str, np.ndarray], Z: np.ndarray, sizes: list[int], combine: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, C) float64 class probabilities and, for ``"attention"``, (n, m) modality weights of the network of
    :func:`_make_net` in eval mode, from its state dict ``w`` as numpy arrays: prediction needs no torch."""
    a = None
    if combine == "concat":
        h = Z
    else:
        parts = np.split(Z, np.cumsum(sizes)[:-1], axis=1)
        proj = [_linear(x, w, f"proj.{i}") for i, x in enumerate(parts)]
        if combine == "sum":
            h = np.maximum(sum(proj[1:], proj[0]), 0)
        else:
            H = np.tanh(np.stack(proj, 1))  # (n, m, P)
            a = _softmax(_linear(H, w, "score")[..., 0], axis=1)  # (n, m)
            h = (a.astype(np.float32)[..., None] * H).sum(1)
    logits = _linear(np.maximum(_linear(h, w, "head.0"), 0), w, "head.3")
    return _softmax(logits, axis=1), a


class FeatureFusion(ClassifierMixin, BaseEstimator):
    """Embeddings -> combination -> MLP head (see module docstring), behind the scikit-learn contract.

    Parameters
    ----------
    combine : ``"concat"``, ``"sum"`` or ``"attention"``.
    block_sizes : widths of the modality blocks when ``X`` is a 2-D array.
    proj_dim, hidden, dropout : projection width (sum/attention), head width, head dropout.
    epochs, lr, batch_size, weight_decay : Adam training; val_fraction : holdout for best-epoch selection
        (0 keeps the last epoch).
    standardize : z-score every input column with the training mean / std (stored with the model).
    seed, n_threads : reproducibility and torch threads.

    Attributes
    ----------
    classes_, block_names_ (or None), block_sizes_, mean_, scale_, weights_ (the network's state dict as numpy
    arrays: prediction runs in numpy), net_ (the torch network, after fit only), best_epoch_, val_score_.
    """

    _constraints: ClassVar[dict[str, list[Any]]] = {
        "combine": [Options(set(COMBINES))],
        "block_sizes": ["array-like", None],
        "proj_dim": [Interval(Integral, 1, None, closed="left")],
        "hidden": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "val_fraction": [Interval(Real, 0, 1, closed="left")],
        "standardize": ["boolean"],
        "seed": [Integral],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
        "classes": ["array-like", None],
    }

    def __init__(
        self,
        *,
        combine: str = "concat",
        block_sizes: Sequence[int] | None = None,
        proj_dim: int = 128,
        hidden: int = 256,
        dropout: float = 0.2,
        epochs: int = 30,
        lr: float = 1e-3,
        batch_size: int = 128,
        weight_decay: float = 1e-4,
        val_fraction: float = 0.1,
        standardize: bool = True,
        seed: int = 0,
        n_threads: int | None = 1,
        classes: Sequence[Any] | None = None,
    ) -> None:
        self.combine = combine
        self.block_sizes = block_sizes
        self.proj_dim = proj_dim
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.val_fraction = val_fraction
        self.standardize = standardize
        self.seed = seed
        self.n_threads = n_threads
        self.classes = classes

    def _matrix(self, X: Any, *, fitting: bool) -> np.ndarray:
        names, blocks = _to_blocks(X, self.block_sizes)
        sizes = [b.shape[1] for b in blocks]
        if fitting:
            self.block_names_, self.block_sizes_ = names, sizes
        elif sizes != self.block_sizes_ or (names is not None and self.block_names_ not in (None, names)):
            raise ValueError(
                f"X blocks {names or ''} {sizes} do not match the fitted blocks "
                f"{self.block_names_ or ''} {self.block_sizes_}"
            )
        Z = np.hstack(blocks)
        if not np.isfinite(Z).all():
            raise ValueError("embeddings contain NaN or infinite values")
        if fitting:
            self.mean_ = Z.mean(0) if self.standardize else np.zeros(Z.shape[1], np.float32)
            sd = Z.std(0) if self.standardize else np.ones(Z.shape[1], np.float32)
            self.scale_ = np.where(sd > 1e-6, sd, 1.0).astype(np.float32)
        return ((Z - self.mean_) / self.scale_).astype(np.float32)

    def check_params(self) -> None:
        """Check types and ranges of the parameters without fitting (``fit`` runs it first)."""
        validate_params(self, self._constraints)

    def _new_net(self) -> Any:
        return _make_net(
            self.block_sizes_,
            len(self.classes_),
            combine=self.combine,
            proj_dim=self.proj_dim,
            hidden=self.hidden,
            dropout=self.dropout,
        )

    def fit(self, X: Any, y: Any) -> FeatureFusion:
        """Fit on embedding blocks ``X`` (n rows in total) and labels ``y`` (n,). Returns self."""
        import torch

        self.check_params()
        y = np.asarray(y)
        self.classes_ = np.unique(y) if self.classes is None else np.asarray(list(self.classes))
        pos = {c: i for i, c in enumerate(self.classes_.tolist())}
        if any(v not in pos for v in y.tolist()):
            raise ValueError("y holds labels not in `classes`")
        codes = np.fromiter((pos[v] for v in y.tolist()), dtype=np.int64, count=len(y))
        Z = self._matrix(X, fitting=True)
        if len(Z) != len(y):
            raise ValueError(f"X has {len(Z)} rows but y has {len(y)}")
        self.n_features_in_ = Z.shape[1]
        if self.val_fraction > 0:
            tr, va = holdout_split(cast(Any, codes), test_size=self.val_fraction, seed=self.seed)
        else:
            tr, va = np.arange(len(y)), None
        with torch_threads(self.n_threads):
            torch.manual_seed(self.seed)
            self.net_ = self._new_net()
            res = train_net(
                self.net_,
                Z[tr],
                codes[tr],
                None if va is None else Z[va],
                None if va is None else codes[va],
                epochs=self.epochs,
                lr=self.lr,
                batch_size=self.batch_size,
                weight_decay=self.weight_decay,
                seed=self.seed,
            )
        self.best_epoch_, self.val_score_ = res.best_epoch, res.best_score
        self.weights_ = state_to_arrays(self.net_, "")
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, C) class probabilities in ``classes_`` order."""
        check_is_fitted(self, "weights_")
        Z = self._matrix(X, fitting=False)
        return forward_numpy(self.weights_, Z, self.block_sizes_, self.combine)[0]

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]

    def attention_weights(self, X: Any) -> np.ndarray:
        """(n, m) per-row modality weights of an ``"attention"`` model (rows sum to 1)."""
        check_is_fitted(self, "weights_")
        if self.combine != "attention":
            raise ValueError("attention_weights needs combine='attention'")
        a = forward_numpy(self.weights_, self._matrix(X, fitting=False), self.block_sizes_, self.combine)[1]
        return cast(np.ndarray, a)

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        info = {
            "block_names_": self.block_names_,
            "block_sizes_": list(self.block_sizes_),
            "best_epoch_": self.best_epoch_,
            "val_score_": self.val_score_,
            "n_features_in_": self.n_features_in_,
        }
        arrays = {f"net.{k}": v for k, v in self.weights_.items()}
        arrays.update(mean_=np.asarray(self.mean_, np.float32), scale_=np.asarray(self.scale_, np.float32))
        return info, arrays

    def _restore_state(self, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.block_names_ = info["block_names_"]
        self.block_sizes_ = [int(s) for s in info["block_sizes_"]]
        self.best_epoch_, self.val_score_ = info["best_epoch_"], info["val_score_"]
        self.n_features_in_ = int(info["n_features_in_"])
        self.mean_, self.scale_ = arrays["mean_"], arrays["scale_"]
        # the network is not rebuilt: predict_proba runs its forward pass in numpy (no torch at prediction)
        self.weights_ = {k[len("net.") :]: v for k, v in arrays.items() if k.startswith("net.")}
