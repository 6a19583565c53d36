"""generate: turn the first frame(s) of test clips, or your own still image, into clips."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.utils import make_grid

from vqvideo.config import GenerateConfig, Params
from vqvideo.data.clips import FrameData, crop_resize, to_tensor
from vqvideo.data.video import BROWSER, write_gif, write_video
from vqvideo.errors import VQVideoError
from vqvideo.models.prior import CodePrior
from vqvideo.models.vqvae import VQVAE
from vqvideo.plots import image_grid
from vqvideo.stages.train import to_float

log = logging.getLogger(__name__)


@torch.no_grad()
def decode_codes(vqvae: VQVAE, codes: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """(B, T, h, w) codes -> (B, T, C, H, W) frames in [0, 1]."""
    b, t = codes.shape[:2]
    flat = codes.reshape(b * t, *codes.shape[2:])
    out = torch.cat([vqvae.decode_indices(flat[i : i + batch]) for i in range(0, len(flat), batch)])
    return out.view(b, t, *out.shape[1:])


@torch.no_grad()
def animate(
    vqvae: VQVAE, prior: CodePrior, context: torch.Tensor, length: int, cfg: GenerateConfig
) -> torch.Tensor:
    """context (B, Tc, C, H, W) float -> (B, S, length, C, H, W): S samples per input, batched."""
    b, tc = context.shape[:2]
    s = cfg.num_samples
    codes = vqvae.encode_indices(context.flatten(0, 1)).view(b, tc, *vqvae_grid(vqvae, context))
    codes = codes.repeat_interleave(s, dim=0)  # (B*S, Tc, h, w)
    g = torch.Generator().manual_seed(cfg.seed)
    rolled = prior.rollout(codes, length - tc, sampling=cfg.sampling, temperature=cfg.temperature,
                           top_k=cfg.top_k, generator=g)
    frames = decode_codes(vqvae, rolled)
    frames[:, :tc] = context.repeat_interleave(s, dim=0)  # the given frames stay as they were
    if cfg.binarize:
        frames = (frames > 0.5).float()
    return frames.view(b, s, *frames.shape[1:])


def vqvae_grid(vqvae: VQVAE, x: torch.Tensor) -> tuple[int, int]:
    return x.shape[-2] // vqvae.factor, x.shape[-1] // vqvae.factor


def video_frames(rows: list[torch.Tensor], min_height: int = 192) -> np.ndarray:
    """Rows (each (T, C, H, W)) side by side per time step -> (T, H', W', 3) uint8, upscaled."""
    t = rows[0].shape[0]
    out = []
    for i in range(t):
        g = make_grid(torch.stack([r[i] for r in rows]).float().clamp(0, 1), nrow=len(rows), padding=2, pad_value=1.0)
        a = (g.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        scale = max(1, -(-min_height // a.shape[0]))
        a = cv2.resize(a, (a.shape[1] * scale, a.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
        out.append(a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2])  # even sizes for VP9
    return np.stack(out)


def write_outputs(out_dir: Path, name: str, real: torch.Tensor | None, recon: torch.Tensor | None,
                  samples: torch.Tensor, fps: float) -> list[Path]:
    """A grid .png (rows: real, reconstruction, samples) and a .gif + .mp4 of them side by side."""
    rows = [r for r in (real, recon) if r is not None] + list(samples)
    paths = [image_grid(rows, out_dir / f"{name}.png")]
    frames = video_frames(rows)
    paths.append(write_gif(out_dir / f"{name}.gif", frames, fps))
    paths.append(write_video(out_dir / f"{name}.mp4", frames, fps, codec=BROWSER))
    return paths


def generate(
    cfg: GenerateConfig, vqvae: VQVAE, prior: CodePrior, data: FrameData, out_dir: Path
) -> list[Path]:
    test = data.clips("test")
    picks = np.linspace(0, len(test) - 1, min(cfg.num_inputs, len(test))).round().astype(int)
    clips = to_float(to_tensor(test[picks]), torch.device("cpu"))  # (B, T, C, H, W)
    length = clips.shape[1]
    if cfg.context_frames >= length:
        raise VQVideoError(f"generate.context_frames ({cfg.context_frames}) must be below the clip length ({length})")
    samples = animate(vqvae, prior, clips[:, : cfg.context_frames], length, cfg)
    written = []
    for i, clip in enumerate(clips):
        recon = vqvae.reconstruct(clip)
        written += write_outputs(out_dir, f"test_{picks[i]:04d}", clip, recon, samples[i], cfg.fps)
    return written


def load_image(path: Path, size: int, channels: int) -> torch.Tensor:
    """A still image as (1, C, size, size) in [0, 1], centre-cropped and resized like the data."""
    if not path.exists():
        raise VQVideoError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if img is None:
        raise VQVideoError(f"{path} cannot be read as an image (corrupt or not an image); give a PNG or JPEG")
    if min(img.shape[:2]) < size // 4:
        raise VQVideoError(
            f"{path} is {img.shape[1]}x{img.shape[0]} px, too small for this model's {size}x{size} "
            f"input (at least {size // 4} px a side); give a larger image"
        )
    if channels == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = crop_resize(img, size)
    x = torch.from_numpy(img).float().div(255.0)
    return (x[None] if x.ndim == 2 else x.permute(2, 0, 1))[None]


def generate_from_image(cfg: GenerateConfig, vqvae: VQVAE, prior: CodePrior, image: Path,
                        size: int, length: int, out_dir: Path) -> list[Path]:
    x = load_image(image, size, vqvae.channels)
    one = cfg.model_copy(update={"context_frames": 1})
    samples = animate(vqvae, prior, x[:, None], length, one)[0]
    return write_outputs(out_dir, f"image_{image.stem[:40] or 'input'}", None, None, samples, cfg.fps)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, default=Path("data/frames"))
    p.add_argument("--vqvae", type=Path, default=Path("models/vqvae"))
    p.add_argument("--prior", type=Path, default=Path("models/prior"))
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default reports/generated, or reports/generated/images with --image)")
    p.add_argument("--image", type=Path, default=None, help="animate this still image instead of test clips")


def main(args: argparse.Namespace) -> None:
    from vqvideo import tracking
    from vqvideo.config import load_params, section_params
    from vqvideo.io import staging_dir
    from vqvideo.models.store import load_prior, load_vqvae

    params: Params = load_params(args.params)
    vqvae, vq_meta = load_vqvae(args.vqvae)
    prior, _ = load_prior(args.prior, vq_meta)
    torch.manual_seed(params.generate.seed)
    if args.image is not None:
        out = args.out or Path("reports/generated/images")
        size = int(vq_meta["image_size"])
        data_len = FrameData.open(args.frames).stats["clip_shape"][0] if (args.frames / "stats.json").exists() else 20
        paths = generate_from_image(params.generate, vqvae, prior, args.image, size, data_len, out)
        log.info("generate: %s -> %s", args.image, ", ".join(str(p) for p in paths))
        return
    out = args.out or Path("reports/generated")
    data = FrameData.open(args.frames)
    with staging_dir(out) as tmp:
        paths = generate(params.generate, vqvae, prior, data, tmp)
    own = section_params(params, "generate")
    with tracking.pipeline_run(None, run_id=tracking.stage_run_id(args.prior / tracking.RUN_FILE, own)):
        tracking.log_params(own)
        tracking.log_artifact(out, "generated")
    log.info("generate: %d files -> %s", len(paths), out)
