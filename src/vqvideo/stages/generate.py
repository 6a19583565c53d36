"""generate: turn the first frame(s) of test clips, or your own still image, into clips.

The article's goal: from a still image, the prior predicts how its codes move frame after frame
and the VQ-VAE decodes them into a video. The rollout is one prior forward pass per generated
frame for the whole batch (every input times every sample); the LSTM state carries the past, so
no frame is fed twice and no code is drawn in a per-token loop.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torchvision.utils import make_grid

from vqvideo.config import GenerateConfig, Params
from vqvideo.data.clips import crop_resize
from vqvideo.data.frames import FrameData, to_float, to_tensor
from vqvideo.data.video import BROWSER, write_gif, write_video
from vqvideo.errors import VQVideoError
from vqvideo.models.prior import CodePrior
from vqvideo.models.vqvae import VQVAE, decode_codes
from vqvideo.plots import image_grid
from vqvideo.steering import Motion, labelled_motion, picture_motion

log = logging.getLogger(__name__)

GRID_PAD = 2  # px between the tiles of the .png grid and of each video frame
VIDEO_MIN_HEIGHT = 192  # a 64 px strip is a stamp in a browser: upscale, nearest neighbour
MIN_IMAGE_FRACTION = 4  # an image side below size / 4 would be blown up more than 4x: refused
IMAGE_OUT = Path("generated")  # --image outputs: outside reports/generated, which DVC owns


# ---------------------------------------------------------------- the rollout


def binarize_frames(x: torch.Tensor) -> torch.Tensor:
    """The article's option for black-and-white data: each pixel becomes 0 or 1 at 0.5."""
    return (x > 0.5).to(x.dtype)


@torch.no_grad()
def animate(
    vqvae: VQVAE, prior: CodePrior, context: torch.Tensor, length: int, cfg: GenerateConfig,
    *, motion: Motion | None = None,
) -> torch.Tensor:
    """context (B, Tc, C, H, W) float -> (B, S, length, C, H, W): S samples per input, batched.

    The first Tc frames of every sample are the given frames themselves (not their
    reconstruction); the rest are the prior's rollout, decoded. `cfg.seed` fixes the draws.
    `motion` steers a still image (drags, a pan, or labelled objects); what it leaves free is
    drawn from the action prior (`sampling: sample`) or stays still (`argmax`).
    """
    b, tc = context.shape[:2]
    if not 1 <= tc < length:
        raise VQVideoError(f"generate: {tc} context frame(s) leave nothing to generate in a {length}-frame clip")
    s = cfg.num_samples
    device = next(vqvae.parameters()).device
    context = context.to(device)
    codes = vqvae.encode_indices(context.flatten(0, 1))  # (B*Tc, h, w)
    codes = codes.view(b, tc, *codes.shape[1:]).repeat_interleave(s, dim=0)  # (B*S, Tc, h, w)
    # A CPU generator: the same seed gives the same clips on a CPU and on a GPU.
    g = torch.Generator().manual_seed(cfg.seed)
    steer = motion.expand(s) if motion is not None else {}
    rolled = prior.rollout(codes, length - tc, sampling=cfg.sampling, temperature=cfg.temperature,
                           top_k=cfg.top_k, generator=g, images=context.repeat_interleave(s, dim=0),
                           **steer)  # (B*S, length, h, w)
    new = decode_codes(vqvae, rolled[:, tc:])  # (B*S, length - Tc, C, H, W): only what is new
    frames = torch.cat([context.repeat_interleave(s, dim=0).to(new.dtype), new], dim=1)
    if cfg.binarize:
        frames = binarize_frames(frames)
    return frames.view(b, s, *frames.shape[1:]).cpu()


# ---------------------------------------------------------------- files


def grid_tiles(rows: list[torch.Tensor], pad: int = GRID_PAD) -> np.ndarray:
    """Rows (each (C, H, W)) side by side -> (H + 2 pad, R (W + pad) + pad, 3) uint8."""
    g = make_grid(torch.stack(rows).float().clamp(0, 1), nrow=len(rows), padding=pad, pad_value=1.0)
    return (g.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def video_frames(rows: list[torch.Tensor], min_height: int = VIDEO_MIN_HEIGHT) -> np.ndarray:
    """Rows (each (T, C, H, W)) side by side per time step -> (T, H', W', 3) uint8, upscaled.

    Sizes are cut to even numbers: VP9 in 4:2:0 needs them, and browsers refuse odd ones.
    """
    out = []
    for i in range(rows[0].shape[0]):
        a = grid_tiles([r[i] for r in rows])
        scale = max(1, -(-min_height // a.shape[0]))  # ceil
        a = cv2.resize(a, (a.shape[1] * scale, a.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
        out.append(a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2])
    return np.stack(out)


def write_outputs(out_dir: Path, name: str, real: torch.Tensor | None, recon: torch.Tensor | None,
                  samples: torch.Tensor, fps: float) -> list[Path]:
    """A grid .png (rows: real, reconstruction, samples; columns: frames) and a .gif + .mp4
    (VP9, plays in browsers) showing the same rows side by side as they move."""
    rows = [r for r in (real, recon) if r is not None] + list(samples)
    paths = [image_grid(rows, out_dir / f"{name}.png", pad=GRID_PAD)]
    frames = video_frames(rows)
    paths.append(write_gif(out_dir / f"{name}.gif", frames, fps))
    paths.append(write_video(out_dir / f"{name}.mp4", frames, fps, codec=BROWSER))
    return paths


# ---------------------------------------------------------------- the stage's worker


def pick_inputs(n_test: int, num_inputs: int) -> np.ndarray:
    """Evenly spread test clip indices, so the inputs come from different videos."""
    return np.linspace(0, n_test - 1, min(num_inputs, n_test)).round().astype(int)


@torch.no_grad()
def generate(
    cfg: GenerateConfig, vqvae: VQVAE, prior: CodePrior, data: FrameData, out_dir: Path,
    labels: pd.DataFrame | None = None, digit_size: int = 28,
) -> list[Path]:
    """Animate `cfg.num_inputs` test clips from their first `cfg.context_frames` frames; with
    `cfg.condition: labels`, each digit moves as `labels` (collect's labels.csv) says."""
    test = data.clips("test")
    picks = pick_inputs(len(test), cfg.num_inputs)
    clips = to_float(to_tensor(test[picks]), torch.device("cpu"))  # (B, T, C, H, W)
    length = clips.shape[1]
    if cfg.context_frames >= length:
        raise VQVideoError(
            f"generate.context_frames ({cfg.context_frames}) must be below the clip length ({length}); "
            "lower it in params.yaml"
        )
    motion = None
    if cfg.condition == "labels":
        motion = labelled_motion(data, labels, picks, clips[:, 0], prior.cfg.max_layers, digit_size)
    samples = animate(vqvae, prior, clips[:, : cfg.context_frames], length, cfg, motion=motion)
    device = next(vqvae.parameters()).device
    recon = vqvae.reconstruct(clips.flatten(0, 1).to(device)).cpu().reshape(clips.shape)  # (B, T, C, H, W)
    if cfg.binarize:  # every row alike, so the real clip compares with the samples
        clips, recon = binarize_frames(clips), binarize_frames(recon)
    written = []
    for i, pick in enumerate(picks):
        written += write_outputs(out_dir, f"test_{pick:04d}", clips[i], recon[i], samples[i], cfg.fps)
    return written


# ---------------------------------------------------------------- a user's still image


def read_image(path: Path, channels: int) -> np.ndarray:
    """(H, W) gray or (H, W, 3) RGB uint8 from any image file OpenCV reads, or a clear error."""
    if not path.is_file():
        raise VQVideoError(f"image not found: {path}" if not path.exists() else f"{path} is not a file; give an image file")
    try:
        data = np.frombuffer(path.read_bytes(), np.uint8)
    except OSError as err:
        raise VQVideoError(f"{path} cannot be read ({err.strerror}); check its permissions") from None
    # imdecode rather than imread: no surprise with non-ASCII paths, and one read of the file.
    img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise VQVideoError(f"{path} cannot be read as an image (empty, corrupt or not an image); give a PNG or JPEG")
    return img if channels == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_image(path: Path, size: int, channels: int) -> torch.Tensor:
    """A still image as (1, C, size, size) in [0, 1], centre-cropped and resized like the data.

    Colour images given to a gray model are converted to gray and the reverse, as OpenCV's
    decoder does for the sample stage's videos.
    """
    img = read_image(path, channels)
    least = -(-size // MIN_IMAGE_FRACTION)
    if min(img.shape[:2]) < least:
        raise VQVideoError(
            f"{path} is {img.shape[1]}x{img.shape[0]} px, too small for this model's {size}x{size} "
            f"frames (at least {least} px a side); give a larger image"
        )
    x = torch.from_numpy(crop_resize(img, size)).float().div(255.0)
    return (x[None] if x.ndim == 2 else x.permute(2, 0, 1))[None]  # (1, C, size, size)


def safe_stem(path: Path, limit: int = 40) -> str:
    """A file name stem without separators or control characters (letters of any script stay)."""
    return re.sub(r"[^\w.-]+", "_", path.stem)[:limit].strip("._") or "input"


def generate_from_image(cfg: GenerateConfig, vqvae: VQVAE, prior: CodePrior, image: Path,
                        size: int, length: int, out_dir: Path, motion: Motion | None = None) -> list[Path]:
    """`image` -> `cfg.num_samples` clips of `length` frames, written as image_<name>.{png,gif,mp4};
    `motion` (from `picture_motion`) steers it."""
    x = load_image(image, size, vqvae.channels)
    one = cfg.model_copy(update={"context_frames": 1})
    samples = animate(vqvae, prior, x[:, None], length, one, motion=motion)[0]  # (S, length, C, H, W)
    return write_outputs(out_dir, f"image_{safe_stem(image)}", None, None, samples, cfg.fps)


def publish_files(staged: list[Path], out: Path) -> list[Path]:
    """Move fully written files into `out`, each by an atomic rename (same filesystem)."""
    out.mkdir(parents=True, exist_ok=True)
    final = []
    for p in staged:
        os.replace(p, out / p.name)
        final.append(out / p.name)
    return final


# ---------------------------------------------------------------- command line

# flags that change generate.* for one --image run without touching params.yaml
_OVERRIDES = ("num_samples", "sampling", "temperature", "top_k", "binarize", "seed")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, default=Path("data/frames"))
    p.add_argument("--vqvae", type=Path, default=Path("models/vqvae"))
    p.add_argument("--prior", type=Path, default=Path("models/prior"))
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default reports/generated, or {IMAGE_OUT}/ with --image)")
    p.add_argument("--image", type=Path, default=None,
                   help="animate this still image (PNG, JPEG, ...; any size, gray or colour) instead of test clips")
    g = p.add_argument_group("with --image only (the stage itself reads params.yaml's generate section)")
    g.add_argument("--length", type=int, default=None, help="frames per clip (default sample.clip_length)")
    g.add_argument("--num-samples", type=int, default=None, help="clips drawn from the image")
    g.add_argument("--sampling", choices=("argmax", "sample"), default=None)
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--top-k", type=int, default=None, help="0: no top-k filter")
    g.add_argument("--binarize", action=argparse.BooleanOptionalAction, default=None,
                   help="threshold frames at 0.5 (black-and-white data)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--drag", action="append", default=[], metavar="X,Y:DX,DY",
                   help="move what is under pixel (X, Y) of the input picture (its own pixels, before the "
                        "crop and resize) by DX right and DY down per frame; repeat for more objects; bounces "
                        "and the rest follow what the prior learned")
    g.add_argument("--pan", default=None, metavar="DX,DY",
                   help="move the whole picture by DX right and DY down per frame (input picture pixels)")
    p.add_argument("--labels", type=Path, default=None,
                   help="collect's motion labels (data/raw/labels.csv), read with generate.condition: labels")


def image_config(params: Params, args: argparse.Namespace) -> GenerateConfig:
    """params.yaml's generate section with the command line's overrides, validated alike."""
    from vqvideo.config import parse_params

    given = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k, None) is not None}
    if not given:
        return params.generate
    data = params.model_dump(mode="json")
    data["generate"].update(given)
    return parse_params(data, "command line").generate


def main(args: argparse.Namespace) -> None:
    from vqvideo.config import load_params

    params: Params = load_params(args.params)
    if args.image is not None:
        image_main(params, args)
        return
    flags = [f"--{k.replace('_', '-')}" for k in ("length", *_OVERRIDES, "pan") if getattr(args, k, None) is not None]
    flags += ["--drag"] if getattr(args, "drag", None) else []
    if flags:
        raise VQVideoError(f"{', '.join(flags)} only apply with --image; for the stage, set generate.* in params.yaml")
    stage_main(params, args)


def stage_main(params: Params, args: argparse.Namespace) -> None:
    from vqvideo import tracking
    from vqvideo.config import section_params
    from vqvideo.errors import require_file
    from vqvideo.io import staging_dir
    from vqvideo.models.store import check_frames_fit, load_prior, load_vqvae

    require_file(args.prior / tracking.RUN_FILE, "the pipeline's MLflow run record", "run `dvc repro prior` first")
    data = FrameData.open(args.frames)
    vqvae, vq_meta = load_vqvae(args.vqvae)
    prior, _ = load_prior(args.prior, vq_meta, vqvae)
    check_frames_fit(vq_meta, data.stats.get("clip_shape") or data.clips("test").shape[1:], args.frames)
    data.clips("test")  # missing or empty: one line now, not after the models ran
    out = args.out or Path("reports/generated")
    # Written into a sibling folder, swapped in whole: a failure leaves the previous clips.
    from vqvideo.digits import read_labels

    labels = read_labels(args.labels) if params.generate.condition == "labels" else None
    if params.generate.condition == "labels" and labels is None:
        raise VQVideoError("generate.condition is labels, but there are no motion labels "
                           f"({args.labels or 'no --labels given'}: footage has none); set generate.condition: none")
    with staging_dir(out) as tmp:
        paths = generate(params.generate, vqvae, prior, data, tmp, labels, params.collect.digit_size)
    own = section_params(params, "generate")
    with tracking.pipeline_run(None, run_id=tracking.stage_run_id(args.prior / tracking.RUN_FILE, own)):
        tracking.log_params(own)
        tracking.log_artifact(out, "generated")
    log.info("generate: %d files -> %s", len(paths), out)


def image_main(params: Params, args: argparse.Namespace) -> None:
    from vqvideo.models.store import load_prior, load_vqvae

    if not args.image.is_file():  # before the models are loaded: seconds saved on a typo
        raise VQVideoError(f"--image {args.image}: no such file; give the path of a PNG or JPEG image")
    cfg = image_config(params, args)
    length = args.length if args.length is not None else params.sample.clip_length
    if length < 2:
        raise VQVideoError(f"--length {length}: a clip needs at least 2 frames (the image and one more)")
    vqvae, vq_meta = load_vqvae(args.vqvae)
    prior, _ = load_prior(args.prior, vq_meta, vqvae)
    size = int(vq_meta["image_size"])
    load_image(args.image, size, vqvae.channels)  # fail before any folder is made
    motion = picture_motion(args.drag, args.pan, read_image(args.image, vqvae.channels).shape[:2], size)
    out = args.out or IMAGE_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    # Staged beside `out`, then renamed in: a failure leaves no half-written clip behind, and a
    # killed run's scratch folder is removed by the next writer.
    from vqvideo.io import scratch_dir

    with scratch_dir(out) as tmp:
        staged = generate_from_image(cfg, vqvae, prior, args.image, size, length, tmp, motion)
        paths = publish_files(staged, out)
    log.info("generate: %s -> %s", args.image, ", ".join(str(p) for p in paths))
