"""Seaborn figures for the evaluate stage. Each function writes one PNG and returns its path.

Every figure says what it shows in its title, names its axes with units, and keeps its legend
off the data, so a PNG read alone (in reports/plots/, the MLflow run or summary.md) makes sense.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from vqvideo.io import atomic_path  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")
DPI = 110

# Readable names for history columns and predictors, used as panel titles and legend entries.
LABELS = {
    "loss": "total loss",
    "recon_mse": "reconstruction MSE (per pixel)",
    "vq_loss": "VQ loss (codebook + commitment)",
    "perplexity": "codebook perplexity",
    "active_fraction": "active code fraction",
    "accuracy": "next-frame code accuracy",
    "grad_norm": "gradient norm",
    "lr": "learning rate",
}
PREDICTORS = {
    "prior": "prior (argmax rollout)",
    "copy_last": "copy last context frame",
    "blank": "blank frame (all zeros)",
    "vq_floor": "VQ-VAE floor (true codes decoded)",
}
SPLIT_STYLE = {"train": {"lw": 1.2, "alpha": 0.75}, "val": {"lw": 2.0, "marker": "o", "ms": 4}}


def _save(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _compact(v: float, _pos=None) -> str:  # noqa: ANN001 - matplotlib formatter signature
    return f"{v:.3g}"


def _wants_log(values: pd.Series) -> bool:
    """Log scale when a positive curve spans more than a decade: early steps then stay readable."""
    v = values.dropna()
    return len(v) > 1 and bool((v > 0).all()) and v.max() / v.min() > 10


def convergence(history: pd.DataFrame, metrics: list[str], title: str, path: Path,
                labels: dict[str, str] | None = None) -> Path:
    """One panel per metric against step: train (every logged batch) and val (held-out split)."""
    names = {**LABELS, **(labels or {})}
    cols = [m for m in metrics if m in history.columns and history[m].notna().any()]
    if not cols:
        raise ValueError(f"history has none of the columns {metrics}")
    ncol = min(3, len(cols))
    nrow = -(-len(cols) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.3 * nrow), squeeze=False)
    palette = dict(zip(("train", "val"), sns.color_palette(n_colors=2)))
    for ax, m in zip(axes.flat, cols):
        for split, part in history.groupby("split", sort=True):
            part = part[["step", m]].dropna()
            if len(part):
                ax.plot(part.step, part[m], color=palette.get(split), label=str(split),
                        **SPLIT_STYLE.get(split, {}))
        if _wants_log(history[m]):
            ax.set_yscale("log")
            # 1-2-5 ticks: a curve spanning one or two decades still gets several labels
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, p: ""))
        ax.yaxis.set_major_formatter(FuncFormatter(_compact))
        ax.set_title(names.get(m, m))
        ax.set_xlabel("training step")
    for ax in axes.flat[len(cols):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False)
    fig.suptitle(title, x=0.02, ha="left", fontsize=14)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


def code_frequency(counts: np.ndarray, path: Path) -> Path:
    """Code usage sorted by rank: a flat curve is a healthy codebook, a cliff is collapse."""
    counts = np.asarray(counts, dtype=np.float64)
    k = len(counts)
    share = np.sort(counts)[::-1] / max(counts.sum(), 1.0)
    used = int((counts > 0).sum())
    p = share[share > 0]
    perplexity = float(2 ** -(p * np.log2(p)).sum()) if len(p) else 1.0
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(np.arange(used), share[:used], width=1.0, color=sns.color_palette()[0], label="used codes")
    ax.axhline(1 / k, color="0.3", ls="--", lw=1.2, label=f"uniform usage (1/{k})")
    if used < k:
        ax.axvspan(used - 0.5, k - 0.5, color=sns.color_palette()[3], alpha=0.12,
                   label=f"dead codes ({k - used}): never picked")
    ax.set_yscale("log")
    ax.set_xlim(-0.5, k - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("share of code positions\non the test split")
    ax.set_title(f"Code usage by rank: {used} of {k} codes used, perplexity {perplexity:.1f}")
    ax.legend(loc="upper right", fontsize=9)
    return _save(fig, path)


def codebook_projection(codebook: np.ndarray, counts: np.ndarray, path: Path) -> Path:
    """The codebook's first two principal components; used codes coloured by log usage."""
    codebook = np.asarray(codebook, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    x = codebook - codebook.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T if len(vt) >= 2 else np.c_[x @ vt[:1].T, np.zeros(len(x))]
    var = s**2 / max((s**2).sum(), 1e-300)
    used = counts > 0
    fig, ax = plt.subplots(figsize=(6.4, 5))
    if (~used).any():
        ax.scatter(xy[~used, 0], xy[~used, 1], marker="x", c="0.6", s=18, lw=1,
                   label=f"dead ({int((~used).sum())})")
    sc = ax.scatter(xy[used, 0], xy[used, 1], c=np.log10(counts[used]), cmap="viridis",
                    s=22, edgecolors="none", label=f"used ({int(used.sum())})")
    fig.colorbar(sc, ax=ax, label="log10(times picked on test)")
    ax.set_xlabel(f"PC 1 ({100 * var[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * var[1] if len(var) > 1 else 0:.0f}% of variance)")
    ax.set_title(f"Codebook vectors (PCA of {len(codebook)} x {codebook.shape[1]}), by usage")
    ax.legend(loc="best", fontsize=9)
    return _save(fig, path)


def prediction_by_step(df: pd.DataFrame, path: Path) -> Path:
    """Per predicted step: the prior against copy-last, blank and the VQ-VAE floor."""
    names = [n for n in PREDICTORS if f"{n}_mse_frame" in df.columns]
    styles = {"prior": "-", "copy_last": ":", "blank": "-.", "vq_floor": "--"}
    colors = dict(zip(PREDICTORS, sns.color_palette(n_colors=4)))
    panels = [("mse_frame", "squared error per frame\n(sum over pixels, lower is better)")]
    if any(f"{n}_ssim" in df.columns for n in names):
        panels.append(("ssim", "SSIM (higher is better)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (metric, ylabel) in zip(axes[0], panels):
        for n in names:
            col = f"{n}_{metric}"
            if col in df.columns:
                ax.plot(df.step, df[col], ls=styles[n], color=colors[n], marker="o", ms=4,
                        lw=2.2 if n == "prior" else 1.5, label=PREDICTORS[n])
        ax.set_xlabel("predicted frame (steps after the last context frame)")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric == "mse_frame":
            ax.set_ylim(bottom=0)
    axes[0, 0].set_title("Prediction error by step")
    if len(panels) > 1:
        axes[0, 1].set_title("Prediction SSIM by step")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(names), bbox_to_anchor=(0.5, -0.08),
               frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def quality_by_step(panels: list[tuple[str, pd.DataFrame, dict[str, str], str]], path: Path,
                    refs: dict[str, float] | None = None) -> Path:
    """One panel per (title, table, {column: label}, y label), each against the `step` column;
    `refs` draws horizontal lines (a ratio's 1.0, say) on every panel."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, df, cols, ylabel) in zip(axes[0], panels):
        for col, label in cols.items():
            if col in df.columns:
                ax.plot(df.step, df[col], marker="o", ms=3.5, lw=1.8, label=label)
        for y in (refs or {}).get(title, []):
            ax.axhline(y, color="grey", lw=0.8, ls=":")
        ax.set_title(title)
        ax.set_xlabel("frame (steps after the last given frame)")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def speed_histogram(speeds: dict[str, np.ndarray], path: Path) -> Path:
    """Speeds (px per frame) of the action prior's drawn first steps beside the labels'."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    top = max(float(np.max(v)) for v in speeds.values() if len(v)) if any(len(v) for v in speeds.values()) else 1.0
    bins = np.linspace(0, top + 0.5, 30)
    names = {"drawn": "drawn by the action prior (one still frame)", "labels": "labels (the data's motion)"}
    for key, values in speeds.items():
        if len(values):
            ax.hist(values, bins=bins, alpha=0.55, density=True, label=f"{names.get(key, key)}, mean {np.mean(values):.2f}")
    ax.set_xlabel("speed of a layer's first step (px per frame)")
    ax.set_ylabel("density")
    ax.set_title("Still-image motion: drawn speeds against the data's")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def clip_rows(rows: list[tuple[str, torch.Tensor]], path: Path, title: str,
              context: int | None = None, group: int = 2) -> Path:
    """Labelled rows of frames (each (T, C, H, W) in [0, 1]), one column per time step.

    Rows come in groups of `group` (e.g. original, reconstruction) separated by a gap; with
    `context`, a line marks where the given frames end and predicted ones begin.
    """
    t = max(r.shape[0] for _, r in rows)
    c, h, w = rows[0][1].shape[1:]
    pad, gap = 2, 10
    strips, centres, y = [], [], 0
    for i, (_, r) in enumerate(rows):
        if r.shape[0] < t:  # a shorter row (a context-free prediction) is right-aligned
            r = torch.cat([torch.ones(t - r.shape[0], *r.shape[1:]), r])
        strip = make_grid(r.float().clamp(0, 1), nrow=t, padding=pad, pad_value=1.0)  # (3, h+2p, W)
        strips.append(strip)
        centres.append(y + strip.shape[1] / 2)
        y += strip.shape[1]
        if (i + 1) % group == 0 and i + 1 < len(rows):
            strips.append(torch.ones(3, gap, strip.shape[2]))
            y += gap
    img = torch.cat(strips, dim=1).permute(1, 2, 0).numpy()  # (H', W', 3)
    # inches per pixel: a frame is at least 0.75 in wide, and never drawn below its own resolution
    scale = max(0.75 / w, 1 / DPI)
    fig, ax = plt.subplots(figsize=(max(4.0, img.shape[1] * scale + 1.6), img.shape[0] * scale + 0.8))
    ax.imshow(img, interpolation="nearest")
    ax.grid(False)
    ax.set_yticks(centres, [label for label, _ in rows], fontsize=9)
    step = max(1, t // 10)  # at most ~10 frame numbers, so they never overlap
    ax.set_xticks([pad + (w + pad) * k + w / 2 for k in range(0, t, step)], [str(k) for k in range(0, t, step)])
    ax.set_xlabel("frame")
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    if context:
        xline = (w + pad) * context + pad / 2
        ax.axvline(xline, color="tab:red", lw=1.5)
        ax.text(xline, -4, f"{context} given | predicted", color="tab:red", ha="center", va="bottom", fontsize=9)
    ax.set_title(title, fontsize=11, pad=18 if context else 6)
    return _save(fig, path)


def image_grid(rows: list[torch.Tensor], path: Path, pad: int = 2) -> Path:
    """Rows of frames (each (T, C, H, W) in [0, 1]) as one PNG via torchvision's make_grid."""
    t = max(r.shape[0] for r in rows)
    frames = []
    for r in rows:
        if r.shape[0] < t:
            r = torch.cat([r, torch.ones(t - r.shape[0], *r.shape[1:])])
        frames.append(r)
    grid = make_grid(torch.cat(frames).float().clamp(0, 1), nrow=t, padding=pad, pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    from PIL import Image

    with atomic_path(path, suffix=".tmp.png") as tmp:
        Image.fromarray(arr if arr.shape[2] == 3 else arr[..., 0]).save(tmp, format="PNG")
    return path
