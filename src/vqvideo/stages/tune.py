"""tune: an Optuna study over the codebook (size and beta), resumable and shareable by workers.

Each trial trains a VQ-VAE briefly through the training worker itself (no subprocess) and
returns its val reconstruction MSE (optionally also the codebook's active fraction, giving a
Pareto front). The study lives in its storage (`tune.storage`): SQLite by default, a journal file
for several workers on one machine, any database URL Optuna accepts for a cluster. The MLflow
parent run holds one nested run per trial.
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing as mp
import os
import socket
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from vqvideo.config import ModelConfig, Params, TrainConfig, TuneConfig, fingerprint
from vqvideo.data.clips import FrameData
from vqvideo.errors import ConfigError, DivergenceError, VQVideoError

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


# ---------------------------------------------------------------- storage and study


def resolve_storage(url: str, root: Path) -> str | optuna.storages.BaseStorage:
    """`sqlite:///rel/path.db` and journal files are resolved against the repo root."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if url.startswith("journal:") or url.endswith((".log", ".journal", ".jsonl")):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        path = path if path.is_absolute() else root / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path = Path(url[len("sqlite:///") :])
        path = path if path.is_absolute() else root / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in url:
        raise ConfigError(
            f"tune.storage {url!r} is not a storage URL; use sqlite:///path.db, journal:path.log "
            "or a database URL such as postgresql://user:pass@host/db"
        )
    return url


def study_name(cfg: TuneConfig, model: ModelConfig, train: TrainConfig, data: FrameData) -> str:
    """The study's name carries a fingerprint of what it searches over and what it holds fixed."""
    space = cfg.model_dump(mode="json", include={"codebook_sizes", "beta_range", "extra", "objectives", "steps"})
    fixed = fingerprint(space, model, train.model_copy(update={"device": "any"}), data.fingerprint)
    return f"{cfg.study_name}-{fixed[:8]}"


def open_study(cfg: TuneConfig, name: str, storage, worker: int = 0) -> optuna.Study:  # noqa: ANN001
    multi = len(cfg.objectives) > 1
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=cfg.eval_every)
              if cfg.pruner == "median" and not multi else optuna.pruners.NopPruner())
    sampler = (optuna.samplers.NSGAIISampler(seed=cfg.seed + worker) if multi
               else optuna.samplers.TPESampler(seed=cfg.seed + worker, n_startup_trials=4))
    directions = ["minimize" if o == "recon_mse" else "maximize" for o in cfg.objectives]
    for attempt in range(5):  # workers racing to create the same study
        try:
            return optuna.create_study(storage=storage, study_name=name, directions=directions,
                                       sampler=sampler, pruner=pruner, load_if_exists=True)
        except Exception:  # noqa: BLE001
            if attempt == 4:
                raise
            time.sleep(0.5 + worker * 0.3)
    raise AssertionError("unreachable")


def recover_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed process on this host: fail them and queue them again."""
    host = socket.gethostname()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or pid is None or _alive(int(pid)):
            continue
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "interrupted (worker process died)")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, skip_if_exists=False)
        n += 1
    if n:
        log.info("tune: %d interrupted trial(s) marked failed and queued again", n)
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


# ---------------------------------------------------------------- objective


def suggest(trial: optuna.Trial, cfg: TuneConfig, model: ModelConfig, train: TrainConfig):
    m = {"codebook_size": trial.suggest_categorical("model.codebook_size", cfg.codebook_sizes),
         "beta": trial.suggest_float("model.beta", *cfg.beta_range, log=True)}
    t: dict[str, Any] = {"steps": cfg.steps, "eval_every": cfg.eval_every, "checkpoint_every": cfg.steps,
                         "warmup_steps": min(train.warmup_steps, cfg.steps // 5)}
    for key, choices in cfg.extra.items():
        section, _, name = key.partition(".")
        value = trial.suggest_categorical(key, choices)
        if section == "model" and name in ModelConfig.model_fields:
            m[name] = value
        elif section == "train" and name in TrainConfig.model_fields:
            t[name] = value
        else:
            raise ConfigError(f"tune.extra key {key!r} must name a model.* or train.* param")
    return model.model_copy(update=m), train.model_copy(update=t)


class Objective:
    """One trial: a short training run through the training worker, logged as a nested run."""

    def __init__(self, cfg: TuneConfig, params: Params, data: FrameData, parent_run: str | None):
        self.cfg, self.params, self.data, self.parent = cfg, params, data, parent_run

    def __call__(self, trial: optuna.Trial):
        from vqvideo.stages.train import train

        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        model_cfg, train_cfg = suggest(trial, self.cfg, self.params.model, self.params.train)
        multi = len(self.cfg.objectives) > 1
        run = TrialRun(self.parent, trial)
        t0 = time.perf_counter()
        state, reason = "FINISHED", ""

        def on_eval(step: int, row: dict) -> None:
            mse = row["recon_mse"]
            if not math.isfinite(mse):
                raise DivergenceError("trial", step, mse)
            if not multi:
                trial.report(mse, step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step} (val recon MSE {mse:.5f})")

        try:
            result = train(model_cfg, train_cfg, self.data, on_log=run.log, on_eval=on_eval)
            values = [result.val["recon_mse"] if o == "recon_mse" else result.val["active_fraction"]
                      for o in self.cfg.objectives]
            run.log({f"final.{o}": v for o, v in zip(self.cfg.objectives, values)}, train_cfg.steps)
            return values if multi else values[0]
        except optuna.TrialPruned as err:
            state, reason = "KILLED", str(err)
            run.tag("optuna.state", "PRUNED")
            raise
        except DivergenceError as err:
            state, reason = "FAILED", str(err)
            trial.set_user_attr("fail_reason", reason)
            run.tag("optuna.state", "FAIL")
            raise
        finally:
            trial.set_user_attr("duration_s", time.perf_counter() - t0)
            if reason:
                run.tag("reason", reason)
            run.end(state)


class TrialRun:
    """A nested MLflow run for one trial, through the client API (safe from any worker process)."""

    def __init__(self, parent: str | None, trial: optuna.Trial):
        self.client = None
        if parent is None:
            return
        import mlflow

        from vqvideo import tracking

        self.client = mlflow.MlflowClient()
        exp = tracking.setup()
        run = tracking._retry(self.client.create_run, exp, run_name=f"trial-{trial.number}",
                              tags={"mlflow.parentRunId": parent, "optuna.trial": str(trial.number)})
        self.run_id = run.info.run_id
        self.tag("optuna.state", "RUNNING")
        for k, v in trial.params.items():
            tracking._retry(self.client.log_param, self.run_id, k, v)

    def log(self, metrics: dict, step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        from vqvideo import tracking

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))]
        if batch:
            tracking._retry(self.client.log_batch, self.run_id, metrics=batch)

    def tag(self, key: str, value: str) -> None:
        if self.client is not None:
            from vqvideo import tracking

            tracking._retry(self.client.set_tag, self.run_id, key, value[:5000])

    def end(self, status: str) -> None:
        if self.client is not None:
            if status == "FINISHED":
                self.tag("optuna.state", "COMPLETE")
            from vqvideo import tracking

            tracking._retry(self.client.set_terminated, self.run_id, status)


# ---------------------------------------------------------------- workers


def run_worker(cfg: TuneConfig, params: Params, frames: Path, storage_url: str, root: Path, name: str,
               parent: str | None, worker: int, threads: int | None = None) -> None:
    """Optimise until the study holds `cfg.n_trials` finished trials (or the timeout passes)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if parent is not None:
        from vqvideo import tracking

        tracking.setup()
    data = FrameData.open(frames)
    study = open_study(cfg, name, resolve_storage(storage_url, root), worker)
    remaining = cfg.n_trials - finished(study)
    if remaining <= 0:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(
        Objective(cfg, params, data, parent), n_trials=remaining, timeout=cfg.timeout,
        catch=(DivergenceError,), gc_after_trial=True,
        callbacks=[optuna.study.MaxTrialsCallback(cfg.n_trials, states=FINISHED)],
    )


def _worker_entry(*args) -> None:
    from vqvideo.utils import setup_logging

    setup_logging()
    run_worker(*args)


def tune(cfg: TuneConfig, params: Params, frames: Path, root: Path, parent: str | None,
         workers: int = 1) -> optuna.Study:
    """Run the study with `workers` processes sharing its storage; returns the study."""
    data = FrameData.open(frames)
    storage = resolve_storage(cfg.storage, root)
    name = study_name(cfg, params.model, params.train, data)
    study = open_study(cfg, name, storage)
    recover_interrupted(study)
    if finished(study) >= cfg.n_trials:
        log.info("tune: study %s already holds %d finished trials", name, finished(study))
        return study
    if workers > 1 and isinstance(storage, str) and storage.startswith("sqlite"):
        log.warning("tune: several workers on SQLite may hit 'database is locked'; a journal file "
                    "(tune.storage: journal:optuna/vqvideo.log) is the safe choice on one machine")
    from vqvideo.utils import resolve_workers

    threads = max(1, resolve_workers(0) // workers)
    args = (cfg, params, frames, cfg.storage, root, name, parent)
    if workers == 1:
        run_worker(*args, 0)
    else:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker_entry, args=(*args, w, threads)) for w in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        bad = [p.exitcode for p in procs if p.exitcode]
        if bad:
            raise VQVideoError(f"{len(bad)} tuning worker(s) failed (exit codes {bad}); see the log above")
    return open_study(cfg, name, storage)


# ---------------------------------------------------------------- outputs


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name, **t.params,
               "duration_s": t.user_attrs.get("duration_s",
                                             (t.duration.total_seconds() if t.duration else float("nan"))),
               "fail_reason": t.user_attrs.get("fail_reason", "")}
        if t.values is not None:
            if len(t.values) == 1:
                row["value"] = t.values[0]
            for name, v in zip(study.user_attrs.get("objectives", ["value"]), t.values):
                row[name] = v
        else:
            row["value"] = float("nan")
        row["last_step"] = max(t.intermediate_values) if t.intermediate_values else None
        rows.append(row)
    return pd.DataFrame(rows)


def best_params(study: optuna.Study) -> dict:
    """The best trial's params as nested params.yaml sections (lowest MSE on the Pareto front)."""
    complete = [t for t in study.best_trials] if len(study.directions) > 1 else [study.best_trial]
    best = min(complete, key=lambda t: t.values[0])
    out: dict[str, dict] = {}
    for key, value in best.params.items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return {"trial": best.number, "values": list(best.values), "params": out}


def write_reports(study: optuna.Study, out_dir: Path, objectives: list[str]) -> dict:
    from vqvideo.io import write_csv, write_yaml
    from vqvideo.tuning_plots import study_plots

    study.set_user_attr("objectives", objectives)
    df = trials_frame(study)
    complete = df[df.state == "COMPLETE"]
    if complete.empty:
        raise VQVideoError("no tuning trial completed; raise tune.steps or tune.n_trials, or check the log")
    best = best_params(study)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(out_dir / "best_params.yaml", best)
    write_csv(out_dir / "trials.csv", df)
    study_plots(study, df, out_dir / "plots")
    return best


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, default=Path("data/frames"))
    p.add_argument("--out", type=Path, default=Path("reports/tuning"))
    p.add_argument("--workers", type=int, default=None, help="worker processes (default tune.workers)")
    p.add_argument("--trials", type=int, default=None, help="override tune.n_trials")


def main(args: argparse.Namespace) -> None:
    from vqvideo import tracking
    from vqvideo.config import flat, load_params

    params: Params = load_params(args.params)
    cfg = params.tune
    if args.trials is not None:
        cfg = cfg.model_copy(update={"n_trials": args.trials})
    workers = args.workers or cfg.workers
    root = tracking.repo_root()
    data = FrameData.open(args.frames)
    name = study_name(cfg, params.model, params.train, data)
    with tracking.pipeline_run(None, new=True, run_name=f"tune:{name}", tags={"optuna.study": name}) as run:
        tracking.log_params({k: v for k, v in flat(params).items() if k.split(".")[0] in ("model", "train", "tune")})
        study = tune(cfg, params, args.frames, root, run.info.run_id, workers)
        best = write_reports(study, args.out, cfg.objectives)
        df = trials_frame(study)
        tracking.log_metrics({"best_value": best["values"][0], "trials": len(df),
                              "complete": int((df.state == "COMPLETE").sum()),
                              "pruned": int((df.state == "PRUNED").sum()),
                              "failed": int((df.state == "FAIL").sum())})
        tracking.log_artifact(args.out, "tuning")
    log.info("tune: best trial %d %s -> %s", best["trial"], best["params"], args.out)


# ---------------------------------------------------------------- apply the best trial


def add_apply_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--best", type=Path, default=Path("reports/tuning/best_params.yaml"))


def apply_best(best_file: Path, params_file: Path) -> dict:
    """Write the best trial's values into params.yaml, keeping its comments and layout."""
    import io

    import yaml
    from ruamel.yaml import YAML

    from vqvideo.config import parse_params
    from vqvideo.io import write_text

    if not best_file.exists():
        raise VQVideoError(f"{best_file} not found; run `vqvideo tune` or `dvc repro tune` first")
    best = yaml.safe_load(best_file.read_text())["params"]
    rt = YAML()
    rt.preserve_quotes = True
    doc = rt.load(params_file.read_text())
    for section, values in best.items():
        for key, value in values.items():
            doc[section][key] = value
    buf = io.StringIO()
    rt.dump(doc, buf)
    parse_params(yaml.safe_load(buf.getvalue()), str(params_file))  # never write an invalid file
    write_text(params_file, buf.getvalue())
    return best


def apply_best_main(args: argparse.Namespace) -> None:
    best = apply_best(args.best, args.params)
    log.info("apply-best: %s written into %s", best, args.params)
