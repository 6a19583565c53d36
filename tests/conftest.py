"""Shared fixtures: a tiny params set, tiny real data made by the real stages, an MLflow store.

Everything here is real (real videos through OpenCV, real SQLite MLflow store); only the sizes
are small, so the whole suite runs on a 2-core CPU.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_mlflow(tmp_path_factory):
    """Every test logs into a throwaway store, never the repo's mlruns/."""
    store = tmp_path_factory.mktemp("mlruns")
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import mlflow

    # created here so its artifacts land in the throwaway store, not the working directory
    mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).create_experiment(
        "vqvideo", artifact_location=(store / "artifacts").as_uri())
    yield store
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


TINY = {
    "collect": {"num_videos": 12, "frames_per_video": 16},
    "sample": {"clip_length": 8, "clip_stride": 4, "val_fraction": 0.2, "test_fraction": 0.2, "workers": 1},
    "model": {"codebook_size": 32, "code_dim": 16, "hidden": 16, "res_blocks": 1},
    "train": {"steps": 12, "batch_size": 16, "warmup_steps": 2, "eval_every": 6, "log_every": 3,
              "checkpoint_every": 4, "precision": "fp32"},
    "prior": {"steps": 8, "batch_size": 4, "warmup_steps": 2, "width": 32, "heads": 2, "eval_every": 4,
              "log_every": 2, "checkpoint_every": 4, "precision": "fp32"},
    "generate": {"num_inputs": 2, "num_samples": 2},
    "evaluate": {"context_frames": 4, "batch_size": 8, "samples": 3, "generation_clips": 4},
    "tune": {"n_trials": 3, "steps": 8, "eval_every": 4, "codebook_sizes": [16, 32]},
}


def tiny_params_dict(**overrides) -> dict:
    """The repo's params.yaml shrunk to seconds; `overrides` are {section: {key: value}}."""
    p = repo_params()
    for section, values in {**TINY}.items():
        p[section].update(values)
    for section, values in overrides.items():
        p[section].update(values)
    return copy.deepcopy(p)


@pytest.fixture
def tiny_params():
    from vqvideo.config import parse_params

    return parse_params(tiny_params_dict())


def write_params(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """data/raw and data/frames made by the real collect and sample stages, tiny."""
    from vqvideo.config import parse_params
    from vqvideo.stages.collect import collect
    from vqvideo.stages.sample import sample

    root = tmp_path_factory.mktemp("data")
    params = parse_params(tiny_params_dict())
    collect(params.collect, root / "raw", workers=1)
    sample(params.sample, root / "raw", root / "frames", workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_models(tiny_data, tmp_path_factory):
    """A tiny trained VQ-VAE and prior, saved as the stages save them."""
    from vqvideo.config import parse_params
    from vqvideo.data.frames import FrameData
    from vqvideo.models.store import save_model
    from vqvideo.stages.prior import train_prior
    from vqvideo.stages.train import train

    root = tmp_path_factory.mktemp("models")
    params = parse_params(tiny_params_dict())
    data = FrameData.open(tiny_data / "frames")
    vq = train(params.model, params.train, data)
    meta = {"channels": 1, "image_size": params.sample.size, "fingerprint": vq.fingerprint}
    save_model(root / "vqvae", "vqvae", vq.model, params.model.model_dump(mode="json"), meta)
    pr = train_prior(params.prior, vq.model, vq.fingerprint, data)
    save_model(root / "prior", "prior", pr.model, params.prior.model_dump(mode="json"),
               {"shape": pr.model.shape_meta(), "vqvae_fingerprint": vq.fingerprint, "fingerprint": pr.fingerprint})
    return root
