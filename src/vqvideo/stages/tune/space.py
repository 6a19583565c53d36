"""The search space: what a trial suggests, and the model and train configs it trains with."""

from __future__ import annotations

from typing import Any

import optuna

from vqvideo.config import ModelConfig, SearchRange, TrainConfig, TuneConfig
from vqvideo.errors import ConfigError


def trial_configs(cfg: TuneConfig, model: ModelConfig, train: TrainConfig,
                  values: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """The model and train configs of one trial: params.yaml, the tuning loop, then `values`."""
    m: dict[str, Any] = {}
    t: dict[str, Any] = {"steps": cfg.steps, "eval_every": cfg.eval_every, "checkpoint_every": cfg.steps,
                         "warmup_steps": min(train.warmup_steps, cfg.steps // 5),
                         "log_every": min(train.log_every, cfg.eval_every)}
    for key, value in values.items():
        section, _, name = key.partition(".")
        (m if section == "model" else t)[name] = value
    # validated again: an enqueued trial may carry any value
    return (ModelConfig.model_validate({**model.model_dump(), **m}),
            TrainConfig.model_validate({**train.model_dump(), **t}))


def suggest(trial: optuna.Trial, cfg: TuneConfig, model: ModelConfig,
            train: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    values: dict[str, Any] = {
        "model.codebook_size": trial.suggest_categorical("model.codebook_size", cfg.codebook_sizes),
        "model.beta": trial.suggest_float("model.beta", *cfg.beta_range, log=True),
    }
    for key, space in cfg.extra.items():
        if isinstance(space, SearchRange):
            section, _, name = key.partition(".")
            owner = ModelConfig if section == "model" else TrainConfig
            if owner.model_fields[name].annotation is int:
                values[key] = trial.suggest_int(key, int(space.low), int(space.high), log=space.log)
            else:
                values[key] = trial.suggest_float(key, space.low, space.high, log=space.log)
        else:
            values[key] = trial.suggest_categorical(key, space)
    try:
        return trial_configs(cfg, model, train, values)
    except Exception as err:  # noqa: BLE001 - pydantic's ValidationError, kept to one line
        raise ConfigError(f"trial {trial.number}: invalid params {values}: "
                          f"{str(err).splitlines()[-1].strip()}") from None


def in_space(value: Any, space: list[Any] | SearchRange) -> bool:
    if isinstance(space, SearchRange):
        return space.low <= value <= space.high
    return value in space
