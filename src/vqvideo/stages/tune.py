"""tune: an Optuna study over the codebook (size and beta), resumable and shareable by workers.

Each trial trains a VQ-VAE briefly through the training worker itself (no subprocess) and
returns its val reconstruction MSE (optionally also the codebook's active fraction, giving a
Pareto front). The study lives in its storage (`tune.storage`): SQLite by default, a journal file
for several workers on one machine, any database URL Optuna accepts for a cluster.

The worker loop is Optuna's ask/tell interface rather than `study.optimize`, for three promises
`optimize` cannot keep with several workers: `tune.n_trials` is exact (the check "is there budget
left?" and the creation of the trial happen under one lock), a trial whose worker died is failed
and queued again with the same params (and does not count towards the budget), and a crash, a
divergence or a Ctrl-C is recorded on the trial, the MLflow run and trials.csv alike.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import logging
import math
import multiprocessing as mp
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from vqvideo.config import ModelConfig, Params, SearchRange, TrainConfig, TuneConfig, fingerprint
from vqvideo.data.clips import FrameData
from vqvideo.errors import ConfigError, DivergenceError, VQVideoError

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"  # user attr on a trial whose worker died; it is re-run, not counted
RETRY_OF = "retry_of"  # user attr on the re-queued copy: the number of the interrupted trial
WORKER = "worker"  # user attr: {host, pid, start (the pid's start time), index} of the worker


# ---------------------------------------------------------------- storage


@dataclass
class Store:
    """An opened storage and what the workers need to share it."""

    url: str  # absolute form of tune.storage; what the workers and optuna-dashboard open
    storage: optuna.storages.BaseStorage
    kind: str  # sqlite | journal | database
    lock_path: Path | None  # a file the workers lock around "budget left? -> new trial"

    @property
    def display(self) -> str:
        return _hide_password(self.url)

    @property
    def dashboard(self) -> str:
        """The optuna-dashboard command for this study's storage."""
        target = self.url.removeprefix("journal:") if self.kind == "journal" else self.display
        return f"optuna-dashboard {target}"


def absolute_storage_url(url: str, root: Path) -> tuple[str, str, Path | None]:
    """(url with relative file paths made absolute against `root`, kind, file path or None)."""
    if url.startswith("journal:") or ("://" not in url and url.endswith((".log", ".journal"))):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        path = path if path.is_absolute() else root / path
        return f"journal:{path}", "journal", path
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        path = path if path.is_absolute() else root / path
        return f"sqlite:///{path}", "sqlite", path
    if "://" not in url:
        raise ConfigError(
            f"tune.storage {url!r} is not a storage URL; use sqlite:///path.db, journal:path.log "
            "or a database URL such as postgresql://user:pass@host/db"
        )
    return _postgres_driver(url), "database", None


def _postgres_driver(url: str) -> str:
    """`postgresql://` with whichever driver is installed.

    SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3; many installs (our `postgres` extra
    included) have psycopg2 instead. An explicit `postgresql+driver://` is left alone.
    """
    import importlib.util

    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", "postgres"):
        return url
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://{rest}"
    return url


def open_storage(url: str, root: Path, heartbeat_s: int = 60) -> Store:
    """Open `tune.storage`; a bad URL, a missing driver or a dead server is one clear line."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    url, kind, path = absolute_storage_url(url, root)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "journal":
            storage: optuna.storages.BaseStorage = JournalStorage(JournalFileBackend(str(path)))
        elif kind == "sqlite":
            # several local workers write one file: wait for the lock instead of failing at 5 s
            storage = RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
        else:
            # Across machines a dead worker's pid cannot be checked: Optuna's heartbeat fails its
            # trial after 3 missed beats, and the callback queues the same params again.
            with warnings.catch_warnings():  # experimental in Optuna 5, and what we need here
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s,
                                     heartbeat_stale_trial_callback=_requeue_stale)
    except ImportError:
        raise VQVideoError(f"tune.storage {_hide_password(url)}: its database driver is not installed; "
                           "for PostgreSQL: pip install -e \".[postgres]\" (psycopg2-binary)") from None
    except Exception as err:  # noqa: BLE001 - sqlalchemy/optuna raise many types for this
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VQVideoError(f"cannot open tune.storage {_hide_password(url)} ({first[:200]}); "
                           "check the URL and that the database server is running") from None
    # not "<file>.lock": that is the name of Optuna's own journal lock
    lock = path.with_name(path.name + ".budget-lock") if path is not None else None
    return Store(url, storage, kind, lock)


def _hide_password(url: str) -> str:
    if "://" not in url or "@" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: show it without the userinfo
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"


@contextlib.contextmanager
def budget_lock(store: Store, name: str) -> Iterator[None]:
    """Serialise "is there budget left? -> create the trial" across workers.

    A file lock for the local storages, an advisory lock on PostgreSQL and MySQL. Other
    databases get no lock: there the study can end up to (workers - 1) trials over n_trials.
    """
    if store.lock_path is not None:
        import fcntl

        with open(store.lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    engine = getattr(store.storage, "engine", None)
    dialect = engine.dialect.name if engine is not None else ""
    if dialect not in ("postgresql", "mysql", "mariadb"):
        yield
        return
    from sqlalchemy import text

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    with engine.connect() as conn:
        if dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        else:
            conn.execute(text("SELECT GET_LOCK(:k, 600)"), {"k": str(key)})
        try:
            yield
        finally:
            if dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            else:
                conn.execute(text("SELECT RELEASE_LOCK(:k)"), {"k": str(key)})


# ---------------------------------------------------------------- study


def study_name(cfg: TuneConfig, model: ModelConfig, train: TrainConfig, data: FrameData) -> str:
    """`tune.study_name` plus a fingerprint of the search space and of everything held fixed.

    The searched keys themselves are left out, so `vqvideo apply-best` (which changes them in
    params.yaml) keeps the same study: the next `dvc repro tune` resumes it instead of starting
    over. Budget, storage, workers and seed are left out too: raising n_trials continues a study.
    """
    space = cfg.model_dump(mode="json", include={"codebook_sizes", "beta_range", "extra",
                                                   "objectives", "steps"})
    searched = {"model.codebook_size", "model.beta", *cfg.extra}
    _, trial_train = trial_configs(cfg, model, train, {})
    fixed_model = model.model_dump(mode="json", exclude={k[6:] for k in searched if k.startswith("model.")})
    loop_only = {"log_every", "checkpoint_every", "device"}
    fixed_train = trial_train.model_dump(
        mode="json", exclude=loop_only | {k[6:] for k in searched if k.startswith("train.")})
    fp = fingerprint(space, fixed_model, fixed_train, data.fingerprint)
    return f"{cfg.study_name}-{fp[:8]}"


def directions(cfg: TuneConfig) -> list[str]:
    return ["minimize" if o == "recon_mse" else "maximize" for o in cfg.objectives]


def open_study(cfg: TuneConfig, name: str, storage: optuna.storages.BaseStorage,
               worker: int = 0) -> optuna.Study:
    """Create or load the study, with a sampler seeded for this worker and this point in it."""
    multi = len(cfg.objectives) > 1
    # Median pruning (Optuna's MedianPruner): stop a trial whose val MSE is worse than the
    # median of earlier trials at the same step. Multi-objective studies cannot prune in Optuna.
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=cfg.eval_every)
              if cfg.pruner == "median" and not multi else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=name, directions=directions(cfg),
                                pruner=pruner, load_if_exists=True)
    # Seeded by (seed, worker, trials so far): two workers, or a resumed run, never replay the
    # random start-up suggestions of an earlier process. constant_liar: concurrent workers
    # treat each other's running trials as bad, so they do not all sample the same point.
    n_done = len(study.get_trials(deepcopy=False))
    seed = int(np.random.SeedSequence([cfg.seed, worker, n_done]).generate_state(1)[0])
    study.sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=max(3, min(10, cfg.n_trials // 3)), multivariate=True,
        constant_liar=True)
    return study


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The finished trials that count towards n_trials: not the interrupted ones (re-run)."""
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    return [t for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED)
                and t.number not in retried)]


def finished(study: optuna.Study) -> int:
    return len(counted(study.get_trials(deepcopy=False)))


def enqueue_baseline(study: optuna.Study, cfg: TuneConfig, params: Params) -> bool:
    """Queue params.yaml's own values as the first trial of a new study (when they are in the
    search space): the study's best is then never worse than what the pipeline already uses."""
    if not cfg.baseline_first or study.get_trials(deepcopy=False):
        return False
    current = {"model.codebook_size": params.model.codebook_size, "model.beta": params.model.beta}
    for key, space in cfg.extra.items():
        section, _, name = key.partition(".")
        current[key] = getattr(getattr(params, section), name)
        if not _in_space(current[key], space):
            return False
    lo, hi = cfg.beta_range
    if params.model.codebook_size not in cfg.codebook_sizes or not lo <= params.model.beta <= hi:
        return False
    study.enqueue_trial(current, user_attrs={"baseline": True})
    return True


def _in_space(value: Any, space: list[Any] | SearchRange) -> bool:
    if isinstance(space, SearchRange):
        return space.low <= value <= space.high
    return value in space


# ---------------------------------------------------------------- interrupted trials


def _proc_start(pid: int) -> str | None:
    """A process's start time (Linux): with the pid, it tells a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # killed but not yet reaped by its parent
        return False
    return start is None or fields[19] == start


def _requeue(study: optuna.Study, t: FrozenTrial) -> None:
    attrs = {RETRY_OF: t.number}
    if t.user_attrs.get("baseline"):
        attrs["baseline"] = True
    study.enqueue_trial(t.params, user_attrs=attrs)


def _requeue_stale(study: optuna.Study, t: FrozenTrial) -> None:
    """Optuna's heartbeat callback: a trial on a machine that went silent is run again."""
    log.warning("tune: trial %d sent no heartbeat (its worker died); queued again", t.number)
    _requeue(study, t)


def recover_interrupted(study: optuna.Study) -> list[FrozenTrial]:
    """Fail the trials whose worker died, and queue their params again; returns them.

    Local workers are recognised by host, pid and the pid's start time; on database storages
    Optuna's heartbeat also covers workers on other machines. Marking the trial FAIL is the
    atomic step (a finished trial cannot be updated), so two processes recovering at once
    queue each trial once.
    """
    storage = study._storage  # noqa: SLF001 - Study exposes no public handle; this is BaseStorage
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # database storages: re-queued by _requeue_stale
    recovered = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                 if t.number in running]
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = t.user_attrs.get(WORKER) or {}
        pid = who.get("pid")
        if who.get("host") != host or pid is None or _alive(int(pid), who.get("start")):
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)  # noqa: SLF001
            storage.set_trial_user_attr(t._trial_id, "fail_reason",  # noqa: SLF001
                                        f"interrupted: worker {host}:{pid} died during the trial")
            if not storage.set_trial_state_values(t._trial_id, TrialState.FAIL):  # noqa: SLF001
                continue
        except UpdateFinishedTrialError:
            continue  # another process recovered it first
        _requeue(study, t)
        recovered.append(t)
    if recovered:
        log.info("tune: interrupted trial(s) %s marked failed and queued again",
                 [t.number for t in recovered])
    return recovered


def close_interrupted_runs(trials: list[FrozenTrial]) -> None:
    """The MLflow runs of interrupted trials: marked failed instead of running forever."""
    import mlflow

    from vqvideo import tracking

    tracking.setup()
    client = mlflow.MlflowClient()
    for t in trials:
        run_id = t.user_attrs.get("mlflow_run_id")
        if not run_id:
            continue
        try:
            tracking._retry(client.set_tag, run_id, "optuna.state", "FAIL")
            tracking._retry(client.set_tag, run_id, "fail_reason", "interrupted: the worker died; "
                            "the trial was queued again")
            tracking._retry(client.set_terminated, run_id, "FAILED")
        except Exception as err:  # noqa: BLE001 - a run in another store: nothing to close here
            log.debug("could not close MLflow run %s: %s", run_id, err)


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> Iterator[None]:
    """Record Optuna heartbeats for a running trial (database storages only)."""
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    if not (isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)):
        yield
        return
    stop = threading.Event()
    interval = storage.get_heartbeat_interval()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried at the next one
                storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# ---------------------------------------------------------------- objective


def trial_configs(cfg: TuneConfig, model: ModelConfig, train: TrainConfig,
                  values: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """The model and train configs of one trial: params.yaml, the tuning loop, then `values`."""
    m: dict[str, Any] = {}
    t: dict[str, Any] = {"steps": cfg.steps, "eval_every": cfg.eval_every, "checkpoint_every": cfg.steps,
                         "warmup_steps": min(train.warmup_steps, cfg.steps // 5),
                         "log_every": min(train.log_every, cfg.eval_every)}
    for key, value in values.items():
        section, _, name = key.partition(".")
        (m if section == "model" else t)[name] = value
    # validated again: an enqueued trial may carry any value
    return (ModelConfig.model_validate({**model.model_dump(), **m}),
            TrainConfig.model_validate({**train.model_dump(), **t}))


def suggest(trial: optuna.Trial, cfg: TuneConfig, model: ModelConfig,
            train: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    values: dict[str, Any] = {
        "model.codebook_size": trial.suggest_categorical("model.codebook_size", cfg.codebook_sizes),
        "model.beta": trial.suggest_float("model.beta", *cfg.beta_range, log=True),
    }
    for key, space in cfg.extra.items():
        if isinstance(space, SearchRange):
            section, _, name = key.partition(".")
            owner = ModelConfig if section == "model" else TrainConfig
            if owner.model_fields[name].annotation is int:
                values[key] = trial.suggest_int(key, int(space.low), int(space.high), log=space.log)
            else:
                values[key] = trial.suggest_float(key, space.low, space.high, log=space.log)
        else:
            values[key] = trial.suggest_categorical(key, space)
    try:
        return trial_configs(cfg, model, train, values)
    except Exception as err:  # noqa: BLE001 - pydantic's ValidationError, kept to one line
        raise ConfigError(f"trial {trial.number}: invalid params {values}: "
                          f"{str(err).splitlines()[-1].strip()}") from None


@dataclass
class Outcome:
    state: TrialState
    values: list[float] | None = None
    reason: str = ""


class Objective:
    """One trial: a short training run through the training worker, logged as a nested run."""

    def __init__(self, cfg: TuneConfig, params: Params, data: FrameData, parent_run: str | None = None,
                 study: str = "", experiment_id: str = ""):
        self.cfg, self.params, self.data = cfg, params, data
        self.parent, self.study, self.experiment_id = parent_run, study, experiment_id

    def __call__(self, trial: optuna.Trial) -> Outcome:
        """Run the trial; returns its outcome. Only a bug or Ctrl-C propagates (as itself)."""
        from vqvideo.stages.train import train

        multi = len(self.cfg.objectives) > 1
        prune = self.cfg.pruner != "none" and not multi
        run = TrialRun(self.parent, self.experiment_id, trial, self.study)
        curve: list[list[float]] = []
        t0 = time.perf_counter()
        outcome = Outcome(TrialState.FAIL, reason="not run")
        try:
            model_cfg, train_cfg = suggest(trial, self.cfg, self.params.model, self.params.train)
            run.start({**trial.params, "tune.steps": train_cfg.steps})

            def on_eval(step: int, row: dict) -> None:
                mse = float(row["recon_mse"])
                curve.append([step, mse])
                if not math.isfinite(mse):
                    raise DivergenceError("trial", step, mse)
                if multi:  # Optuna keeps intermediate values for single-objective studies only
                    return
                objective = self.cfg.objectives[0]
                value = float(row[objective])
                trial.report(value, step)
                # the last eval is the result itself: never prune a finished training
                if prune and step < train_cfg.steps and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step}: val {objective} {value:.5g} "
                                             "is worse than the median of earlier trials")

            result = train(model_cfg, train_cfg, self.data, on_log=run.log, on_eval=on_eval)
            values = [float(result.val[o]) for o in self.cfg.objectives]
            run.log({f"final.{k}": v for k, v in result.val.items()
                     if k not in ("step", "split", "lr") and isinstance(v, (int, float))}, train_cfg.steps)
            if all(math.isfinite(v) for v in values):
                outcome = Outcome(TrialState.COMPLETE, values)
            else:
                outcome = Outcome(TrialState.FAIL, reason=f"non-finite objective {values}")
        except optuna.TrialPruned as err:
            outcome = Outcome(TrialState.PRUNED, reason=str(err))
        except DivergenceError as err:
            outcome = Outcome(TrialState.FAIL, reason=f"diverged: loss {err.value} at step {err.step}; "
                              "a lower train.lr (or a narrower search) avoids it")
        except VQVideoError as err:  # an invalid extra value, ...
            outcome = Outcome(TrialState.FAIL, reason=str(err))
        except BaseException as err:  # a bug or Ctrl-C: recorded, then raised to the worker
            reason = (f"{type(err).__name__}: {err}".strip().splitlines()[0]
                      if not isinstance(err, KeyboardInterrupt) else "interrupted (Ctrl-C); queued again")
            outcome = Outcome(TrialState.FAIL, reason=reason[:1000])
            raise
        finally:
            duration = time.perf_counter() - t0
            attrs = {"duration_s": round(duration, 3), "val_curve": curve}
            if outcome.state == TrialState.FAIL:
                attrs["fail_reason"] = outcome.reason
            elif outcome.state == TrialState.PRUNED:
                attrs["prune_reason"] = outcome.reason
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            run.end(outcome, duration)
        return outcome


class TrialRun:
    """A nested MLflow run for one trial, through the client API (safe from any worker process)."""

    STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}

    def __init__(self, parent: str | None, experiment_id: str, trial: optuna.Trial, study: str):
        self.client = None
        self.parent, self.experiment_id, self.trial, self.study = parent, experiment_id, trial, study
        self.run_id = ""

    def start(self, params: dict[str, Any]) -> None:
        if self.parent is None:
            return
        import mlflow
        from mlflow.entities import Param

        from vqvideo import tracking

        self.client = mlflow.MlflowClient()
        tags = {"mlflow.parentRunId": self.parent, "optuna.study": self.study,
                "optuna.trial": str(self.trial.number), "optuna.state": "RUNNING"}
        run = tracking._retry(self.client.create_run, self.experiment_id, run_name=f"trial-{self.trial.number}", tags=tags)
        self.run_id = run.info.run_id
        self.trial.set_user_attr("mlflow_run_id", self.run_id)
        tracking._retry(self.client.log_batch, self.run_id,
                        params=[Param(k, str(v)) for k, v in params.items()])

    def log(self, metrics: dict, step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        from vqvideo import tracking

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))]
        if batch:
            tracking._retry(self.client.log_batch, self.run_id, metrics=batch)

    def end(self, outcome: Outcome, duration: float) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric, RunTag

        from vqvideo import tracking

        tags = [RunTag("optuna.state", outcome.state.name)]
        if outcome.reason:
            key = "fail_reason" if outcome.state == TrialState.FAIL else "prune_reason"
            tags.append(RunTag(key, outcome.reason[:5000]))
        metrics = [Metric("duration_s", duration, int(time.time() * 1000), 0)]
        tracking._retry(self.client.log_batch, self.run_id, metrics=metrics, tags=tags)
        tracking._retry(self.client.set_terminated, self.run_id, self.STATUS[outcome.state])


# ---------------------------------------------------------------- workers


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
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _proc_start(os.getpid()),
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
            _requeue(study, study._storage.get_trial(trial._trial_id))  # noqa: SLF001
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


# ---------------------------------------------------------------- outputs


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


# ---------------------------------------------------------------- the stage


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, default=Path("data/frames"))
    p.add_argument("--out", type=Path, default=Path("reports/tuning"))
    p.add_argument("--workers", type=int, default=None, help="worker processes (default tune.workers)")
    p.add_argument("--trials", type=int, default=None, help="override tune.n_trials")
    p.add_argument("--timeout", type=float, default=None, help="override tune.timeout (seconds)")
    p.add_argument("--storage", default=None, help="override tune.storage, e.g. journal:optuna/vqvideo.log")


def _parent_run(study: optuna.Study) -> str | None:
    """The study's MLflow parent run, when it lives in the current tracking store."""
    import mlflow

    from vqvideo import tracking

    rec = study.user_attrs.get("mlflow")
    if not rec or rec.get("tracking_uri") != tracking.tracking_uri():
        return None
    tracking.setup()
    try:
        run = tracking._retry(mlflow.MlflowClient().get_run, rec["run_id"])
    except Exception:  # noqa: BLE001 - deleted, or from a store that is gone
        return None
    return run.info.run_id if run.info.lifecycle_stage == "active" else None


def _new_parent_run(study: optuna.Study, name: str, store: Store) -> str:
    import mlflow

    from vqvideo import tracking

    experiment = tracking.setup()  # first: it points MLflow at the store the client will use
    client = mlflow.MlflowClient()
    run = tracking._retry(client.create_run, experiment, run_name=f"tune:{name}",
                          tags={"optuna.study": name, "optuna.storage": store.display})
    study.set_user_attr("mlflow", {"run_id": run.info.run_id, "tracking_uri": tracking.tracking_uri()})
    return run.info.run_id


def main(args: argparse.Namespace) -> None:
    from vqvideo import tracking
    from vqvideo.config import load_params, parse_params, section_params
    from vqvideo.stages.train import check_inputs

    params: Params = load_params(args.params)
    overrides = {k: v for k, v in {"n_trials": args.trials, "timeout": args.timeout,
                                   "storage": args.storage, "workers": args.workers}.items() if v is not None}
    if overrides:  # validated like params.yaml itself: `--trials 0` is one clear line
        data = params.model_dump(mode="json")
        data["tune"].update(overrides)
        params = parse_params(data, f"{args.params} with the command line's overrides")
    cfg = params.tune
    root = tracking.repo_root()
    data = check_inputs(params, args.frames)  # missing, empty or mismatched: before any trial or run
    name = study_name(cfg, params.model, params.train, data)
    store = open_storage(cfg.storage, root, cfg.heartbeat_s)  # a bad URL fails before any run opens
    study = open_study(cfg, name, store.storage)
    with budget_lock(store, name):  # one parent run per study, even with workers started by hand
        parent = _parent_run(study)
        new = parent is None
        if new:
            parent = _new_parent_run(study, name, store)
    with tracking.pipeline_run(None, run_id=parent):
        if new:
            tracking.log_params(section_params(params, "model", "train", "tune"))
        else:
            import mlflow

            mlflow.set_tag("resumed", "true")
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


# ---------------------------------------------------------------- apply the best trial


def add_apply_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--best", type=Path, default=Path("reports/tuning/best_params.yaml"))


def apply_best(best_file: Path, params_file: Path) -> dict:
    """Write the best trial's values into params.yaml, keeping its comments and layout.

    The result is validated before anything is written: a best_params.yaml that does not fit
    the current params (a renamed key, an out-of-range value) leaves params.yaml untouched.
    """
    import io

    import yaml
    from ruamel.yaml import YAML

    from vqvideo.config import parse_params
    from vqvideo.io import write_text

    if not best_file.exists():
        raise VQVideoError(f"{best_file} not found; run `vqvideo tune` or `dvc repro tune` first")
    if not params_file.exists():
        raise ConfigError(f"params file not found: {params_file}; run from the repo root or pass --params")
    try:
        best = (yaml.safe_load(best_file.read_text()) or {})["params"]
        if not isinstance(best, dict) or not all(isinstance(v, dict) for v in best.values()):
            raise TypeError("params must map sections to values")
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise VQVideoError(f"{best_file} is not a vqvideo best_params.yaml ({err}); "
                           "re-run `vqvideo tune` to write it") from None
    rt = YAML()
    rt.preserve_quotes = True
    # ruamel writes None as an empty value by default; keep params.yaml's explicit `null`
    rt.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = rt.load(params_file.read_text())
    for section, values in best.items():
        if section not in doc:
            raise ConfigError(f"{params_file} has no section {section!r} for the best params; "
                              "is it the params file the study was run with?")
        for key, value in values.items():
            doc[section][key] = value
    buf = io.StringIO()
    rt.dump(doc, buf)
    try:  # never write an invalid file
        parse_params(yaml.safe_load(buf.getvalue()), str(params_file))
    except yaml.YAMLError as err:
        raise ConfigError(f"{params_file}: {getattr(err, 'problem', err)}; fix the file") from None
    write_text(params_file, buf.getvalue())
    return best


def apply_best_main(args: argparse.Namespace) -> None:
    best = apply_best(args.best, args.params)
    shown = ", ".join(f"{s}.{k}={v}" for s, values in best.items() for k, v in values.items())
    log.info("apply-best: %s written into %s; `dvc repro` retrains with them", shown, args.params)
