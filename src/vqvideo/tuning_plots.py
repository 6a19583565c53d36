"""Figures of an Optuna study: history, importances, the codebook size x beta map, learning curves.

Drawn from trials.csv's frame and the study itself with matplotlib/seaborn (Optuna's own plots
need plotly), so they land as PNGs beside the other reports.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from matplotlib.colors import LogNorm, Normalize
from matplotlib.ticker import FuncFormatter, NullFormatter

from vqvideo.plots import _save, plt, sns

log = logging.getLogger(__name__)

STATE_COLOURS = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange", "FAIL": "tab:red", "RUNNING": "tab:gray",
                 "WAITING": "tab:gray"}
LABELS = {"recon_mse": "val recon MSE", "active_fraction": "active code fraction"}


def study_plots(study: optuna.Study, df: pd.DataFrame, out: Path,
                objectives: list[str] | None = None) -> list[Path]:
    """Every figure of the study into `out`; returns the paths written."""
    objectives = objectives or ["recon_mse"]
    out.mkdir(parents=True, exist_ok=True)
    paths = [history(df, out / "optimization_history.png", objectives[0]),
             size_beta_map(df, out / "codebook_size_beta_map.png", objectives[0]),
             intermediate(study, out / "intermediate_values.png"),
             importances(study, out / "param_importances.png", objectives)]
    if len(objectives) > 1:
        paths.append(pareto(study, df, out / "pareto_front.png", objectives))
    return paths


def _minimise(objective: str) -> bool:
    return objective != "active_fraction"


def _short(values) -> FuncFormatter:  # noqa: ANN001
    """Tick labels with just enough significant digits to tell the ticks of `values` apart."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    digits = 3
    if len(v) > 1 and v.max() > v.min():
        digits = int(np.clip(np.ceil(np.log10(np.abs(v).max() / (v.max() - v.min()))) + 2, 3, 8))
    return FuncFormatter(lambda x, _pos=None: f"{x:.{digits}g}")


def _value_axis(axis, values) -> None:  # noqa: ANN001 - a matplotlib Axis
    """Log scale only when positive values span more than a decade; plain short labels always."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) and (v > 0).all() and v.max() / v.min() > 10:
        axis.axes.set_yscale("log") if axis is axis.axes.yaxis else axis.axes.set_xscale("log")
    axis.set_major_formatter(_short(v))
    axis.set_minor_formatter(NullFormatter())


def _size_axis(ax, sizes) -> None:  # noqa: ANN001
    """Codebook sizes on a log2 axis, labelled 64, 128, ... instead of 2^6, 2^7."""
    ticks = sorted({int(k) for k in sizes})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    if len(ticks) == 1:
        ax.set_xlim(ticks[0] / 1.5, ticks[0] * 1.5)


def history(df: pd.DataFrame, path: Path, objective: str = "recon_mse") -> Path:
    """Each trial's value in trial order, the best so far, and the baseline (params.yaml)."""
    col = objective if objective in df else "value"
    fig, ax = plt.subplots(figsize=(7, 4))
    done = df[df.state == "COMPLETE"].sort_values("number")
    pruned = df[(df.state == "PRUNED") & df[col].notna()]
    ax.scatter(done.number, done[col], label="complete", color=STATE_COLOURS["COMPLETE"], s=28, zorder=3)
    if not pruned.empty:
        ax.scatter(pruned.number, pruned[col], label="pruned (value when stopped)", facecolors="none",
                   edgecolors=STATE_COLOURS["PRUNED"], s=28, zorder=3)
    for n in df[df.state == "FAIL"].number:
        ax.axvline(n, color=STATE_COLOURS["FAIL"], alpha=0.3, lw=1)
    if (df.state == "FAIL").any():
        ax.plot([], [], color=STATE_COLOURS["FAIL"], alpha=0.5, label="failed")
    if not done.empty:
        best = done[col].cummin() if _minimise(objective) else done[col].cummax()
        ax.plot(done.number, best, color="tab:red", label="best so far", drawstyle="steps-post")
        base = done[done.baseline.astype(bool)] if "baseline" in done else done.iloc[:0]
        if not base.empty:
            ax.axhline(float(base[col].iloc[0]), color="k", ls="--", lw=1, label="baseline (params.yaml)")
    _value_axis(ax.yaxis, df[col].dropna())
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial")
    ax.set_ylabel(LABELS.get(objective, objective))
    ax.legend(fontsize=8)
    ax.set_title(f"optimisation history ({len(done)} complete of {len(df)} trials)")
    return _save(fig, path)


def size_beta_map(df: pd.DataFrame, path: Path, objective: str = "recon_mse") -> Path:
    """Every trial at its (codebook size, beta), coloured by the objective; others hollow."""
    col = objective if objective in df else "value"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if "model.codebook_size" not in df or "model.beta" not in df:
        ax.text(0.5, 0.5, "no trial has suggested params yet", ha="center", transform=ax.transAxes)
        return _save(fig, path)
    done = df[df.state == "COMPLETE"]
    rest = df[df.state != "COMPLETE"]
    if not done.empty:
        values = done[col].astype(float)
        lo, hi = float(values.min()), float(values.max())
        hi = hi if hi > lo else lo * 1.001 + 1e-12
        norm = LogNorm(lo, hi) if lo > 0 and hi / lo > 10 else Normalize(lo, hi)
        cmap = "viridis" if _minimise(objective) else "viridis_r"  # dark = good either way
        sc = ax.scatter(done["model.codebook_size"], done["model.beta"], c=values, cmap=cmap, norm=norm,
                        s=80, edgecolor="k", zorder=3)
        label = LABELS.get(objective, objective)
        bar = fig.colorbar(sc, ax=ax, format=_short(values),
                           label=label + (" (lower is better)" if _minimise(objective) else " (higher is better)"))
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
        best = done.loc[values.idxmin() if _minimise(objective) else values.idxmax()]
        ax.scatter([best["model.codebook_size"]], [best["model.beta"]], marker="*", s=350, c="red",
                   edgecolor="k", label=f"best (trial {int(best.number)})", zorder=4)
    for state, part in rest.groupby("state"):
        ax.scatter(part["model.codebook_size"], part["model.beta"], facecolors="none",
                   edgecolors=STATE_COLOURS.get(state, "k"), s=80, linewidths=1.5, label=state.lower(),
                   zorder=2)
    _size_axis(ax, df["model.codebook_size"].dropna())
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_short(df["model.beta"].dropna()))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("codebook size K")
    ax.set_ylabel("beta (commitment weight)")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("codebook size x beta")
    return _save(fig, path)


def intermediate(study: optuna.Study, path: Path) -> Path:
    """The val curve of every trial; pruned ones stop early, in orange."""
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn, seen = 0, []
    for t in study.get_trials(deepcopy=False):
        points = sorted(t.intermediate_values.items()) or [tuple(p) for p in t.user_attrs.get("val_curve", [])]
        points = [(s, v) for s, v in points if np.isfinite(v)]
        if not points:
            continue
        steps, values = zip(*points)
        seen.extend(values)
        colour = STATE_COLOURS.get(t.state.name, "k")
        ax.plot(steps, values, color=colour, alpha=0.8, marker="o", markersize=3)
        if t.state == optuna.trial.TrialState.PRUNED:
            ax.scatter([steps[-1]], [values[-1]], marker="x", color=colour, s=40, zorder=3)
        drawn += 1
    states = {t.state.name for t in study.get_trials(deepcopy=False)}
    for state, colour in STATE_COLOURS.items():
        if state in states and state != "WAITING":
            ax.plot([], [], color=colour, label=state.lower())
    if drawn:
        _value_axis(ax.yaxis, seen)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no trial reported an intermediate value", ha="center", transform=ax.transAxes)
    ax.set_xlabel("training step")
    ax.set_ylabel("val recon MSE")
    ax.set_title("learning curves of the trials (pruned ones stop early, x)")
    return _save(fig, path)


def importances(study: optuna.Study, path: Path, objectives: list[str] | None = None) -> Path:
    """fANOVA importance of each searched param for the first objective.

    It needs complete trials that differ in their params; until then the figure says so.
    """
    objectives = objectives or ["recon_mse"]
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    n = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fANOVA warns on tiny studies; the title says how many
            imp = optuna.importance.get_param_importances(
                study, target=target, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError) as err:  # too few complete trials or no variation
        log.info("no parameter importances yet: %s", err)
        imp = {}
    fig, ax = plt.subplots(figsize=(6, 2 + 0.4 * max(1, len(imp))))
    if not imp:
        ax.text(0.5, 0.5, f"not enough variety yet: {n} complete trial(s)\n"
                "(importances need complete trials with different params)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    sns.barplot(x=list(imp.values()), y=list(imp.keys()), ax=ax, color="tab:blue")
    ax.set_xlabel(f"importance for {LABELS.get(objectives[0], objectives[0])} (fANOVA)")
    ax.set_title(f"parameter importances ({n} complete trials)")
    return _save(fig, path)


def pareto(study: optuna.Study, df: pd.DataFrame, path: Path, objectives: list[str]) -> Path:
    """The two objectives of every complete trial, the Pareto front joined and ringed."""
    x, y = objectives[:2]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    done = df[df.state == "COMPLETE"]
    ax.scatter(done[x], done[y], color="tab:gray", s=30, label="complete")
    front = sorted(study.best_trials, key=lambda t: t.values[0])
    if front:
        fx, fy = [t.values[0] for t in front], [t.values[1] for t in front]
        ax.plot(fx, fy, color="tab:red", marker="o", markersize=7, mfc="none", label="Pareto front")
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(y, y))
    _value_axis(ax.xaxis, done[x].dropna())
    ax.legend(fontsize=8)
    ax.set_title("Pareto front")
    return _save(fig, path)
