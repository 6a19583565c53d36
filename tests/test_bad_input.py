"""Bad input through the real CLI (`python -m vqvideo <stage>` in a subprocess).

Every case must end the same way: a non-zero exit code, exactly one line on stderr that starts
with `vqvideo <stage>: error:`, names the problem and says what to do, no traceback, and nothing
half-made: each output the stage would write is byte-for-byte what it was before (a previous
version planted there), no temporary is left beside it, and no MLflow run was opened.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_params_dict, write_params

# ---------------------------------------------------------------- the workspace


@pytest.fixture(scope="module")
def ws(tiny_data, tiny_models, tmp_path_factory) -> Path:
    """Frames, both models with their MLflow run record, both histories and a valid params.yaml."""
    from vqvideo import tracking
    from vqvideo.io import write_history

    root = tmp_path_factory.mktemp("ws")
    shutil.copytree(tiny_data / "frames", root / "data/frames")
    shutil.copytree(tiny_models, root / "models")
    with tracking.pipeline_run(None, new=True, run_name="pipeline") as run:
        for name in ("vqvae", "prior"):
            tracking.record_run(root / "models" / name / tracking.RUN_FILE, run)
    rows = [{"step": s, "split": sp, "loss": 1.0 / s, "recon_mse": 0.1, "accuracy": 0.5}
            for s in (1, 2) for sp in ("train", "val")]
    for name in ("train", "prior"):
        write_history(root / "reports" / name / "history.csv", rows)
    write_params(root / "params.yaml", tiny_params_dict())
    (root / "raw").mkdir()  # an empty data/raw: collect never ran
    return root


def _vqvae_file(dest: Path, ws: Path, **model) -> Path:
    """An untrained VQ-VAE saved as train saves one, with model.* overrides."""
    from vqvideo.config import parse_params
    from vqvideo.models.store import save_model
    from vqvideo.models.vqvae import VQVAE

    params = parse_params(tiny_params_dict(model=model))
    torch.manual_seed(0)
    save_model(dest, "vqvae", VQVAE(params.model, channels=1), params.model.model_dump(mode="json"),
               {"channels": 1, "image_size": params.sample.size, "fingerprint": f"other-{model}"})
    return dest


class Payload:
    """Unpickling this runs `touch <marker>`: what a malicious model file would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _frames_with(ws: Path, dest: Path, split: str, array: np.ndarray, **stats) -> Path:
    """A copy of the workspace's frames with one split's array replaced (and stats edited)."""
    import json

    shutil.copytree(ws / "data/frames", dest)
    np.save(dest / f"{split}.npy", array)
    s = json.loads((dest / "stats.json").read_text())
    s.update(stats)
    (dest / "stats.json").write_text(json.dumps(s))
    return dest


@pytest.fixture
def tmp(tmp_path_factory) -> Path:
    """A folder whose name says nothing (tmp_path's carries the test's name into every message)."""
    return tmp_path_factory.mktemp("case")


# ---------------------------------------------------------------- running a stage


OUTPUTS = {  # option -> output the stage writes (relative to the case's output folder)
    "collect": {"--out": "raw"},
    "sample": {"--out": "frames"},
    "train": {"--model-dir": "vqvae", "--checkpoints": "ckpt/vqvae", "--history": "train/history.csv"},
    "prior": {"--model-dir": "prior", "--checkpoints": "ckpt/prior", "--history": "prior/history.csv"},
    "generate": {"--out": "generated"},
    "evaluate": {"--metrics": "rep/metrics.json", "--plots": "rep/plots", "--tables": "rep/eval",
                 "--summary": "rep/summary.md"},
    "tune": {"--out": "tuning"},
}


def _inputs(ws: Path) -> dict[str, dict[str, Path]]:
    f, v, p = ws / "data/frames", ws / "models/vqvae", ws / "models/prior"
    return {
        "collect": {},
        "sample": {"--raw": ws / "raw"},
        "train": {"--frames": f},
        "prior": {"--frames": f, "--vqvae": v},
        "generate": {"--frames": f, "--vqvae": v, "--prior": p},
        "evaluate": {"--frames": f, "--vqvae": v, "--prior": p, "--generated": ws / "generated",
                     "--train-history": ws / "reports/train/history.csv",
                     "--prior-history": ws / "reports/prior/history.csv"},
        "tune": {"--frames": f},
    }


def _plant_previous(outputs: list[Path]) -> None:
    """A previous version of every output: what must survive a refused run untouched."""
    for o in outputs:
        if o.suffix:
            o.parent.mkdir(parents=True, exist_ok=True)
            o.write_text(f"previous {o.name}\n")
        else:
            o.mkdir(parents=True, exist_ok=True)
            (o / "previous.txt").write_text("previous\n")


def _tree(outputs: list[Path]) -> dict[str, str]:
    """Every file under and every temporary beside the outputs, with its sha256."""
    seen: dict[str, str] = {}
    for o in outputs:
        for p in [o, *(o.rglob("*") if o.is_dir() else [])]:
            if p.is_file():
                seen[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        if o.parent.is_dir():
            for sib in o.parent.glob(f".{o.name}.*"):
                seen[str(sib)] = "temporary"
    return seen


def _runs() -> int:
    import mlflow

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("vqvideo")
    return len(client.search_runs([exp.experiment_id], max_results=5000)) if exp else 0


@dataclass
class Result:
    code: int
    stderr: str
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    runs: tuple[int, int] = (0, 0)

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_stage(stage: str, ws: Path, out: Path, *extra: str, params: Path | None = None,
              debug: bool = False, **inputs: Path) -> Result:
    """`python -m vqvideo <stage>` with the workspace's inputs, `inputs` overriding them
    (`vqvae=...` for --vqvae) and every output under `out`, each planted with a previous version."""
    args = dict(_inputs(ws)[stage])
    args.update({f"--{k.replace('_', '-')}": v for k, v in inputs.items()})
    outputs = {opt: out / rel for opt, rel in OUTPUTS[stage].items()}
    if "--image" in extra:
        outputs = {"--out": out / "images"}
    _plant_previous(list(outputs.values()))
    argv = [stage, "--params", str(params or ws / "params.yaml")]
    for opt, value in {**args, **outputs}.items():
        argv += [opt, str(value)]
    argv += [*extra, *(["--debug"] if debug else [])]
    before, runs = _tree(list(outputs.values())), _runs()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("VQVIDEO_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "vqvideo", *argv], capture_output=True, text=True,
                          cwd=out, env=env, timeout=300)
    return Result(proc.returncode, proc.stderr, before, _tree(list(outputs.values())), (runs, _runs()))


# Words of a message that says what to do: each case's own words are checked too.
ACTIONS = ("run ", "re-run", "give", "fix", "add", "lower", "raise", "point", "pass", "delete", "collect more")


def assert_refused(res: Result, stage: str, *expect: str, hint: bool = True) -> str:
    """`hint`: check the line says what to do (params errors name the allowed values instead)."""
    assert res.code == 2, f"exit {res.code}, stderr:\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert len(res.lines) == 1, res.lines
    line = res.lines[0]
    assert line.startswith(f"vqvideo {stage}: error: "), line
    for e in expect:
        assert e in line, f"{e!r} not in: {line}"
    assert not hint or any(a in line for a in ACTIONS), f"says nothing to do: {line}"
    assert res.after == res.before, "an output changed or a temporary was left"
    assert res.runs[1] == res.runs[0], "an MLflow run was opened"
    return line


# ---------------------------------------------------------------- invalid params (fast: checked
# before the stage, or torch, is even imported)


def _params(tmp: Path, edit: Callable[[dict], None] | None = None, text: str | None = None) -> Path:
    path = tmp / "bad_params.yaml"
    if text is not None:
        path.write_text(text)
        return path
    data = tiny_params_dict()
    edit(data)
    return write_params(path, data)


PARAM_CASES = {
    "wrong type": ("train", lambda d: d["train"].update(steps="many"), None,
                   ["train.steps", "valid integer", "'many'"]),
    "out of range": ("train", lambda d: d["model"].update(codebook_size=1), None,
                     ["model.codebook_size", "greater than or equal to 2"]),
    "negative beta": ("prior", lambda d: d["model"].update(beta=-0.5), None, ["model.beta"]),
    "unknown key": ("sample", lambda d: d["model"].update(codebok_size=8), None,
                    ["unknown key 'model.codebok_size'", "allowed keys in 'model'", "codebook_size"]),
    "unknown section": ("collect", lambda d: d.update(trian={}), None,
                        ["unknown section 'trian'", "allowed sections", "train"]),
    "missing section": ("evaluate", lambda d: d.pop("prior"), None, ["missing section 'prior'", "add it"]),
    "wrong choice": ("generate", lambda d: d["model"].update(arch="vgg"), None, ["model.arch", "'seed' or 'resnet'"]),
    "yaml syntax error": ("generate", None, "model:\n  beta: [0.25\n", ["YAML syntax error at line", "fix"]),
    "not a mapping": ("collect", None, "- just\n- a list\n", ["expected a mapping of sections"]),
}


@pytest.mark.parametrize("case", list(PARAM_CASES))
def test_invalid_params(case, ws, tmp):
    stage, edit, text, expect = PARAM_CASES[case]
    res = run_stage(stage, ws, tmp, params=_params(tmp, edit, text))
    assert_refused(res, stage, *expect, hint=False)


def test_missing_params_file(ws, tmp):
    res = run_stage("train", ws, tmp, params=tmp / "nowhere.yaml")
    assert_refused(res, "train", "params file not found", "--params")


def test_yaml_that_would_run_code_is_refused_without_running_it(ws, tmp):
    marker = tmp / "pwned"
    text = f"model: !!python/object/apply:os.system ['touch {marker}']\n"
    res = run_stage("train", ws, tmp, params=_params(tmp, text=text))
    assert_refused(res, "train", "YAML")
    assert not marker.exists()


# ---------------------------------------------------------------- a stage before its upstream


@pytest.mark.slow
def test_sample_before_collect(ws, tmp):
    assert_refused(run_stage("sample", ws, tmp), "sample", "manifest.csv", "dvc repro collect")


def test_train_before_sample(ws, tmp):
    res = run_stage("train", ws, tmp, frames=tmp / "no_frames")
    assert_refused(res, "train", "no_frames", "dvc repro sample")


@pytest.mark.slow
def test_prior_before_train(ws, tmp):
    res = run_stage("prior", ws, tmp, vqvae=tmp / "no_vqvae")
    assert_refused(res, "prior", "VQ-VAE model not found", "no_vqvae", "dvc repro train")


@pytest.mark.slow
def test_generate_before_prior(ws, tmp):
    res = run_stage("generate", ws, tmp, prior=tmp / "no_prior")
    assert_refused(res, "generate", "MLflow run record", "dvc repro prior")


@pytest.mark.slow
def test_evaluate_before_train_history(ws, tmp):
    res = run_stage("evaluate", ws, tmp, train_history=tmp / "none.csv")
    assert_refused(res, "evaluate", "VQ-VAE training history", "dvc repro train")


# ---------------------------------------------------------------- empty or mismatched data


@pytest.mark.slow
def test_train_on_an_empty_val_split(ws, tmp):
    clips = np.load(ws / "data/frames/val.npy")
    frames = _frames_with(ws, tmp / "frames", "val", clips[:0])
    res = run_stage("train", ws, tmp, frames=frames)
    assert_refused(res, "train", "val split", "empty", "sample.val_fraction")


@pytest.mark.slow
def test_tune_on_an_empty_val_split(ws, tmp):
    clips = np.load(ws / "data/frames/val.npy")
    frames = _frames_with(ws, tmp / "frames", "val", clips[:0])
    res = run_stage("tune", ws, tmp, frames=frames)
    assert_refused(res, "tune", "val split", "empty")
    assert not (tmp / "optuna").exists()  # no study storage was created either (cwd is the root here)


@pytest.mark.slow
def test_evaluate_on_an_empty_test_split(ws, tmp):
    clips = np.load(ws / "data/frames/test.npy")
    frames = _frames_with(ws, tmp / "frames", "test", clips[:0])
    res = run_stage("evaluate", ws, tmp, frames=frames)
    assert_refused(res, "evaluate", "test split", "empty")


@pytest.mark.slow
def test_evaluate_on_frames_of_another_size(ws, tmp):
    clips = np.load(ws / "data/frames/test.npy")[..., ::2, ::2]  # (N, T, C, 32, 32)
    shape = list(clips.shape[1:])
    frames = _frames_with(ws, tmp / "frames", "test", np.ascontiguousarray(clips), clip_shape=shape)
    res = run_stage("evaluate", ws, tmp, frames=frames)
    assert_refused(res, "evaluate", "trained on 1x64x64 frames", "1x32x32", "dvc repro train")


# ---------------------------------------------------------------- corrupt or mismatched models


def _copy_model(ws: Path, dest: Path, name: str = "vqvae") -> Path:
    shutil.copytree(ws / "models" / name, dest)
    return dest


@pytest.mark.slow
def test_truncated_model_file(ws, tmp):
    bad = _copy_model(ws, tmp / "vq")
    data = (bad / "model.pt").read_bytes()
    (bad / "model.pt").write_bytes(data[: len(data) // 2])
    res = run_stage("generate", ws, tmp, vqvae=bad)
    assert_refused(res, "generate", "model.pt", "truncated", "dvc repro train")


@pytest.mark.slow
def test_prior_model_given_as_the_vqvae(ws, tmp):
    res = run_stage("evaluate", ws, tmp, vqvae=ws / "models/prior")
    assert_refused(res, "evaluate", "is a prior model, where a VQ-VAE model is expected", "dvc repro train")


@pytest.mark.slow
def test_training_checkpoint_given_as_a_model(ws, tmp):
    from vqvideo.io import save_checkpoint

    ckpt = tmp / "ckpt" / "last.pt"
    save_checkpoint(ckpt, {"fingerprint": "x", "step": 3, "model": {}, "optimizer": {}})
    res = run_stage("generate", ws, tmp, vqvae=ckpt)
    assert_refused(res, "generate", "is a training checkpoint", "not a saved model",
                   "where a VQ-VAE model is expected", "dvc repro train")


@pytest.mark.slow
def test_prior_of_another_codebook_size(ws, tmp):
    other = _vqvae_file(tmp / "vq16", ws, codebook_size=16)
    res = run_stage("evaluate", ws, tmp, vqvae=other)
    assert_refused(res, "evaluate", "trained on another VQ-VAE", "codebook_size 32 there, 16 here",
                   "dvc repro prior")


@pytest.mark.slow
def test_prior_of_another_architecture(ws, tmp):
    other = _vqvae_file(tmp / "seed", ws, arch="seed")  # same codebook, pools by 8 not 4
    res = run_stage("generate", ws, tmp, vqvae=other)
    assert_refused(res, "generate", "trained on another VQ-VAE", "arch resnet there, seed here",
                   "16x16 code grid there, 8x8 here", "dvc repro prior")


@pytest.mark.slow
def test_weights_that_do_not_fit_their_config(ws, tmp):
    """A file whose config says one codebook size and whose weights have another."""
    from vqvideo.io import save_checkpoint

    bad = _copy_model(ws, tmp / "vq")
    state = torch.load(bad / "model.pt", weights_only=True)
    state["config"]["codebook_size"] = 64
    save_checkpoint(bad / "model.pt", state)
    res = run_stage("prior", ws, tmp, vqvae=bad)
    assert_refused(res, "prior", "weights do not fit", "codebook_size 64", "size mismatch", "dvc repro train")


@pytest.mark.slow
def test_model_file_that_would_run_code(ws, tmp):
    marker = tmp / "pwned"
    bad = _copy_model(ws, tmp / "vq")
    state = torch.load(bad / "model.pt", weights_only=True)
    state["meta"]["note"] = Payload(marker)
    torch.save(state, bad / "model.pt")
    res = run_stage("generate", ws, tmp, vqvae=bad)
    assert_refused(res, "generate", "holds Python objects", "refused without running them", "posix.system")
    assert not marker.exists()


# ---------------------------------------------------------------- generate --image


@pytest.mark.slow
def test_image_that_cannot_be_read(ws, tmp):
    fake = tmp / "photo.png"
    fake.write_text("<html>not an image</html>")
    res = run_stage("generate", ws, tmp, "--image", str(fake))
    assert_refused(res, "generate", "photo.png", "cannot be read as an image", "PNG or JPEG")


@pytest.mark.slow
def test_image_too_small(ws, tmp):
    import cv2

    small = tmp / "tiny.png"
    cv2.imwrite(str(small), np.full((6, 9), 200, np.uint8))
    res = run_stage("generate", ws, tmp, "--image", str(small))
    assert_refused(res, "generate", "9x6 px", "too small", "larger image")


@pytest.mark.slow
def test_image_that_does_not_exist(ws, tmp):
    res = run_stage("generate", ws, tmp, "--image", str(tmp / "nope.jpg"))
    assert_refused(res, "generate", "nope.jpg", "no such file")


# ---------------------------------------------------------------- --debug, and failures no check names


def test_debug_shows_the_traceback(ws, tmp):
    res = run_stage("train", ws, tmp, frames=tmp / "no_frames", debug=True)
    assert res.code != 0
    assert "Traceback" in res.stderr and "MissingInputError" in res.stderr
    assert res.after == res.before


def test_an_unexpected_os_error_is_one_line_too(ws, tmp):
    res = run_stage("train", ws, tmp, params=tmp)  # a folder given as the params file
    assert res.code == 1
    assert "Traceback" not in res.stderr and len(res.lines) == 1, res.stderr
    assert res.lines[0].startswith("vqvideo train: error: Is a directory") and "check the path" in res.lines[0]


# ---------------------------------------------------------------- training that diverges


@pytest.mark.slow
def test_nan_loss_stops_the_cli_with_the_step_and_keeps_the_checkpoint(ws, tmp):
    params = write_params(tmp / "params.yaml", tiny_params_dict(
        train={"steps": 40, "lr": 1e6, "grad_clip": 0.0, "checkpoint_every": 1, "log_every": 1}))
    res = run_stage("train", ws, tmp, params=params)
    assert res.code == 2
    assert "Traceback" not in res.stderr
    errors = [line for line in res.lines if "error:" in line]
    assert len(errors) == 1 and errors[0] == res.lines[-1], res.lines[-5:]
    line = errors[0]
    assert line.startswith("vqvideo train: error: vqvae diverged: loss is")
    step = int(line.split(" at step ")[1].split(";")[0])
    assert "last good checkpoint is kept" in line and "train.lr" in line
    state = torch.load(tmp / "ckpt/vqvae/last.pt", weights_only=True)
    assert state["step"] == step
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert (tmp / "vqvae" / "previous.txt").exists() and not (tmp / "vqvae" / "model.pt").exists()


def test_bad_params_never_reach_the_stage_module(tmp):
    """The params check runs before the stage's imports: no torch in the process that refused."""
    bad = _params(tmp, text="model: {codebook_size: 1}\n")
    code = ("import sys; from vqvideo.cli import main; rc = main(['train', '--params', sys.argv[1]]);"
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False"], out.stdout + out.stderr

