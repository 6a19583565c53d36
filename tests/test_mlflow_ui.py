"""The MLflow run seen the way a user sees it: the real `mlflow server` on 127.0.0.1, serving the
store a tiny pipeline (train, prior, evaluate through the CLI) wrote, read over the REST API the
web UI itself calls."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import tiny_params_dict, write_params

PLOTS = {"vqvae_convergence.png", "prior_convergence.png", "code_frequency.png", "codebook_pca.png",
         "prediction_by_step.png", "prediction_samples.png", "reconstructions.png", "worst_reconstructions.png"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_exe() -> list[str]:
    exe = Path(sys.executable).parent / "mlflow"  # the venv's own mlflow, not one on PATH
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]


@pytest.fixture(scope="module")
def pipeline_store(tiny_data, tmp_path_factory):
    """train -> prior -> evaluate through `vqvideo` CLI mains, logging into a fresh SQLite store."""
    from vqvideo.cli import main as cli

    root = tmp_path_factory.mktemp("ui")
    params = write_params(root / "params.yaml", tiny_params_dict())
    frames = str(tiny_data / "frames")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # artifacts land under root/mlruns, not in the repo
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        common = ["--params", str(params), "--frames", frames]
        assert cli(["train", *common, "--model-dir", "models/vqvae", "--checkpoints", "ck/vqvae",
                    "--history", "reports/train/history.csv"]) == 0
        assert cli(["prior", *common, "--vqvae", "models/vqvae", "--model-dir", "models/prior",
                    "--checkpoints", "ck/prior", "--history", "reports/prior/history.csv"]) == 0
        assert cli(["evaluate", *common, "--vqvae", "models/vqvae", "--prior", "models/prior",
                    "--train-history", "reports/train/history.csv", "--prior-history", "reports/prior/history.csv",
                    "--metrics", "reports/metrics.json", "--plots", "reports/plots", "--tables", "reports/eval",
                    "--summary", "reports/summary.md"]) == 0
    run_id = json.loads((root / "models/prior/mlflow_run.json").read_text())["run_id"]
    return root, run_id


@pytest.fixture(scope="module")
def server(pipeline_store):
    """`mlflow server` as a child process on a free port; stopped (and checked stopped) after."""
    root, _ = pipeline_store
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed in the teardown below
    proc = subprocess.Popen(
        [*_mlflow_exe(), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a cold start imports a lot on a busy 2-core machine
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{(root / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer in time:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started, nothing else
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
        with socket.socket() as s:  # the port is free again: nothing left listening
            assert s.connect_ex(("127.0.0.1", port)) != 0


def _get(base: str, endpoint: str, **query) -> dict:
    url = f"{base}{endpoint}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _post(base: str, endpoint: str, body: dict) -> dict:
    req = urllib.request.Request(f"{base}{endpoint}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_ui_shows_the_pipeline_run(server, pipeline_store):
    root, run_id = pipeline_store
    metrics_json = json.loads((root / "reports/metrics.json").read_text())

    # The experiment page: the experiment by name, then its runs table.
    exp = _get(server, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="vqvideo")["experiment"]
    runs = _post(server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
    assert [r["info"]["run_id"] for r in runs] == [run_id]  # one run for the whole pipeline

    # The run page: params of every stage and the evaluate metrics under their metrics.json names.
    run = _get(server, "/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["model.codebook_size"] == "32"
    assert params["prior.width"] == "32"
    assert params["evaluate.context_frames"] == "4"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["recon.psnr"] == pytest.approx(metrics_json["recon"]["psnr"])
    assert metrics["codebook.active_fraction"] == pytest.approx(metrics_json["codebook"]["active_fraction"])
    assert metrics["prediction.mse_frame"] == pytest.approx(metrics_json["prediction"]["mse_frame"])
    assert metrics["prediction.copy_last_mse_frame"] == pytest.approx(metrics_json["prediction"]["copy_last_mse_frame"])

    # The runs table's Dataset column: the sampled frames, named with their digest.
    datasets = [d["dataset"] for d in run["inputs"]["dataset_inputs"]]
    assert len(datasets) == 1 and datasets[0]["name"].startswith("frames (") and datasets[0]["digest"]
    # Per-step charts in sections: train/, val/, prior/, eval/ prefixes, no flat list.
    keys = {m["key"] for m in run["data"]["metrics"]}
    assert {"train/recon_mse", "val/recon_mse", "prior/train_position", "eval/prior_mse_frame"} <= keys

    # The Models page: both models registered, each version linked to this run.
    models = _get(server, "/api/2.0/mlflow/registered-models/search")["registered_models"]
    assert {m["name"] for m in models} >= {"vqvideo-vqvae", "vqvideo-prior"}
    versions = _get(server, "/api/2.0/mlflow/model-versions/search", filter=f"run_id='{run_id}'")["model_versions"]
    assert {v["name"] for v in versions} == {"vqvideo-vqvae", "vqvideo-prior"}

    # A metric's chart: the training curve, one point per logged step, as in history.csv.
    hist = _get(server, "/api/2.0/mlflow/metrics/get-history", run_id=run_id,
                metric_key="val/recon_mse")["metrics"]
    csv = pd.read_csv(root / "reports/train/history.csv")
    val = csv[csv.split == "val"]
    assert [h["step"] for h in hist] == val.step.tolist()
    assert [h["value"] for h in hist] == pytest.approx(val.recon_mse.tolist())
    steps = _get(server, "/api/2.0/mlflow/metrics/get-history", run_id=run_id,
                 metric_key="eval/prior_mse_frame")["metrics"]
    assert sorted(h["step"] for h in steps) == [1, 2, 3, 4]

    # The artifacts pane: the evaluate folder with every plot, and an image the UI would render.
    top = {f["path"] for f in _get(server, "/api/2.0/mlflow/artifacts/list", run_id=run_id)["files"]}
    assert {"evaluate", "train", "prior"} <= top
    plots = _get(server, "/api/2.0/mlflow/artifacts/list", run_id=run_id, path="evaluate/plots")["files"]
    assert {Path(f["path"]).name for f in plots} >= PLOTS
    assert all(int(f["file_size"]) > 1000 for f in plots)
    url = f"{server}/get-artifact?{urllib.parse.urlencode({'path': 'evaluate/plots/prediction_by_step.png', 'run_uuid': run_id})}"
    with urllib.request.urlopen(url, timeout=30) as r:
        png = r.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png == (root / "reports/plots/prediction_by_step.png").read_bytes()

    # And the web UI itself is served.
    with urllib.request.urlopen(f"{server}/", timeout=30) as r:
        assert r.status == 200 and b"<html" in r.read().lower()
