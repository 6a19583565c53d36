"""Object permanence from the frames seen: each ink layer's own pixels, as its track shows them.

Segmenting one frame cannot tell two digits apart where they touch or overlap: a layer cut from
it holds the other digit's strokes too, or two digits share one layer, and once they move apart
the prediction carries the wrong pieces along (scribbles), or both as one block. The frames seen
tell them apart. The data composites by maximum, so a pixel of an object, followed along that
object's track, is at least as bright as the object itself in every frame, and exactly as bright
where nothing else covers it; a pixel of anything else, followed along the same track, lands on
background once the two have moved apart. So an object's own ink is the low envelope of the
frames seen, each moved back by the object's displacement (a min along its track; the second
lowest, so that one frame the tracker got wrong erases nothing). Where two digits cross, a pixel
is both digits' and both keep it. Ink that no layer's track explains is a further object of its
own (two digits that shared a layer), or, if only a speck, joins the layer it was in.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from vqvideo.models import layers as Ly
from vqvideo.models.layers import HALO, INK, MIN_GROUP, Layers, gray_of

EXPLAINED = 0.05  # an anchor pixel no brighter than a layer's own ink plus this is that layer's
HELD = 0.07  # tracker cost up to which a frame counts: a layer holding two objects matches one of them
MIN_FRAMES = 3  # frames (the anchor included) a layer's track must hold for its envelope to count


def moved_back(frames: Tensor, disp: Tensor) -> tuple[Tensor, Tensor]:
    """frames (B, T, H, W) and whole-pixel displacements (B, L, T, 2) -> each frame read where
    each layer is in it, out(b, l, t, p) = frames(b, t, p + disp(b, l, t)), (B, L, T, H, W),
    and whether that place lies inside the frame."""
    b, t, h, w = frames.shape
    n_l = disp.shape[1]
    d = -disp.round().flatten(0, 2)  # (B*L*T, 2): out(p) = frame(p - d), Ly.shift's convention
    stack = frames[:, None].expand(-1, n_l, -1, -1, -1).reshape(-1, 1, h, w)
    got = Ly.shift(stack, d, mode="nearest", padding="zeros").view(b, n_l, t, h, w)
    inside = Ly.shift(torch.ones_like(stack), d, mode="nearest", padding="zeros").view(b, n_l, t, h, w) > 0.5
    return got, inside


@torch.no_grad()
def separate(images: Tensor, anchor: Tensor, layers: Layers, disp: Tensor, cost: Tensor,
             radius: int) -> tuple[Layers, Tensor]:
    """images (B, T, C, H, W) the frames seen; anchor (B,) the frame the layers come from; disp
    (B, L, T, 2) their tracks and cost (B, L, T) the tracker's match costs -> the layers with
    each one's own pixels (`Layers.content`) and masks to match, and their tracks. A layer keeps
    its track (its own pixels are those that follow it); an object found in ink no track
    explains is tracked (within `radius` px a frame), and its own pixels where it crosses
    another are then read along its own track."""
    if images.shape[1] < MIN_FRAMES or not bool((layers.valid & ~layers.scene[:, None]).any()):
        return layers, disp  # too few frames to tell, or scenes only (footage): nothing to separate
    out = own_pixels(images, anchor, layers, disp, cost)
    fresh = out.valid & ~layers.valid
    idx = torch.nonzero(fresh.any(1)).flatten()  # clips with an object found: their second pass
    if len(idx) == 0:
        return out, disp
    sub = Layers(out.masks[idx], out.scene[idx], out.content[idx])
    new_disp, new_cost = Ly.track(images[idx], anchor[idx], sub, radius)
    sub_disp = torch.where(fresh[idx][..., None, None], new_disp, disp[idx])
    sub_cost = torch.where(fresh[idx][..., None], new_cost, cost[idx])
    again = own_pixels(images[idx], anchor[idx], sub, sub_disp, sub_cost, fresh[idx])
    more = again.valid & ~sub.valid  # found in the second pass: tracked, not separated again
    if bool(more.any()):
        sub_disp = torch.where(more[..., None, None], Ly.track(images[idx], anchor[idx], again, radius)[0], sub_disp)
    masks, content, disp = out.masks.clone(), out.content.clone(), disp.clone()
    masks[idx], content[idx], disp[idx] = again.masks, again.content, sub_disp
    layers = Layers(masks, out.scene, content)
    return layers, disp


def low_envelope(gray: Tensor, disp: Tensor, held: Tensor) -> tuple[Tensor, Tensor]:
    """gray frames (B, T, H, W), tracks (B, L, T, 2) and where the tracker holds each layer
    (B, L, T) -> each layer's low envelope along its track, (B, L, H, W): the second lowest of
    the frames read where the layer is (the lowest where MIN_FRAMES frames or fewer see that
    place), and how many frames see each place, (B, L, H, W)."""
    got, inside = moved_back(gray, disp)
    use = held[..., None, None] & inside  # (B, L, T, H, W)
    count = use.sum(2)  # (B, L, H, W) frames that see the layer's place
    low = torch.where(use, got, torch.full_like(got, float("inf")))
    low = low.topk(min(2, low.shape[2]), dim=2, largest=False, sorted=True).values
    return torch.where(count > MIN_FRAMES, low[:, :, -1], low[:, :, 0]), count


@torch.no_grad()
def own_ink_boxes(images: Tensor, anchor: Tensor, layers: Layers, disp: Tensor, held: Tensor) -> Tensor:
    """(B, L, 4) the box of each object layer's own ink at the anchor, as its track through the
    frames `images` (B, T, C, H, W) shows it: where the layer's pixels stay ink along its track
    `disp` (B, L, T, 2), in the frames where it is held (B, L, T) bool (`low_envelope`).
    Another digit's strokes that its mask holds where the two overlap leave it once they move
    apart, so its box is the object's own, which its walls stand against (the box the anchor
    alone gives grows by the other digit's strokes, and the layer turns early). Layers held in
    fewer than MIN_FRAMES frames, scenes, and fewer frames than that: the anchor's ink box
    (`Layers.ink_boxes`)."""
    ar = torch.arange(images.shape[0], device=images.device)
    front = images[ar, anchor]
    plain = layers.ink_boxes(front)
    if images.shape[1] < MIN_FRAMES or not bool((layers.valid & ~layers.scene[:, None]).any()):
        return plain  # too few frames to tell, or scenes only (footage)
    gray = gray_of(images)
    envelope, count = low_envelope(gray, disp, held)
    mine = gray[ar, anchor][:, None] * layers.masks if layers.content is None else gray_of(layers.content)
    own = torch.where(count >= MIN_FRAMES, torch.minimum(envelope, mine), mine)
    boxes = Ly.mask_boxes((own > INK).float())
    ok = (layers.valid & ~layers.scene[:, None] & (held.sum(2) >= MIN_FRAMES)
          & (boxes[..., 2:] > boxes[..., :2]).all(-1))
    return torch.where(ok[..., None], boxes, plain)


def reach(front: Tensor, masks: Tensor, objects: Tensor) -> Tensor:
    """(B, L, H, W) where each object layer's own pixels may lie: the pieces of (haloed) ink of the
    anchor frame `front` (B, H, W) that its mask touches. Ink elsewhere that happens to move the
    same way (two digits at rest) is another object's."""
    ink = Ly.haloed_ink(front)
    out = torch.zeros_like(masks, dtype=torch.bool)
    for i in torch.nonzero(objects.any(1)).flatten().tolist():
        _, labels = cv2.connectedComponents(ink[i].cpu().numpy().astype(np.uint8), connectivity=8)
        labels = torch.from_numpy(labels).to(masks.device)
        for j in torch.nonzero(objects[i]).flatten().tolist():
            ids = labels[masks[i, j] > 0].unique()
            out[i, j] = torch.isin(labels, ids[ids > 0])
    return out


def own_pixels(images: Tensor, anchor: Tensor, layers: Layers, disp: Tensor, cost: Tensor,
               fresh: Tensor | None = None) -> Layers:
    """One pass of `separate`: the layers with their own pixels. Scene frames, and layers held
    in fewer than MIN_FRAMES frames, keep the pixels they had."""
    b = images.shape[0]
    n_l = layers.masks.shape[1]
    ar = torch.arange(b, device=images.device)
    gray = gray_of(images)  # (B, T, H, W)
    front = gray[ar, anchor]  # (B, H, W)
    given = front[:, None] * layers.masks if layers.content is None else gray_of(layers.content)  # (B, L, H, W)
    objects = layers.valid & ~layers.scene[:, None]
    held = cost < HELD
    envelope, count = low_envelope(gray, disp, held)
    own = torch.where(count >= MIN_FRAMES, torch.minimum(envelope, front[:, None]), given)
    own = torch.where(front[:, None] - own <= EXPLAINED, front[:, None], own)  # frames a little off (codes) dim nothing
    own = own * reach(front, layers.masks, objects)
    # a layer holds more than one object where its track fails to explain an object's worth of
    # its ink; otherwise it keeps its pixels (a few a track glitch loses are no other object)
    mixed = ((given > INK) & (own <= INK)).sum((2, 3)) >= MIN_GROUP
    if fresh is not None:  # a layer just found: its pixels where it crosses another, from its own track
        mixed = mixed | fresh
    enough = objects & mixed & (held.sum(2) >= MIN_FRAMES)
    own = torch.where(enough[..., None, None], own, given)
    masks = layers.masks.clone()
    unexplained = (front > INK) & (front > own.amax(1) + EXPLAINED)
    kernel = np.ones((2 * HALO + 1, 2 * HALO + 1), np.uint8)
    for i in torch.nonzero(enough.any(1)).flatten().tolist():
        left = unexplained[i].cpu().numpy()
        # pieces a few pixels apart are one (another object's strokes cut where this one's cross them)
        n, labels = cv2.connectedComponents(cv2.dilate(left.astype(np.uint8), kernel), connectivity=8)
        labels = np.where(left, labels, 0)
        area = np.bincount(labels.ravel(), minlength=n)
        free = [j for j in range(n_l) if not bool(objects[i, j])]
        for lab in (np.argsort(-area[1:], kind="stable") + 1).tolist():
            piece = torch.from_numpy(labels == lab).to(images.device)
            if area[lab] >= MIN_GROUP and free:  # a further object
                region = torch.from_numpy(cv2.dilate(piece.cpu().numpy().astype(np.uint8), kernel) > 0).to(images.device)
                j = free.pop(0)
                own[i, j] = torch.where(region & (front[i] > own[i].amax(0) + EXPLAINED), front[i], 0.0)
            else:  # a speck: back to the layer it was in
                j = int(layers.masks[i][:, piece].sum(1).argmax())
                own[i, j] = torch.where(piece, front[i], own[i, j])
        for j in range(n_l):
            if bool(enough[i, j]) or not bool(objects[i, j]):
                grown = cv2.dilate((own[i, j] > INK).cpu().numpy().astype(np.uint8), kernel)
                masks[i, j] = torch.from_numpy(grown.astype(np.float32)).to(images.device)
    return Layers(masks, layers.scene, own_content(images, anchor, own * (masks > 0), masks, layers.scene))


def own_content(images: Tensor, anchor: Tensor, own: Tensor, masks: Tensor, scene: Tensor) -> Tensor:
    """Each layer's own gray ink (B, L, H, W) at the anchor (B,) of images (B, T, C, H, W) -> its
    pixels (B, L, C, H, W): gray as it is; colour ink the anchor's colour, scaled to the layer's
    own share where another crosses it; a scene, the frame under its mask (B, L, H, W)."""
    ar = torch.arange(images.shape[0], device=images.device)
    frame = images[ar, anchor].float()[:, None]  # (B, 1, C, H, W)
    front = gray_of(images[ar, anchor])
    content = own[:, :, None] if images.shape[2] == 1 else frame * (own / front[:, None].clamp_min(1e-6)).clamp(max=1)[:, :, None]
    return torch.where(scene[:, None, None, None, None], frame * masks[:, :, None], content)


OVERSIZE = 1.0  # px an ink box may exceed the box objects bounce in (its rounding) and be one object
MIN_SHARE = 0.2  # of a cut piece's ink each part holds at least (less: two objects that overlap)


@torch.no_grad()
def split_oversized(layers: Layers, frames: Tensor, box: Tensor) -> Layers:
    """A still frame's ink layer bigger than the box objects bounce in (`box` (2,) px, its width
    and height as the training clips show it; 0: unknown) holds more than one object: two digits
    that touch are one piece of ink. It is cut across the axis it overflows most, at the line
    where its ink is thinnest among those that leave both parts within the box, and the far part
    becomes a layer of its own (while free layers last), so each moves its own way; not where
    a part would hold under MIN_SHARE of the ink (objects that overlap, which no straight cut
    parts). frames (B, C, H, W) are the layers' own (the anchor)."""
    if not bool((box > 0).all()):
        return layers
    own = gray_of(frames)[:, None] * layers.masks if layers.content is None else gray_of(layers.content)
    ink = Ly.mask_boxes((own > INK).float() * layers.masks)  # (B, L, 4)
    over = ink[..., 2:] - ink[..., :2] - box.to(ink.device)  # (B, L, 2) px beyond the box
    objects = layers.valid & ~layers.scene[:, None]
    todo = torch.nonzero(objects & (over.amax(-1) > OVERSIZE)).tolist()
    if not todo:
        return layers
    masks = layers.masks.clone()
    content = None if layers.content is None else layers.content.clone()
    for i, j in todo:
        free = [k for k in range(masks.shape[1]) if not bool(masks[i, k].any())]
        if not free:
            continue
        axis = int(over[i, j].argmax())  # 0: cut between columns, 1: between rows
        lo, hi = int(ink[i, j, axis]), int(ink[i, j, axis + 2])
        side = int(box[axis])
        first, last = sorted((hi - side, lo + side))  # cuts that leave both parts within the box
        first, last = max(first, lo + 1), min(last, hi - 1)
        profile = own[i, j].sum(0) if axis == 0 else own[i, j].sum(1)  # ink per column (row)
        cut = first + int(profile[first : last + 1].argmin())
        coords = torch.arange(masks.shape[-1 if axis == 0 else -2], device=masks.device)
        far = (coords >= cut)[None, :] if axis == 0 else (coords >= cut)[:, None]
        piece = (own[i, j] > INK) & (masks[i, j] > 0)
        share = float((piece & far).sum()) / max(float(piece.sum()), 1.0)
        if min(share, 1 - share) < MIN_SHARE:  # a sliver: objects that overlap, not two that touch
            continue
        k = free[0]
        masks[i, k] = masks[i, j] * far
        masks[i, j] = masks[i, j] * ~far
        if content is not None:
            content[i, k] = content[i, j] * far
            content[i, j] = content[i, j] * ~far
    return Layers(masks, layers.scene, content)
