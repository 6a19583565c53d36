"""The generate stage on tiny real models: one prior pass per generated frame, the sampling
options, binarising, the files (grid PNG, GIF, browser VP9 MP4) read back, the MLflow run, the
staging folder, and `vqvideo generate --image` on images the tests write."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_params_dict, write_params
from vqvideo.errors import VQVideoError

PAD = 2  # generate.GRID_PAD, written out: the file sizes below are what a user sees


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models(tiny_models):
    from vqvideo.models.store import load_prior, load_vqvae

    vqvae, meta = load_vqvae(tiny_models / "vqvae")
    prior, _ = load_prior(tiny_models / "prior", meta, vqvae)
    return vqvae, prior


@pytest.fixture(scope="module")
def test_clips(tiny_data) -> torch.Tensor:
    from vqvideo.data.frames import FrameData

    u8 = np.asarray(FrameData.open(tiny_data / "frames").clips("test"))
    return torch.from_numpy(u8.copy()).float() / 255.0  # (N, T, C, H, W)


def gen_cfg(**kw):
    from vqvideo.config import parse_params

    return parse_params(tiny_params_dict(generate=kw)).generate


def run_animate(models, clips: torch.Tensor, tc: int = 1, **kw) -> torch.Tensor:
    from vqvideo.stages.generate import animate

    vqvae, prior = models
    return animate(vqvae, prior, clips[:, :tc], clips.shape[1], gen_cfg(context_frames=tc, **kw))


@pytest.fixture(scope="module")
def rgb_models(tmp_path_factory) -> Path:
    """An RGB VQ-VAE and its prior with random weights, saved as the stages save them: enough to
    check that a gray image goes through a colour model."""
    from vqvideo.config import parse_params
    from vqvideo.models.prior import CodePrior
    from vqvideo.models.store import save_model
    from vqvideo.models.vqvae import VQVAE

    torch.manual_seed(0)
    params = parse_params(tiny_params_dict(sample={"channels": 3}))
    vqvae = VQVAE(params.model, channels=3).eval()
    side = vqvae.latent_size(params.sample.size)
    prior = CodePrior(params.prior, vqvae, (side, side)).eval()
    root = tmp_path_factory.mktemp("rgb_models")
    save_model(root / "vqvae", "vqvae", vqvae, params.model.model_dump(mode="json"),
               {"channels": 3, "image_size": params.sample.size, "fingerprint": "rgb"})
    save_model(root / "prior", "prior", prior, params.prior.model_dump(mode="json"),
               {"shape": prior.shape_meta(), "vqvae_fingerprint": "rgb", "fingerprint": "rgb-prior"})
    return root


# ---------------------------------------------------------------- the rollout


@pytest.mark.parametrize("tc", [1, 3])
def test_one_batched_encoder_pass_per_generated_frame(models, test_clips, tc):
    """Each generated frame is composited, then encoded into codes once for the whole batch."""
    vqvae, prior = models
    clips = test_clips[:2]  # 2 inputs x 3 samples: one batch of 6 sequences
    calls = []
    hook = vqvae.encoder.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    try:
        out = run_animate(models, clips, tc, num_samples=3)
    finally:
        hook.remove()
    t = clips.shape[1]
    assert out.shape == (2, 3, t, *clips.shape[2:])
    assert calls[0] == 2 * tc  # the given frames, once per input
    assert calls[1:] == [2 * 3] * (t - tc)  # then one pass per generated frame carrying every sample
    # the given frames are kept as they were, in every sample
    assert torch.equal(out[:, :, :tc], clips[:, None, :tc].expand(-1, 3, -1, -1, -1, -1))
    assert out.min() >= 0 and out.max() <= 1


def test_sampling_gives_different_motions_argmax_does_not(models, test_clips):
    clips = test_clips[:2]
    sampled = run_animate(models, clips, sampling="sample", num_samples=3)
    assert not torch.equal(sampled[:, 0, 1:], sampled[:, 1, 1:])
    assert not torch.equal(sampled[:, 1, 1:], sampled[:, 2, 1:])
    greedy = run_animate(models, clips, sampling="argmax", num_samples=3)
    assert torch.equal(greedy[:, 0], greedy[:, 1]) and torch.equal(greedy[:, 1], greedy[:, 2])
    # top_k=1 draws the argmax code; with two given frames no motion is drawn, so it is argmax
    top1 = run_animate(models, clips, tc=2, sampling="sample", top_k=1, num_samples=3, seed=7)
    assert torch.equal(top1, run_animate(models, clips, tc=2, sampling="argmax", num_samples=3))


def test_a_still_image_gets_a_drawn_motion_per_sample(models, test_clips):
    """From one frame the codes may be argmax, yet samples move differently: the motion is drawn."""
    moved = run_animate(models, test_clips[:2], sampling="sample", top_k=1, num_samples=3, seed=7)
    assert not torch.equal(moved[:, 0, 1:], moved[:, 1, 1:])


def test_seed_fixes_the_samples(models, test_clips):
    clips = test_clips[:2]
    a = run_animate(models, clips, sampling="sample", temperature=1.5, top_k=8, seed=3)
    b = run_animate(models, clips, sampling="sample", temperature=1.5, top_k=8, seed=3)
    c = run_animate(models, clips, sampling="sample", temperature=1.5, top_k=8, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_pick_codes_top_k_and_temperature():
    from vqvideo.models.sampling import pick_codes

    logits = torch.randn(4000, 10, generator=torch.Generator().manual_seed(0)) * 2
    best = logits.argmax(-1)
    assert torch.equal(pick_codes(logits, "argmax", 1.0, 0, None), best)
    g = torch.Generator().manual_seed(1)
    top3 = logits.topk(3, dim=-1).indices
    drawn = pick_codes(logits, "sample", 1.0, 3, g)
    assert (drawn[:, None] == top3).any(-1).all()  # nothing outside the top 3
    assert len(drawn.unique()) == 10  # yet across rows every code was reachable
    hit = {t: (pick_codes(logits, "sample", t, 0, g) == best).float().mean().item() for t in (0.1, 1.0, 10.0)}
    assert hit[0.1] > 0.9 and hit[0.1] > hit[1.0] > hit[10.0]  # colder: closer to argmax


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, 0), (0.5, 0), (2.0, 4)])
def test_pick_codes_draws_follow_the_softmax(temperature, top_k):
    from vqvideo.models.sampling import pick_codes

    row = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 1.5, -3.0, 0.2])
    n = 40000
    drawn = pick_codes(row.expand(n, -1), "sample", temperature, top_k, torch.Generator().manual_seed(0))
    scaled = row / temperature
    if top_k:
        scaled = scaled.masked_fill(scaled < scaled.topk(top_k).values[-1], float("-inf"))
    want = scaled.softmax(-1)
    got = torch.bincount(drawn, minlength=len(row)).float() / n
    assert (got - want).abs().max() < 0.012  # 5 standard errors at p = 0.5 and n = 40000
    assert (got[want == 0] == 0).all()


def test_binarize_leaves_only_black_and_white(models, test_clips, tiny_data, tmp_path):
    from vqvideo.data.frames import FrameData
    from vqvideo.stages.generate import generate

    out = run_animate(models, test_clips[:2], binarize=True)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    vqvae, prior = models
    generate(gen_cfg(binarize=True, num_inputs=1), vqvae, prior, FrameData.open(tiny_data / "frames"), tmp_path)
    (png,) = tmp_path.glob("*.png")
    assert set(np.unique(np.asarray(Image.open(png))).tolist()) <= {0, 255}
    (gif,) = tmp_path.glob("*.gif")
    with Image.open(gif) as im:
        for i in range(im.n_frames):
            im.seek(i)
            assert set(np.unique(np.asarray(im.convert("L"))).tolist()) <= {0, 255}


# ---------------------------------------------------------------- files


def check_video_files(stem: Path, rows: int, frames: int, size: int) -> None:
    """The grid PNG is rows x frames tiles; the GIF and the VP9 MP4 hold `frames` frames of the
    rows side by side, upscaled to at least 192 px high, sizes even."""
    with Image.open(stem.with_suffix(".png")) as im:
        assert im.size == (frames * (size + PAD) + PAD, rows * (size + PAD) + PAD)
    scale = -(-192 // (size + 2 * PAD))
    vh = (size + 2 * PAD) * scale // 2 * 2
    vw = (rows * (size + PAD) + PAD) * scale // 2 * 2
    with Image.open(stem.with_suffix(".gif")) as im:
        assert im.size == (vw, vh)
        # Pillow stores a run of identical frames once with their summed duration; the clip's
        # length in time is what must hold
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
        assert im.n_frames <= frames  # GIF keeps centiseconds: each stored frame rounds by < 10 ms
        assert abs(sum(durations) - frames * 1000 / 8.0) <= 10 * im.n_frames
    mp4 = stem.with_suffix(".mp4")
    head = mp4.read_bytes()
    assert head[4:8] == b"ftyp" and b"vp09" in head  # the MP4 sample entry browsers look for
    cap = cv2.VideoCapture(str(mp4))
    try:
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little") == b"VP90"  # FFmpeg's VP9 tag
        decoded = []
        while (ok_frame := cap.read())[0]:
            decoded.append(ok_frame[1])
    finally:
        cap.release()
    assert len(decoded) == frames
    assert decoded[0].shape[:2] == (vh, vw)


def tile(grid: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    y, x = PAD + row * (size + PAD), PAD + col * (size + PAD)
    return grid[y : y + size, x : x + size, 0]


def test_generate_writes_grid_gif_and_browser_mp4_per_input(models, test_clips, tiny_data, tmp_path):
    from vqvideo.data.frames import FrameData
    from vqvideo.stages.generate import generate, pick_inputs

    vqvae, prior = models
    cfg = gen_cfg(num_inputs=2, num_samples=2, context_frames=2)
    paths = generate(cfg, vqvae, prior, FrameData.open(tiny_data / "frames"), tmp_path)
    picks = pick_inputs(len(test_clips), 2)
    stems = [tmp_path / f"test_{p:04d}" for p in picks]
    assert sorted(paths) == sorted(s.with_suffix(e) for s in stems for e in (".png", ".gif", ".mp4"))
    n, t, _, size, _ = test_clips.shape
    for pick, stem in zip(picks, stems):
        check_video_files(stem, rows=2 + 2, frames=t, size=size)
        grid = np.asarray(Image.open(stem.with_suffix(".png")).convert("RGB"))
        real = (test_clips[pick, :, 0] * 255).round().numpy().astype(np.uint8)  # (T, H, W)
        for f in range(t):
            assert np.array_equal(tile(grid, 0, f, size), real[f])  # row 0: the real clip
        recon = (vqvae.reconstruct(test_clips[pick])[:, 0] * 255).round().numpy().astype(np.uint8)
        assert np.abs(tile(grid, 1, t - 1, size).astype(int) - recon[t - 1]).max() <= 1  # row 1: reconstruction
        for s in (2, 3):  # samples: they start from the real context frames
            assert np.array_equal(tile(grid, s, 0, size), real[0])
            assert np.array_equal(tile(grid, s, 1, size), real[1])


def test_generate_refuses_context_as_long_as_the_clip(models, tiny_data, tmp_path):
    from vqvideo.data.frames import FrameData
    from vqvideo.stages.generate import generate

    vqvae, prior = models
    with pytest.raises(VQVideoError, match="context_frames"):
        generate(gen_cfg(context_frames=8), vqvae, prior, FrameData.open(tiny_data / "frames"), tmp_path)


# ---------------------------------------------------------------- the stage's main: MLflow, staging


@pytest.fixture
def pipeline(tiny_models, tmp_path):
    """Models with the pipeline's MLflow run record, as train and prior leave them."""
    from vqvideo import tracking

    root = tmp_path / "repo"
    shutil.copytree(tiny_models, root / "models")
    with tracking.pipeline_run(None, new=True, run_name="pipeline") as run:
        for name in ("vqvae", "prior"):
            tracking.record_run(root / "models" / name / tracking.RUN_FILE, run)
    return root, run.info.run_id


def cli(root: Path, tiny_data: Path, *extra: str, **generate_params) -> int:
    from vqvideo.cli import main

    params = write_params(root / "params.yaml", tiny_params_dict(generate=generate_params))
    return main(["generate", "--params", str(params), "--frames", str(tiny_data / "frames"),
                 "--vqvae", str(root / "models/vqvae"), "--prior", str(root / "models/prior"), *extra])


def test_main_logs_every_file_to_the_pipeline_run(pipeline, tiny_data):
    import mlflow

    from vqvideo import tracking

    root, run_id = pipeline
    out = root / "reports/generated"
    assert cli(root, tiny_data, "--out", str(out)) == 0
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 6  # 2 inputs x (png, gif, mp4)
    client = mlflow.MlflowClient(tracking.tracking_uri())
    logged = sorted(Path(a.path).name for a in client.list_artifacts(run_id, "generated"))
    assert logged == files
    assert client.get_run(run_id).data.params["generate.num_samples"] == "2"


def test_failed_generate_leaves_previous_outputs(pipeline, tiny_data, capsys):
    root, _ = pipeline
    out = root / "reports/generated"
    assert cli(root, tiny_data, "--out", str(out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert cli(root, tiny_data, "--out", str(out), context_frames=8) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "context_frames" in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["generated"]  # no staging folder left
    # a successful re-run replaces the folder whole: no clip of the previous inputs stays
    assert cli(root, tiny_data, "--out", str(out), num_inputs=1) == 0
    assert len(list(out.iterdir())) == 3


def test_image_flags_need_image(pipeline, tiny_data, capsys):
    root, _ = pipeline
    assert cli(root, tiny_data, "--out", str(root / "g"), "--num-samples", "4") == 2
    assert "--image" in capsys.readouterr().err
    assert not (root / "g").exists()


# ---------------------------------------------------------------- --image


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) RGB uint8: blobs and stripes, like a photo more than like noise."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    return np.clip(img.astype(int) + (60 * np.sin(np.arange(w) / 4.0))[None, :, None], 0, 255).astype(np.uint8)


def write_image(path: Path, rgb: np.ndarray, gray: bool = False) -> Path:
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if gray else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), img)
    return path


@pytest.mark.parametrize(
    ("kind", "name", "gray", "shape"),
    [("gray", "digit.png", True, (90, 120)),  # gray image, gray model, landscape
     ("gray", "photo café.jpg", False, (150, 100)),  # colour JPEG into a gray model, portrait
     ("rgb", "scan.png", True, (64, 64)),  # gray image into a colour model
     ("rgb", "photo.jpg", False, (200, 300))],
)
def test_image_becomes_clips(kind, name, gray, shape, tiny_models, rgb_models, tiny_data, tmp_path):
    from vqvideo.cli import main

    models = tiny_models if kind == "gray" else rgb_models
    image = write_image(tmp_path / name, texture(*shape), gray=gray)
    out = tmp_path / "out"
    params = write_params(tmp_path / "params.yaml", tiny_params_dict())
    rc = main(["generate", "--params", str(params), "--vqvae", str(models / "vqvae"),
               "--prior", str(models / "prior"), "--image", str(image), "--out", str(out),
               "--length", "6", "--num-samples", "3", "--sampling", "sample", "--top-k", "4"])
    assert rc == 0
    stem = out / f"image_{Path(name).stem.replace(' ', '_')}"
    assert sorted(out.iterdir()) == sorted(stem.with_suffix(e) for e in (".gif", ".mp4", ".png"))
    check_video_files(stem, rows=3, frames=6, size=64)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    # every sample starts from the image itself, cropped and resized as the data was
    from vqvideo.stages.generate import load_image

    grid = np.asarray(Image.open(stem.with_suffix(".png")).convert("RGB"))
    first = grid[PAD : PAD + 64, PAD : PAD + 64]  # (64, 64, 3)
    want = (load_image(image, 64, 3 if kind == "rgb" else 1)[0] * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(first, np.broadcast_to(want, first.shape))
    assert (first[..., 0] != first[..., 1]).any() == (kind == "rgb" and not gray)  # colour only from colour


def test_load_image_crops_the_centre_like_the_data(tmp_path):
    from vqvideo.stages.generate import load_image

    img = np.zeros((64, 128), np.uint8)
    img[:, :32] = img[:, 96:] = 255  # white bands left and right, outside the centre square
    x = load_image(write_image(tmp_path / "wide.png", cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)), 32, 1)
    assert x.shape == (1, 1, 32, 32) and x.max() < 0.05
    x = load_image(write_image(tmp_path / "tall.png", cv2.cvtColor(img.T.copy(), cv2.COLOR_GRAY2RGB)), 32, 3)
    assert x.shape == (1, 3, 32, 32) and x.max() < 0.05


def _bad_inputs(d: Path) -> dict[str, tuple[Path, str]]:
    (d / "text.png").write_text("<html>404 Not Found</html>\n")
    (d / "empty.jpg").write_bytes(b"")
    (d / "folder.png").mkdir()
    write_image(d / "tiny.png", texture(10, 12))
    return {"not an image": (d / "text.png", "cannot be read as an image"),
            "empty": (d / "empty.jpg", "cannot be read as an image"),
            "missing": (d / "nope.png", "not found|no such file"),
            "a folder": (d / "folder.png", "not a file|no such file"),
            "too small": (d / "tiny.png", "too small")}


@pytest.mark.parametrize("case", ["not an image", "empty", "missing", "a folder", "too small"])
def test_bad_image_is_one_clear_error_and_writes_nothing(case, tiny_models, tmp_path, capsys):
    from vqvideo.cli import main

    image, message = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out" / "clips"
    params = write_params(tmp_path / "params.yaml", tiny_params_dict())
    before = sorted(tmp_path.rglob("*"))
    rc = main(["generate", "--params", str(params), "--vqvae", str(tiny_models / "vqvae"),
               "--prior", str(tiny_models / "prior"), "--image", str(image), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("vqvideo generate: error:") and re.search(message, err[0]), err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even the folder


def test_benchmark_rows_run_on_tiny_models(tmp_path):
    """bench/bench_generate.py's rows(), for the script that gathers every benchmark."""
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "bench"))
    try:
        import bench_generate
    finally:
        sys.path.remove(str(REPO / "bench"))
    params = write_params(tmp_path / "params.yaml", tiny_params_dict())
    rows = bench_generate.rows(repeat=1, params_path=params)
    assert [r.unit for r in rows] == ["frames/s", "frames/s", "ms"]
    assert all(r.value > 0 and r.ref_value > 0 for r in rows)


# ---------------------------------------------------------------- motion a user chooses


def _steer(tmp_path: Path, models: Path, image: Path, *flags: str) -> tuple[int, Path]:
    from vqvideo.cli import main

    out = tmp_path / "steered"
    params = write_params(tmp_path / "params.yaml", tiny_params_dict())
    rc = main(["generate", "--params", str(params), "--vqvae", str(models / "vqvae"), "--prior",
               str(models / "prior"), "--image", str(image), "--out", str(out), "--length", "6",
               "--num-samples", "1", "--sampling", "argmax", *flags])
    return rc, out


def _frames(stem: Path, size: int = 64) -> list[np.ndarray]:
    """The generated frames of the first sample row, gray float, from the grid PNG."""
    grid = np.asarray(Image.open(stem.with_suffix(".png")).convert("L")).astype(np.float32) / 255
    n = (grid.shape[1] - PAD) // (size + PAD)
    return [grid[PAD : PAD + size, PAD + i * (size + PAD) : PAD + i * (size + PAD) + size] for i in range(n)]


def test_pan_moves_a_picture_by_that_many_pixels_a_frame(models, tmp_path):
    """--pan 2,0 on a photo-like texture: phase correlation between the composited frames says
    2 px a frame (the frames before the VQ-VAE's codes: the tiny test VQ-VAE blurs all detail)."""
    from vqvideo.models import layers as Ly
    from vqvideo.stages.generate import load_image
    from vqvideo.steering import picture_motion

    vqvae, prior = models
    image = write_image(tmp_path / "photo.png", texture(96, 96), gray=True)
    motion = picture_motion([], "3,0", (96, 96), 64)  # 3 px of the picture are 2 px of the model's frame
    assert motion.pan == (2.0, 0.0)
    x = load_image(image, 64, 1)
    plan = prior.plan(vqvae.encode_indices(x)[:, None], 5, pan=torch.tensor([motion.pan]), images=x[:, None])
    assert bool(plan["layers"].scene[0])
    torch.testing.assert_close(plan["disp"][0, 0, :, 0], torch.arange(6.0) * 2, atol=0.5, rtol=0)  # its steps
    frames = [Ly.render(x, plan["layers"], plan["disp"][:, :, k])[0, 0].double().numpy() for k in range(6)]
    window = cv2.createHanningWindow((64, 64), cv2.CV_64F)  # the mirrored borders do not vote
    shifts = [cv2.phaseCorrelate(frames[i], frames[i + 1], window)[0] for i in range(5)]
    assert np.all(np.abs(np.array([s[0] for s in shifts]) - 2.0) <= 0.4), shifts  # within 20%
    assert np.all(np.abs([s[1] for s in shifts]) <= 0.4), shifts


def test_a_drag_moves_the_object_under_it_and_not_the_other(models, tmp_path):
    """One --drag on a picture of two blobs (composited frames, as for the pan)."""
    from vqvideo.models import layers as Ly
    from vqvideo.stages.generate import load_image
    from vqvideo.steering import picture_motion

    vqvae, prior = models
    img = np.zeros((128, 128), np.uint8)  # two bright blobs, far apart, on black: two layers
    img[20:44, 16:40] = 255
    img[80:104, 84:108] = 200
    image = tmp_path / "blobs.png"
    assert cv2.imwrite(str(image), img)
    motion = picture_motion(["28,32:6,4"], None, img.shape, 64)  # 3, 2 px a frame in the model's 64 px
    assert motion.hints == [[(13.75, 15.75, 3.0, 2.0)]]
    x = load_image(image, 64, 1)
    plan = prior.plan(vqvae.encode_indices(x)[:, None], 5, hints=motion.hints, images=x[:, None])
    frames = [Ly.render(x, plan["layers"], plan["disp"][:, :, k])[0, 0].numpy() for k in range(6)]

    def centre(f: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        ys, xs = np.nonzero(f[rows, cols] > 0.3)
        return np.array([xs.mean() + cols.start, ys.mean() + rows.start])

    first = centre(frames[-1], slice(0, 40), slice(0, 40)) - centre(frames[0], slice(0, 40), slice(0, 40))
    other = centre(frames[-1], slice(36, 64), slice(36, 64)) - centre(frames[0], slice(36, 64), slice(36, 64))
    assert np.linalg.norm(first - np.array([15.0, 10.0])) < 2.5, first  # 5 frames x (3, 2), give or take
    assert np.linalg.norm(other) < np.linalg.norm(first) / 4, other


@pytest.mark.parametrize(("flags", "message"), [
    (["--drag", "20,30"], r"--drag '20,30' is not X,Y:DX,DY"),
    (["--drag", "a,b:c,d"], r"is not X,Y:DX,DY"),
    (["--drag", "200,30:1,0"], r"outside the 120x90 picture"),
    (["--drag", "2,30:1,0"], r"outside the centred square the model sees \(x 15\.\.104"),
    (["--pan", "2"], r"--pan '2' is not DX,DY"),
])
def test_bad_motion_is_one_clear_error_and_writes_nothing(flags, message, tiny_models, tmp_path, capsys):
    image = write_image(tmp_path / "digit.png", texture(90, 120), gray=True)
    before = sorted(tmp_path.rglob("*"))
    rc, out = _steer(tmp_path, tiny_models, image, *flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not out.exists() and sorted(p for p in tmp_path.rglob("*") if p.name != "params.yaml") == \
        [p for p in before if p.name != "params.yaml"]


def test_condition_labels_moves_each_digit_as_labelled(models, tiny_data, tmp_path):
    import pandas as pd

    from vqvideo.data.frames import FrameData
    from vqvideo.stages.generate import generate

    vqvae, prior = models
    data = FrameData.open(tiny_data / "frames")
    labels = pd.read_csv(tiny_data / "raw" / "labels.csv")
    cfg = gen_cfg(condition="labels", num_inputs=1, num_samples=2, sampling="argmax")
    steered = generate(cfg, vqvae, prior, data, tmp_path / "a", labels)
    assert len(steered) == 3
    with pytest.raises(VQVideoError, match="no motion labels"):
        generate(cfg, vqvae, prior, data, tmp_path / "b", labels.iloc[:0])
