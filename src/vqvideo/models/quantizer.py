"""Vector quantisation (van den Oord et al. 2017, "Neural Discrete Representation Learning").

The math lives in small pure functions; `VectorQuantizer` wires them together with the codebook
health tools the field has used since: EMA codebook updates (paper appendix A.1), k-means
initialisation from the first batch, and restarting dead codes from recent encoder outputs
(Dhariwal et al. 2020, Jukebox, sec. 3.2). Under torch.distributed every statistic is
all-reduced and every random choice broadcast from rank 0, so all ranks keep one codebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------- pure functions


def squared_distances(x: Tensor, codebook: Tensor) -> Tensor:
    """||x - c||^2 for every row of x (N, D) and code c (K, D) -> (N, K), via one matmul."""
    return (
        x.pow(2).sum(1, keepdim=True)
        - 2 * x @ codebook.t()
        + codebook.pow(2).sum(1)[None, :]
    )


def nearest_code(x: Tensor, codebook: Tensor) -> Tensor:
    return squared_distances(x, codebook).argmin(dim=1)


def straight_through(z: Tensor, q: Tensor) -> Tensor:
    """Forward pass gives q, backward passes the gradient to z unchanged (paper sec. 3.1)."""
    return z + (q - z).detach()


def code_counts(indices: Tensor, num_codes: int) -> Tensor:
    return torch.bincount(indices.reshape(-1), minlength=num_codes).to(torch.float32)


def perplexity(counts: Tensor) -> Tensor:
    """exp(entropy) of the code-usage distribution: K when usage is uniform, 1 when collapsed."""
    p = counts / counts.sum().clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


def ema_inplace(moving: Tensor, new: Tensor, decay: float) -> None:
    moving.mul_(decay).add_(new, alpha=1 - decay)


def laplace_smoothing(counts: Tensor, eps: float) -> Tensor:
    """Keep every count positive while preserving the total (Sonnet's VQ-VAE-EMA)."""
    n = counts.sum()
    return (counts + eps) / (n + counts.numel() * eps) * n


def kmeans(x: Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> Tensor:
    """Plain Lloyd's k-means on rows of x; empty clusters keep their previous centre."""
    n = x.shape[0]
    pick = torch.randperm(n, generator=generator, device="cpu")[:k].to(x.device)
    if n < k:  # fewer points than codes: repeat points to fill the codebook
        pick = torch.randint(n, (k,), generator=generator, device="cpu").to(x.device)
    centres = x[pick].clone()
    for _ in range(iters):
        assign = nearest_code(x, centres)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


# ---------------------------------------------------------------- module


@dataclass
class QuantizerOutput:
    quantized: Tensor  # (B, D, H, W), straight-through in training
    indices: Tensor  # (B, H, W)
    loss: Tensor  # codebook loss (if not EMA) + beta * commitment
    commitment: Tensor  # ||z_e - sg[e]||^2, mean over elements
    perplexity: Tensor
    active_fraction: Tensor  # fraction of codes used in this batch
    counts: Tensor  # (K,) code counts in this batch


def _all_reduce(t: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def _broadcast(t: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(t, src=0)
    return t


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        num_codes: int,
        dim: int,
        beta: float = 0.25,
        *,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        restart_threshold: float = 1.0,
    ):
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.ema, self.decay, self.eps = ema, decay, eps
        self.kmeans_init, self.kmeans_iters = kmeans_init, kmeans_iters
        self.restart_threshold = restart_threshold
        init = torch.empty(num_codes, dim).uniform_(-1 / num_codes, 1 / num_codes)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
            self.register_buffer("ema_count", torch.ones(num_codes))  # usage tracking for restarts
        self.register_buffer("initialised", torch.tensor(not kmeans_init))
        # Random choices for init and restarts; saved in checkpoints so a resumed run is identical.
        self.generator = torch.Generator()
        self.generator.manual_seed(0)

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    @torch.no_grad()
    def _init_from(self, flat: Tensor) -> None:
        centres = kmeans(flat, self.num_codes, self.kmeans_iters, self.generator)
        centres = _broadcast(centres.contiguous())
        self.codebook.data.copy_(centres)
        if self.ema:
            self.ema_sum.copy_(centres)
            self.ema_count.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _restart_dead(self, flat: Tensor) -> None:
        dead = self.ema_count < self.restart_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        pick = torch.randint(flat.shape[0], (n_dead,), generator=self.generator).to(flat.device)
        fresh = _broadcast(flat[pick].contiguous())
        self.codebook.data[dead] = fresh
        if self.ema:
            self.ema_sum[dead] = fresh
        self.ema_count[dead] = 1.0  # one batch of grace before it can be called dead again

    def forward(self, z: Tensor) -> QuantizerOutput:
        """z: (B, D, H, W) encoder output."""
        b, d, h, w = z.shape
        z = z.float()  # distances and EMA statistics in fp32, even under autocast
        with torch.autocast(z.device.type, enabled=False):
            flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (B*H*W, D)
            if self.training and not bool(self.initialised):
                self._init_from(flat.detach())
            indices = nearest_code(flat.detach(), self.codebook)
            counts = _all_reduce(code_counts(indices, self.num_codes))
            q = F.embedding(indices, self.codebook).view(b, h, w, d).permute(0, 3, 1, 2)

            commitment = F.mse_loss(z, q.detach())  # eq. 3, third term
            if self.ema:
                loss = self.beta * commitment
                if self.training:
                    self._ema_update(flat.detach(), indices, counts)
            else:
                codebook_loss = F.mse_loss(q, z.detach())  # eq. 3, second term
                loss = codebook_loss + self.beta * commitment
                if self.training:
                    with torch.no_grad():
                        ema_inplace(self.ema_count, counts, self.decay)
            if self.training and self.restart_threshold > 0:
                self._restart_dead(flat.detach())

            quantized = straight_through(z, q) if self.training else q
        total = counts.sum()
        return QuantizerOutput(
            quantized=quantized,
            indices=indices.view(b, h, w),
            loss=loss,
            commitment=commitment.detach(),
            perplexity=perplexity(counts),
            active_fraction=(counts > 0).float().mean() if total > 0 else counts.new_zeros(()),
            counts=counts,
        )

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, flat)
        _all_reduce(sums)
        ema_inplace(self.ema_count, counts, self.decay)
        ema_inplace(self.ema_sum, sums, self.decay)
        n = laplace_smoothing(self.ema_count, self.eps)
        self.codebook.copy_(self.ema_sum / n[:, None])

    def lookup(self, indices: Tensor) -> Tensor:
        """(B, H, W) code indices -> (B, D, H, W) code vectors."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)

    @torch.no_grad()
    def encode_indices(self, z: Tensor) -> Tensor:
        b, d, h, w = z.shape
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, d)
        return nearest_code(flat, self.codebook).view(b, h, w)
