"""Real footage made here: scikit-image's photographs filmed as camera pans and zooms.

No video can be downloaded at run time, but the scikit-image wheel ships real photographs
(`skimage/data/`: astronaut, coffee, rocket, motorcycle, chelsea the cat, ...) and one tiny
real animated GIF. A "film" moves a virtual camera over a photograph: a window that pans along
a path with turns at the photo's edges, or zooms in and out, rendered with sub-pixel bilinear
sampling (the photo is first shrunk so the window sees it at about 1:1, so nothing aliases)
and written with OpenCV's mp4v encoder, lossy like a camera's file. The frames are real photo
content; only the camera motion is synthetic (and known: `films.csv` records it).

    vqvideo footage --out data/footage              # 6 videos, 240 frames each
    vqvideo footage --out data/one --videos 1 --frames 360
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from vqvideo.data.video import write_video
from vqvideo.errors import VQVideoError

log = logging.getLogger(__name__)

MP4V = ("mp4v", ".mp4")


@dataclass(frozen=True)
class Film:
    """One camera move over one photograph."""

    photo: str  # a file in skimage/data
    kind: str  # pan | zoom
    width: int  # the video's frame size
    height: int
    speed: float  # pan: photo pixels (at the window's scale) per frame; zoom: scale change per frame
    angle: float  # pan direction, degrees (0: to the right, 90: down)
    view: float = 0.8  # the window's height as a fraction of the shrunk photo's


# Four pans of different directions and speeds, a zoom, a diagonal pan; more cycle through the
# photos with other directions. Speeds of 0.8-1.6 px a frame at 30 fps are a slow handheld pan.
FILMS = (
    Film("astronaut.png", "pan", 192, 144, 1.2, 0.0),
    Film("coffee.png", "pan", 224, 160, 1.0, 180.0),
    Film("rocket.jpg", "pan", 160, 120, 0.8, 90.0, view=0.6),
    Film("motorcycle_left.png", "pan", 256, 176, 1.6, 20.0),
    Film("chelsea.png", "zoom", 192, 144, 0.004, 0.0),
    Film("hubble_deep_field.jpg", "pan", 192, 144, 1.2, 225.0, view=0.6),
    Film("retina.jpg", "pan", 160, 120, 1.0, 300.0, view=0.6),
    Film("ihc.png", "pan", 192, 144, 1.4, 135.0, view=0.7),
)


def photo_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise VQVideoError("scikit-image is not installed; `pip install scikit-image` (it ships the photos)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_photo(name: str) -> np.ndarray:
    """A photograph from skimage/data as (H, W, 3) RGB uint8."""
    path = photo_dir() / name
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise VQVideoError(f"{path} cannot be read; reinstall scikit-image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _view(film: Film, photo_shape: tuple[int, int]) -> float:
    """The window's height over the photo's, narrowed so the window spans at most 80% of the
    photo's width too: a pan always has room to move."""
    h, w = photo_shape
    return min(film.view, 0.8 * w / (h * film.width / film.height))


def _bounce(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Positions x folded into [lo, hi] like a ball between walls: a pan that turns at the edges."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, (lo + hi) / 2)
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def camera_path(film: Film, frames: int, photo_shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Per frame (cx, cy, scale): the window's centre in photo pixels and its zoom (1: view)."""
    h, w = photo_shape
    t = np.arange(frames, dtype=np.float64)
    win_h = _view(film, photo_shape) * h
    win_w = win_h * film.width / film.height
    if film.kind == "zoom":
        # in and out between 1x and 1.6x, centred on a point that drifts slowly
        period = 2 * math.log(1.6) / math.log1p(film.speed)
        scale = np.exp(math.log(1.6) * (1 - np.cos(2 * math.pi * t / period)) / 2)
        cx = w / 2 + 0.1 * w * np.sin(2 * math.pi * t / (3 * period))
        cy = h / 2 + 0.05 * h * np.sin(2 * math.pi * t / (2 * period))
        return np.stack([cx, cy, scale], 1)
    a = math.radians(film.angle + rng.uniform(-10, 10))
    # a small, smooth handheld wobble of the speed (+-15%) so no two frames move exactly alike
    wobble = 1 + 0.15 * np.sin(2 * math.pi * t / rng.uniform(40, 80) + rng.uniform(0, 2 * math.pi))
    travel = np.cumsum(film.speed * wobble) - film.speed
    x0, y0 = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    cx = _bounce(x0 + math.cos(a) * travel, win_w / 2, w - win_w / 2)
    cy = _bounce(y0 + math.sin(a) * travel, win_h / 2, h - win_h / 2)
    return np.stack([cx, cy, np.ones(frames)], 1)


def film_frames(film: Film, frames: int, seed: int) -> np.ndarray:
    """(T, height, width, 3) RGB uint8: the photo seen through the moving window."""
    rng = np.random.default_rng(seed)
    photo = load_photo(film.photo)
    # shrink the photo so the unzoomed window is the frame's size: sampling is then ~1:1
    h0 = photo.shape[0]
    view = _view(film, photo.shape[:2])
    shrink = film.height / (view * h0)
    if shrink < 1:
        photo = cv2.resize(photo, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    ph, pw = photo.shape[:2]
    path = camera_path(film, frames, (ph, pw), rng)
    win_h = view * ph  # the unzoomed window's height in the (shrunk) photo, as in camera_path
    out = np.empty((frames, film.height, film.width, 3), np.uint8)
    for i, (cx, cy, scale) in enumerate(path):
        s = film.height / (win_h / scale)  # output pixels per photo pixel
        m = np.array([[s, 0, film.width / 2 - s * cx], [0, s, film.height / 2 - s * cy]])
        cv2.warpAffine(photo, m, (film.width, film.height), dst=out[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
    return out


def make_footage(out: str | Path, videos: int = 6, frames: int = 240, seed: int = 0, fps: float = 30.0) -> pd.DataFrame:
    """Write `videos` films into `out` (mp4v .mp4) and films.csv describing them; return it."""
    if videos < 1 or frames < 2:
        raise VQVideoError(f"footage needs --videos >= 1 and --frames >= 2 (got {videos} and {frames})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(videos), desc="footage", unit="video"):
        base = FILMS[i % len(FILMS)]
        # past the table: the same photos, turned to other directions
        film = replace(base, angle=(base.angle + 97.0 * (i // len(FILMS))) % 360) if i >= len(FILMS) else base
        name = f"{i:02d}_{Path(film.photo).stem}_{film.kind}.mp4"
        write_video(out / name, film_frames(film, frames, seed + i), fps, codec=MP4V)
        rows.append({"file": name, **asdict(film), "frames": frames, "fps": fps, "seed": seed + i})
    table = pd.DataFrame(rows)
    table.to_csv(out / "films.csv", index=False)
    log.info("footage: %d videos of %d frames -> %s", videos, frames, out)
    return table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="folder to write the videos into")
    p.add_argument("--videos", type=int, default=6, help="how many films (default 6)")
    p.add_argument("--frames", type=int, default=240, help="frames per film (default 240, 8 s at 30 fps)")
    p.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> None:
    make_footage(args.out, args.videos, args.frames, args.seed)
