"""``paper-mlp``: the winning team's decision-level fusion (Chen et al., SIGIR eCom 2020).

A shallow net on the concatenated class probabilities: 1 layer (``Linear(m*C, C)``) or 2 layers
(``Linear(m*C, 6) -> ReLU -> Linear(6, C)``; the paper gives the hidden size, not the activation), trained with
Adam (lr 0.01) for 40 epochs. The fusion training set is split into K = 8 stratified folds; net k trains on the
other K-1 folds and keeps the epoch with the best macro-F1 on fold k. At prediction time the K nets vote.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, ClassVar, cast

import numpy as np
from tqdm.auto import tqdm

from prodcat.ensemble import majority_vote
from prodcat.evaluate import macro_f1
from prodcat.fusion.decision import _EPS, DecisionFusion
from prodcat.params import Interval, Options
from prodcat.splits import kfold_indices
from prodcat.threads import torch_threads


def _init_params(K: int, sizes: list[int], seed: int) -> list[Any]:
    """Stacked weights ``(K, fan_in, fan_out)`` and biases ``(K, fan_out)`` for each layer of K nets, drawn like
    ``torch.nn.Linear``'s default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        bound = 1.0 / math.sqrt(fan_in)
        for shape in ((K, fan_in, fan_out), (K, fan_out)):
            w = (torch.rand(shape, generator=gen) * 2 - 1) * bound
            params.append(torch.nn.Parameter(w))
    return params


def _forward(params: list[Any], x: Any) -> Any:
    """Logits (K, b, C) of the K stacked nets on ``x``: (K, b, d) per-net rows, or (b, d) shared rows."""
    import torch

    h = x
    for i in range(0, len(params), 2):
        W, bias = params[i], params[i + 1]
        h = torch.einsum("bd,kdh->kbh", h, W) if h.dim() == 2 else torch.bmm(h, W)
        h = h + bias.unsqueeze(1)
        if i + 2 < len(params):
            h = torch.relu(h)
    return h


def forward_numpy(weights: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    """(K, n, C) float64 softmax of the K stacked nets ``weights`` (as :func:`_forward`'s ``params``) on shared
    rows ``x`` (n, d) float32: the torch forward pass in numpy, same float32 arithmetic, so that prediction
    and serving need no torch (torch trains the nets only)."""
    h = np.asarray(x, dtype=np.float32)[None]  # (1, n, d), broadcast over the K nets
    for i in range(0, len(weights), 2):
        h = np.matmul(h, weights[i]) + weights[i + 1][:, None, :]  # (K, n, h)
        if i + 2 < len(weights):
            h = np.maximum(h, 0)
    z = h.astype(np.float64)
    z -= z.max(axis=2, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=2, keepdims=True)
    return z


def _fold_batches(folds: list[np.ndarray], batch_size: int, gen: Any) -> tuple[Any, Any]:
    """One epoch of minibatches for K nets at once: indices (S, K, B) and a 0/1 mask (S, K, B).

    Net k sees each of its rows exactly once, in S nearly equal batches (S from the largest fold), padded to a
    common width B; padded slots have mask 0.
    """
    import torch

    S = max(math.ceil(len(f) / batch_size) for f in folds)
    B = max(math.ceil(len(f) / S) for f in folds)
    idx = torch.zeros((S, len(folds), B), dtype=torch.long)
    mask = torch.zeros((S, len(folds), B))
    for k, f in enumerate(folds):
        perm = torch.as_tensor(f)[torch.randperm(len(f), generator=gen)]
        for s, chunk in enumerate(perm.tensor_split(S)):
            idx[s, k, : len(chunk)] = chunk
            mask[s, k, : len(chunk)] = 1.0
    return idx, mask


def _pad(folds: list[np.ndarray]) -> tuple[Any, Any]:
    """(K, V) padded row indices and (K, V) bool validity of K index lists."""
    import torch

    V = max(len(f) for f in folds)
    idx = torch.zeros((len(folds), V), dtype=torch.long)
    ok = torch.zeros((len(folds), V), dtype=torch.bool)
    for k, f in enumerate(folds):
        idx[k, : len(f)] = torch.as_tensor(f)
        ok[k, : len(f)] = True
    return idx, ok


class PaperMLPFusion(DecisionFusion):
    """K shallow nets trained by K-fold CV on the fusion set, voting at prediction time.

    Parameters
    ----------
    n_layers : 1 or 2; hidden : width of the 2-layer net's hidden layer (paper: 6).
    lr, epochs, batch_size, weight_decay : Adam training (paper: lr 0.01, 40 epochs; batch size not given).
    n_splits : K, the number of folds and of nets (paper: 8).
    inputs : ``"proba"`` (paper) or ``"log"`` (log of the probabilities, floored at 1e-6).
    voting : ``"hard"`` (paper: majority of the K nets, ties broken by summed probability, see
        :mod:`prodcat.ensemble`) or ``"soft"`` (argmax of the mean probability).
    seed : seeds folds, initialisation and shuffling (results are reproducible on one machine).
    n_threads : torch threads while fitting / predicting (tiny nets: 1 is fastest).
    classes, n_models, n_extra : block structure (see :mod:`prodcat.fusion.decision`); extra columns are fed
        to the nets as they are.

    Attributes
    ----------
    weights_ : the K nets' parameters stacked per layer: ``[W (K, d, h), b (K, h), ...]`` (float32 arrays);
    fold_scores_ : (K,) best validation macro-F1 of each net; best_epochs_ : (K,) the epoch kept for each net.

    Notes
    -----
    ``predict_proba`` is the mean of the K nets' softmax outputs (a proper distribution, useful for further
    stacking and calibration). ``predict`` follows the paper's vote and can differ from
    ``predict_proba(X).argmax(1)`` on a few rows where a minority of confident nets outweighs the majority.
    """

    _constraints: ClassVar[dict[str, list[Any]]] = {
        **DecisionFusion._constraints,
        "n_layers": [Interval(Integral, 1, 2, closed="both")],
        "hidden": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "n_splits": [Interval(Integral, 2, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "inputs": [Options({"proba", "log"})],
        "voting": [Options({"hard", "soft"})],
        "seed": [Integral],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
        "progress": ["boolean"],
    }

    def __init__(
        self,
        *,
        n_layers: int = 1,
        hidden: int = 6,
        lr: float = 0.01,
        epochs: int = 40,
        n_splits: int = 8,
        batch_size: int = 64,
        weight_decay: float = 0.0,
        inputs: str = "proba",
        voting: str = "hard",
        seed: int = 0,
        n_threads: int | None = 1,
        progress: bool = False,
        classes: Sequence[Any] | None = None,
        n_models: int | None = None,
        n_extra: int = 0,
    ) -> None:
        self.n_layers = n_layers
        self.hidden = hidden
        self.lr = lr
        self.epochs = epochs
        self.n_splits = n_splits
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.inputs = inputs
        self.voting = voting
        self.seed = seed
        self.n_threads = n_threads
        self.progress = progress
        self.classes = classes
        self.n_models = n_models
        self.n_extra = n_extra

    def _inputs(self, X: np.ndarray) -> np.ndarray:
        if self.inputs == "proba":
            return X.astype(np.float32)
        k = self.n_models_ * len(self.classes_)
        return np.hstack([np.log(np.clip(X[:, :k], _EPS, 1)), X[:, k:]]).astype(np.float32)

    def _sizes(self, d: int) -> list[int]:
        C = len(self.classes_)
        return [d, C] if self.n_layers == 1 else [d, self.hidden, C]

    def adapt_to_labels(self, y: Any) -> list[str]:
        """Lower ``n_splits`` to the smallest class count of the training labels ``y`` (at least 2) so that
        every class is in every fold; returns what was changed, in words (nothing when no change was needed)."""
        counts = np.unique(np.asarray(y), return_counts=True)[1]
        k = max(2, int(counts.min())) if len(counts) else self.n_splits
        if k >= self.n_splits:
            return []
        self.n_splits = k
        return [
            f"{type(self).__name__}: n_splits lowered to {k} (smallest class has {int(counts.min())} rows)"
        ]

    def _fit(self, X: np.ndarray, codes: np.ndarray, sample_weight: np.ndarray | None) -> None:
        import torch

        Z = torch.as_tensor(self._inputs(X))
        y = torch.as_tensor(codes)
        sw = (
            torch.ones(len(y))
            if sample_weight is None
            else torch.as_tensor(sample_weight, dtype=torch.float32)
        )
        splits = list(kfold_indices(cast(Any, codes), n_splits=self.n_splits, seed=self.seed, strict=False))
        K = len(splits)
        val_idx, val_ok = _pad([va for _, va in splits])
        with torch_threads(self.n_threads):
            # The K nets train side by side as stacked tensors: same maths as K separate nets and K Adams
            # (Adam is element-wise and the nets' losses are summed), at a fraction of the Python overhead.
            params = _init_params(K, self._sizes(Z.shape[1]), self.seed)
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
            gen = torch.Generator().manual_seed(self.seed)
            best = [p.detach().clone() for p in params]
            scores = np.full(K, -np.inf)
            epochs = np.zeros(K, dtype=np.int64)
            for epoch in tqdm(range(1, self.epochs + 1), desc="paper-mlp epochs", disable=not self.progress):
                idx, mask = _fold_batches([tr for tr, _ in splits], self.batch_size, gen)
                for s in range(idx.shape[0]):
                    rows = idx[s]  # (K, B)
                    logits = _forward(params, Z[rows])  # (K, B, C)
                    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y[rows], reduction="none")
                    wk = mask[s] * sw[rows]  # (K, B)
                    loss = ((ce * wk).sum(1) / wk.sum(1).clamp_min(1e-12)).sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    pred = _forward(params, Z[val_idx]).argmax(2).numpy()  # (K, V)
                for k in range(K):
                    ok = val_ok[k].numpy()
                    score = macro_f1(codes[val_idx[k].numpy()[ok]], pred[k][ok])
                    if score > scores[k]:  # earliest best epoch wins ties
                        scores[k], epochs[k] = score, epoch
                        for b, p in zip(best, params, strict=True):
                            b[k] = p.detach()[k]
        self.weights_ = [b.numpy() for b in best]
        self.fold_scores_ = scores
        self.best_epochs_ = epochs

    def _net_probas(self, X: np.ndarray) -> np.ndarray:
        """(K, n, C) softmax of each net, in numpy: prediction needs no torch (see :func:`forward_numpy`)."""
        return forward_numpy(self.weights_, self._inputs(X))

    def _proba(self, X: np.ndarray) -> np.ndarray:
        return self._net_probas(X).mean(0)

    def predict(self, X: Any) -> np.ndarray:
        """(n,) labels by the K nets' majority vote (``voting="hard"``) or by the mean probability."""
        return self.predict_with_proba(X)[0]

    def predict_with_proba(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(predict(X), predict_proba(X))`` from one forward pass of the K nets."""
        P = self._net_probas(self._check_X(X))
        mean = P.mean(0)
        if self.voting == "soft":
            return self.classes_[mean.argmax(1)], mean
        return self.classes_[majority_vote(P.argmax(2), n_classes=P.shape[2], probas=P)], mean

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        info = {"fold_scores_": self.fold_scores_.tolist(), "best_epochs_": self.best_epochs_.tolist()}
        return info, {f"layer{i}": np.asarray(w, dtype=np.float32) for i, w in enumerate(self.weights_)}

    def _restore_state(self, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        n_arrays = 2 if self.n_layers == 1 else 4
        self.weights_ = [np.asarray(arrays[f"layer{i}"], dtype=np.float32) for i in range(n_arrays)]
        self.fold_scores_ = np.asarray(info["fold_scores_"])
        self.best_epochs_ = np.asarray(info["best_epochs_"])
