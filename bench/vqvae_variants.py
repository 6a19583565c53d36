"""Quality, not speed: the default VQ-VAE against the same run with the codebook-health options
off, and against the article's `seed` network, each trained by the `train` stage's own worker
with the params file's settings and scored on the test split.

    dvc repro sample                                   # the frames (default Moving Digits)
    python bench/vqvae_variants.py                     # all four variants, a markdown table
    python bench/vqvae_variants.py --variants default,plain

Not part of `run_all.py` (it trains four models: about 4 minutes on 2 cores). The figures in
docs/vqvae.md come from it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from vqvideo import metrics as M
from vqvideo.config import load_params
from vqvideo.data.frames import FrameData
from vqvideo.stages.train import train

VARIANTS = {
    "default": ("health options on (params.yaml)", {}),
    "plain": ("plain VQ: no EMA, no k-means, no restarts", {"ema": False, "kmeans_init": False, "restart_threshold": 0.0}),
    "no_restart": ("EMA + k-means, no restarts", {"restart_threshold": 0.0}),
    "seed": ("the article's seed network, health options on", {"arch": "seed"}),
}


@torch.no_grad()
def score(model, frames: torch.Tensor, k: int) -> dict:
    mse, ssim, counts = [], [], torch.zeros(k, dtype=torch.float64)
    for i in range(0, len(frames), 500):
        x = frames[i : i + 500].float().div(255)
        codes = model.encode_indices(x)
        r = model.decode_indices(codes)
        counts += torch.bincount(codes.flatten(), minlength=k).double()
        mse.append(M.mse_per_pixel_frames(r, x))
        ssim.append(M.ssim_per_frame(r, x))
    usage = M.codebook_usage(counts)
    return {"psnr": M.psnr(torch.cat(mse).double().mean().item()),
            "ssim": torch.cat(ssim).double().mean().item(),
            "active": usage["active_fraction"], "perplexity": usage["perplexity"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=Path, default=Path("data/frames"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = ap.parse_args()
    params = load_params(args.params)
    data = FrameData.open(args.frames)
    test = torch.from_numpy(np.ascontiguousarray(data.clips("test")))
    test = test.flatten(0, 1)  # (clips * T, C, H, W)
    if test.ndim == 3:
        test = test[:, None]
    rows = []
    for name in args.variants.split(","):
        what, change = VARIANTS[name]
        cfg = params.model.model_copy(update=change)
        t0 = time.perf_counter()
        model = train(cfg, params.train, data).model
        seconds = time.perf_counter() - t0
        s = score(model, test, cfg.codebook_size)
        rows.append(f"| {name} | {what} | {s['psnr']:.2f} dB | {s['ssim']:.4f} | {100 * s['active']:.1f}% "
                     f"| {s['perplexity']:.1f} | {seconds:.0f} |")
    print(f"\n{params.train.steps} steps, K = {params.model.codebook_size}, test split of {args.frames}\n")
    print("| variant | what | test PSNR | test SSIM | codes used on test | test perplexity | train seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
