"""Image and codebook metrics. Pixels are floats in [0, 1]; frames are (N, C, H, W)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure


def mse_per_pixel(pred: Tensor, target: Tensor) -> float:
    return float(((pred.double() - target.double()) ** 2).mean())


def mse_per_frame(pred: Tensor, target: Tensor) -> Tensor:
    """Squared error summed over C*H*W, one value per frame: the Moving MNIST convention."""
    diff = (pred.double() - target.double()) ** 2
    return diff.flatten(1).sum(1)


def psnr(mse: float, peak: float = 1.0) -> float:
    return float("inf") if mse <= 0 else 10 * math.log10(peak**2 / mse)


def ssim_per_frame(pred: Tensor, target: Tensor) -> Tensor:
    """SSIM (Wang et al. 2004; torchmetrics, Gaussian 11x11, sigma 1.5) of each frame."""
    return structural_similarity_index_measure(
        pred.float(), target.float(), data_range=1.0, reduction="none"
    ).reshape(-1)


def codebook_usage(counts: Tensor) -> dict[str, float]:
    """Usage statistics of a (K,) code-count vector."""
    k = counts.numel()
    total = float(counts.sum())
    p = counts.double() / max(total, 1e-12)
    nz = p[p > 0]
    entropy_bits = float(-(nz * torch.log2(nz)).sum())
    return {
        "size": k,
        "perplexity": 2**entropy_bits,
        "active_fraction": float((counts > 0).sum()) / k,
        "dead_codes": int((counts == 0).sum()),
        "entropy_bits": entropy_bits,
        "max_entropy_bits": math.log2(k),
    }
