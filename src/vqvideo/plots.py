"""Seaborn figures for the evaluate stage. Each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from vqvideo.io import atomic_path  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def _save(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def convergence(history: pd.DataFrame, metrics: list[str], title: str, path: Path) -> Path:
    """One panel per metric against step, train and val as two lines."""
    cols = [m for m in metrics if m in history.columns]
    long = history.melt(id_vars=["step", "split"], value_vars=cols, var_name="metric").dropna()
    g = sns.relplot(data=long, x="step", y="value", hue="split", col="metric", col_wrap=min(3, len(cols)),
                    kind="line", facet_kws={"sharey": False}, height=2.8, aspect=1.3, marker="o", markersize=3)
    for ax, m in zip(g.axes.flat, cols):
        if m in ("recon_mse", "loss", "vq_loss") and (long[long.metric == m].value > 0).all():
            ax.set_yscale("log")
    g.figure.suptitle(title, y=1.03)
    return _save(g.figure, path)


def code_frequency(counts: np.ndarray, path: Path) -> Path:
    """Code usage sorted by rank: a flat curve is a healthy codebook, a cliff is collapse."""
    order = np.sort(counts)[::-1]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(np.arange(len(order)), order / max(order.sum(), 1), width=1.0, color=sns.color_palette()[0])
    ax.set_yscale("log")
    ax.set_xlabel("code rank")
    ax.set_ylabel("share of test-split positions")
    ax.set_title(f"code usage by rank ({int((counts > 0).sum())}/{len(counts)} codes used)")
    return _save(fig, path)


def codebook_projection(codebook: np.ndarray, counts: np.ndarray, path: Path) -> Path:
    """The codebook's first two principal components, coloured by log usage."""
    x = codebook - codebook.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=np.log10(counts + 1), cmap="viridis", s=14)
    fig.colorbar(sc, ax=ax, label="log10(uses + 1)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("codebook vectors (PCA), coloured by test usage")
    return _save(fig, path)


def prediction_by_step(df: pd.DataFrame, path: Path) -> Path:
    """Per predicted step: the prior against copy-last, blank and the VQ-VAE floor."""
    long = df.melt(id_vars=["step"], value_vars=[c for c in df.columns if c.endswith("mse_frame")],
                   var_name="predictor", value_name="mse_frame")
    long["predictor"] = long.predictor.str.replace("_mse_frame", "")
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=long, x="step", y="mse_frame", hue="predictor", marker="o", ax=ax)
    ax.set_xlabel("predicted frame (steps after the last context frame)")
    ax.set_ylabel("squared error per frame (sum over pixels)")
    ax.set_title("prediction error by step")
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
