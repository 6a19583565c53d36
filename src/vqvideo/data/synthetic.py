"""Moving Digits: Moving MNIST (Srivastava et al. 2015) built from scikit-learn's handwritten digits.

scikit-learn ships 1,797 real handwritten 8x8 digits (no download), upscaled here to
`digit_size`. Held-out videos draw their digit images from a separate pool (the last 20% of the
images), so the test split never shows a digit image that a training video contains.

As in Moving MNIST, each digit starts at a random place with a random direction, moves a fixed
number of pixels per frame, bounces off the walls, and digits are composited by maximum. The
motion labels give each digit's top-left corner (x, y) in sub-pixel precision and its velocity
(vx, vy) in px/frame; the digit is drawn at (round(x), round(y)), rounding half to even.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd


@dataclass(frozen=True)
class DigitBank:
    images: np.ndarray  # (N, S, S) uint8
    labels: np.ndarray  # (N,) int
    heldout_from: int  # images[heldout_from:] are reserved for held-out videos


def load_digit_bank(size: int = 28, heldout_fraction: float = 0.2) -> DigitBank:
    """scikit-learn's digits, 0..255, upscaled to size x size (bicubic, clipped)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    imgs = digits.images.astype(np.float32) * (255.0 / 16.0)  # (1797, 8, 8) in 0..16
    big = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_CUBIC) for im in imgs])
    big = np.clip(big, 0, 255).astype(np.uint8)
    n = len(big)
    return DigitBank(big, digits.target.astype(np.int64), heldout_from=int(round(n * (1 - heldout_fraction))))


def bounce_trajectory(
    rng: np.random.Generator, steps: int, limit: float, speed: float
) -> tuple[np.ndarray, np.ndarray]:
    """Top-left positions (T, 2) and velocities (T, 2) of a box bouncing inside [0, limit]^2.

    The speed is exactly `speed` px/frame in a uniformly random direction; a wall reflects the
    position and flips that velocity component (the velocity at t is the one that moves t -> t+1).
    """
    pos = rng.uniform(0, limit, size=2)
    theta = rng.uniform(0, 2 * np.pi)
    vel = speed * np.array([np.cos(theta), np.sin(theta)])
    positions = np.empty((steps, 2))
    velocities = np.empty((steps, 2))
    for t in range(steps):
        positions[t], velocities[t] = pos, vel
        pos = pos + vel
        for d in range(2):  # reflect off the walls
            if pos[d] < 0:
                pos[d], vel[d] = -pos[d], -vel[d]
            elif pos[d] > limit:
                pos[d], vel[d] = 2 * limit - pos[d], -vel[d]
    return positions, velocities


def moving_digits_video(
    rng: np.random.Generator,
    bank: DigitBank,
    *,
    frames: int,
    num_digits: int,
    canvas: int,
    speed: float,
    heldout: bool,
) -> tuple[np.ndarray, pd.DataFrame]:
    """One video (T, canvas, canvas) uint8 and its motion labels (one row per digit per frame)."""
    lo, hi = (bank.heldout_from, len(bank.images)) if heldout else (0, bank.heldout_from)
    size = bank.images.shape[1]
    limit = canvas - size
    video = np.zeros((frames, canvas, canvas), np.uint8)
    rows = []
    for k in range(num_digits):
        idx = int(rng.integers(lo, hi))
        img = bank.images[idx]
        pos, vel = bounce_trajectory(rng, frames, limit, speed)
        for t in range(frames):
            x, y = (int(round(v)) for v in pos[t])
            patch = video[t, y : y + size, x : x + size]
            np.maximum(patch, img, out=patch)  # composite by maximum, as Moving MNIST does
            rows.append((t, k, int(bank.labels[idx]), idx, pos[t, 0], pos[t, 1], vel[t, 0], vel[t, 1]))
    labels = pd.DataFrame(rows, columns=["frame", "digit", "label", "digit_image", "x", "y", "vx", "vy"])
    return video, labels.sort_values(["frame", "digit"], kind="stable").reset_index(drop=True)
