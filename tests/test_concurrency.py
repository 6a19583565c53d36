"""Many hands at once: pipelines logging into one MLflow SQLite store at the same time lose
nothing. (Several tuning workers on one study: tests/test_tune_workers.py.)"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import tiny_params_dict, write_params

# A third writer that only logs, as fast as it can, while the two pipelines train.
HAMMER = """
from vqvideo import tracking
with tracking.pipeline_run(None, new=True, run_name="hammer") as run:
    tracking.log_params({f"p{i}": i for i in range(150)})
    for i in range(300):
        tracking.log_metrics({"hammer.a": i, "hammer.b": -i}, step=i)
print(run.info.run_id)
"""


@pytest.mark.slow
def test_two_pipelines_and_a_logger_share_one_new_sqlite_store(tiny_data, tmp_path):
    import mlflow

    from vqvideo.config import parse_params, section_params

    store = tmp_path / "store" / "mlflow.db"  # does not exist yet: both create it at once
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    params_dict = tiny_params_dict(train={"steps": 30, "log_every": 1, "eval_every": 10, "checkpoint_every": 10})
    params = write_params(tmp_path / "params.yaml", params_dict)
    procs = {}
    for name in ("a", "b"):
        out = tmp_path / name
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "vqvideo", "train", "--params", str(params), "--frames",
             str(tiny_data / "frames"), "--model-dir", str(out / "vqvae"), "--checkpoints", str(out / "ckpt"),
             "--history", str(out / "history.csv")],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    hammer = subprocess.Popen([sys.executable, "-c", HAMMER], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    for name, p in procs.items():
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, f"pipeline {name} failed:\n{err[-3000:]}"
    out, err = hammer.communicate(timeout=600)
    assert hammer.returncode == 0, err[-3000:]
    hammer_id = out.split()[-1]

    client = mlflow.MlflowClient(f"sqlite:///{store}")
    exp = client.get_experiment_by_name("vqvideo")
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    pipeline_ids = {n: json.loads((tmp_path / n / "vqvae" / "mlflow_run.json").read_text())["run_id"]
                    for n in procs}
    assert set(runs) == {*pipeline_ids.values(), hammer_id}  # every run, and no stray one
    assert all(r.info.status == "FINISHED" for r in runs.values())

    # Every param of each pipeline, with its value.
    p = parse_params(params_dict)
    data_stats = json.loads((tiny_data / "frames" / "stats.json").read_text())
    expected = {k: str(v) if not isinstance(v, (list, dict)) else str(v)
                for k, v in section_params(p, "collect", "sample", "model", "train").items()}
    expected.update({f"data.{k}": str(v) for k, v in data_stats["clips"].items()})
    for name, run_id in pipeline_ids.items():
        logged = runs[run_id].data.params
        assert logged == expected, f"pipeline {name}: {set(expected) ^ set(logged)}"

        # Every number of the training history, at its step, in MLflow.
        hist = pd.read_csv(tmp_path / name / "history.csv")
        for split, rows in hist.groupby("split"):
            for col in rows.columns.drop(["step", "split"]):
                want = {int(s): v for s, v in zip(rows.step, rows[col]) if not math.isnan(v)}
                got = {m.step: m.value for m in client.get_metric_history(run_id, f"{split}/{col}")}
                assert got.keys() == want.keys(), f"{name}: {split}/{col} steps differ"
                assert all(math.isclose(got[s], want[s], rel_tol=1e-6, abs_tol=1e-12) for s in want)
        assert len(client.get_metric_history(run_id, "train/loss")) == 30
    models = client.search_logged_models([exp.experiment_id])
    assert sorted(m.source_run_id for m in models if m.name == "vqvae") == sorted(pipeline_ids.values())

    hammered = runs[hammer_id]
    assert len(hammered.data.params) == 150
    for key, sign in (("hammer.a", 1), ("hammer.b", -1)):
        values = sorted((m.step, m.value) for m in client.get_metric_history(hammer_id, key))
        assert values == [(i, float(sign * i)) for i in range(300)]


def test_a_store_created_by_two_processes_at_once_is_whole(tmp_path):
    """The first use of a SQLite store builds MLflow's tables; two processes doing it at the same
    instant used to fail ('duplicate column name'). vqvideo serialises it with a file lock."""
    import mlflow

    store = tmp_path / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    code = ("from vqvideo import tracking\n"
            "with tracking.pipeline_run(None, new=True, run_name='r') as run:\n"
            "    tracking.log_metrics({'m': 1.0}, step=1)\n"
            "print(run.info.run_id)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        ids.append(out.split()[-1])
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    exps = [e for e in client.search_experiments() if e.name == "vqvideo"]
    assert len(exps) == 1  # one experiment, not one per process
    runs = client.search_runs([exps[0].experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(ids)
    assert all(r.data.metrics == {"m": 1.0} for r in runs)

