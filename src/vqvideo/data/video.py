"""Reading and writing real video files with OpenCV (and GIFs with Pillow).

Reading streams frame by frame, so memory does not grow with a video's length. Writing goes
through a temporary file renamed into place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
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

# The decoder's own pixel format, as OpenCV reports it (CAP_PROP_CODEC_PIXEL_FORMAT, a fourcc).
_GRAY_FOURCC = int.from_bytes(b"Y800", "little")

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


def open_video(path: str | Path, gray: bool = False, threads: int = 0) -> tuple[cv2.VideoCapture, bool]:
    """An opened capture, and whether it returns gray (H, W) frames natively.

    `threads`: FFmpeg decoder threads, 0 for OpenCV's default (one per core). Processes that
    already run one per core ask for 1, so two of them do not fight over each core.

    For a gray source (pixel format Y800, e.g. our FFV1 Moving Digits) asking for gray skips
    FFmpeg's conversion to BGR and OpenCV's conversion back: the luma plane is the answer, bit
    for bit. Colour sources keep the BGR conversion: their raw luma plane is usually in limited
    range (16-235) and would not equal a BGR -> gray conversion.
    """
    if threads > 0:
        cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, threads])
    else:
        cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError("OpenCV cannot open it as a video (unknown format or corrupt)")
    native_gray = False
    if gray and int(cap.get(cv2.CAP_PROP_CODEC_PIXEL_FORMAT)) == _GRAY_FOURCC:
        native_gray = bool(cap.set(cv2.CAP_PROP_CONVERT_RGB, 0))
    return cap, native_gray


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
    Each yielded frame is a new array (the sample stage has its own buffer-reusing loop).
    """
    cap, _ = open_video(path, gray=gray)
    try:
        i = 0
        while True:
            if i % every:
                if not cap.grab():
                    break
                i += 1
                continue
            ok, frame = cap.read()
            if not ok:
                break
            i += 1
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
