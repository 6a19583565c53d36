"""sample: decode videos, keep every n-th frame, crop + resize, cut clips, split by video."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from vqvideo.config import SampleConfig
from vqvideo.data.clips import (
    ClipPlan,
    NpyRows,
    PixelSums,
    create_array,
    data_offset,
    draw_views,
    sample_video,
)
from vqvideo.data.splits import SPLITS, TIME_SPLIT_BELOW, assign_splits, time_segments
from vqvideo.data.video import VideoError
from vqvideo.errors import MissingInputError, VQVideoError
from vqvideo.io import staging_dir
from vqvideo.utils import pool_context, resolve_workers

log = logging.getLogger(__name__)

VIDEO_COLUMNS = ["path", "source", "split", "frames", "clips", "status", "skipped_by", "reason"]
# view 0: the plain centre crop; 1..augment: a random crop (crop_* relative, see clips.View)
INDEX_COLUMNS = ["split", "clip", "video", "start_frame", "end_frame", "view", "crop_scale", "crop_x",
                 "crop_y", "flip", "frame_interval"]


def plan_of(cfg: SampleConfig) -> ClipPlan:
    return ClipPlan(cfg.frame_interval, cfg.clip_length, cfg.clip_stride, cfg.size, cfg.channels)


def _run(job: tuple) -> tuple[int, PixelSums | None, str]:
    """Decode one video into its reserved rows; return (job id, pixel sums, error)."""
    job_id, video, array_path, offset, first_row, first_clip, n_clips, views, plan, threads = job
    rows = NpyRows(array_path, offset, first_row, plan.clip_shape)
    try:
        return job_id, sample_video(video, plan, n_clips, rows, threads=threads, first_clip=first_clip,
                                    views=views), ""
    except VideoError as err:
        return job_id, None, str(err)
    except Exception as err:  # noqa: BLE001 - a decoder crash must not lose the other videos
        return job_id, None, f"decode failed: {type(err).__name__}: {err}"
    finally:
        rows.close()


def _run_chunk(jobs: list[tuple]) -> list[tuple[int, PixelSums | None, str]]:
    """Several videos in one task: one hand-off per chunk instead of one per (tiny) video."""
    return [_run(job) for job in jobs]


def video_table(manifest: pd.DataFrame, plan: ClipPlan) -> pd.DataFrame:
    """Every manifest row with its clip count; collect's skips and too-short videos marked."""
    v = pd.DataFrame({
        "path": manifest.path.astype(str),
        "source": manifest.source.astype(str),
        "split": manifest.split.astype(str) if "split" in manifest else "",
        "frames": pd.to_numeric(manifest.frames, errors="coerce").fillna(0).astype(int),
        "status": manifest.status.astype(str),
        "reason": manifest.reason.astype(str),
    })
    v["skipped_by"] = np.where(v.status == "ok", "", "collect")
    v["clips"] = [plan.clips(f) if s == "ok" else 0 for f, s in zip(v.frames, v.status)]
    short = (v.status == "ok") & (v.clips == 0)
    v.loc[short, "reason"] = [
        f"shorter than one clip: {f} frames keep {-(-f // plan.interval)} at frame_interval "
        f"{plan.interval}, fewer than clip_length {plan.length}"
        for f in v.frames[short]
    ]
    v.loc[short, ["status", "skipped_by"]] = ["skipped", "sample"]
    for p, r in zip(v.path[short], v.reason[short]):
        log.warning("sample: skipping %s: %s", p, r)
    return v


def sample(cfg: SampleConfig, raw_dir: Path, out_dir: Path, workers: int = 1) -> dict:
    """Write train/val/test .npy arrays, index.csv, videos.csv and stats.json; return the stats."""
    raw_dir = Path(raw_dir)
    manifest_path = raw_dir / "manifest.csv"
    if not manifest_path.exists():
        raise MissingInputError(f"{manifest_path} not found; run `dvc repro collect` first")
    manifest = pd.read_csv(manifest_path, keep_default_na=False, dtype={"path": str, "split": str})
    if not (manifest.status == "ok").any():
        raise VQVideoError(f"{manifest_path} lists no usable video; fix the collect stage's inputs")
    plan = plan_of(cfg)
    videos = video_table(manifest, plan)
    ok = videos.status == "ok"
    if not ok.any():
        raise VQVideoError(
            f"no video is long enough for one clip of {cfg.clip_length} frames at frame_interval "
            f"{cfg.frame_interval}; lower sample.clip_length or sample.frame_interval"
        )
    videos["split"] = np.where(ok, videos.split, "")
    usable = [int(i) for i in np.flatnonzero(ok)]
    paths, clips, frames = list(videos.path), list(videos.clips), list(videos.frames)
    hinted = any(videos.split[i] in SPLITS for i in usable)  # the source chose (synthetic test digits)
    by_time = cfg.split == "time" or (cfg.split == "auto" and len(usable) < TIME_SPLIT_BELOW and not hinted)
    if by_time:
        segments = {i: time_segments(clips[i], plan, cfg.val_fraction, cfg.test_fraction) for i in usable}
        videos.loc[ok, "split"] = "time"
        log.info("sample: %d usable video(s)%s: each is split by time into %s", len(usable),
                 f" (fewer than {TIME_SPLIT_BELOW})" if cfg.split == "auto" else "",
                 "; ".join(f"{paths[i]}: " + ", ".join(f"{s} clips {f}-{f + n - 1}" for s, f, n in segments[i])
                           for i in usable))
    else:
        videos.loc[ok, "split"] = assign_splits(
            list(videos.path[ok]), list(videos.split[ok]), cfg.val_fraction, cfg.test_fraction, cfg.seed
        )
        segments = {i: [(videos.split[i], 0, clips[i])] for i in usable}
    if not any(s == "train" and n for i in usable for s, _, n in segments[i]):
        raise VQVideoError(
            "no video is left for the train split (every usable video is held out for test); "
            "collect more videos or lower collect.test_fraction"
        )

    with staging_dir(out_dir) as tmp:
        jobs, index_rows, job_video, job_split, job_frames = [], [], {}, {}, {}
        for split in SPLITS:
            parts = [(i, f, n) for i in usable for s, f, n in segments[i] if s == split and n]
            n_views = cfg.augment if split == "train" else 0
            array = tmp / f"{split}.npy"
            create_array(array, sum(n * (1 + n_views) for _, _, n in parts), plan.clip_shape)
            offset, row = data_offset(array), 0
            for i, first, n in parts:
                views = [draw_views(np.random.default_rng([cfg.seed, i, first + j]), n_views, cfg.crop_scale, cfg.flip)
                         for j in range(n)] if n_views else None
                job = len(jobs)
                job_video[job], job_split[job] = i, split
                job_frames[job] = min(frames[i], ((first + n - 1) * plan.stride + plan.length) * plan.interval)
                jobs.append((job, str(raw_dir / paths[i]), str(array), offset, row, first, n, views, plan))
                span = [(plan.start_frame(first + j), plan.start_frame(first + j) + (plan.length - 1) * plan.interval)
                        for j in range(n)]
                for j, (start, end) in enumerate(span):
                    index_rows.append((split, row + j, paths[i], start, end, 0, 1.0, 0.5, 0.5, False))
                for j, (start, end) in enumerate(span):
                    for v, view in enumerate(views[j] if views else []):
                        index_rows.append((split, row + n + j * n_views + v, paths[i], start, end, v + 1,
                                           round(view.scale, 4), round(view.x, 4), round(view.y, 4), view.flip))
                row += n * (1 + n_views)

        sums, failed = _decode_all(jobs, job_frames, job_split, plan.channels, workers)
        failed = {job_video[j]: reason for j, reason in failed.items()}
        if failed:  # a decoder disagreed with the manifest: drop that video everywhere
            for vid, reason in failed.items():
                log.warning("sample: skipping %s: %s", paths[vid], reason)
                videos.loc[vid, ["status", "skipped_by", "reason"]] = ["skipped", "sample", reason]
            index_rows = _compact(tmp, plan, index_rows, {paths[j] for j in failed})

        if not any(r[0] == "train" for r in index_rows):  # raised inside: nothing is written
            raise VQVideoError("every train video failed to decode; see the warnings above")
        index = pd.DataFrame(index_rows, columns=INDEX_COLUMNS[:-1])
        index["frame_interval"] = cfg.frame_interval
        videos.loc[videos.status != "ok", "clips"] = 0
        stats = _stats(cfg, plan, index, videos, sums, "time" if by_time else "video")
        # Plain writes: the staging folder as a whole is swapped in atomically, so the files in
        # it need no atomic rename (nor an fsync each) of their own.
        index.to_csv(tmp / "index.csv", index=False)
        videos[VIDEO_COLUMNS].to_csv(tmp / "videos.csv", index=False)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    for s in SPLITS:
        if stats["clips"][s] == 0:
            log.warning("sample: the %s split is empty (too few videos for sample.%s_fraction)", s,
                        "test" if s == "test" else "val")
    log.info("sample: clips %s from %d videos -> %s", stats["clips"], int((videos.status == "ok").sum()), out_dir)
    return stats


def _decode_all(
    jobs: list[tuple], frames: dict[int, int], split_of: dict[int, str], channels: int, workers: int
) -> tuple[dict[str, PixelSums], dict[int, str]]:
    """Run every job (serially or over `workers` processes); ({split: sums}, {job: error})."""
    # Longest first: with few long videos the last one to start is short, so workers finish together.
    jobs = sorted(jobs, key=lambda j: -frames[j[0]])
    parallel = workers > 1 and len(jobs) > 1
    # Parallelism is one process per video, so each decoder keeps to one thread: FFmpeg's own
    # threads would fight the other workers for the cores, and cost ~10% CPU in hand-offs.
    jobs = [(*j, 1) for j in jobs]
    sums = {s: PixelSums(channels) for s in SPLITS}
    failed: dict[int, str] = {}
    bar = tqdm(total=sum(frames.values()), desc="sample: decode", unit="frame", unit_scale=True)

    results: dict[int, PixelSums] = {}

    def done(result: tuple) -> None:
        vid, video_sums, err = result
        if err:
            failed[vid] = err
        else:
            results[vid] = video_sums
        bar.update(frames[vid])

    with bar:
        if not parallel:
            for job in jobs:
                done(_run(job))
        else:
            # Jobs dealt round-robin (longest first) into a few chunks per worker: 500 short
            # videos cost 500 hand-offs between processes otherwise, a fifth of the work.
            n_chunks = min(len(jobs), 8 * workers)
            chunks = [jobs[i::n_chunks] for i in range(n_chunks)]
            with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=pool_context()) as pool:
                for fut in as_completed([pool.submit(_run_chunk, chunk) for chunk in chunks]):
                    for result in fut.result():
                        done(result)
    for vid in sorted(results):  # a fixed order, whatever order the workers finished in
        sums[split_of[vid]] += results[vid]
    return sums, failed


def _stats(cfg: SampleConfig, plan: ClipPlan, index: pd.DataFrame, videos: pd.DataFrame,
           sums: dict[str, PixelSums], split_by: str) -> dict:
    mean, std = sums["train"].moments()
    per_channel = sums["train"].channel_moments()
    ok = videos.status == "ok"
    n_clips = index.split.value_counts()
    stats = {
        "clips": {s: int(n_clips.get(s, 0)) for s in SPLITS},
        "split_by": split_by,  # video: whole videos per split | time: segments of each video
        "videos": {s: int(index.video[index.split == s].nunique()) for s in SPLITS},
        "views": {s: int(((index.split == s) & (index.view > 0)).sum()) for s in SPLITS},
        "frames": {s: int(n_clips.get(s, 0)) * cfg.clip_length for s in SPLITS},
        "skipped_videos": int((~ok).sum()),
        # pixels in [0, 1] over every frame of every train clip (what a training loop sees)
        "pixel_mean": mean,
        "pixel_std": std,
        "channel_mean": [m for m, _ in per_channel],
        "channel_std": [s for _, s in per_channel],
        "pixels": {s: dict(zip(("mean", "std"), sums[s].moments())) for s in SPLITS},
        "clip_shape": list(plan.clip_shape),
        # `workers` changes how fast, never what: leaving it out keeps parallel == serial output
        "config": cfg.model_dump(mode="json", exclude={"workers"}),
    }
    stats["fingerprint"] = hashlib.sha256(
        pd.util.hash_pandas_object(index, index=False).values.tobytes() + repr(stats).encode()
    ).hexdigest()[:16]
    return stats


def _compact(tmp: Path, plan: ClipPlan, index_rows: list, bad_paths: set[str]) -> list:
    """Rewrite each split's array without the rows of `bad_paths`; return the renumbered index."""
    kept_rows = []
    for split in SPLITS:
        rows = [r for r in index_rows if r[0] == split]
        keep = [r for r in rows if r[2] not in bad_paths]
        if len(keep) == len(rows):
            kept_rows += rows
            continue
        src = np.load(tmp / f"{split}.npy", mmap_mode="r")
        dst_path = tmp / f"{split}.compact.npy"
        create_array(dst_path, len(keep), plan.clip_shape)
        dst = np.load(dst_path, mmap_mode="r+")
        for i, r in enumerate(keep):
            dst[i] = src[r[1]]
        dst.flush()
        del src, dst
        dst_path.replace(tmp / f"{split}.npy")
        kept_rows += [(r[0], i, *r[2:]) for i, r in enumerate(keep)]
    return kept_rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raw", type=Path, default=Path("data/raw"))
    p.add_argument("--out", type=Path, default=Path("data/frames"))


def main(args: argparse.Namespace) -> None:
    from vqvideo.config import load_params

    params = load_params(args.params)
    sample(params.sample, args.raw, args.out, workers=resolve_workers(params.sample.workers))
