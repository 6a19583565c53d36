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
from vqvideo.models.glyphs import Glyphs, needs_cut, split_by_glyphs
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


def objects_at(images: Tensor, frame: Tensor, max_layers: int, radius: int,
               glyphs: Glyphs | None = None) -> tuple[Ly.Layers, Tensor]:
    """images (B, T, C, H, W) in [0, 1], frame (B,) the anchor -> its layers (split by motion
    against a neighbouring frame; with `glyphs`, re-cut by what objects look like where they are
    not one object each; with MIN_FRAMES frames or more, each with its own pixels) and their
    displacements (B, L, T, 2) from the anchor."""
    b, t = images.shape[:2]
    ar = torch.arange(b, device=images.device)
    other = images[ar, (frame - 1).abs()] if t > 1 else None  # a neighbour splits it by motion
    layers = Ly.segment(images[ar, frame], max_layers, other, radius)
    if glyphs is not None:
        layers = split_by_glyphs(layers, images[ar, frame], glyphs)
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
def find_objects(images: Tensor, max_layers: int, radius: int,
                 glyphs: Glyphs | None = None) -> tuple[Tensor, Ly.Layers, Tensor]:
    """images (B, T, C, H, W) in [0, 1] -> the anchor frame (B,), its layers and their
    displacements (B, L, T, 2) from it. With MIN_FRAMES frames or more, the objects are also cut
    from CANDIDATES frames spread over the seen ones (the first among them: two digits that cross
    in the last frames seen stood apart before), and each clip keeps the cut whose layers, moved
    along their tracks, redraw the frames seen best (the first choice where none does better).
    With `glyphs`, each of those frames whose pieces are not one object each (digits that
    overlap in every frame seen, moving together) is also cut by what objects look like, and
    that cut competes alike. A cut's own overlap cannot choose: a frame's layers never overlap
    in that frame."""
    first = choose_anchor(images, max_layers)
    layers, disp = objects_at(images, first, max_layers, radius)
    t = images.shape[1]
    if t < MIN_FRAMES:
        return first, layers, disp
    best = redraw_error(images, first, layers, disp)
    frame, disp = first.clone(), disp.clone()
    masks, scene = layers.masks.clone(), layers.scene.clone()
    ar = torch.arange(len(frame), device=images.device)
    content = layers.content.clone() if layers.content is not None else images[ar, frame].float()[:, None] * layers.masks[:, :, None]
    spread = torch.linspace(0, t - 1, CANDIDATES + 1)[:-1].round().long().tolist()
    tries = [(f, None) for f in spread] + ([(f, glyphs) for f in [None, *spread]] if glyphs is not None else [])
    for f, g in tries:
        at = first if f is None else torch.full_like(first, f)
        if g is None:
            todo = torch.nonzero(frame != f).flatten()
        else:  # a frame whose pieces are not one object each, cut by what objects look like
            cut = Ly.segment(images[ar, at], max_layers, images[ar, (at - 1).abs()], radius)
            todo = torch.nonzero(needs_cut(cut, images[ar, at], g)).flatten()
        if len(todo) == 0:
            continue
        sub, sub_disp = objects_at(images[todo], at[todo], max_layers, radius, g)
        err = redraw_error(images[todo], at[todo], sub, sub_disp)
        wins = err < best[todo]
        if not bool(wins.any()):
            continue
        idx = todo[wins]
        best[idx], frame[idx], disp[idx] = err[wins], at[idx], sub_disp[wins]
        masks[idx], scene[idx] = sub.masks[wins], sub.scene[wins]
        own = sub.content if sub.content is not None else images[todo, at[todo]].float()[:, None] * sub.masks[:, :, None]
        content[idx] = own[wins]
    return frame, Ly.Layers(masks, scene, content), disp
