"""One trial: a short training run through the training worker, and its outcome."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from vqvideo.config import Params, TuneConfig
from vqvideo.data.frames import FrameData
from vqvideo.errors import DivergenceError, VQVideoError
from vqvideo.stages.tune.space import suggest
from vqvideo.tracking.trials import TrialRun


@dataclass
class Outcome:
    state: TrialState
    values: list[float] | None = None
    reason: str = ""


class Objective:
    """One trial: a short training run through the training worker, logged as a nested run."""

    def __init__(self, cfg: TuneConfig, params: Params, data: FrameData, parent_run: str | None = None,
                 study: str = "", experiment_id: str = ""):
        self.cfg, self.params, self.data = cfg, params, data
        self.parent, self.study, self.experiment_id = parent_run, study, experiment_id

    def __call__(self, trial: optuna.Trial) -> Outcome:
        """Run the trial; returns its outcome. Only a bug or Ctrl-C propagates (as itself)."""
        from vqvideo.fit_vqvae import train

        multi = len(self.cfg.objectives) > 1
        prune = self.cfg.pruner != "none" and not multi
        run = TrialRun(self.parent, self.experiment_id, trial, self.study)
        curve: list[list[float]] = []
        t0 = time.perf_counter()
        outcome = Outcome(TrialState.FAIL, reason="not run")
        try:
            model_cfg, train_cfg = suggest(trial, self.cfg, self.params.model, self.params.train)
            run.start({**trial.params, "tune.steps": train_cfg.steps})

            def on_eval(step: int, row: dict) -> None:
                mse = float(row["recon_mse"])
                curve.append([step, mse])
                if not math.isfinite(mse):
                    raise DivergenceError("trial", step, mse)
                if multi:  # Optuna keeps intermediate values for single-objective studies only
                    return
                objective = self.cfg.objectives[0]
                value = float(row[objective])
                trial.report(value, step)
                # the last eval is the result itself: never prune a finished training
                if prune and step < train_cfg.steps and trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step}: val {objective} {value:.5g} "
                                             "is worse than the median of earlier trials")

            result = train(model_cfg, train_cfg, self.data, on_log=run.log, on_eval=on_eval)
            values = [float(result.val[o]) for o in self.cfg.objectives]
            run.log({f"final.{k}": v for k, v in result.val.items()
                     if k not in ("step", "split", "lr") and isinstance(v, (int, float))}, train_cfg.steps)
            if all(math.isfinite(v) for v in values):
                outcome = Outcome(TrialState.COMPLETE, values)
            else:
                outcome = Outcome(TrialState.FAIL, reason=f"non-finite objective {values}")
        except optuna.TrialPruned as err:
            outcome = Outcome(TrialState.PRUNED, reason=str(err))
        except DivergenceError as err:
            outcome = Outcome(TrialState.FAIL, reason=f"diverged: loss {err.value} at step {err.step}; "
                              "a lower train.lr (or a narrower search) avoids it")
        except VQVideoError as err:  # an invalid extra value, ...
            outcome = Outcome(TrialState.FAIL, reason=str(err))
        except BaseException as err:  # a bug or Ctrl-C: recorded, then raised to the worker
            reason = (f"{type(err).__name__}: {err}".strip().splitlines()[0]
                      if not isinstance(err, KeyboardInterrupt) else "interrupted (Ctrl-C); queued again")
            outcome = Outcome(TrialState.FAIL, reason=reason[:1000])
            raise
        finally:
            duration = time.perf_counter() - t0
            attrs = {"duration_s": round(duration, 3), "val_curve": curve}
            if outcome.state == TrialState.FAIL:
                attrs["fail_reason"] = outcome.reason
            elif outcome.state == TrialState.PRUNED:
                attrs["prune_reason"] = outcome.reason
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            run.end(outcome, duration)
        return outcome
