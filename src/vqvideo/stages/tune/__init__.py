"""tune: an Optuna study over the codebook (size and beta), resumable and shareable by workers.

Each trial trains a VQ-VAE briefly through the training worker itself (no subprocess) and
returns its val reconstruction MSE (optionally also the codebook's active fraction, giving a
Pareto front). The study lives in its storage (`tune.storage`): SQLite by default, a journal file
for several workers on one machine, any database URL Optuna accepts for a cluster.

The worker loop is Optuna's ask/tell interface rather than `study.optimize`, for three promises
`optimize` cannot keep with several workers: `tune.n_trials` is exact (the check "is there budget
left?" and the creation of the trial happen under one lock), a trial whose worker died is failed
and queued again with the same params (and does not count towards the budget), and a crash, a
divergence or a Ctrl-C is recorded on the trial, the MLflow run and trials.csv alike.

The package, one concern a module: `storage` (URLs, opening, the budget lock), `space` (what a
trial suggests), `study` (name, sampler, budget, baseline), `recovery` (trials of dead workers),
`objective` (one trial), `runs` (the MLflow runs), `pool` (the workers), `reports`
(trials.csv, best_params.yaml, plots), `stage` (the command line) and `apply` (`apply-best`).
"""

from vqvideo.stages.tune.apply import add_apply_arguments, apply_best, apply_best_main
from vqvideo.stages.tune.objective import Objective, Outcome
from vqvideo.stages.tune.pool import WorkerSpec, run_worker, tune
from vqvideo.stages.tune.recovery import heartbeat, recover_interrupted
from vqvideo.stages.tune.reports import best_params, pick_best, trials_frame, write_reports
from vqvideo.stages.tune.space import suggest, trial_configs
from vqvideo.stages.tune.stage import add_arguments, main
from vqvideo.stages.tune.storage import Store, absolute_storage_url, budget_lock, open_storage
from vqvideo.stages.tune.study import (
    INTERRUPTED,
    RETRY_OF,
    WORKER,
    counted,
    directions,
    enqueue_baseline,
    finished,
    open_study,
    study_name,
)
from vqvideo.tracking.trials import TrialRun, close_interrupted_runs

__all__ = [
    "INTERRUPTED", "RETRY_OF", "WORKER", "Objective", "Outcome", "Store", "TrialRun", "WorkerSpec",
    "absolute_storage_url", "add_apply_arguments", "add_arguments", "apply_best", "apply_best_main",
    "best_params", "budget_lock", "close_interrupted_runs", "counted", "directions",
    "enqueue_baseline", "finished", "heartbeat", "main", "open_storage", "open_study", "pick_best",
    "recover_interrupted", "run_worker", "suggest", "study_name", "trial_configs", "trials_frame",
    "tune", "write_reports",
]
