"""The training loop shared by the VQ-VAE and the prior: schedule, clipping, checkpoints, resume.

The loop owns what must be identical after a resume: model, optimiser, scheduler, every random
generator, the step and the history so far. Data order is a pure function of (seed, step), so it
needs no state. A checkpoint is written atomically every `checkpoint_every` steps; re-running a
killed stage continues from it and ends bit-for-bit where an uninterrupted run ends (on CPU).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from vqvideo.errors import DivergenceError
from vqvideo.io import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine down to `min_ratio` at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def batch_indices(seed: int, step: int, batch: int, n: int) -> np.ndarray:
    """The sample indices of `step`: epochs of seeded permutations, a pure function of its inputs."""
    start = step * batch
    out = []
    while len(out) < batch:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.extend(perm[offset : offset + batch - len(out)].tolist())
    return np.asarray(out)


@dataclass
class LoopSpec:
    steps: int
    lr: float
    weight_decay: float
    warmup_steps: int
    min_lr_ratio: float
    grad_clip: float
    eval_every: int
    log_every: int
    checkpoint_every: int

    @classmethod
    def of(cls, cfg: Any) -> LoopSpec:
        return cls(**{f: getattr(cfg, f) for f in cls.__dataclass_fields__})


@dataclass
class LoopResult:
    history: list[dict]
    steps_run: int  # in this invocation (0 when the checkpoint was already complete)
    resumed_from: int
    train_seconds: float  # total across invocations
    last_phase_items_per_s: float


@dataclass
class TrainLoop:
    """Run `step_fn(step) -> {'loss': Tensor, ...floats}` for `spec.steps` steps."""

    name: str
    model: nn.Module
    spec: LoopSpec
    checkpoint: Path | None  # None: no checkpoints (tuning trials)
    fingerprint: str
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    on_log: Callable[[dict, int], None] | None = None  # e.g. MLflow logging
    # the logged names: "{split}/" gives train/loss and val/loss, a section each in MLflow's UI
    metric_prefix: str = "{split}/"
    on_eval: Callable[[int, dict], None] | None = None  # e.g. an Optuna pruning report
    extra_state: dict[str, Any] = field(default_factory=dict)  # saved and restored verbatim
    items_per_step: int = 1
    progress_keys: tuple[str, ...] = ("loss",)
    writer: bool = True  # False on ranks other than 0: they resume from, but never write, checkpoints

    def __post_init__(self):
        decay, no_decay = [], []
        for n, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "embed" in n or "codebook" in n else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.spec.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.spec.lr, betas=(0.9, 0.99),
        )
        s = self.spec
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda i: warmup_cosine(i, s.steps, s.warmup_steps, s.min_lr_ratio)
        )
        self.step = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.items_per_s = 0.0  # throughput of the latest phase that ran steps

    # ------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "history": self.history,
            "train_seconds": self.train_seconds,
            "items_per_s": self.items_per_s,
            "extra": self.extra_state,
        }

    def try_resume(self) -> int:
        if self.checkpoint is None or not self.checkpoint.exists():
            return 0
        state = load_checkpoint(self.checkpoint, f"{self.name} checkpoint")
        if state.get("fingerprint") != self.fingerprint:
            log.info("%s: checkpoint %s is from other params or data; starting afresh", self.name, self.checkpoint)
            return 0
        shapes = lambda sd: {k: tuple(v.shape) for k, v in sd.items()}  # noqa: E731
        if shapes(state["model"]) != shapes(self.model.state_dict()):
            log.info("%s: checkpoint %s holds another model's weights (the code changed); starting afresh",
                     self.name, self.checkpoint)
            return 0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        for k, g in self.generators.items():
            g.set_state(state["generators"][k])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.train_seconds = float(state["train_seconds"])
        self.items_per_s = float(state.get("items_per_s", 0.0))
        self.extra_state.update(state.get("extra", {}))
        log.info("%s: resuming from step %d of %d (%s)", self.name, self.step, self.spec.steps, self.checkpoint)
        return self.step

    def save(self) -> None:
        if self.checkpoint is not None and self.writer:
            save_checkpoint(self.checkpoint, self.state())

    # ------------------------------------------------------------ loop

    def run(self, step_fn: Callable[[int], dict[str, Any]], eval_fn: Callable[[], dict[str, float]]) -> LoopResult:
        resumed_from = self.try_resume()
        start_step = self.step
        spec = self.spec
        bar = tqdm(total=spec.steps, initial=self.step, desc=self.name, unit="step", dynamic_ncols=True,
                   disable=not self.writer)
        t0 = phase_t0 = time.perf_counter()
        acc: dict[str, list[float]] = {}
        try:
            while self.step < spec.steps:
                self.model.train()
                out = step_fn(self.step)
                loss: Tensor = out["loss"]
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise DivergenceError(self.name, self.step, value)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if spec.grad_clip > 0:
                    norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), spec.grad_clip)
                    out["grad_norm"] = float(norm)
                self.optimizer.step()
                lr = self.optimizer.param_groups[0]["lr"]
                self.scheduler.step()
                self.step += 1
                for k, v in out.items():
                    acc.setdefault(k, []).append(float(v.detach()) if isinstance(v, Tensor) else float(v))
                bar.update(1)
                if self.step % spec.log_every == 0 or self.step == spec.steps:
                    row = {"step": self.step, "split": "train", "lr": lr}
                    row.update({k: float(np.mean(v)) for k, v in acc.items()})
                    acc = {}
                    self._record(row)
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in self.progress_keys if k in row})
                if self.step % spec.eval_every == 0 or self.step == spec.steps:
                    self.model.eval()
                    with torch.no_grad():
                        row = {"step": self.step, "split": "val", "lr": lr, **eval_fn()}
                    self._record(row)
                    if self.on_eval is not None:
                        self.on_eval(self.step, row)
                if self.step % spec.checkpoint_every == 0 or self.step == spec.steps:
                    now = time.perf_counter()
                    self.train_seconds += now - t0
                    t0 = now
                    done = self.step - start_step
                    self.items_per_s = done * self.items_per_step / max(now - phase_t0, 1e-9)
                    self.save()
        finally:
            bar.close()
        self.model.eval()
        return LoopResult(self.history, self.step - start_step, resumed_from, self.train_seconds, self.items_per_s)

    def _record(self, row: dict) -> None:
        self.history.append(row)
        if self.on_log is not None and self.writer:
            prefix = self.metric_prefix.format(split=row["split"])
            self.on_log({prefix + k: v for k, v in row.items() if k not in ("step", "split")}, row["step"])
