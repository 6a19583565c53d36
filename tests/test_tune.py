"""The tune stage in one process: budget, resume, pruning, divergence, MLflow, reports, apply-best.

Real Optuna storages (SQLite and journal files in tmp_path), real short trainings on the tiny
data, a real MLflow store; nothing of ours is mocked.
"""

from __future__ import annotations

import shutil

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from conftest import REPO, tiny_params_dict, write_params
from vqvideo.cli import main as cli
from vqvideo.config import parse_params
from vqvideo.data.frames import FrameData
from vqvideo.errors import ConfigError, VQVideoError
from vqvideo.stages import tune as T


def tiny(tmp_path, **tune):
    """Parsed tiny params with `tune` overrides, also written to tmp_path/params.yaml."""
    data = tiny_params_dict(tune=tune)
    write_params(tmp_path / "params.yaml", data)
    return parse_params(data)


def frames(tiny_data):
    return tiny_data / "frames"


def open_same_study(params, tiny_data, root):
    """The study `tune` will use for these params: to enqueue trials before it runs."""
    cfg = params.tune
    store = T.open_storage(cfg.storage, root)
    name = T.study_name(cfg, params.model, params.train, FrameData.open(frames(tiny_data)))
    return T.open_study(cfg, name, store.storage)


# ---------------------------------------------------------------- budget and resume


@pytest.mark.slow
def test_budget_is_exact_and_rerun_resumes_the_same_study(tiny_data, tmp_path):
    params = tiny(tmp_path, n_trials=3)  # default storage: sqlite:///optuna/vqvideo.db
    study = T.tune(params.tune, params, frames(tiny_data), tmp_path, None)
    assert (tmp_path / "optuna" / "vqvideo.db").exists()  # relative URL resolved against the root
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state.is_finished() for t in trials)
    # trial 0 is params.yaml's own setting: the study's best can never be worse than it
    assert trials[0].params == {"model.codebook_size": params.model.codebook_size,
                                "model.beta": params.model.beta}
    assert trials[0].user_attrs["baseline"] is True
    for t in trials:
        assert t.params["model.codebook_size"] in params.tune.codebook_sizes
        lo, hi = params.tune.beta_range
        assert lo <= t.params["model.beta"] <= hi

    # the same command again: the study is loaded, found complete, and nothing runs
    again = T.tune(params.tune, params, frames(tiny_data), tmp_path, None)
    assert again.study_name == study.study_name
    assert len(again.get_trials()) == 3

    # a larger budget continues the same study up to exactly the new n_trials
    more = params.tune.model_copy(update={"n_trials": 4})
    study = T.tune(more, params.model_copy(update={"tune": more}), frames(tiny_data), tmp_path, None)
    assert [t.number for t in study.get_trials()] == [0, 1, 2, 3]
    assert T.finished(study) == 4


def test_study_name_ignores_searched_keys_but_not_fixed_ones(tiny_data, tmp_path):
    params = tiny(tmp_path)
    data = FrameData.open(frames(tiny_data))
    name = T.study_name(params.tune, params.model, params.train, data)
    applied = params.model.model_copy(update={"codebook_size": 16, "beta": 1.0})
    # after `vqvideo apply-best` the next `dvc repro tune` resumes the same study
    assert T.study_name(params.tune, applied, params.train, data) == name
    other = params.model.model_copy(update={"code_dim": 8})
    assert T.study_name(params.tune, other, params.train, data) != name
    wider = params.tune.model_copy(update={"codebook_sizes": [16, 32, 64]})
    assert T.study_name(wider, params.model, params.train, data) != name


def test_timeout_stops_before_the_budget(tiny_data, tmp_path):
    params = tiny(tmp_path, n_trials=50, timeout=2, storage="journal:t.log")
    study = T.tune(params.tune, params, frames(tiny_data), tmp_path, None)
    # the deadline is checked before each new trial; a started trial runs to its end
    assert len(study.get_trials()) < 50
    assert all(t.state.is_finished() for t in study.get_trials())


# ---------------------------------------------------------------- pruning, divergence, MLflow, reports


@pytest.mark.slow
def test_pruned_and_diverged_trials_are_recorded_and_the_study_goes_on(tiny_data, tmp_path, monkeypatch):
    """Two good trials, one that cannot learn (pruned), one that blows up (failed), one more."""
    monkeypatch.chdir(tmp_path)
    params = tiny(tmp_path, n_trials=5, storage="journal:optuna/study.log",
                  extra={"train.lr": [0.002, 1e-7, 1e4]})
    study = open_same_study(params, tiny_data, tmp_path)
    for lr in (0.002, 0.002, 1e-7, 1e4):
        study.enqueue_trial({"model.codebook_size": 32, "model.beta": 0.25, "train.lr": lr})
    out = tmp_path / "reports" / "tuning"
    assert cli(["tune", "--params", "params.yaml", "--frames", str(frames(tiny_data)), "--out", str(out)]) == 0

    study = optuna.load_study(study_name=study.study_name, storage=T.open_storage(params.tune.storage, tmp_path).storage)
    states = [t.state for t in study.get_trials()]
    assert states[:4] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert states[4].is_finished() and len(states) == 5  # the study went on after the failure
    pruned, failed = study.trials[2], study.trials[3]
    assert "pruned at step" in pruned.user_attrs["prune_reason"]
    assert max(pruned.intermediate_values) < params.tune.steps  # stopped before the end
    assert "diverged" in failed.user_attrs["fail_reason"]

    # trials.csv: one row per trial with params, value, state, duration and the reason
    df = pd.read_csv(out / "trials.csv")
    assert list(df.number) == [0, 1, 2, 3, 4]
    assert list(df.state[:4]) == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    assert {"model.codebook_size", "model.beta", "train.lr", "value", "duration_s"} <= set(df.columns)
    assert df.duration_s.notna().all()
    assert "pruned at step" in df.reason[2] and "diverged" in df.reason[3]

    best = yaml.safe_load((out / "best_params.yaml").read_text())
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert best["values"]["recon_mse"] == pytest.approx(min(t.value for t in complete))
    assert set(best["params"]) <= {"model", "train"}
    for name in ("optimization_history", "codebook_size_beta_map", "intermediate_values", "param_importances"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 3000

    # MLflow: the study is a parent run, each trial a nested run with params, curves and state
    client = mlflow.MlflowClient()
    parent_id = study.user_attrs["mlflow"]["run_id"]
    parent = client.get_run(parent_id)
    assert parent.data.tags["optuna.study"] == study.study_name
    assert parent.data.metrics["trials"] == 5 and parent.data.metrics["pruned"] >= 1
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in runs}
    assert sorted(by_trial) == [0, 1, 2, 3, 4]
    expect = {0: ("COMPLETE", "FINISHED"), 2: ("PRUNED", "KILLED"), 3: ("FAIL", "FAILED")}
    for n, (state, status) in expect.items():
        assert by_trial[n].data.tags["optuna.state"] == state
        assert by_trial[n].info.status == status
    assert "diverged" in by_trial[3].data.tags["fail_reason"]
    assert "pruned" in by_trial[2].data.tags["prune_reason"]
    assert by_trial[2].data.params["train.lr"] == "1e-07"
    curve = client.get_metric_history(by_trial[0].info.run_id, "val/recon_mse")
    assert [m.step for m in curve] == [4, 8]
    assert by_trial[0].data.metrics["final.recon_mse"] == pytest.approx(study.trials[0].value)

    # the same command again resumes: same parent run, no new trial
    assert cli(["tune", "--params", "params.yaml", "--frames", str(frames(tiny_data)), "--out", str(out)]) == 0
    study = optuna.load_study(study_name=study.study_name, storage=T.open_storage(params.tune.storage, tmp_path).storage)
    assert len(study.trials) == 5
    assert study.user_attrs["mlflow"]["run_id"] == parent_id
    assert client.get_run(parent_id).data.tags.get("resumed") == "true"


def test_multi_objective_run_gives_a_pareto_front(tiny_data, tmp_path):
    params = tiny(tmp_path, n_trials=3, storage="journal:m.log", objectives=["recon_mse", "active_fraction"])
    study = T.tune(params.tune, params, frames(tiny_data), tmp_path, None)
    assert len(study.directions) == 2
    assert all(len(t.values) == 2 for t in study.trials if t.state == TrialState.COMPLETE)
    best = T.write_reports(study, tmp_path / "out", params.tune.objectives)
    assert set(best["values"]) == {"recon_mse", "active_fraction"}
    front = {p["trial"] for p in best["pareto_front"]}
    assert best["trial"] in front and front == {t.number for t in study.best_trials}
    assert (tmp_path / "out" / "plots" / "pareto_front.png").exists()
    df = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert {"recon_mse", "active_fraction"} <= set(df.columns)


def test_best_params_on_a_pareto_front_is_the_balanced_trial():
    """recon MSE down, active fraction up: the knee of the front wins, not an extreme."""
    study = optuna.create_study(directions=["minimize", "maximize"])
    dists = {"model.codebook_size": CategoricalDistribution([64, 128, 256]),
             "model.beta": FloatDistribution(0.05, 2.0, log=True)}
    points = [(0.010, 0.20, 64), (0.020, 0.90, 128), (0.015, 0.70, 256), (0.030, 0.50, 64)]
    for mse, active, k in points:
        study.add_trial(create_trial(values=[mse, active], params={"model.codebook_size": k, "model.beta": 0.3},
                                     distributions=dists))
    assert {t.number for t in study.best_trials} == {0, 1, 2}  # trial 3 is dominated by 2
    best = T.best_params(study, ["recon_mse", "active_fraction"])
    # scaled over the front: trial 0 (0, 1), trial 1 (1, 0), trial 2 (0.5, 0.29): nearest the ideal
    assert best["trial"] == 2
    assert best["params"] == {"model": {"codebook_size": 256, "beta": 0.3}}
    assert [p["trial"] for p in best["pareto_front"]] == [0, 1, 2]


# ---------------------------------------------------------------- storage and config


def test_storage_urls_resolve_against_the_root(tmp_path):
    url, kind, path = T.absolute_storage_url("sqlite:///optuna/x.db", tmp_path)
    assert (url, kind, path) == (f"sqlite:///{tmp_path}/optuna/x.db", "sqlite", tmp_path / "optuna" / "x.db")
    assert T.absolute_storage_url("journal:j/x.log", tmp_path)[0] == f"journal:{tmp_path}/j/x.log"
    assert T.absolute_storage_url("journal:/abs/x.log", tmp_path)[0] == "journal:/abs/x.log"
    assert T.absolute_storage_url("sqlite:////abs/x.db", tmp_path)[0] == "sqlite:////abs/x.db"
    # a bare postgresql:// gets the installed driver (SQLAlchemy 2.1 would insist on psycopg 3)
    url, kind, path = T.absolute_storage_url("postgresql://u:pw@db.example/optuna", tmp_path)
    assert url.startswith("postgresql+psycopg") and url.endswith("://u:pw@db.example/optuna")
    assert (kind, path) == ("database", None)
    mysql = "mysql+pymysql://u:pw@db.example/optuna"
    assert T.absolute_storage_url(mysql, tmp_path) == (mysql, "database", None)
    with pytest.raises(ConfigError, match="not a storage URL"):
        T.absolute_storage_url("optuna.db", tmp_path)


def test_unreachable_database_is_one_line_without_the_password(tmp_path):
    with pytest.raises(VQVideoError) as err:
        T.open_storage("postgresql://vq:s3cret@127.0.0.1:9/optuna", tmp_path)
    msg = str(err.value)
    assert "s3cret" not in msg and "127.0.0.1:9" in msg and "\n" not in msg


@pytest.mark.parametrize("extra,expect", [
    ({"model.codebook_size": [8]}, "set by the tuner"),
    ({"optim.lr": [0.1]}, "must name a model"),
    ({"train.lr": []}, "at least one choice"),
    ({"train.lr": [-1.0]}, "not a valid train.lr"),
    ({"train.lr": {"low": 0.1, "high": 0.01}}, "low <= high"),
])
def test_bad_extra_search_space_names_the_key(extra, expect):
    with pytest.raises(ConfigError, match=expect):
        parse_params(tiny_params_dict(tune={"extra": extra}))


def test_extra_ranges_suggest_ints_and_floats(tiny_data, tmp_path):
    params = tiny(tmp_path, n_trials=2, storage="journal:r.log", baseline_first=False,
                  extra={"model.hidden": {"low": 8, "high": 16}, "train.lr": {"low": 1e-3, "high": 3e-3, "log": True}})
    study = T.tune(params.tune, params, frames(tiny_data), tmp_path, None)
    for t in study.trials:
        assert isinstance(t.params["model.hidden"], int) and 8 <= t.params["model.hidden"] <= 16
        assert 1e-3 <= t.params["train.lr"] <= 3e-3


# ---------------------------------------------------------------- apply-best


def test_apply_best_writes_params_keeping_comments(tmp_path):
    params_file = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params_file)
    before = params_file.read_text()
    best = tmp_path / "best_params.yaml"
    best.write_text(yaml.safe_dump({"trial": 3, "values": {"recon_mse": 0.01},
                                    "params": {"model": {"codebook_size": 256, "beta": 0.4321},
                                               "train": {"lr": 0.003}}}))
    assert cli(["apply-best", "--params", str(params_file), "--best", str(best)]) == 0
    after = params_file.read_text()
    data = yaml.safe_load(after)
    assert data["model"]["codebook_size"] == 256 and data["model"]["beta"] == 0.4321
    assert data["train"]["lr"] == 0.003
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(changed) == 3 and len(before.splitlines()) == len(after.splitlines())
    comments = [line for line in before.splitlines() if "#" in line and "codebook_size" not in line]
    assert all(line in after for line in comments)  # every comment is still there, unchanged
    parse_params(data)


def test_apply_best_refuses_invalid_values_and_leaves_params_untouched(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params_file)
    before = params_file.read_text()
    best = tmp_path / "best_params.yaml"
    best.write_text(yaml.safe_dump({"params": {"model": {"codebook_size": 1}}}))
    assert cli(["apply-best", "--params", str(params_file), "--best", str(best)]) == 2
    assert "model.codebook_size" in capsys.readouterr().err
    assert params_file.read_text() == before
    with pytest.raises(VQVideoError, match="not found"):
        T.apply_best(tmp_path / "missing.yaml", params_file)
    best.write_text("just: text\n")
    with pytest.raises(VQVideoError, match="not a vqvideo best_params.yaml"):
        T.apply_best(best, params_file)


@pytest.mark.parametrize("extra_args,expect", [
    (["--trials", "0"], "tune.n_trials"),
    (["--storage", "optuna.db"], "not a storage URL"),
    (["--storage", "postgresql://vq:s3cret@127.0.0.1:9/optuna"], "cannot open tune.storage"),
])
def test_tune_command_errors_are_one_line(tiny_data, tmp_path, monkeypatch, capsys, extra_args, expect):
    monkeypatch.chdir(tmp_path)
    tiny(tmp_path)
    code = cli(["tune", "--params", "params.yaml", "--frames", str(frames(tiny_data)), *extra_args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expect in err and "s3cret" not in err
    assert len(err.splitlines()) == 1
