"""Small real test videos made with OpenCV, and the broken files users really have.

Frame makers return uint8 arrays, (T, H, W, 3) RGB or (T, H, W) gray; `write_video` turns them
into a file with any codec the OpenCV wheel has; the file makers write one kind of bad input.
Everything is deterministic from its arguments.

    from media import camera_pan, moving_shapes, write_video, truncated, ODD_NAMES
    write_video(tmp_path / "pan.mp4", camera_pan(frames=40))            # mp4v, lossy
    write_video(tmp_path / "shapes.avi", moving_shapes(), codec="FFV1")  # lossless
    truncated(tmp_path / "pan.mp4", tmp_path / "cut.mkv")                 # the first half of a file
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# Names a user's folder really contains: spaces, accents, a non-Latin script.
ODD_NAMES = ("holiday clip 01.mp4", "vidéo d'été.mp4", "動画 テスト.mp4")

# codec fourcc per extension when none is given: mp4v (lossy, YUV 4:2:0) for .mp4/.mov,
# FFV1 (lossless) for .avi/.mkv.
_DEFAULT_CODEC = {".mp4": "mp4v", ".mov": "mp4v", ".avi": "FFV1", ".mkv": "FFV1"}


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25.0, codec: str | None = None) -> Path:
    """Write RGB (T, H, W, 3) or gray (T, H, W) uint8 frames with OpenCV; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, np.uint8)
    color = frames.ndim == 4
    t, h, w = frames.shape[:3]
    fourcc = cv2.VideoWriter_fourcc(*(codec or _DEFAULT_CODEC.get(path.suffix.lower(), "mp4v")))
    writer = cv2.VideoWriter(str(path), fourcc, float(fps), (w, h), isColor=color)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {codec} into {path.name}")
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR) if color else f)
    writer.release()
    return path


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful RGB image (H, W, 3): blurred noise plus stripes, so motion is visible."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    img = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    stripes = (40 * np.sin(np.arange(width) / 5.0))[None, :, None]
    return np.clip(img + stripes, 0, 255).astype(np.uint8)


def moving_shapes(frames: int = 48, width: int = 96, height: int = 64, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) RGB: a textured square and a solid disc bouncing over a dark textured floor."""
    rng = np.random.default_rng(seed)
    floor = texture(height, width, seed) // 4
    patch = texture(24, 24, seed + 1)
    out = np.empty((frames, height, width, 3), np.uint8)
    pos = rng.uniform(0, [width - 24, height - 24])
    vel = rng.uniform(2, 4, 2) * rng.choice([-1, 1], 2)
    centre = rng.uniform(12, [width - 12, height - 12])
    cvel = rng.uniform(1, 3, 2) * rng.choice([-1, 1], 2)
    for t in range(frames):
        f = floor.copy()
        x, y = (int(v) for v in pos)
        f[y : y + 24, x : x + 24] = patch
        cv2.circle(f, (int(centre[0]), int(centre[1])), 10, (40, 200, 90), -1)
        out[t] = f
        pos, vel = _bounce(pos + vel, vel, [width - 24, height - 24])
        centre, cvel = _bounce(centre + cvel, cvel, [width - 12, height - 12], low=12)
    return out


def _bounce(p: np.ndarray, v: np.ndarray, high: list, low: float = 0) -> tuple[np.ndarray, np.ndarray]:
    for d in range(2):
        if p[d] < low or p[d] > high[d]:
            v[d] = -v[d]
            p[d] = np.clip(p[d], low, high[d])
    return p, v


def camera_pan(frames: int = 48, width: int = 96, height: int = 64, speed: int = 3, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) RGB: a window sliding `speed` px/frame to the right across a larger image."""
    scene = texture(height, width + speed * frames, seed)
    return np.stack([scene[:, t * speed : t * speed + width] for t in range(frames)])


def solid_square(frames: int = 24, width: int = 64, height: int = 64, rgb: tuple = (255, 0, 0),
                 side: int = 24) -> np.ndarray:
    """(T, H, W, 3) RGB: a square of one colour, still, centred on black (colour-survival tests)."""
    out = np.zeros((frames, height, width, 3), np.uint8)
    y, x = (height - side) // 2, (width - side) // 2
    out[:, y : y + side, x : x + side] = rgb
    return out


def counter(frames: int = 30, width: int = 32, height: int = 32, step: int = 8) -> np.ndarray:
    """(T, H, W) gray: frame i is filled with (i * step) % 256, so a pixel names its frame.

    With a lossless codec (FFV1) a sampled frame tells exactly which source frame it was.
    """
    values = (np.arange(frames) * step) % 256
    return np.broadcast_to(values[:, None, None], (frames, height, width)).astype(np.uint8)


# ---------------------------------------------------------------- bad files


def zero_byte(path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def text_as_video(path: str | Path) -> Path:
    """A text file with a video's extension (a README renamed by mistake, an HTML error page)."""
    path = Path(path)
    path.write_text("<html><body>404 Not Found</body></html>\n" * 20)
    return path


def truncated(src: str | Path, dst: str | Path, fraction: float = 0.5) -> Path:
    """The first `fraction` of `src`'s bytes (an interrupted copy or download).

    An .mp4 cut this way usually cannot be opened at all (its index is at the end); an .avi or
    .mkv opens and decodes part of its frames, which probe must still reject.
    """
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def corrupt(src: str | Path, dst: str | Path, seed: int = 0, count: int = 200) -> Path:
    """`src` with `count` random bytes overwritten past its first 64 bytes (bit rot)."""
    data = bytearray(Path(src).read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.integers(64, len(data), count):
        data[i] = int(rng.integers(0, 256))
    Path(dst).write_bytes(bytes(data))
    return Path(dst)
