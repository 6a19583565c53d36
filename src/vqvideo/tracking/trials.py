"""The MLflow side of a study: its parent run, one nested run per trial (through the client
API, safe from any worker process), and closing the runs of trials whose worker died."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)


def close_interrupted_runs(trials: list[FrozenTrial]) -> None:
    """The MLflow runs of interrupted trials: marked failed instead of running forever."""
    import mlflow

    from vqvideo import tracking

    tracking.setup()
    client = mlflow.MlflowClient()
    for t in trials:
        run_id = t.user_attrs.get("mlflow_run_id")
        if not run_id:
            continue
        try:
            tracking.retry(client.set_tag, run_id, "optuna.state", "FAIL")
            tracking.retry(client.set_tag, run_id, "fail_reason", "interrupted: the worker died; "
                            "the trial was queued again")
            tracking.retry(client.set_terminated, run_id, "FAILED")
        except Exception as err:  # noqa: BLE001 - a run in another store: nothing to close here
            log.debug("could not close MLflow run %s: %s", run_id, err)


class TrialRun:
    """A nested MLflow run for one trial, through the client API (safe from any worker process)."""

    STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}

    def __init__(self, parent: str | None, experiment_id: str, trial: optuna.Trial, study: str):
        self.client = None
        self.parent, self.experiment_id, self.trial, self.study = parent, experiment_id, trial, study
        self.run_id = ""

    def start(self, params: dict[str, Any]) -> None:
        if self.parent is None:
            return
        import mlflow
        from mlflow.entities import Param

        from vqvideo import tracking

        self.client = mlflow.MlflowClient()
        tags = {"mlflow.parentRunId": self.parent, "optuna.study": self.study,
                "optuna.trial": str(self.trial.number), "optuna.state": "RUNNING"}
        run = tracking.retry(self.client.create_run, self.experiment_id, run_name=f"trial-{self.trial.number}", tags=tags)
        self.run_id = run.info.run_id
        self.trial.set_user_attr("mlflow_run_id", self.run_id)
        tracking.retry(self.client.log_batch, self.run_id,
                        params=[Param(k, str(v)) for k, v in params.items()])

    def log(self, metrics: dict, step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        from vqvideo import tracking

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))]
        if batch:
            tracking.retry(self.client.log_batch, self.run_id, metrics=batch)

    def end(self, outcome: Any, duration: float) -> None:  # a tune Outcome: .state, .values, .reason
        if self.client is None:
            return
        from mlflow.entities import Metric, RunTag

        from vqvideo import tracking

        tags = [RunTag("optuna.state", outcome.state.name)]
        if outcome.reason:
            key = "fail_reason" if outcome.state == TrialState.FAIL else "prune_reason"
            tags.append(RunTag(key, outcome.reason[:5000]))
        metrics = [Metric("duration_s", duration, int(time.time() * 1000), 0)]
        tracking.retry(self.client.log_batch, self.run_id, metrics=metrics, tags=tags)
        tracking.retry(self.client.set_terminated, self.run_id, self.STATUS[outcome.state])


def parent_run(study: optuna.Study) -> str | None:
    """The study's MLflow parent run, when it lives in the current tracking store."""
    import mlflow

    from vqvideo import tracking

    rec = study.user_attrs.get("mlflow")
    if not rec or rec.get("tracking_uri") != tracking.tracking_uri():
        return None
    tracking.setup()
    try:
        run = tracking.retry(mlflow.MlflowClient().get_run, rec["run_id"])
    except Exception:  # noqa: BLE001 - deleted, or from a store that is gone
        return None
    return run.info.run_id if run.info.lifecycle_stage == "active" else None


def new_parent_run(study: optuna.Study, name: str, storage: str) -> str:
    import mlflow

    from vqvideo import tracking

    experiment = tracking.setup()  # first: it points MLflow at the store the client will use
    client = mlflow.MlflowClient()
    run = tracking.retry(client.create_run, experiment, run_name=f"tune:{name}",
                          tags={"optuna.study": name, "optuna.storage": storage})
    study.set_user_attr("mlflow", {"run_id": run.info.run_id, "tracking_uri": tracking.tracking_uri()})
    return run.info.run_id
