"""The temporal prior: how a frame's codes move to the next frame's codes.

Per frame, the h x w code grid is grouped into (h/p) x (w/p) tokens of p x p codes ("fewer,
richer tokens"). A token's input is its codes' frozen VQ-VAE codebook vectors, concatenated and
projected, so the prior starts out knowing which codes look alike. Multi-head self-attention
mixes the tokens of one frame; an LSTM per token position carries each token across time; a
second attention block lets every token read the motion state of its neighbours; a linear head
gives logits over the codebook for each of the token's p x p codes in the NEXT frame.

Why a per-position LSTM rather than a ConvLSTM: attention already moves information across the
grid in one step, so the recurrent core only has to remember, not to move; per position it costs
a (tokens x width) matmul per frame instead of a 3x3 convolution, which is what fits a CPU budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvideo.config import PriorConfig


class SpatialBlock(nn.Module):
    """Pre-LN transformer block over one frame's tokens (no causal mask: space has no order)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape  # (frames, tokens, width)
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(b, n, c)), self.dropout, self.training)
        return x + F.dropout(self.mlp(self.ln2(x)), self.dropout, self.training)


class CodePrior(nn.Module):
    def __init__(self, cfg: PriorConfig, codebook: Tensor, grid: tuple[int, int]):
        super().__init__()
        k, d = codebook.shape
        h, w = grid
        p = cfg.patch
        if h % p or w % p:
            raise ValueError(f"prior.patch {p} must divide the code grid {h}x{w}")
        self.num_codes, self.patch, self.grid = k, p, (h, w)
        self.tokens = (h // p) * (w // p)
        self.register_buffer("codebook", codebook.detach().clone().float())  # frozen VQ codes
        self.inp = nn.Linear(p * p * d, cfg.width)
        self.pos = nn.Parameter(torch.zeros(1, self.tokens, cfg.width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.pre = nn.ModuleList(SpatialBlock(cfg.width, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.lstm = nn.LSTM(cfg.width, cfg.width, batch_first=True)
        self.post = nn.ModuleList(SpatialBlock(cfg.width, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, p * p * k)

    # ---------------------------------------------------------- token <-> code grid

    def _tokens(self, codes: Tensor) -> Tensor:
        """(B, T, h, w) code indices -> (B*T, N, p*p*D) token features."""
        b, t, h, w = codes.shape
        p = self.patch
        x = self.codebook[codes]  # (B, T, h, w, D)
        x = x.view(b * t, h // p, p, w // p, p, -1).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b * t, self.tokens, -1)

    def _logits(self, y: Tensor, b: int, t: int) -> Tensor:
        """(B*T, N, width) -> (B, T, h, w, K) next-frame logits."""
        h, w = self.grid
        p = self.patch
        z = self.head(self.ln(y)).view(b, t, h // p, w // p, p, p, self.num_codes)
        return z.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, t, h, w, self.num_codes)

    # ---------------------------------------------------------- model

    def _space(self, blocks: nn.ModuleList, x: Tensor) -> Tensor:
        for blk in blocks:
            x = blk(x)
        return x

    def forward(self, codes: Tensor, state: tuple[Tensor, Tensor] | None = None):
        """codes (B, T, h, w) -> logits (B, T, h, w, K) for frames 1..T, and the LSTM state."""
        b, t = codes.shape[:2]
        n = self.tokens
        x = self.inp(self._tokens(codes)) + self.pos  # (B*T, N, C)
        x = self._space(self.pre, x)
        c = x.shape[-1]
        seq = x.view(b, t, n, c).transpose(1, 2).reshape(b * n, t, c)  # one sequence per position
        y, state = self.lstm(seq, state)
        y = y.reshape(b, n, t, c).transpose(1, 2).reshape(b * t, n, c)
        y = self._space(self.post, y + x)
        return self._logits(y, b, t), state

    @torch.no_grad()
    def rollout(
        self,
        context: Tensor,
        steps: int,
        *,
        sampling: str = "argmax",
        temperature: float = 1.0,
        top_k: int = 0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Extend (B, Tc, h, w) context codes by `steps` frames, one forward pass per frame."""
        logits, state = self(context)
        frames = [context]
        nxt = pick_codes(logits[:, -1], sampling, temperature, top_k, generator)
        for i in range(steps):
            frames.append(nxt[:, None])
            if i == steps - 1:
                break
            logits, state = self(nxt[:, None], state)
            nxt = pick_codes(logits[:, -1], sampling, temperature, top_k, generator)
        return torch.cat(frames, dim=1)


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


def build_prior(cfg: PriorConfig, *, num_codes: int, code_dim: int, grid: list[int] | tuple[int, int]) -> CodePrior:
    """A prior with a placeholder codebook; `load_state_dict` fills in the real one."""
    return CodePrior(cfg, torch.zeros(num_codes, code_dim), (int(grid[0]), int(grid[1])))
