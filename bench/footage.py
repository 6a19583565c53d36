"""Real footage end to end: the project's own films through every stage, and what comes out.

Films scikit-image's photographs as camera pans (`vqvideo footage`), then runs the pipeline's
stages on them in a scratch folder, one after the other, with the footage settings of the
README's "Your own footage" (RGB, frame_interval 3, three crop views per train clip, flips, a
32 x 32 code grid at 64 px), and prints each stage's time and the test split's figures beside
the references measured in the same run: the 10 -> 10 prediction against copying the last given
frame, and against the VQ-VAE's own floor (the true future frames, encoded and decoded).

    python bench/footage.py                       # 6 films of 240 frames, 64 px
    python bench/footage.py --size 128            # 128 px: 4 x 4 px codes (a 32 x 32 grid), 32 frames a batch
    python bench/footage.py --videos 1 --frames 360   # one long video, split by time
    python bench/footage.py --keep /tmp/run       # keep the folder (metrics, plots, clips)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Row, machine, print_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# The README's footage settings, as params overrides; --size 128 adds SIZE_128.
FOOTAGE = {
    "collect": {"source": "folder"},
    "sample": {"channels": 3, "frame_interval": 3, "augment": 3, "flip": True},
    "model": {"downsample": 2},
    "prior": {"patch": 4, "steps": 500},
}
SIZE_128 = {"sample": {"size": 128}, "model": {"downsample": 4}, "train": {"batch_size": 32}, "prior": {"patch": 4}}
QUICK = {"train": {"steps": 20, "eval_every": 10, "checkpoint_every": 10},
         "prior": {"steps": 10, "eval_every": 5, "checkpoint_every": 5, "track_clips": 20},
         "evaluate": {"samples": 2, "generation_clips": 2}, "generate": {"num_inputs": 1, "num_samples": 1}}

# Every stage of dvc.yaml but tune (the footage's VQ-VAE is not what this bench is about), run
# with its own command line, in the pipeline's order.
SKIP = {"tune"}


def params_for(videos: Path, size: int, quick: bool) -> dict:
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    for patch in (FOOTAGE, SIZE_128 if size == 128 else {}, QUICK if quick else {}):
        for section, values in patch.items():
            p[section].update(values)
    p["collect"]["path"] = str(videos)
    return p


def run_pipeline(root: Path, params: dict) -> dict[str, float]:
    """dvc.yaml's stages (without DVC) in `root`, one after the other; seconds per stage."""
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    steps = {name: shlex.split(st["cmd"]) for name, st in stages.items() if name not in SKIP}
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
    seconds = {}
    for i, (stage, cmd) in enumerate(steps.items()):
        print(f"[{i + 1}/{len(steps)}] {stage} ...", file=sys.stderr, flush=True)  # its own bar is captured
        t0 = time.perf_counter()
        exe = [sys.executable, *cmd[1:]] if cmd[0] == "python" else cmd
        res = subprocess.run(exe, cwd=root, capture_output=True, text=True, env=env)
        if res.returncode:
            raise SystemExit(f"{stage} failed:\n{res.stderr[-2000:]}")
        seconds[stage] = time.perf_counter() - t0
    return seconds


def rows(metrics: dict, seconds: dict[str, float], stats: dict) -> list[Row]:
    p, r, g = metrics["prediction"], metrics["recon"], metrics["generation"]
    total = sum(seconds.values())
    out = [Row(f"{stage} stage", s, "whole run", total, "s") for stage, s in seconds.items()]
    out += [
        Row("VQ-VAE test PSNR", r["psnr"], "27 dB (issue 16's bar)", 27.0, "dB", ">= 1.0"),
        Row("VQ-VAE test SSIM", r["ssim"], "0.85 (issue 16's bar)", 0.85, "", ">= 1.0"),
        Row("prior 10 -> 10 error", p["mse_frame"], "copy the last given frame", p["copy_last_mse_frame"],
            "sq. err/frame", "<= 0.8"),
        Row("VQ floor (true frames coded)", p["vq_floor_mse_frame"], "copy the last given frame",
            p["copy_last_mse_frame"], "sq. err/frame"),
        Row("prior 10th frame sharpness", p["sharpness_last"], "the real 10th frame", 1.0, "ratio"),
        Row("from 1 frame: mean error", g["mean_mse_frame"], "copy the given frame", g["copy_first_mse_frame"],
            "sq. err/frame"),
    ]
    print(f"clips: {stats['clips']} (split by {stats['split_by']}; {stats['views']['train']} of the train "
          f"clips are crop views)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--size", type=int, choices=(64, 128), default=64)
    ap.add_argument("--quick", action="store_true", help="a few steps only: checks the bench runs")
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = ap.parse_args()
    print(machine())
    root = args.keep or Path(tempfile.mkdtemp(prefix="vqvideo-footage-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        from vqvideo.data.footage import make_footage

        make_footage(root / "videos", args.videos, args.frames)
        seconds = run_pipeline(root, params_for(root / "videos", args.size, args.quick))
        metrics = json.loads((root / "reports/metrics.json").read_text())
        stats = json.loads((root / "data/frames/stats.json").read_text())
        print_table(f"Real footage: {args.videos} films of {args.frames} frames at {args.size} px", rows(metrics, seconds, stats))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
