"""Generation speed: generated frames per second (prior rollout + decode) next to decoding alone.

Decoding the codes into pixels is work generation cannot skip, so decoding alone is the floor;
the ratio says how much the prior's rollout (one batched forward pass per frame) adds to it.
The models are the default params.yaml's sizes with random weights (the speed does not depend
on what the weights learned); the batch is what the generate stage runs: generate.num_inputs x
generate.num_samples sequences, from generate.context_frames given frames to sample.clip_length.

    OMP_NUM_THREADS=1 python bench/bench_generate.py [--repeat 5] [--device cpu|cuda] [--quick]

`rows()` returns the table's rows, for bench/run_all.py (which gathers every benchmark into one
table); quick: 1 input x 2 samples, no warm-up, one timed round.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Row, interleaved_times, machine, print_table  # noqa: E402
from vqvideo.config import Params, load_params  # noqa: E402
from vqvideo.models.prior import CodePrior  # noqa: E402
from vqvideo.models.sampling import pick_codes  # noqa: E402
from vqvideo.models.vqvae import (
    VQVAE,  # noqa: E402
    decode_codes,  # noqa: E402
)
from vqvideo.stages.generate import animate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TITLE = "generate: prior rollout + decode vs decode alone"


def build_models(params: Params, device: torch.device) -> tuple[VQVAE, CodePrior]:
    """The default-sized VQ-VAE and prior, random weights, eval mode."""
    torch.manual_seed(0)
    vqvae = VQVAE(params.model, channels=params.sample.channels).eval().to(device)
    side = vqvae.latent_size(params.sample.size)
    prior = CodePrior(params.prior, vqvae, (side, side))
    return vqvae, prior.eval().to(device)


def synced(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """fn, waiting for the GPU to finish: CUDA calls return before the work is done."""
    def run() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def trained(models: Path, frames: Path, b: int, tc: int, device: torch.device):  # noqa: ANN201
    """The pipeline's trained models and the first frames of its test clips."""
    from vqvideo.data.frames import FrameData
    from vqvideo.models.store import load_prior, load_vqvae

    vqvae, meta = load_vqvae(models / "vqvae")
    prior, _ = load_prior(models / "prior", meta, vqvae)
    test = np.asarray(FrameData.open(frames).clips("test")[:b, :tc])
    return vqvae.to(device), prior.to(device), torch.from_numpy(test.copy()).float() / 255.0


@torch.no_grad()
def rows(quick: bool = False, *, repeat: int = 5, device: str = "cpu",
         params_path: Path = REPO / "params.yaml", models: Path | None = None,
         frames: Path = REPO / "data/frames") -> list[Row]:
    params = load_params(params_path)
    dev = torch.device(device)
    cfg = params.generate
    warmup = 1
    if quick:
        cfg = cfg.model_copy(update={"num_inputs": 1, "num_samples": 2})
        repeat, warmup = 1, 0
    b, s, t, tc = cfg.num_inputs, cfg.num_samples, params.sample.clip_length, cfg.context_frames
    size, c = params.sample.size, params.sample.channels
    if models is not None:  # what a user runs: trained models on the data's own frames
        vqvae, prior, context = trained(models, frames, b, tc, dev)
    else:
        vqvae, prior = build_models(params, dev)
        context = torch.rand(b, tc, c, size, size, generator=torch.Generator().manual_seed(0))
    side = vqvae.latent_size(size)
    # decode alone: the same number of frames, from codes drawn uniformly
    codes = torch.randint(0, params.model.codebook_size, (b * s, t - tc, side, side)).to(dev)
    start = codes[:, :1].repeat(1, tc, 1, 1)  # (B*S, Tc, h, w)
    times = interleaved_times({
        "generate": synced(lambda: animate(vqvae, prior, context, t, cfg), dev),
        "decode": synced(lambda: decode_codes(vqvae, codes), dev),
        "rollout": synced(lambda: prior.rollout(start, t - tc, sampling=cfg.sampling, temperature=cfg.temperature,
                                                top_k=cfg.top_k, generator=torch.Generator().manual_seed(0)), dev),
    }, warmup=warmup, repeat=repeat)
    frames = b * s * (t - tc)  # generated frames per call
    draw = draw_times(prior, start, cfg.temperature, repeat, warmup)
    fps = {k: frames / v for k, v in times.items()}
    what = f"{b}x{s} sequences, {t - tc} frames each"
    return [
        Row(f"generate (rollout + decode), {what}", fps["generate"], "decode alone (the floor)", fps["decode"], "frames/s"),
        Row("prior rollout alone", fps["rollout"], "decode alone (the floor)", fps["decode"], "frames/s"),
        Row("pick_codes draw (inverse CDF), one frame", draw["ours"] * 1e3, "torch.multinomial, same logits",
            draw["multinomial"] * 1e3, "ms"),
    ]


def draw_times(prior: CodePrior, codes: torch.Tensor, temperature: float, repeat: int,
               warmup: int = 1) -> dict[str, float]:
    """One frame's code draw from the prior's logits: ours against torch.multinomial."""
    logits = prior.code_logits(prior.decode(codes[:, -1]))  # (B*S, h, w, K): one frame's codes
    k = logits.shape[-1]
    g = torch.Generator().manual_seed(0)
    dev = logits.device

    def multinomial() -> torch.Tensor:
        probs = (logits.float() / temperature).softmax(-1).reshape(-1, k).cpu()
        return torch.multinomial(probs, 1, generator=g).to(dev).view(logits.shape[:-1])

    return interleaved_times({"ours": synced(lambda: pick_codes(logits, "sample", temperature, 0, g), dev),
                              "multinomial": synced(multinomial, dev)}, warmup=warmup, repeat=repeat)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quick", action="store_true", help="a smaller batch, one round: to check it runs")
    p.add_argument("--models", type=Path, default=None,
                   help="the pipeline's models folder (with vqvae/ and prior/): time the trained prior on "
                        "data/frames' test clips instead of random weights on noise")
    args = p.parse_args()
    table = rows(args.quick, repeat=args.repeat, device=args.device, models=args.models)
    print(f"generation on {args.device}; {machine()}")
    print_table(TITLE, table)
    gen = table[0]
    print(f"\ngeneration runs at {gen.ratio:.2f}x the speed of decoding alone "
          f"({1 / gen.value * 1e3:.2f} ms vs {1 / gen.ref_value * 1e3:.2f} ms per frame)")


if __name__ == "__main__":
    main()
