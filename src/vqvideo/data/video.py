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

# Lossless for the dataset itself; VP9 for clips people open in a browser (the OpenCV wheel
# has no H.264 encoder, and mp4v does not play everywhere).
LOSSLESS = ("FFV1", ".mkv")
BROWSER = ("vp09", ".mp4")

cv2.setNumThreads(1)  # parallelism comes from one process per video, not from inside OpenCV


class VideoError(Exception):
    """A video that cannot be decoded; the reason goes into the manifest."""


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: float
    width: int
    height: int


def probe(path: str | Path) -> VideoInfo:
    """Open a video and decode it once to count frames (container counts are unreliable)."""
    path = Path(path)
    if not path.exists():
        raise VideoError("file does not exist")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError("OpenCV cannot open it as a video (unknown format or corrupt)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        n = 0
        while cap.grab():
            n += 1
    finally:
        cap.release()
    if n == 0:
        raise VideoError("no decodable frames (truncated or corrupt)")
    if width <= 0 or height <= 0:
        raise VideoError("no frame size in the stream")
    return VideoInfo(frames=n, fps=fps if fps > 0 else 0.0, width=width, height=height)


def iter_frames(path: str | Path, every: int = 1, gray: bool = False) -> Iterator[np.ndarray]:
    """Yield every `every`-th frame: (H, W) uint8 if gray else (H, W, 3) RGB uint8.

    Skipped frames are only grabbed, not decoded into arrays, which is most of the saving.
    """
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError("OpenCV cannot open it as a video")
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
            if frame.ndim == 2:
                yield frame if gray else cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
            elif gray:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            else:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
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
