"""The evaluate stage on tiny real models: numbers checked against independent computations,
bit-for-bit repeatability, every picture and table written, and the MLflow run it logs into."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import tiny_params_dict, write_params
from vqvideo.errors import VQVideoError

PLOTS = ["vqvae_convergence.png", "prior_convergence.png", "code_frequency.png", "codebook_pca.png",
         "prediction_by_step.png", "prediction_samples.png", "reconstructions.png", "worst_reconstructions.png",
         "quality_by_step.png", "still_image_by_step.png", "generation_samples.png", "conditioned_samples.png",
         "action_speeds.png"]
OUTPUTS = ["metrics.json", "summary.md", "eval/prediction_by_step.csv", "eval/recon_per_clip.csv",
           "eval/code_usage.csv", "eval/generation_by_step.csv", "eval/conditioned_by_step.csv"]
SUMMARIES = {"vqvae": {"train_seconds": 12.5, "frames_per_second": 321.0},
             "prior": {"train_seconds": 7.25, "frames_per_second": 654.5}}


def _history(path: Path, cols: list[str]) -> Path:
    """A small training history as write_history writes it: train rows often, val rows sometimes."""
    rows = []
    for step in range(2, 21, 2):
        rows.append({"step": step, "split": "train", **{c: 1.0 / step + 0.01 * i for i, c in enumerate(cols)}})
        if step % 10 == 0:
            rows.append({"step": step, "split": "val", **{c: 1.2 / step + 0.01 * i for i, c in enumerate(cols)}})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def make_pipeline(root: Path, tiny_data: Path, tiny_models: Path) -> Path:
    """What train, prior and generate leave behind, in `root`: the models with their run record
    and summaries, both histories, generated clips, and an MLflow run in the current store."""
    from vqvideo import tracking
    from vqvideo.config import parse_params, section_params
    from vqvideo.data.frames import FrameData
    from vqvideo.io import write_json
    from vqvideo.models.store import load_prior, load_vqvae
    from vqvideo.stages.generate import generate

    params = tiny_params_dict()
    write_params(root / "params.yaml", params)
    shutil.copytree(tiny_models, root / "models")
    with tracking.pipeline_run(None, new=True, run_name="pipeline") as run:
        tracking.log_params(section_params(parse_params(params), "collect", "sample", "model", "train", "prior"))
        for name in ("vqvae", "prior"):
            tracking.record_run(root / "models" / name / tracking.RUN_FILE, run)
            write_json(root / "models" / name / "summary.json", SUMMARIES[name])
    _history(root / "reports/train/history.csv", ["loss", "recon_mse", "vq_loss", "perplexity", "active_fraction"])
    _history(root / "reports/prior/history.csv", ["loss", "accuracy"])
    vqvae, meta = load_vqvae(root / "models/vqvae")
    prior, _ = load_prior(root / "models/prior", meta, vqvae)
    generate(parse_params(params).generate, vqvae, prior, FrameData.open(tiny_data / "frames"),
             root / "reports/generated")
    return root


def evaluate_args(root: Path, frames: Path, out: str = "reports", labels: bool = True):  # noqa: ANN201
    """The evaluate command line (an argparse Namespace), parsed by the real CLI parser; with
    `labels`, collect's motion labels beside `frames`."""
    from vqvideo.cli import build_parser

    extra = ["--labels", str(frames.parent / "raw" / "labels.csv")] if labels else []
    return build_parser().parse_args([
        "evaluate", "--params", str(root / "params.yaml"), "--frames", str(frames),
        "--vqvae", str(root / "models/vqvae"), "--prior", str(root / "models/prior"),
        "--train-history", str(root / "reports/train/history.csv"),
        "--prior-history", str(root / "reports/prior/history.csv"),
        "--generated", str(root / "reports/generated"),
        "--metrics", str(root / out / "metrics.json"), "--plots", str(root / out / "plots"),
        "--tables", str(root / out / "eval"), "--summary", str(root / out / "summary.md"), *extra,
    ])


@pytest.fixture(scope="module")
def evaluated(tiny_data, tiny_models, tmp_path_factory):
    """The evaluate stage's main run twice on the same models and data, into its own store."""
    from vqvideo.stages import evaluate

    root = tmp_path_factory.mktemp("pipeline")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the store's artifact folder is resolved from the working directory
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        make_pipeline(root, tiny_data, tiny_models)
        evaluate.main(evaluate_args(root, tiny_data / "frames"))
        first = {name: (root / "reports" / name).read_bytes() for name in OUTPUTS}
        evaluate.main(evaluate_args(root, tiny_data / "frames"))
        import mlflow

        from vqvideo import tracking

        tracking.setup()
        run_id = json.loads((root / "models/prior" / tracking.RUN_FILE).read_text())["run_id"]
        run = mlflow.MlflowClient().get_run(run_id)
        yield {"root": root, "run": run, "uri": tracking.tracking_uri(), "first": first,
               "metrics": json.loads((root / "reports/metrics.json").read_text())}


def _test_clips(tiny_data: Path) -> np.ndarray:
    from vqvideo.data.frames import FrameData

    u8 = np.asarray(FrameData.open(tiny_data / "frames").clips("test"))
    return (u8.astype(np.float32) / np.float32(255)).astype(np.float64)  # the stage's fp32 pixels, exactly


def test_metrics_json_has_the_contract_keys(evaluated):
    m = evaluated["metrics"]
    assert {"mse", "psnr", "ssim", "mse_frame"} <= m["recon"].keys()
    assert {"size", "perplexity", "active_fraction", "dead_codes", "entropy_bits", "max_entropy_bits"} <= m["codebook"].keys()
    assert {"mse_frame", "ssim", "copy_last_mse_frame", "blank_mse_frame", "vq_floor_mse_frame"} <= m["prediction"].keys()
    assert {"vqvae_parameters", "prior_parameters", "vqvae_train_seconds", "prior_train_seconds",
            "vqvae_frames_per_second", "prior_frames_per_second"} <= m["cost"].keys()
    assert {"ink_last", "sharpness_last", "digit_accuracy_last", "real_digit_accuracy_last"} <= m["prediction"].keys()
    assert {"samples", "best_of_n_mse_frame", "mean_mse_frame", "copy_first_mse_frame", "ink_last",
            "sharpness_last", "speed_ratio", "diversity"} <= m["generation"].keys()
    assert {"mse_frame", "copy_first_mse_frame", "digit_accuracy_last", "position_error_last"} <= m["conditioned"].keys()
    assert {"speed_mean", "label_speed_mean", "speed_ratio", "quadrant_min", "into_wall_fraction",
            "real_into_wall_fraction"} <= m["action"].keys()
    assert m["generation"]["samples"] == 3
    assert m["generation"]["best_of_n_mse_frame"] <= m["generation"]["mean_mse_frame"]
    for k in ("digit_accuracy_last", "real_digit_accuracy_last"):
        assert 0 <= m["prediction"][k] <= 1


def test_evaluation_is_bit_for_bit_repeatable(evaluated):
    for name in OUTPUTS:
        second = (evaluated["root"] / "reports" / name).read_bytes()
        assert evaluated["first"][name] == second, f"{name} differs between two evaluations of the same models"


def test_baselines_match_a_direct_numpy_computation(evaluated, tiny_data):
    """Blank and copy-last need no model: recompute them from the clips alone."""
    m, x = evaluated["metrics"], _test_clips(tiny_data)  # x (N, T, C, H, W) in [0, 1]
    tc = m["prediction"]["context_frames"]
    assert tc == 4 and m["prediction"]["predicted_frames"] == x.shape[1] - tc
    future = x[:, tc:]
    blank = (future**2).reshape(*future.shape[:2], -1).sum(-1)  # (N, T - tc) per-frame sums
    copy = ((future - x[:, tc - 1 : tc]) ** 2).reshape(*future.shape[:2], -1).sum(-1)
    assert m["prediction"]["blank_mse_frame"] == pytest.approx(blank.mean(), rel=1e-9)
    assert m["prediction"]["copy_last_mse_frame"] == pytest.approx(copy.mean(), rel=1e-9)
    by_step = pd.read_csv(evaluated["root"] / "reports/eval/prediction_by_step.csv")
    assert by_step.step.tolist() == list(range(1, x.shape[1] - tc + 1))
    assert by_step.blank_mse_frame.to_numpy() == pytest.approx(blank.mean(0), rel=1e-9)
    assert by_step.copy_last_mse_frame.to_numpy() == pytest.approx(copy.mean(0), rel=1e-9)
    # every step has the same number of clips, so the per-step means average to the headline
    assert by_step.prior_mse_frame.mean() == pytest.approx(m["prediction"]["mse_frame"], rel=1e-9)
    assert by_step.vq_floor_mse_frame.mean() == pytest.approx(m["prediction"]["vq_floor_mse_frame"], rel=1e-9)
    assert m["test_clips"] == len(x)


def test_reconstruction_and_codebook_numbers_against_the_model(evaluated, tiny_data):
    from vqvideo.models.store import load_vqvae

    m, x = evaluated["metrics"], _test_clips(tiny_data)
    vqvae, _ = load_vqvae(evaluated["root"] / "models/vqvae")
    frames = torch.from_numpy(x.reshape(-1, *x.shape[2:])).float()  # (N*T, C, H, W)
    with torch.no_grad():
        codes = vqvae.encode_indices(frames)
        recon = vqvae.decode_indices(codes).double().numpy()
    mse = float(((recon - frames.double().numpy()) ** 2).mean())
    r = m["recon"]
    assert r["mse"] == pytest.approx(mse, rel=1e-6)
    assert r["psnr"] == pytest.approx(10 * math.log10(1 / r["mse"]), rel=1e-12)
    assert r["mse_frame"] == pytest.approx(r["mse"] * np.prod(x.shape[2:]), rel=1e-9)  # sum = mean * C*H*W
    assert 0 < r["ssim"] <= 1
    usage = pd.read_csv(evaluated["root"] / "reports/eval/code_usage.csv")
    assert usage["count"].tolist() == np.bincount(codes.flatten().numpy(), minlength=32).tolist()
    c = m["codebook"]
    assert c["size"] == 32 and c["max_entropy_bits"] == 5.0
    assert c["active_codes"] == int((usage["count"] > 0).sum()) == c["size"] - c["dead_codes"]
    assert c["active_fraction"] == c["active_codes"] / 32
    assert c["perplexity"] == pytest.approx(2 ** c["entropy_bits"], rel=1e-12)


def test_cost_comes_from_the_models_and_their_training_summaries(evaluated):
    from vqvideo.models.store import load_vqvae, num_parameters

    cost = evaluated["metrics"]["cost"]
    vqvae, _ = load_vqvae(evaluated["root"] / "models/vqvae")
    assert cost["vqvae_parameters"] == num_parameters(vqvae)
    assert cost["total_parameters"] == cost["vqvae_parameters"] + cost["prior_parameters"]
    assert cost["vqvae_train_seconds"] == 12.5 and cost["prior_frames_per_second"] == 654.5


def test_every_picture_is_a_real_png(evaluated):
    plots = evaluated["root"] / "reports/plots"
    assert sorted(p.name for p in plots.glob("*.png")) == sorted(PLOTS)
    for name in PLOTS:
        with Image.open(plots / name) as im:
            im.verify()
        with Image.open(plots / name) as im:
            assert im.width >= 400 and im.height >= 200, name
            # not a blank canvas: a real figure has many distinct colours
            assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50, name


def test_summary_links_resolve_relative_to_the_summary(evaluated):
    summary = evaluated["root"] / "reports/summary.md"
    text = summary.read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert not [lnk for lnk in links if lnk.startswith("/") or "://" in lnk]  # relative: works on any git host
    for lnk in links:
        assert (summary.parent / lnk).exists(), f"summary.md links to missing {lnk}"
    for name in PLOTS:
        assert f"plots/{name}" in links
    assert any(lnk.endswith(".gif") for lnk in links) and any(lnk.endswith(".mp4") for lnk in links)
    m = evaluated["metrics"]["prediction"]
    assert f"| prior (argmax) | {m['mse_frame']:.1f} |" in text
    assert f"| blank frame (all zeros) | {m['blank_mse_frame']:.1f} |" in text


def test_mlflow_run_has_the_same_metrics_under_the_same_names(evaluated):
    from vqvideo.tracking import flatten_metrics

    run = evaluated["run"]
    flat = flatten_metrics(evaluated["metrics"])
    assert {"recon.psnr", "codebook.perplexity", "prediction.mse_frame", "cost.vqvae_parameters"} <= flat.keys()
    for key, value in flat.items():
        assert run.data.metrics[key] == pytest.approx(value, rel=1e-12), key
    assert run.data.params["evaluate.context_frames"] == "4"


def test_mlflow_run_has_per_step_curves_and_every_file(evaluated):
    import mlflow

    client = mlflow.MlflowClient(evaluated["uri"])
    run_id = evaluated["run"].info.run_id
    hist = client.get_metric_history(run_id, "eval/prior_mse_frame")
    by_step = pd.read_csv(evaluated["root"] / "reports/eval/prediction_by_step.csv")
    # evaluate ran twice into the same run: each step logged twice with the same value
    got = sorted({(h.step, h.value) for h in hist})
    assert got == [(int(s), pytest.approx(v)) for s, v in zip(by_step.step, by_step.prior_mse_frame)]
    names = {f.path for f in client.list_artifacts(run_id, "evaluate")}
    assert {"evaluate/metrics.json", "evaluate/summary.md", "evaluate/plots", "evaluate/eval"} <= names
    pngs = {Path(f.path).name for f in client.list_artifacts(run_id, "evaluate/plots")}
    assert set(PLOTS) <= pngs


def test_worker_is_deterministic_and_leaves_the_global_rng_alone(tiny_data, tiny_models):
    from vqvideo.config import EvaluateConfig
    from vqvideo.data.frames import FrameData
    from vqvideo.models.store import load_prior, load_vqvae
    from vqvideo.stages.evaluate import evaluate_models

    vqvae, meta = load_vqvae(tiny_models / "vqvae")
    prior, _ = load_prior(tiny_models / "prior", meta, vqvae)
    clips = FrameData.open(tiny_data / "frames").clips("test")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = evaluate_models(EvaluateConfig(context_frames=4, batch_size=4), vqvae, prior, clips)
    assert torch.equal(torch.get_rng_state(), state)
    b = evaluate_models(EvaluateConfig(context_frames=4, batch_size=4), vqvae, prior, clips)
    assert json.dumps(a.metrics) == json.dumps(b.metrics)
    assert a.by_step.equals(b.by_step) and torch.equal(a.predictions, b.predictions)
    # another batch size regroups the convolutions: equal up to float32 rounding, nothing more
    c = evaluate_models(EvaluateConfig(context_frames=4, batch_size=3), vqvae, prior, clips)
    assert c.metrics["recon"]["mse"] == pytest.approx(a.metrics["recon"]["mse"], rel=1e-5)
    assert c.metrics["codebook"]["size"] == a.metrics["codebook"]["size"]


def test_context_as_long_as_the_clip_is_refused(tiny_data, tiny_models):
    from vqvideo.config import EvaluateConfig
    from vqvideo.data.frames import FrameData
    from vqvideo.models.store import load_prior, load_vqvae
    from vqvideo.stages.evaluate import evaluate_models

    vqvae, meta = load_vqvae(tiny_models / "vqvae")
    prior, _ = load_prior(tiny_models / "prior", meta, vqvae)
    clips = FrameData.open(tiny_data / "frames").clips("test")
    with pytest.raises(VQVideoError, match=r"evaluate.context_frames \(8\) must be below the clip length \(8\)"):
        evaluate_models(EvaluateConfig(context_frames=8), vqvae, prior, clips)


def test_missing_run_record_stops_before_any_work(evaluated, tiny_data, tmp_path):
    from vqvideo import tracking
    from vqvideo.stages import evaluate

    root = tmp_path / "copy"
    shutil.copytree(evaluated["root"] / "models", root / "models")
    shutil.copytree(evaluated["root"] / "reports/train", root / "reports/train")
    shutil.copytree(evaluated["root"] / "reports/prior", root / "reports/prior")
    shutil.copy(evaluated["root"] / "params.yaml", root / "params.yaml")
    (root / "models/prior" / tracking.RUN_FILE).unlink()
    with pytest.raises(VQVideoError, match="MLflow run record not found .*run `dvc repro prior` first"):
        evaluate.main(evaluate_args(root, tiny_data / "frames"))
    assert not (root / "reports/metrics.json").exists()


def test_infinite_psnr_is_written_as_null():
    from vqvideo.stages.evaluate import finite

    out = finite({"recon": {"psnr": math.inf, "mse": 0.0}, "n": 3})
    assert out == {"recon": {"psnr": None, "mse": 0.0}, "n": 3}
    assert json.loads(json.dumps(out))["recon"]["psnr"] is None


def test_pictures_cope_with_odd_inputs(tmp_path):
    """RGB frames, a history without val rows, a codebook with every code used, 1-d codes."""
    from vqvideo import plots

    gen = torch.Generator().manual_seed(0)
    rgb = [("a", torch.rand(5, 3, 16, 16, generator=gen)), ("b", torch.rand(3, 3, 16, 16, generator=gen))]
    plots.clip_rows(rgb, tmp_path / "rgb.png", "rgb", context=2)
    hist = pd.DataFrame({"step": [1, 2, 3], "split": "train", "loss": [3.0, 2.0, 1.0], "accuracy": [0.1, 0.2, 0.3]})
    plots.convergence(hist, ["loss", "accuracy", "not_logged"], "train only", tmp_path / "conv.png")
    plots.code_frequency(np.array([3, 1, 2, 5]), tmp_path / "freq.png")
    plots.codebook_projection(np.arange(6.0).reshape(6, 1), np.array([0, 1, 2, 0, 4, 9]), tmp_path / "pca.png")
    for name in ("rgb.png", "conv.png", "freq.png", "pca.png"):
        with Image.open(tmp_path / name) as im:
            assert im.width > 100, name
    with pytest.raises(ValueError, match="history has none of the columns"):
        plots.convergence(hist, ["recon_mse"], "nothing", tmp_path / "none.png")


def test_without_labels_the_digit_and_action_keys_are_absent(evaluated, tiny_data):
    """Footage has no labels: the digit and action measures are left out, not written as null."""
    from vqvideo.stages import evaluate

    root = evaluated["root"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", evaluated["uri"])
        evaluate.main(evaluate_args(root, tiny_data / "frames", out="nolabels", labels=False))
    m = json.loads((root / "nolabels/metrics.json").read_text())
    assert "digit_accuracy_last" not in m["prediction"] and "conditioned" not in m
    assert {"ink_last", "sharpness_last"} <= m["prediction"].keys() and "speed_ratio" in m["generation"]
    assert not (root / "nolabels/plots/conditioned_samples.png").exists()
