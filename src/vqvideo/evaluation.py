"""What an evaluation holds, and the pictures drawn from it (reports/plots/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vqvideo import metrics as M
from vqvideo import plots
from vqvideo.data.frames import to_float, to_tensor
from vqvideo.models.vqvae import VQVAE

SAMPLE_CLIPS = 4  # clips shown in the pictures


@dataclass
class Evaluation:
    metrics: dict
    by_step: pd.DataFrame  # per predicted step: each predictor's mean error and SSIM
    per_clip: pd.DataFrame  # per test clip: reconstruction error
    counts: np.ndarray  # (K,) code usage on the test split
    predictions: torch.Tensor  # (N, T - Tc, C, H, W) the prior's decoded rollout of every clip
    extra_steps: dict[str, pd.DataFrame] = field(default_factory=dict)  # generation, conditioned
    samples: dict[str, torch.Tensor] = field(default_factory=dict)  # their clips, for the pictures
    speeds: dict[str, np.ndarray] = field(default_factory=dict)  # drawn first steps' speeds (and labels')



def write_plots(ev: Evaluation, vqvae: VQVAE, test: np.ndarray, train_hist: pd.DataFrame,
                prior_hist: pd.DataFrame, out: Path) -> None:
    from vqvideo.io import staging_dir

    with staging_dir(out) as tmp:
        plots.convergence(train_hist, ["loss", "recon_mse", "vq_loss", "perplexity", "active_fraction"],
                          "VQ-VAE convergence", tmp / "vqvae_convergence.png")
        plots.convergence(prior_hist, ["loss", "accuracy"], "Prior convergence", tmp / "prior_convergence.png",
                          labels={"loss": "loss (next-frame code cross-entropy)"})
        plots.code_frequency(ev.counts, tmp / "code_frequency.png")
        plots.codebook_projection(vqvae.quantizer.codebook.detach().cpu().numpy(), ev.counts,
                                  tmp / "codebook_pca.png")
        plots.prediction_by_step(ev.by_step, tmp / "prediction_by_step.png")
        _quality_plots(ev, tmp)
        _clip_pictures(ev, vqvae, test, tmp)


def _quality_plots(ev: Evaluation, out: Path) -> None:
    """What a viewer sees, per step: ink and sharpness kept, digits read, from 10 frames, from
    one still frame (drawn motion), and from one frame with its action."""
    ratios = {"ink_ratio": "ink (predicted / true)", "sharpness_ratio": "sharpness (predicted / true)"}
    panels = [("10 -> 10: content kept", ev.by_step, ratios, "ratio")]
    refs = {"10 -> 10: content kept": [1.0], "one still frame: content kept": [1.0]}
    if "digit_accuracy" in ev.by_step.columns:
        panels.append(("10 -> 10: digits read at their place", ev.by_step,
                       {"digit_accuracy": "prediction", "real_digit_accuracy": "real frames (ceiling)"}, "fraction"))
    gen = ev.extra_steps.get("generation")
    if gen is not None:
        panels.append(("one still frame: content kept", gen, ratios, "ratio"))
        panels.append(("one still frame: error", gen, {"best_of_n_mse_frame": "best of N samples",
                       "mean_mse_frame": "mean sample", "copy_first_mse_frame": "copy the frame"}, "squared error per frame"))
    con = ev.extra_steps.get("conditioned")
    if con is not None:
        panels.append(("one frame + its action: error", con, {"mse_frame": "prior, steered by the labels",
                       "copy_first_mse_frame": "copy the frame"}, "squared error per frame"))
        panels.append(("one frame + its action: place", con, {"position_error": "digit's distance to its label (px)"}, "px"))
    if ev.speeds:
        plots.speed_histogram(ev.speeds, out / "action_speeds.png")
    plots.quality_by_step(panels[:3], out / "quality_by_step.png", refs)
    if len(panels) > 3:
        plots.quality_by_step(panels[3:], out / "still_image_by_step.png", refs)


@torch.no_grad()
def _clip_pictures(ev: Evaluation, vqvae: VQVAE, test: np.ndarray, out: Path) -> None:
    """Originals over reconstructions (the first clips and the worst ones), and predictions."""
    pc = ev.per_clip.set_index("clip")

    def pairs(ids) -> list[tuple[str, torch.Tensor]]:  # noqa: ANN001
        rows = []
        for i in ids:
            x = to_float(to_tensor(test[int(i)]), torch.device("cpu"))  # (T, C, H, W)
            rows += [(f"clip {int(i)}\noriginal", x),
                     (f"reconstruction\n{M.psnr(pc.recon_mse[int(i)]):.1f} dB", vqvae.reconstruct(x))]
        return rows

    first = range(min(SAMPLE_CLIPS, len(test)))
    plots.clip_rows(pairs(first), out / "reconstructions.png",
                    "VQ-VAE reconstructions of the first test clips (original above, reconstruction below)")
    worst = ev.per_clip.sort_values(["recon_mse", "clip"], ascending=[False, True])["clip"].head(SAMPLE_CLIPS)
    plots.clip_rows(pairs(worst), out / "worst_reconstructions.png",
                    "Worst-reconstructed test clips (lowest PSNR first)")
    tc = ev.metrics["prediction"]["context_frames"]
    rows = []
    for i, pred in enumerate(ev.predictions[:SAMPLE_CLIPS]):
        x = to_float(to_tensor(test[i]), torch.device("cpu"))
        err = float(M.mse_per_frame(pred, x[tc:]).mean())
        rows += [(f"clip {i}\nreal", x), (f"prior\nMSE/frame {err:.0f}", torch.cat([x[:tc], pred]))]
    plots.clip_rows(rows, out / "prediction_samples.png",
                    "Prior predictions from the given frames (argmax), against the real clip", context=tc)
    for name, title in (("generation", "From one still frame: samples with drawn motion (real clip first)"),
                        ("conditioned", "From one frame steered by each digit's labelled motion (real clip first)")):
        got = ev.samples.get(name)
        if got is None:
            continue
        rows = []
        per = got[:, :3] if got.ndim == 6 else got[:, None]  # (clips, samples, T-1, C, H, W)
        for i in range(len(per)):
            x = to_float(to_tensor(test[i]), torch.device("cpu"))
            rows.append((f"clip {i}\nreal", x))
            rows += [(f"sample {j}" if got.ndim == 6 else "steered", torch.cat([x[:1], clip]))
                     for j, clip in enumerate(per[i])]
        plots.clip_rows(rows, out / f"{name}_samples.png", title, context=1, group=1 + per.shape[1])
