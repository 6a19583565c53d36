"""reports/summary.md: the headline numbers against their baselines, the plots, the clips.

Plain GitHub-flavoured Markdown with links relative to the summary itself, so it reads the same
in a git host's file view, an editor's preview and the MLflow artifact view. Nothing in it
changes between two evaluations of the same models (no dates, no timings of evaluate itself).
"""

from __future__ import annotations

import os
from pathlib import Path

PLOTS = [
    ("prediction_by_step.png", "Prediction error by step",
     "The prior against copying the last given frame, predicting a blank frame, and the VQ-VAE "
     "floor (the true future frames encoded and decoded: the best a prior of codes can do)."),
    ("prediction_samples.png", "Predictions",
     "Real clips above, the prior's argmax rollout from the given frames below."),
    ("quality_by_step.png", "What a viewer sees, by step (10 -> 10)",
     "Ink and sharpness of the predicted frames against the real ones (1.0: kept), and the digits "
     "a classifier reads at their labelled place, in the prediction and in the real frames."),
    ("generation_samples.png", "From one still frame",
     "Each real clip, then samples from its first frame alone: each draws its own motion."),
    ("still_image_by_step.png", "From one still frame, by step",
     "Samples' content kept and their error (best of N, mean, copying the frame); clips steered by "
     "each digit's labelled action: error and how far each digit is from its labelled place."),
    ("action_speeds.png", "Still-image motion",
     "Speeds of the first steps the action prior draws for the layers of each test clip's first "
     "frame, beside the speeds in the labels."),
    ("conditioned_samples.png", "Steered by the labels",
     "Each real clip, then the clip generated from its first frame and each digit's labelled motion."),
    ("vqvae_convergence.png", "VQ-VAE convergence", "Training batches and the validation split."),
    ("prior_convergence.png", "Prior convergence", "Training batches and the validation split."),
    ("code_frequency.png", "Code usage by rank",
     "A flat curve is a healthy codebook; a cliff is collapse onto a few codes."),
    ("codebook_pca.png", "Codebook (PCA)", "Codebook vectors projected on their first two principal "
     "components, coloured by how often the test split picks them."),
    ("reconstructions.png", "Reconstructions", "Originals above, VQ-VAE reconstructions below."),
    ("worst_reconstructions.png", "Worst reconstructions", "The test clips the VQ-VAE reconstructs worst."),
]


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(target).resolve(), Path(start).resolve())).as_posix()


def _num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def _prediction_table(p: dict) -> list[str]:
    rows = [("prior (argmax)", p["mse_frame"], p["ssim"], p.get("ratio_to_copy_last"))]
    for key, name in (("copy_last", "copy last given frame"), ("blank", "blank frame (all zeros)"),
                      ("vq_floor", "VQ-VAE floor (true codes)")):
        mse = p[f"{key}_mse_frame"]
        ratio = mse / p["copy_last_mse_frame"] if p["copy_last_mse_frame"] else None
        rows.append((name, mse, p.get(f"{key}_ssim"), ratio))
    out = ["| predictor | MSE per frame (sum over pixels) | SSIM | vs copy-last |", "| --- | ---: | ---: | ---: |"]
    for name, mse, ssim, ratio in rows:
        out.append(f"| {name} | {_num(mse, '.1f')} | {_num(ssim, '.4f')} | {_num(ratio, '.3f')} |")
    return out


def _still_image_section(m: dict) -> list[str]:
    p, g, c = m["prediction"], m.get("generation"), m.get("conditioned")
    out = ["## What a viewer sees", "",
           "| measure | value | what it says |", "| --- | ---: | --- |",
           f"| `prediction.ink_last` | {_num(p.get('ink_last'), '.3f')} | 10th predicted frame's ink / the real one's (1: kept) |",
           f"| `prediction.sharpness_last` | {_num(p.get('sharpness_last'), '.3f')} | its mean gradient / the real one's |"]
    if "digit_accuracy_last" in p:
        out += [f"| `prediction.digit_accuracy_last` | {p['digit_accuracy_last']:.3f} | digits read right at their "
                f"labelled place, 10th predicted frame (real frames: {p['real_digit_accuracy_last']:.3f}) |"]
    if g:
        out += [f"| `generation.best_of_n_mse_frame` | {_num(g['best_of_n_mse_frame'], '.1f')} | one still frame, "
                f"best of {g['samples']} samples (mean {_num(g['mean_mse_frame'], '.1f')}; copying the frame "
                f"{_num(g['copy_first_mse_frame'], '.1f')}) |",
                f"| `generation.ink_last` | {_num(g['ink_last'], '.3f')} | last generated frame's ink / the real one's |",
                f"| `generation.sharpness_last` | {_num(g['sharpness_last'], '.3f')} | its mean gradient / the real one's |",
                f"| `generation.speed_ratio` | {_num(g['speed_ratio'], '.3f')} | samples' speed / the test clips' "
                f"({g['speed']:.2f} / {g['real_speed']:.2f} px per frame) |",
                f"| `generation.diversity` | {_num(g['diversity'], '.1f')} | squared difference per frame between two "
                "samples of one frame (0: all alike) |"]
    a = m.get("action")
    if a and a.get("speed_mean") is not None:
        out += [f"| `action.speed_ratio` | {_num(a.get('speed_ratio'), '.3f')} | drawn first steps' mean speed "
                f"{a['speed_mean']:.2f} px per frame / the labels' {_num(a.get('label_speed_mean'), '.2f')} |",
                f"| `action.quadrant_min` | {_num(a['quadrant_min'], '.3f')} | the least used of the four directions "
                "(0.25: all alike) |",
                f"| `action.into_wall_fraction` | {_num(a['into_wall_fraction'], '.3f')} | of {a['at_wall']} layers "
                "touching a wall, the share whose first step goes further into it (the real clips' first steps: "
                f"{_num(a.get('real_into_wall_fraction'), '.3f')}) |"]
    if c:
        out += [f"| `conditioned.mse_frame` | {_num(c['mse_frame'], '.1f')} | one frame + each digit's labelled "
                f"motion ({_num(c['ratio_to_copy_first'], '.2f')}x copying the frame) |",
                f"| `conditioned.digit_accuracy_last` | {_num(c['digit_accuracy_last'], '.3f')} | digits read at their "
                "labelled place in the last frame |",
                f"| `conditioned.position_error_last` | {_num(c['position_error_last'], '.2f')} px | each digit's distance "
                "to its labelled place, last frame |"]
    return out + [""]


def summary_markdown(m: dict, here: Path, plots_dir: Path, generated_dir: Path,
                     clips: list[Path] | None = None, tables_dir: Path | None = None) -> str:
    r, c, p, cost = m["recon"], m["codebook"], m["prediction"], m.get("cost", {})
    verdict = []
    if p.get("ratio_to_copy_last") is not None and p.get("ratio_to_blank") is not None:
        beats = [name for name, ratio in (("copy-last", p["ratio_to_copy_last"]), ("blank", p["ratio_to_blank"]))
                 if ratio < 1]
        verdict = [f"The prior's error is {p['ratio_to_copy_last']:.2f}x copy-last's and "
                   f"{p['ratio_to_blank']:.2f}x blank's: it beats "
                   + (" and ".join(beats) if beats else "neither baseline") + ".", ""]
    lines = [
        "# vqvideo run summary",
        "",
        f"Test split: {m['test_clips']} clips. Prediction: the first {p['context_frames']} real frames of each "
        f"clip given, the next {p['predicted_frames']} predicted by the prior (argmax) and decoded.",
        "Numbers are in `metrics.json` under the same names (`dvc metrics show`), and in the MLflow run.",
        "",
        "## Prediction against the baselines",
        "",
        *_prediction_table(p),
        "",
        *verdict,
        "## Reconstruction and codebook",
        "",
        "| metric | value | note |",
        "| --- | ---: | --- |",
        f"| `recon.psnr` | {_num(r['psnr'], '.2f')} dB | from the mean per-pixel MSE |",
        f"| `recon.ssim` | {r['ssim']:.4f} | 1 is identical |",
        f"| `recon.mse` | {r['mse']:.6f} | per pixel, pixels in [0, 1] |",
        f"| `recon.mse_frame` | {r['mse_frame']:.2f} | per frame (sum over pixels), the Moving MNIST convention |",
        f"| `codebook.active_fraction` | {c['active_fraction']:.3f} | {c['active_codes']} of {c['size']} codes "
        f"used, {c['dead_codes']} dead |",
        f"| `codebook.perplexity` | {c['perplexity']:.1f} | at most {c['size']} |",
        f"| `codebook.entropy_bits` | {c['entropy_bits']:.2f} | at most log2 K = {c['max_entropy_bits']:.2f} |",
        "",
    ]
    if cost:
        lines += ["## Cost", "", "| model | parameters | training time | frames/s (last phase) |",
                  "| --- | ---: | ---: | ---: |"]
        for name, key in (("VQ-VAE", "vqvae"), ("prior", "prior")):
            secs = cost.get(f"{key}_train_seconds")
            fps = cost.get(f"{key}_frames_per_second")
            lines.append(f"| {name} | {cost[f'{key}_parameters']:,} | "
                         f"{'n/a' if secs is None else f'{secs:.0f} s'} | {_num(fps, '.0f')} |")
        lines.append("")
    lines += _still_image_section(m)
    lines += ["## Plots", ""]
    for name, title, note in PLOTS:
        if not (plots_dir / name).exists():  # data without labels: no digit or action pictures
            continue
        lines += [f"### {title}", "", note, "", f"![{title}]({_rel(plots_dir / name, here)})", ""]
    gen = _rel(generated_dir, here)
    lines += ["## Sample clips", "",
              f"The generate stage animates test clips from their first frame(s); the files are in "
              f"[`{gen}/`]({gen}/). In each, the rows (or panels) are the real clip, its reconstruction, "
              "then one sample per row.", ""]
    for gif in clips or []:
        stem = gif.with_suffix("")
        links = [f"[{ext}]({_rel(stem.with_suffix('.' + ext), here)})" for ext in ("mp4", "png")
                 if stem.with_suffix("." + ext).exists()]
        lines += [f"- `{gif.stem}`: " + ", ".join(links) if links else f"- `{gif.stem}`",
                  "", f"  ![{gif.stem}]({_rel(gif, here)})", ""]
    if tables_dir is not None:
        csv = _rel(tables_dir / "prediction_by_step.csv", here)
        lines += ["## Tables", "", f"- [`{csv}`]({csv}): each predictor's error and SSIM per predicted step",
                  f"- [`{_rel(tables_dir / 'recon_per_clip.csv', here)}`]({_rel(tables_dir / 'recon_per_clip.csv', here)}):"
                  " reconstruction error per test clip",
                  f"- [`{_rel(tables_dir / 'code_usage.csv', here)}`]({_rel(tables_dir / 'code_usage.csv', here)}):"
                  " how often each code is picked on the test split", ""]
    return "\n".join(lines)
