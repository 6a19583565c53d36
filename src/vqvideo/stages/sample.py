"""sample: decode videos, keep every n-th frame, crop + resize, cut clips, split by video."""

from __future__ import annotations

import argparse
import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from vqvideo.config import SampleConfig
from vqvideo.data.clips import SPLITS, assign_splits, clip_count, iter_clips
from vqvideo.data.video import VideoError
from vqvideo.errors import MissingInputError, VQVideoError
from vqvideo.io import staging_dir, write_csv, write_json
from vqvideo.utils import resolve_workers

log = logging.getLogger(__name__)


def _fill(job: tuple) -> tuple[int, int, str]:
    """Decode one video into its reserved rows of a split array; return (job id, clips, error)."""
    job_id, video, array_path, offset, expected, cfg = job
    out = np.load(array_path, mmap_mode="r+")
    n = 0
    try:
        for _, clip in iter_clips(
            video, interval=cfg.frame_interval, size=cfg.size, channels=cfg.channels,
            length=cfg.clip_length, stride=cfg.clip_stride,
        ):
            if n == expected:
                break
            out[offset + n] = clip
            n += 1
    except VideoError as err:
        return job_id, n, str(err)
    except Exception as err:  # noqa: BLE001 - a decoder crash must not lose the other videos
        return job_id, n, f"decode failed: {err}"
    out.flush()
    return job_id, n, ""


def _pixel_stats(arr: np.ndarray, chunk: int = 256) -> tuple[float, float]:
    s = sq = 0.0
    count = 0
    for i in range(0, len(arr), chunk):
        x = np.asarray(arr[i : i + chunk], dtype=np.float64) / 255.0
        s += x.sum()
        sq += np.square(x).sum()
        count += x.size
    if count == 0:
        return 0.0, 0.0
    mean = s / count
    return float(mean), float(np.sqrt(max(sq / count - mean**2, 0.0)))


def sample(cfg: SampleConfig, raw_dir: Path, out_dir: Path, workers: int = 1) -> dict:
    """Write train/val/test .npy arrays, index.csv, videos.csv and stats.json; return the stats."""
    raw_dir = Path(raw_dir)
    manifest_path = raw_dir / "manifest.csv"
    if not manifest_path.exists():
        raise MissingInputError(f"{manifest_path} not found; run `dvc repro collect` first")
    manifest = pd.read_csv(manifest_path, keep_default_na=False)
    videos = manifest[manifest.status == "ok"].reset_index(drop=True)
    if videos.empty:
        raise VQVideoError(f"{manifest_path} lists no usable video; fix the collect stage's inputs")

    counts = [clip_count(int(f), cfg.frame_interval, cfg.clip_length, cfg.clip_stride) for f in videos.frames]
    videos["clips"] = counts
    videos["status"] = ["ok" if c > 0 else "skipped" for c in counts]
    videos["reason"] = [
        "" if c > 0 else f"shorter than one clip: {int(f)} frames at interval {cfg.frame_interval} < clip_length {cfg.clip_length}"
        for c, f in zip(counts, videos.frames)
    ]
    for _, v in videos[videos.status == "skipped"].iterrows():
        log.warning("skipping %s: %s", v.path, v.reason)
    ok = videos.status == "ok"
    videos.loc[ok, "split"] = assign_splits(
        list(videos.path[ok]), list(videos.split[ok]), cfg.val_fraction, cfg.test_fraction, cfg.seed
    )
    usable = videos[ok]
    if usable.empty:
        raise VQVideoError(
            f"no video is long enough for one clip of {cfg.clip_length} frames at frame_interval "
            f"{cfg.frame_interval}; lower sample.clip_length or sample.frame_interval"
        )

    with staging_dir(out_dir) as tmp:
        jobs, index_rows = [], []
        shape = (cfg.clip_length, cfg.channels, cfg.size, cfg.size)
        for split in SPLITS:
            part = usable[usable.split == split]
            total = int(part.clips.sum())
            path = tmp / f"{split}.npy"
            np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(total, *shape)).flush()
            offset = 0
            for vid, v in part.iterrows():
                jobs.append((vid, str(raw_dir / v.path), str(path), offset, int(v.clips), cfg))
                for c in range(int(v.clips)):
                    index_rows.append((split, offset + c, v.path, c * cfg.clip_stride * cfg.frame_interval))
                offset += int(v.clips)

        results = {}
        desc = "sample: decode"
        if workers <= 1:
            for job in tqdm(jobs, desc=desc, unit="video"):
                jid, n, err = _fill(job)
                results[jid] = (n, err)
        else:
            with ProcessPoolExecutor(workers) as pool:
                for jid, n, err in tqdm(pool.map(_fill, jobs, chunksize=4), total=len(jobs), desc=desc, unit="video"):
                    results[jid] = (n, err)

        short = {jid: r for jid, r in results.items() if r[1] or r[0] != videos.clips[jid]}
        if short:  # a decoder disagreed with the manifest: drop that video's rows everywhere
            for jid, (n, err) in short.items():
                reason = err or f"decoded {n} clips, expected {videos.clips[jid]}"
                log.warning("skipping %s: %s", videos.path[jid], reason)
                videos.loc[jid, ["status", "reason"]] = ["skipped", reason]
            index_rows = _compact(tmp, videos, index_rows, short)

        index = pd.DataFrame(index_rows, columns=["split", "clip", "video", "start_frame"])
        index["frame_interval"] = cfg.frame_interval
        write_csv(tmp / "index.csv", index)
        write_csv(tmp / "videos.csv", videos[["path", "split", "frames", "clips", "status", "reason"]])

        train = np.load(tmp / "train.npy", mmap_mode="r")
        mean, std = _pixel_stats(train)
        stats = {
            "clips": {s: int((index.split == s).sum()) for s in SPLITS},
            "videos": {s: int(((videos.split == s) & (videos.status == "ok")).sum()) for s in SPLITS},
            "frames": {s: int((index.split == s).sum()) * cfg.clip_length for s in SPLITS},
            "skipped_videos": int((videos.status != "ok").sum()) + int((manifest.status != "ok").sum()),
            "pixel_mean": mean,
            "pixel_std": std,
            "clip_shape": list(shape),
            "config": cfg.model_dump(mode="json"),
        }
        stats["fingerprint"] = hashlib.sha256(
            pd.util.hash_pandas_object(index).values.tobytes() + str(stats).encode()
        ).hexdigest()[:16]
        write_json(tmp / "stats.json", stats)
    for s in SPLITS:
        if stats["clips"][s] == 0:
            log.warning("the %s split is empty", s)
    log.info("sample: clips %s -> %s", stats["clips"], out_dir)
    return stats


def _compact(tmp: Path, videos: pd.DataFrame, index_rows: list, bad: dict) -> list:
    bad_paths = {videos.path[j] for j in bad}
    kept_rows = []
    for split in SPLITS:
        rows = [r for r in index_rows if r[0] == split]
        keep = [r for r in rows if r[2] not in bad_paths]
        if len(keep) == len(rows):
            kept_rows += rows
            continue
        src = np.load(tmp / f"{split}.npy", mmap_mode="r")
        dst_path = tmp / f"{split}.compact.npy"
        dst = np.lib.format.open_memmap(dst_path, mode="w+", dtype=np.uint8, shape=(len(keep), *src.shape[1:]))
        for i, r in enumerate(keep):
            dst[i] = src[r[1]]
        dst.flush()
        del src, dst
        dst_path.replace(tmp / f"{split}.npy")
        kept_rows += [(r[0], i, r[2], r[3]) for i, r in enumerate(keep)]
    return kept_rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raw", type=Path, default=Path("data/raw"))
    p.add_argument("--out", type=Path, default=Path("data/frames"))


def main(args: argparse.Namespace) -> None:
    from vqvideo.config import load_params

    params = load_params(args.params)
    sample(params.sample, args.raw, args.out, workers=resolve_workers(params.sample.workers))
