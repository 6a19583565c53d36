"""Image and codebook metrics. Pixels are floats in [0, 1]; frames are (N, C, H, W).

Squared errors are summed in float64 so that a mean over thousands of frames does not depend on
how they were batched beyond the last bit, and the same inputs always give the same number.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def squared_error(pred: Tensor, target: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C*H*W) squared errors in float64."""
    if pred.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    return ((pred.double() - target.double()) ** 2).flatten(1)


def mse_per_pixel(pred: Tensor, target: Tensor) -> float:
    """Mean squared error over every pixel of every frame."""
    return float(squared_error(pred, target).mean())


def mse_per_pixel_frames(pred: Tensor, target: Tensor) -> Tensor:
    """(N,) mean squared error per pixel, one value per frame."""
    return squared_error(pred, target).mean(1)


def mse_per_frame(pred: Tensor, target: Tensor) -> Tensor:
    """(N,) squared error SUMMED over C*H*W, one value per frame: the Moving MNIST convention
    (Srivastava et al. 2015 and the video-prediction papers after it report this number)."""
    return squared_error(pred, target).sum(1)


def psnr(mse: float, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error; inf when the error is 0."""
    return float("inf") if mse <= 0 else 10 * math.log10(peak**2 / mse)


def ssim_per_frame(pred: Tensor, target: Tensor) -> Tensor:
    """(N,) SSIM (Wang et al. 2004, eq. 13) of each frame: Gaussian 11x11 window, sigma 1.5,
    K1 0.01, K2 0.03, data range 1; the frame is reflect-padded by 5 px so the SSIM map covers
    every pixel, and the map is averaged over pixels and channels (torchmetrics' definition, in
    a few lines of torch rather than an 8-second import)."""
    if pred.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    x, y = pred.float(), target.float()
    c = x.shape[1]
    r = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    g = g / g.sum()
    h, w = x.shape[-2:]

    def band(size: int) -> Tensor:  # (size, size + 10): a reflect-padded line -> its blurred line
        m = torch.zeros(size, size + 10)
        for i in range(size):
            m[i, i : i + 11] = g
        return m.to(x.device)

    # the 2-D Gaussian is separable, and each pass is a matrix product (far faster on a CPU than
    # a depthwise convolution): the five maps below blurred as one batch
    stack = F.pad(torch.cat([x, y, x * x, y * y, x * y], 1), (5, 5, 5, 5), mode="reflect")
    mx, my, xx, yy, xy = (band(h) @ stack @ band(w).t()).split(c, 1)
    vx, vy, cov = xx - mx**2, yy - my**2, xy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ssim = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim.flatten(1).mean(1)


def codebook_usage(counts: Tensor | np.ndarray) -> dict[str, float]:
    """Usage statistics of a (K,) vector of how often each code was picked.

    perplexity = 2**H with H the entropy of the usage distribution in bits: the number of codes a
    uniform codebook would need for the same entropy (K when every code is used equally, 1 when
    one code takes everything). active_fraction counts codes picked at least once.
    """
    c = torch.as_tensor(counts).double().reshape(-1)
    k = c.numel()
    total = float(c.sum())
    p = c / total if total > 0 else torch.zeros_like(c)
    nz = p[p > 0]
    # each term -p log2 p is >= 0; "+ 0.0" turns the -0.0 of a collapsed codebook into 0.0
    entropy_bits = float(-(nz * torch.log2(nz)).sum()) + 0.0
    used = int((c > 0).sum())
    return {
        "size": k,
        "perplexity": 2.0**entropy_bits,
        "active_fraction": used / k,
        "active_codes": used,
        "dead_codes": k - used,
        "entropy_bits": entropy_bits,
        "max_entropy_bits": math.log2(k),
    }


def ink(frames: Tensor) -> Tensor:
    """(N,) pixel sum of each (N, C, H, W) frame, float64: how much content it holds."""
    return frames.double().flatten(1).sum(1)


def sharpness(frames: Tensor) -> Tensor:
    """(N,) mean absolute spatial gradient (horizontal and vertical differences), float64:
    a blurred or smeared frame has less of it than the real one."""
    x = frames.double()
    gx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    gy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    return (gx + gy) / 2
