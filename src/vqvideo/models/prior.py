"""The temporal prior: how each layer of a frame moves, and so the next frame's codes.

A frame is split into rigid layers (`models/layers.py`: pieces of ink, or the whole scene; with
several frames seen, each object with its own pixels, `models/separate.py`), and every predicted
frame is composited from one real frame with each layer moved by its accumulated displacement.
The learned parts only decide *where* layers go, so a layer keeps its shape and ink for the whole
clip (`layers.py` says why a warp-and-resample loop smears):

1. Appearance: the anchor frame's codes, p x p per token (their frozen codebook vectors), go
   through multi-head self-attention over the frame (relative-position bias); each layer's
   token is its tokens' features pooled under its mask (what it is, how big, what is around it).
2. Dynamics: an LSTM per layer across time reads that token plus the layer's kinematics (its
   box's distances to the four walls, its last step) and predicts its next step as a residual
   on the velocity filter's. Each layer turns back at its own walls (`models/motion.py`: an
   inset per side, predicted from its token, or read from a turn the seen frames show), by an
   elastic bounce: an untrained prior moves at constant velocity between its frame's edges.
3. Action prior (a still image shows no motion): a categorical distribution over a layer's
   first step (whole-pixel bins within `motion_radius`) from its token and its place. Drawn
   once per layer per sample (SVG-LP: motion drawn per sequence, not noise per pixel), or given
   by the user (drags, a pan) or by the data's labels.
4. Output: the composited frame is encoded by the frozen VQ-VAE; the next frame's logits are
   minus the distances of its encoding to the codebook over a temperature (the codebook's own
   spacing), so argmax is the VQ-VAE's own code for the predicted frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvideo.config import PriorConfig
from vqvideo.models import layers as Ly
from vqvideo.models.glyphs import GLYPHS, Glyphs, cut_still, tile_shape
from vqvideo.models.hints import apply_hints, split_by_hints
from vqvideo.models.motion import (
    KIN,
    SIDES,
    STEP_SCALE,
    anchored,
    at_speed,
    extent,
    fit_motion,
    kinematics,
    observed_insets,
    pin_walls,
    reflect,
    running_velocity,
    update_velocity,
    wall_limits,
)
from vqvideo.models.objects import find_objects
from vqvideo.models.sampling import pick_codes
from vqvideo.models.separate import own_ink_boxes
from vqvideo.models.vqvae import VQVAE


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


class CodePrior(nn.Module):
    def __init__(self, cfg: PriorConfig, vqvae: VQVAE, grid: tuple[int, int]):
        super().__init__()
        h, w = grid
        p = cfg.patch
        if h % p or w % p:
            raise ValueError(f"prior.patch {p} must divide the code grid {h}x{w}")
        self.cfg = cfg
        self.vqvae = vqvae.eval()  # frozen: its decoder gives the anchor, its encoder the codes
        for q in self.vqvae.parameters():
            q.requires_grad_(False)
        k, d = vqvae.quantizer.codebook.shape
        self.num_codes, self.patch, self.grid = k, p, (h, w)
        self.token_grid = (h // p, w // p)
        self.tokens = self.token_grid[0] * self.token_grid[1]
        self.block = p * vqvae.factor  # pixels per token side
        self.size = (h * vqvae.factor, w * vqvae.factor)
        c = cfg.width
        self.inp = nn.Sequential(nn.Linear(p * p * d, c), nn.LayerNorm(c))
        self.pos = nn.Parameter(torch.zeros(1, self.tokens, c))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(SpatialBlock(c, cfg.heads, self.token_grid, cfg.dropout) for _ in range(cfg.layers))
        self.app = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, c))
        self.kin = nn.Linear(KIN, c)
        self.lstm = nn.LSTM(c, c, batch_first=True)
        self.step_head = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, c), nn.GELU(), nn.Linear(c, 2))
        nn.init.zeros_(self.step_head[-1].weight)
        nn.init.zeros_(self.step_head[-1].bias)
        r = cfg.motion_radius
        self.action_head = nn.Sequential(nn.Linear(c + KIN, c), nn.GELU(), nn.Linear(c, (2 * r + 1) ** 2))
        self.wall_head = nn.Sequential(nn.Linear(c + KIN, c), nn.GELU(), nn.Linear(c, SIDES))
        nn.init.zeros_(self.wall_head[-1].weight)  # untrained: a box turns at the frame's edge
        nn.init.zeros_(self.wall_head[-1].bias)
        with torch.no_grad():  # code logits on the scale of the codebook's own spacing
            cb = vqvae.quantizer.codebook.float()
            spacing = torch.cdist(cb, cb).pow(2).median().clamp_min(1e-6) if k > 1 else torch.tensor(1.0)
        self.register_buffer("log_tau", torch.log(spacing / 4))
        # the size (w, h) of the box objects bounce in, as the training clips show it (0: unknown)
        self.register_buffer("box_size", torch.zeros(2))
        # the one speed every object moves at, as the training clips show it (0: several)
        self.register_buffer("speed", torch.zeros(()))
        # what an object looks like (`models/glyphs.py`): glyphs of the training clips' objects,
        # how many the bank holds and how many objects a frame holds (0: no bank)
        self.register_buffer("glyphs", torch.zeros(GLYPHS, *tile_shape(self.size)))
        self.register_buffer("glyph_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("objects", torch.zeros((), dtype=torch.long))

    def shape_meta(self) -> dict:
        """What `build_prior` needs to rebuild this prior before loading its weights."""
        return {"grid": list(self.grid), "vqvae_config": self.vqvae.cfg.model_dump(mode="json"),
                "channels": self.vqvae.channels, "num_codes": self.num_codes,
                "code_dim": int(self.vqvae.quantizer.codebook.shape[1])}

    def train(self, mode: bool = True):
        super().train(mode)
        self.vqvae.eval()  # always: the frozen model has no training behaviour to switch on
        return self

    def learned_state(self) -> dict[str, Tensor]:
        """The prior's own weights, without the frozen VQ-VAE's (saved once, beside it)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("vqvae.")}

    # ---------------------------------------------------------- pieces

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """(N, h, w) codes -> (N, C, H, W) frames through the frozen decoder."""
        return self.vqvae.decode_indices(codes).float()

    def appearance(self, codes: Tensor, layers: Ly.Layers) -> Tensor:
        """Anchor codes (B, h, w) and its layers -> one token per layer (B, L, C)."""
        b, h, w = codes.shape
        p = self.patch
        x = self.vqvae.quantizer.codebook[codes].float()  # (B, h, w, D)
        x = x.view(b, h // p, p, w // p, p, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, self.tokens, -1)
        x = self.inp(x) + self.pos  # (B, N, C)
        for blk in self.blocks:
            x = blk(x)
        m = F.avg_pool2d(layers.masks, self.block).flatten(2)  # (B, L, N) share of each token
        m = m / m.sum(-1, keepdim=True).clamp_min(1e-6)
        return self.app(torch.einsum("bln,bnc->blc", m, x))

    def still_state(self, layers: Ly.Layers) -> Tensor:
        """(B, L, KIN) each layer's state at the anchor, with no step known."""
        zero = torch.zeros(*layers.masks.shape[:2], 1, 2, device=layers.masks.device)
        return kinematics(layers.boxes(), zero, zero, layers.scene, layers.valid, self.size, self.block)[:, :, 0]

    def insets(self, app: Tensor, layers: Ly.Layers, ink: Tensor | None = None) -> Tensor:
        """(B, L, C) tokens -> (B, L, 4) each layer's predicted walls: px from the frame's left, top,
        right and bottom edges at which its ink box (`ink` (B, L, 4); default the layers' boxes)
        turns back. Predicted as the box that bounces: the ink's margin in it (about centred),
        and that box's size less the ink's (from `box_size`, the size the training clips show, where known), so
        one side's turn, once seen, places the other side as well (`motion.pin_walls`)."""
        out = STEP_SCALE * self.wall_head(torch.cat([app, self.still_state(layers)], -1))
        width = extent(layers.boxes() if ink is None else ink)
        slack = out[..., 2:] + torch.where(self.box_size > 0, self.box_size - width, torch.zeros_like(width))
        margin = slack / 2 + out[..., :2]  # about centred in its box, as the data draws its digits
        return torch.cat([margin, slack - margin], -1)

    def step_logits(self, app: Tensor, kin0: Tensor) -> Tensor:
        """The action prior: (B, L, C) tokens and (B, L, KIN) states -> (B, L, S) first-step logits."""
        kin0 = torch.cat([kin0[..., :8], torch.zeros_like(kin0[..., 8:12]), kin0[..., 12:]], -1)  # no step given
        return self.action_head(torch.cat([app, kin0], -1))

    def step_bins(self) -> Tensor:
        return Ly._window(self.cfg.motion_radius, self.log_tau.device)  # (S, 2) as (dx, dy)

    def draw_steps(self, logits: Tensor, sampling: str, generator: torch.Generator | None) -> Tensor:
        """(B, L, S) action logits -> (B, L, 2) first steps: the mode, or a draw (+ sub-pixel jitter)."""
        bins = self.step_bins()
        if sampling == "argmax":
            return bins[logits.argmax(-1)]
        probs = logits.float().softmax(-1).flatten(0, 1).cpu()
        pick = torch.multinomial(probs, 1, generator=generator)[:, 0]
        jitter = torch.rand(len(pick), 2, generator=generator) - 0.5
        return (bins.cpu()[pick] + jitter).view(*logits.shape[:2], 2).to(logits.device)

    def dynamics(self, app: Tensor, layers: Ly.Layers, disp: Tensor, steps: int,
                 first_step: Tensor | None = None, ink_boxes: Tensor | None = None) -> Tensor:
        """Roll each layer forward: (B, L, Tc, 2) displacements seen -> (B, L, Tc + steps, 2).

        The seen frames are read as they are (teacher forcing); after them the prior's own steps
        are fed back. `first_step` (B, L, 2) is the step into frame 1 when only one frame is seen
        (an action); with more, the step before frame 0 is taken to equal the first one seen.
        `ink_boxes` (B, L, 4): the layers' ink boxes at the anchor (`Layers.ink_boxes`), which
        their walls stand against (default: the layers' boxes).
        """
        b, n_l, tc, _ = disp.shape
        boxes, valid = layers.boxes(), layers.valid
        seen = disp[:, :, 1:] - disp[:, :, :-1]  # (B, L, Tc-1, 2)
        before = seen[:, :, :1] if tc > 1 else (first_step[:, :, None] if first_step is not None
                                                 else torch.zeros_like(disp[:, :, :1]))
        into = torch.cat([before, seen], 2)  # (B, L, Tc, 2): the step that brought each frame
        if tc > 1:  # the filter averages the seen steps (not the copy standing before frame 0)
            vel, n = running_velocity(seen)
            vel = torch.cat([vel[:, :, :1], vel], 2)
        else:
            vel, n = running_velocity(into)
        kin = kinematics(boxes, disp, into, layers.scene, valid, self.size, self.block, vel)
        x = (app[:, :, None] + self.kin(kin)).flatten(0, 1)  # (B*L, Tc, C)
        y, state = self.lstm(x)
        v = vel[:, :, -1]
        ink = boxes if ink_boxes is None else ink_boxes
        objects = valid & ~layers.scene[:, None]
        lo, hi = wall_limits(ink, self.insets(app, layers, ink), None, self.size)  # predicted
        shown_lo, shown_hi = lo, hi
        known_lo = known_hi = torch.zeros_like(lo, dtype=torch.bool)
        pos = disp[:, :, -1]
        held = valid[:, :, None].expand(-1, -1, tc)
        if tc > 2:  # an object's state fitted through all its seen places, a bounce included
            fit_pos, fit_vel, wall, turned, fitted = fit_motion(disp, trusted=anchored(disp), speed=self.speed,
                                                                active=objects)
            held = held & fitted  # places off the fitted motion (a tracker's slip) show no wall
        if tc > 1:  # a turn the seen frames show places that wall better than any guess
            seen_inset, shown = observed_insets(ink, disp, held.float(), self.size)
            shown_lo, shown_hi = wall_limits(ink, seen_inset, None, self.size)
            known_lo, known_hi = shown[..., :2], shown[..., 2:]
        if tc > 2:
            obj = objects[..., None]
            pos, v = torch.where(obj, fit_pos, pos), torch.where(obj, fit_vel, v)
            at_lo, at_hi = obj & turned & (fit_vel > 0), obj & turned & (fit_vel < 0)
            shown_lo, known_lo = torch.where(at_lo, wall, shown_lo), known_lo | at_lo
            shown_hi, known_hi = torch.where(at_hi, wall, shown_hi), known_hi | at_hi
        # ink is drawn at whole pixels in a frame of whole pixels: it turns a whole number of
        # pixels from where the anchor drew it (a wall known to half a pixel is then exact)
        # (rounded straight through: the position loss still teaches the walls)
        lo, hi = (w + (w.round() - w).detach() for w in pin_walls(lo, hi, shown_lo, shown_hi, known_lo, known_hi, disp))
        if tc > 1:  # objects that all move at one speed: the seen frames give the direction
            v = at_speed(v, self.speed, objects)
        # the next step: the filter's velocity plus what the LSTM knows better; a given action
        # is the step into frame 1 as it is
        step = v + STEP_SCALE * self.step_head(y[:, -1]).view(b, n_l, 2)
        if tc == 1 and first_step is not None:
            step = first_step
        out = [disp]
        for i in range(steps):
            new, turned = reflect(pos + step, lo, hi, objects)
            moved, pos = new - pos, new
            out.append(pos[:, :, None])
            if i == steps - 1:
                break
            # a bounce mirrors the velocity; the filter then averages the full step, not the part
            # of it left after the wall
            v, n = update_velocity(torch.where(turned, -v, v), n, torch.where(turned, -step, step))
            k = kinematics(boxes, pos[:, :, None], moved[:, :, None], layers.scene, valid, self.size, self.block,
                           v[:, :, None])
            y, state = self.lstm((app[:, :, None] + self.kin(k)).flatten(0, 1), state)
            step = v + STEP_SCALE * self.step_head(y[:, -1]).view(b, n_l, 2)
        return torch.cat(out, 2)

    def code_logits(self, frames: Tensor) -> Tensor:
        """(N, C, H, W) frames -> (N, h, w, K): minus the distances of their encodings to the codebook."""
        z = self.vqvae.encode(frames)
        cb = self.vqvae.quantizer.codebook.float()
        zf = z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (N*h*w, D)
        # -||z - e||^2 / tau without ||z||^2 (the same for every code of a position)
        inv_tau = torch.exp(-self.log_tau)
        logits = torch.addmm(-cb.pow(2).sum(1) * inv_tau, zf, cb.t() * (2 * inv_tau))
        return logits.view(z.shape[0], z.shape[2], z.shape[3], -1)

    def glyph_bank(self) -> Glyphs | None:
        """What the training clips' objects look like (`models/glyphs.py`); None without a bank."""
        if int(self.objects) < 1:
            return None
        return Glyphs(self.glyphs[: int(self.glyph_count)], int(self.objects), self.box_size)

    # ---------------------------------------------------------- the whole prior

    @torch.no_grad()
    def plan(self, context: Tensor, steps: int, *, sampling: str = "argmax",
             generator: torch.Generator | None = None, first_step: Tensor | None = None,
             hints: list | None = None, layers: Ly.Layers | None = None, pan: Tensor | None = None,
             images: Tensor | None = None) -> dict:
        """Context codes (B, Tc, h, w) -> the layers, their anchor and their displacements.

        Returns {"anchor": (B, C, H, W), "layers", "disp": (B, L, Tc + steps, 2) from the anchor,
        "frame": (B,) the anchor's index among the context frames}. With one frame, each layer's first step is
        `first_step`, else taken from `hints` (`[(x, y, dx, dy), ...]` per input: the layer under
        pixel (x, y) makes the step (dx, dy); a hint outside every layer moves the nearest), else
        drawn from the action prior; `pan` (B, 2) is every layer's first step (hints still
        move the layer under them). `layers` (of the last context frame) replace the
        segmentation (objects known from labels). `images` (B, Tc, C, H, W): the context
        frames themselves, composited from instead of the codes' decoding.
        """
        b, tc = context.shape[:2]
        if images is None:  # the codes decoded; given frames themselves are better (no VQ loss)
            images = self.decode(context.flatten(0, 1)).view(b, tc, -1, *self.size)  # (B, Tc, C, H, W)
        images = images.float()
        ar = torch.arange(b, device=context.device)
        given = layers is not None
        if layers is None:  # the objects in the frames seen (each with its own pixels, from 3 frames)
            frame, layers, disp = find_objects(images, self.cfg.max_layers, self.cfg.motion_radius,
                                               self.glyph_bank())
        else:
            frame = torch.full((b,), tc - 1, dtype=torch.long, device=context.device)
            disp = Ly.track(images, frame, layers, self.cfg.motion_radius)[0]  # (B, L, Tc, 2) from the anchor
            layers = Ly.merge_common_motion(layers, disp)
        anchor = images[ar, frame]
        if tc == 1 and not given:  # pieces that are not one object each: cut by what objects look like
            layers = cut_still(layers, anchor, self.glyph_bank(), self.box_size)
        if tc == 1 and first_step is None and hints:
            layers = split_by_hints(layers, hints)
        app = self.appearance(context[ar, frame], layers)
        if tc == 1 and first_step is None and pan is not None:
            first_step = pan.to(context.device).float()[:, None].expand(-1, layers.masks.shape[1], -1)
            if hints:
                first_step = apply_hints(first_step, layers, hints)
        elif tc == 1 and first_step is None:
            first_step = torch.zeros(b, layers.masks.shape[1], 2, device=context.device)
            if sampling == "sample" or not hints:
                first_step = self.draw_steps(self.step_logits(app, self.still_state(layers)), sampling, generator)
                first_step = at_speed(first_step, self.speed, layers.valid & ~layers.scene[:, None])
            if hints:
                first_step = apply_hints(first_step, layers, hints)
        # what each layer's walls stand against: its own ink's box, read in the frames where
        # its seen places follow its fitted motion (a tracker's slip reads another's pixels)
        held = fit_motion(disp, trusted=anchored(disp))[4] if tc > 2 else layers.valid[:, :, None].expand(-1, -1, tc)
        disp = self.dynamics(app, layers, disp, steps, first_step, own_ink_boxes(images, frame, layers, disp, held))
        return {"anchor": anchor, "layers": layers, "disp": disp, "frame": frame}

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
        motion: str | None = None,
        first_step: Tensor | None = None,
        hints: list | None = None,
        layers: Ly.Layers | None = None,
        pan: Tensor | None = None,
        images: Tensor | None = None,
    ) -> Tensor:
        """Extend (B, Tc, h, w) context codes by `steps` frames -> (B, Tc + steps, h, w).

        `sampling: sample` draws each code from the logits at `temperature` (top-k optional);
        `argmax` takes the nearest code. `motion` (default: as `sampling`): `sample` draws each
        still image's motion from the action prior, `argmax` takes its most likely step.
        `first_step`, `hints`, `layers`, `pan` and `images`: see `plan`.
        """
        tc = context.shape[1]
        plan = self.plan(context, steps, sampling=motion or sampling, generator=generator,
                         first_step=first_step, hints=hints, layers=layers, pan=pan, images=images)
        frames = []
        for i in range(steps):
            img = Ly.render(plan["anchor"], plan["layers"], plan["disp"][:, :, tc + i])
            frames.append(pick_codes(self.code_logits(img), sampling, temperature, top_k, generator))
        return torch.cat([context, torch.stack(frames, 1)], 1) if frames else context


def build_prior(cfg: PriorConfig, vqvae: VQVAE, *, grid: list[int] | tuple[int, int], **_: object) -> CodePrior:
    """A prior around the given VQ-VAE; `load_state_dict(..., strict=False)` fills in its own weights."""
    return CodePrior(cfg, vqvae, (int(grid[0]), int(grid[1])))


class SceneStepLogits(nn.Module):
    """(B, h, w) code indices of a still frame -> (B, S) logits of its first step, the whole
    frame taken as one layer: the prior's learned action distribution, tensor in, tensor out.
    (Segmenting a frame into pieces and compositing them is plain code in vqvideo.models.layers.)"""

    def __init__(self, prior: CodePrior):
        super().__init__()
        self.prior = prior

    def forward(self, codes: Tensor) -> Tensor:
        b = codes.shape[0]
        h, w = self.prior.size
        masks = torch.zeros(b, self.prior.cfg.max_layers, h, w, device=codes.device)
        masks[:, 0] = 1.0
        layers = Ly.Layers(masks, torch.ones(b, dtype=torch.bool, device=codes.device))
        return self.prior.step_logits(self.prior.appearance(codes, layers), self.prior.still_state(layers))[:, 0]
