"""Small torch helpers shared by the neural fusers: a seeded training loop that keeps the best
epoch by validation macro-F1, and (de)serialisation of module weights as plain numpy arrays.

torch is imported inside the functions so that ``import prodcat.fusion`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prodcat.evaluate import macro_f1


@dataclass
class TrainResult:
    """``best_epoch`` (1-based; 0 = initial weights), ``best_score`` its validation macro-F1 (NaN without a
    validation set, when the last epoch is kept), ``history`` the per-epoch validation scores."""

    best_epoch: int
    best_score: float
    history: list[float] = field(default_factory=list)


def train_net(
    net: Any,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float = 0.0,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
) -> TrainResult:
    """Adam + cross-entropy on ``X_train`` (n, d) float32 and integer ``y_train`` (n,); loads into ``net`` the
    weights of the epoch with the best macro-F1 on ``(X_val, y_val)`` (earliest on ties), or the last epoch.

    Shuffling uses its own seeded generator, so results do not depend on the global RNG state.
    """
    import torch

    xt = torch.as_tensor(X_train, dtype=torch.float32)
    yt = torch.as_tensor(y_train, dtype=torch.long)
    wt = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)
    xv = None if X_val is None else torch.as_tensor(X_val, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
    n = len(yt)
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    best = TrainResult(best_epoch=0, best_score=float("-inf"))
    for epoch in range(1, epochs + 1):
        net.train()
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            opt.zero_grad()
            losses = loss_fn(net(xt[idx]), yt[idx])  # (b,)
            loss = losses.mean() if wt is None else (losses * wt[idx]).sum() / wt[idx].sum()
            loss.backward()
            opt.step()
        if xv is None or y_val is None:
            continue
        net.eval()
        with torch.no_grad():
            pred = net(xv).argmax(1).numpy()
        score = macro_f1(y_val, pred)
        best.history.append(score)
        if score > best.best_score:
            best.best_epoch, best.best_score = epoch, score
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if xv is None:
        return TrainResult(best_epoch=epochs, best_score=float("nan"))
    net.load_state_dict(best_state)
    net.eval()
    return best


def predict_softmax(net: Any, X: np.ndarray, *, batch_size: int = 65536) -> np.ndarray:
    """(n, C) float64 softmax of ``net`` on ``X`` (n, d), in eval mode and without gradients."""
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            xb = torch.as_tensor(X[start : start + batch_size], dtype=torch.float32)
            out.append(torch.softmax(net(xb), dim=1).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def state_to_arrays(net: Any, prefix: str) -> dict[str, np.ndarray]:
    """``{prefix + name: float32 array}`` for every tensor in ``net.state_dict()``."""
    return {f"{prefix}{k}": v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def arrays_to_state(net: Any, arrays: dict[str, np.ndarray], prefix: str) -> None:
    """Load the ``prefix``-ed arrays written by :func:`state_to_arrays` into ``net`` (strict: every key)."""
    import torch

    state = {k[len(prefix) :]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith(prefix)}
    net.load_state_dict(state, strict=True)
    net.eval()
