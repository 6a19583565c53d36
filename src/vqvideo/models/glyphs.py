"""What an object looks like, learned from the training clips, and one frame's ink cut by it.

A still frame holds no motion to tell its objects apart: two digits that touch or overlap are one
piece of ink, and one digit drawn in two strokes that do not meet is two. Connected pieces and
straight cuts (`separate.split_oversized`) get these wrong, and the clip then moves a stroke of
one digit with the other, or a digit's bar on its own. What tells them apart is what an object
looks like. The training clips show it: in frames where they show as many pieces as they hold
objects, each piece within the box objects bounce in is one object's whole ink (a *glyph*). A
frame is then explained as that many glyphs from this bank, each at its own place, composited
by maximum (analysis by synthesis; a nonparametric form of DDPAE's per-object appearance), and
its ink goes to the glyph that draws it; where two glyphs draw the same stroke, to both.

Fitting is matching pursuit: one glyph at a time, the one that brings the composite nearest the
frame in squared error, among the glyphs that best draw the ink the others leave (a score linear
in the glyph, so every glyph at every place is one correlation, coarse to fine); then each is
refit with the others held. Only frames whose pieces are not one object each are fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vqvideo.models import layers as Ly
from vqvideo.models.layers import INK, MIN_GROUP, Layers, gray_of
from vqvideo.models.separate import OVERSIZE, split_oversized

GLYPHS = 512  # objects the bank keeps (one or two per training clip)
BLANK = 0.1  # gray level below which the frame is blank: a glyph's ink there counts against it
PENALTY = 1.0  # cost of a glyph's ink on blank frame, against the gain of its ink on the frame's
CANDIDATES = 32  # glyphs, each at its best place, the fit chooses among
ROUNDS = 2  # refits of each glyph with the others held
SHARED = 1.0  # px within which two glyphs both draw a pixel: a stroke where they cross is both's


def tile_shape(size: tuple[int, int]) -> tuple[int, int]:
    """(th, tw) of a glyph tile for frames of `size` (H, W): half the frame (an object that
    bounces in a frame is smaller than it; a bigger one is left out of the bank)."""
    return size[0] // 2, size[1] // 2


@torch.no_grad()
def collect_glyphs(clips: Tensor, box: Tensor, max_layers: int, tile: tuple[int, int],
                   limit: int = GLYPHS) -> tuple[Tensor, int]:
    """Training clips (N, T, C, H, W) in [0, 1] and the box (2,) objects bounce in -> the bank
    (G, th, tw) of glyphs (each object's ink, its ink box at the tile's top left) and the number
    of objects a frame holds (0 where the clips show none apart: no bank).

    That number is the most common, over the clips, of the most pieces any of its frames shows
    (a clip whose objects never stand apart shows fewer). A clip gives the glyphs of its first
    frame with that many pieces, each one's ink box within the box (and the tile)."""
    n, t = clips.shape[:2]
    if n == 0 or not bool((box > 0).all()):
        return torch.zeros(0, *tile), 0
    frames = clips.flatten(0, 1)  # (N*T, C, H, W)
    layers = Ly.segment(frames, max_layers)
    objects = (layers.valid & ~layers.scene[:, None]).sum(1).view(n, t)  # (N, T)
    most = objects.amax(1)
    count = int(torch.mode(most[most > 0]).values) if bool((most > 0).any()) else 0
    if count == 0:
        return torch.zeros(0, *tile), 0
    gray = gray_of(frames)
    own = gray[:, None] * layers.masks  # (N*T, L, H, W)
    ink = Ly.mask_boxes((own > INK).float() * layers.masks)  # (N*T, L, 4)
    size = ink[..., 2:] - ink[..., :2]  # (N*T, L, 2)
    fits = (size <= box.to(size.device) + 1).all(-1) & (size[..., 0] <= tile[1]) & (size[..., 1] <= tile[0])
    good = ((objects.flatten() == count) & (fits | ~layers.valid).all(1)).view(n, t)
    out = []
    for i in torch.nonzero(good.any(1)).flatten().tolist():
        f = i * t + int(good[i].float().argmax())
        for j in torch.nonzero(layers.valid[f]).flatten().tolist():
            x0, y0, x1, y1 = ink[f, j].int().tolist()
            g = torch.zeros(tile)
            g[: y1 - y0, : x1 - x0] = own[f, j, y0:y1, x0:x1]
            out.append(g)
    bank = torch.stack(out[:limit]) if out else torch.zeros(0, *tile)
    return bank, count if len(bank) else 0


def _scores(target: Tensor, bank: Tensor) -> Tensor:
    """target (B, H, W) -> (B, G, H, W): each glyph's correlation with it at each place (the
    glyph tile's top left), the frame extended right and below by blank (a glyph may overhang)."""
    th, tw = bank.shape[-2:]
    padded = F.pad(target[:, None], (0, tw - 1, 0, th - 1), value=-PENALTY)
    return F.conv2d(padded, bank[:, None])


def candidates(ink: Tensor, blank: Tensor, bank: Tensor) -> tuple[Tensor, Tensor]:
    """Ink to draw (B, H, W) and blank frame (B, H, W) -> the CANDIDATES glyphs (B, K) of the
    bank (G, th, tw) that each, at its best place (B, K, 2) (y, x of the tile's top left), best
    draw the ink without drawing on blank: correlation with ink - PENALTY * blank, searched at
    half resolution for each glyph's place and refined at full resolution."""
    target = ink - PENALTY * blank
    b, h, w = target.shape
    small = F.avg_pool2d(bank[:, None], 2)[:, 0]
    coarse = _scores(F.avg_pool2d(target[:, None], 2)[:, 0], small).flatten(2)  # (B, G, H/2 * W/2)
    best, where = coarse.max(2)  # each glyph's best coarse place
    g = best.topk(min(CANDIDATES, len(bank)), dim=1).indices  # (B, K)
    at = where.gather(1, g)
    cy, cx = at // (w // 2), at % (w // 2)
    th, tw = bank.shape[-2:]
    padded = F.pad(target, (0, tw + 1, 0, th + 1), value=-PENALTY)
    off = torch.arange(2, device=target.device)  # the two full-resolution places of a coarse one
    ys = ((2 * cy)[..., None, None] + off[:, None]).expand(-1, -1, 2, 2)  # (B, K, 2, 2)
    xs = ((2 * cx)[..., None, None] + off[None, :]).expand(-1, -1, 2, 2)
    rows = ys[..., None, None] + torch.arange(th, device=target.device)[:, None]  # (B, K, 2, 2, th, 1)
    cols = xs[..., None, None] + torch.arange(tw, device=target.device)[None, :]  # (B, K, 2, 2, 1, tw)
    bi = torch.arange(b, device=target.device)[:, None, None, None, None, None]
    score = (padded[bi, rows, cols] * bank[g][:, :, None, None]).sum((-2, -1)).flatten(2)  # (B, K, 4)
    o = score.argmax(2, keepdim=True)
    return g, torch.stack([ys.flatten(2).gather(2, o)[..., 0], xs.flatten(2).gather(2, o)[..., 0]], -1)


def place(bank: Tensor, glyph: Tensor, at: Tensor, size: tuple[int, int]) -> Tensor:
    """Glyphs (N,) of the bank (G, th, tw) at places (N, 2) (y, x of the tile's top left, from
    -1) -> (N, H, W) frames that show each."""
    th, tw = bank.shape[-2:]
    h, w = size
    out = torch.zeros(len(glyph), h + th + 2, w + tw + 2, device=bank.device)
    n = torch.arange(len(glyph), device=bank.device)[:, None, None]
    rows = (at[:, 0] + 1)[:, None, None] + torch.arange(th, device=bank.device)[:, None]  # (N, th, 1)
    cols = (at[:, 1] + 1)[:, None, None] + torch.arange(tw, device=bank.device)[None, :]  # (N, 1, tw)
    out[n, rows, cols] = bank[glyph]
    return out[:, 1 : h + 1, 1 : w + 1]


@torch.no_grad()
def fit_glyphs(gray: Tensor, bank: Tensor, count: int) -> Tensor:
    """Gray frames (B, H, W) -> (B, count, H, W) the `count` glyphs of the bank (G, th, tw), each
    at its place, whose composite (their maximum, as the data draws) is nearest the frame in
    squared error. Matching pursuit: one glyph at a time, among the `candidates` for the ink
    the others do not yet draw, the one that brings the composite nearest; then each refit
    with the others held (ROUNDS times)."""
    b, h, w = gray.shape
    blank = (gray < BLANK).float()
    ar = torch.arange(b, device=gray.device)

    def best_with(rest: Tensor) -> Tensor:  # the others' composite (B, H, W) -> the glyph to add (B, H, W)
        left = gray * (F.max_pool2d((rest > INK).float()[:, None], 3, 1, 1)[:, 0] == 0)
        g, at = candidates(left, blank, bank)
        k = g.shape[1]
        drawn = place(bank, g.flatten(), at.flatten(0, 1), (h, w)).view(b, k, h, w)  # (B, K, H, W)
        err = ((torch.maximum(drawn, rest[:, None]) - gray[:, None]) ** 2).flatten(2).sum(2)  # (B, K)
        return drawn[ar, err.argmin(1)]

    chosen: list[Tensor] = []
    for _ in range(count):
        chosen.append(best_with(torch.stack(chosen, 1).amax(1) if chosen else torch.zeros_like(gray)))
    for _ in range(ROUNDS if count > 1 else 0):
        for j in range(count):
            chosen[j] = best_with(torch.stack([c for i, c in enumerate(chosen) if i != j], 1).amax(1))
    return torch.stack(chosen, 1)


def assign(front: Tensor, drawn: Tensor, max_layers: int) -> np.ndarray:
    """One frame's gray (H, W) and its fitted glyphs (K, H, W) -> (max_layers, H, W) float32
    masks: every pixel of its (haloed) ink goes to the glyph whose ink is nearest, and to each
    glyph whose ink is within SHARED px where several are (a stroke they both draw). A glyph
    that would hold under MIN_GROUP px of the frame's ink is no object: its pixels go to the others."""
    ink = Ly.haloed_ink(front[None])[0].cpu().numpy()
    dist = np.stack([cv2.distanceTransform((d <= INK).cpu().numpy().astype(np.uint8), cv2.DIST_L2, 3)
                     for d in drawn])  # (K, H, W) px to each glyph's ink
    strong = (front > INK).cpu().numpy()
    keep = list(range(len(drawn)))
    while True:
        near = dist[keep].argmin(0)
        sizes = [int((strong & (near == i)).sum()) for i in range(len(keep))]
        if len(keep) == 1 or min(sizes) >= MIN_GROUP:
            break
        keep.pop(int(np.argmin(sizes)))
    d = dist[keep]
    near = d.argmin(0)
    out = np.zeros((max_layers, *ink.shape), np.float32)
    for i in range(len(keep)):
        out[i] = ink & ((near == i) | ((d[i] <= SHARED) & ((d <= SHARED).sum(0) > 1)))
    return out


@dataclass
class Glyphs:
    """What objects look like, as the training clips show them."""

    bank: Tensor  # (G, th, tw) each glyph's ink, its ink box at the tile's top left
    count: int  # objects a frame holds
    box: Tensor  # (2,) the size (w, h) of the box objects bounce in


def needs_cut(layers: Layers, frames: Tensor, glyphs: Glyphs) -> Tensor:
    """(B,) bool: the object layers of frames (B, C, H, W) are not one object each: other than
    `glyphs.count` of them, or a piece bigger than the box objects bounce in (two that touch)."""
    objects = layers.valid & ~layers.scene[:, None]
    ink = layers.ink_boxes(frames)
    over = (((ink[..., 2:] - ink[..., :2]) > glyphs.box.to(ink.device) + OVERSIZE).any(-1) & objects).any(1)
    n = objects.sum(1)
    return ((n != glyphs.count) | over) & ~layers.scene & (n > 0) & (glyphs.count > 0) & (len(glyphs.bank) > 0)


@torch.no_grad()
def split_by_glyphs(layers: Layers, frames: Tensor, glyphs: Glyphs) -> Layers:
    """The layers of frames (B, C, H, W) re-cut by the objects the glyph bank draws them with,
    where they are not one object each (`needs_cut`). The others, and scenes, keep their layers."""
    need = needs_cut(layers, frames, glyphs)
    idx = torch.nonzero(need).flatten()
    if len(idx) == 0:
        return layers
    gray = gray_of(frames)
    # one fit per distinct frame (samples of one still image repeat it)
    uniq, which = torch.unique(gray[idx].flatten(1), dim=0, return_inverse=True)
    drawn = fit_glyphs(uniq.view(-1, *gray.shape[1:]), trimmed(glyphs.bank.to(frames.device).float()), glyphs.count)
    cuts = [torch.from_numpy(assign(uniq[u].view(gray.shape[1:]), drawn[u], layers.masks.shape[1]))
            for u in range(len(uniq))]
    masks = layers.masks.clone()
    for m, i in enumerate(idx.tolist()):
        masks[i] = cuts[int(which[m])].to(masks.device)
    content = None if layers.content is None else frames.float()[:, None] * masks[:, :, None]
    if content is not None:  # the frames not re-cut keep their layers' own pixels
        keep = ~need
        content[keep] = layers.content[keep].float()
    return Layers(masks, layers.scene, content)


def cut_still(layers: Layers, frames: Tensor, glyphs: Glyphs | None, box: Tensor) -> Layers:
    """A still frame's layers (B, C, H, W), re-cut by the glyph bank where their pieces are not
    one object each; without a bank, a piece bigger than the box (2,) is cut straight across."""
    return split_oversized(layers, frames, box) if glyphs is None else split_by_glyphs(layers, frames, glyphs)


def trimmed(bank: Tensor) -> Tensor:
    """The bank (G, th, tw) without the tile's rows and columns no glyph draws on (even sizes)."""
    any_ = bank.abs().amax(0) > 0
    rows = int(torch.nonzero(any_.any(1)).max()) + 1 if bool(any_.any()) else 2
    cols = int(torch.nonzero(any_.any(0)).max()) + 1 if bool(any_.any()) else 2
    return bank[:, : rows + rows % 2, : cols + cols % 2]

