"""How exact must a predicted digit's place be to be read? The digit reader against position error.

Takes the pipeline's trained models and test split (run `dvc repro` first), moves each layer by
its tracked true motion (the ceiling in `bench/prior_budget.py`) plus Gaussian noise of a given
standard deviation per axis (whole pixels after rounding, as the data draws its digits), and
reads the digits at their labelled places in the 10th predicted frame, as the evaluate stage
does. Beside each row: the trained prior's own prediction, and its error per axis at that
frame against the tracked places. Prints one table.

    python bench/prior_limits.py [--sigma 0 0.3 0.5 0.7 1.0]

The same models and data give the same table (the noise comes from a fixed seed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402
from vqvideo.clip_metrics import digit_accuracy  # noqa: E402
from vqvideo.config import load_params  # noqa: E402
from vqvideo.data.frames import FrameData, to_tensor  # noqa: E402
from vqvideo.digits import DigitReader, clip_labels  # noqa: E402
from vqvideo.models import layers as Ly  # noqa: E402
from vqvideo.models.store import load_prior, load_vqvae  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sigma", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7, 1.0])
    p.add_argument("--context", type=int, default=10)
    args = p.parse_args()
    params = load_params(REPO / "params.yaml")
    data = FrameData.open(REPO / "data/frames")
    vqvae, meta = load_vqvae(REPO / "models/vqvae")
    prior, _ = load_prior(REPO / "models/prior", meta, vqvae)
    test = np.asarray(data.clips("test"))
    index = data.index()
    ids = index[index.split == "test"]["clip"].to_numpy()
    labels = clip_labels(index, pd.read_csv(REPO / "data/raw/labels.csv"), "test", ids, test.shape[1])
    reader = DigitReader.train(params.collect.digit_size)
    tc = args.context
    x = to_tensor(test).float() / 255.0
    codes = vqvae.encode_indices(x.flatten(0, 1)).view(*x.shape[:2], *prior.grid)
    plan = prior.plan(codes[:, :tc], x.shape[1] - tc, images=x[:, :tc])
    tracked, _ = Ly.track(x, plan["frame"], plan["layers"], prior.cfg.motion_radius)

    def read_last(disp: torch.Tensor) -> float:
        frames = Ly.render(plan["anchor"], plan["layers"], disp[:, :, -1])
        decoded = vqvae.decode_indices(vqvae.encode_indices(frames))  # through the codes, as a rollout is
        return float(digit_accuracy(reader, decoded[:, None, 0].numpy(), labels, x.shape[1] - 1)[-1])

    gen = torch.Generator().manual_seed(0)
    rows = []
    for sigma in args.sigma:
        noisy = tracked.clone()
        noisy[:, :, tc:] += sigma * torch.randn(noisy[:, :, tc:].shape, generator=gen)
        rows.append({"placed as": f"tracked + N(0, {sigma:g} px) per axis", "digits read at step 10": read_last(noisy.round())})
    err = (plan["disp"][:, :, -1] - tracked[:, :, -1]).abs()[plan["layers"].valid]  # (layers, 2)
    rows.append({"placed as": "the trained prior's prediction", "digits read at step 10": read_last(plan["disp"]),
                 "median |error| x, y (px)": f"{err[:, 0].median():.2f}, {err[:, 1].median():.2f}",
                 "mean |error| x, y (px)": f"{err[:, 0].mean():.2f}, {err[:, 1].mean():.2f}"})
    print(f"digit reader against position error on {machine()} ({len(x)} test clips, {tc} given)")
    print(pd.DataFrame(rows).fillna("").to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
