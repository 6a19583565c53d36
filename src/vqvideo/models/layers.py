"""A frame as rigid layers that move: segment, track, render (Wang & Adelson 1994, layered motion).

Why: a predictor that re-samples its own decoded prediction at every step low-passes thin strokes
and, trained with pixel or code losses, contracts what it is unsure about (docs/generate.md).
Here every predicted frame is composited from one real frame, the *anchor*, with each layer
moved by its accumulated displacement (SAVP's first-frame candidate, SVG's skips from the last
real frame; object permanence as in DDPAE). A layer keeps its pixels for the whole clip, so it
cannot thin, shrink or smear: what the temporal model learns is only *where* each layer goes.

Two kinds of frame:
- ink: content over a dark background (Moving Digits, Moving MNIST). Each connected piece of ink
  (with a halo for its faint edges) is a layer; layers move by whole pixels (the data draws its
  digits at rounded positions) and are composited by maximum, as the data is.
- scene: anything else (footage). The whole frame is one layer, moved by fractional pixels
  (bilinear); what enters at the border is mirrored texture, not black.

Everything here is a pure function of tensors; `models/prior.py` holds the learned parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

INK = 0.2  # gray level (0..1) above which a pixel is content, on a dark background
HALO = 2  # px the ink is dilated by: a stroke's faint edge moves with it
DARK = 0.1  # a frame whose border is brighter than this is a scene
SCENE_COVERAGE = 0.4  # ink (with halo) over more of the frame than this: a scene
TRACK_POINTS = 256  # pixels per layer the tracker compares (the layer's strongest edges)
ROBUST = 0.1  # squared-error cap of the tracker: overlapping content costs little, not all
LOST = 0.03  # tracker cost above which a layer counts as lost in that frame


@dataclass
class Layers:
    masks: Tensor  # (B, L, H, W) float 0/1; a layer that does not exist is all zero
    scene: Tensor  # (B,) bool: the frame is one scene layer (masks[:, 0] is all ones)
    content: Tensor | None = None  # (B, L, C, H, W) each layer's pixels, where not anchor x mask

    @property
    def valid(self) -> Tensor:
        """(B, L) bool: the layer exists."""
        return self.masks.flatten(2).amax(2) > 0

    def boxes(self) -> Tensor:
        """(B, L, 4) bounding boxes (x0, y0, x1, y1) in pixels, x1/y1 exclusive; 0 where empty."""
        return mask_boxes(self.masks)

    def ink_boxes(self, anchor: Tensor) -> Tensor:
        """(B, L, 4) the boxes of each layer's own ink in the anchor frame (B, C, H, W), without
        the halo (which the frame's edge clips: the ink's box is where an object's extent shows
        alike wherever it stands); the layer's box where it has no ink above INK."""
        own = self.content if self.content is not None else anchor.float()[:, None] * self.masks[:, :, None]
        ink = mask_boxes((gray_of(own) > INK).float() * self.masks)
        return torch.where((ink[..., 2:] > ink[..., :2]).all(-1, keepdim=True), ink, self.boxes())


def mask_boxes(masks: Tensor) -> Tensor:
    """(B, L, H, W) masks -> (B, L, 4) their bounding boxes (x0, y0, x1, y1), x1/y1 exclusive; 0 where empty."""
    b, n, h, w = masks.shape
    cols, rows = masks.amax(2) > 0, masks.amax(3) > 0  # (B, L, W), (B, L, H)

    def span(any_: Tensor, size: int) -> tuple[Tensor, Tensor]:
        idx = torch.arange(size, device=any_.device).expand_as(any_)
        lo = torch.where(any_, idx, size).amin(-1)
        hi = torch.where(any_, idx + 1, 0).amax(-1)
        return torch.where(hi > 0, lo, 0), hi

    x0, x1 = span(cols, w)
    y0, y1 = span(rows, h)
    return torch.stack([x0, y0, x1, y1], -1).float()


def gray_of(frames: Tensor) -> Tensor:
    """(..., C, H, W) -> (..., H, W) mean over channels, float."""
    return frames.float().mean(-3)


def haloed_ink(gray: Tensor) -> Tensor:
    """(B, H, W) gray frames -> (B, H, W) bool: their ink, dilated by HALO px (a stroke's faint edge)."""
    return F.max_pool2d((gray > INK).float()[:, None], 2 * HALO + 1, 1, HALO)[:, 0] > 0


def segment(frames: Tensor, max_layers: int, other: Tensor | None = None, radius: int = 6) -> Layers:
    """(B, C, H, W) frames in [0, 1] -> their layers (at most `max_layers` each).

    Ink frames: connected pieces of the dilated ink, largest first; pieces beyond `max_layers`
    join the kept layer whose centre is nearest, so no ink is ever dropped. With `other`, a
    neighbouring frame, ink is first split by how it moves between the two (`motion_groups`):
    two digits that touch but move apart become two layers.
    """
    gray = gray_of(frames)
    b, h, w = gray.shape
    border = torch.cat([gray[:, 0], gray[:, -1], gray[:, :, 0], gray[:, :, -1]], 1)
    ink = haloed_ink(gray)
    coverage = ink.float().mean((1, 2))
    scene = (border.median(1).values > DARK) | (coverage > SCENE_COVERAGE) | (coverage == 0)
    masks = torch.zeros(b, max_layers, h, w, device=frames.device)
    masks[scene, 0] = 1.0
    objects = torch.nonzero(~scene).flatten()
    if len(objects) == 0:
        return Layers(masks, scene)
    groups = torch.zeros(b, h, w, dtype=torch.long, device=frames.device)
    if other is not None:
        groups[objects] = motion_groups(frames[objects], other[objects], radius, max_layers)
    ink_np = ink.cpu().numpy().astype(np.uint8)
    groups_np = groups.cpu().numpy()
    for i in objects.tolist():
        masks[i] = torch.from_numpy(_components(ink_np[i], groups_np[i], max_layers)).to(masks.device)
    return Layers(masks, scene)


def motion_groups(frames: Tensor, other: Tensor, radius: int, max_groups: int) -> Tensor:
    """Split each frame's content by motion: (B, H, W) group ids, 0 = the dominant motion.

    A cost volume of every shift within `radius` between the frame and its neighbour (squared
    difference, averaged over 7x7 px); the shift that explains the most ink is group 0, then,
    greedily, the shift that best explains what the chosen ones do not, kept while it clearly
    explains enough ink of its own (at least MIN_GROUP px). Every pixel joins the group whose
    shift explains it best (its own difference first, then its window's).
    """
    a, o = frames.float(), other.float()
    b, c, h, w = a.shape
    r = radius
    pad = F.pad(o, (r, r, r, r))
    # stacked last, so the volume is channels-last: the 7x7 pooling then runs about 3x faster on a CPU
    vol = torch.stack([((a - pad[:, :, r + int(dy) : r + int(dy) + h, r + int(dx) : r + int(dx) + w]) ** 2).mean(1)
                       for dx, dy in _window(r, a.device).tolist()], -1).permute(0, 3, 1, 2)  # (B, S, H, W)
    raw, vol = vol, F.avg_pool2d(vol, 7, 1, 3, count_include_pad=False)
    ink = (gray_of(a) > INK)[:, None]  # (B, 1, H, W)
    cost = vol.clamp_max(ROBUST) * ink
    ar = torch.arange(b, device=a.device)
    chosen = [cost.sum((2, 3)).argmin(1)]  # (B,)
    keep = [torch.ones(b, dtype=torch.bool, device=a.device)]
    current = cost[ar, chosen[0]]  # (B, H, W)
    for _ in range(1, max_groups):
        total = torch.minimum(cost, current[:, None]).sum((2, 3))  # (B, S)
        s = total.argmin(1)
        claims = ((cost[ar, s] < current - CLEARLY) & ink[:, 0]).sum((1, 2))
        ok = claims >= MIN_GROUP
        if not bool(ok.any()):
            break
        chosen.append(s)
        keep.append(ok)
        current = torch.where(ok[:, None, None], torch.minimum(current, cost[ar, s]), current)
    # a pixel's own difference decides where it has one; the window's, where it is blank
    per = torch.stack([raw[ar, s] + 0.5 * vol[ar, s] for s in chosen], 1)  # (B, G, H, W)
    per = torch.where(torch.stack(keep, 1)[:, :, None, None], per, torch.full_like(per, float("inf")))
    return per.argmin(1)


MIN_GROUP = 40  # px of ink a second motion must explain on its own to split a piece
CLEARLY = 0.005  # by this much lower cost


def _components(ink: np.ndarray, groups: np.ndarray, max_layers: int) -> np.ndarray:
    """(H, W) uint8 0/1 ink and motion groups -> (L, H, W) float32 masks of the largest
    pieces (connected, and of one motion) of at least MIN_GROUP px; the rest join the nearest
    kept piece."""
    pieces, centres, areas = [], [], []
    for g in np.unique(groups[ink > 0]):
        n, labels, stats, cent = cv2.connectedComponentsWithStats(((groups == g) & (ink > 0)).astype(np.uint8),
                                                                  connectivity=8)
        for lab in range(1, n):
            pieces.append(labels == lab)
            centres.append(cent[lab])
            areas.append(stats[lab, cv2.CC_STAT_AREA])
    order = np.argsort(-np.asarray(areas), kind="stable")
    # a speck (a few pixels a threshold or a motion split cut off an object) is not an object
    # of its own: it joins the nearest one, and leaves the layer for a real one
    big = [k for k in order if areas[k] >= MIN_GROUP]
    kept = (big or list(order[:1]))[:max_layers]
    rest = [k for k in order if k not in set(kept)]
    out = np.zeros((max_layers, *ink.shape), np.float32)
    for j, k in enumerate(kept):
        out[j][pieces[k]] = 1.0
    kc = np.asarray([centres[k] for k in kept])
    for k in rest:  # join the nearest kept piece
        out[int(np.argmin(((kc - centres[k]) ** 2).sum(1)))][pieces[k]] = 1.0
    return out


def track_points(frames: Tensor, layers: Layers, count: int = TRACK_POINTS) -> tuple[Tensor, Tensor, Tensor]:
    """The pixels each layer is tracked by: its `count` strongest edges (texture for a scene).

    Returns positions (B, L, N, 2) as (x, y) ints, their values (B, L, N, C), and weights
    (B, L, N): 1 for a real point, 0 for padding (a layer with fewer pixels, or none).
    """
    # a layer with its own pixels (`Layers.content`) is tracked by them, not by what covers it
    x = frames.float()[:, None] if layers.content is None else layers.content.float()  # (B, 1 | L, C, H, W)
    gray = gray_of(x)
    gx = F.pad(gray[..., 1:] - gray[..., :-1], (0, 1)).abs()
    gy = F.pad(gray[..., 1:, :] - gray[..., :-1, :], (0, 0, 0, 1)).abs()
    # edges first, then any content (a flat bright blob is tracked by its inside too)
    score = (gx + gy + 0.01 * gray + 1e-6) * layers.masks  # (B, L, H, W)
    b, n, h, w = score.shape
    k = min(count, h * w)
    top, idx = score.flatten(2).topk(k, dim=2)  # (B, L, N)
    weight = (top > 0).float()
    pos = torch.stack([idx % w, idx // w], -1)  # (B, L, N, 2) as (x, y)
    flat = x.flatten(3).expand(-1, n, -1, -1)  # (B, L, C, H*W)
    values = torch.gather(flat, 3, idx[:, :, None].expand(-1, -1, x.shape[2], -1)).transpose(2, 3)  # (B, L, N, C)
    return pos, values, weight


def match_cost(frame: Tensor, pos: Tensor, values: Tensor, weight: Tensor, shifts: Tensor) -> Tensor:
    """Robust mean squared difference of each layer's points moved by each shift.

    frame (P, C, H, W), one per layer; pos (P, N, 2); values (P, N, C); weight (P, N);
    shifts (P, S, 2) in whole pixels -> cost (P, S). A point moved outside the frame does not
    count (a pan's border); a shift that moves every point outside costs the cap.
    """
    p, c, h, w = frame.shape
    sh = shifts.long()
    x = pos[..., 0].int()[:, None] + sh[..., 0, None].int()  # (P, S, N), int32: half the memory traffic
    y = pos[..., 1].int()[:, None] + sh[..., 1, None].int()
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    flat_idx = (y * w + x).clamp_(0, h * w - 1).long()  # a point outside reads any pixel: it does not count
    s, n = flat_idx.shape[1:]
    got = torch.gather(frame.float().flatten(2), 2, flat_idx.view(p, 1, -1).expand(-1, c, -1)).view(p, c, s, n)
    err = ((got - values.transpose(1, 2)[:, :, None]) ** 2).mean(1).clamp_max(ROBUST)  # (P, S, N)
    wgt = weight[:, None] * inside
    total = wgt.sum(-1)
    return torch.where(total > 0, (err * wgt).sum(-1) / total.clamp_min(1e-6), torch.full_like(total, ROBUST))


def _window(radius: int, device: torch.device, stride: int = 1) -> Tensor:
    r = torch.arange(-radius, radius + 1, stride, device=device, dtype=torch.float32)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([dx.flatten(), dy.flatten()], -1)  # (S, 2)


def _search(frame: Tensor, pts: tuple[Tensor, Tensor, Tensor], centre: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    """Best whole-pixel shift within `radius` of `centre` (P, 2): every other shift first, then
    the 3x3 around the best of them (a third of the work of trying all). -> shift, cost."""
    coarse = centre[:, None] + _window(radius - radius % 2, frame.device, stride=2)  # (P, S, 2)
    c = match_cost(frame, *pts, coarse)
    ar = torch.arange(len(c), device=frame.device)
    fine = coarse[ar, c.argmin(1)][:, None] + _window(1, frame.device)
    c = match_cost(frame, *pts, fine)
    i = c.argmin(1)
    return fine[ar, i], c[ar, i]


@torch.no_grad()
def track(frames: Tensor, anchor: Tensor, layers: Layers, radius: int) -> tuple[Tensor, Tensor]:
    """Where each layer of the anchor frame is in every frame of its clip.

    frames (B, T, C, H, W); anchor (B,) the frame index the layers come from -> displacement
    (B, L, T, 2) as (dx, dy) pixels, 0 at the anchor, and the match cost (B, L, T); both 0 for
    a layer that does not exist. Each frame is searched within `radius` pixels of the layer's
    place in its neighbour towards the anchor, forwards and backwards, so a layer is followed
    through bounces and past other layers.
    """
    b, t = frames.shape[:2]
    n_l = layers.masks.shape[1]
    ar = torch.arange(b, device=frames.device)
    pos, values, weight = track_points(frames[ar, anchor], layers)
    disp = torch.zeros(b, n_l, t, 2, device=frames.device)
    cost = torch.zeros(b, n_l, t, device=frames.device)
    bi, li = torch.nonzero(layers.valid, as_tuple=True)  # one search per existing layer
    if len(bi) == 0:
        return disp, cost
    pts = (pos[bi, li], values[bi, li], weight[bi, li])
    start = anchor[bi]
    for direction in (1, -1):
        prev = torch.zeros(len(bi), 2, device=frames.device)
        for k in range(t) if direction == 1 else range(t - 1, -1, -1):
            on = (k - start) * direction > 0  # this frame is on this side of the anchor
            if not bool(on.any()):
                continue
            found, c = _search(frames[bi, k], pts, prev, radius)
            disp[bi, li, k] = torch.where(on[:, None], found, disp[bi, li, k])
            cost[bi, li, k] = torch.where(on, c, cost[bi, li, k])
            prev = torch.where(on[:, None], found, prev)
    return disp, cost


def _base_grid(h: int, w: int, device: torch.device) -> Tensor:
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=device)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=device)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2) as (x, y)


def shift(images: Tensor, disp: Tensor, *, mode: str, padding: str) -> Tensor:
    """(N, C, H, W) moved by (N, 2) pixels (dx, dy): out(p) = images(p - disp)."""
    n, _, h, w = images.shape
    scale = torch.tensor([2 / w, 2 / h], device=images.device)
    grid = _base_grid(h, w, images.device)[None] - (disp.float() * scale)[:, None, None]
    return F.grid_sample(images.float(), grid, mode=mode, padding_mode=padding, align_corners=False)


def render(anchor: Tensor, layers: Layers, disp: Tensor) -> Tensor:
    """The anchor frame (B, C, H, W) with each layer moved by disp (B, L, 2) -> (B, C, H, W).

    Ink layers move by whole pixels (rounded, as the data draws them) over a black background,
    composited by maximum; a scene moves by fractional pixels with mirrored borders.
    """
    b, n_l = disp.shape[:2]
    out = torch.zeros_like(anchor, dtype=torch.float32)
    ink, scene = ~layers.scene, layers.scene
    if bool(ink.any()):
        a, m, d = anchor[ink].float(), layers.masks[ink], disp[ink].round()
        own = a[:, None] * m[:, :, None] if layers.content is None else layers.content[ink].float()
        pieces = own.flatten(0, 1)  # (B'*L, C, H, W)
        moved = shift(pieces, d.flatten(0, 1), mode="nearest", padding="zeros")
        out[ink] = moved.view(a.shape[0], n_l, *a.shape[1:]).amax(1)
    if bool(scene.any()):
        out[scene] = shift(anchor[scene], disp[scene, 0], mode="bilinear", padding="reflection")
    return out.clamp(0, 1)


def layers_from_boxes(frames: Tensor, boxes: Tensor, max_layers: int) -> Layers:
    """Layers of ink frames (B, C, H, W) from known object boxes (B, K, 4) as (x0, y0, x1, y1)
    px (labels, or a user's regions); a box with x1 <= x0 is absent. Ink inside one box is that
    object's; ink inside several goes to the box whose centre is nearest; ink outside every box
    joins the nearest box too, so nothing is dropped."""
    gray = gray_of(frames)
    b, h, w = gray.shape
    ink = haloed_ink(gray)
    k = min(boxes.shape[1], max_layers)
    bx = boxes[:, :k].float()
    present = bx[..., 2] > bx[..., 0]  # (B, K)
    ys, xs = torch.meshgrid(torch.arange(h, device=frames.device), torch.arange(w, device=frames.device), indexing="ij")
    cx, cy = (bx[..., 0] + bx[..., 2]) / 2, (bx[..., 1] + bx[..., 3]) / 2
    inside = ((xs >= bx[..., 0, None, None]) & (xs < bx[..., 2, None, None]) &
              (ys >= bx[..., 1, None, None]) & (ys < bx[..., 3, None, None]))  # (B, K, H, W)
    dist = (xs - cx[..., None, None]) ** 2 + (ys - cy[..., None, None]) ** 2
    dist = dist - 1e6 * inside.float()  # inside a box beats any distance
    dist = torch.where(present[..., None, None], dist, torch.full_like(dist, float("inf")))
    owner = dist.argmin(1)  # (B, H, W)
    masks = torch.zeros(b, max_layers, h, w, device=frames.device)
    for j in range(k):
        masks[:, j] = ((owner == j) & ink & present[:, j, None, None]).float()
    return Layers(masks, torch.zeros(b, dtype=torch.bool, device=frames.device))


def merge_common_motion(layers: Layers, disp: Tensor, tol: float = 1.0, gap: int = 2 * HALO + 2) -> Layers:
    """Common fate: ink layers (B, L, ...) that moved together through the frames seen (disp
    (B, L, T, 2): every displacement within `tol` px of each other's) and lie within `gap` px of
    each other are one object, pieces a threshold cut apart (a digit's stroke); they become one
    layer, so they turn at one set of walls. Layers with T < 2 frames have no motion to tell."""
    b, n = layers.masks.shape[:2]
    if disp.shape[2] < 2 or n < 2:
        return layers
    boxes, valid = layers.boxes(), layers.valid & ~layers.scene[:, None]
    same = (disp[:, :, None] - disp[:, None]).abs().amax((-1, -2)) <= tol  # (B, L, L)
    lo, hi = boxes[..., :2], boxes[..., 2:]
    apart = (torch.maximum(lo[:, :, None], lo[:, None]) - torch.minimum(hi[:, :, None], hi[:, None])).amax(-1)
    join = same & (apart <= gap) & valid[:, :, None] & valid[:, None]
    if not bool(join.triu(1).any()):
        return layers
    masks = layers.masks.clone()
    content = None if layers.content is None else layers.content.clone()
    for i in range(b):
        for j in range(n):  # into the first of each group (masks sum: each piece counted once)
            for k in range(j + 1, n):
                if bool(join[i, j, k]) and bool(masks[i, k].any()) and bool(masks[i, j].any()):
                    masks[i, j] = torch.maximum(masks[i, j], masks[i, k])
                    masks[i, k] = 0
                    if content is not None:
                        content[i, j] = torch.maximum(content[i, j], content[i, k])
                        content[i, k] = 0
    return Layers(masks, layers.scene, content)
