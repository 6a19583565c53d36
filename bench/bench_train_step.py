"""One VQ-VAE training step: achieved FLOP/s against a large matmul, precision, data vs compute.

The step is the train stage's: gather a batch of uint8 frames by (seed, step), convert to float
on the device, forward under the run's precision, reconstruction + VQ loss, backward, gradient
clipping, AdamW. FLOPs are counted by torch.utils.flop_counter over forward and backward; the
reference is a 2048x2048 fp32 matmul timed in the same run (target: the fp32 step reaches at
least 0.3 of its FLOP/s). Also printed: bf16 autocast + channels-last against fp32, and the step
split into data (batch gather + uint8 -> float) and compute.

    OMP_NUM_THREADS=1 python bench/bench_train_step.py [--repeat 5] [--arch resnet] [--quick]

`rows()` returns the table's rows, for bench/run_all.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Row, interleaved_times, machine, matmul_flops, print_table  # noqa: E402
from vqvideo.config import ModelConfig  # noqa: E402
from vqvideo.data.frames import to_float  # noqa: E402
from vqvideo.data.synthetic import load_digit_bank, moving_digits_video  # noqa: E402
from vqvideo.models.vqvae import VQVAE  # noqa: E402
from vqvideo.training import batch_indices  # noqa: E402

BATCH, SIZE = 64, 64  # the default train.batch_size and sample.size
TITLE = "train step: achieved FLOP/s vs a large matmul"


def moving_digits_frames(videos: int = 40, frames: int = 40) -> torch.Tensor:
    """(videos * frames, 1, 64, 64) uint8 Moving Digits frames, as the sample stage stores them."""
    rng, bank = np.random.default_rng(0), load_digit_bank()
    clips = [moving_digits_video(rng, bank, frames=frames, num_digits=2, canvas=SIZE, speed=3.6,
                                 heldout=False)[0] for _ in range(videos)]
    return torch.from_numpy(np.concatenate(clips)[:, None].copy())


class Step:
    """The train stage's step, with data and compute callable apart so each can be timed."""

    def __init__(self, cfg: ModelConfig, frames: torch.Tensor, *, bf16: bool, channels_last: bool):
        torch.manual_seed(0)
        self.frames, self.bf16, self.cl = frames, bf16, channels_last
        self.model = VQVAE(cfg, channels=1)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=2e-3, betas=(0.9, 0.99))
        self.i = 0
        self.data()  # the first batch k-means-initialises the codebook, outside any timing
        self.forward_backward(self.data())

    def data(self) -> torch.Tensor:
        idx = torch.from_numpy(batch_indices(0, self.i, BATCH, len(self.frames)))
        self.i += 1
        x = to_float(self.frames[idx], torch.device("cpu"))  # channels-last, as the stage does
        return x if self.cl else x.contiguous()

    def forward_backward(self, x: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(x)
        loss = F.mse_loss(out.recon.float(), x) + out.vq.loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()

    def __call__(self) -> None:
        self.forward_backward(self.data())

    def flops(self) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            self.forward_backward(self.data())
        return counter.get_total_flops()


def rows(quick: bool = False, *, repeat: int = 5, arch: str = "resnet", verbose: bool = False) -> list[Row]:
    """The step in fp32, fp32 channels-last and bf16 channels-last, interleaved; quick: one round."""
    cfg = ModelConfig(arch=arch)  # the default params' model
    frames = moving_digits_frames(videos=4 if quick else 40)
    if quick:
        repeat = 1
    steps = {
        "fp32": Step(cfg, frames, bf16=False, channels_last=False),
        "fp32_cl": Step(cfg, frames, bf16=False, channels_last=True),
        "bf16_cl": Step(cfg, frames, bf16=True, channels_last=True),
    }
    flops = steps["fp32"].flops()
    t = interleaved_times(steps, warmup=0 if quick else 1, repeat=repeat)
    fastest = min(t, key=t.get)
    data_t = interleaved_times({"data": steps[fastest].data}, warmup=2, repeat=20)["data"]
    peak = matmul_flops(2048, torch.float32, repeat=2 if quick else 5)
    peak_bf16 = matmul_flops(2048, torch.bfloat16, repeat=2 if quick else 5)
    best_fp32 = min(t["fp32"], t["fp32_cl"])
    if verbose:
        print(f"VQ-VAE train step, arch={arch}, batch {BATCH}x1x{SIZE}x{SIZE}, "
              f"{flops / 1e9:.2f} GFLOP per step (fwd+bwd); {machine()}")
        for k, v in t.items():
            print(f"  {k:8s} {v * 1e3:8.1f} ms/step  {BATCH / v:7.1f} frames/s")
    return [
        Row(f"fp32 step FLOP/s ({arch}, {flops / 1e9:.1f} GFLOP fwd+bwd)", flops / best_fp32 / 1e9,
            "2048^2 fp32 matmul", peak / 1e9, "GFLOP/s", ">= 0.3"),
        Row("bf16+channels-last step FLOP/s", flops / t["bf16_cl"] / 1e9, "2048^2 bf16 matmul",
            peak_bf16 / 1e9, "GFLOP/s"),
        Row("bf16+channels-last step", t["bf16_cl"] * 1e3, "fp32 NCHW step", t["fp32"] * 1e3, "ms"),
        Row("fp32 channels-last step", t["fp32_cl"] * 1e3, "fp32 NCHW step", t["fp32"] * 1e3, "ms"),
        Row(f"data (gather + uint8->float), {fastest}", data_t * 1e3, f"whole step, {fastest}",
            t[fastest] * 1e3, "ms"),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--arch", choices=["resnet", "seed"], default="resnet")
    p.add_argument("--quick", action="store_true", help="fewer frames and one timed round, to check it runs")
    args = p.parse_args()
    table = rows(args.quick, repeat=args.repeat, arch=args.arch, verbose=True)
    print_table(f"{TITLE} ({args.arch})", table)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - t0:.0f} s)")
