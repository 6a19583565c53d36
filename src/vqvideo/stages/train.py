"""train: fit the VQ-VAE on sampled frames; opens the pipeline's MLflow run."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqvideo import distributed
from vqvideo.config import ModelConfig, Params, TrainConfig, fingerprint
from vqvideo.data.clips import FrameData, frames_of, to_tensor
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


def to_float(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float in [0, 1] on `device`, channels-last for fast convs."""
    x = x.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


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
    return fingerprint(model_cfg, train_cfg.model_copy(update=loop_only), data.fingerprint, str(dtype))


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, default=Path("data/frames"))
    p.add_argument("--model-dir", type=Path, default=Path("models/vqvae"))
    p.add_argument("--checkpoints", type=Path, default=Path("models/checkpoints/vqvae"),
                   help="kept across runs (DVC persist): a killed run resumes from here")
    p.add_argument("--history", type=Path, default=Path("reports/train/history.csv"))


def main(args: argparse.Namespace) -> None:
    from vqvideo.config import load_params

    params: Params = load_params(args.params)
    data = check_inputs(params, args.frames)
    with distributed.session(resolve_device(params.train.device)) as info:
        if info.main:
            _main_rank(args, params, data)
        else:  # other ranks train in lockstep; rank 0 alone writes and logs
            train(params.model, params.train, data, checkpoint=args.checkpoints / "last.pt")


def check_inputs(params: Params, frames: Path) -> FrameData:
    """Everything train reads, checked before a run is opened or a file written."""
    from vqvideo.errors import VQVideoError

    data = FrameData.open(frames)
    for split in ("train", "val"):
        data.clips(split)  # raises, naming the split, when it is missing or empty
    shape = data.stats.get("clip_shape") or data.clips("train").shape[1:]
    c, h, w = (int(v) for v in shape[-3:])
    want = (params.sample.channels, params.sample.size, params.sample.size)
    if (c, h, w) != want:
        raise VQVideoError(
            f"{frames} holds {c}x{h}x{w} frames but params.yaml's sample section asks for "
            f"{want[0]}x{want[1]}x{want[2]}; re-run `dvc repro sample` so the frames match"
        )
    return data


def _main_rank(args: argparse.Namespace, params: Params, data: FrameData) -> None:
    from vqvideo import tracking
    from vqvideo.config import section_params
    from vqvideo.io import staging_dir, write_history, write_json
    from vqvideo.models.serving import Reconstructor
    from vqvideo.models.store import num_parameters, save_model

    fp = run_fingerprint(params.model, params.train, data)
    checkpoint = args.checkpoints / "last.pt"
    run_file = args.checkpoints / "run.json"  # the MLflow run the checkpoint belongs to
    resume_id = tracking.resumable_run(run_file, fp) if checkpoint.exists() else None
    with tracking.pipeline_run(None, new=resume_id is None, run_id=resume_id, run_name="pipeline") as run:
        tracking.record_run(run_file, run, fingerprint=fp)
        if resume_id is None:
            tracking.log_params(section_params(params, "collect", "sample", "model", "train"))
            tracking.log_params({f"data.{k}": v for k, v in data.stats["clips"].items()})
        else:
            import mlflow

            mlflow.set_tag("resumed", "true")
        result = train(params.model, params.train, data, checkpoint=checkpoint,
                       on_log=tracking.log_metrics)
        summary = {
            "parameters": num_parameters(result.model),
            "train_seconds": result.loop.train_seconds,
            "frames_per_second": result.loop.last_phase_items_per_s,
            "steps": params.train.steps,
            "resumed_from_step": result.loop.resumed_from,
            "processes": distributed.current().world,
            "val": result.val,
        }
        meta = {"channels": result.model.channels, "image_size": params.sample.size,
                "fingerprint": result.fingerprint, "pixel_mean": data.stats["pixel_mean"], **summary}
        with staging_dir(args.model_dir) as tmp:
            save_model(tmp, "vqvae", result.model, params.model.model_dump(mode="json"), meta)
            write_json(tmp / "summary.json", summary)
            tracking.record_run(tmp / tracking.RUN_FILE, run)
        write_history(args.history, result.loop.history)
        tracking.log_metrics({"vqvae.train_seconds": result.loop.train_seconds,
                              "vqvae.frames_per_second": result.loop.last_phase_items_per_s,
                              "vqvae.parameters": summary["parameters"]})
        tracking.log_artifact(args.frames / "stats.json", "data")
        tracking.log_artifact(args.history, "train")
        example = torch.rand(1, result.model.channels, params.sample.size, params.sample.size)
        tracking.log_torch_model(Reconstructor(result.model), "vqvae", example.numpy())
    log.info("train: val recon MSE %.5f, perplexity %.1f -> %s", result.val["recon_mse"], result.val["perplexity"], args.model_dir)
