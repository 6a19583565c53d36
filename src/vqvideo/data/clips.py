"""Frames to clips: interval sampling, centre-crop + resize, clip cutting, splits, and loading.

On disk a split is one uint8 array (N, T, C, H, W) saved as .npy, memory-mapped by readers.
The sampler streams: it decodes one frame at a time into a reused buffer and writes each
processed frame straight into the clip rows it belongs to, so memory does not depend on a
video's length, and frames no clip needs are only grabbed, never converted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from vqvideo.data.video import VideoError, open_video
from vqvideo.errors import MissingInputError, VQVideoError

SPLITS = ("train", "val", "test")


def centre_square(frame: np.ndarray) -> np.ndarray:
    """The largest centred square of a frame, as a view (no copy)."""
    h, w = frame.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return frame[y : y + s, x : x + s]


def resize_square(sq: np.ndarray, size: int) -> np.ndarray:
    """A square (S, S) or (S, S, C) image to (size, size[, C]), anti-aliased.

    Shrinking halves with exact 2x2 area averages (OpenCV's vectorised INTER_AREA fast path)
    while the image is at least twice the target, then one bilinear step covers the factor
    below 2 that is left: a mipmap. A single INTER_AREA call with a non-integer factor
    (360 -> 64) costs about as much as decoding the frame; this costs a fraction of it and
    differs from it by a few grey levels on natural images. Enlarging is bilinear.
    """
    s = sq.shape[0]
    halvings = 0
    while s >> halvings >= 2 * size:
        halvings += 1
    if halvings:
        # trim the square evenly to a multiple of 2**halvings, so no halving drops an edge row
        # (which would shift the picture by half a pixel each time)
        keep = (s >> halvings) << halvings
        o = (s - keep) // 2
        sq = sq[o : o + keep, o : o + keep]
        for _ in range(halvings):
            s = sq.shape[0] // 2
            sq = cv2.resize(sq, (s, s), interpolation=cv2.INTER_AREA)
    if s != size:
        sq = cv2.resize(sq, (size, size), interpolation=cv2.INTER_LINEAR)
    return sq


def crop_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize to size x size: the one preprocessing of every
    frame (the sample stage and a still image given to generate go through it alike)."""
    return resize_square(centre_square(frame), size)


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
    """Writes clips into reserved rows of an (N, T, C, H, W) uint8 .npy file with pwritev.

    Different processes write disjoint rows of one file, so no locking is needed, and a row's
    bytes do not depend on which process wrote it: parallel output equals serial output.
    """

    def __init__(self, path: str | Path, offset: int, first_row: int, clip_shape: tuple[int, ...]):
        self.clip_bytes = int(np.prod(clip_shape))
        self.base = offset + first_row * self.clip_bytes  # offset: data_offset(path), read once
        self.fd = os.open(path, os.O_WRONLY)

    def __call__(self, clip: int, frames: list[np.ndarray]) -> None:
        """Write clip `clip` from its T frames, each a C-contiguous (C, H, W) array, in order."""
        offset = self.base + clip * self.clip_bytes
        for i in range(0, len(frames), 1024):  # IOV_MAX
            offset += os.pwritev(self.fd, frames[i : i + 1024], offset)

    def close(self) -> None:
        os.close(self.fd)


def create_array(path: str | Path, rows: int, clip_shape: tuple[int, ...]) -> None:
    """An .npy file of (rows, *clip_shape) uint8, sized but not written (sparse)."""
    # No flush (an msync): the header sits in the page cache, where every reader sees it.
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, *clip_shape))
    del arr


def data_offset(path: str | Path) -> int:
    """Where an .npy file's array data begins (after its header)."""
    arr = np.load(path, mmap_mode="r")
    offset = int(arr.offset)
    del arr
    return offset


class PixelSums:
    """Per-channel pixel count, sum and sum of squares, for the mean and std in stats.json.

    Floats summed in a fixed order (frames in decode order, videos by id), so the result does
    not depend on which worker finished first: parallel output equals serial output.
    """

    def __init__(self, channels: int):
        self.n = 0  # pixels per channel
        self.s = [0.0] * channels
        self.ss = [0.0] * channels

    def add(self, image: np.ndarray, times: int) -> None:
        """Count an (H, W) gray or (H, W, 3) BGR uint8 image `times` times (once per clip it
        is in); channels are stored in RGB order, as the arrays hold them."""
        n = image.shape[0] * image.shape[1]
        self.n += n * times
        # one cv2 call for every channel of an interleaved image: 5 us for 64x64x3, where an
        # exact integer sum of squares (multiply to uint16, then sum) costs 16 us
        mean, std = cv2.meanStdDev(image)  # (C, 1) each
        c = len(self.s)
        order = range(c)[::-1] if c == 3 else range(c)  # BGR -> RGB
        for i, k in enumerate(order):
            m, sd = float(mean[k, 0]), float(std[k, 0])
            self.s[i] += m * n * times
            self.ss[i] += (sd * sd + m * m) * n * times

    def __iadd__(self, other: PixelSums) -> PixelSums:
        self.n += other.n
        self.s = [a + b for a, b in zip(self.s, other.s)]
        self.ss = [a + b for a, b in zip(self.ss, other.ss)]
        return self

    @staticmethod
    def _moments(n: int, s: float, ss: float) -> tuple[float, float]:
        if n == 0:
            return 0.0, 0.0
        mean = s / n
        return mean / 255.0, float(np.sqrt(max(ss / n - mean * mean, 0.0))) / 255.0

    def moments(self) -> tuple[float, float]:
        """Mean and standard deviation of all pixels, in [0, 1]."""
        return self._moments(self.n * len(self.s), sum(self.s), sum(self.ss))

    def channel_moments(self) -> list[tuple[float, float]]:
        return [self._moments(self.n, s, ss) for s, ss in zip(self.s, self.ss)]


def sample_video(path: str | Path, plan: ClipPlan, n_clips: int, sink, threads: int = 0) -> PixelSums:  # noqa: ANN001
    """Decode `path` once and hand each of its first `n_clips` clips to `sink(clip, frames)`,
    `frames` being the clip's T frames in order, each a (C, H, W) uint8 array; return the sums
    of the pixels handed over (a frame in two overlapping clips counts twice, as it does in
    the arrays).

    The frames live in a ring of T reused buffers: the sink must copy or write them out
    before returning. Raises VideoError when the video ends before its last clip.
    `threads`: see open_video.
    """
    sums = PixelSums(plan.channels)
    if n_clips <= 0:
        return sums
    gray = plan.channels == 1
    cap, native_gray = open_video(path, gray=gray, threads=threads)
    length, stride = plan.length, plan.stride
    ring = np.empty((length, *plan.frame_shape), np.uint8)  # (T, C, H, W): the last T kept frames
    buf = None  # the decoder's frame, reused: a 4K BGR frame is 25 MB
    last = (n_clips - 1) * stride + length - 1  # the last kept frame any clip needs
    source = 0
    try:
        for k in range(last + 1):
            for _ in range(plan.interval - 1 if k else 0):  # frames between kept ones
                if not cap.grab():
                    raise _ended(source, k, plan)
                source += 1
            if not plan.slots(k, n_clips):  # in a gap between clips: decode only, no conversion
                if not cap.grab():
                    raise _ended(source, k, plan)
                source += 1
                continue
            ok, buf = cap.read(buf)
            if not ok:
                raise _ended(source, k, plan)
            source += 1
            small = _process(buf, ring[k % length], plan.size, gray, native_gray)
            sums.add(small, len(plan.slots(k, n_clips)))
            first = k - length + 1  # the kept frame the clip ending here starts at
            if first >= 0 and first % stride == 0:  # one write per clip, not per frame
                sink(first // stride, [ring[(first + i) % length] for i in range(length)])
    finally:
        cap.release()
    return sums


def _ended(source: int, k: int, plan: ClipPlan) -> VideoError:
    return VideoError(
        f"decoding stopped after {source} frames, before frame {k * plan.interval} that a clip "
        "needs (the file changed since collect, or its tail is corrupt)"
    )


def _process(frame: np.ndarray, out: np.ndarray, size: int, gray: bool, native_gray: bool) -> np.ndarray:
    """Decoded frame (H, W) gray or (H, W, 3|4) BGR(A) -> `out` (C, size, size), in place.

    Returns the small image before the channel reordering: (size, size) gray or
    (size, size, 3) BGR."""
    sq = centre_square(frame)  # a view: nothing outside the square is ever touched
    if sq.ndim == 3 and sq.shape[2] == 4:
        sq = sq[..., :3]
    if sq.ndim == 3 and (native_gray or sq.shape[2] == 1):
        sq = sq[..., 0]
    # Shrink first, convert after: the colour conversion then touches size^2 pixels, not S^2.
    small = resize_square(sq, size)
    if gray:
        if small.ndim == 3:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        out[0] = small
    elif small.ndim == 2:  # a gray decoder output: the same value in R, G and B
        out[:] = small
        small = cv2.merge([small, small, small])
    else:
        out[:] = small.transpose(2, 0, 1)[::-1]  # (H, W, BGR) -> (RGB, H, W)
    return small


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
        from vqvideo.io import read_json

        return cls(root, read_json(stats_path, "sampled frames' stats.json"))

    def clips(self, split: str) -> np.ndarray:
        """(N, T, C, H, W) uint8, memory-mapped."""
        path = self.root / f"{split}.npy"
        if not path.exists():
            raise MissingInputError(f"{path} is missing; re-run `dvc repro sample`")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise VQVideoError(f"{path} is truncated or corrupt ({err}); re-run `dvc repro sample`") from None
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
