"""Peak memory: `sample` against video length, and the default training run against 2 GiB.

Each figure is the peak resident set (VmHWM) of a fresh child process, so OpenCV's and torch's
native buffers count (tracemalloc cannot see them) and nothing of this process leaks in. The
children run at the same time: a process's own peak does not depend on its neighbours.

  sample, 10x longer video  the sample stage's worker (`sample()`, default sample params in RGB,
                            one worker so the decode runs in the measured process) over one
                            640x360 camera-pan video of 10x the frames of a short one. Target:
                            at most 1.2x the short video's peak (decoding streams).
  control                   the same long video read whole into memory (`read_video`), against
                            the same short-video peak: shows that the measurement can see memory
                            that grows with the video (informative, no target).
  default training run      the train stage's worker (`train()`) with the default params.yaml
                            for a few dozen steps (a validation and a checkpoint write included)
                            on default-sized Moving Digits data made by the real collect and
                            sample stages. Target: at most 1.0x a 2 GiB budget.

    OMP_NUM_THREADS=1 python bench/bench_memory.py [--quick]

`rows()` returns the table's rows, for bench/run_all.py. quick: shorter videos (20 vs 200
frames), 20 Moving Digits videos and 3 training steps.
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/media.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, Row, child_peaks_mib, default_frames, quiet, standalone, work_dir  # noqa: E402
from media import camera_pan, write_video  # noqa: E402
from vqvideo.config import CollectConfig  # noqa: E402
from vqvideo.stages.collect import collect  # noqa: E402

TITLE = "peak memory: sample vs video length, default training run vs 2 GiB"
BUDGET_MIB = 2048
LENGTH_FACTOR = 10

SAMPLE_CHILD = textwrap.dedent("""
    import sys
    from vqvideo.config import load_params
    from vqvideo.stages.sample import sample  # in both: the same imports, the same baseline
    raw, out, how, params = sys.argv[1:5]
    if how == "sample":
        cfg = load_params(params).sample.model_copy(
            update={"channels": 3, "val_fraction": 0.0, "test_fraction": 0.0, "workers": 1})
        sample(cfg, raw, out, workers=1)  # one worker: the decode runs in this process
    else:  # the naive way, as a control: every frame in memory at once
        import glob
        from vqvideo.data.video import read_video
        frames = read_video(glob.glob(raw + "/videos/*")[0])
""")

TRAIN_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from vqvideo.config import load_params
    from vqvideo.data.frames import FrameData
    from vqvideo.stages.train import train
    params_path, frames, steps, checkpoint = sys.argv[1:5]
    params = load_params(params_path)
    cfg = params.train.model_copy(update={"steps": int(steps)})  # logs, validates, checkpoints at the end
    train(params.model, cfg, FrameData.open(frames), checkpoint=Path(checkpoint))
""")


def sample_jobs(quick: bool, params_path: Path, root: Path) -> dict[str, tuple[str, list]]:
    """Child jobs: sample a short and a 10x longer video, and read the long one whole."""
    short = 20 if quick else 40
    jobs = {}
    for name, frames in (("short", short), ("long", short * LENGTH_FACTOR)):
        d = root / name
        write_video(d / "in" / "pan.mp4", camera_pan(frames=frames, width=640, height=360, speed=1))
        with quiet():
            collect(CollectConfig(source="folder", path=str(d / "in")), d / "raw")
        jobs[name] = (SAMPLE_CHILD, [d / "raw", d / "frames_sample", "sample", params_path])
    jobs["naive"] = (SAMPLE_CHILD, [root / "long" / "raw", root / "long" / "frames_naive", "naive", params_path])
    return jobs


def train_steps(quick: bool) -> int:
    return 3 if quick else 40


def rows(quick: bool = False, *, params_path: Path = REPO / "params.yaml") -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix="memory_", dir=work_dir()))
    jobs = sample_jobs(quick, params_path, root)
    steps = train_steps(quick)
    frames = default_frames(quick, params_path)  # default-sized Moving Digits, by collect + sample
    jobs["train"] = (TRAIN_CHILD, [params_path, frames, steps, root / "checkpoints" / "last.pt"])
    peaks = child_peaks_mib(jobs)
    short = 20 if quick else 40
    long = short * LENGTH_FACTOR
    ref = f"sample, {short}-frame 640x360 video"
    return [
        Row(f"sample, {long}-frame 640x360 video ({LENGTH_FACTOR}x longer)", peaks["long"], ref, peaks["short"],
            "MiB", "<= 1.2"),
        Row(f"control: the {long}-frame video read whole (read_video)", peaks["naive"], ref, peaks["short"], "MiB"),
        Row(f"default training run, train() worker, {steps} steps", peaks["train"], "budget: 2 GiB", BUDGET_MIB,
            "MiB", "<= 1.0"),
    ]


if __name__ == "__main__":
    standalone(TITLE, rows, __doc__.splitlines()[0], "shorter videos, less data, fewer steps")
