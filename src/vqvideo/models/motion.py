"""How a layer moves between frames: its state (kinematics), its velocity, and its walls.

Pure functions of tensors, used by the prior (`models/prior.py`) in training and in rollouts.

Walls. Moving Digits (like Moving MNIST) bounces each digit's box off the frame's edges, but the
segmentation sees the digit's ink, whose box sits a few pixels inside the box that bounces, by a
margin that differs per digit and per side. So each layer has its own walls: per side, an *inset*
(px from the frame's edge at which the layer's box edge turns back). The prior predicts the
insets from the layer's appearance, is taught them by the turns the training clips show
(`observed_insets`: an elastic bounce places the wall exactly between the two frames around a
turn), and takes them from the seen frames themselves where those show a turn. A rollout
integrates each layer's velocity and reflects it at its walls (`reflect`), so a layer neither
drives into a wall nor turns early. A scene layer (footage: the camera moving) has no walls.
"""

from __future__ import annotations

import torch
from torch import Tensor

KIN = 14  # kinematic features of a layer at a frame (see `kinematics`)
STEP_SCALE = 4.0  # px: steps are predicted in these units (about the data's speed)
SIDES = 4  # insets per layer: left, top, right, bottom
MIN_SPEED = 0.5  # px per frame along an axis below which a layer shows no turn on it
STEADY = 1.5  # px a step may differ from the mean speed (whole-pixel steps: 3 or 4 for 3.6)


def update_velocity(v: Tensor, n: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
    """A constant-velocity filter per axis: the mean of the steps so far (v, over n steps), so
    whole-pixel steps (3, 4, 4, 3, 4, ...) give the sub-pixel speed a long clip needs. A step
    against the estimate (a bounce) mirrors it; steps under half a pixel never count as one."""
    flip = (step * v < 0) & (step.abs() > 0.5) & (v.abs() > 0.5)
    n = n + 1
    return torch.where(flip, -v, v + (step - v) / n), n


def running_velocity(steps: Tensor) -> tuple[Tensor, Tensor]:
    """(B, L, T, 2) steps -> the filter's estimate after each, (B, L, T, 2), and its count."""
    v, n = steps[:, :, 0], torch.ones_like(steps[:, :, 0])
    out = [v]
    for k in range(1, steps.shape[2]):
        v, n = update_velocity(v, n, steps[:, :, k])
        out.append(v)
    return torch.stack(out, 2), n


def kinematics(boxes: Tensor, disp: Tensor, steps: Tensor, scene: Tensor, valid: Tensor,
               size: tuple[int, int], unit: float, velocity: Tensor | None = None) -> Tensor:
    """A layer's state at each frame: (B, L, T, KIN).

    boxes (B, L, 4) at the anchor; disp (B, L, T, 2) its displacement; steps (B, L, T, 2) the
    step that brought it there; velocity (B, L, T, 2) the filter's estimate (default: the
    step). Features: the moved box's edges' and centre's distances to the left, top, right and
    bottom walls in `unit` px, the step and the velocity in STEP_SCALE px, and the scene and
    valid flags.
    """
    velocity = steps if velocity is None else velocity
    h, w = size
    x0, y0, x1, y1 = boxes.unbind(-1)
    dx, dy = disp.unbind(-1)
    cx, cy = (x0 + x1)[..., None] / 2 + dx, (y0 + y1)[..., None] / 2 + dy
    # the box's edges, and its centre, to each wall: an object bounces when its own box (which
    # the ink may not fill) meets one, and its centre tells that alike for every object
    walls = torch.stack([x0[..., None] + dx, y0[..., None] + dy, w - (x1[..., None] + dx),
                         h - (y1[..., None] + dy), cx, cy, w - cx, h - cy], -1) / unit
    # A scene (the whole frame, moved by the camera) has no walls: where it stands against the
    # anchor frame, which is the last seen one in a rollout and any frame in training, says
    # nothing about where the camera goes next (read as walls, it taught the prior to turn back).
    walls = walls.masked_fill(scene[:, None, None, None], 0.0)
    flags = torch.stack([scene[:, None].expand_as(valid), valid], -1).float()[:, :, None].expand(-1, -1, disp.shape[2], -1)
    return torch.cat([walls, steps / STEP_SCALE, velocity / STEP_SCALE, flags], -1)


def observed_insets(boxes: Tensor, disp: Tensor, held: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """The walls a clip shows: (B, L, 4) insets (left, top, right, bottom; px from the frame's
    edge where the layer's box edge turned back) and (B, L, 4) whether the clip shows that turn.

    boxes (B, L, 4) at the anchor, disp (B, L, T, 2) from it, held (B, L, T) where the tracker
    holds the layer. An elastic bounce off a wall at w between frames a and a+1, at speed s
    along the axis, gives x_a + x_{a+1} = 2w + s (a low wall; 2w - s a high one), and every
    pair of frames without a turn between them gives min(x_a, x_{a+1}) instead, never less:
    so the low wall is the least (x_a + x_{a+1} - s) / 2 over the clip's pairs (the high one,
    the greatest (x_a + x_{a+1} + s) / 2). A side counts as shown where the layer moved towards
    it and came back by more than half a step, at a steady speed (at most two steps of another
    length than the mean: the step a turn cuts short, and one more for rounding).
    """
    h, w = size
    ok = held > 0
    pair = ok[:, :, 1:] & ok[:, :, :-1]  # (B, L, T-1)
    steps = (disp[:, :, 1:] - disp[:, :, :-1]).abs()
    pw = pair[..., None].float()
    speed = (steps * pw).sum(2) / pw.sum(2).clamp_min(1)  # (B, L, 2) mean speed along each axis
    mid = (disp[:, :, 1:] + disp[:, :, :-1]) / 2
    inf = torch.tensor(float("inf"), device=disp.device)
    lo = torch.where(pair[..., None], mid - speed[:, :, None] / 2, inf).amin(2)  # (B, L, 2)
    hi = torch.where(pair[..., None], mid + speed[:, :, None] / 2, -inf).amax(2)
    t = torch.arange(disp.shape[2], device=disp.device)
    first = torch.where(ok, t, disp.shape[2]).amin(2).clamp_max(disp.shape[2] - 1)  # (B, L)
    last = torch.where(ok, t, -1).amax(2).clamp_min(0)
    at = lambda idx: disp.gather(2, idx[:, :, None, None].expand(-1, -1, 1, 2))[:, :, 0]  # noqa: E731
    x_first, x_last = at(first), at(last)
    x_min = torch.where(ok[..., None], disp, inf).amin(2)
    x_max = torch.where(ok[..., None], disp, -inf).amax(2)
    # a clip moving at one speed along the axis, but for the step cut short by a turn: a tracker
    # that slipped, or two objects taken for one, shows steps of other lengths, and no wall
    odd = (((steps - speed[:, :, None]).abs() > STEADY) & pair[..., None]).sum(2)
    moving = (speed > MIN_SPEED) & pair.any(2)[..., None] & (odd <= 2)
    came_back = lambda a, b: (a > speed / 2) & (b > speed / 2)  # noqa: E731
    seen_lo = moving & came_back(x_first - x_min, x_last - x_min)
    seen_hi = moving & came_back(x_max - x_first, x_max - x_last)
    x0, y0, x1, y1 = boxes.unbind(-1)
    inset = torch.stack([x0 + lo[..., 0], y0 + lo[..., 1], w - (x1 + hi[..., 0]), h - (y1 + hi[..., 1])], -1)
    seen = torch.cat([seen_lo, seen_hi], -1)
    return torch.where(seen, inset, torch.zeros_like(inset)), seen


def wall_limits(boxes: Tensor, inset: Tensor, disp: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(B, L, 4) boxes at the anchor and insets -> the displacement each layer may reach, low
    and high, (B, L, 2) each. The walls never stand inside the places the layer was seen at
    (`disp` (B, L, T, 2), the anchor's 0 among them)."""
    h, w = size
    x0, y0, x1, y1 = boxes.unbind(-1)
    lo = torch.stack([inset[..., 0] - x0, inset[..., 1] - y0], -1)
    hi = torch.stack([w - inset[..., 2] - x1, h - inset[..., 3] - y1], -1)
    return torch.minimum(lo, disp.amin(2)), torch.maximum(hi, disp.amax(2))


def reflect(pos: Tensor, lo: Tensor, hi: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
    """An elastic bounce: positions (B, L, 2) beyond their walls mirrored back inside, where
    `active` (B, L) (objects: a scene has no walls); -> (positions, which axes turned)."""
    act = active[..., None] & (hi > lo)
    below = act & (pos < lo)
    above = act & (pos > hi) & ~below
    out = torch.where(below, 2 * lo - pos, torch.where(above, 2 * hi - pos, pos))
    return torch.minimum(torch.maximum(out, torch.where(act, lo, out)), torch.where(act, hi, out)), below | above
