"""Each metric against a value worked out by hand (or by an independent few lines of numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vqvideo import metrics as M

# A 2x2 frame pair: errors 0, 0.5, 0, 0.5 -> squared 0, 0.25, 0, 0.25.
PRED = torch.tensor([[[[0.0, 0.5], [1.0, 1.0]]]])  # (1, 1, 2, 2)
TARGET = torch.tensor([[[[0.0, 0.0], [1.0, 0.5]]]])


def test_mse_per_pixel_and_per_frame_on_a_2x2_pair():
    assert M.mse_per_pixel(PRED, TARGET) == 0.125  # (0.25 + 0.25) / 4
    assert M.mse_per_pixel_frames(PRED, TARGET).tolist() == [0.125]
    assert M.mse_per_frame(PRED, TARGET).tolist() == [0.5]  # the sum, not the mean


def test_per_frame_values_are_one_per_frame_and_sum_over_channels():
    pred = torch.cat([PRED, torch.zeros_like(PRED)])  # frame 2: all zeros against TARGET
    target = torch.cat([TARGET, TARGET])
    assert M.mse_per_frame(pred, target).tolist() == [0.5, 1.25]  # 0 + 0 + 1 + 0.25
    rgb = torch.ones(1, 3, 2, 2)
    assert M.mse_per_frame(rgb, torch.zeros_like(rgb)).tolist() == [12.0]  # C*H*W = 12


def test_psnr_known_values():
    assert M.psnr(0.125) == pytest.approx(10 * math.log10(8), abs=1e-12)  # 9.0309 dB
    assert M.psnr(0.125) == pytest.approx(9.030899869919435, abs=1e-12)
    assert M.psnr(0.01) == pytest.approx(20.0, abs=1e-12)
    assert M.psnr(1e-4) == pytest.approx(40.0, abs=1e-12)
    assert M.psnr(0.04, peak=2.0) == pytest.approx(20.0, abs=1e-12)
    assert M.psnr(0.0) == math.inf


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        M.mse_per_frame(PRED, TARGET[..., :1])
    with pytest.raises(ValueError, match="shapes differ"):
        M.ssim_per_frame(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 12))


def test_codebook_usage_of_a_known_count_vector():
    # p = 1/2, 1/4, 1/8, 1/8 over 4 of 8 codes: H = 0.5*1 + 0.25*2 + 2 * 0.125*3 = 1.75 bits
    u = M.codebook_usage(torch.tensor([4, 2, 1, 1, 0, 0, 0, 0]))
    assert u["size"] == 8
    assert u["entropy_bits"] == pytest.approx(1.75, abs=1e-12)
    assert u["max_entropy_bits"] == 3.0
    assert u["perplexity"] == pytest.approx(2**1.75, abs=1e-12)  # 3.3636
    assert u["active_fraction"] == 0.5
    assert u["active_codes"] == 4
    assert u["dead_codes"] == 4


@pytest.mark.parametrize(("counts", "perplexity", "bits"), [
    ([5, 5, 5, 5], 4.0, 2.0),  # uniform: perplexity K, entropy log2 K
    ([0, 9, 0, 0], 1.0, 0.0),  # collapse onto one code
    ([0, 0, 0, 0], 1.0, 0.0),  # nothing counted: no crash, no NaN
])
def test_codebook_usage_extremes(counts, perplexity, bits):
    u = M.codebook_usage(np.array(counts))
    assert u["perplexity"] == pytest.approx(perplexity, abs=1e-12)
    assert u["entropy_bits"] == pytest.approx(bits, abs=1e-12)
    assert math.copysign(1.0, u["entropy_bits"]) == 1.0  # never -0.0 in metrics.json


def test_codebook_perplexity_matches_the_quantizers_training_metric():
    """evaluate's perplexity (2**bits) and train's (exp of nats) are the same number."""
    from vqvideo.models.quantizer import perplexity

    counts = torch.tensor([7.0, 0, 3, 1, 1, 0, 12, 2])
    assert M.codebook_usage(counts)["perplexity"] == pytest.approx(float(perplexity(counts)), rel=1e-6)


def test_ssim_of_identical_frames_is_one():
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert M.ssim_per_frame(x, x).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)


def test_ssim_of_flat_frames_is_the_luminance_term():
    """Two constant frames: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = 0.01^2."""
    a, b, c1 = 0.5, 0.25, 1e-4
    x, y = torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b)
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # 0.80006...
    assert float(M.ssim_per_frame(x, y)[0]) == pytest.approx(expected, abs=1e-6)


def _ssim_reference(x: np.ndarray, y: np.ndarray, sigma: float = 1.5, size: int = 11) -> float:
    """Wang et al. 2004 eq. 13 written out: Gaussian-weighted statistics of the 11x11 window
    around every pixel (the frame reflect-padded by 5 px, as torchmetrics does too), averaged."""
    pad = size // 2
    x, y = np.pad(x, pad, mode="reflect"), np.pad(y, pad, mode="reflect")
    r = np.arange(size) - pad
    g = np.exp(-(r**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            px, py = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
            mx, my = (w * px).sum(), (w * py).sum()
            vx = (w * px * px).sum() - mx**2
            vy = (w * py * py).sum() - my**2
            cov = (w * px * py).sum() - mx * my
            vals.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_matches_the_paper_formula_on_a_small_frame():
    gen = np.random.default_rng(0)
    x = gen.random((16, 16))
    y = np.clip(x + 0.2 * gen.standard_normal((16, 16)), 0, 1)
    expected = _ssim_reference(x, y)
    got = float(M.ssim_per_frame(torch.tensor(y)[None, None], torch.tensor(x)[None, None])[0])
    assert 0.2 < expected < 0.95  # a pair that is neither identical nor unrelated
    assert got == pytest.approx(expected, abs=1e-5)


def test_metrics_are_bitwise_repeatable_and_batch_independent():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(8, 1, 16, 16, generator=gen), torch.rand(8, 1, 16, 16, generator=gen)
    whole = M.mse_per_frame(a, b)
    halves = torch.cat([M.mse_per_frame(a[:4], b[:4]), M.mse_per_frame(a[4:], b[4:])])
    assert torch.equal(whole, halves)
    assert torch.equal(M.ssim_per_frame(a, b), M.ssim_per_frame(a, b))
