"""Which clips go to which split: whole videos (many videos), or time segments of each video
(few videos: one long video is enough to train and evaluate)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

SPLITS = ("train", "val", "test")

if TYPE_CHECKING:
    from vqvideo.data.clips import ClipPlan


def assign_splits(
    videos: list[str], hints: list[str], val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """Split by video: a video's clips all land in one split.

    A split some videos are hinted into (synthetic data puts its held-out digits in test) is
    taken as the source's decision: no other video is added to it, so its content stays apart
    from train. The other splits are drawn from the remaining videos with exact quotas
    (round(fraction * n), at least one when the fraction is positive and there are >= 3
    videos), in an order fixed by `seed` and the videos' paths, not by listing order.
    """
    n = len(videos)
    out = [h if h in SPLITS else "" for h in hints]
    quota = {}
    for s, frac in (("test", test_fraction), ("val", val_fraction)):
        q = int(round(frac * n))
        if q == 0 and frac > 0 and n >= 3:
            q = 1
        quota[s] = 0 if s in out else q
    free = sorted((i for i, s in enumerate(out) if not s), key=lambda i: videos[i])
    order = np.random.default_rng(seed).permutation(len(free))
    cursor = 0
    for s in ("test", "val"):
        take = min(quota[s], max(0, len(free) - cursor - 1))  # always leave train a video
        for j in order[cursor : cursor + take]:
            out[free[j]] = s
        cursor += take
    return [s or "train" for s in out]


TIME_SPLIT_BELOW = 10  # split: auto cuts each video by time when fewer videos than this are usable


def time_segments(n_clips: int, plan: ClipPlan, val_fraction: float, test_fraction: float) -> list[tuple[str, int, int]]:
    """One video's clips cut in time order into train | val | test: [(split, first clip, count)].

    Between two segments the clips that would share frames with both are left out (one clip
    at stride 10 and length 20), so no frame is in two splits. The test and val segments take
    round(fraction * n) clips, at least one each when the fraction is positive; a video too
    short for all three keeps train and test, or train alone.
    """
    gap = -(-plan.length // plan.stride) - 1  # clips c, c + gap + 1 share no kept frame
    want = {s: (max(1, int(round(f * n_clips))) if f > 0 else 0) for s, f in (("val", val_fraction), ("test", test_fraction))}
    for drop in ("val", "test"):
        used = sum(q + gap for q in want.values() if q)
        if n_clips - used >= 1:
            break
        want[drop] = 0
    segments, cursor = [], n_clips - sum(q + gap for q in want.values() if q)
    segments.append(("train", 0, cursor))
    for s in ("val", "test"):
        if want[s]:
            segments.append((s, cursor + gap, want[s]))
            cursor += gap + want[s]
    return segments
