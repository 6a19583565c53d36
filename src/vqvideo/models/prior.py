"""The temporal prior: how a frame's codes move to the next frame's codes.

Naive code-to-code priors learn motion too slowly for a CPU budget (they must learn, code by
code, what a digit looks like 3.6 px further on). This prior predicts *what changes* instead,
and lets the frozen VQ-VAE do the rest:

1. The frame's codes are decoded by the frozen VQ-VAE decoder, and a block-matching search
   between this frame and the previous one gives each block's displacement (a soft-argmin over
   shifts of the squared difference, the textbook motion estimate of video coding).
2. Tokens: the h x w code grid grouped into p x p codes per token ("fewer, richer tokens"); a
   token's input is its codes' frozen codebook vectors plus its block's motion features.
   Multi-head self-attention (with position embeddings and a learned relative-position bias)
   mixes one frame's tokens; an LSTM per token position carries each token across time; a second
   attention block lets a token read its neighbours' state (who is about to arrive here).
3. A flow head predicts the next frame's displacement field: the measured motion plus a learned
   correction (zero at initialisation, so an untrained prior already extrapolates motion; it
   learns bounces, occlusion and everything constant velocity gets wrong).
4. The decoded frame is warped by that flow (bilinear sampling) and re-encoded by the frozen
   encoder; the logits of the next frame's codes are minus the squared distances of the
   re-encoded vectors to the codebook over a learned temperature (plus optional learned
   residual logits). Trained with cross-entropy under teacher forcing, plus a photometric loss on
   the warped frame that gives the flow a dense gradient (as in unsupervised optical flow).

Why an LSTM per position rather than a ConvLSTM: the attention blocks already move information
across the grid, and the motion search gives displacement directly, so the recurrent core only
has to remember (velocity, bounces); per position it is one (tokens x width) matmul per frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvideo.config import PriorConfig
from vqvideo.models.vqvae import VQVAE

State = tuple[Tensor, Tensor, Tensor]  # LSTM (h, c) and the last decoded frame (B, C, H, W)


# ---------------------------------------------------------------- pure functions


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) images; widens the photometric loss's basin."""
    if sigma <= 0:
        return x
    r = max(1, int(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)


@torch.no_grad()
def block_motion(cur: Tensor, prev: Tensor, block: int, radius: int, temperature: float, scale: int = 1) -> Tensor:
    """Per block of `cur` (N, C, H, W): where its content came from in `prev`.

    Returns (N, 4, H/block, W/block): the displacement (dx, dy) in pixels as a soft-argmin of the
    mean squared difference over all integer shifts within `radius`, the best match's residual,
    and the block's mean intensity. The difference is pooled over a window twice the block's
    size, so a blank block beside moving content (where it is about to arrive) takes on that
    content's motion; a window with nothing in it matches every shift alike and stays still.
    With `scale` > 1 the search runs on images shrunk by that factor (scale^4 times less work);
    the soft-argmin still gives fractional displacements, returned in full-size pixels.
    """
    if scale > 1:
        cur, prev = F.avg_pool2d(cur, scale), F.avg_pool2d(prev, scale)
        block, radius = block // scale, max(1, -(-radius // scale))
    n, c, h, w = cur.shape
    r = radius
    padded = F.pad(prev, (r, r, r, r))
    costs, shifts = [], []
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            moved = padded[:, :, r - dy : r - dy + h, r - dx : r - dx + w]  # prev moved by (dx, dy)
            err = ((cur - moved) ** 2).mean(1, keepdim=True)
            costs.append(F.avg_pool2d(err, 2 * block, stride=block, padding=block // 2, count_include_pad=False))
            shifts.append((dx, dy))
    cost = torch.cat(costs, 1)  # (N, S, h/b, w/b)
    weight = torch.softmax(-cost / temperature, dim=1)
    disp = torch.einsum("nsij,sc->ncij", weight, torch.tensor(shifts, dtype=cur.dtype, device=cur.device))
    residual = cost.min(1, keepdim=True).values
    energy = F.avg_pool2d(cur.mean(1, keepdim=True), block)
    return torch.cat([disp * scale, residual, energy], 1)


def warp(images: Tensor, flow: Tensor) -> Tensor:
    """Move (N, C, H, W) images by a flow (N, 2, H, W) in pixels: out(p) = images(p - flow(p))."""
    n, _, h, w = images.shape
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=images.device)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=images.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2) as (x, y)
    scale = torch.tensor([2 / w, 2 / h], device=images.device)
    grid = base - flow.permute(0, 2, 3, 1) * scale
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


# ---------------------------------------------------------------- blocks


class SpatialBlock(nn.Module):
    """Pre-LN transformer block over one frame's tokens, with a learned relative-position bias
    per head (Shaw et al. 2018; Swin's table form): a head can learn "look at the token to my left"."""

    def __init__(self, width: int, heads: int, grid: tuple[int, int], dropout: float):
        super().__init__()
        gh, gw = grid
        self.heads, self.dropout = heads, dropout
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.rel = nn.Parameter(torch.zeros(heads, (2 * gh - 1) * (2 * gw - 1)))
        yy, xx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        yy, xx = yy.flatten(), xx.flatten()
        idx = (yy[:, None] - yy[None] + gh - 1) * (2 * gw - 1) + (xx[:, None] - xx[None] + gw - 1)
        self.register_buffer("rel_index", idx, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape  # (frames, tokens, width)
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.rel[:, self.rel_index].to(q.dtype)[None]  # (1, heads, N, N)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0)
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(b, n, c)), self.dropout, self.training)
        return x + F.dropout(self.mlp(self.ln2(x)), self.dropout, self.training)


# ---------------------------------------------------------------- the prior


class CodePrior(nn.Module):
    def __init__(self, cfg: PriorConfig, vqvae: VQVAE, grid: tuple[int, int]):
        super().__init__()
        h, w = grid
        p = cfg.patch
        if h % p or w % p:
            raise ValueError(f"prior.patch {p} must divide the code grid {h}x{w}")
        self.cfg = cfg
        self.vqvae = vqvae.eval()  # frozen: its decoder embeds codes, its encoder reads the warp
        for q in self.vqvae.parameters():
            q.requires_grad_(False)
        k, d = vqvae.quantizer.codebook.shape
        self.num_codes, self.patch, self.grid = k, p, (h, w)
        self.token_grid = (h // p, w // p)
        self.tokens = self.token_grid[0] * self.token_grid[1]
        self.block = p * vqvae.factor  # pixels per token side
        self.motion_scale = cfg.motion_scale if self.block % cfg.motion_scale == 0 else 1
        self.inp = nn.Sequential(nn.Linear(p * p * d + 4, cfg.width), nn.LayerNorm(cfg.width))
        self.pos = nn.Parameter(torch.zeros(1, self.tokens, cfg.width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.pre = nn.ModuleList(SpatialBlock(cfg.width, cfg.heads, self.token_grid, cfg.dropout) for _ in range(cfg.layers))
        self.lstm = nn.LSTM(cfg.width, cfg.width, batch_first=True)
        self.post = nn.ModuleList(SpatialBlock(cfg.width, cfg.heads, self.token_grid, cfg.dropout) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.width)
        self.flow = nn.Linear(cfg.width, 2)  # correction to the measured displacement, in pixels
        nn.init.zeros_(self.flow.weight)
        nn.init.zeros_(self.flow.bias)
        with torch.no_grad():  # distances start on the scale of the codebook's own spacing
            cb = vqvae.quantizer.codebook.float()
            spacing = torch.cdist(cb, cb).pow(2).median().clamp_min(1e-6) if k > 1 else torch.tensor(1.0)
        self.log_tau = nn.Parameter(torch.log(spacing / 4))
        self.residual = nn.Linear(cfg.width, p * p * k) if cfg.residual_logits else None
        # RMS displacement per axis of moving content in the training data (set by the prior
        # stage): the scale of the motions drawn when a single still frame gives none.
        self.register_buffer("motion_rms", torch.tensor(0.0))
        if self.residual is not None:
            nn.init.zeros_(self.residual.weight)
            nn.init.zeros_(self.residual.bias)

    def shape_meta(self) -> dict:
        """What `build_prior` needs to rebuild this prior before loading its weights."""
        return {"grid": list(self.grid), "vqvae_config": self.vqvae.cfg.model_dump(mode="json"),
                "channels": self.vqvae.channels, "num_codes": self.num_codes,
                "code_dim": int(self.vqvae.quantizer.codebook.shape[1])}

    def train(self, mode: bool = True):
        super().train(mode)
        self.vqvae.eval()  # always: the frozen model has no training behaviour to switch on
        return self

    # ---------------------------------------------------------- pieces

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """(N, h, w) codes -> (N, C, H, W) frames through the frozen decoder."""
        return self.vqvae.decode_indices(codes).float()

    def _token_features(self, codes: Tensor, motion: Tensor) -> Tensor:
        """(B, T, h, w) codes + (B*T, 4, gh, gw) motion -> (B*T, N, p*p*D + 4)."""
        b, t, h, w = codes.shape
        p = self.patch
        x = self.vqvae.quantizer.codebook[codes]  # (B, T, h, w, D)
        x = x.view(b * t, h // p, p, w // p, p, -1).permute(0, 1, 3, 2, 4, 5).reshape(b * t, self.tokens, -1)
        m = motion.flatten(2).transpose(1, 2)  # (B*T, N, 4)
        m = m * torch.tensor([1 / self.block, 1 / self.block, 10.0, 1.0], device=m.device)  # to ~unit scale
        return torch.cat([x.float(), m], -1)

    def _logits(self, z: Tensor, y: Tensor, b: int, t: int) -> Tensor:
        """Re-encoded warp z (B*T, D, h, w) and token state y (B*T, N, C) -> (B, T, h, w, K)."""
        h, w = self.grid
        cb = self.vqvae.quantizer.codebook.float()
        zf = z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (B*T*h*w, D)
        # -||z - e||^2 / tau without ||z||^2, which is the same for every code of a position (a
        # softmax does not see it): one fused matmul instead of a pass per term over 20M logits.
        inv_tau = torch.exp(-self.log_tau)
        logits = torch.addmm(-cb.pow(2).sum(1) * inv_tau, zf, cb.t() * (2 * inv_tau)).view(b, t, h, w, -1)
        if self.residual is not None:
            p, (gh, gw) = self.patch, self.token_grid
            r = self.residual(y).float().view(b, t, gh, gw, p, p, -1).permute(0, 1, 2, 4, 3, 5, 6)
            logits = logits + r.reshape(b, t, h, w, -1)
        return logits

    # ---------------------------------------------------------- model

    def forward(self, codes: Tensor, state: State | None = None, *, images: Tensor | None = None,
                extra_flow: Tensor | None = None, return_warp: bool = False):
        """codes (B, T, h, w) -> logits (B, T, h, w, K) for frames 1..T, and the state to go on.

        `images`: the codes already decoded, (B*T, C, H, W), to skip decoding them again.
        `extra_flow`: (B, 2, gh, gw) pixels added to the measured motion of every frame (a drawn
        motion for a still image). With `return_warp`, also the warped frames and the decoded
        inputs, for the photometric loss.
        """
        b, t = codes.shape[:2]
        if images is None:
            images = self.decode(codes.flatten(0, 1))  # (B*T, C, H, W)
        images = images.float()
        seq = images.view(b, t, *images.shape[1:])
        prev = torch.cat([seq[:, :1] if state is None else state[2][:, None], seq[:, :-1]], 1)
        motion = block_motion(images, prev.flatten(0, 1), self.block, self.cfg.motion_radius,
                              self.cfg.motion_temperature, self.motion_scale)  # (B*T, 4, gh, gw)

        x = self.inp(self._token_features(codes, motion)) + self.pos  # (B*T, N, C)
        for blk in self.pre:
            x = blk(x)
        n, c = self.tokens, x.shape[-1]
        rnn_in = x.view(b, t, n, c).transpose(1, 2).reshape(b * n, t, c)  # one sequence per position
        y, (hs, cs) = self.lstm(rnn_in, None if state is None else (state[0], state[1]))
        y = y.reshape(b, n, t, c).transpose(1, 2).reshape(b * t, n, c) + x
        for blk in self.post:
            y = blk(y)
        y = self.ln(y)

        gh, gw = self.token_grid
        correction = self.flow(y).float().transpose(1, 2).reshape(b * t, 2, gh, gw)
        moved = motion[:, :2] + correction
        if extra_flow is not None:
            moved = moved + extra_flow.repeat_interleave(t, dim=0)
        flow = F.interpolate(moved, size=images.shape[-2:], mode="bilinear", align_corners=False)
        warped = warp(images, flow)
        z = self.vqvae.encode(warped)
        logits = self._logits(z, y, b, t)
        new_state = (hs, cs, seq[:, -1])
        if return_warp:
            return logits, new_state, warped, images
        return logits, new_state

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
        """Extend (B, Tc, h, w) context codes by `steps` frames, one forward pass per frame.

        Sampling from a single still frame, which shows no motion, also draws a motion for each
        sequence (`draw_motion`); the prior's own motion search carries it on from there.
        """
        drawn = None
        if sampling == "sample" and context.shape[1] == 1 and float(self.motion_rms) > 0:
            drawn = draw_motion(context.shape[0], self.token_grid, float(self.motion_rms), generator).to(context.device)
        logits, state = self(context, extra_flow=drawn)
        frames = [context]
        nxt = pick_codes(logits[:, -1], sampling, temperature, top_k, generator)
        for i in range(steps):
            frames.append(nxt[:, None])
            if i == steps - 1:
                break
            logits, state = self(nxt[:, None], state)
            nxt = pick_codes(logits[:, -1], sampling, temperature, top_k, generator)
        return torch.cat(frames, dim=1)


def draw_motion(n: int, grid: tuple[int, int], rms: float, generator: torch.Generator | None) -> Tensor:
    """n smooth random displacement fields (n, 2, gh, gw) with `rms` pixels per axis.

    White noise blurred over half the frame: an object moves nearly rigidly (a field that varies
    within it would shear it apart), while distant parts of the frame may still move apart.
    """
    gh, gw = grid
    noise = torch.randn(n, 2, gh, gw, generator=generator)
    smooth = gaussian_blur(noise, max(gh, gw) / 2)
    smooth = smooth / smooth.pow(2).mean((1, 2, 3), keepdim=True).sqrt().clamp_min(1e-6)
    return smooth * rms


@torch.no_grad()
def motion_statistics(images: Tensor, block: int, radius: int, temperature: float, scale: int) -> float:
    """RMS displacement per axis over the blocks with content, from (B, T, C, H, W) clips."""
    cur, prev = images[:, 1:].flatten(0, 1), images[:, :-1].flatten(0, 1)
    m = block_motion(cur, prev, block, radius, temperature, scale)
    moving = m[:, 3] > 0.05  # blocks with content
    if not moving.any():
        return 0.0
    disp = m[:, :2].permute(0, 2, 3, 1)[moving]  # (M, 2)
    return float(disp.pow(2).mean().sqrt())


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


def build_prior(cfg: PriorConfig, *, grid: list[int] | tuple[int, int], vqvae_config: dict, channels: int,
                **_: object) -> CodePrior:
    """A prior around a VQ-VAE of the recorded shape; `load_state_dict` fills in all weights."""
    from vqvideo.config import ModelConfig

    vqvae = VQVAE(ModelConfig(**vqvae_config), int(channels))
    return CodePrior(cfg, vqvae, (int(grid[0]), int(grid[1])))
