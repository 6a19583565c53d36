"""reports/summary.md: the headline numbers against their baselines, the plots, the clips."""

from __future__ import annotations

import os
from pathlib import Path


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def summary_markdown(m: dict, here: Path, plots_dir: Path, generated_dir: Path) -> str:
    r, c, p, cost = m["recon"], m["codebook"], m["prediction"], m.get("cost", {})
    lines = [
        "# vqvideo run summary",
        "",
        f"Test split: {m['test_clips']} clips. Prediction: {p['context_frames']} real frames in, "
        f"{p['predicted_frames']} predicted by argmax.",
        "",
        "| metric | value | reference |",
        "| --- | --- | --- |",
        f"| recon PSNR | {r['psnr']:.2f} dB | |",
        f"| recon SSIM | {r['ssim']:.4f} | |",
        f"| recon MSE per pixel | {r['mse']:.6f} | |",
        f"| codebook active fraction | {c['active_fraction']:.3f} | {c['size'] - c['dead_codes']} of {c['size']} codes |",
        f"| codebook perplexity | {c['perplexity']:.1f} | max {c['size']} |",
        f"| code entropy | {c['entropy_bits']:.2f} bits | max {c['max_entropy_bits']:.2f} bits |",
        f"| prediction MSE per frame | {p['mse_frame']:.1f} | copy-last {p['copy_last_mse_frame']:.1f}, "
        f"blank {p['blank_mse_frame']:.1f}, VQ floor {p['vq_floor_mse_frame']:.1f} |",
        f"| prediction / copy-last | {p['ratio_to_copy_last']:.3f} | below 1 beats copying |",
        f"| prediction / blank | {p['ratio_to_blank']:.3f} | below 1 beats predicting background |",
        f"| prediction SSIM | {p['ssim']:.4f} | copy-last {p['copy_last_ssim']:.4f} |",
    ]
    if cost:
        lines += [
            f"| VQ-VAE | {cost['vqvae_parameters']:,} params | {cost['vqvae_train_seconds']:.0f} s, "
            f"{cost['vqvae_frames_per_second']:.0f} frames/s |",
            f"| prior | {cost['prior_parameters']:,} params | {cost['prior_train_seconds']:.0f} s, "
            f"{cost['prior_frames_per_second']:.0f} frames/s |",
        ]
    lines += ["", "## Plots", ""]
    for name, title in [
        ("vqvae_convergence.png", "VQ-VAE convergence"),
        ("prior_convergence.png", "Prior convergence"),
        ("prediction_by_step.png", "Prediction error by step"),
        ("code_frequency.png", "Code usage by rank"),
        ("codebook_pca.png", "Codebook (PCA)"),
        ("reconstructions.png", "Reconstructions (originals above)"),
        ("worst_reconstructions.png", "Worst reconstructions"),
    ]:
        lines += [f"### {title}", "", f"![{title}]({_rel(plots_dir / name, here)})", ""]
    lines += ["## Sample clips", "",
              f"Generated clips (`.mp4`, `.gif`, grid `.png`) are in [{_rel(generated_dir, here)}]"
              f"({_rel(generated_dir, here)}/): each row of a grid is the real clip, its reconstruction, "
              "then one sample per row from the first frame alone.", ""]
    return "\n".join(lines)
