"""Quantizer forward + backward: ours against vector-quantize-pytorch's VectorQuantize.

Both run the same job: K=512 codes of dimension 64, EMA codebook updates (decay 0.99), k-means
initialisation (done in the warm-up), dead-code restarts below an EMA count of 1, the plain
straight-through estimator, on a batch of 64 frames x 16x16 latent positions (the default
training step's latents). Target: ours takes at most 0.5x its time.

    OMP_NUM_THREADS=1 python bench/bench_quantizer.py [--repeat 7]
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    from vector_quantize_pytorch import VectorQuantize

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
        warmup=2, repeat=args.repeat,
    )
    n = FRAMES * SIDE * SIDE
    print(f"quantizer fwd+bwd, K={K}, D={D}, {n} vectors per batch; {machine()}")
    print_table("quantizer: ours vs vector-quantize-pytorch", [
        Row("ours fwd+bwd", t["ours"] * 1e3, "vector-quantize-pytorch fwd+bwd", t["theirs"] * 1e3, "ms",
            "<= 0.5"),
        Row("ours fwd+bwd, channels-last input", t["ours_cl"] * 1e3,
            "vector-quantize-pytorch fwd+bwd", t["theirs"] * 1e3, "ms"),
    ])


if __name__ == "__main__":
    main()
