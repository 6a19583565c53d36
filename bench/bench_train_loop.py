"""The real training loops: data path vs compute per VQ-VAE step, and the prior's step beside it.

Both figures come from the stages' own workers, `vqvideo.stages.train.train()` and
`vqvideo.stages.prior.train_prior()`, run for a few steps on default-sized Moving Digits data
(made by the real collect and sample stages in a temporary folder) with the default params.yaml
model sizes. A step's time is the gap between two consecutive per-step log rows (`on_log`, with
log_every=1): it holds everything the loop does per step (batch, forward, backward, clipping,
AdamW, scheduler, metrics). The first step (k-means initialisation) is left out.

data vs compute: the data path is the part of train()'s step_fn before the model: the batch's
indices from (seed, step), the gather of uint8 frames from memory and the uint8 -> float
conversion, timed on the same frame tensor with the same calls; compute is the rest of the
step. On a CPU the data path runs in the training thread, so its share of the step is the time
the cores spend away from the model: target data <= 0.05x compute.

The prior's step (prior_loss: batch of prior.batch_size clips, their layers rolled forward
through every frame after a random number of seen ones) is timed the same way; its training
cost is that step times prior.steps plus tracking the layers of prior.track_clips training clips
once (its targets), measured on a sample of them.

    OMP_NUM_THREADS=1 python bench/bench_train_loop.py [--quick]

`rows()` returns the table's rows, for bench/run_all.py. quick: 20 videos, a few steps, a
prior batch of 2: figures not meaningful, for checking that it runs.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, Row, default_frames, median_time, quiet, standalone  # noqa: E402
from vqvideo import distributed  # noqa: E402
from vqvideo.config import Params, load_params  # noqa: E402
from vqvideo.data.frames import FrameData, frames_of, to_float, to_tensor  # noqa: E402
from vqvideo.stages.prior import train_prior  # noqa: E402
from vqvideo.stages.train import train  # noqa: E402
from vqvideo.training import batch_indices  # noqa: E402
from vqvideo.utils import resolve_device, resolve_precision  # noqa: E402

TITLE = "training loops: data path vs compute, prior step vs VQ-VAE step"
NEVER = 10**9  # eval_every / checkpoint_every beyond the run: no validation between timed steps


class StepClock:
    """on_log callback: the time of each training log row; with log_every=1, per-step times."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}

    def __call__(self, metrics: dict, step: int) -> None:
        if any(k.startswith("train/") or k.startswith("prior/train_") for k in metrics):
            self.at[step] = time.perf_counter()

    def step_seconds(self) -> dict[int, float]:
        """{step index: seconds}; the row of step k is logged once step index k-1 has run."""
        return {k: self.at[k + 1] - self.at[k] for k in self.at if k + 1 in self.at}


def vqvae_steps(params: Params, data: FrameData, steps: int):  # noqa: ANN201
    """Run train() for `steps` steps; (median step seconds, the TrainResult)."""
    clock = StepClock()
    cfg = params.train.model_copy(update={"steps": steps, "log_every": 1, "eval_every": NEVER,
                                          "checkpoint_every": NEVER})
    with quiet():
        result = train(params.model, cfg, data, on_log=clock)
    times = [s for i, s in clock.step_seconds().items() if i >= 1]  # step 0: k-means init
    return statistics.median(times), result


def data_path_seconds(params: Params, data: FrameData, repeat: int) -> float:
    """Median time of train()'s step_fn up to the model: indices, gather, uint8 -> float."""
    cfg = params.train
    device = resolve_device(cfg.device)
    frames = to_tensor(frames_of(data.clips("train")))  # as train() holds them: uint8, in memory
    shard = distributed.current().shard(cfg.batch_size)
    n, step = len(frames), iter(range(10**9))

    def data_step() -> torch.Tensor:
        idx = torch.from_numpy(batch_indices(cfg.seed, next(step), cfg.batch_size, n)[shard])
        x = to_float(frames[idx], device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return x

    return median_time(data_step, warmup=3, repeat=repeat)


def prior_steps(params: Params, vq_result, data: FrameData, quick: bool) -> float:  # noqa: ANN001
    """Run train_prior() for a few steps; the median step in seconds."""
    update = {"steps": 4 if quick else 12, "log_every": 1, "eval_every": NEVER, "checkpoint_every": NEVER,
              "track_clips": 16 if quick else 64}
    if quick:
        update["batch_size"] = 2
    cfg = params.prior.model_copy(update=update)
    clock = StepClock()
    with quiet():
        train_prior(cfg, vq_result.model, vq_result.fingerprint, data, on_log=clock)
    return statistics.median(s for i, s in clock.step_seconds().items() if i >= 1)


def tracking_seconds(params: Params, vq_result, data: FrameData, clips: int) -> float:  # noqa: ANN001
    """Seconds to segment and track the layers of `clips` training clips (the prior's targets)."""
    from vqvideo.stages.prior import measure_tracks

    train_clips = data.clips("train")[:clips]
    t0 = time.perf_counter()
    with quiet():
        measure_tracks(vq_result.model, train_clips, params.prior, torch.device("cpu"))
    return time.perf_counter() - t0


def rows(quick: bool = False, *, params_path: Path = REPO / "params.yaml") -> list[Row]:
    params = load_params(params_path)
    data = FrameData.open(default_frames(quick, params_path))
    vq_step, vq_result = vqvae_steps(params, data, 5 if quick else 24)
    data_s = data_path_seconds(params, data, 20 if quick else 200)
    compute_s = vq_step - data_s
    prior_s = prior_steps(params, vq_result, data, quick)
    p = params.prior
    clips = 16 if quick else 128
    track_s = tracking_seconds(params, vq_result, data, clips) / clips * min(p.track_clips, len(data.clips("train")))
    t = params.sample.clip_length
    batch = 2 if quick else p.batch_size
    dtype = resolve_precision(params.train.precision, resolve_device(params.train.device))
    precision = "bf16 autocast" if dtype == torch.bfloat16 else "fp32"
    vq_label = f"VQ-VAE step, batch {params.train.batch_size} frames, {precision}"
    return [
        Row("data path per step: indices + gather + uint8->float (train()'s step_fn)", data_s * 1e3,
            "compute per step: fwd + bwd + clip + AdamW (real train() step - data)", compute_s * 1e3, "ms",
            "<= 0.05"),
        Row(f"prior step, batch {batch} clips x {t - 1} frames rolled forward", prior_s * 1e3, vq_label,
            vq_step * 1e3, "ms"),
        Row(f"prior training, {p.steps} (prior.steps) x step + tracking {p.track_clips} clips",
            p.steps * prior_s + track_s, f"VQ-VAE training steps, {params.train.steps} (train.steps) x step",
            params.train.steps * vq_step, "s"),
    ]


if __name__ == "__main__":
    standalone(TITLE, rows, __doc__.splitlines()[0], "small data, few steps: to check it runs")
