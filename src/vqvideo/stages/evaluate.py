"""evaluate: judge a run on the test split: reconstruction, codebook, prediction, cost, plots."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vqvideo import metrics as M
from vqvideo import plots
from vqvideo.config import EvaluateConfig, Params
from vqvideo.data.clips import FrameData, to_tensor
from vqvideo.models.prior import CodePrior
from vqvideo.models.vqvae import VQVAE
from vqvideo.stages.generate import decode_codes
from vqvideo.stages.train import to_float

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    metrics: dict
    by_step: pd.DataFrame  # prediction error per predicted step, the prior and its baselines
    per_clip: pd.DataFrame  # reconstruction error per test clip
    counts: np.ndarray  # code usage on the test split


@torch.no_grad()
def evaluate_models(cfg: EvaluateConfig, vqvae: VQVAE, prior: CodePrior, clips: np.ndarray) -> Evaluation:
    """All numbers on `clips` (N, T, C, H, W) uint8; deterministic (fp32, argmax, fixed order)."""
    torch.manual_seed(0)
    vqvae.eval()
    prior.eval()
    n, t = clips.shape[:2]
    tc = cfg.context_frames
    if tc >= t:
        from vqvideo.errors import VQVideoError

        raise VQVideoError(f"evaluate.context_frames ({tc}) must be below the clip length ({t})")
    k = vqvae.quantizer.num_codes
    counts = torch.zeros(k, dtype=torch.float64)
    rec_se, rec_ssim, rec_frame = [], [], []
    rows = {name: [] for name in ("prior", "copy_last", "blank", "vq_floor")}
    ssim_rows = {name: [] for name in ("prior", "copy_last")}
    for i in range(0, n, cfg.batch_size):
        x = to_float(to_tensor(clips[i : i + cfg.batch_size]), torch.device("cpu"))
        b = x.shape[0]
        frames = x.flatten(0, 1)  # (B*T, C, H, W)
        codes = vqvae.encode_indices(frames)
        counts += torch.bincount(codes.flatten(), minlength=k).double()
        recon = vqvae.decode_indices(codes)
        rec_se.append(((recon.double() - frames.double()) ** 2).flatten(1).mean(1).view(b, t))
        rec_ssim.append(M.ssim_per_frame(recon, frames).view(b, t))
        rec_frame.append(M.mse_per_frame(recon, frames).view(b, t))

        codes = codes.view(b, t, *codes.shape[1:])
        rolled = prior.rollout(codes[:, :tc], t - tc, sampling="argmax")
        pred = decode_codes(vqvae, rolled[:, tc:]).flatten(0, 1)  # (B*(T-tc), C, H, W)
        target = x[:, tc:].flatten(0, 1)
        last = x[:, tc - 1 : tc].expand(-1, t - tc, *x.shape[2:]).flatten(0, 1)
        floor = recon.view(b, t, *recon.shape[1:])[:, tc:].flatten(0, 1)
        shape = (b, t - tc)
        rows["prior"].append(M.mse_per_frame(pred, target).view(shape))
        rows["copy_last"].append(M.mse_per_frame(last, target).view(shape))
        rows["blank"].append(M.mse_per_frame(torch.zeros_like(target), target).view(shape))
        rows["vq_floor"].append(M.mse_per_frame(floor, target).view(shape))
        ssim_rows["prior"].append(M.ssim_per_frame(pred, target).view(shape))
        ssim_rows["copy_last"].append(M.ssim_per_frame(last, target).view(shape))

    pred_mse = {k_: torch.cat(v) for k_, v in rows.items()}  # (N, T - tc) each
    pred_ssim = {k_: torch.cat(v) for k_, v in ssim_rows.items()}
    rec_mse_clip = torch.cat(rec_se)  # (N, T) per-pixel MSE per frame
    mse = float(rec_mse_clip.mean())
    by_step = pd.DataFrame({"step": np.arange(1, t - tc + 1)})
    for name, v in pred_mse.items():
        by_step[f"{name}_mse_frame"] = v.mean(0).numpy()
    for name, v in pred_ssim.items():
        by_step[f"{name}_ssim"] = v.mean(0).numpy()
    per_clip = pd.DataFrame({"clip": np.arange(n), "recon_mse": rec_mse_clip.mean(1).numpy(),
                             "recon_ssim": torch.cat(rec_ssim).mean(1).numpy()})
    usage = M.codebook_usage(counts)
    metrics = {
        "recon": {
            "mse": mse,
            "psnr": M.psnr(mse),
            "ssim": float(torch.cat(rec_ssim).mean()),
            "mse_frame": float(torch.cat(rec_frame).mean()),
        },
        "codebook": usage,
        "prediction": {
            "context_frames": tc,
            "predicted_frames": t - tc,
            "mse_frame": float(pred_mse["prior"].mean()),
            "ssim": float(pred_ssim["prior"].mean()),
            "copy_last_mse_frame": float(pred_mse["copy_last"].mean()),
            "copy_last_ssim": float(pred_ssim["copy_last"].mean()),
            "blank_mse_frame": float(pred_mse["blank"].mean()),
            "vq_floor_mse_frame": float(pred_mse["vq_floor"].mean()),
        },
        "test_clips": n,
    }
    p = metrics["prediction"]
    p["ratio_to_copy_last"] = p["mse_frame"] / max(p["copy_last_mse_frame"], 1e-12)
    p["ratio_to_blank"] = p["mse_frame"] / max(p["blank_mse_frame"], 1e-12)
    return Evaluation(metrics, by_step, per_clip, counts.numpy())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, default=Path("data/frames"))
    p.add_argument("--vqvae", type=Path, default=Path("models/vqvae"))
    p.add_argument("--prior", type=Path, default=Path("models/prior"))
    p.add_argument("--train-history", type=Path, default=Path("reports/train/history.csv"))
    p.add_argument("--prior-history", type=Path, default=Path("reports/prior/history.csv"))
    p.add_argument("--metrics", type=Path, default=Path("reports/metrics.json"))
    p.add_argument("--plots", type=Path, default=Path("reports/plots"))
    p.add_argument("--tables", type=Path, default=Path("reports/eval"))
    p.add_argument("--summary", type=Path, default=Path("reports/summary.md"))


def main(args: argparse.Namespace) -> None:
    from vqvideo import tracking
    from vqvideo.config import load_params, section_params
    from vqvideo.io import read_json, staging_dir, write_csv, write_json, write_text
    from vqvideo.models.store import load_prior, load_vqvae, num_parameters
    from vqvideo.report import summary_markdown

    params: Params = load_params(args.params)
    data = FrameData.open(args.frames)
    vqvae, vq_meta = load_vqvae(args.vqvae)
    prior, prior_meta = load_prior(args.prior, vq_meta)
    test = data.clips("test")
    if params.evaluate.max_clips:
        test = test[: params.evaluate.max_clips]
    ev = evaluate_models(params.evaluate, vqvae, prior, test)
    vq_summary = read_json(args.vqvae / "summary.json")
    prior_summary = read_json(args.prior / "summary.json")
    ev.metrics["cost"] = {
        "vqvae_parameters": num_parameters(vqvae),
        "prior_parameters": num_parameters(prior),
        "vqvae_train_seconds": vq_summary["train_seconds"],
        "prior_train_seconds": prior_summary["train_seconds"],
        "vqvae_frames_per_second": vq_summary["frames_per_second"],
        "prior_frames_per_second": prior_summary["frames_per_second"],
    }
    train_hist = pd.read_csv(args.train_history)
    prior_hist = pd.read_csv(args.prior_history)

    with staging_dir(args.plots) as pdir:
        plots.convergence(train_hist, ["loss", "recon_mse", "vq_loss", "perplexity", "active_fraction"],
                          "VQ-VAE convergence", pdir / "vqvae_convergence.png")
        plots.convergence(prior_hist, ["loss", "accuracy"], "prior convergence", pdir / "prior_convergence.png")
        plots.code_frequency(ev.counts, pdir / "code_frequency.png")
        plots.codebook_projection(vqvae.quantizer.codebook.numpy(), ev.counts, pdir / "codebook_pca.png")
        plots.prediction_by_step(ev.by_step, pdir / "prediction_by_step.png")
        _recon_grids(vqvae, test, ev.per_clip, pdir)
    with staging_dir(args.tables) as tdir:
        write_csv(tdir / "prediction_by_step.csv", ev.by_step)
        write_csv(tdir / "recon_per_clip.csv", ev.per_clip)
        write_csv(tdir / "code_usage.csv", pd.DataFrame({"code": np.arange(len(ev.counts)), "count": ev.counts}))
    write_json(args.metrics, ev.metrics)
    write_text(args.summary, summary_markdown(ev.metrics, args.summary.parent, args.plots, Path("reports/generated")))
    own = section_params(params, "evaluate")
    with tracking.pipeline_run(None, run_id=tracking.stage_run_id(args.prior / tracking.RUN_FILE, own)):
        tracking.log_params(own)
        tracking.log_metrics(tracking.flatten_metrics(ev.metrics))
        for path in (args.metrics, args.summary, args.plots, args.tables):
            tracking.log_artifact(path, "evaluate" if path.is_file() else f"evaluate/{path.name}")
    m = ev.metrics
    log.info("evaluate: PSNR %.2f dB, SSIM %.3f, active %.2f, prediction %.1f vs copy-last %.1f vs blank %.1f",
             m["recon"]["psnr"], m["recon"]["ssim"], m["codebook"]["active_fraction"],
             m["prediction"]["mse_frame"], m["prediction"]["copy_last_mse_frame"], m["prediction"]["blank_mse_frame"])


def _recon_grids(vqvae: VQVAE, test: np.ndarray, per_clip: pd.DataFrame, out: Path) -> None:
    """Originals over reconstructions: the first clips, and the worst-reconstructed ones."""
    def rows_for(ids):
        rows = []
        for i in ids:
            x = to_float(to_tensor(test[int(i)]), torch.device("cpu"))
            rows += [x, vqvae.reconstruct(x)]
        return rows

    plots.image_grid(rows_for(range(min(4, len(test)))), out / "reconstructions.png")
    worst = per_clip.sort_values("recon_mse", ascending=False)["clip"].head(4)
    plots.image_grid(rows_for(worst), out / "worst_reconstructions.png")
