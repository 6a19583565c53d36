"""The sample stage's speed against a bare OpenCV decode loop over the same files.

    OMP_NUM_THREADS=1 python bench/bench_sample.py            # a few minutes on 2 busy cores
    OMP_NUM_THREADS=1 python bench/bench_sample.py --quick    # tiny inputs, one round: to check it runs
    OMP_NUM_THREADS=1 python bench/bench_sample.py --only "mp4v, RGB"   # one input set

For each input set it collects the videos once, then times, interleaved so a neighbour's burst
hits all alike (median of --repeat runs), both wall clock and CPU time (user + system, workers
included), since on a shared machine the wall-clock rates swing with the neighbours' load:
  raw       `while cap.read()[0]` over every file, one process, FFmpeg's decoder held to one
            thread (as the stage holds it): one core's decode rate; also shown with FFmpeg's
            default threading for reference
  raw, 2    the same loop in 2 forked processes, the files dealt between them: how far decoding
            alone scales on this machine, the ceiling for 2 workers
  1 worker  the whole `sample()` call (decode, crop, resize, clip rows, index, stats) serially
  2 workers the same with sample.workers=2
Rates are source frames per second; targets: 1 worker >= 0.8x raw, 2 workers >= 1.6x raw. Two
more rows put the 2-worker rate beside the stage's own 1-worker rate (how the stage scales) and
beside the bare loop in 2 processes (how close it gets to what this machine's cores allow).
The inputs are long enough (a second or so of decoding per timed call) that the stage's fixed
costs (reading the manifest, writing the index) weigh as they do on real footage, not more.
`rows()` returns both tables' rows (wall clock, then CPU time), for bench/run_all.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported; bars cost time here

import cv2
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/media.py
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, print_table  # noqa: E402
from media import camera_pan, moving_shapes, write_video  # noqa: E402
from vqvideo.config import CollectConfig, SampleConfig  # noqa: E402
from vqvideo.stages.collect import collect  # noqa: E402
from vqvideo.stages.sample import sample  # noqa: E402

TITLE = "sample: the stage vs a bare OpenCV read loop"


def raw_decode(files: list[Path], threads: int = 1) -> int:
    """A bare read loop. threads=1 holds FFmpeg's decoder to one thread, as the stage does
    (its parallelism is one process per video): the reference is one core's decode rate."""
    n = 0
    for f in files:
        cap = cv2.VideoCapture(str(f), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, threads]) if threads else cv2.VideoCapture(str(f))
        while cap.read()[0]:
            n += 1
        cap.release()
    return n


def raw_decode_parallel(files: list[Path], processes: int = 2) -> int:
    """The bare read loop over `processes` forked processes, the files dealt round-robin: how
    far decoding alone scales on this machine (the ceiling for the stage's workers)."""
    parts = [files[i::processes] for i in range(processes)]
    with get_context("fork").Pool(processes) as pool:
        return sum(pool.map(raw_decode, parts))


def make_sets(root: Path, quick: bool, only: str = "") -> dict[str, tuple[Path, int]]:
    """{name: (raw dir, channels)} collected by the real collect stage; `only`: just the sets
    whose name contains it."""
    frames = 30 if quick else 300
    count = 2 if quick else 4  # two videos at least, so that 2 workers run in parallel
    sets = {}
    src = root / "src_640x360"
    if only in "640x360 mp4v, RGB" or only in "640x360 mp4v, gray":
        for i in range(count):  # mp4v decodes at 4400-6000 frames/s: 4 x 1200 frames, ~1 s a pass
            pan = camera_pan(frames=frames * (1 if quick else 4), width=640, height=360, speed=1, seed=i)
            write_video(src / f"pan{i}.mp4", pan)
            del pan
        collect(CollectConfig(source="folder", path=str(src)), root / "raw_640x360", workers=2)
        sets["640x360 mp4v, RGB"] = (root / "raw_640x360", 3)
        sets["640x360 mp4v, gray"] = (root / "raw_640x360", 1)
    # VP9, as phones and browsers write (the OpenCV wheel has no H.264 encoder): three times
    # mp4v's decode cost per frame, so the stage's own work weighs less; fewer frames
    # (4 x 400, ~0.8 s a pass), as encoding them costs 40 ms each
    src = root / "src_vp9"
    if only in "640x360 VP9, RGB":
        for i in range(count):
            pan = camera_pan(frames=frames if quick else frames * 4 // 3, width=640, height=360, speed=2, seed=i)
            write_video(src / f"pan{i}.mp4", pan, codec="vp09")
        collect(CollectConfig(source="folder", path=str(src)), root / "raw_vp9", workers=2)
        sets["640x360 VP9, RGB"] = (root / "raw_vp9", 3)
    src = root / "src_256"
    if only in "256x256 FFV1, RGB":
        for i in range(count):
            write_video(src / f"shapes{i}.avi", moving_shapes(frames=frames, width=256, height=256, seed=i))
        collect(CollectConfig(source="folder", path=str(src)), root / "raw_256", workers=2)
        sets["256x256 FFV1, RGB"] = (root / "raw_256", 3)
    n = 20 if quick else 500
    if only in f"Moving Digits {n}x40 64x64 FFV1, gray":
        collect(CollectConfig(num_videos=n, frames_per_video=40), root / "raw_digits", workers=2)
        sets[f"Moving Digits {n}x40 64x64 FFV1, gray"] = (root / "raw_digits", 1)
    return {k: v for k, v in sets.items() if only in k}


def timed(fn) -> tuple[float, float]:  # noqa: ANN001
    """(wall seconds, CPU seconds of this process and its finished children) of fn()."""
    c0, w0 = os.times(), time.perf_counter()
    fn()
    w, c1 = time.perf_counter() - w0, os.times()
    cpu = sum(getattr(c1, k) - getattr(c0, k) for k in ("user", "system", "children_user", "children_system"))
    return w, cpu


def rows(quick: bool = False, *, repeat: int = 5, work: Path | None = None, only: str = "") -> list[Row]:
    """Wall-clock rows (the targets), then CPU-time rows (unit frames/CPU-s); quick: one round."""
    if quick:
        repeat = 1
    root = Path(work or tempfile.mkdtemp(prefix="bench_sample_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        return _measure(make_sets(root, quick, only), root, repeat)
    finally:
        if work is None:
            shutil.rmtree(root, ignore_errors=True)


def _measure(sets: dict[str, tuple[Path, int]], root: Path, repeat: int) -> list[Row]:
    wall_rows: list[Row] = []
    cpu_rows: list[Row] = []
    for name, (raw, channels) in sets.items():
        manifest = pd.read_csv(raw / "manifest.csv")
        files = [raw / p for p in manifest.path[manifest.status == "ok"]]
        frames = int(manifest.frames[manifest.status == "ok"].sum())
        cfg = SampleConfig(clip_length=20, clip_stride=10, size=64, channels=channels)
        runs = iter(range(10**6))

        def stage(workers: int) -> None:
            # a fresh output folder each time, as under `dvc repro` (which deletes outs first):
            # deleting the previous run's output is not the stage's work
            sample(cfg, raw, root / f"frames{next(runs)}", workers=workers)  # noqa: B023

        fns = {"raw": partial(raw_decode, files), "raw-mt": partial(raw_decode, files, 0),
               "raw2": partial(raw_decode_parallel, files), "w1": partial(stage, 1), "w2": partial(stage, 2)}
        if raw_decode(files) != frames:  # also the warm-up: files in the page cache
            raise RuntimeError(f"{name}: the read loop saw another frame count than the manifest's {frames}")
        stage(1)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
        for _ in range(repeat):  # interleaved, so a neighbour's burst hits all alike
            for k, fn in fns.items():
                times[k].append(timed(fn))
        wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
        wall_rows.append(Row(f"{name}: raw, FFmpeg's default threads", frames / wall["raw-mt"], "raw decode",
                             frames / wall["raw"], "frames/s"))
        wall_rows.append(Row(f"{name}: raw, 2 processes (this machine's ceiling for 2 workers)", frames / wall["raw2"],
                             "raw decode", frames / wall["raw"], "frames/s"))
        # what both cores busy does to each frame's cost: below 1x, the two processes slow each
        # other down (shared caches, memory, a shared physical core), whatever the code does
        cpu_rows.append(Row(f"{name}: raw, 2 processes, CPU time", frames / cpu["raw2"], "raw decode, CPU time",
                            frames / cpu["raw"], "frames/CPU-s"))
        for k, target in (("w1", ">= 0.8"), ("w2", ">= 1.6")):
            label = f"{name}: sample, {k[1]} worker{'s' if k == 'w2' else ''}"
            wall_rows.append(Row(label, frames / wall[k], "raw decode", frames / wall["raw"], "frames/s", target))
            cpu_rows.append(Row(f"{label}, CPU time", frames / cpu[k], "raw decode, CPU time", frames / cpu["raw"],
                                "frames/CPU-s", ">= 0.8"))
        wall_rows.append(Row(f"{name}: sample, 2 workers, against its own 1 worker", frames / wall["w2"],
                             "sample, 1 worker", frames / wall["w1"], "frames/s"))
        wall_rows.append(Row(f"{name}: sample, 2 workers, against the raw loop in 2 processes", frames / wall["w2"],
                             "raw, 2 processes", frames / wall["raw2"], "frames/s"))
        for old in root.glob("frames*"):
            shutil.rmtree(old)
    return wall_rows + cpu_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default="", metavar="TEXT",
                    help='just the input sets whose name contains TEXT, e.g. "mp4v, RGB"')
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    load0 = os.getloadavg()
    print(f"# bench_sample: {os.cpu_count()} CPUs, load average {load0[0]:.2f} (1 min) before, "
          f"OpenCV {cv2.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    table = rows(args.quick, repeat=args.repeat, work=args.dir, only=args.only)
    load1 = os.getloadavg()
    print_table("wall clock: the targets (sample stage vs a bare OpenCV read loop, same files, same run)",
                [r for r in table if r.unit == "frames/s"])
    print_table("CPU time: work per frame, steady under contention (2 workers: both processes)",
                [r for r in table if r.unit == "frames/CPU-s"])
    print(f"\nload average (1 min): {load0[0]:.2f} before, {load1[0]:.2f} after, on {os.cpu_count()} CPUs "
          "(above the CPU count, other processes competed for the cores and wall-clock ratios are noisy)")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
