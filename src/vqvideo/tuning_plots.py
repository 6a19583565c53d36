"""Figures of an Optuna study: history, importances, the codebook size x beta map, learning curves."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from vqvideo.plots import _save, plt, sns

log = logging.getLogger(__name__)

STATE_COLOURS = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange", "FAIL": "tab:red", "RUNNING": "tab:gray"}


def study_plots(study: optuna.Study, df: pd.DataFrame, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [history(df, out / "optimization_history.png"),
             size_beta_map(df, out / "codebook_size_beta_map.png"),
             intermediate(study, out / "intermediate_values.png")]
    imp = importances(study, out / "param_importances.png")
    if imp is not None:
        paths.append(imp)
    return paths


def history(df: pd.DataFrame, path: Path) -> Path:
    done = df[df.state == "COMPLETE"].sort_values("number")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(done.number, done.value, label="trial value", color="tab:blue", s=25)
    ax.plot(done.number, done.value.cummin(), color="tab:red", label="best so far", drawstyle="steps-post")
    ax.set_xlabel("trial")
    ax.set_ylabel("val recon MSE")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(f"optimisation history ({len(done)} complete of {len(df)} trials)")
    return _save(fig, path)


def size_beta_map(df: pd.DataFrame, path: Path) -> Path:
    """Every trial at its (codebook size, beta), coloured by objective; pruned/failed hollow."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    done = df[df.state == "COMPLETE"]
    rest = df[df.state != "COMPLETE"]
    if not done.empty:
        sc = ax.scatter(done["model.codebook_size"], done["model.beta"], c=np.log10(done.value),
                        cmap="viridis_r", s=70, edgecolor="k")
        fig.colorbar(sc, ax=ax, label="log10 val recon MSE (lower is better)")
        best = done.loc[done.value.idxmin()]
        ax.scatter([best["model.codebook_size"]], [best["model.beta"]], marker="*", s=300, c="red",
                   label="best", zorder=3)
    for state, part in rest.groupby("state"):
        ax.scatter(part["model.codebook_size"], part["model.beta"], facecolors="none",
                   edgecolors=STATE_COLOURS.get(state, "k"), s=70, label=state.lower())
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("codebook size K")
    ax.set_ylabel("beta (commitment weight)")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("codebook size x beta")
    return _save(fig, path)


def intermediate(study: optuna.Study, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in study.get_trials(deepcopy=False):
        if not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        ax.plot(steps, [t.intermediate_values[s] for s in steps], color=STATE_COLOURS.get(t.state.name, "k"),
                alpha=0.8, marker="o", markersize=3)
    for state, colour in STATE_COLOURS.items():
        ax.plot([], [], color=colour, label=state.lower())
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("val recon MSE")
    ax.legend(fontsize=8)
    ax.set_title("learning curves of the trials (pruned ones stop early)")
    return _save(fig, path)


def importances(study: optuna.Study, path: Path) -> Path | None:
    try:
        imp = optuna.importance.get_param_importances(study, target=(lambda t: t.values[0]) if len(study.directions) > 1 else None)
    except (RuntimeError, ValueError) as err:  # too few complete trials or no variation
        log.info("no parameter importances: %s", err)
        return None
    fig, ax = plt.subplots(figsize=(6, 2 + 0.4 * len(imp)))
    sns.barplot(x=list(imp.values()), y=list(imp.keys()), ax=ax, color="tab:blue")
    ax.set_xlabel("importance (fANOVA)")
    ax.set_title("parameter importances")
    return _save(fig, path)
