"""Saving and loading trained models: weights plus the resolved config, loaded weights-only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vqvideo.config import ModelConfig, PriorConfig
from vqvideo.errors import VQVideoError
from vqvideo.io import load_checkpoint, save_checkpoint

MODEL_FILE = "model.pt"


def save_model(directory: Path, kind: str, model: nn.Module, config: dict, meta: dict[str, Any]) -> Path:
    path = Path(directory) / MODEL_FILE
    save_checkpoint(path, {"kind": kind, "config": config, "meta": meta, "state_dict": model.state_dict()})
    return path


def _load(directory: Path, kind: str) -> dict:
    path = Path(directory) / MODEL_FILE
    state = load_checkpoint(path, f"{kind} model")
    if not isinstance(state, dict) or state.get("kind") != kind:
        raise VQVideoError(f"{path} is not a {kind} model file; re-run the stage that writes it")
    return state


def _restore(model: nn.Module, state: dict, path: Path, what: str) -> None:
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise VQVideoError(
            f"{path} does not fit the {what} it claims to be ({first}); it is corrupt or from "
            "another version: re-run its stage"
        ) from None


def load_vqvae(directory: str | Path):
    from vqvideo.models.vqvae import VQVAE

    directory = Path(directory)
    state = _load(directory, "vqvae")
    cfg = ModelConfig(**state["config"])
    model = VQVAE(cfg, channels=int(state["meta"]["channels"]))
    _restore(model, state, directory / MODEL_FILE, "VQ-VAE")
    model.eval()
    return model, state["meta"]


def load_prior(directory: str | Path, vqvae_meta: dict | None = None):
    from vqvideo.models.prior import build_prior

    directory = Path(directory)
    state = _load(directory, "prior")
    meta = state["meta"]
    if vqvae_meta is not None and meta.get("vqvae_fingerprint") != vqvae_meta.get("fingerprint"):
        raise VQVideoError(
            f"the prior in {directory} was trained on another VQ-VAE (codebook or weights differ); "
            "re-run `dvc repro prior`"
        )
    model = build_prior(PriorConfig(**state["config"]), **meta["shape"])
    _restore(model, state, directory / MODEL_FILE, "prior")
    model.eval()
    return model, meta


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["save_model", "load_vqvae", "load_prior", "num_parameters", "torch"]
