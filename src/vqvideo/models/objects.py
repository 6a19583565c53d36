"""From the frames seen to the objects in them: the anchor frame, its layers and their tracks.

The layers are cut from one frame, the *anchor*, and then followed through the others. Where two
digits overlap in the anchor, one frame cannot tell their strokes apart: the cut pieces mix
them, and the separation that follows (`models/separate.py`) works from wrong pieces. So the
anchor is chosen twice: first the latest frame where the most pieces stand apart, and then,
once the objects are tracked, the latest frame where they overlap least, as their own tracks
place them (two digits that cross in the last frames seen stood apart before). Where that is
another frame, the objects are cut again from it, and the cut kept is the one whose layers,
moved along their tracks, redraw the frames seen better (analysis by synthesis).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vqvideo.models import layers as Ly
from vqvideo.models.separate import MIN_FRAMES, separate


def choose_anchor(images: Tensor, max_layers: int) -> Tensor:
    """(B, T, C, H, W) -> (B,) the frame to take layers from: the latest one where the most
    pieces stand apart (two digits that overlap in the last frame were apart earlier, and a
    rigid layer looks the same in every frame)."""
    b, t = images.shape[:2]
    if t == 1:
        return torch.zeros(b, dtype=torch.long, device=images.device)
    count = Ly.segment(images.flatten(0, 1), max_layers).valid.sum(1).view(b, t)
    return (count * t + torch.arange(t, device=images.device)).argmax(1)


def objects_at(images: Tensor, frame: Tensor, max_layers: int, radius: int) -> tuple[Ly.Layers, Tensor]:
    """images (B, T, C, H, W) in [0, 1], frame (B,) the anchor -> its layers (split by motion
    against a neighbouring frame; with MIN_FRAMES frames or more, each with its own pixels) and
    their displacements (B, L, T, 2) from the anchor."""
    b, t = images.shape[:2]
    ar = torch.arange(b, device=images.device)
    other = images[ar, (frame - 1).abs()] if t > 1 else None  # a neighbour splits it by motion
    layers = Ly.segment(images[ar, frame], max_layers, other, radius)
    disp, cost = Ly.track(images, frame, layers, radius)
    layers = Ly.merge_common_motion(layers, disp)  # a merged layer keeps its first piece's track
    if t >= MIN_FRAMES:  # each object's own pixels, as the frames seen show them
        layers, disp = separate(images, frame, layers, disp, cost, radius)
        layers = Ly.merge_common_motion(layers, disp)
    return layers, disp


def overlaps(layers: Ly.Layers, disp: Tensor) -> Tensor:
    """(B, L, ...) layers and their displacements (B, L, T, 2) -> (B, T) px where two layers or
    more cover one pixel in each frame, each layer's mask moved to its place there."""
    b, n, h, w = layers.masks.shape
    t = disp.shape[2]
    masks = layers.masks[:, :, None].expand(-1, -1, t, -1, -1).reshape(-1, 1, h, w)
    moved = Ly.shift(masks, disp.round().flatten(0, 2), mode="nearest", padding="zeros").view(b, n, t, h, w)
    return (moved.sum(1) - 1).clamp_min(0).flatten(2).sum(2)


def redraw_error(images: Tensor, frame: Tensor, layers: Ly.Layers, disp: Tensor) -> Tensor:
    """(B,) summed squared error of the frames seen (B, T, C, H, W) redrawn from the anchor's
    layers, each moved to its place in every frame: how well the objects explain them."""
    anchor = images[torch.arange(len(frame), device=images.device), frame]
    return torch.stack([((Ly.render(anchor, layers, disp[:, :, k]) - images[:, k].float()) ** 2).flatten(1).sum(1)
                        for k in range(images.shape[1])], 1).sum(1)


@torch.no_grad()
def find_objects(images: Tensor, max_layers: int, radius: int) -> tuple[Tensor, Ly.Layers, Tensor]:
    """images (B, T, C, H, W) in [0, 1] -> the anchor frame (B,), its layers and their
    displacements (B, L, T, 2) from it. With MIN_FRAMES frames or more, where the objects found
    overlap less in another frame (the latest such), they are found again from that one, and
    kept where they redraw the frames seen better."""
    frame = choose_anchor(images, max_layers)
    layers, disp = objects_at(images, frame, max_layers, radius)
    if images.shape[1] < MIN_FRAMES:
        return frame, layers, disp
    t = images.shape[1]
    cover = overlaps(layers, disp)
    better = (cover * (t + 1) - torch.arange(t, device=images.device)).argmin(1)  # the latest of the least
    redo = torch.nonzero(cover.gather(1, better[:, None])[:, 0] < cover.gather(1, frame[:, None])[:, 0]).flatten()
    if len(redo) == 0:
        return frame, layers, disp
    sub, sub_disp = objects_at(images[redo], better[redo], max_layers, radius)
    old = Ly.Layers(layers.masks[redo], layers.scene[redo], None if layers.content is None else layers.content[redo])
    wins = redraw_error(images[redo], better[redo], sub, sub_disp) < redraw_error(images[redo], frame[redo], old, disp[redo])
    redo, sub = redo[wins], Ly.Layers(sub.masks[wins], sub.scene[wins], None if sub.content is None else sub.content[wins])
    sub_disp = sub_disp[wins]
    if len(redo) == 0:
        return frame, layers, disp
    frame, disp = frame.clone(), disp.clone()
    frame[redo], disp[redo] = better[redo], sub_disp
    masks, scene = layers.masks.clone(), layers.scene.clone()
    masks[redo], scene[redo] = sub.masks, sub.scene
    content = None
    if layers.content is not None or sub.content is not None:  # a layer without its own pixels is the anchor's
        anchor = images[torch.arange(len(frame), device=images.device), frame].float()
        content = (layers.content.clone() if layers.content is not None
                   else anchor[:, None] * layers.masks[:, :, None])
        content[redo] = sub.content if sub.content is not None else anchor[redo][:, None] * sub.masks[:, :, None]
    return frame, Ly.Layers(masks, scene, content), disp
