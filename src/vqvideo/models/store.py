"""Saving and loading trained models: weights plus the resolved config, loaded weights-only.

A model file is a dict of tensors and plain values (`kind`, `config`, `meta`, `state_dict`),
read with `torch.load(weights_only=True)`: a file that carries pickled code is refused without
running it. Every way a file can be wrong (missing, truncated, another kind, another version,
weights that do not fit its config, a prior trained on another VQ-VAE) ends in one line that
says which file, what is wrong and which stage to re-run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import nn

from vqvideo.config import ModelConfig, PriorConfig
from vqvideo.errors import VQVideoError
from vqvideo.io import load_checkpoint, save_checkpoint

MODEL_FILE = "model.pt"
# what writes each kind of model file
STAGE_OF = {"vqvae": "train", "prior": "prior"}
NAME_OF = {"vqvae": "VQ-VAE", "prior": "prior"}


def save_model(directory: Path, kind: str, model: nn.Module, config: dict, meta: dict[str, Any]) -> Path:
    """The model's own weights: a prior's file leaves out the frozen VQ-VAE it wraps (saved once, by train)."""
    path = Path(directory) / MODEL_FILE
    own = model.learned_state() if hasattr(model, "learned_state") else model.state_dict()
    save_checkpoint(path, {"kind": kind, "config": config, "meta": meta, "state_dict": own})
    return path


def model_path(directory: str | Path) -> Path:
    """A model folder (as the stages write it) or the model.pt inside it."""
    p = Path(directory)
    return p if p.suffix == ".pt" or p.is_file() else p / MODEL_FILE


def _hint(kind: str) -> str:
    return f"re-run `dvc repro {STAGE_OF[kind]}` (or `vqvideo {STAGE_OF[kind]}`)"


def _what_it_is(state: Any) -> str:
    if not isinstance(state, dict):
        return f"a {type(state).__name__}"
    if state.get("kind") in NAME_OF:
        return f"a {NAME_OF[state['kind']]} model"
    if "optimizer" in state and "model" in state:
        return "a training checkpoint (the resume file under models/checkpoints/), not a saved model"
    return "not a vqvideo model file"


def _load(directory: str | Path, kind: str) -> tuple[Path, dict]:
    path = model_path(directory)
    state = load_checkpoint(path, f"{NAME_OF[kind]} model", _hint(kind))
    if not isinstance(state, dict) or state.get("kind") != kind:
        raise VQVideoError(
            f"{path} is {_what_it_is(state)}, where a {NAME_OF[kind]} model is expected; "
            f"point the option at the folder `{STAGE_OF[kind]}` writes, or {_hint(kind)}"
        )
    missing = [k for k in ("config", "meta", "state_dict") if not isinstance(state.get(k), dict)]
    if missing:
        raise VQVideoError(f"{path} has no {', '.join(missing)}: it is incomplete; {_hint(kind)}")
    return path, state


def _config(cls: type, state: dict, path: Path, kind: str):  # noqa: ANN202
    try:
        return cls(**state["config"])
    except ValidationError as err:
        e = err.errors()[0]
        first = f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
        raise VQVideoError(
            f"{path} was written with a config this version cannot read ({first[:160]}); {_hint(kind)}"
        ) from None
    except TypeError as err:
        raise VQVideoError(f"{path} has an unreadable config ({str(err)[:160]}); {_hint(kind)}") from None


def _restore(model: nn.Module, state: dict, path: Path, kind: str, described: str) -> None:
    try:
        if kind == "prior":  # its own weights only: the VQ-VAE inside comes loaded
            missing, unexpected = model.load_state_dict(state["state_dict"], strict=False)
            own_missing = [k for k in missing if not k.startswith("vqvae.")]
            if own_missing or unexpected:
                raise RuntimeError(f"missing {own_missing[:3]}, unexpected {list(unexpected)[:3]}")
        else:
            model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        lines = [s.strip() for s in str(err).splitlines() if s.strip()]
        detail = next((s for s in lines if "size mismatch" in s), lines[-1] if lines else "")
        raise VQVideoError(
            f"{path}: its weights do not fit the {NAME_OF[kind]} its config describes ({described}): "
            f"{detail[:200].rstrip('.')}; the file is corrupt or from another version: {_hint(kind)}"
        ) from None


def describe_vqvae(cfg: ModelConfig) -> str:
    return f"arch {cfg.arch}, codebook_size {cfg.codebook_size}, code_dim {cfg.code_dim}, downsample {cfg.factor}"


def load_vqvae(directory: str | Path):
    """(VQVAE in eval mode, meta); meta also carries `model_config`, the model section it was built from."""
    from vqvideo.models.vqvae import VQVAE

    path, state = _load(directory, "vqvae")
    cfg: ModelConfig = _config(ModelConfig, state, path, "vqvae")
    meta = dict(state["meta"])
    try:
        channels = int(meta["channels"])
    except (KeyError, TypeError, ValueError):
        raise VQVideoError(f"{path} does not record its image channels: it is incomplete; {_hint('vqvae')}") from None
    model = VQVAE(cfg, channels=channels)
    _restore(model, state, path, "vqvae", describe_vqvae(cfg))
    model.eval()
    meta["model_config"] = cfg.model_dump(mode="json")
    return model, meta


# the VQ-VAE settings that change what a prior sees, in the order a user thinks of them
_SHAPE_KEYS = ("arch", "codebook_size", "code_dim", "downsample", "hidden", "res_blocks")


def _prior_mismatch(shape: dict, vqvae_meta: dict) -> str:
    """What differs between the VQ-VAE a prior was trained on and the one given now, in words."""
    cfg = vqvae_meta.get("model_config")
    if not cfg:
        return "its codebook or weights differ"
    vq = ModelConfig(**cfg)
    diffs = []
    theirs = shape.get("vqvae_config")
    if isinstance(theirs, dict):  # recorded by the prior: name every setting that differs
        for key in _SHAPE_KEYS:
            if key in theirs and theirs[key] != getattr(vq, key):
                diffs.append(f"{key} {theirs[key]} there, {getattr(vq, key)} here")
    else:
        if "num_codes" in shape and int(shape["num_codes"]) != vq.codebook_size:
            diffs.append(f"codebook_size {shape['num_codes']} there, {vq.codebook_size} here")
        if "code_dim" in shape and int(shape["code_dim"]) != vq.code_dim:
            diffs.append(f"code_dim {shape['code_dim']} there, {vq.code_dim} here")
    size = vqvae_meta.get("image_size")
    grid = list(shape.get("grid", []))
    if size and grid and grid != [int(size) // vq.factor] * 2:
        here = int(size) // vq.factor
        diffs.append(f"a {grid[0]}x{grid[1]} code grid there, {here}x{here} here")
    return "; ".join(diffs) or f"the same settings ({describe_vqvae(vq)}) but other weights"


def load_prior(directory: str | Path, vqvae_meta: dict | None = None, vqvae=None):  # noqa: ANN001
    """(CodePrior in eval mode, meta) around `vqvae` (the loaded VQ-VAE it was trained on);
    refused if it was trained on another VQ-VAE than `vqvae_meta`'s. Without `vqvae`, one of
    the recorded shape with untrained weights (enough to inspect the file)."""
    from vqvideo.models.prior import build_prior
    from vqvideo.models.vqvae import VQVAE

    path, state = _load(directory, "prior")
    meta = state["meta"]
    if vqvae_meta is not None and meta.get("vqvae_fingerprint") != vqvae_meta.get("fingerprint"):
        raise VQVideoError(
            f"the prior in {path.parent} was trained on another VQ-VAE than the one given "
            f"({_prior_mismatch(meta.get('shape', {}), vqvae_meta)}); re-run `dvc repro prior` "
            "on this VQ-VAE, or pass the --vqvae it was trained with"
        )
    cfg: PriorConfig = _config(PriorConfig, state, path, "prior")
    try:
        shape = meta["shape"]
        if vqvae is None:
            vqvae = VQVAE(ModelConfig(**shape["vqvae_config"]), int(shape["channels"]))
        model = build_prior(cfg, vqvae, **shape)
    except (KeyError, TypeError, ValueError) as err:
        raise VQVideoError(f"{path} records no usable shape ({err}); {_hint('prior')}") from None
    _restore(model, state, path, "prior", f"width {cfg.width}, {meta['shape'].get('num_codes')} codes")
    model.eval()
    return model, meta


def check_frames_fit(vqvae_meta: dict, clip_shape: list[int] | tuple[int, ...], frames: Path) -> None:
    """The sampled frames must be what the VQ-VAE was trained on: same channels and size."""
    channels, size = vqvae_meta.get("channels"), vqvae_meta.get("image_size")
    c, h, w = (int(v) for v in clip_shape[-3:])
    if (channels is not None and int(channels) != c) or (size is not None and (h, w) != (int(size),) * 2):
        raise VQVideoError(
            f"the VQ-VAE was trained on {channels}x{size}x{size} frames but {frames} holds {c}x{h}x{w} "
            "clips (sample.channels / sample.size changed?); re-run `dvc repro train`, or pass the "
            "--frames it was trained on"
        )


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["save_model", "load_vqvae", "load_prior", "check_frames_fit", "num_parameters", "model_path"]
