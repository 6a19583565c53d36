"""The VQ-VAE's training worker: what the train stage and the tuner's trials call."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqvideo import distributed
from vqvideo.config import ModelConfig, TrainConfig, fingerprint, source_fingerprint
from vqvideo.data.frames import FrameData, frames_of, to_float, to_tensor
from vqvideo.models.vqvae import VQVAE
from vqvideo.training import LoopResult, LoopSpec, TrainLoop, batch_indices
from vqvideo.utils import autocast, resolve_device, resolve_precision, seed_everything

log = logging.getLogger(__name__)

EVAL_FRAMES = 1024  # a fixed val subset: enough for stable numbers, cheap to run often


@dataclass
class TrainResult:
    model: VQVAE
    loop: LoopResult
    val: dict[str, float]  # the last validation row
    fingerprint: str


@torch.no_grad()
def evaluate_vqvae(model: VQVAE, frames: torch.Tensor, device: torch.device, dtype, batch: int = 256) -> dict[str, float]:
    """Recon MSE, VQ loss and code usage over `frames` (N, C, H, W) uint8."""
    model.eval()
    se, n_px, vq, counts = 0.0, 0, 0.0, None
    for i in range(0, len(frames), batch):
        x = to_float(frames[i : i + batch], device)
        with autocast(device, dtype):
            out = model(x)
        se += float(((out.recon.float() - x) ** 2).sum())
        n_px += x.numel()
        vq += float(out.vq.loss) * len(x)
        counts = out.vq.counts if counts is None else counts + out.vq.counts
    from vqvideo.models.quantizer import perplexity

    return {
        "recon_mse": se / n_px,
        "vq_loss": vq / len(frames),
        "loss": se / n_px + vq / len(frames),
        "perplexity": float(perplexity(counts)),
        "active_fraction": float((counts > 0).float().mean()),
    }


def run_fingerprint(model_cfg: ModelConfig, train_cfg: TrainConfig, data: FrameData) -> str:
    """What a checkpoint must match to be resumed: everything that changes the weights."""
    device = resolve_device(train_cfg.device)
    dtype = resolve_precision(train_cfg.precision, device)
    loop_only = {"eval_every": 0, "log_every": 0, "checkpoint_every": 0, "device": device.type}
    code = source_fingerprint("models.vqvae", "models.quantizer", "models.blocks", "fit_vqvae")
    return fingerprint(model_cfg, train_cfg.model_copy(update=loop_only), data.fingerprint, str(dtype), code)


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    data: FrameData,
    *,
    checkpoint: Path | None = None,
    on_log: Callable[[dict, int], None] | None = None,
    on_eval: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train a VQ-VAE; returns the model and its final validation metrics (what tuning optimises)."""
    info = distributed.current()
    device = info.device(resolve_device(train_cfg.device))
    dtype = resolve_precision(train_cfg.precision, device)
    seed_everything(train_cfg.seed)
    shard = info.shard(train_cfg.batch_size)
    # The whole split sits in memory as uint8 (24k Moving Digits frames: 100 MB); a batch is one
    # index gather, so no loader workers are needed. Pinned on a GPU for asynchronous copies.
    train_frames = to_tensor(frames_of(data.clips("train")))
    if device.type == "cuda":
        train_frames = train_frames.pin_memory()
    val_all = frames_of(data.clips("val"))
    pick = np.linspace(0, len(val_all) - 1, min(EVAL_FRAMES, len(val_all))).astype(int)
    val_frames = to_tensor(val_all[pick])
    channels = train_frames.shape[1]

    model = VQVAE(model_cfg, channels).to(device).to(memory_format=torch.channels_last)
    model.quantizer.seed(train_cfg.seed)
    fp = run_fingerprint(model_cfg, train_cfg, data)
    net = distributed.wrap(model, info)
    loop = TrainLoop(
        "vqvae", model, LoopSpec.of(train_cfg), checkpoint, fp,
        generators={"quantizer": model.quantizer.generator},
        on_log=on_log, on_eval=on_eval, items_per_step=train_cfg.batch_size,
        progress_keys=("recon_mse", "perplexity"), writer=info.main,
    )
    n = len(train_frames)

    def step_fn(step: int) -> dict:
        idx = torch.from_numpy(batch_indices(train_cfg.seed, step, train_cfg.batch_size, n)[shard])
        x = to_float(train_frames[idx], device)
        with autocast(device, dtype):
            out = net(x)
        recon = torch.nn.functional.mse_loss(out.recon.float(), x)
        return {
            "loss": recon + out.vq.loss,
            "recon_mse": recon.detach(),
            "vq_loss": out.vq.loss.detach(),
            "perplexity": out.vq.perplexity,
            "active_fraction": out.vq.active_fraction,
            "restarted": out.vq.restarted,
        }

    result = loop.run(step_fn, lambda: evaluate_vqvae(model, val_frames, device, dtype))
    val = [r for r in result.history if r["split"] == "val"][-1]
    return TrainResult(model.cpu().eval(), result, val, fp)
