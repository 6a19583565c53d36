"""Reading and writing real video files with OpenCV (and GIFs with Pillow).

Reading streams frame by frame, so memory does not grow with a video's length. Writing goes
through a temporary file renamed into place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from vqvideo.io import atomic_path

log = logging.getLogger(__name__)

# Lossless FFV1 in Matroska for the dataset itself: a seed fixes every decoded frame bit for bit.
# (The Matroska muxer also writes a random segment UID, so the files' sha256 differ between
# runs; DVC's run cache restores collect's outputs instead of regenerating them, so downstream
# stages do not re-run for it.) VP9 for clips people open in a browser (the OpenCV wheel has
# no H.264 encoder, and mp4v does not play everywhere).
LOSSLESS = ("FFV1", ".mkv")
BROWSER = ("vp09", ".mp4")

cv2.setNumThreads(1)  # parallelism comes from one process per video, not from inside OpenCV


def _fourcc(tag: bytes) -> int:
    return int.from_bytes(tag, "little")


# The decoder's own pixel format, as OpenCV reports it (CAP_PROP_CODEC_PIXEL_FORMAT, a fourcc).
_GRAY_FOURCC = _fourcc(b"Y800")
# 8-bit planar and semi-planar Y'CbCr formats (yuv420p, yuvj420p, yuv422p, yuv444p, nv12, ...):
# with CAP_PROP_CONVERT_RGB off OpenCV hands over their first plane, the luma, as (H, W) uint8.
# Packed (YUYV), 10-bit and RGB formats are not here: their first plane is not a gray image.
_LUMA_FOURCCS = frozenset(
    _fourcc(t) for t in (b"I420", b"IYUV", b"YV12", b"Y42B", b"444P", b"Y41B", b"YUV9", b"NV12", b"NV21")
)

# Luma -> gray tables. Limited ("TV") range puts black at 16 and white at 235 (mp4v, VP9, H.264
# mostly); full range (MJPEG, some phone footage) uses 0-255 already. The container does not
# say which through OpenCV, so the video's first frames decide (see _luma_table).
FULL_RANGE = np.arange(256, dtype=np.uint8)
LIMITED_RANGE = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)
# A frame decides the range when, mapped through one table, its luma plane reproduces OpenCV's
# BGR -> gray conversion of it within LUMA_TOLERANCE grey levels on average (measured: 1.4 on
# mp4v and VP9, 0.9 on MJPEG), and the other table does worse by LUMA_MARGIN at least. The two
# tables agree near grey level 113, so a dim, misty or flat frame cannot tell them apart (the
# wrong one can even come out slightly closer); such frames are passed over, up to
# LUMA_PROBE_FRAMES of them, and a video none of them decides keeps the BGR route.
LUMA_TOLERANCE = 2.5
LUMA_MARGIN = 1.0
LUMA_PROBE_FRAMES = 48

# A container that declares more frames than decode, by more than this fraction (and in time as
# well as in count, so variable-frame-rate files are not flagged), is truncated or corrupt.
TRUNCATION_TOLERANCE = 0.05


class VideoError(Exception):
    """A video that cannot be decoded; the reason goes into the manifest."""


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int


def _capture(path: str | Path, threads: int = 0) -> cv2.VideoCapture:
    if threads > 0:
        cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, threads])
    else:
        cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError("OpenCV cannot open it as a video (unknown format or corrupt)")
    return cap


def open_video(
    path: str | Path, gray: bool = False, threads: int = 0
) -> tuple[cv2.VideoCapture, np.ndarray | None]:
    """An opened capture and, when it hands over (H, W) gray frames itself, the 256-entry table
    that maps them onto gray (apply it with cv2.LUT); None when frames come out BGR.

    `threads`: FFmpeg decoder threads, 0 for OpenCV's default (one per core). Processes that
    already run one per core ask for 1, so two of them do not fight over each core.

    Asking for gray skips FFmpeg's conversion to BGR (and OpenCV's back to gray), which costs
    about as much as decoding the frame:
      - a gray source (pixel format Y800, e.g. our FFV1 Moving Digits): its plane is the
        answer, bit for bit (the table is the identity);
      - a planar Y'CbCr source (mp4v, VP9, MJPEG, ...): its luma plane is the gray image up to
        the range (limited or full), which the first frame that can tell decides; the result is
        within a few grey levels of the BGR route (which clips out-of-gamut colours and rounds
        twice). When no frame tells, or neither range fits, the BGR route is kept.
    Luma frames come with one OpenCV warning per frame; read them inside quiet_opencv().
    """
    cap = _capture(path, threads)
    if not gray:
        return cap, None
    try:
        fmt = int(cap.get(cv2.CAP_PROP_CODEC_PIXEL_FORMAT))
        table = FULL_RANGE if fmt == _GRAY_FOURCC else _luma_table(path) if fmt in _LUMA_FOURCCS else None
    except BaseException:
        cap.release()
        raise
    if table is not None and not cap.set(cv2.CAP_PROP_CONVERT_RGB, 0):
        table = None
    return cap, table


def _luma_table(path: str | Path) -> np.ndarray | None:
    """The range table under which the video's luma planes match OpenCV's BGR -> gray
    conversion of the same frames, decided by the first frame that can tell (see LUMA_MARGIN);
    None when the first LUMA_PROBE_FRAMES cannot, or neither range fits."""
    caps = []
    try:
        with quiet_opencv():
            for convert in (1, 0):  # two short-lived captures: one cannot switch output format
                caps.append(_capture(path, threads=1))
                caps[-1].set(cv2.CAP_PROP_CONVERT_RGB, convert)
            for _ in range(LUMA_PROBE_FRAMES):
                (ok_bgr, bgr), (ok_luma, luma) = caps[0].read(), caps[1].read()
                if not (ok_bgr and ok_luma):
                    return None
                if bgr.ndim != 3 or luma.ndim != 2 or luma.shape != bgr.shape[:2] or luma.dtype != np.uint8:
                    return None  # not a luma plane after all
                table = _decide_range(luma, bgr)
                if table is not None:
                    return None if table is _NEITHER else table
    finally:
        for cap in caps:
            cap.release()
    return None


_NEITHER = np.zeros(0, np.uint8)  # _decide_range: the frame tells, and no range fits


def _decide_range(luma: np.ndarray, bgr: np.ndarray) -> np.ndarray | None:
    """LIMITED_RANGE or FULL_RANGE if this frame decides, _NEITHER if it rules both out, None if
    it cannot tell."""
    step = max(1, min(luma.shape) // 256)  # a 4K frame: every 8th pixel is plenty
    luma = luma[::step, ::step]
    want = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[::step, ::step].astype(np.int16)
    err = [float(np.abs(t[luma].astype(np.int16) - want).mean()) for t in (LIMITED_RANGE, FULL_RANGE)]
    best, other = (0, 1) if err[0] <= err[1] else (1, 0)
    if err[other] - err[best] < LUMA_MARGIN:
        return None
    if err[best] > LUMA_TOLERANCE:
        return _NEITHER
    return (LIMITED_RANGE, FULL_RANGE)[best]


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """OpenCV's log held to errors: a luma read warns "unsupported picture format" each frame."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def probe(path: str | Path) -> VideoInfo:
    """Open a video and decode it once to count frames (container counts are unreliable).

    Raises VideoError for an empty, unreadable, truncated or corrupt file.
    """
    path = Path(path)
    if not path.exists():
        raise VideoError("file does not exist")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    cap, _ = open_video(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        n, last_ms = 0, 0.0
        while cap.grab():  # grab decodes but skips the colour conversion: the cheap way to count
            n += 1
            last_ms = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
    finally:
        cap.release()
    if n == 0:
        raise VideoError("no decodable frames (truncated or corrupt)")
    if width <= 0 or height <= 0:
        raise VideoError("no frame size in the stream")
    fps = fps if fps > 0 else 0.0
    if _truncated(n, declared, last_ms, fps):
        raise VideoError(
            f"truncated or corrupt: decoded {n} of the {declared} frames its container declares"
        )
    return VideoInfo(frames=n, fps=fps, width=width, height=height)


def _truncated(decoded: int, declared: int, last_ms: float, fps: float) -> bool:
    if declared <= 0 or fps <= 0 or decoded >= declared * (1 - TRUNCATION_TOLERANCE) - 1:
        return False
    # The count says frames are missing; the timestamps must agree (a variable-frame-rate file
    # can declare a count from duration x nominal fps that it never had).
    declared_ms = declared / fps * 1000.0
    decoded_ms = last_ms + 1000.0 / fps
    return decoded_ms < declared_ms * (1 - TRUNCATION_TOLERANCE)


def to_gray(frame: np.ndarray) -> np.ndarray:
    """A decoded frame (gray, BGR or BGRA) as (H, W) uint8."""
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1:
        return frame[..., 0]
    return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY)


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """A decoded frame (gray, BGR or BGRA) as (H, W, 3) RGB uint8."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB if frame.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def iter_frames(path: str | Path, every: int = 1, gray: bool = False) -> Iterator[np.ndarray]:
    """Yield every `every`-th frame: (H, W) uint8 if gray else (H, W, 3) RGB uint8.

    Skipped frames are only grabbed, not converted into arrays, which is most of the saving.
    Gray frames come through open_video's gray route (the same one the sample stage takes).
    Each yielded frame is a new array (the sample stage has its own buffer-reusing loop).
    """
    cap, table = open_video(path, gray=gray)
    quiet = quiet_opencv if table is not None else nullcontext
    try:
        i = 0
        while True:
            if i % every:
                with quiet():
                    if not cap.grab():
                        break
                i += 1
                continue
            with quiet():  # not held across the yield: the caller's own OpenCV calls may warn
                ok, frame = cap.read()
            if not ok:
                break
            i += 1
            if table is not None:
                yield cv2.LUT(frame, table) if table is not FULL_RANGE else frame
            else:
                yield to_gray(frame) if gray else to_rgb(frame)
    finally:
        cap.release()


def read_video(path: str | Path, gray: bool = False) -> np.ndarray:
    """All frames as one array (T, H, W) or (T, H, W, 3); for small files and tests."""
    frames = list(iter_frames(path, gray=gray))
    if not frames:
        raise VideoError(f"no frames in {path}")
    return np.stack(frames)


def write_video(path: str | Path, frames: np.ndarray, fps: float, codec: tuple[str, str] = LOSSLESS) -> Path:
    """Write (T, H, W) gray or (T, H, W, 3) RGB uint8 frames; returns the path written."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError("frames must be uint8")
    color = frames.ndim == 4
    t, h, w = frames.shape[:3]
    fourcc = cv2.VideoWriter_fourcc(*codec[0])
    with atomic_path(path, suffix=".tmp" + path.suffix) as tmp:
        writer = cv2.VideoWriter(str(tmp), fourcc, float(fps), (w, h), isColor=color)
        if not writer.isOpened():
            raise VideoError(f"OpenCV cannot write {codec[0]} into {path.suffix} on this machine")
        try:
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if color else frame)
        finally:
            writer.release()
        if os.path.getsize(tmp) == 0:
            raise VideoError(f"OpenCV wrote an empty {path.name}")
    return path


def write_gif(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    path = Path(path)
    images = [Image.fromarray(f) for f in np.asarray(frames, dtype=np.uint8)]
    with atomic_path(path, suffix=".tmp.gif") as tmp:
        images[0].save(
            tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
        )
    return path
