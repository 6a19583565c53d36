"""The workers: each runs trials until the budget is spent; `tune` starts them in a process pool."""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from vqvideo.config import Params, TuneConfig
from vqvideo.data.frames import FrameData
from vqvideo.errors import VQVideoError
from vqvideo.stages.tune.objective import Objective
from vqvideo.stages.tune.recovery import heartbeat, proc_start, recover_interrupted, requeue
from vqvideo.stages.tune.storage import budget_lock, open_storage
from vqvideo.stages.tune.study import (
    INTERRUPTED,
    WORKER,
    counted,
    enqueue_baseline,
    finished,
    open_study,
    study_name,
)
from vqvideo.tracking.trials import close_interrupted_runs

log = logging.getLogger(__name__)


@dataclass
class WorkerSpec:
    """What a worker process needs (picklable: the storage is reopened from its URL)."""

    cfg: TuneConfig
    params: Params
    frames: Path
    storage_url: str
    root: Path
    name: str
    parent: str | None
    deadline: float | None  # time.time() after which no new trial starts
    threads: int | None = None


def run_worker(spec: WorkerSpec, worker: int = 0) -> int:
    """Run trials until the study holds n_trials counted trials or the deadline passes.

    Returns the number of trials this worker ran.
    """
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    experiment = ""
    if spec.parent is not None:
        from vqvideo import tracking

        experiment = tracking.setup()
    cfg = spec.cfg
    data = FrameData.open(spec.frames)
    store = open_storage(spec.storage_url, spec.root, cfg.heartbeat_s)
    study = open_study(cfg, spec.name, store.storage, worker)
    objective = Objective(cfg, spec.params, data, spec.parent, spec.name, experiment)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start": proc_start(os.getpid()),
          "index": worker}
    ran = 0
    while spec.deadline is None or time.time() < spec.deadline:
        with budget_lock(store, spec.name):
            # a worker that died meanwhile (here or, by heartbeat, on another machine) would
            # otherwise hold its slot of the budget until the next invocation
            recovered = recover_interrupted(study)
            if recovered and spec.parent is not None:
                close_interrupted_runs(recovered)
            trials = study.get_trials(deepcopy=False)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if len(counted(trials)) + running >= cfg.n_trials:
                break
            with warnings.catch_warnings():  # "heartbeat is meant for optimize": we beat ourselves
                warnings.simplefilter("ignore", UserWarning)
                trial = study.ask()  # a queued (WAITING) trial first, else a new one
            trial.set_user_attr(WORKER, me)  # one write: what recovery needs to tell it died
        try:
            with heartbeat(store.storage, trial._trial_id):  # noqa: SLF001
                outcome = objective(trial)
        except BaseException as err:
            _tell_crash(study, trial, err)
            raise
        study.tell(trial, outcome.values if outcome.state == TrialState.COMPLETE else None,
                   state=outcome.state)
        ran += 1
        shown = ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in trial.params.items())
        value = ", ".join(f"{o}={v:.5g}" for o, v in zip(cfg.objectives, outcome.values or []))
        log.info("tune: trial %d %s %s (%s)%s", trial.number, outcome.state.name, value, shown,
                 f": {outcome.reason}" if outcome.state == TrialState.FAIL else "")
        gc.collect()
    return ran


def _tell_crash(study: optuna.Study, trial: optuna.Trial, err: BaseException) -> None:
    """A trial stopped by Ctrl-C is queued again; one stopped by a bug is failed and kept."""
    try:
        if isinstance(err, KeyboardInterrupt):
            trial.set_user_attr(INTERRUPTED, True)
        study.tell(trial, state=TrialState.FAIL)
        if isinstance(err, KeyboardInterrupt):
            requeue(study, study._storage.get_trial(trial._trial_id))  # noqa: SLF001
    except Exception:  # noqa: BLE001 - the original error matters more
        log.exception("tune: could not record the end of trial %d", trial.number)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _worker_entry(spec: WorkerSpec, worker: int) -> None:
    from vqvideo.utils import setup_logging

    setup_logging()
    try:
        run_worker(spec, worker)
    except VQVideoError as err:
        log.error("tune worker %d: %s", worker, err)
        raise SystemExit(2) from None


def tune(cfg: TuneConfig, params: Params, frames: Path, root: Path, parent: str | None,
         workers: int = 1, name: str | None = None) -> optuna.Study:
    """Run the study with `workers` processes sharing its storage; returns the study."""
    data = FrameData.open(frames)
    store = open_storage(cfg.storage, root, cfg.heartbeat_s)
    name = name or study_name(cfg, params.model, params.train, data)
    study = open_study(cfg, name, store.storage)
    with budget_lock(store, name):
        recovered = recover_interrupted(study)
        if enqueue_baseline(study, cfg, params):
            log.info("tune: params.yaml's own codebook settings queued as trial 0 (the baseline)")
        if study.user_attrs.get("objectives") != cfg.objectives:
            study.set_user_attr("objectives", cfg.objectives)
    if recovered and parent is not None:
        close_interrupted_runs(recovered)
    done = finished(study)
    if done >= cfg.n_trials:
        log.info("tune: study %s already holds %d finished trials (tune.n_trials %d)", name, done, cfg.n_trials)
        return study
    log.info("tune: study %s in %s: %d of %d trials done, %d worker(s)", name, store.display, done,
             cfg.n_trials, workers)
    deadline = time.time() + cfg.timeout if cfg.timeout else None
    from vqvideo.utils import resolve_workers

    threads = max(1, resolve_workers(0) // workers) if workers > 1 else None
    if workers > 1 and store.kind == "sqlite":
        log.warning("tune: %d workers on SQLite take turns writing; a journal file "
                    "(--storage journal:optuna/vqvideo.log) is the better choice on one machine", workers)
    spec = WorkerSpec(cfg, params, frames, store.url, root, name, parent, deadline, threads)
    if workers == 1:
        run_worker(spec, 0)
    else:
        ctx = mp.get_context("spawn")  # fork after torch/sqlite are loaded is unsafe
        procs = [ctx.Process(target=_worker_entry, args=(spec, w), name=f"tune-worker-{w}")
                 for w in range(workers)]
        for p in procs:
            p.start()
        try:
            for p in procs:
                p.join()
        except KeyboardInterrupt:
            for p in procs:
                p.join(timeout=30)
            raise
        bad = [p.exitcode for p in procs if p.exitcode]
        if bad:
            raise VQVideoError(f"{len(bad)} tuning worker(s) failed (exit codes {bad}); see the log "
                               "above, then re-run to resume the study")
    return optuna.load_study(study_name=name, storage=store.storage)
