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

from vqvideo.config import Params, PriorConfig, fingerprint
from vqvideo.data.clips import FrameData, to_tensor
from vqvideo.models.prior import CodePrior
from vqvideo.models.vqvae import VQVAE
from vqvideo.stages.train import to_float
from vqvideo.training import LoopResult, LoopSpec, TrainLoop, batch_indices
from vqvideo.utils import autocast, resolve_device, resolve_precision, seed_everything

log = logging.getLogger(__name__)

EVAL_CLIPS = 64


@torch.no_grad()
def encode_clips(vqvae: VQVAE, clips: np.ndarray, device: torch.device, batch: int = 512) -> torch.Tensor:
    """(N, T, C, H, W) uint8 -> (N, T, h, w) int64 code indices."""
    vqvae = vqvae.to(device).eval()
    n, t = clips.shape[:2]
    flat = clips.reshape(n * t, *clips.shape[2:])
    out = []
    for i in range(0, len(flat), batch):
        out.append(vqvae.encode_indices(to_float(to_tensor(flat[i : i + batch]), device)).cpu())
    codes = torch.cat(out)
    return codes.view(n, t, *codes.shape[1:])


def prior_loss(model: CodePrior, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing: frames 0..T-2 in, frames 1..T-1 predicted; returns (loss, accuracy)."""
    logits, _ = model(codes[:, :-1])
    target = codes[:, 1:]
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1))
    acc = (logits.argmax(-1) == target).float().mean()
    return loss, acc


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
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    seed_everything(cfg.seed)
    train_codes = encode_clips(vqvae, data.clips("train"), device)
    val_all = data.clips("val")
    pick = np.linspace(0, len(val_all) - 1, min(EVAL_CLIPS, len(val_all))).astype(int)
    val_codes = encode_clips(vqvae, val_all[pick], device)
    grid = tuple(train_codes.shape[2:])

    model = CodePrior(cfg, vqvae.quantizer.codebook.detach().cpu(), grid).to(device)
    loop_only = {"eval_every": 0, "log_every": 0, "checkpoint_every": 0, "device": device.type}
    fp = fingerprint(cfg.model_copy(update=loop_only), vqvae_fingerprint, data.fingerprint, str(dtype))
    loop = TrainLoop(
        "prior", model, LoopSpec.of(cfg), checkpoint, fp, on_log=on_log,
        items_per_step=cfg.batch_size * (train_codes.shape[1] - 1), progress_keys=("loss", "accuracy"),
    )
    train_codes = train_codes.to(device)
    n = len(train_codes)

    def step_fn(step: int) -> dict:
        idx = torch.from_numpy(batch_indices(cfg.seed, step, cfg.batch_size, n)).to(device)
        with autocast(device, dtype):
            loss, acc = prior_loss(model, train_codes[idx])
        return {"loss": loss, "accuracy": acc}

    def eval_fn() -> dict:
        losses, accs = [], []
        for i in range(0, len(val_codes), cfg.batch_size):
            with autocast(device, dtype):
                loss, acc = prior_loss(model, val_codes[i : i + cfg.batch_size].to(device))
            losses.append(float(loss))
            accs.append(float(acc))
        return {"loss": float(np.mean(losses)), "accuracy": float(np.mean(accs))}

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
    from vqvideo.config import load_params, section_params
    from vqvideo.io import staging_dir, write_history, write_json
    from vqvideo.models.serving import NextFrameLogits
    from vqvideo.models.store import load_vqvae, num_parameters, save_model

    params: Params = load_params(args.params)
    data = FrameData.open(args.frames)
    vqvae, vq_meta = load_vqvae(args.vqvae)
    own = section_params(params, "prior")
    run_id = tracking.stage_run_id(args.vqvae / tracking.RUN_FILE, own)
    with tracking.pipeline_run(None, run_id=run_id) as run:
        tracking.log_params(own)
        result = train_prior(params.prior, vqvae, vq_meta["fingerprint"], data,
                             checkpoint=args.checkpoints / "last.pt", on_log=tracking.log_metrics)
        summary = {
            "parameters": num_parameters(result.model),
            "train_seconds": result.loop.train_seconds,
            "frames_per_second": result.loop.last_phase_items_per_s,
            "steps": params.prior.steps,
            "resumed_from_step": result.loop.resumed_from,
            "val": result.val,
        }
        shape = {"num_codes": result.model.num_codes, "code_dim": int(result.model.codebook.shape[1]),
                 "grid": list(result.model.grid)}
        meta = {"shape": shape, "vqvae_fingerprint": vq_meta["fingerprint"], "fingerprint": result.fingerprint, **summary}
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
    log.info("prior: val loss %.3f, accuracy %.3f -> %s", result.val["loss"], result.val["accuracy"], args.model_dir)
