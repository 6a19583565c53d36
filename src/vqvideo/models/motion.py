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


def wall_limits(boxes: Tensor, inset: Tensor, disp: Tensor | None, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(B, L, 4) boxes at the anchor and insets -> the displacement each layer may reach, low
    and high, (B, L, 2) each. The walls never stand inside the places the layer was seen at
    (`disp` (B, L, T, 2), the anchor's 0 among them; None: not clamped)."""
    h, w = size
    x0, y0, x1, y1 = boxes.unbind(-1)
    lo = torch.stack([inset[..., 0] - x0, inset[..., 1] - y0], -1)
    hi = torch.stack([w - inset[..., 2] - x1, h - inset[..., 3] - y1], -1)
    if disp is None:
        return lo, hi
    return torch.minimum(lo, disp.amin(2)), torch.maximum(hi, disp.amax(2))


def pin_walls(lo: Tensor, hi: Tensor, shown_lo: Tensor, shown_hi: Tensor, known_lo: Tensor, known_hi: Tensor,
              disp: Tensor) -> tuple[Tensor, Tensor]:
    """The walls a rollout turns at, (B, L, 2) low and high displacements each: a wall the seen
    frames show (`shown_*` where `known_*`), as shown; where they show one side only, the other
    at the predicted span from it (the box that bounces has one size whatever its ink: a digit's
    28-px box in a 64-px frame turns 36 px further on, so a turn seen places the opposite wall
    as well, where a guess from the ink alone is a pixel off); else the predicted walls (`lo`,
    `hi`, unclamped). Never inside the seen places (`disp` (B, L, T, 2))."""
    span = hi - lo
    low = torch.where(known_lo, shown_lo, torch.where(known_hi, shown_hi - span, lo))
    high = torch.where(known_hi, shown_hi, torch.where(known_lo, shown_lo + span, hi))
    return torch.minimum(low, disp.amin(2)), torch.maximum(high, disp.amax(2))


def reflect(pos: Tensor, lo: Tensor, hi: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
    """An elastic bounce: positions (B, L, 2) beyond their walls mirrored back inside, where
    `active` (B, L) (objects: a scene has no walls); -> (positions, which axes turned)."""
    act = active[..., None] & (hi > lo)
    below = act & (pos < lo)
    above = act & (pos > hi) & ~below
    out = torch.where(below, 2 * lo - pos, torch.where(above, 2 * hi - pos, pos))
    return torch.minimum(torch.maximum(out, torch.where(act, lo, out)), torch.where(act, hi, out)), below | above


TURN_COST = 1.0  # px^2 of squared residual a turn must save to be believed (rounding alone: 1/12 a frame)
OUTLIER = 1.0  # px off the fitted motion: a place the tracker got wrong (rounding alone: half a pixel)
MIN_FIT = 5  # places a fit keeps at least, the worst placed dropped last


def fit_motion(disp: Tensor, window: int = 10, trusted: Tensor | None = None, speed: Tensor | None = None,
               active: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """A least-squares state for each layer from its seen places: (B, L, T, 2) displacements ->
    its sub-pixel position and velocity at the last frame, (B, L, 2) each, and the wall a turn
    in them shows, (B, L, 2) displacement, with (B, L, 2) whether they show one, and (B, L, T)
    the places the fit keeps (those before the window too).

    Per axis, over the last `window` frames (at the data's speeds a layer crosses its frame in
    more, so they hold one turn at most), two models: one straight line, and an elastic bounce
    after frame k (the frames before it on a line of the opposite slope; for each k). The
    whole-pixel places scatter by rounding (1/12 px^2 a frame), so a line fitted through all of
    them knows where the layer is and how fast it goes to a fraction of a pixel, where the last
    place and the mean step are half a pixel off and more. A bounce is believed where it saves
    `TURN_COST` and its wall stands beyond every seen place; the mirrored lines meet at the wall,
    halfway between their intercepts. Robust: each model is fitted again without the places its
    fit leaves more than `OUTLIER` px off (a frame where another digit covered this one and
    the tracker slipped), and scored with a dropped place costing OUTLIER^2 (an unweighted fit
    bends towards a slip, and a slip at the clip's start reads as a turn). `trusted` (B, L, T):
    places known exact (the anchor's, where the layer's pixels come from), never dropped, and
    enough alone on one side of a turn (a bounce just before the anchor frame). `speed`: the
    one speed the data's objects move at (`common_speed`), which the velocity of each layer
    where `active` (B, L) is set to (`at_speed`), each line then refitted through its places
    at that slope, and the motion then taken as the one all its kept places allow
    (`consistent_motion`).
    """
    w = min(disp.shape[2], window)
    x = disp[:, :, -w:].transpose(2, 3).float()  # (B, L, 2, w)
    tt = torch.arange(w, device=disp.device, dtype=torch.float32) - (w - 1)  # the last frame at 0
    idx = torch.arange(w, device=disp.device)
    k = torch.arange(w, device=disp.device)[:, None]  # frames before the turn (0: no turn)
    now = (idx[None] >= k).float()  # (K, w): on the current line
    design = torch.stack([now, 1 - now, torch.where(now > 0, tt, -tt).expand_as(now)], -1)  # (K, w, 3)
    keep = torch.ones(*x.shape[:3], w, w, device=disp.device)  # (B, L, 2, K, w) places each model fits
    sure = (torch.zeros_like(x[:, :, 0], dtype=torch.bool) if trusted is None
            else trusted[:, :, -w:].bool())[:, :, None, None].expand_as(keep)  # (B, L, 2, K, w)
    coef, model = _weighted_lines(design, keep, x)
    for _ in range(2):  # each model again without the places it leaves more than OUTLIER px
        # off, the worst first, while MIN_FIT remain (twice: a slip pulls the first fit off
        # its neighbours too)
        res = (model - x[:, :, :, None]).abs()
        rank = res.argsort(-1, descending=True).argsort(-1)  # 0: the worst placed
        keep = ((res <= OUTLIER) | (rank >= w - MIN_FIT) | sure).float()
        coef, model = _weighted_lines(design, keep, x)
    # scored on every place, a dropped one costing OUTLIER^2 (truncated least squares)
    res = (model - x[:, :, :, None]).pow(2).clamp_max(OUTLIER ** 2).sum(-1)  # (B, L, 2, K)
    pos, before, vel = coef.unbind(-1)  # now: pos + vel * t; before the turn: before - vel * t
    wall = (pos + before) / 2
    inf = torch.tensor(float("inf"), device=disp.device)
    kept = keep > 0
    seen_lo = torch.where(kept, x.unsqueeze(3), inf).amin(-1)
    seen_hi = torch.where(kept, x.unsqueeze(3), -inf).amax(-1)
    beyond = torch.where(vel > 0, wall <= seen_lo + 0.5, wall >= seen_hi - 0.5)
    # a line each side, of two kept places at least (one place alone before a turn fits any
    # slip exactly), or of one trusted place
    count = keep + sure.float()
    sides = ((count * (1 - now)).sum(-1) >= 2) & ((count * now).sum(-1) >= 2)
    ok = beyond & (vel.abs() > MIN_SPEED) & (k[:, 0] >= 1) & sides
    cost = torch.where(ok, res + TURN_COST, inf)
    cost[..., 0] = res[..., 0]
    best = cost.argmin(-1, keepdim=True)  # (B, L, 2, 1)
    pick = lambda t: t.gather(-1, best)[..., 0]  # noqa: E731
    chosen = keep.gather(3, best[..., None].expand(-1, -1, -1, 1, w))[:, :, :, 0]  # (B, L, 2, w)
    held = torch.cat([torch.ones_like(disp[:, :, : disp.shape[2] - w, 0], dtype=torch.bool),
                      (chosen > 0).all(2)], 2)
    pos, before, vel, turned = pick(pos), pick(before), pick(vel), best[..., 0] > 0
    if speed is not None and active is not None:
        # the slope set, each line's intercept is the least-squares one through its own places
        near, new = near_speed(vel, speed, active), at_speed(vel, speed, active)
        on = now[best[..., 0]] * chosen  # (B, L, 2, w): kept places on the current line
        centre = lambda m: (m * tt).sum(-1) / m.sum(-1).clamp_min(1)  # noqa: E731
        pos, before = pos - (new - vel) * centre(on), before + (new - vel) * centre(chosen - on)
        vel = new
        # then the motion all its kept places allow, where some does (else the least-squares one)
        found, e, v, u = consistent_motion(x, tt, on, chosen - on, vel, speed, near)
        pos, vel = torch.where(found, e, pos), torch.where(found, v, vel)
        before = torch.where(found & ((chosen - on).sum(-1) > 0), u, before)
    return pos, vel, (pos + before) / 2, turned, held


def fitted_places(disp: Tensor, anchor: Tensor, window: int = 10) -> Tensor:
    """(B, L, T, 2) tracked displacements from the anchor frame (B,) -> (B, L, T, 2) the places
    `fit_motion` puts each layer at over the last `window` frames (a line, or two mirrored at
    the wall of a turn), from the anchor's place as the displacements are; the tracked places
    before the window. A place the tracker slipped at (another digit covered this one) is
    where the layer's motion through the others puts it."""
    t = disp.shape[2]
    w = min(t, window)
    pos, vel, wall, turned, _ = fit_motion(disp, window=w, trusted=anchored(disp))
    tt = torch.arange(t, device=disp.device, dtype=torch.float32) - (t - 1)  # the last frame at 0
    line = pos[:, :, None] + vel[:, :, None] * tt[:, None]  # (B, L, T, 2)
    before = torch.where(vel[:, :, None] > 0, line < wall[:, :, None], line > wall[:, :, None])
    model = torch.where(before & turned[:, :, None], 2 * wall[:, :, None] - line, line)
    at = anchor[:, None, None, None].expand(-1, disp.shape[1], 1, 2)
    model = model - model.gather(2, at)  # from the anchor's place
    inside = (torch.arange(t, device=disp.device) >= t - w)[:, None] & (anchor >= t - w)[:, None, None, None]
    return torch.where(inside, model, disp.float())


def anchored(disp: Tensor) -> Tensor:
    """(B, L, T, 2) displacements from the anchor frame -> (B, L, T) the places where a layer
    stands exactly where its pixels were read (the anchor's own frame, 0 by construction): known
    exact, not tracked."""
    return (disp == 0).all(-1)


def _weighted_lines(design: Tensor, weight: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Least squares of each model (K, w, 3) through places x (B, L, 2, w), each model with its
    own weights (B, L, 2, K, w) -> coefficients (B, L, 2, K, 3) and the models' places (B, L, 2, K, w).
    A little ridge keeps a model whose segment before the turn has no kept place solvable."""
    gram = torch.einsum("kwc,blakw,kwd->blakcd", design, weight, design)
    gram = gram + 1e-4 * torch.eye(3, device=x.device)
    rhs = torch.einsum("kwc,blakw,blaw->blakc", design, weight, x)
    coef = torch.linalg.solve(gram, rhs.unsqueeze(-1))[..., 0]
    return coef, torch.einsum("kwc,blakc->blakw", design, coef)


def bounce_box(ink: Tensor, disp: Tensor, held: Tensor, objects: Tensor, size: tuple[int, int]) -> Tensor:
    """The size (2,) of the box objects bounce in, read from tracked clips: ink boxes (N, L, 4),
    displacements (N, L, T, 2), held (N, L, T) and objects (N, L) -> per axis, the median over
    the layers whose clip shows both walls of the ink's width plus its two insets (Moving
    Digits: its 28-px box, whatever the digit's ink); 0 (unknown) on an axis no clip shows both on."""
    inset, shown = observed_insets(ink, disp, held, size)
    total = extent(ink) + inset[..., :2] + inset[..., 2:]
    both = shown[..., :2] & shown[..., 2:] & objects[..., None]
    return torch.stack([total[..., a][both[..., a]].median() if bool(both[..., a].any())
                        else torch.tensor(0.0) for a in range(2)]).to(ink.device)


SPEED_SPREAD = 0.05  # relative spread of the objects' speeds below which they share one speed
SPEED_TOL = 0.2  # relative difference from that speed within which a layer is taken to move at it


def common_speed(disp: Tensor, held: Tensor, objects: Tensor, window: int = 10) -> Tensor:
    """The one speed (px per frame, a scalar) every object of the data moves at, read from
    tracked clips (displacements (N, L, T, 2), held (N, L, T), objects (N, L)), or 0 where they
    move at several (Moving Digits, like Moving MNIST, moves every digit at one speed in any
    direction). Each object's speed is the norm of its velocity fitted through its first
    `window` places (`fit_motion`, where held throughout); the median is the speed where the
    median absolute deviation is under SPEED_SPREAD of it."""
    w = min(window, disp.shape[2])
    use = objects & (held[:, :, :w] > 0).all(2)
    if not bool(use.any()):
        return torch.tensor(0.0, device=disp.device)
    d = disp[:, :, :w][use][:, None]  # (M, 1, w, 2)
    speed = fit_motion(d, window=w)[1][:, 0].norm(dim=-1)  # (M,)
    mid = speed.median()
    spread = (speed - mid).abs().median()
    return torch.where((mid > MIN_SPEED) & (spread < SPEED_SPREAD * mid), mid, torch.zeros_like(mid))


def at_speed(vel: Tensor, speed: Tensor, active: Tensor) -> Tensor:
    """(B, L, 2) velocities of the layers where `active` (B, L) -> the same directions at the
    data's common `speed` (`common_speed`; 0: none, velocities as they are), where a layer's
    speed is within SPEED_TOL of it. Ten frames of whole-pixel places know a direction better
    than a length: the length known, the velocity's error about halves."""
    norm = vel.norm(dim=-1, keepdim=True)
    return torch.where(near_speed(vel, speed, active)[..., None], vel * speed / norm.clamp_min(1e-6), vel)


def near_speed(vel: Tensor, speed: Tensor, active: Tensor) -> Tensor:
    """(B, L) the layers, where `active`, whose velocity (B, L, 2) is within SPEED_TOL of the
    data's common `speed` (0: none is)."""
    return active & (speed > 0) & ((vel.norm(dim=-1) - speed).abs() <= SPEED_TOL * speed)


def extent(boxes: Tensor) -> Tensor:
    """(..., 4) boxes (x0, y0, x1, y1) -> (..., 2) their width and height."""
    return boxes[..., 2:] - boxes[..., :2]


SPREAD = 0.1  # rad either side of the least-squares direction searched for the exact motion
GRID = 401  # directions searched in it (every 0.0005 rad: 0.02 px over ten frames at 3.6 px)


def consistent_motion(x: Tensor, tt: Tensor, on: Tensor, before: Tensor, vel: Tensor, speed: Tensor,
                      near: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The motion every seen whole-pixel place allows, for layers moving at the data's one speed.

    A digit drawn at round(x) tells its sub-pixel place to within half a pixel at every frame: so
    its motion (a direction at `speed`, a sub-pixel place at the last frame per axis, and before
    a turn the mirrored line's intercept) lies in the set where every kept place is within half a
    pixel of it. That set is small (ten places pin a line far better than least squares through
    them does), and its centre is the estimate: the directions within SPREAD of the
    least-squares `vel` (B, L, 2) are searched, each weighted by the widths of the places'
    intervals it leaves. x (B, L, 2, w) places at times tt (w,), the last 0; on / before
    (B, L, 2, w) the kept places on the current line and on the line before its turn; `near`
    (B, L) the layers to refine. -> (B, L, 1) where some direction fits every kept place (a
    tracker's slip kept, or a speed the layer does not move at, fits none), and there the
    position (B, L, 2) at the last frame, the velocity and the intercept before the turn.
    """
    theta = torch.atan2(vel[..., 1], vel[..., 0])[..., None] + torch.linspace(-SPREAD, SPREAD, GRID,
                                                                              device=x.device)
    v = speed * torch.stack([theta.cos(), theta.sin()], -2)  # (B, L, 2, G)
    inf = torch.tensor(float("inf"), device=x.device)

    def interval(c: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:  # c (B, L, 2, G, w), m (B, L, 2, w)
        m = m[:, :, :, None] > 0
        return torch.where(m, c - 0.5, -inf).amax(-1), torch.where(m, c + 0.5, inf).amin(-1)

    lo_e, hi_e = interval(x[:, :, :, None] - v[..., None] * tt, on)  # now: e + v t
    lo_u, hi_u = interval(x[:, :, :, None] + v[..., None] * tt, before)  # before: u - v t
    has_u = before.sum(-1, keepdim=True) > 0  # (B, L, 2, 1)
    width = (hi_e - lo_e).clamp_min(0) * torch.where(has_u, (hi_u - lo_u).clamp_min(0), torch.ones_like(lo_u))
    ok = (hi_e >= lo_e) & torch.where(has_u, hi_u >= lo_u, torch.ones_like(has_u))
    weight = torch.where(ok.all(2), width.prod(2), torch.zeros_like(width[:, :, 0]))  # (B, L, G)
    total = weight.sum(-1)
    found = near & (total > 0)
    mean = lambda t: (t * weight[:, :, None]).sum(-1) / total.clamp_min(1e-12)[..., None]  # noqa: E731
    e, u = mean((lo_e + hi_e) / 2), mean(torch.where(has_u, (lo_u + hi_u) / 2, torch.zeros_like(lo_u)))
    return found[..., None], e, mean(v), u

