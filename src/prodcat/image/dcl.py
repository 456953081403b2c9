"""Destruction and Construction Learning (DCL; Chen et al., CVPR 2019), as used by the paper's image branch.

Training sees each image twice: as is and "destructed" by the region confusion mechanism (RCM): the image is cut
into an ``n x n`` grid and regions are shuffled, each staying within a neighbourhood of its origin. Three heads
share the backbone's feature map:

- the main classifier, on both versions (it must recognise a product from local details, not global layout);
- an adversarial "shuffled or not" head (2-way), so features that only encode RCM's artefacts are told apart
  rather than used for the class;
- a region-alignment head (1x1 conv -> ``n x n`` map of 2 coordinates) predicting where each region came from,
  an L1 loss that makes the network model how parts relate (construction).

Only the main classifier is used at inference.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def rcm_permutation(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Region confusion: ``(n, n, 2)`` int array, the source ``(row, col)`` of each destination region.

    Within each row, column positions are sorted after adding ``U(-k, k)`` jitter (so a region moves by less
    than ``2k`` columns), then the same along each column. ``k=1`` barely moves anything; ``k >= n`` shuffles freely.
    """
    src = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), axis=-1)  # (n, n, 2) [row, col]
    for r in range(n):
        src[r] = src[r, np.argsort(np.arange(n) + rng.uniform(-k, k, n), kind="stable")]
    for c in range(n):
        src[:, c] = src[np.argsort(np.arange(n) + rng.uniform(-k, k, n), kind="stable"), c]
    return src


def destruct(images: Any, n: int, k: int, rng: np.random.Generator) -> tuple[Any, Any]:
    """Apply an independent RCM shuffle to each image of a ``(B, C, H, W)`` tensor.

    The grid covers the largest ``n``-divisible top-left part; leftover border strips stay in place.

    Returns
    -------
    destroyed : ``(B, C, H, W)`` tensor; coords : ``(B, 2, n, n)`` float tensor, the normalised source
        ``(row, col)`` in ``[0, 1]`` of each destination region (targets of the alignment head).
    """
    import torch

    b, _, h, w = images.shape
    rh, rw = h // n, w // n
    if rh == 0 or rw == 0:
        raise ValueError(f"image {h}x{w} is too small for a {n}x{n} DCL grid")
    out = images.clone()
    coords = torch.empty((b, 2, n, n), dtype=torch.float32)
    for i in range(b):
        src = rcm_permutation(n, k, rng)
        grid = images[i, :, : n * rh, : n * rw].reshape(-1, n, rh, n, rw)  # (C, n, rh, n, rw)
        rows = torch.from_numpy(src[..., 0]).to(images.device)
        cols = torch.from_numpy(src[..., 1]).to(images.device)
        shuffled = grid[:, rows, :, cols, :]  # (n, n, C, rh, rw): advanced indices come first
        out[i, :, : n * rh, : n * rw] = shuffled.permute(2, 0, 3, 1, 4).reshape(-1, n * rh, n * rw)
        coords[i] = torch.from_numpy(np.moveaxis(src, -1, 0) / max(n - 1, 1))
    return out, coords.to(images.device)


def identity_coords(b: int, n: int, device: Any = None) -> Any:
    """``(B, 2, n, n)`` normalised coordinates of an unshuffled grid."""
    import torch

    src = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), axis=0) / max(n - 1, 1)
    return torch.from_numpy(src).float().expand(b, 2, n, n).to(device)


def build_network(backbone: Any, n_classes: int, *, dcl: bool, regions: int) -> Any:
    """Backbone + main linear classifier (+ DCL adversarial and alignment heads when ``dcl``)."""
    import torch
    from torch import nn

    if dcl and not backbone.spatial:
        raise ValueError("DCL needs a convolutional feature map; this backbone outputs tokens")

    class Network(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = backbone.module
            self.spatial = backbone.spatial
            self.classifier = nn.Linear(backbone.channels, n_classes)
            self.adversary = nn.Linear(backbone.channels, 2) if dcl else None
            self.locator = nn.Conv2d(backbone.channels, 2, kernel_size=1) if dcl else None
            self.regions = regions

        def pooled(self, f: torch.Tensor) -> torch.Tensor:
            return f.mean(dim=(2, 3)) if self.spatial else f.mean(dim=1)  # (B, C)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, n_classes) logits
            return self.classifier(self.pooled(self.features(x)))

        def forward_dcl(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            assert self.adversary is not None and self.locator is not None
            f = self.features(x)  # (B, C, h, w)
            p = self.pooled(f)
            loc = nn.functional.adaptive_avg_pool2d(
                torch.sigmoid(self.locator(f)), self.regions
            )  # (B, 2, n, n)
            return self.classifier(p), self.adversary(p), loc

    return Network()


def dcl_loss(
    net: Any,
    x: Any,
    y: Any,
    w: Any,
    rng: np.random.Generator,
    *,
    regions: int,
    neighbourhood: int,
    adv_weight: float,
    loc_weight: float,
) -> Any:
    """Weighted DCL objective on a batch ``x`` (B, 3, H, W), labels ``y`` (B,), sample weights ``w`` (B,).

    ``L = CE(main, both versions) + adv_weight * CE(shuffled?, both) + loc_weight * L1(alignment, both)``.
    """
    import torch
    from torch.nn import functional as F

    b = x.shape[0]
    destroyed, coords = destruct(x, regions, neighbourhood, rng)
    logits, adv, loc = net.forward_dcl(torch.cat([x, destroyed]))
    w2 = torch.cat([w, w])
    cls = (F.cross_entropy(logits, torch.cat([y, y]), reduction="none") * w2).sum() / w2.sum()
    is_shuffled = torch.cat([torch.zeros(b), torch.ones(b)]).long().to(x.device)
    adv_l = F.cross_entropy(adv, is_shuffled)
    target = torch.cat([identity_coords(b, regions, x.device), coords])
    loc_l = F.l1_loss(loc.float(), target)
    return cls + adv_weight * adv_l + loc_weight * loc_l
