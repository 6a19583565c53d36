"""From the frames seen to the objects in them: the anchor frame, its layers and their tracks.

The layers are cut from one frame, the *anchor*, and then followed through the others. Where two
digits overlap in the anchor, one frame cannot tell their strokes apart: the cut pieces mix
them, and the separation that follows (`models/separate.py`) works from wrong pieces. So the
objects are cut from several frames: the latest one where the most pieces stand apart, and a
few spread over the frames seen (two digits that cross in the last frames seen stood apart
before). The cut kept is the one whose layers, moved along their tracks, redraw the frames seen
best (analysis by synthesis)."""

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


def redraw_error(images: Tensor, frame: Tensor, layers: Ly.Layers, disp: Tensor) -> Tensor:
    """(B,) summed squared error of the frames seen (B, T, C, H, W) redrawn from the anchor's
    layers, each moved to its place in every frame: how well the objects explain them."""
    anchor = images[torch.arange(len(frame), device=images.device), frame]
    return torch.stack([((Ly.render(anchor, layers, disp[:, :, k]) - images[:, k].float()) ** 2).flatten(1).sum(1)
                        for k in range(images.shape[1])], 1).sum(1)


CANDIDATES = 3  # frames besides the first choice the objects are cut from, spread over the seen ones


@torch.no_grad()
def find_objects(images: Tensor, max_layers: int, radius: int) -> tuple[Tensor, Ly.Layers, Tensor]:
    """images (B, T, C, H, W) in [0, 1] -> the anchor frame (B,), its layers and their
    displacements (B, L, T, 2) from it. With MIN_FRAMES frames or more, the objects are also cut
    from CANDIDATES frames spread over the seen ones (the first among them: two digits that cross
    in the last frames seen stood apart before), and each clip keeps the cut whose layers, moved
    along their tracks, redraw the frames seen best (the first choice where none does better).
    A cut's own overlap cannot choose: a frame's layers never overlap in that frame."""
    frame = choose_anchor(images, max_layers)
    layers, disp = objects_at(images, frame, max_layers, radius)
    t = images.shape[1]
    if t < MIN_FRAMES:
        return frame, layers, disp
    best = redraw_error(images, frame, layers, disp)
    frame, disp = frame.clone(), disp.clone()
    masks, scene = layers.masks.clone(), layers.scene.clone()
    anchor = images[torch.arange(len(frame), device=images.device), frame].float()
    content = layers.content.clone() if layers.content is not None else anchor[:, None] * layers.masks[:, :, None]
    for f in torch.linspace(0, t - 1, CANDIDATES + 1)[:-1].round().long().tolist():
        todo = torch.nonzero(frame != f).flatten()
        if len(todo) == 0:
            continue
        at = torch.full((len(todo),), f, dtype=torch.long, device=images.device)
        sub, sub_disp = objects_at(images[todo], at, max_layers, radius)
        err = redraw_error(images[todo], at, sub, sub_disp)
        wins = err < best[todo]
        if not bool(wins.any()):
            continue
        idx = todo[wins]
        best[idx], frame[idx], disp[idx] = err[wins], f, sub_disp[wins]
        masks[idx], scene[idx] = sub.masks[wins], sub.scene[wins]
        own = sub.content if sub.content is not None else images[todo, f].float()[:, None] * sub.masks[:, :, None]
        content[idx] = own[wins]
    return frame, Ly.Layers(masks, scene, content), disp
