"""Nothing lost, nothing trusted that should not be: real processes killed mid-write, a killed
`dvc repro` resuming from its checkpoint, model files that would run code, and the code itself
checked for shell commands and unsafe loaders."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_params_dict, write_params
from vqvideo.errors import VQVideoError
from vqvideo.io import clean_stale, load_checkpoint, save_checkpoint, staging_dir, write_json

SRC = REPO / "src" / "vqvideo"


def _env(**extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _wait_for(pred, proc: subprocess.Popen, what: str, limit: float = 120) -> None:
    """Poll `pred` until true; fail if the process ends first (it would have had nothing to kill)."""
    deadline = time.monotonic() + limit
    while not pred():
        if proc.poll() is not None:
            out = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}:\n{out[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


# ---------------------------------------------------------------- killed mid-write: the helpers

# A writer that rewrites three outputs forever, version after version: a JSON file, a 4 MB array
# whose every element is the version, and a folder of two files that must agree on the version.
WRITER = r"""
import sys, numpy as np
from pathlib import Path
from vqvideo.io import staging_dir, write_json, write_npy
out, v = Path(sys.argv[1]), int(sys.argv[2])
while True:
    v += 1
    write_json(out / "state.json", {"v": v, "payload": [v] * 2000})
    write_npy(out / "array.npy", np.full(1 << 20, v, np.int32))
    with staging_dir(out / "folder") as tmp:
        np.save(tmp / "a.npy", np.full(1 << 18, v, np.int32))
        (tmp / "b.json").write_text('{"v": %d}' % v)
"""


def _versions(out: Path) -> tuple[int, int, int]:
    """The version each output holds; fails on a torn or inconsistent one."""
    state = json.loads((out / "state.json").read_text())
    assert state["payload"] == [state["v"]] * 2000
    arr = np.load(out / "array.npy")
    assert arr.shape == (1 << 20,) and (arr == arr[0]).all()
    a = np.load(out / "folder" / "a.npy")
    b = json.loads((out / "folder" / "b.json").read_text())
    assert (a == a[0]).all() and b["v"] == a[0], "the folder mixes two versions"
    assert sorted(p.name for p in (out / "folder").iterdir()) == ["a.npy", "b.json"]
    return state["v"], int(arr[0]), int(a[0])


def test_outputs_killed_mid_write_are_the_old_or_the_new_version(tmp_path):
    """SIGKILL at many points of real writes: every output is always a whole version."""
    import random

    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([sys.executable, "-c", WRITER.replace("while True", "for _ in range(1)"), str(out), "0"],
                   check=True, env=_env())
    seen = _versions(out)
    rng = random.Random(0)
    left_behind = 0
    for _ in range(10):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(max(seen) + 10)],
                                env=_env(), stderr=subprocess.PIPE, text=True)
        mine = f".{proc.pid}."
        # a temporary of this process exists: it is in the middle of writing something
        _wait_for(lambda m=mine: any(m in n for n in _temporaries(out)), proc, "it started writing")
        time.sleep(rng.uniform(0, 0.08))  # land at another point of the write each time
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left_behind += sum(mine in n for n in _temporaries(out))
        now = _versions(out)
        assert all(n >= s for n, s in zip(now, seen)), "an output went back to an older version"
        seen = now
    assert left_behind > 0  # the kills did land mid-write
    # The next writer removes what the killed ones left, and writes a whole new version.
    write_json(out / "state.json", {"v": 10**6, "payload": [10**6] * 2000})
    from vqvideo.io import write_npy

    write_npy(out / "array.npy", np.full(1 << 20, 10**6, np.int32))
    with staging_dir(out / "folder") as tmp:
        np.save(tmp / "a.npy", np.full(1 << 18, 10**6, np.int32))
        (tmp / "b.json").write_text('{"v": 1000000}')
    assert _temporaries(out) == []
    assert _versions(out) == (10**6,) * 3


def test_temporaries_of_live_writers_are_kept_and_a_parked_folder_comes_back(tmp_path):
    from vqvideo.io import _HOST

    target = tmp_path / "frames"
    live = tmp_path / f".frames.{os.getpid()}.{_HOST}.abcd1234.tmp"  # this process: alive
    live.mkdir()
    dead_pid = _dead_pid()
    dead = tmp_path / f".frames.{dead_pid}.{_HOST}.abcd1234.tmp"
    dead.mkdir()
    other = tmp_path / f".index.csv.{dead_pid}.{_HOST}.abcd1234.csv.tmp"  # another output's: garbage too
    other.write_text("half a csv")
    elsewhere = tmp_path / f".frames.{dead_pid}.0badc0de.abcd1234.tmp"  # another machine's pid
    elsewhere.mkdir()
    parked = tmp_path / ".frames.old"  # a swap killed between its two renames
    parked.mkdir()
    (parked / "stats.json").write_text("{}")
    kept = tmp_path / ".gitignore"  # not a temporary at all
    kept.write_text("/frames\n")
    assert sorted(clean_stale(target)) == sorted([dead, other])
    assert live.exists() and kept.exists() and elsewhere.exists()
    assert (target / "stats.json").exists() and not parked.exists()


def test_scratch_dir_is_removed_whatever_happens_and_cleans_after_killed_writers(tmp_path):
    from vqvideo.io import scratch_dir

    out = tmp_path / "images"
    from vqvideo.io import _HOST

    dead = tmp_path / f".images.{_dead_pid()}.{_HOST}.abcd1234.tmp"
    dead.mkdir()
    with pytest.raises(RuntimeError), scratch_dir(out) as tmp:
        assert not dead.exists() and tmp.parent == tmp_path
        (tmp / "half.gif").write_bytes(b"GIF8")
        raise RuntimeError("the writer failed")
    assert _temporaries(tmp_path) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------- killed mid-write: a real stage


@pytest.mark.slow
def test_collect_killed_mid_write_keeps_the_previous_output(tmp_path):
    """`vqvideo collect` SIGKILLed while it writes videos: data/raw is still the previous,
    complete collection; the next run cleans up after the killed one and finishes."""
    from vqvideo.data.video import probe

    out = tmp_path / "raw"
    old = write_params(tmp_path / "old.yaml", tiny_params_dict(collect={"num_videos": 6, "seed": 1, "workers": 1}))
    new = write_params(tmp_path / "new.yaml", tiny_params_dict(collect={"num_videos": 40, "seed": 2, "workers": 1}))
    cmd = [sys.executable, "-m", "vqvideo", "collect", "--out", str(out), "--params"]
    subprocess.run([*cmd, str(old)], check=True, env=_env(), capture_output=True)
    previous = _hashes(out)

    proc = subprocess.Popen([*cmd, str(new)], env=_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)

    def busy() -> bool:  # its staging folder holds a few finished videos
        return any(len(list(d.glob("videos/*.mkv"))) >= 3 for d in tmp_path.glob(f".raw.{proc.pid}.*"))

    _wait_for(busy, proc, "it wrote videos")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _hashes(out) == previous  # the previous output, byte for byte
    import pandas as pd

    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 6 and all(probe(out / p).frames == 16 for p in manifest.path)
    assert any(n.startswith(f".raw.{proc.pid}.") for n in _temporaries(tmp_path))  # what it left

    subprocess.run([*cmd, str(new)], check=True, env=_env(), capture_output=True)
    assert _temporaries(tmp_path) == []
    assert len(pd.read_csv(out / "manifest.csv")) == 40


# ---------------------------------------------------------------- SIGTERM unwinds cleanly


@pytest.mark.slow
def test_sigterm_stops_train_cleanly_and_a_rerun_resumes(tiny_data, tmp_path):
    import mlflow

    params = write_params(tmp_path / "params.yaml", tiny_params_dict(
        train={"steps": 120, "checkpoint_every": 5, "eval_every": 60, "log_every": 5}))
    cmd = [sys.executable, "-m", "vqvideo", "train", "--params", str(params), "--frames",
           str(tiny_data / "frames"), "--model-dir", str(tmp_path / "vqvae"), "--checkpoints",
           str(tmp_path / "ckpt"), "--history", str(tmp_path / "hist/history.csv")]
    proc = subprocess.Popen(cmd, env=_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    _wait_for(lambda: (tmp_path / "ckpt/last.pt").exists(), proc, "its first checkpoint")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1] == "vqvideo train: interrupted; re-run to resume from the last checkpoint"
    assert "Traceback" not in err
    run_id = json.loads((tmp_path / "ckpt/run.json").read_text())["run_id"]
    assert mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(run_id).info.status == "KILLED"
    assert not (tmp_path / "vqvae").exists() and _temporaries(tmp_path / "ckpt") == []
    step = torch.load(tmp_path / "ckpt/last.pt", weights_only=True)["step"]
    assert step >= 5

    # the same command again picks up where SIGTERM stopped it
    subprocess.run(cmd, check=True, env=_env(), capture_output=True, timeout=600)
    summary = json.loads((tmp_path / "vqvae/summary.json").read_text())
    assert summary["resumed_from_step"] >= step
    run = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags.get("resumed") == "true"


# ---------------------------------------------------------------- a killed `dvc repro` resumes


@pytest.mark.slow
def test_killed_dvc_repro_resumes_training_from_its_checkpoint(tmp_path):
    """SIGKILL to the whole `dvc repro` (DVC and the stage it runs) while train runs, then
    `dvc repro` again: DVC keeps the checkpoint (persist: true), train resumes from it and logs
    into the same MLflow run."""
    import mlflow

    from test_pipeline import _env as repo_env
    from test_pipeline import make_repo

    params = tiny_params_dict(train={"steps": 150, "checkpoint_every": 5, "eval_every": 75, "log_every": 10})
    repo = make_repo(tmp_path / "repo", params)
    env = {**repo_env(), "OMP_NUM_THREADS": "1"}
    dvc = [sys.executable, "-m", "dvc", "repro", "train"]
    ckpt = repo / "models/checkpoints/vqvae/last.pt"

    # its own session: the kill reaches DVC and the stage's process together, like a crash
    proc = subprocess.Popen(dvc, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)

    def checkpointed() -> bool:
        try:
            return ckpt.exists() and torch.load(ckpt, weights_only=True)["step"] >= 10
        except Exception:  # noqa: BLE001 - never torn (atomic), but it may vanish and reappear
            return False

    _wait_for(checkpointed, proc, "train wrote a checkpoint", limit=300)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    run_id = json.loads((repo / "models/checkpoints/vqvae/run.json").read_text())["run_id"]
    assert not (repo / "models/vqvae/model.pt").exists()

    res = subprocess.run(dvc, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Running stage 'train'" in res.stdout + res.stderr
    assert "Running stage 'collect'" not in res.stdout + res.stderr  # finished stages stay done
    summary = json.loads((repo / "models/vqvae/summary.json").read_text())
    assert summary["resumed_from_step"] >= killed_at > 0
    assert json.loads((repo / "models/vqvae/mlflow_run.json").read_text())["run_id"] == run_id
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.data.tags.get("resumed") == "true" and run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1  # one run, not a second one
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert steps[-1] == 150


# ---------------------------------------------------------------- model files that would run code


class Payload:
    """Unpickling this runs `touch <marker>`: what a malicious model file would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    evil = tmp_path / "last.pt"
    torch.save({"step": 3, "model": {"w": torch.zeros(2)}, "extra": Payload(marker)}, evil,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(VQVideoError) as err:
        load_checkpoint(evil, "vqvae checkpoint", "delete it and re-run `dvc repro train`")
    msg = str(err.value)
    assert "refused without running them" in msg and "posix.system" in msg and "\n" not in msg
    assert "weights_only=False" not in msg  # torch's own advice, the one thing never to do
    assert not marker.exists()


def test_stages_refuse_a_model_or_resume_checkpoint_that_would_run_code(tiny_models, tiny_data, tmp_path):
    """The model loaders and the training loop's resume both go through the safe loader."""
    import shutil

    from vqvideo.config import parse_params
    from vqvideo.data.frames import FrameData
    from vqvideo.models.store import load_prior
    from vqvideo.stages.train import train

    marker = tmp_path / "pwned"
    prior = tmp_path / "prior"
    shutil.copytree(tiny_models / "prior", prior)
    state = torch.load(prior / "model.pt", weights_only=True)
    state["meta"]["x"] = Payload(marker)
    torch.save(state, prior / "model.pt")
    with pytest.raises(VQVideoError, match="refused without running"):
        load_prior(prior)

    ckpt = tmp_path / "ckpt" / "last.pt"
    ckpt.parent.mkdir()
    torch.save({"fingerprint": Payload(marker)}, ckpt)
    p = parse_params(tiny_params_dict())
    with pytest.raises(VQVideoError, match="refused without running"):
        train(p.model, p.train, FrameData.open(tiny_data / "frames"), checkpoint=ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.3, 0.7, 0.999])
def test_a_truncated_checkpoint_is_one_clear_line(tmp_path, keep):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"step": 1, "w": torch.arange(50_000.0)})
    data = good.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(VQVideoError) as err:
        load_checkpoint(cut, "prior checkpoint", "delete it and re-run")
    msg = str(err.value)
    assert "\n" not in msg and ("truncated" in msg or "empty" in msg), msg


# ---------------------------------------------------------------- no shell, no unsafe loaders


UNSAFE = {
    r"shell\s*=\s*True": "a shell command",
    r"\bos\.(system|popen|exec\w*|spawn\w*)\(": "a shell or exec call",
    r"\byaml\.(load|unsafe_load|full_load)\(": "a YAML loader that builds Python objects",
    r"YAML\(\s*typ\s*=\s*['\"](unsafe|full)": "ruamel's unsafe loader",
    r"\bpickle\.loads?\(": "pickle",
    r"allow_pickle\s*=\s*True": "numpy pickles",
    r"(?<![\w.])(eval|exec)\(": "eval/exec",
}


def test_the_code_has_no_shell_commands_or_unsafe_loaders():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for pattern, what in UNSAFE.items():
            for m in re.finditer(pattern, text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{path.relative_to(REPO)}:{line}: {what}")
        # every torch.load states weights_only=True
        for m in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", text):
            if "weights_only=True" not in m.group(0):
                found.append(f"{path.relative_to(REPO)}: torch.load without weights_only=True")
    assert not found, "\n".join(found)


def test_apply_best_never_runs_a_yaml_tag_in_params(tmp_path):
    """apply-best reads params.yaml with ruamel's round-trip loader, which keeps tags as data."""
    marker = tmp_path / "pwned"
    params = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text().replace(
        "evaluate:\n", f"evaluate:\n  hack: !!python/object/apply:os.system ['touch {marker}']\n", 1)
    params.write_text(text)
    best = tmp_path / "best_params.yaml"
    best.write_text("params:\n  model:\n    beta: 0.5\n")
    res = subprocess.run([sys.executable, "-m", "vqvideo", "apply-best", "--params", str(params), "--best",
                          str(best)], capture_output=True, text=True, env=_env(), timeout=120)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) == 1, res.stderr
    assert not marker.exists()
    assert params.read_text() == text  # untouched


# ---------------------------------------------------------------- the prior resumes like train


@pytest.mark.slow
def test_killed_prior_resumes_bit_for_bit(tiny_data, tiny_models, tmp_path):
    """SIGKILL `vqvideo prior` after a checkpoint, run it again: the same weights as a run never
    killed (CPU), the same MLflow run, and the summary says where it resumed."""
    import shutil

    import mlflow

    from vqvideo import tracking

    vqvae = tmp_path / "vqvae"
    shutil.copytree(tiny_models / "vqvae", vqvae)
    with tracking.pipeline_run(None, new=True, run_name="pipeline") as run:
        tracking.record_run(vqvae / tracking.RUN_FILE, run)
    params = write_params(tmp_path / "params.yaml", tiny_params_dict(
        prior={"steps": 40, "checkpoint_every": 3, "eval_every": 20, "log_every": 4}))

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "vqvideo", "prior", "--params", str(params), "--frames",
                str(tiny_data / "frames"), "--vqvae", str(vqvae), "--model-dir", str(out / "prior"),
                "--checkpoints", str(out / "ckpt"), "--history", str(out / "history.csv")]

    ref = subprocess.run(cmd(tmp_path / "ref"), env=_env(), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]

    out = tmp_path / "run"
    proc = subprocess.Popen(cmd(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def checkpointed() -> bool:
        try:
            return torch.load(out / "ckpt/last.pt", weights_only=True)["step"] >= 6
        except (FileNotFoundError, RuntimeError, EOFError):
            return False

    _wait_for(checkpointed, proc, "a checkpoint at step 6")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "prior").exists()
    killed_at = torch.load(out / "ckpt/last.pt", weights_only=True)["step"]
    assert killed_at < 40, "the run finished before it could be killed; raise prior.steps"

    again = subprocess.run(cmd(out), env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((out / "prior/summary.json").read_text())
    assert summary["resumed_from_step"] >= killed_at
    a = torch.load(tmp_path / "ref/prior/model.pt", weights_only=True)["state_dict"]
    b = torch.load(out / "prior/model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    ids = {json.loads((d / "prior" / tracking.RUN_FILE).read_text())["run_id"] for d in (tmp_path / "ref", out)}
    assert ids == {run.info.run_id}  # both logged into the pipeline's run, no second run
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
