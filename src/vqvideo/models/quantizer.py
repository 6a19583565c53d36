"""Vector quantisation (van den Oord et al. 2017, "Neural Discrete Representation Learning").

The math lives in small pure functions; `VectorQuantizer` wires them together with the codebook
health tools the field has used since: EMA codebook updates (paper appendix A.1, with Sonnet's
Laplace smoothing), k-means initialisation from the first batch, and restarting dead codes from
the current batch's encoder outputs (Dhariwal et al. 2020, Jukebox, sec. 3.2).

Under torch.distributed every statistic (code counts, EMA sums, k-means sums) is all-reduced and
every random choice (k-means seeds, restart picks) indexes the *global* batch with a generator
that is identical on every rank. So all ranks keep one bit-identical codebook, and it is the
codebook a single process would learn on the concatenated batch (up to float summation order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------- pure functions


def squared_distances(x: Tensor, codebook: Tensor) -> Tensor:
    """||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2 for rows x (N, D), codes c (K, D) -> (N, K)."""
    cross = torch.addmm(codebook.pow(2).sum(1), x, codebook.t(), alpha=-2)  # one fused GEMM
    return cross.add_(x.pow(2).sum(1, keepdim=True))


# On CPU the (rows, K) distance block is made and reduced in slices of about this many bytes, so
# it stays in cache instead of streaming a 32 MB matrix through memory twice (4x faster at K=512).
_CPU_BLOCK_BYTES = 2 << 20


def nearest(x: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    """For rows x (N, D): the nearest code's index and squared distance, (N,) each."""
    # ||x||^2 is the same for every code, so the argmin needs only ||c||^2 - 2 x.c: one GEMM
    # with the code norms as its bias; ||x||^2 is added to the N minima only.
    norms, codes_t = codebook.pow(2).sum(1), codebook.t()
    k = codebook.shape[0]
    rows = max(1, _CPU_BLOCK_BYTES // (4 * k)) if x.device.type == "cpu" else max(1, x.shape[0])
    # min(dim): on CPU several times faster than argmin, and the same first minimum
    parts = [torch.addmm(norms, xs, codes_t, alpha=-2).min(dim=1) for xs in x.split(rows)]
    indices = torch.cat([p.indices for p in parts])
    dist2 = torch.cat([p.values for p in parts]).add_(x.pow(2).sum(1)).clamp_min_(0)
    return indices, dist2


def nearest_code(x: Tensor, codebook: Tensor) -> Tensor:
    """argmin_k ||x - c_k||^2 for rows x (N, D) -> (N,) code indices."""
    return nearest(x, codebook)[0]


def straight_through(z: Tensor, q: Tensor) -> Tensor:
    """Forward gives q, backward passes the gradient to z unchanged (paper sec. 3.1)."""
    return z + (q - z).detach()


def code_counts(indices: Tensor, num_codes: int) -> Tensor:
    """(K,) float32 usage counts of `indices`."""
    return torch.bincount(indices.reshape(-1), minlength=num_codes).to(torch.float32)


def perplexity(counts: Tensor) -> Tensor:
    """exp(entropy) of the code-usage distribution: K when usage is uniform, 1 when collapsed."""
    p = counts / counts.sum().clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


def active_fraction(counts: Tensor) -> Tensor:
    return (counts > 0).float().mean()


def ema_inplace(moving: Tensor, new: Tensor, decay: float) -> None:
    """moving <- decay * moving + (1 - decay) * new (paper appendix A.1, eqs. 6-8)."""
    moving.mul_(decay).add_(new, alpha=1 - decay)


def laplace_smoothing(counts: Tensor, eps: float) -> Tensor:
    """Keep every count positive while preserving the total (Sonnet's VQ-VAE-EMA), so that an
    unused code's EMA sum is divided by a small number, never by zero."""
    n = counts.sum()
    return (counts + eps) / (n + counts.numel() * eps) * n


def sample_rows(n: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """k distinct row indices out of n (with repeats only when n < k), drawn on the CPU."""
    if n >= k:
        return torch.randperm(n, generator=generator)[:k]
    return torch.randint(n, (k,), generator=generator)


def d2_sample(weights: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Up to k distinct row indices drawn with probability proportional to `weights`, drawn on
    the CPU; fewer when fewer rows have a positive weight.

    With squared distances to the nearest code as weights this is k-means++ seeding (Arthur &
    Vassilvitskii 2007): a new code lands where the codebook is poor, and never on a vector a
    code already sits on, so it cannot become a dead duplicate (on mostly-blank frames, uniform
    picks are mostly identical background vectors, and an exact duplicate never wins an argmin).
    """
    w = weights.detach().to("cpu", torch.float64)
    k = min(k, int((w > 0).sum()))
    if k == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.multinomial(w, k, replacement=False, generator=generator)


Reseed = Callable[[Tensor, int], Tensor]  # (per-row weights (N,), k) -> up to k new centres


def _no_reduce(t: Tensor) -> Tensor:
    return t


def lloyd(
    x: Tensor,
    centres: Tensor,
    iters: int,
    reduce: Callable[[Tensor], Tensor] = _no_reduce,
    reseed: Reseed | None = None,
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means iterations on rows of x (N, D) from `centres` (K, D).

    `reduce` sums a statistic over data shards (an all-reduce under torch.distributed), so shards
    on several ranks cluster as one data set. An empty cluster gets a new centre from `reseed`
    (given each row's squared distance to its centre), or keeps its old one without it.
    Returns the centres and the (K,) counts of their final assignment.
    """
    k = centres.shape[0]
    centres = centres.clone()
    for _ in range(iters):
        assign, dist2 = nearest(x, centres)
        sums = reduce(torch.zeros_like(centres).index_add_(0, assign, x))
        counts = reduce(code_counts(assign, k).to(x.dtype))
        filled = counts > 0
        centres = torch.where(filled[:, None], sums / counts.clamp_min(1)[:, None], centres)
        empty = (~filled).nonzero().squeeze(1)
        if reseed is not None and len(empty):
            fresh = reseed(dist2, len(empty))
            centres[empty[: len(fresh)]] = fresh
    counts = reduce(code_counts(nearest_code(x, centres), k))
    return centres, counts


def kmeans(
    x: Tensor, k: int, iters: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """k-means on rows of x (N, D): k random rows as seeds, empty clusters re-seeded by D^2
    sampling; returns (centres, counts)."""
    pick = sample_rows(x.shape[0], k, generator).to(x.device)

    def reseed(dist2: Tensor, n: int) -> Tensor:
        return x[d2_sample(dist2, n, generator).to(x.device)]

    return lloyd(x, x[pick], iters, reseed=reseed)


# ---------------------------------------------------------------- distributed helpers


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: Tensor) -> Tensor:
    if _distributed():
        dist.all_reduce(t)
    return t


def _shard_sizes(n: int, device: torch.device) -> list[int]:
    """Every rank's row count, in rank order."""
    if not _distributed():
        return [n]
    local = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local)
    return [int(s) for s in sizes]


def _offset(sizes: list[int]) -> int:
    """Where this rank's rows start in the global batch."""
    return sum(sizes[: dist.get_rank()]) if _distributed() else 0


def _all_gather_cat(t: Tensor) -> tuple[Tensor, int]:
    """Every rank's `t` (N_r, ...) concatenated in rank order, on every rank, and the offset of
    this rank's rows in it. Shards may differ in length (a last, short batch)."""
    if not _distributed():
        return t, 0
    sizes = _shard_sizes(t.shape[0], t.device)
    padded = t.new_zeros(max(sizes), *t.shape[1:])
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:m] for p, m in zip(parts, sizes)]), _offset(sizes)


def _global_rows(flat: Tensor, rows: Tensor, offset: int) -> Tensor:
    """Rows `rows` of the global batch (every rank's `flat` in rank order), on every rank.

    Each rank fills the rows it holds and leaves zeros elsewhere; the all-reduce sum is then exact
    (x + 0 == x), and sends only len(rows) x D numbers instead of gathering every shard.
    """
    local = rows.to(flat.device) - offset
    mine = (local >= 0) & (local < flat.shape[0])
    out = flat.new_zeros(len(rows), flat.shape[1])
    out[mine] = flat[local[mine]]
    return _all_reduce(out)


def _global_reseeder(flat: Tensor, generator: torch.Generator) -> Reseed:
    """D^2 sampling over the global batch: every rank gathers all ranks' weights (N floats, not
    N x D vectors), draws the same rows with its identical generator, and fetches those rows."""

    def reseed(dist2: Tensor, k: int) -> Tensor:
        weights, offset = _all_gather_cat(dist2)
        return _global_rows(flat, d2_sample(weights, k, generator), offset)

    return reseed


# ---------------------------------------------------------------- module


@dataclass
class QuantizerOutput:
    quantized: Tensor  # (B, D, H, W); straight-through to z in training
    indices: Tensor  # (B, H, W)
    loss: Tensor  # codebook loss (if not EMA) + beta * commitment
    commitment: Tensor  # ||z_e - sg[e]||^2, mean over elements
    perplexity: Tensor
    active_fraction: Tensor  # fraction of codes used in this batch (all ranks in training)
    counts: Tensor  # (K,) code counts in this batch (all ranks in training)
    restarted: Tensor  # number of dead codes re-seeded at this step


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser with straight-through gradients and codebook health options.

    ema: codebook = EMA of assigned encoder outputs (appendix A.1) instead of the codebook loss;
        the codebook is then a buffer, outside the optimiser.
    kmeans_init: the first training batch's k-means centres replace the random initial codebook.
    restart_threshold: a code whose EMA usage (expected uses per batch) falls below this is
        re-seeded from an encoder output of the current batch, drawn by D^2 sampling;
        0 disables restarts.
    """

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
            self.register_buffer("ema_sum", init.clone())  # EMA of the assigned vectors' sums
        else:
            self.codebook = nn.Parameter(init)
        # EMA of per-batch usage counts: the EMA denominator, and what restarts read in both modes.
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("initialised", torch.tensor(not kmeans_init))
        # Random choices for init and restarts; the training loop checkpoints it, and it must be
        # seeded alike on every rank (it draws indices into the global batch).
        self.generator = torch.Generator()
        self.generator.manual_seed(0)

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    # ------------------------------------------------------------ codebook health

    @torch.no_grad()
    def _set_codes(self, which: Tensor | slice, vectors: Tensor, count: Tensor | float) -> None:
        """Put `vectors` in the codebook with an EMA usage of `count` (and a matching EMA sum)."""
        self.codebook.data[which] = vectors
        self.ema_count[which] = count
        if self.ema:
            c = count[:, None] if isinstance(count, Tensor) else count
            self.ema_sum[which] = vectors * c

    @torch.no_grad()
    def _init_from(self, flat: Tensor) -> None:
        sizes = _shard_sizes(flat.shape[0], flat.device)
        picks = sample_rows(sum(sizes), self.num_codes, self.generator)
        seeds = _global_rows(flat, picks, _offset(sizes))
        reseed = _global_reseeder(flat, self.generator)
        centres, _ = lloyd(flat, seeds, self.kmeans_iters, _all_reduce, reseed)
        # The EMA starts at one use per code (as Jukebox's does), not at the cluster sizes: the
        # encoder moves fast in the first steps, and a code left behind would otherwise coast on
        # its first-batch count (~N/K) for hundreds of steps before it counts as dead.
        self._set_codes(slice(None), centres, 1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _restart_dead(self, flat: Tensor, dist2: Tensor) -> int:
        """Jukebox-style restarts (Dhariwal et al. 2020, sec. 3.2), with the new codes drawn by
        D^2 sampling from this batch's encoder outputs rather than uniformly."""
        dead = self.ema_count < self.restart_threshold  # identical on every rank: counts are reduced
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        fresh = _global_reseeder(flat, self.generator)(dist2, n_dead)
        which = dead.nonzero().squeeze(1)[: len(fresh)]  # the rest wait for a later batch
        self._set_codes(which, fresh, self.restart_threshold)
        return len(fresh)

    @torch.no_grad()
    def _update(self, flat: Tensor, indices: Tensor, dist2: Tensor, counts: Tensor) -> int:
        """One training step's codebook update; returns the number of codes restarted."""
        ema_inplace(self.ema_count, counts, self.decay)
        if self.ema:  # appendix A.1: N_i and m_i as EMAs, e_i = m_i / N_i
            sums = _all_reduce(torch.zeros_like(self.ema_sum).index_add_(0, indices, flat))
            ema_inplace(self.ema_sum, sums, self.decay)
            n = laplace_smoothing(self.ema_count, self.eps)
            torch.div(self.ema_sum, n[:, None], out=self.codebook)
        return self._restart_dead(flat, dist2) if self.restart_threshold > 0 else 0

    # ------------------------------------------------------------ forward

    def forward(self, z: Tensor) -> QuantizerOutput:
        """z: (B, D, H, W) encoder output."""
        b, d, h, w = z.shape
        # Distances and EMA statistics in fp32, even under autocast.
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (B*H*W, D); a view if z is channels-last
            sg_flat = flat.detach()
            if self.training and not bool(self.initialised):
                self._init_from(sg_flat)
            indices, dist2 = nearest(sg_flat, self.codebook.detach())  # (B*H*W,) each
            counts = code_counts(indices, self.num_codes)
            q = F.embedding(indices, self.codebook).view(b, h, w, d).permute(0, 3, 1, 2)  # (B, D, H, W)

            # VQ-VAE eq. 3: sg[z] pulls codes to the encoder (unless EMA does), and beta x the
            # commitment term keeps the encoder near its codes.
            commitment = F.mse_loss(z, q.detach())
            loss = self.beta * commitment
            if not self.ema:
                loss = loss + F.mse_loss(q, z.detach())

            restarted = 0
            if self.training:
                counts = _all_reduce(counts)
                restarted = self._update(sg_flat, indices, dist2, counts)
                quantized = straight_through(z, q)
            else:
                quantized = q
        return QuantizerOutput(
            quantized=quantized,
            indices=indices.view(b, h, w),
            loss=loss,
            commitment=commitment.detach(),
            perplexity=perplexity(counts),
            active_fraction=active_fraction(counts),
            counts=counts,
            restarted=torch.tensor(restarted),
        )

    def lookup(self, indices: Tensor) -> Tensor:
        """(B, H, W) code indices -> (B, D, H, W) code vectors."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)

    @torch.no_grad()
    def encode_indices(self, z: Tensor) -> Tensor:
        """(B, D, H, W) -> (B, H, W) nearest-code indices, without statistics or updates."""
        b, d, h, w = z.shape
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, d)  # (B*H*W, D)
        return nearest_code(flat, self.codebook.detach()).view(b, h, w)
