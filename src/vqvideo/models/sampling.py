"""Picking a code per position from a frame's logits: argmax, or a draw with temperature and top-k."""

from __future__ import annotations

import torch
from torch import Tensor


def pick_codes(logits: Tensor, sampling: str, temperature: float, top_k: int,
               generator: torch.Generator | None) -> Tensor:
    """(..., K) logits -> (...) codes, by argmax or by sampling with temperature and top-k."""
    if sampling == "argmax" or top_k == 1:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    best = None
    if 0 < top_k < logits.shape[-1]:
        # top-k sampling (Fan et al. 2018, "Hierarchical Neural Story Generation", sec. 5.4):
        # draw among the k best codes only, so the draw below runs over k columns, not K
        logits, best = logits.topk(top_k, dim=-1)  # (..., k) values and their codes
    # One draw per position by inverting the CDF with one uniform number: exact, and several
    # times faster on a CPU than torch.multinomial over thousands of rows of a 512-code softmax
    # (bench/bench_generate.py measures both).
    cdf = logits.softmax(-1).cumsum(-1)  # (..., k)
    where = generator.device if generator is not None else cdf.device
    u = torch.rand((*cdf.shape[:-1], 1), generator=generator, device=where).to(cdf.device)
    # u scaled by the last CDF value, so float rounding of the sum cannot put it past the end
    idx = torch.searchsorted(cdf, u * cdf[..., -1:], right=True).clamp_max_(cdf.shape[-1] - 1)  # (..., 1)
    return idx[..., 0] if best is None else best.gather(-1, idx)[..., 0]
