"""collect: gather videos into data/raw/ with a manifest (and motion labels for synthetic data)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from vqvideo.config import CollectConfig
from vqvideo.data import sources
from vqvideo.data.synthetic import DigitBank, load_digit_bank, moving_digits_video
from vqvideo.data.video import LOSSLESS, write_video
from vqvideo.errors import VQVideoError
from vqvideo.io import sha256_file, staging_dir, write_csv
from vqvideo.utils import pool_context, resolve_workers

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "path", "source", "origin", "sha256", "frames", "fps", "width", "height", "status", "reason", "split",
]
# One row per digit per frame; `video` is the manifest's path, the same key index.csv uses.
LABEL_COLUMNS = ["video", "frame", "digit", "label", "digit_image", "x", "y", "vx", "vy"]


# ---------------------------------------------------------------- one input each (run in workers)


_BANKS: dict[int, DigitBank] = {}


def _bank(size: int) -> DigitBank:
    if size not in _BANKS:  # once per process
        _BANKS[size] = load_digit_bank(size)
    return _BANKS[size]


def _synthetic_one(i: int, cfg: CollectConfig, videos_dir: Path, rel_root: Path) -> sources.ManifestRow:
    n_test = int(round(cfg.num_videos * cfg.test_fraction))
    heldout = i >= cfg.num_videos - n_test
    rng = np.random.default_rng([cfg.seed, i])  # one stream per video: parallel == serial
    video, labels = moving_digits_video(
        rng, _bank(cfg.digit_size), frames=cfg.frames_per_video, num_digits=cfg.digits_per_video,
        canvas=cfg.canvas_size, speed=cfg.speed, heldout=heldout,
    )
    dest = write_video(videos_dir / f"{i:05d}_digits{LOSSLESS[1]}", video, cfg.fps)
    rel = dest.relative_to(rel_root).as_posix()
    labels.insert(0, "video", rel)
    return sources.ManifestRow(
        path=rel, source="synthetic", origin=f"moving_digits:seed={cfg.seed}:{i}",
        sha256=sha256_file(dest), frames=len(video), fps=cfg.fps, width=cfg.canvas_size,
        height=cfg.canvas_size, split="test" if heldout else "", labels=labels.to_dict("list"),
    )


def _folder_one(item: tuple[int, Path], videos_dir: Path, rel_root: Path) -> sources.ManifestRow:
    return sources.collect_file(item[0], item[1], videos_dir, rel_root)


def _mmnist_one(i: int, npy: str, videos_dir: Path, rel_root: Path, fps: float) -> sources.ManifestRow:
    arr = sources.load_moving_mnist(npy)  # memory-mapped: each worker reads only its sequences
    return sources.collect_moving_mnist_sequence(i, arr[:, i], videos_dir, rel_root, fps, npy)


def _url_one(item: tuple[int, str | dict], cfg: CollectConfig, videos_dir: Path, rel_root: Path) -> sources.ManifestRow:
    return sources.collect_url(
        item[0], item[1], videos_dir, rel_root, timeout=cfg.timeout_s, max_bytes=cfg.max_bytes,
        retries=cfg.retries,
    )


def _map(fn: Callable, items: Sequence, workers: int, desc: str, unit: str = "video") -> list:
    """`[fn(x) for x in items]`, in order, over `workers` processes, with a progress bar."""
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in tqdm(items, desc=desc, unit=unit)]
    chunk = max(1, min(16, len(items) // (workers * 8)))
    with ProcessPoolExecutor(min(workers, len(items)), mp_context=pool_context()) as pool:
        return list(tqdm(pool.map(fn, items, chunksize=chunk), total=len(items), desc=desc, unit=unit))


# ---------------------------------------------------------------- the stage


def gather(cfg: CollectConfig, videos: Path, root: Path, workers: int) -> list[sources.ManifestRow]:
    """One manifest row per input of `cfg.source`, videos written under `videos`."""
    if cfg.source == "synthetic":
        fn = partial(_synthetic_one, cfg=cfg, videos_dir=videos, rel_root=root)
        return _map(fn, list(range(cfg.num_videos)), workers, "collect: moving digits")
    if cfg.source == "folder":
        files = sources.list_folder(cfg.path)
        if not files:
            raise VQVideoError(
                f"collect.path {cfg.path!r} matches no video files; point it at a folder of videos "
                f"(extensions: {', '.join(sorted(sources.VIDEO_EXTENSIONS)[:8])}, ...) or a glob such as '/data/*.mov'"
            )
        if len(files) > cfg.num_videos:
            log.info("collect: taking the first %d of %d files (collect.num_videos)", cfg.num_videos, len(files))
        fn = partial(_folder_one, videos_dir=videos, rel_root=root)
        return _map(fn, list(enumerate(files[: cfg.num_videos])), workers, "collect: folder")
    if cfg.source == "urls":
        # Downloads wait on the network, not the CPU: a few at a time even on 2 cores.
        fn = partial(_url_one, cfg=cfg, videos_dir=videos, rel_root=root)
        items = list(enumerate(cfg.urls[: cfg.num_videos]))
        return _map(fn, items, min(max(workers, 4), 8), "collect: urls", unit="url")
    # moving_mnist
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise VQVideoError(f"collect.path {cfg.path!r} is not a file; give the path of mnist_test_seq.npy")
    try:
        arr = sources.load_moving_mnist(path)
    except ValueError as err:
        raise VQVideoError(f"collect.path {cfg.path!r}: {err}") from None
    n = min(cfg.num_videos, arr.shape[1])
    fn = partial(_mmnist_one, npy=str(path), videos_dir=videos, rel_root=root, fps=cfg.fps)
    return _map(fn, list(range(n)), workers, "collect: moving mnist")


def skip_duplicates(rows: list[sources.ManifestRow], root: Path) -> None:
    """A second copy of the same bytes could put one video in train and test: keep the first."""
    seen: dict[str, str] = {}
    for r in rows:
        if r.status != "ok" or not r.sha256:
            continue
        if r.sha256 in seen:
            (root / r.path).unlink(missing_ok=True)
            sources.skip(r, f"duplicate of {seen[r.sha256]} (same sha256)")
            r.path, r.labels = r.origin, {}
        else:
            seen[r.sha256] = r.path


def collect(cfg: CollectConfig, out_dir: Path, workers: int = 1) -> pd.DataFrame:
    """Fill `out_dir` with videos/, manifest.csv and labels.csv; return the manifest."""
    out_dir = Path(out_dir)
    with staging_dir(out_dir) as tmp:
        videos = tmp / "videos"
        videos.mkdir()
        rows = gather(cfg, videos, tmp, workers)
        skip_duplicates(rows, tmp)
        for r in rows:
            if r.status != "ok":
                log.warning("collect: skipping %s: %s", r.origin, r.reason)
        manifest = pd.DataFrame([r.record() for r in rows], columns=MANIFEST_COLUMNS)
        ok = int((manifest.status == "ok").sum())
        if ok == 0:
            reasons = "; ".join(f"{o}: {r}" for o, r in zip(manifest.origin[:3], manifest.reason[:3]))
            more = f" and {len(manifest) - 3} more" if len(manifest) > 3 else ""
            raise VQVideoError(
                f"collect found no usable video among {len(manifest)} inputs ({reasons}{more}); "
                "check collect.source and collect.path / collect.urls"
            )
        labels = [pd.DataFrame(r.labels) for r in rows if r.labels]
        labels_df = pd.concat(labels, ignore_index=True) if labels else pd.DataFrame(columns=LABEL_COLUMNS)
        write_csv(tmp / "manifest.csv", manifest)
        write_csv(tmp / "labels.csv", labels_df[LABEL_COLUMNS])
    log.info("collect: %d of %d inputs ok -> %s", ok, len(manifest), out_dir)
    return manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("data/raw"))


def main(args: argparse.Namespace) -> None:
    from vqvideo.config import load_params

    params = load_params(args.params)
    collect(params.collect, args.out, workers=resolve_workers(params.collect.workers))
