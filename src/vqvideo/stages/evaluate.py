"""evaluate: judge a run on the test split: reconstruction, codebook, prediction, cost, plots.

Everything here is deterministic: fp32 on the CPU, argmax decoding, a fixed clip order and
float64 sums, so the same models and data give the same metrics.json, byte for byte (on one
machine with one thread count; other CPUs may differ in the last bits).
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vqvideo import clip_metrics as CM
from vqvideo import metrics as M
from vqvideo.config import EvaluateConfig, Params
from vqvideo.data.frames import FrameData, to_float, to_tensor
from vqvideo.errors import VQVideoError
from vqvideo.evaluation import SAMPLE_CLIPS, Evaluation, write_plots
from vqvideo.models.prior import CodePrior
from vqvideo.models.vqvae import VQVAE, decode_codes

log = logging.getLogger(__name__)

PREDICTORS = ("prior", "copy_last", "blank", "vq_floor")


@dataclass
class _Batch:
    counts: torch.Tensor  # (K,)
    rec_mse: torch.Tensor  # (B, T) per-pixel MSE per frame
    rec_sum: torch.Tensor  # (B, T) per-frame summed squared error
    rec_ssim: torch.Tensor  # (B, T)
    pred_mse: dict[str, torch.Tensor]  # predictor -> (B, T - Tc) per-frame summed squared error
    pred_ssim: dict[str, torch.Tensor]  # predictor -> (B, T - Tc)
    pred: torch.Tensor  # (B, T - Tc, C, H, W)


def _evaluate_batch(vqvae: VQVAE, prior: CodePrior, x: torch.Tensor, tc: int) -> _Batch:
    """x (B, T, C, H, W) in [0, 1] -> every per-frame number for this batch."""
    b, t = x.shape[:2]
    frames = x.flatten(0, 1)  # (B*T, C, H, W)
    codes = vqvae.encode_indices(frames)  # (B*T, h, w)
    recon = vqvae.decode_indices(codes)
    counts = torch.bincount(codes.flatten(), minlength=vqvae.quantizer.num_codes).double()

    codes = codes.view(b, t, *codes.shape[1:])  # (B, T, h, w)
    rolled = prior.rollout(codes[:, :tc], t - tc, sampling="argmax", images=x[:, :tc])  # (B, T, h, w)
    pred = decode_codes(vqvae, rolled[:, tc:])  # (B, T - tc, C, H, W)
    future = x[:, tc:]
    guesses = {"prior": pred, "copy_last": x[:, tc - 1 : tc].expand_as(future), "blank": torch.zeros_like(future)}
    target = future.flatten(0, 1)  # (B*(T-tc), C, H, W)
    shape = (b, t - tc)
    rec_sum = M.mse_per_frame(recon, frames).view(b, t)
    rec_ssim = M.ssim_per_frame(recon, frames).double().view(b, t)
    pred_mse = {k: M.mse_per_frame(g.flatten(0, 1), target).view(shape) for k, g in guesses.items()}
    pred_ssim = {k: M.ssim_per_frame(g.flatten(0, 1), target).double().view(shape) for k, g in guesses.items()}
    # The floor is the reconstruction of the future frames: already measured, no second pass.
    pred_mse["vq_floor"], pred_ssim["vq_floor"] = rec_sum[:, tc:], rec_ssim[:, tc:]
    return _Batch(counts=counts, rec_mse=M.mse_per_pixel_frames(recon, frames).view(b, t), rec_sum=rec_sum,
                  rec_ssim=rec_ssim, pred_mse=pred_mse, pred_ssim=pred_ssim, pred=pred)


@torch.no_grad()
def evaluate_models(cfg: EvaluateConfig, vqvae: VQVAE, prior: CodePrior, clips: np.ndarray) -> Evaluation:
    """All numbers on `clips` (N, T, C, H, W) uint8, in order, `cfg.batch_size` clips at a time."""
    n, t = clips.shape[:2]
    tc = cfg.context_frames
    if n == 0:
        raise VQVideoError("the test split is empty; raise sample.test_fraction or add videos, then re-run sample")
    if tc >= t:
        raise VQVideoError(f"evaluate.context_frames ({tc}) must be below the clip length ({t}); "
                           "lower it or raise sample.clip_length")
    vqvae.eval()
    prior.eval()
    batches = []
    with torch.random.fork_rng():  # argmax draws nothing; pinned anyway, and the caller's RNG is left alone
        torch.manual_seed(0)
        for i in range(0, n, cfg.batch_size):
            x = to_float(to_tensor(clips[i : i + cfg.batch_size]), torch.device("cpu"))
            batches.append(_evaluate_batch(vqvae, prior, x, tc))
    return _assemble(batches, t, tc, clips)


def _assemble(batches: list[_Batch], t: int, tc: int, clips: np.ndarray) -> Evaluation:
    def cat(get) -> torch.Tensor:  # noqa: ANN001
        return torch.cat([get(b) for b in batches])

    counts = torch.stack([b.counts for b in batches]).sum(0)
    rec_mse, rec_sum, rec_ssim = cat(lambda b: b.rec_mse), cat(lambda b: b.rec_sum), cat(lambda b: b.rec_ssim)
    pred_mse = {k: cat(lambda b, k=k: b.pred_mse[k]) for k in PREDICTORS}  # (N, T - tc) each
    pred_ssim = {k: cat(lambda b, k=k: b.pred_ssim[k]) for k in PREDICTORS}
    n = rec_mse.shape[0]

    by_step = pd.DataFrame({"step": np.arange(1, t - tc + 1)})
    for k in PREDICTORS:
        by_step[f"{k}_mse_frame"] = pred_mse[k].mean(0).numpy()
    for k in PREDICTORS:
        by_step[f"{k}_ssim"] = pred_ssim[k].mean(0).numpy()
    per_clip = pd.DataFrame({"clip": np.arange(n), "recon_mse": rec_mse.mean(1).numpy(),
                             "recon_mse_frame": rec_sum.mean(1).numpy(), "recon_ssim": rec_ssim.mean(1).numpy()})
    mse = float(rec_mse.mean())
    p = {"context_frames": tc, "predicted_frames": t - tc,
         "mse_frame": float(pred_mse["prior"].mean()), "ssim": float(pred_ssim["prior"].mean())}
    for k in PREDICTORS[1:]:
        p[f"{k}_mse_frame"] = float(pred_mse[k].mean())
        p[f"{k}_ssim"] = float(pred_ssim[k].mean())
    p["ratio_to_copy_last"] = _ratio(p["mse_frame"], p["copy_last_mse_frame"])
    p["ratio_to_blank"] = _ratio(p["mse_frame"], p["blank_mse_frame"])
    p["ratio_to_vq_floor"] = _ratio(p["mse_frame"], p["vq_floor_mse_frame"])
    metrics = {
        "recon": {"mse": mse, "psnr": M.psnr(mse), "ssim": float(rec_ssim.mean()),
                  "mse_frame": float(rec_sum.mean())},
        "codebook": M.codebook_usage(counts),
        "prediction": p,
        "test_clips": n,
    }
    preds = torch.cat([b.pred for b in batches])
    truth = to_float(to_tensor(clips[:, tc:]), torch.device("cpu"))
    for k, v in CM.by_step_quality(preds, truth).items():
        by_step[k] = v
    p["ink_last"] = float(by_step.ink_ratio.iloc[-1])
    p["sharpness_last"] = float(by_step.sharpness_ratio.iloc[-1])
    return Evaluation(metrics, by_step, per_clip, counts.numpy(), preds)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def cost_metrics(vqvae: VQVAE, prior: CodePrior, vq_meta: dict, prior_meta: dict,
                 vq_dir: Path, prior_dir: Path) -> dict:
    """Parameters, training seconds (all resumed invocations together) and the frames/s of the
    last training phase, from what train and prior saved beside each model."""
    from vqvideo.io import read_json
    from vqvideo.models.store import num_parameters

    out: dict = {"vqvae_parameters": num_parameters(vqvae), "prior_parameters": num_parameters(prior)}
    out["total_parameters"] = out["vqvae_parameters"] + out["prior_parameters"]
    for name, meta, folder in (("vqvae", vq_meta, vq_dir), ("prior", prior_meta, prior_dir)):
        summary = dict(meta)
        if (folder / "summary.json").exists():
            summary.update(read_json(folder / "summary.json"))
        for key in ("train_seconds", "frames_per_second"):
            if isinstance(summary.get(key), (int, float)):
                out[f"{name}_{key}"] = float(summary[key])
            else:
                log.warning("evaluate: %s has no %s recorded; cost.%s_%s left out", folder, key, name, key)
    return out


def finite(d: dict) -> dict:
    """JSON has no inf or NaN (a perfect reconstruction has infinite PSNR): write null there."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = finite(v)
        elif isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        else:
            out[k] = v
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, default=Path("data/frames"))
    p.add_argument("--vqvae", type=Path, default=Path("models/vqvae"))
    p.add_argument("--prior", type=Path, default=Path("models/prior"))
    p.add_argument("--train-history", type=Path, default=Path("reports/train/history.csv"))
    p.add_argument("--prior-history", type=Path, default=Path("reports/prior/history.csv"))
    p.add_argument("--labels", type=Path, default=None,
                   help="collect's motion labels (data/raw/labels.csv): digit and action measures")
    p.add_argument("--generated", type=Path, default=Path("reports/generated"),
                   help="the generate stage's clips, linked from the summary")
    p.add_argument("--metrics", type=Path, default=Path("reports/metrics.json"))
    p.add_argument("--plots", type=Path, default=Path("reports/plots"))
    p.add_argument("--tables", type=Path, default=Path("reports/eval"))
    p.add_argument("--summary", type=Path, default=Path("reports/summary.md"))


def main(args: argparse.Namespace) -> None:
    from vqvideo import tracking
    from vqvideo.config import load_params, section_params
    from vqvideo.errors import require_file
    from vqvideo.io import write_json
    from vqvideo.models.store import check_frames_fit, load_prior, load_vqvae

    params: Params = load_params(args.params)
    # Every input is read and checked before any work: a missing or mismatched one costs nothing.
    require_file(args.prior / tracking.RUN_FILE, "the pipeline's MLflow run record", "run `dvc repro prior` first")
    train_hist = read_history(args.train_history, "VQ-VAE training history", "train")
    prior_hist = read_history(args.prior_history, "prior training history", "prior")
    data = FrameData.open(args.frames)
    vqvae, vq_meta = load_vqvae(args.vqvae)
    prior, prior_meta = load_prior(args.prior, vq_meta, vqvae)
    check_frames_fit(vq_meta, data.stats.get("clip_shape") or data.clips("test").shape[1:], args.frames)
    test = data.clips("test")
    if params.evaluate.max_clips:
        test = test[: params.evaluate.max_clips]
    ev = evaluate_models(params.evaluate, vqvae, prior, test)
    labels = read_labels(args.labels, data, len(test), test.shape[1])
    judge_clips(ev, params.evaluate, vqvae, prior, test, labels, params.collect.digit_size)
    ev.metrics["cost"] = cost_metrics(vqvae, prior, vq_meta, prior_meta, args.vqvae, args.prior)
    ev.metrics = finite(ev.metrics)
    write_tables(ev, args.tables)
    write_plots(ev, vqvae, test, train_hist, prior_hist, args.plots)
    write_json(args.metrics, ev.metrics)
    write_summary(ev.metrics, args.summary, args.plots, args.generated, args.tables)
    own = section_params(params, "evaluate")
    with tracking.pipeline_run(None, run_id=tracking.stage_run_id(args.prior / tracking.RUN_FILE, own)):
        log_to_mlflow(ev, own, args)
    m = ev.metrics
    log.info("evaluate: PSNR %.2f dB, SSIM %.3f, active %.2f, prediction %.1f vs copy-last %.1f vs blank %.1f "
             "(VQ floor %.1f) -> %s", m["recon"]["psnr"] or math.inf, m["recon"]["ssim"],
             m["codebook"]["active_fraction"], m["prediction"]["mse_frame"],
             m["prediction"]["copy_last_mse_frame"], m["prediction"]["blank_mse_frame"],
             m["prediction"]["vq_floor_mse_frame"], args.metrics)


def read_labels(path: Path | None, data: FrameData, n: int, length: int) -> pd.DataFrame | None:
    """The first `n` test clips' motion labels (clip, step, digit, label, x, y, vx, vy), or None
    when the data has none (footage): every digit and action measure is then left out."""
    from vqvideo.digits import clip_labels
    from vqvideo.digits import read_labels as read_csv

    labels = read_csv(path)
    if labels is None:
        return None
    index = data.index()
    test_ids = index[index.split == "test"]["clip"].to_numpy()[:n]
    out = clip_labels(index, labels, "test", test_ids, length)
    return out if len(out) else None


@torch.no_grad()
def judge_clips(ev: Evaluation, cfg: EvaluateConfig, vqvae: VQVAE, prior: CodePrior, test: np.ndarray,
                labels: pd.DataFrame | None, digit_size: int) -> None:
    """What a person sees: digits read at their place (10 -> 10), and clips from one still
    frame, drawn (`cfg.samples` each) and, with labels, steered by each digit's action."""
    m, tc = ev.metrics, cfg.context_frames
    k = min(cfg.generation_clips, len(test))
    x = to_float(to_tensor(test[:k]), torch.device("cpu"))
    gen_m, gen_steps, gen = CM.generation_eval(vqvae, prior, x, cfg.samples, cfg.seed)
    m["generation"] = gen_m
    ev.extra_steps["generation"] = gen_steps
    ev.samples["generation"] = gen[:SAMPLE_CLIPS]
    own = labels[labels["clip"] < k] if labels is not None else None
    m["action"], ev.speeds = CM.action_eval(vqvae, prior, x, cfg.samples, cfg.seed, own)
    if labels is None or vqvae.channels != 1:
        return
    from vqvideo.digits import DigitReader

    reader = DigitReader.train(digit_size)
    real = to_float(to_tensor(test[:, tc:]), torch.device("cpu"))[:, :, 0].numpy()
    ev.by_step["digit_accuracy"] = CM.digit_accuracy(reader, ev.predictions[:, :, 0].numpy(), labels, tc)
    ev.by_step["real_digit_accuracy"] = CM.digit_accuracy(reader, real, labels, tc)
    m["prediction"]["digit_accuracy_last"] = float(ev.by_step.digit_accuracy.iloc[-1])
    m["prediction"]["real_digit_accuracy_last"] = float(ev.by_step.real_digit_accuracy.iloc[-1])
    con_m, con_steps, con = CM.conditioned_eval(vqvae, prior, x, own, reader, digit_size)
    m["conditioned"] = con_m
    ev.extra_steps["conditioned"] = con_steps
    ev.samples["conditioned"] = con[:SAMPLE_CLIPS]


def read_history(path: Path, what: str, stage: str) -> pd.DataFrame:
    """A training history.csv with the columns the plots need, or one line saying what to do."""
    from vqvideo.errors import require_file

    require_file(path, what, f"run `dvc repro {stage}` first")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise VQVideoError(f"{what} {path} cannot be read ({' '.join(str(err).split())[:120]}); "
                           f"re-run `dvc repro {stage}`") from None
    missing = {"step", "split"} - set(df.columns)
    if missing:
        raise VQVideoError(f"{what} {path} has no {', '.join(sorted(missing))} column; re-run `dvc repro {stage}`")
    return df


def write_tables(ev: Evaluation, out: Path) -> None:
    from vqvideo.io import staging_dir, write_csv

    with staging_dir(out) as tmp:
        write_csv(tmp / "prediction_by_step.csv", ev.by_step)
        for name, df in ev.extra_steps.items():
            write_csv(tmp / f"{name}_by_step.csv", df)
        write_csv(tmp / "recon_per_clip.csv", ev.per_clip)
        write_csv(tmp / "code_usage.csv", pd.DataFrame({"code": np.arange(len(ev.counts)),
                                                        "count": ev.counts.astype(np.int64)}))


def write_summary(m: dict, path: Path, plots_dir: Path, generated: Path, tables: Path) -> None:
    from vqvideo.io import write_text
    from vqvideo.report import summary_markdown

    clips = sorted(generated.glob("*.gif")) if generated.is_dir() else []
    write_text(path, summary_markdown(m, path.parent, plots_dir, generated, clips, tables))


def log_to_mlflow(ev: Evaluation, own: dict, args: argparse.Namespace) -> None:
    """Same names as metrics.json (flattened: recon.psnr), the per-step curves as metric
    histories (x = predicted step) so the UI charts them, and every file as an artifact."""
    from vqvideo import tracking

    tracking.log_params(own)
    tracking.log_metrics(tracking.flatten_metrics(ev.metrics))
    for row in ev.by_step.itertuples(index=False):
        values = row._asdict()
        step = int(values.pop("step"))
        tracking.log_metrics({f"eval/{k}": v for k, v in values.items()}, step=step)
    for path in (args.metrics, args.summary):
        tracking.log_artifact(path, "evaluate")
    tracking.log_artifact(args.plots, "evaluate/plots")
    tracking.log_artifact(args.tables, "evaluate/eval")
