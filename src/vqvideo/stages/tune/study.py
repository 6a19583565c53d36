"""The study: its name, sampler and pruner, the budget it counts, and the baseline trial."""

from __future__ import annotations

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from vqvideo.config import ModelConfig, Params, TrainConfig, TuneConfig, fingerprint
from vqvideo.data.frames import FrameData
from vqvideo.stages.tune.space import in_space, trial_configs

INTERRUPTED = "interrupted"  # user attr on a trial whose worker died; it is re-run, not counted
RETRY_OF = "retry_of"  # user attr on the re-queued copy: the number of the interrupted trial
WORKER = "worker"  # user attr: {host, pid, start (the pid's start time), index} of the worker


def study_name(cfg: TuneConfig, model: ModelConfig, train: TrainConfig, data: FrameData) -> str:
    """`tune.study_name` plus a fingerprint of the search space and of everything held fixed.

    The searched keys themselves are left out, so `vqvideo apply-best` (which changes them in
    params.yaml) keeps the same study: the next `dvc repro tune` resumes it instead of starting
    over. Budget, storage, workers and seed are left out too: raising n_trials continues a study.
    """
    space = cfg.model_dump(mode="json", include={"codebook_sizes", "beta_range", "extra",
                                                   "objectives", "steps"})
    searched = {"model.codebook_size", "model.beta", *cfg.extra}
    _, trial_train = trial_configs(cfg, model, train, {})
    fixed_model = model.model_dump(mode="json", exclude={k[6:] for k in searched if k.startswith("model.")})
    loop_only = {"log_every", "checkpoint_every", "device"}
    fixed_train = trial_train.model_dump(
        mode="json", exclude=loop_only | {k[6:] for k in searched if k.startswith("train.")})
    fp = fingerprint(space, fixed_model, fixed_train, data.fingerprint)
    return f"{cfg.study_name}-{fp[:8]}"


def directions(cfg: TuneConfig) -> list[str]:
    return ["minimize" if o == "recon_mse" else "maximize" for o in cfg.objectives]


def open_study(cfg: TuneConfig, name: str, storage: optuna.storages.BaseStorage,
               worker: int = 0) -> optuna.Study:
    """Create or load the study, with a sampler seeded for this worker and this point in it."""
    multi = len(cfg.objectives) > 1
    # Median pruning (Optuna's MedianPruner): stop a trial whose val MSE is worse than the
    # median of earlier trials at the same step. Multi-objective studies cannot prune in Optuna.
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=cfg.eval_every)
              if cfg.pruner == "median" and not multi else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=name, directions=directions(cfg),
                                pruner=pruner, load_if_exists=True)
    # Seeded by (seed, worker, trials so far): two workers, or a resumed run, never replay the
    # random start-up suggestions of an earlier process. constant_liar: concurrent workers
    # treat each other's running trials as bad, so they do not all sample the same point.
    n_done = len(study.get_trials(deepcopy=False))
    seed = int(np.random.SeedSequence([cfg.seed, worker, n_done]).generate_state(1)[0])
    study.sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=max(3, min(10, cfg.n_trials // 3)), multivariate=True,
        constant_liar=True)
    return study


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The finished trials that count towards n_trials: not the interrupted ones (re-run)."""
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    return [t for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED)
                and t.number not in retried)]


def finished(study: optuna.Study) -> int:
    return len(counted(study.get_trials(deepcopy=False)))


def enqueue_baseline(study: optuna.Study, cfg: TuneConfig, params: Params) -> bool:
    """Queue params.yaml's own values as the first trial of a new study (when they are in the
    search space): the study's best is then never worse than what the pipeline already uses."""
    if not cfg.baseline_first or study.get_trials(deepcopy=False):
        return False
    current = {"model.codebook_size": params.model.codebook_size, "model.beta": params.model.beta}
    for key, space in cfg.extra.items():
        section, _, name = key.partition(".")
        current[key] = getattr(getattr(params, section), name)
        if not in_space(current[key], space):
            return False
    lo, hi = cfg.beta_range
    if params.model.codebook_size not in cfg.codebook_sizes or not lo <= params.model.beta <= hi:
        return False
    study.enqueue_trial(current, user_attrs={"baseline": True})
    return True
