"""From the frames seen to the objects in them: the anchor frame, its layers and their tracks.

The layers are cut from one frame, the *anchor*, and then followed through the others. Where two
digits overlap in the anchor, one frame cannot tell their strokes apart: the cut pieces mix
them, and the separation that follows (`models/separate.py`) works from wrong pieces. So the
objects are cut from several frames: the latest one where the most pieces stand apart, and a
few spread over the frames seen (two digits that cross in the last frames seen stood apart
before). The cut kept is the one whose layers, moved along their tracks, redraw the frames seen
best (analysis by synthesis)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vqvideo.models import layers as Ly
from vqvideo.models.glyphs import Glyphs, needs_cut, split_by_glyphs
from vqvideo.models.layers import HALO, INK, MIN_GROUP, gray_of
from vqvideo.models.motion import fitted_places
from vqvideo.models.separate import EXPLAINED, MIN_FRAMES, low_envelope, own_content, separate


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
               glyphs: Glyphs | None = None, cut: Ly.Layers | None = None) -> tuple[Ly.Layers, Tensor]:
    """images (B, T, C, H, W) in [0, 1], frame (B,) the anchor -> its layers (split by motion
    against a neighbouring frame; with `glyphs`, re-cut by what objects look like where they are
    not one object each; with MIN_FRAMES frames or more, each with its own pixels) and their
    displacements (B, L, T, 2) from the anchor. `cut`: the anchor's segmentation, where known."""
    b, t = images.shape[:2]
    ar = torch.arange(b, device=images.device)
    if cut is None:
        other = images[ar, (frame - 1).abs()] if t > 1 else None  # a neighbour splits it by motion
        cut = Ly.segment(images[ar, frame], max_layers, other, radius)
    layers = cut
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
    return redraw_errors(images, frame, layers, disp).sum(1)


def redraw_errors(images: Tensor, frame: Tensor, layers: Ly.Layers, disp: Tensor) -> Tensor:
    """(B, T) `redraw_error` of each frame seen."""
    anchor = images[torch.arange(len(frame), device=images.device), frame]
    return torch.stack([((Ly.render(anchor, layers, disp[:, :, k]) - images[:, k].float()) ** 2).flatten(1).sum(1)
                        for k in range(images.shape[1])], 1)


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
    t = images.shape[1]
    if t < MIN_FRAMES:
        return (first, *objects_at(images, first, max_layers, radius))
    ar = torch.arange(len(first), device=images.device)
    cuts: dict[int | None, Ly.Layers] = {}  # each frame tried, segmented once (None: the first choice)

    def cut_at(f: int | None) -> Ly.Layers:
        if f not in cuts:
            at = first if f is None else torch.full_like(first, f)
            cuts[f] = Ly.segment(images[ar, at], max_layers, images[ar, (at - 1).abs()], radius)
        return cuts[f]

    layers, disp = objects_at(images, first, max_layers, radius, cut=cut_at(None))
    best = redraw_error(images, first, layers, disp)
    frame, disp = first.clone(), disp.clone()
    masks, scene = layers.masks.clone(), layers.scene.clone()
    content = layers.content.clone() if layers.content is not None else images[ar, frame].float()[:, None] * layers.masks[:, :, None]
    spread = torch.linspace(0, t - 1, CANDIDATES + 1)[:-1].round().long().tolist()
    tries = [(f, None) for f in spread] + ([(f, glyphs) for f in [None, *spread]] if glyphs is not None else [])
    for f, g in tries:
        at = first if f is None else torch.full_like(first, f)
        cut = cut_at(f)
        if g is None:
            todo = torch.nonzero(frame != f).flatten()
        else:  # a frame whose pieces are not one object each, cut by what objects look like
            todo = torch.nonzero(needs_cut(cut, images[ar, at], g)).flatten()
        if len(todo) == 0:
            continue
        sub, sub_disp = objects_at(images[todo], at[todo], max_layers, radius, g,
                                   Ly.Layers(cut.masks[todo], cut.scene[todo]))
        err = redraw_error(images[todo], at[todo], sub, sub_disp)
        wins = err < best[todo]
        if not bool(wins.any()):
            continue
        idx = todo[wins]
        best[idx], frame[idx], disp[idx] = err[wins], at[idx], sub_disp[wins]
        masks[idx], scene[idx] = sub.masks[wins], sub.scene[wins]
        own = sub.content if sub.content is not None else images[todo, at[todo]].float()[:, None] * sub.masks[:, :, None]
        content[idx] = own[wins]
    layers = Ly.Layers(masks, scene, content)
    return (frame, *along_motion(images, frame, layers, disp, best))


REDUNDANT = 2.0  # summed squared error per frame seen below which a layer adds nothing to the redraw
CLEARLY_BETTER = 3.0  # times lower redraw error at which the objects re-read along their motion are taken
COPY = 0.25 * MIN_GROUP  # squared error a layer that copies others adds to its anchor frame


@torch.no_grad()
def along_motion(images: Tensor, frame: Tensor, layers: Ly.Layers, disp: Tensor,
                 error: Tensor) -> tuple[Ly.Layers, Tensor]:
    """The objects re-read along their motion, for the clips where that redraws the frames seen
    (B, T, C, H, W) with under 1 / CLEARLY_BETTER of their `error` (B,) now, or drops a copy at
    a lower error; the others keep their layers. The tracks are returned as they were.

    Two digits that overlap in every frame seen slip the tracker (it follows one, then the
    other), and a layer's own pixels read along a slipped track hold the other digit's strokes.
    Each layer's motion, fitted through the places it keeps (`motion.fitted_places`: a slip is
    an outlier to a line), puts it in every frame; where that is more than a pixel from its
    tracked place, the fitted place is taken. Each layer's own ink is then the low envelope of
    every frame seen along that track (`separate.low_envelope`) less its `strays`, and a layer
    that copies others (`prune`: a copy of one along a wrong track) is dropped."""
    b, t = images.shape[:2]
    objects = layers.valid & ~layers.scene[:, None]
    if t < MIN_FRAMES or not bool(objects.any()):
        return layers, disp
    ar = torch.arange(b, device=images.device)
    model = fitted_places(disp, frame)
    track = torch.where(((disp - model).abs() <= 1).all(-1, keepdim=True), disp, model.round())
    gray = gray_of(images)
    front = gray[ar, frame][:, None]  # (B, 1, H, W)
    envelope, count = low_envelope(gray, track, torch.ones_like(track[..., 0], dtype=torch.bool))
    own = torch.where(count >= MIN_FRAMES, torch.minimum(envelope, front), torch.zeros_like(envelope))
    own = torch.where(front - own <= EXPLAINED, front, own) * objects[..., None, None]
    own = own * (own > INK)
    own = own * ~strays(own > INK)  # another's strokes the track happened to keep ink under
    # ink no layer's track explains (a stroke's edge a pixel off): to the layer whose ink is
    # within HALO + 1 px, the nearest first; else it stays with the layer that held it
    lost = (front[:, 0] > INK) & (own.amax(1) < front[:, 0] - EXPLAINED)  # (B, H, W)
    for r in range(1, HALO + 2):
        near = (F.max_pool2d((own > INK).float(), 2 * r + 1, 1, r) > 0) & lost[:, None] & objects[..., None, None]
        own = torch.where(near & (near.cumsum(1) == 1), front, own)
        lost = lost & ~near.any(1)
    before = gray_of(layers.content) if layers.content is not None else front * layers.masks
    held = F.one_hot(before.argmax(1), own.shape[1]).permute(0, 3, 1, 2).bool() & lost[:, None] & objects[..., None, None]
    own = torch.where(held, front, own)
    masks = torch.where(objects[..., None, None],
                        F.max_pool2d((own > INK).float(), 2 * HALO + 1, 1, HALO), layers.masks)
    own = torch.where(objects[..., None, None], own, before)
    new = Ly.Layers(masks, layers.scene, own_content(images, frame, own, masks, layers.scene))
    new, err = prune(images, frame, new, track, REDUNDANT * t)
    # only where the frames seen are explained far better, or a copy is gone: a layer's own ink
    # read along its fitted motion keeps, by chance, a few pixels of another where the two
    # overlap, which a little lower error does not outweigh (they widen its box: early bounces)
    fewer = new.valid.sum(1) < layers.valid.sum(1)
    wins = (err < error / CLEARLY_BETTER) | (fewer & (err < error))
    keep = lambda a, o: torch.where(wins.view(-1, *[1] * (a.dim() - 1)), a, o)  # noqa: E731
    return (Ly.Layers(keep(new.masks, layers.masks), layers.scene, keep(new.content, layers.content)),
            disp)


def strays(ink: Tensor) -> Tensor:
    """(B, L, H, W) bool each layer's ink -> its strays: the pieces (ink within 2 HALO px is
    one) of under MIN_GROUP px besides its biggest. Along a wrong motion a few pixels of
    another object stay on ink in every frame by chance, apart from the object's own."""
    out = torch.zeros_like(ink)
    kernel = np.ones((2 * HALO + 1, 2 * HALO + 1), np.uint8)
    for i, j in torch.nonzero(ink.flatten(2).any(2)).tolist():
        m = ink[i, j].cpu().numpy().astype(np.uint8)
        n, labels = cv2.connectedComponents(cv2.dilate(m, kernel), connectivity=8)
        labels = np.where(m > 0, labels, 0)
        area = np.bincount(labels.ravel(), minlength=n)
        area[0] = 0
        small = (area < MIN_GROUP) & (np.arange(n) != area.argmax())
        small[0] = False
        out[i, j] = torch.from_numpy(small[labels]).to(ink.device)
    return out


def prune(images: Tensor, frame: Tensor, layers: Ly.Layers, disp: Tensor, tol: float) -> tuple[Ly.Layers, Tensor]:
    """Drop, one at a time, the object layer that is a copy of others (the anchor frame redrawn
    without it is off by under MIN_GROUP px of ink: `COPY`) and whose removal raises the redraw
    error of the frames seen by least, while that is under `tol` -> the layers and their redraw
    error (B,). A layer with ink of its own stays, however wrong its track: dropping an object
    that is drawn in the wrong place always redraws the frames better."""
    masks, content = layers.masks.clone(), layers.content.clone()

    def errors(m: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:  # all the frames seen's, and the anchor's
        per = redraw_errors(images, frame, Ly.Layers(m, layers.scene, c), disp)
        return per.sum(1), per.gather(1, frame[:, None])[:, 0]

    err, at_anchor = errors(masks, content)
    for _ in range(masks.shape[1] - 1):
        objects = (masks.flatten(2) > 0).any(2) & ~layers.scene[:, None]
        if not bool((objects.sum(1) > 1).any()):
            break
        without = []
        for j in range(masks.shape[1]):
            m, c = masks.clone(), content.clone()
            m[:, j], c[:, j] = 0, 0
            e, a = errors(m, c)
            copy = objects[:, j] & (objects.sum(1) > 1) & (a < at_anchor + COPY)
            without.append(torch.where(copy, e, torch.full_like(e, float("inf"))))
        e, j = torch.stack(without, 1).min(1)
        drop = e < err + tol
        if not bool(drop.any()):
            break
        idx = torch.nonzero(drop).flatten()
        masks[idx, j[idx]], content[idx, j[idx]] = 0, 0
        err = torch.where(drop, e, err)
        at_anchor = errors(masks, content)[1]
    return Ly.Layers(masks, layers.scene, content), err
