"""Frames to clips: interval sampling, centre-crop + resize, clip cutting, splits, and loading.

On disk a split is one uint8 array (N, T, C, H, W) saved as .npy, memory-mapped by readers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from vqvideo.data.video import iter_frames
from vqvideo.errors import MissingInputError, VQVideoError

SPLITS = ("train", "val", "test")


def crop_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize to size x size (area filter when shrinking)."""
    h, w = frame.shape[:2]
    if h != w:
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        frame = frame[y : y + s, x : x + s]
    if frame.shape[0] != size:
        interp = cv2.INTER_AREA if frame.shape[0] > size else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (size, size), interpolation=interp)
    return frame


def kept_frames(frames: int, interval: int) -> int:
    return (frames + interval - 1) // interval


def clip_count(frames: int, interval: int, length: int, stride: int) -> int:
    n = kept_frames(frames, interval)
    return 0 if n < length else (n - length) // stride + 1


def iter_clips(
    path: str | Path, *, interval: int, size: int, channels: int, length: int, stride: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first kept-frame index, clip (T, C, H, W) uint8), holding only `length` frames."""
    window: list[np.ndarray] = []
    next_start = 0
    for k, frame in enumerate(iter_frames(path, every=interval, gray=channels == 1)):
        f = crop_resize(frame, size)
        f = f[None] if f.ndim == 2 else f.transpose(2, 0, 1)  # (C, H, W)
        window.append(f)
        if len(window) > length:
            window.pop(0)
        start = k - length + 1
        if start == next_start:
            yield start, np.stack(window)
            next_start += stride


def assign_splits(
    videos: list[str], hints: list[str], val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """Split by video. Hinted videos keep their split; the rest fill the remaining quotas."""
    n = len(videos)
    quota = {"test": int(round(test_fraction * n)), "val": int(round(val_fraction * n))}
    for s in ("test", "val"):  # at least one video in a requested split when there is room
        if quota[s] == 0 and (test_fraction if s == "test" else val_fraction) > 0 and n >= 3:
            quota[s] = 1
    out = [h if h in SPLITS else "" for h in hints]
    for s in ("test", "val"):
        quota[s] = max(0, quota[s] - out.count(s))
    free = [i for i, s in enumerate(out) if not s]
    order = np.random.default_rng(seed).permutation(len(free))
    cursor = 0
    for s in ("test", "val"):
        for j in order[cursor : cursor + quota[s]]:
            out[free[j]] = s
        cursor += quota[s]
    return [s or "train" for s in out]


# ---------------------------------------------------------------- reading a sampled dataset


@dataclass(frozen=True)
class FrameData:
    """The sampled dataset: one memory-mapped array per split, plus its stats."""

    root: Path
    stats: dict

    @classmethod
    def open(cls, root: str | Path) -> FrameData:
        root = Path(root)
        stats_path = root / "stats.json"
        if not stats_path.exists():
            raise MissingInputError(
                f"sampled frames not found in {root} (no stats.json); run `dvc repro sample` first"
            )
        return cls(root, json.loads(stats_path.read_text()))

    def clips(self, split: str) -> np.ndarray:
        """(N, T, C, H, W) uint8, memory-mapped."""
        path = self.root / f"{split}.npy"
        if not path.exists():
            raise MissingInputError(f"{path} is missing; re-run `dvc repro sample`")
        arr = np.load(path, mmap_mode="r")
        if len(arr) == 0:
            raise VQVideoError(
                f"the {split} split in {self.root} is empty; collect more videos or change "
                "sample.val_fraction / sample.test_fraction / sample.clip_length"
            )
        return arr

    def index(self) -> pd.DataFrame:
        return pd.read_csv(self.root / "index.csv")

    @property
    def fingerprint(self) -> str:
        return str(self.stats.get("fingerprint", ""))


def to_tensor(a: np.ndarray):
    """A (memory-mapped) uint8 array as a writable in-memory torch tensor."""
    import torch

    return torch.from_numpy(np.array(a))


def frames_of(clips: np.ndarray) -> np.ndarray:
    """(N, T, C, H, W) -> (N*T, C, H, W) view."""
    n, t = clips.shape[:2]
    return clips.reshape(n * t, *clips.shape[2:])
