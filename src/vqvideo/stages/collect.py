"""collect: gather videos into data/raw/ with a manifest (and motion labels for synthetic data)."""

from __future__ import annotations

import argparse
import logging
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from vqvideo.config import CollectConfig
from vqvideo.data import sources
from vqvideo.data.synthetic import load_digit_bank, moving_digits_video
from vqvideo.data.video import LOSSLESS, write_video
from vqvideo.errors import VQVideoError
from vqvideo.io import sha256_file, staging_dir, write_csv
from vqvideo.utils import resolve_workers

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "path", "source", "origin", "sha256", "frames", "fps", "width", "height", "status", "reason", "split",
]
LABEL_COLUMNS = ["video", "frame", "digit", "label", "digit_image", "x", "y", "vx", "vy"]


def _synthetic_one(i: int, cfg: CollectConfig, videos_dir: Path, rel_root: Path) -> sources.ManifestRow:
    bank = _bank(cfg.digit_size)
    n_test = int(round(cfg.num_videos * cfg.test_fraction))
    heldout = i >= cfg.num_videos - n_test
    rng = np.random.default_rng([cfg.seed, i])  # one stream per video: parallel == serial
    video, labels = moving_digits_video(
        rng, bank, frames=cfg.frames_per_video, num_digits=cfg.digits_per_video,
        canvas=cfg.canvas_size, speed=cfg.speed, heldout=heldout,
    )
    dest = write_video(videos_dir / f"{i:05d}_digits{LOSSLESS[1]}", video, cfg.fps)
    labels.insert(0, "video", f"{i:05d}")
    return sources.ManifestRow(
        path=str(dest.relative_to(rel_root)), source="synthetic", origin=f"moving_digits:{cfg.seed}:{i}",
        sha256=sha256_file(dest), frames=len(video), fps=cfg.fps, width=cfg.canvas_size,
        height=cfg.canvas_size, split="test" if heldout else "", labels=labels.to_dict("list"),
    )


_BANKS: dict[int, object] = {}


def _bank(size: int):
    if size not in _BANKS:
        _BANKS[size] = load_digit_bank(size)
    return _BANKS[size]


def _map(fn, items, workers: int, desc: str) -> list:
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in tqdm(items, desc=desc, unit="video")]
    with ProcessPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(fn, items, chunksize=8), total=len(items), desc=desc, unit="video"))


def collect(cfg: CollectConfig, out_dir: Path, workers: int = 1) -> pd.DataFrame:
    """Fill `out_dir` with videos/, manifest.csv and labels.csv; return the manifest."""
    out_dir = Path(out_dir)
    with staging_dir(out_dir) as tmp:
        videos = tmp / "videos"
        videos.mkdir()
        if cfg.source == "synthetic":
            rows = _map(partial(_synthetic_one, cfg=cfg, videos_dir=videos, rel_root=tmp),
                        list(range(cfg.num_videos)), workers, "collect: moving digits")
        elif cfg.source == "folder":
            files = sources.list_folder(cfg.path)
            if not files:
                raise VQVideoError(f"collect.path {cfg.path!r} matches no files; point it at a folder or glob of videos")
            files = files[: cfg.num_videos]
            rows = _map(lambda a: sources.collect_file(a[0], a[1], videos, tmp), list(enumerate(files)), 1, "collect: folder")
        elif cfg.source == "urls":
            entries = list(enumerate(cfg.urls[: cfg.num_videos]))
            rows = [
                sources.collect_url(i, e, videos, tmp, timeout=cfg.timeout_s, max_bytes=cfg.max_bytes, retries=cfg.retries)
                for i, e in tqdm(entries, desc="collect: urls", unit="url")
            ]
        else:  # moving_mnist
            path = Path(cfg.path)
            if not path.exists():
                raise VQVideoError(f"collect.path {cfg.path!r} does not exist; give the path of mnist_test_seq.npy")
            try:
                arr = sources.load_moving_mnist(path)
            except ValueError as err:
                raise VQVideoError(f"collect.path {cfg.path!r}: {err}") from None
            n = min(cfg.num_videos, arr.shape[1])
            rows = [
                sources.collect_moving_mnist_sequence(i, arr[:, i], videos, tmp, cfg.fps, str(path))
                for i in tqdm(range(n), desc="collect: moving mnist", unit="video")
            ]
        manifest = pd.DataFrame([r.record() for r in rows], columns=MANIFEST_COLUMNS)
        ok = int((manifest.status == "ok").sum())
        if ok == 0:
            reasons = "; ".join(manifest.reason.unique()[:3])
            raise VQVideoError(f"collect found no usable video among {len(manifest)} inputs ({reasons}); check collect.source and collect.path")
        labels = [pd.DataFrame(r.labels) for r in rows if r.labels]
        labels_df = pd.concat(labels, ignore_index=True) if labels else pd.DataFrame(columns=LABEL_COLUMNS)
        write_csv(tmp / "manifest.csv", manifest)
        write_csv(tmp / "labels.csv", labels_df)
    log.info("collect: %d of %d videos ok -> %s", ok, len(manifest), out_dir)
    return manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("data/raw"))


def main(args: argparse.Namespace) -> None:
    from vqvideo.config import load_params

    params = load_params(args.params)
    collect(params.collect, args.out, workers=resolve_workers(0))
