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

from vqvideo import distributed
from vqvideo.config import Params, PriorConfig, fingerprint
from vqvideo.data.clips import FrameData, to_tensor
from vqvideo.models.prior import CodePrior, gaussian_blur, motion_statistics
from vqvideo.models.vqvae import VQVAE
from vqvideo.stages.train import to_float
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
class Batch:
    codes: torch.Tensor  # (B, T, h, w) inputs then targets
    images: torch.Tensor  # (B, T, C, H, W) the codes decoded by the frozen decoder


def prior_loss(net: torch.nn.Module, model: CodePrior, batch: Batch, inputs: torch.Tensor | None = None,
               input_images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Teacher forcing: frames 0..T-2 in, 1..T-1 predicted; cross-entropy + photometric loss.

    `inputs`/`input_images` replace the input frames (own rollouts); targets stay the truth.
    """
    cfg = model.cfg
    codes = batch.codes
    inp = codes[:, :-1] if inputs is None else inputs
    imgs = batch.images[:, :-1] if input_images is None else input_images
    logits, _, warped, _ = net(inp, images=imgs.flatten(0, 1), return_warp=True)
    target = codes[:, 1:]
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1))
    out = {"ce": ce.detach()}
    if not torch.is_grad_enabled():  # token accuracy in evaluation only: an argmax over 20M logits
        out["accuracy"] = (logits.argmax(-1) == target).float().mean()
    loss = ce
    if cfg.photometric_weight > 0:
        nxt = batch.images[:, 1:].flatten(0, 1)
        photo = F.mse_loss(gaussian_blur(warped.float(), cfg.photometric_blur),
                           gaussian_blur(nxt, cfg.photometric_blur))
        loss = loss + cfg.photometric_weight * photo
        out["photometric"] = photo.detach()
    out["loss"] = loss
    return out


@torch.no_grad()
def rollout_mse_frame(model: CodePrior, batch: Batch, context: int) -> float:
    """Argmax rollout from `context` real frames: squared error per frame vs the decoded truth."""
    t = batch.codes.shape[1]
    if context >= t:
        return float("nan")
    rolled = model.rollout(batch.codes[:, :context], t - context)
    pred = model.decode(rolled[:, context:].flatten(0, 1))
    return float(((pred - batch.images[:, context:].flatten(0, 1)) ** 2).flatten(1).sum(1).mean())


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
    train_codes = encode_clips(vqvae, data.clips("train"), device, dtype=dtype)
    val_all = data.clips("val")
    pick = np.linspace(0, len(val_all) - 1, min(EVAL_CLIPS, len(val_all))).astype(int)
    val_codes = encode_clips(vqvae, val_all[pick], device, dtype=dtype)

    model = CodePrior(cfg, vqvae, tuple(train_codes.shape[2:])).to(device)
    with autocast(device, dtype):  # how fast things move in this data: for drawing still-image motion
        sample_clips = train_codes[np.linspace(0, len(train_codes) - 1, min(64, len(train_codes))).astype(int)]
        sample_images = model.decode(sample_clips.flatten(0, 1)).float()
    model.motion_rms.fill_(motion_statistics(sample_images.view(*sample_clips.shape[:2], *sample_images.shape[1:]),
                                             model.block, cfg.motion_radius, cfg.motion_temperature, model.motion_scale))
    net = distributed.wrap(model, info)
    loop_only = {"eval_every": 0, "log_every": 0, "checkpoint_every": 0, "device": device.type}
    fp = fingerprint(cfg.model_copy(update=loop_only), vqvae_fingerprint, data.fingerprint, str(dtype))
    loop = TrainLoop(
        "prior", model, LoopSpec.of(cfg), checkpoint, fp, on_log=on_log,
        items_per_step=cfg.batch_size * (train_codes.shape[1] - 1),
        progress_keys=("ce", "photometric"), writer=info.main,
    )
    train_codes = train_codes.to(device)
    n, t = train_codes.shape[:2]
    ctx = min(cfg.rollout_context, t - 1)
    start = int(cfg.rollout_start * cfg.steps)

    def make_batch(codes: torch.Tensor) -> Batch:
        with autocast(device, dtype):
            images = model.decode(codes.flatten(0, 1))
        return Batch(codes, images.float().view(*codes.shape[:2], *images.shape[1:]))

    def step_fn(step: int) -> dict:
        idx = torch.from_numpy(batch_indices(cfg.seed, step, cfg.batch_size, n)[shard]).to(device)
        batch = make_batch(train_codes[idx])
        inputs = images = None
        n_roll = int(round(cfg.rollout_fraction * len(idx))) if step >= start and ctx < t - 1 else 0
        if n_roll:  # own argmax rollouts as inputs after the context (exposure bias)
            with torch.no_grad(), autocast(device, dtype):
                rolled = model.rollout(batch.codes[:n_roll, :ctx], t - 1 - ctx)  # frames 0..T-2
                rolled_images = model.decode(rolled[:, ctx:].flatten(0, 1)).float()
            inputs = batch.codes[:, :-1].clone()
            inputs[:n_roll, ctx:] = rolled[:, ctx:]
            images = batch.images[:, :-1].clone()
            images[:n_roll, ctx:] = rolled_images.view(n_roll, t - 1 - ctx, *rolled_images.shape[1:])
        with autocast(device, dtype):
            return prior_loss(net, model, batch, inputs, images)

    def eval_fn() -> dict:
        rows: dict[str, list[float]] = {}
        for i in range(0, len(val_codes), max(cfg.batch_size, 16)):
            batch = make_batch(val_codes[i : i + max(cfg.batch_size, 16)].to(device))
            with autocast(device, dtype):
                out = prior_loss(model, model, batch)
                out["rollout_mse_frame"] = rollout_mse_frame(model, batch, ctx)
            for k, v in out.items():
                rows.setdefault(k, []).append(float(v))
        return {k: float(np.mean(v)) for k, v in rows.items()}

    result = loop.run(step_fn, eval_fn)
    val = [r for r in result.history if r["split"] == "val"][-1]
    return PriorResult(model.cpu().eval(), result, val, fp)


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
    from vqvideo.stages.train import check_inputs

    params: Params = load_params(args.params)
    data = check_inputs(params, args.frames)  # before any run is opened or file written
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
    from vqvideo.models.serving import NextFrameLogits
    from vqvideo.models.store import save_model

    own = section_params(params, "prior")
    run_id = tracking.stage_run_id(args.vqvae / tracking.RUN_FILE, own)
    with tracking.pipeline_run(None, run_id=run_id) as run:
        tracking.log_params(own)
        result = train_prior(params.prior, vqvae, vq_meta["fingerprint"], data,
                             checkpoint=args.checkpoints / "last.pt", on_log=tracking.log_metrics)
        if result.loop.resumed_from:
            import mlflow

            mlflow.set_tag("prior.resumed_from_step", result.loop.resumed_from)
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
        example = torch.zeros(1, 2, h, w, dtype=torch.int64)
        tracking.log_torch_model(NextFrameLogits(result.model), "prior", example.numpy())
    log.info("prior: val CE %.3f, accuracy %.3f, rollout error %.1f per frame -> %s", result.val["ce"],
             result.val["accuracy"], result.val.get("rollout_mse_frame", float("nan")), args.model_dir)
