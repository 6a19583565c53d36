"""Quantizer forward + backward: ours against vector-quantize-pytorch's VectorQuantize.

Both run the same job: K=512 codes of dimension 64, EMA codebook updates (decay 0.99), k-means
initialisation (done in the warm-up), dead-code restarts below an EMA count of 1, the plain
straight-through estimator, on a batch of 64 frames x 16x16 latent positions (the default
training step's latents). Target: ours takes at most 0.5x its time.

    OMP_NUM_THREADS=1 python bench/bench_quantizer.py [--repeat 7] [--quick]

`rows()` returns the table's rows, for bench/run_all.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Row, interleaved_times, machine, print_table  # noqa: E402
from vqvideo.models.quantizer import VectorQuantizer  # noqa: E402

K, D, FRAMES, SIDE = 512, 64, 64, 16
TITLE = "quantizer: ours vs vector-quantize-pytorch"


def ours_step(vq: VectorQuantizer, z: torch.Tensor, upstream: torch.Tensor):
    def step() -> None:
        x = z.detach().requires_grad_()
        out = vq(x)
        ((out.quantized * upstream).sum() + out.loss).backward()

    return step


def theirs_step(vq, z: torch.Tensor, upstream: torch.Tensor):
    def step() -> None:
        x = z.detach().requires_grad_()
        q, _, loss = vq(x)
        ((q * upstream).sum() + loss).backward()

    return step


def rows(quick: bool = False, *, repeat: int = 7) -> list[Row]:
    """Interleaved medians of both quantizers' forward + backward; quick: one timed round."""
    from vector_quantize_pytorch import VectorQuantize

    if quick:
        repeat = 1
    torch.manual_seed(0)
    z = torch.randn(FRAMES, D, SIDE, SIDE)  # (B, D, H, W), as an encoder hands it over
    upstream = torch.randn_like(z)  # the decoder's gradient
    ours = VectorQuantizer(K, D, beta=0.25, ema=True, decay=0.99, kmeans_init=True,
                           kmeans_iters=10, restart_threshold=1.0).train()
    theirs = VectorQuantize(
        dim=D, codebook_size=K, decay=0.99, commitment_weight=0.25, accept_image_fmap=True,
        kmeans_init=True, kmeans_iters=10, threshold_ema_dead_code=1, rotation_trick=False,
    ).train()
    z_cl = z.contiguous(memory_format=torch.channels_last)  # what our VQ-VAE's encoder emits
    t = interleaved_times(
        {"ours": ours_step(ours, z, upstream), "ours_cl": ours_step(ours, z_cl, upstream),
         "theirs": theirs_step(theirs, z, upstream)},
        warmup=1 if quick else 2, repeat=repeat,
    )
    what = f"K={K}, D={D}, {FRAMES}x{SIDE}x{SIDE} vectors"
    return [
        Row(f"ours fwd+bwd, {what}", t["ours"] * 1e3, "vector-quantize-pytorch fwd+bwd", t["theirs"] * 1e3,
            "ms", "<= 0.5"),
        Row("ours fwd+bwd, channels-last input", t["ours_cl"] * 1e3,
            "vector-quantize-pytorch fwd+bwd", t["theirs"] * 1e3, "ms"),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="one timed round, to check it runs")
    args = p.parse_args()
    table = rows(args.quick, repeat=args.repeat)
    print(f"quantizer fwd+bwd, EMA, k-means init, dead-code restarts; {machine()}")
    print_table(TITLE, table)


if __name__ == "__main__":
    main()
