"""Frames to clips: interval sampling, centre-crop + resize, clip cutting, splits, and loading.

On disk a split is one uint8 array (N, T, C, H, W) saved as .npy, memory-mapped by readers.
The sampler streams: it decodes one frame at a time into a reused buffer and writes each
processed frame straight into the clip rows it belongs to, so memory does not depend on a
video's length, and frames no clip needs are only grabbed, never converted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from vqvideo.data.video import VideoError, open_video
from vqvideo.errors import MissingInputError, VQVideoError

SPLITS = ("train", "val", "test")


def _interp(src: int, dst: int) -> int:
    # Area averaging when shrinking (no aliasing of fine texture), bilinear when enlarging.
    return cv2.INTER_AREA if src > dst else cv2.INTER_LINEAR


def centre_square(frame: np.ndarray) -> np.ndarray:
    """The largest centred square of a frame, as a view (no copy)."""
    h, w = frame.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return frame[y : y + s, x : x + s]


def crop_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize to size x size (area filter when shrinking)."""
    frame = centre_square(frame)
    if frame.shape[0] != size:
        frame = cv2.resize(frame, (size, size), interpolation=_interp(frame.shape[0], size))
    return frame


def kept_frames(frames: int, interval: int) -> int:
    return (frames + interval - 1) // interval


def clip_count(frames: int, interval: int, length: int, stride: int) -> int:
    n = kept_frames(frames, interval)
    return 0 if n < length else (n - length) // stride + 1


@dataclass(frozen=True)
class ClipPlan:
    """Which decoded frames go where: kept frame k is source frame k * interval, and clip c
    holds kept frames c * stride ... c * stride + length - 1."""

    interval: int
    length: int
    stride: int
    size: int
    channels: int

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)  # (C, H, W)

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        return (self.length, *self.frame_shape)  # (T, C, H, W)

    def clips(self, frames: int) -> int:
        return clip_count(frames, self.interval, self.length, self.stride)

    def slots(self, k: int, n_clips: int) -> range:
        """The clips that contain kept frame k (none when stride > length leaves a gap)."""
        first = max(0, -(-(k - self.length + 1) // self.stride))  # ceil((k - length + 1) / stride)
        last = min(n_clips - 1, k // self.stride)
        return range(first, last + 1)

    def start_frame(self, clip: int) -> int:
        """The source frame number a clip starts at."""
        return clip * self.stride * self.interval


class NpyRows:
    """Writes frames into reserved rows of an (N, T, C, H, W) uint8 .npy file with pwrite.

    Different processes write disjoint rows of one file, so no locking is needed, and a row's
    bytes do not depend on which process wrote it: parallel output equals serial output.
    """

    def __init__(self, path: str | Path, first_row: int, clip_shape: tuple[int, ...]):
        self.frame_bytes = int(np.prod(clip_shape[1:]))
        self.clip_bytes = self.frame_bytes * clip_shape[0]
        self.base = data_offset(path) + first_row * self.clip_bytes
        self.fd = os.open(path, os.O_WRONLY)

    def __call__(self, clip: int, pos: int, frame: np.ndarray) -> None:
        os.pwrite(self.fd, frame, self.base + clip * self.clip_bytes + pos * self.frame_bytes)

    def close(self) -> None:
        os.close(self.fd)


def create_array(path: str | Path, rows: int, clip_shape: tuple[int, ...]) -> None:
    """An .npy file of (rows, *clip_shape) uint8, sized but not written (sparse)."""
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, *clip_shape)).flush()


def data_offset(path: str | Path) -> int:
    """Where an .npy file's array data begins (after its header)."""
    arr = np.load(path, mmap_mode="r")
    offset = int(arr.offset)
    del arr
    return offset


def sample_video(path: str | Path, plan: ClipPlan, n_clips: int, sink) -> np.ndarray:  # noqa: ANN001
    """Decode `path` once and hand every frame of its first `n_clips` clips to
    `sink(clip, position, frame (C, H, W) uint8)`; return a (C, 256) histogram of the pixels
    written (a frame in two overlapping clips counts twice, as it does in the arrays).

    `frame` is a reused buffer: the sink must copy or write it out before returning.
    Raises VideoError when the video ends before its last clip.
    """
    hist = np.zeros((plan.channels, 256), np.int64)
    if n_clips <= 0:
        return hist
    gray = plan.channels == 1
    cap, native_gray = open_video(path, gray=gray)
    out = np.empty(plan.frame_shape, np.uint8)  # (C, H, W), reused for every frame
    buf = None  # the decoder's frame, reused: a 4K BGR frame is 25 MB
    last = (n_clips - 1) * plan.stride + plan.length - 1  # the last kept frame any clip needs
    source = 0
    try:
        for k in range(last + 1):
            for _ in range(plan.interval - 1 if k else 0):  # frames between kept ones
                if not cap.grab():
                    raise _ended(source, k, plan)
                source += 1
            slots = plan.slots(k, n_clips)
            if not slots:  # in a gap between clips: decode only, no conversion
                if not cap.grab():
                    raise _ended(source, k, plan)
                source += 1
                continue
            ok, buf = cap.read(buf)
            if not ok:
                raise _ended(source, k, plan)
            source += 1
            _process(buf, out, plan.size, gray, native_gray)
            for c in slots:
                sink(c, k - c * plan.stride, out)
            for ch in range(plan.channels):
                hist[ch] += np.bincount(out[ch].ravel(), minlength=256) * len(slots)
    finally:
        cap.release()
    return hist


def _ended(source: int, k: int, plan: ClipPlan) -> VideoError:
    return VideoError(
        f"decoding stopped after {source} frames, before frame {k * plan.interval} that a clip "
        "needs (the file changed since collect, or its tail is corrupt)"
    )


def _process(frame: np.ndarray, out: np.ndarray, size: int, gray: bool, native_gray: bool) -> None:
    """Decoded frame (H, W) gray or (H, W, 3|4) BGR(A) -> `out` (C, size, size), in place."""
    sq = centre_square(frame)  # a view: crop before any conversion, never convert the margins
    if gray:
        if not native_gray and sq.ndim == 3:
            sq = cv2.cvtColor(sq, cv2.COLOR_BGRA2GRAY if sq.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
        elif sq.ndim == 3:
            sq = sq[..., 0]
        if sq.shape[0] != size:
            sq = cv2.resize(sq, (size, size), interpolation=_interp(sq.shape[0], size))
        out[0] = sq
        return
    if sq.ndim == 2:
        sq = sq[..., None]  # a gray decoder output: the same value in R, G and B
    elif sq.shape[2] == 4:
        sq = sq[..., :3]
    if sq.shape[0] != size:
        sq = cv2.resize(sq, (size, size), interpolation=_interp(sq.shape[0], size))
        sq = sq.reshape(size, size, -1)  # cv2 drops a trailing channel axis of 1
    # (H, W, BGR) -> (RGB, H, W): resize first, so the channel shuffle touches few pixels
    out[:] = sq.transpose(2, 0, 1)[::-1]


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


def moments(hist: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of pixels in [0, 1] from a 256-bin histogram, exactly."""
    hist = np.asarray(hist, np.float64).reshape(-1, 256).sum(0)
    n = hist.sum()
    if n == 0:
        return 0.0, 0.0
    v = np.arange(256) / 255.0
    mean = float((hist * v).sum() / n)
    var = float((hist * (v - mean) ** 2).sum() / n)
    return mean, float(np.sqrt(var))


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
