"""The shared training loop: schedule, data order, and a killed run resuming bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_params_dict, write_params
from vqvideo.training import batch_indices, warmup_cosine


def test_warmup_then_cosine():
    lrs = [warmup_cosine(s, 100, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # decays monotonically after warm-up
    assert warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_batch_order_is_a_pure_function_of_seed_and_step():
    n, b = 10, 4
    seen = np.concatenate([batch_indices(3, s, b, n) for s in range(5)])  # 20 = two epochs
    assert sorted(seen[:10]) == list(range(10))
    assert sorted(seen[10:]) == list(range(10))
    assert np.array_equal(batch_indices(3, 2, b, n), batch_indices(3, 2, b, n))
    assert not np.array_equal(batch_indices(3, 0, b, n), batch_indices(4, 0, b, n))


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "vqvideo", *args], env=e, **kw)


def _train_args(params: Path, frames: Path, out: Path) -> list[str]:
    return ["train", "--params", str(params), "--frames", str(frames), "--model-dir", str(out / "vqvae"),
            "--checkpoints", str(out / "ckpt"), "--history", str(out / "history.csv")]


@pytest.mark.slow
def test_killed_train_resumes_bit_for_bit(tiny_data, tmp_path):
    params = write_params(tmp_path / "params.yaml", tiny_params_dict(
        train={"steps": 400, "checkpoint_every": 5, "eval_every": 50, "log_every": 5}))
    frames = tiny_data / "frames"

    # An uninterrupted run.
    ref = tmp_path / "ref"
    assert _cli(*_train_args(params, frames, ref)).wait() == 0

    # A run killed (SIGKILL) after its first checkpoints, then the same command again.
    run = tmp_path / "run"
    proc = _cli(*_train_args(params, frames, run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run / "ckpt" / "last.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists():
            state = torch.load(ckpt, weights_only=True)
            if state["step"] >= 10:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; raise train.steps"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_run_id = json.loads((run / "ckpt" / "run.json").read_text())["run_id"]
    assert not (run / "vqvae").exists()  # no half-made model output

    assert _cli(*_train_args(params, frames, run)).wait() == 0
    summary = json.loads((run / "vqvae" / "summary.json").read_text())
    assert 10 <= summary["resumed_from_step"] < 400

    a = torch.load(ref / "vqvae" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "vqvae" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"

    # The MLflow run shows the resumption instead of a second run.
    import mlflow

    run_id = json.loads((run / "vqvae" / "mlflow_run.json").read_text())["run_id"]
    assert run_id == killed_run_id
    assert mlflow.MlflowClient().get_run(run_id).data.tags.get("resumed") == "true"


def test_diverging_loss_stops_with_step_and_keeps_checkpoint(tiny_data, tmp_path):
    from vqvideo.config import parse_params
    from vqvideo.data.frames import FrameData
    from vqvideo.errors import DivergenceError
    from vqvideo.stages.train import train

    p = parse_params(tiny_params_dict(train={"steps": 40, "lr": 1e6, "grad_clip": 0.0, "checkpoint_every": 1}))
    ckpt = tmp_path / "last.pt"
    with pytest.raises(DivergenceError) as err:
        train(p.model, p.train, FrameData.open(tiny_data / "frames"), checkpoint=ckpt)
    step = err.value.step
    assert f"step {step}" in str(err.value)
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == step  # the last good step's checkpoint is kept
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_checkpoint_of_another_model_layout_starts_afresh_and_the_prior_code_is_in_its_fingerprint(tmp_path):
    """Same params, other code: a checkpoint whose weights do not fit the model (a layer added)
    is not loaded, and a changed source file of the prior changes the fingerprint a finished
    checkpoint is resumed under, so new code never takes over old weights."""
    from vqvideo.config import source_fingerprint
    from vqvideo.training import LoopSpec, TrainLoop

    spec = LoopSpec(steps=4, lr=1e-3, weight_decay=0.0, warmup_steps=0, min_lr_ratio=1.0, grad_clip=0.0,
                    eval_every=100, log_every=100, checkpoint_every=2)
    ckpt = tmp_path / "last.pt"
    old = TrainLoop("m", torch.nn.Linear(3, 2), spec, ckpt, "fp")
    old.step = 4
    old.save()
    grown = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    assert TrainLoop("m", grown, spec, ckpt, "fp").try_resume() == 0
    assert TrainLoop("m", torch.nn.Linear(3, 2), spec, ckpt, "fp").try_resume() == 4
    assert source_fingerprint("models.prior") != source_fingerprint("models.motion")
    assert source_fingerprint("models.prior", "models.motion") == source_fingerprint("models.prior", "models.motion")
