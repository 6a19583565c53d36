"""MLflow: where the store is, and one run per pipeline execution.

The store is SQLite at `<repo>/mlruns/mlflow.db` with artifacts under `<repo>/mlruns/artifacts`,
both absolute, so a stage run from `dvc exp run --temp` (inside `.dvc/tmp/exps/...`) logs to the
same store as one run in the workspace. `MLFLOW_TRACKING_URI` overrides it.

`train` opens the run and writes its id next to the model; `prior`, `generate` and `evaluate`
reopen that run, so a pipeline's params, curves, plots, clips and models sit in one place.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vqvideo.errors import VQVideoError
from vqvideo.io import read_json, write_json

log = logging.getLogger(__name__)

EXPERIMENT = os.environ.get("VQVIDEO_EXPERIMENT", "vqvideo")
RUN_FILE = "mlflow_run.json"


def repo_root(start: Path | None = None) -> Path:
    """The repo root: the nearest folder with dvc.yaml, stepping out of DVC's temp workspaces."""
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    if ".dvc" in parts:  # .../<repo>/.dvc/tmp/exps/<tmp>/...: the store belongs to <repo>
        here = Path(*parts[: parts.index(".dvc")])
    for p in (here, *here.parents):
        if (p / "dvc.yaml").exists() or (p / ".dvc").is_dir():
            return p
    return here


def tracking_uri() -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{repo_root() / 'mlruns' / 'mlflow.db'}"


def artifact_location() -> str:
    return (repo_root() / "mlruns" / "artifacts").as_uri()


def retry(fn, *args, tries: int = 8, **kwargs):
    """SQLite allows one writer: another pipeline logging at the same instant gets 'locked'.

    The driver already waits up to 5 s for the lock; past that, back off (with jitter, so two
    waiting processes do not retry in lockstep) for up to ~50 s more before giving up.
    """
    for i in range(tries):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - mlflow wraps sqlite errors in several types
            if "locked" not in str(err).lower() or i == tries - 1:
                raise
            delay = 0.2 * 2**i * (0.5 + random.random())
            log.debug("MLflow store is locked; retrying %s in %.1f s", getattr(fn, "__name__", fn), delay)
            time.sleep(delay)
    return None


@contextlib.contextmanager
def _store_lock(db: Path) -> Iterator[None]:
    """Serialise creating the SQLite store: MLflow builds its tables on first use, and two
    processes doing so at once fail ('duplicate column name' from its migrations)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, the retry has to do
        yield
        return
    try:
        f = open(db.with_name(db.name + ".lock"), "a")  # noqa: SIM115 - held across the yield
    except OSError:  # a read-only folder: nothing will be written anyway
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def setup() -> str:
    """Point MLflow at the store (creating it once, one process at a time) and return the experiment id."""
    import mlflow

    uri = tracking_uri()
    # Only when it differs: mlflow.set_tracking_uri pins a process-wide value that outlives a
    # later change of MLFLOW_TRACKING_URI (tests, notebooks); with the variable set, MLflow
    # already reads it.
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    if not uri.startswith("sqlite:///"):
        return _experiment_id()
    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with _store_lock(db):
        return _experiment_id()


def _experiment_id() -> str:
    import mlflow

    client = mlflow.MlflowClient()
    exp = retry(client.get_experiment_by_name, EXPERIMENT)
    if exp is None:
        try:
            return retry(client.create_experiment, EXPERIMENT, artifact_location=artifact_location())
        except Exception:  # noqa: BLE001 - another process created it first
            exp = retry(client.get_experiment_by_name, EXPERIMENT)
    return exp.experiment_id


@contextlib.contextmanager
def pipeline_run(run_file: Path | None, *, new: bool = False, run_id: str | None = None,
                 run_name: str | None = None, tags: dict | None = None) -> Iterator[Any]:
    """Open the pipeline's run: a new one (train), or the one recorded in `run_file`."""
    import mlflow

    exp_id = setup()
    if run_id is None and not new:
        if run_file is None or not Path(run_file).exists():
            raise VQVideoError(f"no MLflow run recorded at {run_file}; run `dvc repro train` first")
        run_id = read_json(run_file)["run_id"]
    # start and end retried like every other write: another pipeline may hold the SQLite lock
    run = retry(mlflow.start_run, run_id=run_id, experiment_id=exp_id, run_name=run_name, tags=tags)
    status = "FINISHED"
    try:
        yield run
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run was stopped, not broken
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        retry(mlflow.end_run, status)


def record_run(run_file: Path, run, fingerprint: str = "") -> None:  # noqa: ANN001
    write_json(run_file, {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                          "tracking_uri": tracking_uri(), "fingerprint": fingerprint})


def resumable_run(run_file: Path, fingerprint: str) -> str | None:
    """The run id to continue, if `run_file` records a live run for the same fingerprint."""
    import mlflow

    if not Path(run_file).exists():
        return None
    try:
        rec = read_json(run_file, "MLflow run record")
    except VQVideoError as err:  # a hand-edited or foreign file: start a new run, say why
        log.warning("%s; a new MLflow run is opened", err)
        return None
    if not isinstance(rec, dict) or "run_id" not in rec:
        return None
    if rec.get("fingerprint") != fingerprint or rec.get("tracking_uri") != tracking_uri():
        return None
    setup()
    try:
        run = retry(mlflow.MlflowClient().get_run, rec["run_id"])
    except Exception:  # noqa: BLE001 - deleted or from a store that is gone
        return None
    return run.info.run_id if run.info.lifecycle_stage == "active" else None


def logged_params(run_id: str) -> dict[str, str]:
    import mlflow

    return dict(retry(mlflow.MlflowClient().get_run, run_id).data.params)


def stage_run_id(upstream_run_file: Path, params: dict[str, Any]) -> str:
    """The run a downstream stage logs into: the upstream run, or a fork of it.

    MLflow params are immutable, so when this stage's params differ from those already logged in
    the upstream run (the stage is re-run with new params on the same model), it forks: a new run
    with the upstream run's params, tagged with where it came from, then this stage's params.
    """
    import mlflow

    setup()
    upstream = read_json(upstream_run_file, "the pipeline's MLflow run record")["run_id"]
    logged = logged_params(upstream)
    clean = {k: str(_param_value(v)) for k, v in params.items()}
    if all(logged.get(k, v) == v for k, v in clean.items()):
        return upstream
    client = mlflow.MlflowClient()
    src = retry(client.get_run, upstream)
    run = retry(client.create_run, src.info.experiment_id, run_name="pipeline",
                 tags={"forked_from": upstream, "fork_reason": "downstream params changed"})
    keep = {k: v for k, v in logged.items() if k not in clean}
    items = list(keep.items())
    from mlflow.entities import Param

    for i in range(0, len(items), 90):
        retry(client.log_batch, run.info.run_id, params=[Param(k, v) for k, v in items[i : i + 90]])
    retry(client.set_terminated, run.info.run_id)
    log.info("MLflow: params changed downstream of run %s; logging into new run %s", upstream, run.info.run_id)
    return run.info.run_id


def _param_value(v: Any) -> Any:
    return str(v) if isinstance(v, (list, dict, tuple)) else v


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    clean = {k: _param_value(v) for k, v in params.items()}
    items = list(clean.items())
    for i in range(0, len(items), 90):  # MLflow caps a batch at 100 params
        retry(mlflow.log_params, dict(items[i : i + 90]))


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    if finite:
        retry(mlflow.log_metrics, finite, step=step)


def set_tag(key: str, value: Any) -> None:
    import mlflow

    retry(mlflow.set_tag, key, value)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    path = Path(path)
    if path.is_dir():
        retry(mlflow.log_artifacts, str(path), artifact_path)
    elif path.exists():
        retry(mlflow.log_artifact, str(path), artifact_path)


REGISTERED = "vqvideo-{name}"  # the Model Registry's names: vqvideo-vqvae, vqvideo-prior


def log_torch_model(model, name: str, example) -> None:  # noqa: ANN001
    """The model as an MLflow PyTorch flavour in the `pt2` (torch.export) format (no pickle),
    registered as a new version of `vqvideo-<name>` linked to this run (the UI's Models page).

    `example` should hold two or more items: with one, torch.export specialises the batch size
    to 1 and says so on every run."""
    import warnings

    import mlflow
    import torch

    reqs = [f"torch=={torch.__version__.split('+')[0]}"]
    try:
        with warnings.catch_warnings():
            # torch's pt2 packager notes that weights sharing one storage are written once
            # (the quantizer's codebook views): nothing is lost, so it is not the user's concern
            warnings.filterwarnings("ignore", message="No complete tensor found in the group")
            retry(mlflow.pytorch.log_model, model.eval(), name=name, input_example=example,
                   serialization_format="pt2", pip_requirements=reqs,
                   registered_model_name=REGISTERED.format(name=name))
    except Exception as err:  # noqa: BLE001 - the run is still useful without the model flavour
        log.warning("could not log %s as an MLflow model: %s", name, err)


def log_dataset(frame, source: str, name: str, context: str = "training") -> None:  # noqa: ANN001
    """A table describing the run's data (the sampled clips' index) as the run's dataset input:
    the runs table's Dataset column names it, with its digest."""
    import mlflow

    dataset = mlflow.data.from_pandas(frame, source=source, name=name)
    retry(mlflow.log_input, dataset, context=context)


def flatten_metrics(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_metrics(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out
