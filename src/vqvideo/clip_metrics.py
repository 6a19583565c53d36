"""What a person sees in a clip, as numbers: content kept, sharpness, speed, digits, variety.

MSE alone rewards a blob that stays put. These measures say whether a predicted or generated
clip keeps its content (ink ratio), stays sharp (sharpness ratio), moves at the data's pace
(speed ratio), keeps its digits readable where they should be (digit identity), and, from one
still frame, whether the samples differ (diversity) and how close the best of them comes
(best-of-N error, the protocol of stochastic video prediction: SVG, Denton & Fergus 2018;
SRVP, Franceschi et al. 2020). All on the CPU, in float64 sums, deterministic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from vqvideo import metrics as M
from vqvideo.models import layers as Ly
from vqvideo.models.vqvae import decode_codes


def ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


@torch.no_grad()
def motion_speed(clips: Tensor, max_layers: int = 4, radius: int = 6) -> Tensor:
    """(B, T, C, H, W) clips -> (B,) mean speed of their content in px per frame.

    The layers of the first frame (split by how they move into the second) are tracked
    through the clip; the speed is each layer's mean step length, weighted by its size. The
    same measure on real and generated clips gives a ratio that does not depend on its biases.
    """
    layers = Ly.segment(clips[:, 0], max_layers, clips[:, 1], radius)
    disp, _ = Ly.track(clips, torch.zeros(len(clips), dtype=torch.long), layers, radius)
    step = (disp[:, :, 1:] - disp[:, :, :-1]).norm(dim=-1).mean(-1)  # (B, L)
    size = layers.masks.flatten(2).sum(-1)  # (B, L)
    return (step * size).sum(1) / size.sum(1).clamp_min(1)


def by_step_quality(pred: Tensor, truth: Tensor) -> dict[str, np.ndarray]:
    """pred, truth (N, S, C, H, W) -> per step: ink ratio and sharpness ratio (sums over clips)."""
    n, s = pred.shape[:2]
    ink_p, ink_t = M.ink(pred.flatten(0, 1)).view(n, s).sum(0), M.ink(truth.flatten(0, 1)).view(n, s).sum(0)
    sh_p, sh_t = M.sharpness(pred.flatten(0, 1)).view(n, s).sum(0), M.sharpness(truth.flatten(0, 1)).view(n, s).sum(0)
    return {"ink_ratio": (ink_p / ink_t.clamp_min(1e-12)).numpy(), "sharpness_ratio": (sh_p / sh_t.clamp_min(1e-12)).numpy()}


def digit_accuracy(reader, frames: np.ndarray, labels: pd.DataFrame, offset: int = 0) -> np.ndarray:  # noqa: ANN001
    """Fraction of digits read right at their labelled place, per step.

    frames (N, S, H, W) in [0, 1] are clip steps offset..offset+S-1 of `labels`' clips -> (S,).
    """
    n, s = frames.shape[:2]
    out = np.full(s, np.nan)
    for k in range(s):
        rows = labels[labels.step == offset + k]
        if len(rows) == 0:
            continue
        got = reader.read(frames[rows["clip"].to_numpy(), k], rows[["x", "y"]].to_numpy())
        out[k] = float((got == rows.label.to_numpy()).mean())
    return out


def position_error(frames: np.ndarray, glyphs: np.ndarray, labels: pd.DataFrame, step: int,
                   search: int = 12) -> float:
    """Mean distance in px between where each digit is in `frames[:, step]` (N, T, H, W) and
    its labelled place at that step.

    Found by matching the digit's own image (`glyphs`, the bank's (M, S, S) images the labels
    name, in [0, 1]) within `search` px of the labelled place, by squared difference over the
    digit's own strokes (another digit crossing it costs little): a digit that is not near its
    place scores the search radius or more.
    """
    import cv2

    size = glyphs.shape[-1]
    errs = []
    for r in labels[labels.step == step].itertuples(index=False):
        tmpl = glyphs[int(r.digit_image)].astype(np.float32)
        mask = (tmpl > 0.05).astype(np.float32)
        xt, yt = int(round(r.x)), int(round(r.y))
        p = size + search
        pad = np.pad(frames[r.clip, step], p).astype(np.float32)
        win = pad[yt + p - search : yt + p + search + size, xt + p - search : xt + p + search + size]
        cost = cv2.matchTemplate(win, tmpl, cv2.TM_SQDIFF, mask=mask)
        dy, dx = np.unravel_index(int(np.argmin(cost)), cost.shape)
        errs.append(float(np.hypot(dx - search, dy - search)))
    return float(np.mean(errs)) if errs else float("nan")


def pairwise_diversity(samples: Tensor) -> float:
    """(B, S, T, C, H, W) -> mean summed squared difference per frame between two samples of
    one input (0 when every sample is the same clip)."""
    b, s = samples.shape[:2]
    if s < 2:
        return 0.0
    total, count = 0.0, 0
    for i in range(s):
        for j in range(i + 1, s):
            d = ((samples[:, i].double() - samples[:, j].double()) ** 2).flatten(2).sum(-1)  # (B, T)
            total += float(d.mean())
            count += 1
    return total / count


# ---------------------------------------------------------------- still image: samples and actions


@torch.no_grad()
def generation_eval(vqvae, prior, x: Tensor, samples: int, seed: int,  # noqa: ANN001
                    batch: int = 8) -> tuple[dict, pd.DataFrame, Tensor]:
    """One still frame of each clip x (B, T, C, H, W) -> `samples` clips each, their motion drawn
    from the action prior (codes by argmax): best-of-N and mean error, ink, sharpness and
    speed against the real clips, and how much the samples differ."""
    g = torch.Generator().manual_seed(seed)
    b, t = x.shape[:2]
    gens = []
    for i in range(0, b, batch):
        xb = x[i : i + batch]
        codes = vqvae.encode_indices(xb[:, 0]).repeat_interleave(samples, 0)[:, None]  # (B*S, 1, h, w)
        rolled = prior.rollout(codes, t - 1, sampling="argmax", motion="sample", generator=g,
                               images=xb[:, :1].repeat_interleave(samples, 0))
        gens.append(decode_codes(vqvae, rolled[:, 1:]).float().view(len(xb), samples, t - 1, *x.shape[2:]))
    gen = torch.cat(gens)  # (B, S, T-1, C, H, W)
    truth = x[:, 1:]
    err = ((gen.double() - truth[:, None].double()) ** 2).flatten(3).sum(-1)  # (B, S, T-1)
    copy = ((x[:, :1].double() - truth.double()) ** 2).flatten(2).sum(-1)  # (B, T-1)
    flat = gen.flatten(0, 1)  # (B*S, T-1, ...)
    last_t = truth[:, -1:].repeat_interleave(samples, 0)  # (B*S, 1, ...)
    q = by_step_quality(flat, truth.repeat_interleave(samples, 0))
    real_speed = motion_speed(x).mean()
    gen_speed = motion_speed(torch.cat([x[:, :1].repeat_interleave(samples, 0), flat], 1)).mean()
    m = {
        "samples": samples,
        "clips": b,
        "best_of_n_mse_frame": float(err.mean(-1).min(1).values.mean()),
        "mean_mse_frame": float(err.mean()),
        "copy_first_mse_frame": float(copy.mean()),
        "ink_last": ratio(float(M.ink(flat[:, -1]).sum()), float(M.ink(last_t[:, 0]).sum())),
        "sharpness_last": ratio(float(M.sharpness(flat[:, -1]).sum()), float(M.sharpness(last_t[:, 0]).sum())),
        "speed": float(gen_speed),
        "real_speed": float(real_speed),
        "speed_ratio": ratio(float(gen_speed), float(real_speed)),
        "diversity": pairwise_diversity(gen),
    }
    steps = pd.DataFrame({"step": np.arange(1, t), "best_of_n_mse_frame": err.min(1).values.mean(0).numpy(),
                          "mean_mse_frame": err.mean((0, 1)).numpy(), "copy_first_mse_frame": copy.mean(0).numpy(),
                          **q})
    return m, steps, gen


@torch.no_grad()
def conditioned_eval(vqvae, prior, x: Tensor, labels: pd.DataFrame, reader, size: int,  # noqa: ANN001
                     batch: int = 16) -> tuple[dict, pd.DataFrame, Tensor]:
    """Frame 0 of each clip plus each digit's label at frame 0 (its box and velocity: the
    action) -> one clip each: error, digit identity and position against the labels."""
    b, t = x.shape[:2]
    from vqvideo.digits import glyph_boxes, labelled_layers

    masks, ink, steps = glyph_boxes(labels, b, prior.cfg.max_layers, size, tuple(x.shape[-2:]))
    outs = []
    for i in range(0, b, batch):
        xb = x[i : i + batch]
        layers = labelled_layers(xb[:, 0], masks[i : i + batch], ink[i : i + batch])
        codes = vqvae.encode_indices(xb[:, 0])[:, None]
        rolled = prior.rollout(codes, t - 1, sampling="argmax", first_step=steps[i : i + batch], layers=layers,
                               images=xb[:, :1])
        outs.append(decode_codes(vqvae, rolled[:, 1:]).float())
    gen = torch.cat(outs)  # (B, T-1, C, H, W)
    truth = x[:, 1:]
    err = ((gen.double() - truth.double()) ** 2).flatten(2).sum(-1)  # (B, T-1)
    copy = ((x[:, :1].double() - truth.double()) ** 2).flatten(2).sum(-1)
    full = torch.cat([x[:, :1], gen], 1)[:, :, 0].numpy()  # (B, T, H, W) gray
    acc = digit_accuracy(reader, full, labels)
    from vqvideo.data.synthetic import load_digit_bank

    glyphs = load_digit_bank(size).images.astype(np.float32) / 255.0
    pos = np.array([position_error(full, glyphs, labels, k) for k in range(t)])
    m = {"mse_frame": float(err.mean()), "copy_first_mse_frame": float(copy.mean()),
         "ratio_to_copy_first": ratio(float(err.mean()), float(copy.mean())),
         "digit_accuracy_last": float(acc[-1]), "position_error_last": float(pos[-1]), "clips": b}
    steps_df = pd.DataFrame({"step": np.arange(1, t), "mse_frame": err.mean(0).numpy(),
                             "copy_first_mse_frame": copy.mean(0).numpy(), "digit_accuracy": acc[1:],
                             "position_error": pos[1:]})
    return m, steps_df, gen


def into_wall(layers: Ly.Layers, steps: Tensor) -> tuple[Tensor, Tensor]:
    """Object layers whose box touches the frame's edge (within a pixel), and of those, which
    step (B, L, 2) drives on into that edge by more than half a pixel: (M,) bools each."""
    valid = layers.valid & ~layers.scene[:, None]
    step, boxes = steps[valid], layers.boxes()[valid]
    h, w = layers.masks.shape[-2:]
    at_left, at_right = boxes[:, 0] <= 1, boxes[:, 2] >= w - 1
    at_top, at_bottom = boxes[:, 1] <= 1, boxes[:, 3] >= h - 1
    into = (at_left & (step[:, 0] < -0.5)) | (at_right & (step[:, 0] > 0.5)) | \
        (at_top & (step[:, 1] < -0.5)) | (at_bottom & (step[:, 1] > 0.5))
    return at_left | at_right | at_top | at_bottom, into


@torch.no_grad()
def action_eval(vqvae, prior, x: Tensor, samples: int, seed: int, labels: pd.DataFrame | None) -> tuple[dict, dict]:  # noqa: ANN001
    """The action prior's drawn first steps for the layers of each clip's first frame.

    Returns the measures (mean speed, against the labels' where there are labels; the share of
    steps in each quadrant; the share of layers at a wall whose step drives further into it)
    and the raw speeds for a histogram.
    """
    g = torch.Generator().manual_seed(seed + 1)
    codes = vqvae.encode_indices(x[:, 0]).repeat_interleave(samples, 0)[:, None]
    plan = prior.plan(codes, 1, sampling="sample", generator=g, images=x[:, :1].repeat_interleave(samples, 0))
    layers, steps = plan["layers"], plan["disp"][:, :, 1] - plan["disp"][:, :, 0]  # (N, L, 2)
    valid = layers.valid & ~layers.scene[:, None]
    step = steps[valid]  # (M, 2)
    speed = step.norm(dim=-1)
    at_wall, into = into_wall(layers, steps)
    quad = [float(((step[:, 0] >= 0) & (step[:, 1] < 0)).float().mean()), float(((step[:, 0] < 0) & (step[:, 1] < 0)).float().mean()),
            float(((step[:, 0] < 0) & (step[:, 1] >= 0)).float().mean()), float(((step[:, 0] >= 0) & (step[:, 1] >= 0)).float().mean())]
    # the same measure on the real clips' first steps (the layers of frame 0 tracked into frame 1):
    # a digit whose halo touches the frame's edge may still have a pixel or two to go
    real_layers = Ly.segment(x[:, 0], prior.cfg.max_layers, x[:, 1], prior.cfg.motion_radius)
    real_disp, _ = Ly.track(x[:, :2], torch.zeros(len(x), dtype=torch.long), real_layers, prior.cfg.motion_radius)
    real_at, real_into = into_wall(real_layers, real_disp[:, :, 1] - real_disp[:, :, 0])
    m = {"layers": int(valid.sum()), "speed_mean": float(speed.mean()) if len(speed) else None,
         "quadrant_min": min(quad) if len(speed) else None,
         "at_wall": int(at_wall.sum()),
         "into_wall_fraction": float(into[at_wall].float().mean()) if bool(at_wall.any()) else None,
         "real_into_wall_fraction": float(real_into[real_at].float().mean()) if bool(real_at.any()) else None}
    raw = {"drawn": speed.numpy()}
    if labels is not None and len(labels):
        first = labels[(labels.step == 0) & (labels["clip"] < len(x))]
        real = np.hypot(first.vx.to_numpy(), first.vy.to_numpy())
        m["label_speed_mean"] = float(real.mean())
        m["speed_ratio"] = ratio(m["speed_mean"] or 0.0, m["label_speed_mean"])
        raw["labels"] = real
    return m, raw
