"""Frames to clips: interval sampling, centre-crop + resize, clip cutting, splits, and loading.

On disk a split is one uint8 array (N, T, C, H, W) saved as .npy, memory-mapped by readers.
The sampler streams: it decodes one frame at a time into a reused buffer and writes each
processed frame straight into the clip rows it belongs to, so memory does not depend on a
video's length, and frames no clip needs are only grabbed, never converted.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from vqvideo.data.splits import SPLITS  # noqa: F401 - re-exported for the stages
from vqvideo.data.video import FULL_RANGE, VideoError, open_video, quiet_opencv


@dataclass(frozen=True)
class Shrink:
    """Centre-crop + resize to size x size for frames of one shape, worked out once.

    Shrinking halves with exact 2x2 area averages (OpenCV's vectorised INTER_AREA fast path)
    while the image is at least twice the target, then one bilinear step covers the factor
    below 2 that is left: a mipmap. A single INTER_AREA call with a non-integer factor
    (360 -> 64) costs about as much as decoding the frame; this costs a fraction of it and
    differs from it by a few grey levels on natural images. Enlarging is bilinear.
    (Measured: a bilinear 360 -> 90 -> 64 would be twice as fast and as close on smooth
    footage, but 8 dB further off on fine texture and text, where it aliases.)
    """

    y: int
    x: int
    side: int  # the crop: the centred square, trimmed evenly to a multiple of 2**halvings
    steps: tuple[tuple[int, int], ...]  # (side after the step, OpenCV interpolation)

    @classmethod
    def of(cls, height: int, width: int, size: int) -> Shrink:
        s = min(height, width)
        halvings = 0
        while s >> halvings >= 2 * size:
            halvings += 1
        # trimmed so that no halving drops an edge row (which would shift the picture by half
        # a pixel each time)
        side = (s >> halvings) << halvings
        steps = [(side >> i, cv2.INTER_AREA) for i in range(1, halvings + 1)]
        if side >> halvings != size:
            steps.append((size, cv2.INTER_LINEAR))
        y = (height - s) // 2 + (s - side) // 2
        x = (width - s) // 2 + (s - side) // 2
        return cls(y, x, side, tuple(steps))

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """(H, W[, C]) -> (size, size[, C]); the crop is a view, nothing outside it is read."""
        img = frame[self.y : self.y + self.side, self.x : self.x + self.side]
        for n, interpolation in self.steps:
            img = cv2.resize(img, (n, n), interpolation=interpolation)
        return img


def resize_square(sq: np.ndarray, size: int) -> np.ndarray:
    """A square (S, S) or (S, S, C) image to (size, size[, C]), anti-aliased (see Shrink)."""
    return Shrink.of(sq.shape[0], sq.shape[1], size)(sq)


def crop_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize to size x size: the one preprocessing of every
    frame (the sample stage and a still image given to generate go through it alike)."""
    return Shrink.of(frame.shape[0], frame.shape[1], size)(frame)


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

    def times(self, n_clips: int, first: int = 0) -> list[int]:
        """For each kept frame up to the last one clips first .. first + n_clips - 1 need: how
        many of those clips hold it (0: in a gap between clips, or before the first)."""
        if n_clips <= 0:
            return []
        length, stride, last = self.length, self.stride, first + n_clips - 1
        return [
            max(0, min(last, k // stride) - max(first, -((length - 1 - k) // stride)) + 1)
            for k in range(last * stride + length)
        ]

    def start_frame(self, clip: int) -> int:
        """The source frame number a clip starts at."""
        return clip * self.stride * self.interval


class NpyRows:
    """Writes clips into reserved rows of an (N, T, C, H, W) uint8 .npy file with pwritev.

    Different processes write disjoint rows of one file, so no locking is needed, and a row's
    bytes do not depend on which process wrote it: parallel output equals serial output.
    """

    def __init__(self, path: str | Path, offset: int, first_row: int, clip_shape: tuple[int, ...]):
        self.clip_bytes = math.prod(clip_shape)
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

    Floats summed in a fixed order (clips in decode order, videos by id), so the result does
    not depend on which worker finished first: parallel output equals serial output.
    """

    def __init__(self, channels: int):
        self.n = 0  # pixels per channel
        self.s = [0.0] * channels
        self.ss = [0.0] * channels

    def add(self, frames: np.ndarray) -> None:
        """Count the pixels of (N, C, H, W) uint8 frames (any strides, e.g. a clip's ring)."""
        n, c, h, w = frames.shape
        self.n += n * h * w
        for i in range(c):
            # one cv2 call per channel of a whole clip (8 us for 20 frames of 64x64); an
            # exact integer sum of squares (multiply to uint16, then sum) costs 5x more
            mean, std = cv2.meanStdDev(frames[:, i].reshape(n, h * w))
            m, sd = float(mean[0, 0]), float(std[0, 0])
            self.s[i] += m * n * h * w
            self.ss[i] += (sd * sd + m * m) * n * h * w

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


@dataclass(frozen=True)
class View:
    """A random camera on a clip, for augmentation: a square of `scale` times the frame's short
    side at relative position (x, y) in [0, 1] (0: left/top edge), mirrored left-right if
    `flip`; one box for all of a clip's frames, so the clip's motion stays what it was."""

    scale: float
    x: float
    y: float
    flip: bool

    def shrink(self, height: int, width: int, size: int) -> tuple[int, int, Shrink]:
        side = max(1, int(round(self.scale * min(height, width))))
        x0 = int(round(self.x * (width - side)))
        y0 = int(round(self.y * (height - side)))
        return y0, x0, Shrink.of(side, side, size)

    def __call__(self, frame: np.ndarray, size: int, cache: dict) -> np.ndarray:
        key = frame.shape[:2]
        if key not in cache:
            cache[key] = self.shrink(*key, size)
        y0, x0, shrink = cache[key]
        small = shrink(frame[y0:, x0:])
        return np.ascontiguousarray(small[:, ::-1]) if self.flip else small


def draw_views(rng: np.random.Generator, count: int, scale: tuple[float, float], flip: bool) -> list[View]:
    return [
        View(float(rng.uniform(*scale)), float(rng.uniform()), float(rng.uniform()), bool(flip and rng.uniform() < 0.5))
        for _ in range(count)
    ]


def sample_video(path: str | Path, plan: ClipPlan, n_clips: int, sink, threads: int = 0,  # noqa: ANN001
                 first_clip: int = 0, views: list[list[View]] | None = None) -> PixelSums:
    """Decode `path` once and hand clips first_clip .. first_clip + n_clips - 1 to
    `sink(row, frames)`, clip first_clip + j as row j, `frames` being the clip's T frames in
    order, each a (C, H, W) uint8 array; return the sums of the pixels handed over (a frame in
    two overlapping clips counts twice, as it does in the arrays). Frames before the first clip
    are decoded and passed over.

    `views[j]`: for clip j, V augmented views (the same V for every clip), each cropped from the
    full-resolution frame and handed over as row n_clips + j * V + v after the plain clips.

    The frames live in a ring of T reused buffers: the sink must copy or write them out
    before returning. Raises VideoError when the video ends before its last clip.
    `threads`: see open_video.

    Gray output takes open_video's gray route where it has one: a colour video's luma plane,
    shrunk, then mapped to full range (on size^2 pixels, not the frame's); otherwise the BGR
    frame is shrunk, then converted to gray. Colour output shrinks the BGR frame first and
    reorders channels after, on size^2 pixels too.
    """
    sums = PixelSums(plan.channels)
    if n_clips <= 0:
        return sums
    gray = plan.channels == 1
    cap, table = open_video(path, gray=gray, threads=threads)
    length, stride = plan.length, plan.stride
    ring = np.empty((length, *plan.frame_shape), np.uint8)  # (T, C, H, W): the last T kept frames
    times = plan.times(n_clips, first_clip)  # per kept frame: how many clips hold it (0: decode only)
    clip_ending = {(first_clip + j) * stride + length - 1: j for j in range(n_clips)}  # kept frame -> row
    n_views = len(views[0]) if views else 0
    open_views: dict[int, np.ndarray] = {}  # row j -> (V, T, C, H, W): its views, filling up
    crops: dict = {}  # view -> {frame shape: its crop}
    skip = plan.interval - 1  # frames between kept ones: decoded, never converted
    buf = None  # the decoder's frame, reused: a 4K BGR frame is 25 MB
    shape = shrink = store = None
    source = 0
    try:
        with quiet_opencv() if table is not None else nullcontext():
            for k, t in enumerate(times):
                for _ in range(skip if k else 0):
                    if not cap.grab():
                        raise _ended(source, k, plan)
                    source += 1
                if not t:  # in a gap between clips
                    if not cap.grab():
                        raise _ended(source, k, plan)
                    source += 1
                    continue
                ok, buf = cap.read(buf)
                if not ok:
                    raise _ended(source, k, plan)
                source += 1
                if buf.shape != shape:  # the first frame (or a size change) sets the geometry
                    shape = buf.shape
                    shrink = Shrink.of(shape[0], shape[1], plan.size)
                    if not shrink.steps and shape[:2] == (shrink.side, shrink.side):
                        shrink = _as_is  # already size x size: no crop, no resize
                    store = _storer(buf, gray, table)
                store(shrink(buf), ring[k % length])
                if n_views:
                    for c in plan.slots(k, first_clip + n_clips):
                        if c < first_clip:
                            continue
                        j = c - first_clip
                        block = open_views.get(j)
                        if block is None:
                            block = open_views[j] = np.empty((n_views, *plan.clip_shape), np.uint8)
                        for v, view in enumerate(views[j]):
                            store(view(buf, plan.size, crops.setdefault(view, {})), block[v, k - c * stride])
                c = clip_ending.get(k)
                if c is not None:  # the ring holds exactly this clip: one write, one count
                    first = k - length + 1
                    sink(c, [ring[(first + i) % length] for i in range(length)])
                    sums.add(ring)
                    if n_views:
                        block = open_views.pop(c)
                        for v in range(n_views):
                            sink(n_clips + c * n_views + v, list(block[v]))
                            sums.add(block[v])
    finally:
        cap.release()
    return sums


def _ended(source: int, k: int, plan: ClipPlan) -> VideoError:
    return VideoError(
        f"decoding stopped after {source} frames, before frame {k * plan.interval} that a clip "
        "needs (the file changed since collect, or its tail is corrupt)"
    )


def _as_is(frame: np.ndarray) -> np.ndarray:
    return frame


def _storer(frame: np.ndarray, gray: bool, table: np.ndarray | None):  # noqa: ANN202
    """For decoded frames shaped like `frame`: a function (small, out) that writes a shrunk
    frame into `out` (C, size, size), converted to gray or to RGB."""
    if table is not None:  # the decoder's gray plane: map it onto gray, straight into `out`
        if table is FULL_RANGE:
            def plane(small: np.ndarray, out: np.ndarray) -> None:
                out[0] = small
            return plane

        def luma(small: np.ndarray, out: np.ndarray) -> None:
            cv2.LUT(small, table, dst=out[0])
        return luma
    channels = 1 if frame.ndim == 2 else frame.shape[2]
    if channels == 1:  # a gray decoder output: gray as it is, or the same value in R, G and B
        def gray_plane(small: np.ndarray, out: np.ndarray) -> None:
            out[:] = small.reshape(out.shape[1:])
        return gray_plane
    if gray:
        code = cv2.COLOR_BGRA2GRAY if channels == 4 else cv2.COLOR_BGR2GRAY

        def to_gray(small: np.ndarray, out: np.ndarray) -> None:
            cv2.cvtColor(small, code, dst=out[0])
        return to_gray

    def reorder(small: np.ndarray, out: np.ndarray) -> None:
        out[:] = small[..., 2::-1].transpose(2, 0, 1)  # (H, W, BGR[A]) -> (RGB, H, W)

    def split(small: np.ndarray, out: np.ndarray) -> None:
        cv2.split(small, [out[2], out[1], out[0]])  # the same in 1.4 us a frame (numpy: 3.5)

    return split if channels == 3 and _splits_in_place() else reorder


@lru_cache(maxsize=1)
def _splits_in_place() -> bool:
    """Whether this OpenCV's cv2.split writes into the views it is given (a binding that copied
    would leave the ring's planes unwritten, silently)."""
    bgr = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    out = np.zeros((3, 2, 2), np.uint8)
    cv2.split(bgr, [out[2], out[1], out[0]])
    return bool((out == bgr[..., ::-1].transpose(2, 0, 1)).all())
