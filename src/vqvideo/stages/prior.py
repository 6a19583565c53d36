"""prior: fit the attention + LSTM temporal prior on the frozen VQ-VAE's codes."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vqvideo import distributed
from vqvideo.config import Params, PriorConfig, fingerprint, source_fingerprint
from vqvideo.data.frames import FrameData, open_checked, to_float, to_tensor
from vqvideo.models import layers as Ly
from vqvideo.models.glyphs import collect_glyphs
from vqvideo.models.motion import bounce_box, common_speed, kinematics, observed_insets
from vqvideo.models.objects import choose_anchor
from vqvideo.models.prior import CodePrior
from vqvideo.models.separate import HELD, own_ink_boxes
from vqvideo.models.vqvae import VQVAE
from vqvideo.training import LoopResult, LoopSpec, TrainLoop, batch_indices
from vqvideo.utils import autocast, resolve_device, resolve_precision, seed_everything

log = logging.getLogger(__name__)

EVAL_CLIPS = 64


@torch.no_grad()
def encode_clips(vqvae: VQVAE, clips: np.ndarray, device: torch.device, batch: int = 512,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """(N, T, C, H, W) uint8 -> (N, T, h, w) int64 code indices (the encoder under `dtype`
    autocast, as the VQ-VAE was trained; the nearest-code search always in fp32)."""
    vqvae = vqvae.to(device).eval()
    n, t = clips.shape[:2]
    flat = clips.reshape(n * t, *clips.shape[2:])
    out = []
    for i in range(0, len(flat), batch):
        with autocast(device, dtype):
            out.append(vqvae.encode_indices(to_float(to_tensor(flat[i : i + batch]), device)).cpu())
    codes = torch.cat(out)
    return codes.view(n, t, *codes.shape[1:])


@dataclass
class Tracks:
    """What the prior learns from: each clip's layers at an anchor frame and where they went."""

    codes: torch.Tensor  # (N, h, w) the anchor frame's codes
    masks: torch.Tensor  # (N, L, H, W)
    scene: torch.Tensor  # (N,) bool
    disp: torch.Tensor  # (N, L, T, 2) displacement from the anchor frame, px
    weight: torch.Tensor  # (N, L, T) 1 while the layer exists and the tracker holds it
    ink: torch.Tensor  # (N, L, 4) each layer's ink box at the anchor (its walls stand against it)

    def layers(self, idx: torch.Tensor) -> Ly.Layers:
        return Ly.Layers(self.masks[idx], self.scene[idx])

    def __len__(self) -> int:
        return len(self.codes)


@torch.no_grad()
def measure_tracks(vqvae: VQVAE, clips: np.ndarray, cfg: PriorConfig, device: torch.device,
                   batch: int = 64, desc: str = "tracking") -> Tracks:
    """Segment each clip's first frame into layers and track them through the clip (the
    motion measured in the data itself: no labels needed, so footage works alike)."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("codes", "masks", "scene", "disp", "weight", "ink")}
    for i in tqdm(range(0, len(clips), batch), desc=desc, unit="batch", leave=False):
        x = to_float(to_tensor(clips[i : i + batch]), device)  # (B, T, C, H, W)
        ar = torch.arange(len(x), device=device)
        frame = choose_anchor(x[:, : cfg.max_context], cfg.max_layers)
        layers = Ly.segment(x[ar, frame], cfg.max_layers, x[ar, (frame - 1).abs()], cfg.motion_radius)
        disp, cost = Ly.track(x, frame, layers, cfg.motion_radius)
        layers = Ly.merge_common_motion(layers, disp)  # a merged layer keeps its first piece's track
        lost = cost >= Ly.LOST  # once lost (either side of the anchor), a layer leaves the loss
        after = lost.float().cummax(2).values * (torch.arange(x.shape[1], device=device) > frame[:, None, None])
        before = lost.flip(2).float().cummax(2).values.flip(2) * (torch.arange(x.shape[1], device=device) < frame[:, None, None])
        held = (1 - after) * (1 - before) * layers.valid[:, :, None].float()
        out["codes"].append(vqvae.encode_indices(x[ar, frame]))
        for k, v in (("masks", layers.masks), ("scene", layers.scene), ("disp", disp), ("weight", held),
                     ("ink", own_ink_boxes(x, frame, layers, disp, cost < HELD))):
            out[k].append(v)
    return Tracks(**{k: torch.cat(v) for k, v in out.items()})


GLYPH_STRIDE = 3  # every third frame of a clip is looked at for its objects standing apart


@torch.no_grad()
def read_glyphs(clips: np.ndarray, model: CodePrior, cfg: PriorConfig, device: torch.device,
                batch: int = 64) -> tuple[torch.Tensor, int]:
    """The glyph bank (`models/glyphs.py`) of training clips (N, T, C, H, W) uint8, and the
    number of objects a frame holds, in the box `model` has read from their tracks."""
    x = torch.cat([to_float(to_tensor(clips[i : i + batch, ::GLYPH_STRIDE]), torch.device("cpu"))
                   for i in range(0, len(clips), batch)])
    return collect_glyphs(x, model.box_size.cpu(), cfg.max_layers, tuple(model.glyphs.shape[1:]), len(model.glyphs))


def set_glyphs(model: CodePrior, bank: torch.Tensor, count: int) -> None:
    """Store the bank (G, th, tw) `read_glyphs` gave, and the objects a frame holds, in `model`."""
    n = min(len(bank), len(model.glyphs))
    model.glyphs.zero_()
    model.glyphs[:n] = bank[:n].to(model.glyphs)
    model.glyph_count.fill_(n)
    model.objects.fill_(count if n else 0)


def step_targets(disp: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, L, T, 2) displacements -> (B, L, T-1) action bin of each step (see CodePrior.step_bins)."""
    step = (disp[:, :, 1:] - disp[:, :, :-1]).round().clamp(-radius, radius).long() + radius
    return step[..., 1] * (2 * radius + 1) + step[..., 0]


def first_velocity(disp: torch.Tensor, frames: int = 4) -> torch.Tensor:
    """(B, L, T, 2) tracked displacements -> (B, L, 2) the velocity at frame 0, to sub-pixel
    precision as labels or a user give it: per axis the mean step length over the first
    `frames` steps (a bounce flips a step's sign, not its length), signed as the first steps."""
    steps = disp[:, :, 1 : frames + 1] - disp[:, :, :frames]
    lead = torch.where(steps[:, :, 0] != 0, steps[:, :, 0], steps[:, :, 1] if steps.shape[2] > 1 else steps[:, :, 0])
    return torch.sign(lead) * steps.abs().mean(2)


def prior_loss(model: CodePrior, tracks: Tracks, idx: torch.Tensor, context: int,
               reverse: bool = False) -> dict[str, torch.Tensor]:
    """Roll the layers of clips `idx` forward from `context` seen frames and score where they land.

    Position loss: Huber on the predicted displacement of every later frame (the error a
    viewer sees, bounces included, compounded over the whole clip as in a real rollout); with
    one seen frame the first step is given (an action). Action loss: cross-entropy of each
    step's bin under the action prior, from the layer's token and place. Wall loss: Huber on
    each layer's predicted insets where the clip shows it turning (`observed_insets`).
    """
    layers = tracks.layers(idx)
    disp, weight = tracks.disp[idx], tracks.weight[idx]
    if reverse:  # time runs backwards as well as forwards in this physics: twice the motions
        disp, weight = disp.flip(2), weight.flip(2)
    t = disp.shape[2]
    app = model.appearance(tracks.codes[idx], layers)
    first = first_velocity(disp) if context == 1 else None
    pred = model.dynamics(app, layers, disp[:, :, :context], t - context, first, tracks.ink[idx])
    w = weight[:, :, context:]
    err = F.huber_loss(pred[:, :, context:], disp[:, :, context:], reduction="none", delta=1.0).sum(-1)
    pos = (err * w).sum() / w.sum().clamp_min(1)
    kin = kinematics(layers.boxes(), disp[:, :, :-1], torch.zeros_like(disp[:, :, :-1]), layers.scene,
                     layers.valid, model.size, model.block)  # (B, L, T-1, KIN)
    logits = model.step_logits(app[:, :, None].expand(-1, -1, t - 1, -1), kin)
    target = step_targets(disp, model.cfg.motion_radius)
    wa = weight[:, :, 1:]
    ce = F.cross_entropy(logits.flatten(0, 2), target.flatten(), reduction="none")
    action = (ce * wa.flatten()).sum() / wa.sum().clamp_min(1)
    shown_inset, shown = observed_insets(tracks.ink[idx], disp, weight, model.size)
    shown = shown & (layers.valid & ~layers.scene[:, None])[..., None]
    wall_err = F.huber_loss(model.insets(app, layers, tracks.ink[idx]), shown_inset, reduction="none", delta=1.0)
    wall = (wall_err * shown).sum() / shown.sum().clamp_min(1)
    last = ((pred[:, :, -1] - disp[:, :, -1]).norm(dim=-1) * weight[:, :, -1]).sum() / weight[:, :, -1].sum().clamp_min(1)
    return {"loss": pos + wall + model.cfg.action_weight * action, "position": pos.detach(),
            "action_ce": action.detach(), "wall": wall.detach(), "last_px": last.detach()}


def context_of(seed: int, step: int, max_context: int, t: int) -> tuple[int, bool]:
    """Seen frames at `step`, and whether time runs backwards: a pure function of (seed, step),
    like the batch order."""
    rng = np.random.default_rng([seed, step, 7])
    return int(rng.integers(1, min(max_context, t - 1) + 1)), bool(rng.integers(2))


@torch.no_grad()
def rollout_mse_frame(model: CodePrior, codes: torch.Tensor, context: int) -> float:
    """Argmax rollout from `context` frames' codes: squared error per frame vs the decoded truth."""
    t = codes.shape[1]
    if context >= t:
        return float("nan")
    rolled = model.rollout(codes[:, :context], t - context)
    pred = model.decode(rolled[:, context:].flatten(0, 1))
    truth = model.decode(codes[:, context:].flatten(0, 1))
    return float(((pred - truth) ** 2).flatten(1).sum(1).mean())


@dataclass
class PriorResult:
    model: CodePrior
    loop: LoopResult
    val: dict[str, float]
    fingerprint: str


def train_prior(
    cfg: PriorConfig,
    vqvae: VQVAE,
    vqvae_fingerprint: str,
    data: FrameData,
    *,
    checkpoint: Path | None = None,
    on_log: Callable[[dict, int], None] | None = None,
) -> PriorResult:
    info = distributed.current()
    device = info.device(resolve_device(cfg.device))
    dtype = resolve_precision(cfg.precision, device)
    seed_everything(cfg.seed)
    shard = info.shard(cfg.batch_size)
    vqvae = vqvae.to(device).eval()
    train_all = data.clips("train")
    pick = np.linspace(0, len(train_all) - 1, min(cfg.track_clips, len(train_all))).round().astype(int)
    tracks = measure_tracks(vqvae, train_all[np.unique(pick)], cfg, device)
    val_all = data.clips("val")
    vpick = np.unique(np.linspace(0, len(val_all) - 1, min(EVAL_CLIPS, len(val_all))).round().astype(int))
    val_tracks = measure_tracks(vqvae, val_all[vpick], cfg, device, desc="tracking val")
    val_codes = encode_clips(vqvae, val_all[vpick[:16]], device, dtype=dtype)
    t = tracks.disp.shape[2]
    ctx = min(cfg.max_context, t - 1)

    model = CodePrior(cfg, vqvae, tuple(val_codes.shape[2:])).to(device)
    objects = tracks.masks.flatten(2).any(2) & ~tracks.scene[:, None]
    model.box_size.copy_(bounce_box(tracks.ink, tracks.disp, tracks.weight, objects, model.size))
    model.speed.copy_(common_speed(tracks.disp, tracks.weight, objects))
    set_glyphs(model, *read_glyphs(train_all[np.unique(pick)], model, cfg, device))
    log.info("prior: %d glyphs of the training clips' objects, %d objects a frame (0: no bank)",
             int(model.glyph_count), int(model.objects))
    log.info("prior: the training clips' objects bounce in a box of %s px, at a speed of %.2f px a frame (0: several)",
             model.box_size.tolist(), float(model.speed))
    loop_only = {"eval_every": 0, "log_every": 0, "checkpoint_every": 0, "device": device.type}
    code = source_fingerprint("models.prior", "models.motion", "models.layers", "models.objects", "models.separate",
                              "models.glyphs", "stages.prior")
    fp = fingerprint(cfg.model_copy(update=loop_only), vqvae_fingerprint, data.fingerprint, str(dtype), code)
    loop = TrainLoop(
        "prior", model, LoopSpec.of(cfg), checkpoint, fp, on_log=on_log,
        items_per_step=cfg.batch_size, progress_keys=("position", "last_px"), writer=info.main,
        metric_prefix="prior/{split}_",
    )
    n = len(tracks)

    def step_fn(step: int) -> dict:
        idx = torch.from_numpy(batch_indices(cfg.seed, step, cfg.batch_size, n)[shard]).to(device)
        return prior_loss(model, tracks, idx, *context_of(cfg.seed, step, cfg.max_context, t))

    def eval_fn() -> dict:
        model.eval()
        idx = torch.arange(len(val_tracks), device=device)
        with torch.no_grad():
            out = {k: float(v) for k, v in prior_loss(model, val_tracks, idx, ctx).items()}
            still = prior_loss(model, val_tracks, idx, 1)
        out["still_last_px"] = float(still["last_px"])
        out["rollout_mse_frame"] = rollout_mse_frame(model, val_codes, ctx)
        best = loop.extra_state.get("best")
        if best is None or out["rollout_mse_frame"] < best["rollout_mse_frame"]:
            # the weights kept (in the checkpoint too, for a resume): trained longer, the learned
            # walls fit the training clips' digits and turn the validation clips' ones wrong
            loop.extra_state["best"] = {"rollout_mse_frame": out["rollout_mse_frame"], "step": loop.step,
                                        "state": {k: v.detach().cpu().clone() for k, v in model.learned_state().items()}}
        return out

    result = loop.run(step_fn, eval_fn)
    evals = [r for r in result.history if r["split"] == "val"]
    best = loop.extra_state.get("best")
    if best is not None:  # the validation clips' best rollout
        model.load_state_dict({k: v.to(device) for k, v in best["state"].items()}, strict=False)
        evals = [r for r in evals if r["step"] == best["step"]] or evals
        log.info("prior: the weights of step %d kept (validation rollout error %.1f per frame)",
                 best["step"], best["rollout_mse_frame"])
    return PriorResult(model.cpu().eval(), result, evals[-1], fp)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, default=Path("data/frames"))
    p.add_argument("--vqvae", type=Path, default=Path("models/vqvae"))
    p.add_argument("--model-dir", type=Path, default=Path("models/prior"))
    p.add_argument("--checkpoints", type=Path, default=Path("models/checkpoints/prior"),
                   help="kept across runs (DVC persist): a killed run resumes from here")
    p.add_argument("--history", type=Path, default=Path("reports/prior/history.csv"))


def main(args: argparse.Namespace) -> None:
    from vqvideo import tracking
    from vqvideo.config import load_params
    from vqvideo.errors import require_file
    from vqvideo.models.store import check_frames_fit, load_vqvae

    params: Params = load_params(args.params)
    data = open_checked(args.frames, params.sample.channels, params.sample.size)  # before any run is opened or file written
    vqvae, vq_meta = load_vqvae(args.vqvae)
    check_frames_fit(vq_meta, data.stats["clip_shape"], args.frames)
    require_file(args.vqvae / tracking.RUN_FILE, "the pipeline's MLflow run record", "run `dvc repro train` first")
    with distributed.session(resolve_device(params.prior.device)) as info:
        if info.main:
            _main_rank(args, params, data, vqvae, vq_meta)
        else:  # other ranks train in lockstep; rank 0 alone writes and logs
            train_prior(params.prior, vqvae, vq_meta["fingerprint"], data, checkpoint=args.checkpoints / "last.pt")


def _main_rank(args: argparse.Namespace, params: Params, data: FrameData, vqvae: VQVAE, vq_meta: dict) -> None:
    from vqvideo import tracking
    from vqvideo.config import section_params
    from vqvideo.io import staging_dir, write_history, write_json
    from vqvideo.models.prior import SceneStepLogits
    from vqvideo.models.store import save_model

    own = section_params(params, "prior")
    run_id = tracking.stage_run_id(args.vqvae / tracking.RUN_FILE, own)
    with tracking.pipeline_run(None, run_id=run_id) as run:
        tracking.log_params(own)
        result = train_prior(params.prior, vqvae, vq_meta["fingerprint"], data,
                             checkpoint=args.checkpoints / "last.pt", on_log=tracking.log_metrics)
        if result.loop.resumed_from:
            tracking.set_tag("prior.resumed_from_step", result.loop.resumed_from)
        trainable = sum(q.numel() for q in result.model.parameters() if q.requires_grad)
        summary = {
            "parameters": trainable,  # the frozen VQ-VAE inside is counted with the VQ-VAE
            "train_seconds": result.loop.train_seconds,
            "frames_per_second": result.loop.last_phase_items_per_s,
            "steps": params.prior.steps,
            "resumed_from_step": result.loop.resumed_from,
            "processes": distributed.current().world,
            "val": result.val,
        }
        meta = {"shape": result.model.shape_meta(), "vqvae_fingerprint": vq_meta["fingerprint"], "fingerprint": result.fingerprint, **summary}
        with staging_dir(args.model_dir) as tmp:
            save_model(tmp, "prior", result.model, params.prior.model_dump(mode="json"), meta)
            write_json(tmp / "summary.json", summary)
            tracking.record_run(tmp / tracking.RUN_FILE, run)
        write_history(args.history, result.loop.history)
        tracking.log_metrics({"prior.train_seconds": result.loop.train_seconds,
                              "prior.frames_per_second": result.loop.last_phase_items_per_s,
                              "prior.parameters": summary["parameters"]})
        tracking.log_artifact(args.history, "prior")
        h, w = result.model.grid
        example = torch.zeros(2, h, w, dtype=torch.int64)
        tracking.log_torch_model(SceneStepLogits(result.model), "prior", example.numpy())
    log.info("prior: val position error %.2f px at the last frame (%.2f px from one frame and its action), "
             "rollout error %.1f per frame -> %s", result.val["last_px"], result.val["still_last_px"],
             result.val.get("rollout_mse_frame", float("nan")), args.model_dir)
