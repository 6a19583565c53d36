"""The `tune` stage's command line: one parent MLflow run per study, the workers, the reports."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vqvideo.config import Params
from vqvideo.stages.tune.pool import tune
from vqvideo.stages.tune.reports import trials_frame, write_reports
from vqvideo.stages.tune.storage import budget_lock, open_storage
from vqvideo.stages.tune.study import open_study, study_name
from vqvideo.tracking.trials import new_parent_run, parent_run

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, default=Path("data/frames"))
    p.add_argument("--out", type=Path, default=Path("reports/tuning"))
    p.add_argument("--workers", type=int, default=None, help="worker processes (default tune.workers)")
    p.add_argument("--trials", type=int, default=None, help="override tune.n_trials")
    p.add_argument("--timeout", type=float, default=None, help="override tune.timeout (seconds)")
    p.add_argument("--storage", default=None, help="override tune.storage, e.g. journal:optuna/vqvideo.log")


def main(args: argparse.Namespace) -> None:
    from vqvideo import tracking
    from vqvideo.config import load_params, parse_params, section_params
    from vqvideo.data.frames import open_checked

    params: Params = load_params(args.params)
    overrides = {k: v for k, v in {"n_trials": args.trials, "timeout": args.timeout,
                                   "storage": args.storage, "workers": args.workers}.items() if v is not None}
    if overrides:  # validated like params.yaml itself: `--trials 0` is one clear line
        data = params.model_dump(mode="json")
        data["tune"].update(overrides)
        params = parse_params(data, f"{args.params} with the command line's overrides")
    cfg = params.tune
    root = tracking.repo_root()
    data = open_checked(args.frames, params.sample.channels, params.sample.size)  # missing, empty or mismatched: before any trial or run
    name = study_name(cfg, params.model, params.train, data)
    store = open_storage(cfg.storage, root, cfg.heartbeat_s)  # a bad URL fails before any run opens
    study = open_study(cfg, name, store.storage)
    with budget_lock(store, name):  # one parent run per study, even with workers started by hand
        parent = parent_run(study)
        new = parent is None
        if new:
            parent = new_parent_run(study, name, store.display)
    with tracking.pipeline_run(None, run_id=parent):
        if new:
            tracking.log_params(section_params(params, "model", "train", "tune"))
        else:
            tracking.set_tag("resumed", "true")
        study = tune(cfg, params, args.frames, root, parent, cfg.workers, name)
        best = write_reports(study, args.out, cfg.objectives)
        df = trials_frame(study, cfg.objectives)
        tracking.log_metrics({**{f"best.{k}": v for k, v in best["values"].items()},
                              "best.trial": best["trial"], "trials": len(df),
                              "complete": int((df.state == "COMPLETE").sum()),
                              "pruned": int((df.state == "PRUNED").sum()),
                              "failed": int((df.state == "FAIL").sum())})
        tracking.log_artifact(args.out, "tuning")
    log.info("tune: best trial %d %s %s -> %s; browse the study: %s", best["trial"], best["values"],
             best["params"], args.out, store.dashboard)
