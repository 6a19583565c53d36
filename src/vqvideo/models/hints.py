"""Steering a still image's motion by hand: drags that name a layer by a pixel on it.

`hints` are, per input, `[(x, y, dx, dy), ...]`: the layer under pixel (x, y) (or the nearest
one) makes the first step (dx, dy). Used by `CodePrior.plan` (`models/prior.py`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vqvideo.models import layers as Ly


def _layer_at(masks: Tensor, x: float, y: float) -> int:
    """(L, H, W) one input's masks -> the layer under pixel (x, y), or the nearest one."""
    h, w = masks.shape[-2:]
    xi, yi = int(round(min(max(x, 0), w - 1))), int(round(min(max(y, 0), h - 1)))
    under = masks[:, yi, xi] > 0
    if bool(under.any()):
        return int(under.float().argmax())
    ys, xs = torch.meshgrid(torch.arange(h, device=masks.device), torch.arange(w, device=masks.device), indexing="ij")
    d = ((xs - x) ** 2 + (ys - y) ** 2).float()
    far = torch.where(masks > 0, d, torch.tensor(float("inf"), device=d.device)).flatten(1).amin(1)
    return int(far.argmin())


def apply_hints(steps: Tensor, layers: Ly.Layers, hints: list) -> Tensor:
    """Per input, [(x, y, dx, dy), ...]: the layer under (x, y) (or nearest to it) steps (dx, dy)."""
    out = steps.clone()
    for i, given in enumerate(hints):
        for x, y, dx, dy in given or []:
            out[i, _layer_at(layers.masks[i], x, y)] = torch.tensor([dx, dy], dtype=out.dtype, device=out.device)
    return out


def split_by_hints(layers: Ly.Layers, hints: list) -> Ly.Layers:
    """Drags that land on one layer with different steps say it is several objects (two digits
    that touch in a still frame are one piece of ink): its pixels go to the nearest of those
    drags' points, each part a layer of its own, while free layers last."""
    masks = layers.masks.clone()
    h, w = masks.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, device=masks.device), torch.arange(w, device=masks.device), indexing="ij")
    for i, given in enumerate(hints):
        by_layer: dict[int, list] = {}
        for x, y, dx, dy in given or []:
            by_layer.setdefault(_layer_at(layers.masks[i], x, y), []).append((x, y, dx, dy))
        for j, points in by_layer.items():
            if len({(dx, dy) for _, _, dx, dy in points}) < 2 or layers.scene[i]:
                continue
            free = [k for k in range(masks.shape[1]) if not bool(masks[i, k].any())][: len(points) - 1]
            points = points[: len(free) + 1]
            d = torch.stack([(xs - x) ** 2 + (ys - y) ** 2 for x, y, _, _ in points]).float()  # (P, H, W)
            owner = d.argmin(0)
            piece = masks[i, j].clone()
            for p, k in enumerate([j, *free]):
                masks[i, k] = piece * (owner == p)
    return Ly.Layers(masks, layers.scene, layers.content)
