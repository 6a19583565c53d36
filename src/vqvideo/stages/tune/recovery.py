"""Trials whose worker died: recognised (pid and start time, or Optuna's heartbeat), failed,
and queued again with the same params."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from vqvideo.stages.tune.study import INTERRUPTED, RETRY_OF, WORKER

log = logging.getLogger(__name__)


def proc_start(pid: int) -> str | None:
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


def requeue(study: optuna.Study, t: FrozenTrial) -> None:
    attrs = {RETRY_OF: t.number}
    if t.user_attrs.get("baseline"):
        attrs["baseline"] = True
    study.enqueue_trial(t.params, user_attrs=attrs)


def requeue_stale(study: optuna.Study, t: FrozenTrial) -> None:
    """Optuna's heartbeat callback: a trial on a machine that went silent is run again."""
    log.warning("tune: trial %d sent no heartbeat (its worker died); queued again", t.number)
    requeue(study, t)


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
        optuna.storages.fail_stale_trials(study)  # database storages: re-queued by requeue_stale
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
        requeue(study, t)
        recovered.append(t)
    if recovered:
        log.info("tune: interrupted trial(s) %s marked failed and queued again",
                 [t.number for t in recovered])
    return recovered


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
