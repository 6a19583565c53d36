"""What a study leaves in reports/tuning: trials.csv, best_params.yaml (the best trial, or the
Pareto front's most balanced one) and the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from vqvideo.errors import VQVideoError
from vqvideo.stages.tune.study import RETRY_OF, WORKER


def trials_frame(study: optuna.Study, objectives: list[str] | None = None) -> pd.DataFrame:
    """One row per trial: number, state, params, value(s), duration, reasons."""
    objectives = objectives or study.user_attrs.get("objectives") or ["recon_mse"]
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = t.duration.total_seconds() if t.duration else t.user_attrs.get("duration_s", float("nan"))
        row: dict[str, Any] = {"number": t.number, "state": t.state.name, **t.params}
        values = t.values or []
        # value: the first objective; a pruned trial carries its last reported val MSE
        row["value"] = values[0] if values else float("nan")
        if len(objectives) > 1:
            for o, v in zip(objectives, values or [float("nan")] * len(objectives)):
                row[o] = v
        row.update({
            "duration_s": round(duration, 3),
            "last_step": t.last_step,
            "baseline": bool(t.user_attrs.get("baseline", False)),
            "retry_of": t.user_attrs.get(RETRY_OF),
            "reason": t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason", ""),
            "worker": _worker_label(t.user_attrs.get(WORKER)),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def _worker_label(who: Any) -> str:
    return f"{who.get('host', '')}:{who.get('pid', '')}" if isinstance(who, dict) else ""


def pick_best(study: optuna.Study, objectives: list[str]) -> FrozenTrial:
    """The best trial; on a Pareto front, the one nearest the ideal point.

    Each objective is scaled to [0, 1] over the front (0 = the best value seen on it), and the
    trial with the smallest Euclidean distance to (0, ..., 0) wins: a balanced compromise
    rather than an extreme. Ties go to the lower reconstruction MSE.
    """
    if len(study.directions) == 1:
        return study.best_trial
    front = study.best_trials
    if not front:
        raise VQVideoError("no tuning trial completed; raise tune.steps or tune.n_trials, or check the log")
    vals = np.array([t.values for t in front], dtype=float)  # (F, objectives)
    sign = np.array([1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in study.directions])
    v = vals * sign  # all minimised
    span = v.max(0) - v.min(0)
    scaled = (v - v.min(0)) / np.where(span > 0, span, 1.0)
    dist = np.sqrt((scaled**2).sum(1))
    mse_col = objectives.index("recon_mse") if "recon_mse" in objectives else 0
    order = sorted(range(len(front)), key=lambda i: (round(float(dist[i]), 12), v[i, mse_col]))
    return front[order[0]]


def nested(flat_params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat_params.items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def best_params(study: optuna.Study, objectives: list[str] | None = None) -> dict:
    """best_params.yaml: the chosen trial's params as params.yaml sections, its values, the front."""
    objectives = objectives or study.user_attrs.get("objectives") or ["recon_mse"]
    best = pick_best(study, objectives)
    out: dict[str, Any] = {
        "study": study.study_name,
        "trial": best.number,
        "values": {o: float(v) for o, v in zip(objectives, best.values)},
        "params": nested(best.params),
    }
    baseline = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get("baseline")]
    if baseline:
        out["baseline"] = {"trial": baseline[0].number,
                           "values": {o: float(v) for o, v in zip(objectives, baseline[0].values)},
                           "params": nested(baseline[0].params)}
    if len(objectives) > 1:
        out["pareto_front"] = [
            {"trial": t.number, "values": {o: float(v) for o, v in zip(objectives, t.values)},
             "params": nested(t.params)}
            for t in sorted(study.best_trials, key=lambda t: t.number)]
    return out


def write_reports(study: optuna.Study, out_dir: Path, objectives: list[str]) -> dict:
    """best_params.yaml, trials.csv and the plots into `out_dir`; returns the best params."""
    from vqvideo.io import staging_dir, write_csv, write_yaml
    from vqvideo.tuning_plots import study_plots

    df = trials_frame(study, objectives)
    if df.empty or not (df.state == "COMPLETE").any():
        raise VQVideoError("no tuning trial completed; raise tune.steps or tune.n_trials, or check the log")
    best = best_params(study, objectives)
    with staging_dir(out_dir) as tmp:  # the reports are swapped in whole
        write_yaml(tmp / "best_params.yaml", best)
        write_csv(tmp / "trials.csv", df)
        study_plots(study, df, tmp / "plots", objectives)
    return best
