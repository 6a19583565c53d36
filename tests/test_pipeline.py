"""The whole pipeline, for real: `dvc repro` in a fresh git repo on a tiny config, then MLflow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, tiny_params_dict, write_params

STAGES = ["collect", "sample", "train", "prior", "generate", "evaluate", "tune"]


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def make_repo(dest: Path, params: dict) -> Path:
    """A copy of this repo's tracked files in a new git repo, with `params` as params.yaml."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith(("tests/", "bench/")) or not (REPO / f).exists():
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dest / f)
    write_params(dest / "params.yaml", params)
    env = _env()
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t",
                                                                "commit", "-qm", "init"]):
        _run(cmd, dest, env)
    return dest


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the repo's own store
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for k in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        env.setdefault(k, "vqvideo-test")
    for k in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        env.setdefault(k, "test@vqvideo.invalid")
    return env


@pytest.mark.slow
def test_dvc_repro_end_to_end(tmp_path):
    repo = make_repo(tmp_path / "repo", tiny_params_dict())
    env = _env()
    dvc = [sys.executable, "-m", "dvc"]
    _run([*dvc, "repro"], repo, env)

    # Every stage's outputs exist and hold what they should.
    manifest = (repo / "data/raw/manifest.csv").read_text()
    assert manifest.count(".mkv") == 12
    stats = json.loads((repo / "data/frames/stats.json").read_text())
    assert all(stats["clips"][s] > 0 for s in ("train", "val", "test"))
    for f in ("models/vqvae/model.pt", "models/prior/model.pt", "reports/train/history.csv",
              "reports/prior/history.csv", "reports/summary.md", "reports/eval/prediction_by_step.csv",
              "reports/tuning/best_params.yaml", "reports/tuning/trials.csv"):
        assert (repo / f).stat().st_size > 0, f
    generated = sorted(p.suffix for p in (repo / "reports/generated").iterdir())
    assert generated.count(".mp4") == 2 and generated.count(".gif") == 2 and generated.count(".png") == 2
    assert list((repo / "reports/plots").glob("*.png"))
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for key in ("mse", "psnr", "ssim"):
        assert key in metrics["recon"]
    for key in ("size", "perplexity", "active_fraction"):
        assert key in metrics["codebook"]
    for key in ("mse_frame", "ssim", "copy_last_mse_frame", "blank_mse_frame"):
        assert key in metrics["prediction"]
    assert metrics["codebook"]["size"] == 32

    # Nothing generated is left for git but the report, which git keeps (cache: false) so it
    # reads on any git host: DVC owns data, models and clips; mlruns/ is never tracked.
    status = _run(["git", "status", "--porcelain", "--untracked-files=all"], repo, env).stdout
    report = ("reports/plots/", "reports/eval/", "reports/summary.md", "reports/metrics.json")
    leftover = [line[3:] for line in status.splitlines()
                if line[3:].startswith(("data/", "models/", "mlruns/", "reports/"))
                and not line[3:].endswith(".gitignore") and not line[3:].startswith(report)]
    assert not leftover, leftover

    # DVC sees it all and reads the metrics and plots.
    assert "up to date" in _run([*dvc, "status"], repo, env).stdout.lower()
    shown = _run([*dvc, "metrics", "show", "--json"], repo, env).stdout
    assert "psnr" in shown
    _run([*dvc, "plots", "show", "-o", str(tmp_path / "plots")], repo, env)
    assert (tmp_path / "plots" / "index.html").exists()

    # The MLflow run of this pipeline execution, in the repo's own SQLite store.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    run_id = json.loads((repo / "models/vqvae/mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.data.params["model.codebook_size"] == "32"
    assert run.data.params["prior.width"] == "32"
    assert run.data.params["evaluate.context_frames"] == "4"
    history = client.get_metric_history(run_id, "train/recon_mse")
    assert len(history) >= 3 and history[0].step < history[-1].step
    assert "recon.psnr" in run.data.metrics and "prediction.mse_frame" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"generated", "evaluate"} <= artifacts
    assert any(m.name == "vqvae" for m in client.search_logged_models([run.info.experiment_id]))

    # A variant: only the stages downstream of model.beta run again.
    res = _run([*dvc, "exp", "run", "-S", "model.beta=0.5"], repo, env)
    out = res.stdout + res.stderr
    assert "Running stage 'collect'" not in out and "Running stage 'sample'" not in out
    assert "Running stage 'train'" in out
