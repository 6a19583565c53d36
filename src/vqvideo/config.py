"""One validated, typed model per params.yaml section.

A bad value fails at load time, before any work, with one line that names the key and the
allowed values. Unknown keys are errors too: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vqvideo.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CollectConfig(Section):
    source: Literal["synthetic", "folder", "urls", "moving_mnist"] = "synthetic"
    path: str | None = None  # folder, glob, or the moving-mnist .npy file
    urls: list[str | dict[str, str]] = Field(default_factory=list)  # "https://..." or {url, sha256}
    num_videos: int = Field(500, ge=1)
    seed: int = 0
    # synthetic Moving Digits
    frames_per_video: int = Field(40, ge=2)
    digits_per_video: int = Field(2, ge=1, le=8)
    digit_size: int = Field(28, ge=4)
    canvas_size: int = Field(64, ge=16)
    speed: float = Field(3.6, gt=0)  # px per frame, as in Moving MNIST
    fps: float = Field(10.0, gt=0)
    # Videos built from held-out digit images (the test split's identities never appear in train).
    test_fraction: float = Field(0.1, ge=0, lt=1)
    # urls
    timeout_s: float = Field(30.0, gt=0)  # per URL: the whole transfer, not just one read
    max_bytes: int = Field(512 * 1024 * 1024, ge=1)
    retries: int = Field(2, ge=0)  # network errors and 5xx only; a 404 or a bad checksum is final
    workers: int = Field(0, ge=0)  # 0: all cores; never changes what is written

    @field_validator("urls")
    @classmethod
    def _url_entries(cls, v: list[str | dict[str, str]]) -> list[str | dict[str, str]]:
        for e in v:  # a typo such as `sha` must not silently skip the verification
            if isinstance(e, dict) and (set(e) - {"url", "sha256"} or "url" not in e):
                raise ValueError(
                    f"collect.urls entry {e!r} must be a URL string or {{url: ..., sha256: ...}}"
                )
        return v

    @model_validator(mode="after")
    def _needs_path(self):
        if self.source in ("folder", "moving_mnist") and not self.path:
            raise ValueError(f"collect.path is required when collect.source is {self.source!r}")
        if self.source == "urls" and not self.urls:
            raise ValueError("collect.urls must list at least one URL when collect.source is 'urls'")
        if self.digit_size > self.canvas_size:
            raise ValueError("collect.digit_size must not exceed collect.canvas_size")
        return self


class SampleConfig(Section):
    frame_interval: int = Field(1, ge=1)  # keep every n-th decoded frame
    clip_length: int = Field(20, ge=2)  # 10 context + 10 predicted, the Moving MNIST protocol
    clip_stride: int = Field(10, ge=1)
    size: int = Field(64, ge=8)
    channels: Literal[1, 3] = 1
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    # video: whole videos per split; time: each video cut into train | val | test segments in
    # time order; auto: time when fewer than TIME_SPLIT_BELOW usable videos
    split: Literal["auto", "video", "time"] = "auto"
    augment: int = Field(0, ge=0)  # extra random crop views of each train clip (footage: 3-6)
    crop_scale: tuple[float, float] = (0.5, 1.0)  # a view's side, as a fraction of the frame's short side
    flip: bool = False  # views may be mirrored left-right (not for digits or text)
    seed: int = 0
    workers: int = Field(0, ge=0)  # 0: all cores

    @model_validator(mode="after")
    def _fractions(self):
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError("sample.crop_scale must be [low, high] with 0 < low <= high <= 1")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("sample.val_fraction + sample.test_fraction must be below 1")
        if self.size % 8:
            raise ValueError("sample.size must be a multiple of 8 (the encoders downsample by 8 at most)")
        return self


class ModelConfig(Section):
    arch: Literal["seed", "resnet"] = "resnet"
    codebook_size: int = Field(512, ge=2)
    code_dim: int = Field(64, ge=1)
    beta: float = Field(0.25, ge=0)  # commitment weight, van den Oord 2017 eq. 3
    hidden: int = Field(64, ge=4)  # resnet width; the seed net uses the article's 64-128-256
    res_blocks: int = Field(2, ge=0)
    downsample: Literal[2, 4, 8] = 4  # resnet only; the seed net always pools by 8
    # Codebook health (see models/quantizer.py)
    ema: bool = True
    ema_decay: float = Field(0.99, gt=0, lt=1)
    kmeans_init: bool = True
    kmeans_iters: int = Field(10, ge=0)
    restart_threshold: float = Field(1.0, ge=0)  # EMA usage count under which a code is dead; 0 disables

    @property
    def factor(self) -> int:
        """Pixels per code along each side: the seed net's three poolings, or `downsample`."""
        return 8 if self.arch == "seed" else self.downsample


class TrainConfig(Section):
    steps: int = Field(500, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(30, ge=0)
    min_lr_ratio: float = Field(0.05, ge=0, le=1)  # cosine decays to lr * this
    grad_clip: float = Field(1.0, ge=0)  # 0 disables
    seed: int = 0
    eval_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # bf16 autocast: 3-4x faster on CPUs with AMX/AVX512-BF16 and on GPUs; "auto" picks it there.
    precision: Literal["auto", "fp32", "bf16"] = "auto"


class PriorConfig(Section):
    steps: int = Field(300, ge=1)
    batch_size: int = Field(32, ge=1)  # clips per step; each brings all its layers
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(30, ge=0)
    min_lr_ratio: float = Field(0.05, ge=0, le=1)
    grad_clip: float = Field(1.0, ge=0)
    width: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(1, ge=1)  # attention blocks over the anchor frame's tokens
    dropout: float = Field(0.0, ge=0, lt=1)
    patch: Literal[1, 2, 4] = 2  # codes grouped per token: fewer, richer tokens
    # Layers (models/layers.py): at most this many moving pieces per frame, and how far the
    # tracker looks for a piece from one frame to the next (px; digits move 3.6).
    max_layers: int = Field(4, ge=1, le=16)
    motion_radius: int = Field(6, ge=1, le=32)
    track_clips: int = Field(400, ge=1)  # training clips whose layers are tracked (the targets)
    # Each step rolls the layers forward from a random number of seen frames (1: a still image
    # with its first step given) up to this many, and scores the positions the prior reaches.
    max_context: int = Field(10, ge=1)
    action_weight: float = Field(0.1, ge=0)  # weight of the action prior's cross-entropy
    seed: int = 0
    eval_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    @model_validator(mode="after")
    def _heads(self):
        if self.width % self.heads:
            raise ValueError(f"prior.width ({self.width}) must be divisible by prior.heads ({self.heads})")
        return self


class GenerateConfig(Section):
    context_frames: int = Field(1, ge=1)  # 1: the still-image case
    num_inputs: int = Field(4, ge=1)  # test clips to animate
    num_samples: int = Field(3, ge=1)  # samples per input
    sampling: Literal["argmax", "sample"] = "sample"
    temperature: float = Field(0.1, gt=0)  # the prior's distance logits are flat at 1.0: noise
    top_k: int = Field(0, ge=0)  # 0: no top-k filter
    binarize: bool = False  # the article's threshold at 0.5, for black-and-white data
    fps: float = Field(8.0, gt=0)
    seed: int = 0
    # labels: the test clips' digits move as labels.csv says (the article's action sequences);
    # none: a still image's motion is drawn from the learned action prior
    condition: Literal["none", "labels"] = "none"


class EvaluateConfig(Section):
    context_frames: int = Field(10, ge=1)  # Moving MNIST protocol: 10 in, the rest predicted
    max_clips: int = Field(0, ge=0)  # 0: the whole test split
    batch_size: int = Field(32, ge=1)
    # From one still frame: `samples` clips drawn per test clip, on the first
    # `generation_clips` test clips (each sample is a 19-frame rollout: CPU time adds up).
    samples: int = Field(8, ge=1)
    generation_clips: int = Field(24, ge=1)
    seed: int = 0


class SearchRange(Section):
    """A numeric range for `tune.extra`: {low, high, log}; int fields get integer suggestions."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _order(self):
        if not self.low <= self.high or (self.log and self.low <= 0):
            raise ValueError("a tune.extra range needs low <= high (and low > 0 when log is true)")
        return self


# Keys the tuner sets itself: searching them through tune.extra would be ambiguous.
TUNE_OWNED = {"model.codebook_size", "model.beta", "train.steps", "train.eval_every",
              "train.checkpoint_every", "train.device"}


class TuneConfig(Section):
    n_trials: int = Field(5, ge=1)  # the study stops once it holds this many finished trials
    timeout: float | None = Field(None, gt=0)  # seconds for this invocation; None: no limit
    steps: int = Field(60, ge=1)  # training steps per trial
    # sqlite:///path.db (relative to the repo root), journal:path.log (several workers on one
    # machine), or any SQLAlchemy URL such as postgresql://user:pass@host/db (a cluster)
    storage: str = "sqlite:///optuna/vqvideo.db"
    study_name: str = "vqvideo-codebook"  # a fingerprint of the fixed settings is appended
    codebook_sizes: list[int] = Field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048])
    beta_range: tuple[float, float] = (0.05, 2.0)  # log-uniform
    # more model.* / train.* keys to search: a list of choices or {low, high, log}
    extra: dict[str, list[Any] | SearchRange] = Field(default_factory=dict)
    objectives: list[Literal["recon_mse", "active_fraction"]] = Field(
        default_factory=lambda: ["recon_mse"]
    )
    pruner: Literal["median", "none"] = "median"
    eval_every: int = Field(25, ge=1)  # val reports per trial, what the pruner compares
    seed: int = 0
    workers: int = Field(1, ge=1)
    # the current params.yaml values as trial 0, so the study's best is never worse than them
    baseline_first: bool = True
    # database storages: a trial whose worker sends no heartbeat for 3x this long (a machine
    # that died) is failed and queued again; local workers are checked by process id instead
    heartbeat_s: int = Field(60, ge=1)

    @field_validator("codebook_sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if not v or any(k < 2 for k in v):
            raise ValueError("tune.codebook_sizes must be a non-empty list of integers >= 2")
        return v

    @field_validator("beta_range")
    @classmethod
    def _beta(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError("tune.beta_range must be [low, high] with 0 < low <= high")
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("tune.objectives must list recon_mse and/or active_fraction, each once")
        return v

    @field_validator("extra", mode="before")
    @classmethod
    def _extra(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v  # pydantic reports the type error
        sections = {"model": ModelConfig, "train": TrainConfig}
        out: dict[str, Any] = {}
        for key, space in v.items():
            section, _, name = str(key).partition(".")
            model = sections.get(section)
            if model is None or name not in model.model_fields:
                raise ValueError(f"tune.extra key {key!r} must name a model.* or train.* param")
            if key in TUNE_OWNED:
                raise ValueError(f"tune.extra key {key!r} is set by the tuner itself; remove it")
            if isinstance(space, dict):
                try:
                    space = SearchRange.model_validate(space)
                except ValidationError as err:
                    e = err.errors()[0]
                    raise ValueError(f"tune.extra {key!r}: {e['msg'].removeprefix('Value error, ')}"
                                     " (a range is {low, high, log})") from None
                choices = [space.low, space.high]
            elif isinstance(space, (list, tuple)):
                choices = list(space)
            else:
                raise ValueError(f"tune.extra {key!r} must be a list of choices or {{low, high, log}}")
            if not choices:
                raise ValueError(f"tune.extra {key!r} needs at least one choice")
            for c in choices:
                try:
                    model.model_validate({name: c})
                except ValidationError as err:
                    raise ValueError(f"tune.extra {key!r}: {c!r} is not a valid {key} "
                                     f"({err.errors()[0]['msg']})") from None
            out[key] = space
        return out


class Params(Section):
    collect: CollectConfig
    sample: SampleConfig
    model: ModelConfig
    train: TrainConfig
    prior: PriorConfig
    generate: GenerateConfig
    evaluate: EvaluateConfig
    tune: TuneConfig


def _format_error(err: ValidationError, source: str) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        section = str(e["loc"][0])
        fields = Params.model_fields
        if len(e["loc"]) == 1:
            allowed = ", ".join(fields)
            return f"{source}: unknown section {loc!r}; allowed sections: {allowed}"
        model = fields[section].annotation
        allowed = ", ".join(model.model_fields)  # type: ignore[union-attr]
        return f"{source}: unknown key {loc!r}; allowed keys in {section!r}: {allowed}"
    if e["type"] == "missing":
        return f"{source}: missing {'section' if len(e['loc']) == 1 else 'key'} {loc!r}; add it (see the README's params table)"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        return f"{source}: {msg}" if not loc else f"{source}: {loc}: {msg}"
    got = e.get("input")
    return f"{source}: {loc}: {msg} (got {got!r})"


def parse_params(data: Any, source: str = "params.yaml") -> Params:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level; see the repo's params.yaml for its sections")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file not found: {path}; run from the repo root or pass --params")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}; fix the file") from None
    return parse_params(data, str(path))


def fingerprint(*parts: Any) -> str:
    """A short stable hash of configs and data stats: a checkpoint resumes only under the same one."""
    blob = json.dumps(
        [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def source_fingerprint(*modules: str) -> str:
    """A short hash of the source of the named vqvideo modules (dotted, under `vqvideo.`): a
    checkpoint written by other code (a finished one included) is never resumed as if it fit."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in modules:
        h.update(name.encode())
        h.update(root.joinpath(*name.split(".")).with_suffix(".py").read_bytes())
    return h.hexdigest()[:16]


def section_params(params: Params, *sections: str) -> dict[str, Any]:
    """`section.key -> value` for the named sections only."""
    return {k: v for k, v in flat(params).items() if k.split(".", 1)[0] in sections}


def flat(params: Params) -> dict[str, Any]:
    """`section.key -> value` for logging every resolved param."""
    out: dict[str, Any] = {}
    for section, model in params:
        for key, value in model.model_dump(mode="json").items():
            out[f"{section}.{key}"] = value
    return out
