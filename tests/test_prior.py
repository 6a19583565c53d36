"""The temporal prior: its motion search, warp and blur; training; a killed run resuming exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import tiny_params_dict, write_params
from vqvideo.models.prior import block_motion, gaussian_blur, warp


def square(x: int, y: int, size: int = 32, side: int = 8) -> torch.Tensor:
    """A (1, 1, size, size) frame with a textured bright square whose top-left is at (x, y)."""
    img = torch.zeros(1, 1, size, size)
    tex = torch.linspace(0.5, 1.0, side * side).view(side, side)
    img[0, 0, y : y + side, x : x + side] = tex
    return img


def test_block_motion_finds_the_shift_and_leaves_blank_blocks_still():
    prev, cur = square(8, 10, size=48), square(11, 8, size=48)  # moved by (+3, -2)
    m = block_motion(cur, prev, block=8, radius=4, temperature=1e-4)
    assert m.shape == (1, 4, 6, 6)
    bright = m[0, 3] > 0.2  # blocks holding the square now
    assert bright.any()
    torch.testing.assert_close(m[0, 0][bright], torch.full_like(m[0, 0][bright], 3.0), atol=0.05, rtol=0)
    torch.testing.assert_close(m[0, 1][bright], torch.full_like(m[0, 1][bright], -2.0), atol=0.05, rtol=0)
    # A block with nothing to track anywhere within the search radius does not move.
    torch.testing.assert_close(m[0, :2, 5, 5], torch.zeros(2))


def test_warp_by_an_integer_flow_is_an_exact_shift():
    img = square(8, 8)
    flow = torch.zeros(1, 2, 32, 32)
    flow[:, 0], flow[:, 1] = 3.0, -2.0  # out(p) = img(p - (3, -2))
    torch.testing.assert_close(warp(img, flow), square(11, 6))
    torch.testing.assert_close(warp(img, torch.zeros(1, 2, 32, 32)), img)


def test_gaussian_blur_keeps_mass_and_smooths():
    img = square(12, 12)
    out = gaussian_blur(img, 1.5)
    torch.testing.assert_close(out.sum(), img.sum(), rtol=1e-4, atol=1e-4)
    assert out.max() < img.max()
    assert torch.equal(gaussian_blur(img, 0.0), img)


@pytest.fixture(scope="module")
def models(tiny_models):
    from vqvideo.models.store import load_prior, load_vqvae

    vqvae, meta = load_vqvae(tiny_models / "vqvae")
    prior, _ = load_prior(tiny_models / "prior", meta)
    return vqvae, prior


def test_forward_shapes_state_and_rollout(models, tiny_data):
    from vqvideo.data.clips import FrameData, to_tensor
    from vqvideo.stages.prior import encode_clips

    vqvae, prior = models
    clips = FrameData.open(tiny_data / "frames").clips("test")[:2]
    codes = encode_clips(vqvae, clips, torch.device("cpu"))  # (2, T, h, w)
    t = codes.shape[1]
    logits, (h, c, last) = prior(codes)
    assert logits.shape == (*codes.shape, prior.num_codes)
    assert last.shape == (2, *to_tensor(clips).shape[2:])
    # Running frame by frame with the carried state gives the logits of one pass.
    step_logits, state = [], None
    for i in range(t):
        lg, state = prior(codes[:, i : i + 1], state)
        step_logits.append(lg)
    torch.testing.assert_close(torch.cat(step_logits, 1), logits, rtol=1e-4, atol=1e-4)
    rolled = prior.rollout(codes[:, :3], t - 3)
    assert rolled.shape == codes.shape and torch.equal(rolled[:, :3], codes[:, :3])
    assert int(rolled.max()) < prior.num_codes


def test_the_frozen_vqvae_stays_frozen_while_the_prior_trains(tiny_data):
    from vqvideo.config import parse_params
    from vqvideo.data.clips import FrameData
    from vqvideo.stages.prior import train_prior
    from vqvideo.stages.train import train

    p = parse_params(tiny_params_dict())
    data = FrameData.open(tiny_data / "frames")
    vq = train(p.model, p.train, data)
    before = {k: v.clone() for k, v in vq.model.state_dict().items()}
    result = train_prior(p.prior, vq.model, vq.fingerprint, data)
    after = result.model.vqvae.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    rows = [r for r in result.loop.history if r["split"] == "val"]
    assert {"ce", "accuracy", "photometric", "rollout_mse_frame"} <= rows[-1].keys()
    assert result.model.flow.weight.abs().sum() > 0  # the learned correction moved off zero


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vqvideo", *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_killed_prior_resumes_bit_for_bit(tiny_models, tiny_data, tmp_path):
    """SIGKILL mid-training, then the same command: the model equals an uninterrupted run's."""
    import shutil

    vq_dir = tmp_path / "vqvae"
    shutil.copytree(tiny_models / "vqvae", vq_dir)
    import mlflow

    from vqvideo import tracking

    tracking.setup()
    with mlflow.start_run() as run:  # the pipeline run the prior logs into
        tracking.record_run(vq_dir / tracking.RUN_FILE, run)
    params = write_params(tmp_path / "params.yaml", tiny_params_dict(
        prior={"steps": 120, "checkpoint_every": 5, "eval_every": 60, "log_every": 5}))

    def args(out):
        return ["prior", "--params", str(params), "--frames", str(tiny_data / "frames"), "--vqvae", str(vq_dir),
                "--model-dir", str(out / "prior"), "--checkpoints", str(out / "ckpt"),
                "--history", str(out / "history.csv")]

    ref = tmp_path / "ref"
    assert _cli(*args(ref)).wait() == 0
    run_dir = tmp_path / "run"
    proc = _cli(*args(run_dir))
    ckpt = run_dir / "ckpt" / "last.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["step"] >= 10:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; raise prior.steps"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "prior").exists()
    assert _cli(*args(run_dir)).wait() == 0
    summary = json.loads((run_dir / "prior" / "summary.json").read_text())
    assert 10 <= summary["resumed_from_step"] < 120
    a = torch.load(ref / "prior" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run_dir / "prior" / "model.pt", weights_only=True)["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
