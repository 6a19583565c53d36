"""Tuning with real processes: several workers on one study, a worker killed mid-trial,
PostgreSQL across "machines", and optuna-dashboard on the study.

Every process here is real (spawned workers, `python -m vqvideo tune`, a PostgreSQL server,
optuna-dashboard on 127.0.0.1); the checks read the study back from its storage.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from conftest import tiny_params_dict, write_params
from vqvideo.cli import main as cli
from vqvideo.config import parse_params
from vqvideo.data.frames import FrameData
from vqvideo.stages import tune as T

pytestmark = pytest.mark.slow


def setup_dir(tmp_path: Path, **tune) -> tuple[Path, object]:
    data = tiny_params_dict(tune=tune)
    write_params(tmp_path / "params.yaml", data)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # marks tmp_path as the repo root
    return tmp_path / "params.yaml", parse_params(data)


def load(params, tiny_data, root: Path) -> optuna.Study:
    cfg = params.tune
    name = T.study_name(cfg, params.model, params.train, FrameData.open(tiny_data / "frames"))
    return optuna.load_study(study_name=name, storage=T.open_storage(cfg.storage, root).storage)


def vqvideo(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "vqvideo", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def assert_recorded_once(study: optuna.Study, n_trials: int) -> None:
    """Exactly n_trials finished trials, numbered 0..n-1, none left running or queued, and
    one MLflow nested run per trial."""
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(n_trials))
    assert all(t.state.is_finished() for t in trials), [t.state for t in trials]
    assert T.finished(study) == n_trials
    parent = study.user_attrs["mlflow"]["run_id"]
    client = mlflow.MlflowClient()
    exp = client.get_run(parent).info.experiment_id
    runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(int(r.data.tags["optuna.trial"]) for r in runs) == list(range(n_trials))


def test_two_workers_share_one_journal_study(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params_file, params = setup_dir(tmp_path, n_trials=6, storage="journal:optuna/vqvideo.log")
    args = ["tune", "--params", str(params_file), "--frames", str(tiny_data / "frames"), "--out", "out"]
    assert cli([*args, "--workers", "2"]) == 0
    study = load(params, tiny_data, tmp_path)
    assert_recorded_once(study, 6)
    # both spawned workers ran trials (each records its pid)
    assert len({t.user_attrs["worker"]["pid"] for t in study.trials}) == 2
    assert len(pd.read_csv(tmp_path / "out" / "trials.csv")) == 6


def test_two_processes_started_by_hand_share_one_study(tiny_data, tmp_path):
    params_file, params = setup_dir(tmp_path, n_trials=5, steps=16, eval_every=8,
                                    storage="journal:optuna/vqvideo.log")
    args = ["tune", "--params", str(params_file), "--frames", str(tiny_data / "frames")]
    procs = [vqvideo(*args, "--out", f"out{i}", cwd=tmp_path) for i in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-3000:]
    study = load(params, tiny_data, tmp_path)
    assert_recorded_once(study, 5)
    client = mlflow.MlflowClient()
    parents = client.search_runs([client.get_experiment_by_name("vqvideo").experiment_id],
                                 f"tags.`optuna.study` = '{study.study_name}' and tags.`optuna.storage` LIKE '%{tmp_path.name}%'")
    assert len(parents) == 1  # one parent run for the study, not one per process


def test_a_worker_killed_mid_trial_resumes_without_losing_trials(tiny_data, tmp_path, monkeypatch):
    params_file, params = setup_dir(tmp_path, n_trials=3, steps=120, eval_every=20, pruner="none",
                                    storage="journal:optuna/vqvideo.log")
    args = ["tune", "--params", str(params_file), "--frames", str(tiny_data / "frames"), "--out", "out"]
    proc = vqvideo(*args, cwd=tmp_path)
    try:
        deadline = time.time() + 300
        study = None
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            with contextlib.suppress(Exception):  # the study may not exist yet
                study = load(params, tiny_data, tmp_path)
                trials = study.get_trials()
                running = [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values]
                if trials and trials[0].state == TrialState.COMPLETE and running:
                    break
        assert proc.poll() is None, "the tuning process ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # mid-trial: trial 1 has reported but not finished
    finally:
        proc.kill()
        proc.communicate()
    before = {t.number: t for t in study.get_trials()}
    assert before[0].state == TrialState.COMPLETE and before[1].state == TrialState.RUNNING

    monkeypatch.chdir(tmp_path)
    assert cli(args) == 0  # the same command again
    study = load(params, tiny_data, tmp_path)
    after = study.get_trials()
    assert after[0].value == before[0].value and after[0].params == before[0].params  # kept
    killed = after[1]
    assert killed.state == TrialState.FAIL and killed.user_attrs["interrupted"] is True
    assert "interrupted" in killed.user_attrs["fail_reason"]
    retry = [t for t in after if t.user_attrs.get("retry_of") == 1]
    assert len(retry) == 1 and retry[0].params == killed.params and retry[0].state == TrialState.COMPLETE
    # the interrupted trial does not count: three counted trials, as asked
    assert T.finished(study) == 3 and len(after) == 4
    df = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert "interrupted" in df.reason[1]
    run = mlflow.MlflowClient().get_run(killed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "FAIL"


# ---------------------------------------------------------------- PostgreSQL


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
    return Path(found[-1]).parent if found[-1] else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (Debian's postgresql package), its URL."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb) found; apt-get install postgresql to run this test")
    pytest.importorskip("psycopg2", reason="psycopg2 missing: pip install psycopg2-binary")
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the PostgreSQL server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="vqvideo-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    data = root / "data"

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "vqvideo", "-A", "trust", "--no-sync", "-E", "UTF8")
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-o", opts, "-w", "-t", "60", "start")
        yield f"postgresql://vqvideo@127.0.0.1:{port}/postgres"  # the driver is picked by tune
    finally:
        with contextlib.suppress(Exception):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_on_postgresql(tiny_data, tmp_path, postgres_url):
    _, params = setup_dir(tmp_path, n_trials=5, storage=postgres_url)
    study = T.tune(params.tune, params, tiny_data / "frames", tmp_path, None, workers=2)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(5))
    assert all(t.state.is_finished() for t in trials) and T.finished(study) == 5
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2
    # another "machine" sees the same study through the URL alone
    other = optuna.load_study(study_name=study.study_name, storage=T.open_storage(postgres_url, tmp_path).storage)
    assert [t.number for t in other.trials] == list(range(5))


# ---------------------------------------------------------------- optuna-dashboard


def _get(url: str, timeout: float = 60.0) -> bytes:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.parametrize("storage,arg", [("sqlite:///optuna/vqvideo.db", "sqlite:///optuna/vqvideo.db"),
                                         ("journal:optuna/vqvideo.log", "optuna/vqvideo.log")])
def test_optuna_dashboard_serves_the_study(tmp_path, storage, arg):
    """The README's command, run from the repo root, shows our study."""
    store = T.open_storage(storage, tmp_path)
    study = optuna.create_study(storage=store.storage, study_name="vqvideo-codebook-test")
    study.add_trial(optuna.trial.create_trial(
        value=0.01, params={"model.beta": 0.3},
        distributions={"model.beta": optuna.distributions.FloatDistribution(0.05, 2.0, log=True)}))
    assert store.dashboard.endswith(arg.removeprefix("sqlite:///")) or arg in store.dashboard
    exe = Path(sys.executable).with_name("optuna-dashboard")
    if not exe.exists():
        pytest.skip('optuna-dashboard is not installed: pip install -e ".[dashboard]"')
    port = _free_port()
    proc = subprocess.Popen([str(exe), arg, "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        studies = json.loads(_get(f"http://127.0.0.1:{port}/api/studies"))["study_summaries"]
        assert [s["study_name"] for s in studies] == ["vqvideo-codebook-test"]
        page = _get(f"http://127.0.0.1:{port}/dashboard")
        assert b"<html" in page.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_silent_worker_on_postgresql_is_failed_by_heartbeat_and_rerun(tiny_data, tmp_path, postgres_url):
    """A worker on "another machine" dies: no pid to check, so Optuna's heartbeat finds it."""
    params_file, params = setup_dir(tmp_path, n_trials=2, steps=120, eval_every=20, pruner="none",
                                    storage=postgres_url, heartbeat_s=1)
    proc = vqvideo("tune", "--params", str(params_file), "--frames", str(tiny_data / "frames"), "--out", "out",
                   cwd=tmp_path)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            with contextlib.suppress(Exception):
                trials = load(params, tiny_data, tmp_path).get_trials()
                if any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials):
                    break
        assert proc.poll() is None, "the tuning process ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    study = load(params, tiny_data, tmp_path)
    killed = next(t for t in study.get_trials() if t.state == TrialState.RUNNING)
    # pretend the worker ran elsewhere: only the heartbeat can tell it is gone
    study._storage.set_trial_user_attr(killed._trial_id, "worker", {"host": "elsewhere", "pid": 1})
    time.sleep(3.5)  # the grace period: 3 missed beats of 1 s

    study = T.tune(params.tune, params, tiny_data / "frames", tmp_path, None)
    trials = study.get_trials()
    assert trials[killed.number].state == TrialState.FAIL
    retry = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert len(retry) == 1 and retry[0].params == killed.params and retry[0].state == TrialState.COMPLETE
    assert T.finished(study) == 2 and all(t.state.is_finished() for t in trials)
