"""train: fit the VQ-VAE on sampled frames; opens the pipeline's MLflow run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from vqvideo import distributed
from vqvideo.config import Params
from vqvideo.data.frames import FrameData, open_checked
from vqvideo.fit_vqvae import TrainResult, run_fingerprint, train  # noqa: F401 - the worker, for tests and bench
from vqvideo.utils import resolve_device

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, default=Path("data/frames"))
    p.add_argument("--model-dir", type=Path, default=Path("models/vqvae"))
    p.add_argument("--checkpoints", type=Path, default=Path("models/checkpoints/vqvae"),
                   help="kept across runs (DVC persist): a killed run resumes from here")
    p.add_argument("--history", type=Path, default=Path("reports/train/history.csv"))


def main(args: argparse.Namespace) -> None:
    from vqvideo.config import load_params

    params: Params = load_params(args.params)
    data = open_checked(args.frames, params.sample.channels, params.sample.size)
    with distributed.session(resolve_device(params.train.device)) as info:
        if info.main:
            _main_rank(args, params, data)
        else:  # other ranks train in lockstep; rank 0 alone writes and logs
            train(params.model, params.train, data, checkpoint=args.checkpoints / "last.pt")


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
            tracking.set_tag("resumed", "true")
        # the runs table's Dataset column (logged again on a resume: a run from before it had none)
        tracking.log_dataset(data.index(), str(args.frames.resolve()), f"{args.frames.name} ({data.fingerprint[:8]})")
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
        example = torch.rand(2, result.model.channels, params.sample.size, params.sample.size)
        tracking.log_torch_model(Reconstructor(result.model), "vqvae", example.numpy())
    log.info("train: val recon MSE %.5f, perplexity %.1f -> %s", result.val["recon_mse"], result.val["perplexity"], args.model_dir)
