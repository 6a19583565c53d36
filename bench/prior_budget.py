"""What more prior training buys: quality against the prior's training minutes.

Trains the prior with the stage's own worker (`vqvideo.stages.prior.train_prior`) at several
budgets on the pipeline's data and VQ-VAE (run `dvc repro train` first), and scores each on the
test split as the evaluate stage does: the 10 -> 10 prediction error against copying the last
given frame, and the digits read at their labelled place in the 10th predicted frame. Prints
one row per budget, and the ceiling of the representation (the last run's layers moved by their
tracked true motion), and draws the curve.

    python bench/prior_budget.py [--steps 400 800 1600 3200] [--plot docs/prior_budget.png]

Each budget is a fresh run from the same seed; the minutes are the worker's own wall time
(tracking the training clips included) on this machine, one process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402
from vqvideo import metrics as M  # noqa: E402
from vqvideo.clip_metrics import digit_accuracy  # noqa: E402
from vqvideo.config import load_params  # noqa: E402
from vqvideo.data.frames import FrameData, to_tensor  # noqa: E402
from vqvideo.digits import DigitReader, clip_labels  # noqa: E402
from vqvideo.models.store import load_vqvae  # noqa: E402
from vqvideo.stages.prior import train_prior  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def quality(pred: torch.Tensor, x: torch.Tensor, labels: pd.DataFrame | None, reader, tc: int) -> dict:  # noqa: ANN001
    """Predicted frames (N, T - tc, C, H, W) against the clips x: error / copy-last, digits at step 10."""
    err = M.mse_per_frame(pred.flatten(0, 1), x[:, tc:].flatten(0, 1)).mean()
    copy = M.mse_per_frame(x[:, tc - 1 : tc].expand_as(x[:, tc:]).flatten(0, 1), x[:, tc:].flatten(0, 1)).mean()
    out = {"ratio_to_copy_last": float(err / copy)}
    if labels is not None:
        out["digit_accuracy_10"] = float(digit_accuracy(reader, pred[:, :, 0].numpy(), labels, tc)[-1])
    return out


@torch.no_grad()
def score(prior, vqvae, test: np.ndarray, labels: pd.DataFrame | None, reader, tc: int = 10) -> dict:  # noqa: ANN001
    x = to_tensor(test).float() / 255.0
    codes = vqvae.encode_indices(x.flatten(0, 1)).view(*x.shape[:2], *prior.grid)
    rolled = prior.rollout(codes[:, :tc], x.shape[1] - tc, images=x[:, :tc])
    pred = vqvae.decode_indices(rolled[:, tc:].flatten(0, 1)).view(len(x), -1, *x.shape[2:])
    return quality(pred, x, labels, reader, tc)


@torch.no_grad()
def ceiling(prior, vqvae, test: np.ndarray, labels: pd.DataFrame | None, reader, tc: int = 10) -> dict:  # noqa: ANN001
    """The same layers moved by their tracked true motion instead of the predicted one: what a
    perfect dynamics would score with this representation (segmentation, compositing, codes)."""
    from vqvideo.models import layers as Ly

    x = to_tensor(test).float() / 255.0
    codes = vqvae.encode_indices(x.flatten(0, 1)).view(*x.shape[:2], *prior.grid)
    plan = prior.plan(codes[:, :tc], x.shape[1] - tc, images=x[:, :tc])
    disp, _ = Ly.track(x, plan["frame"], plan["layers"], prior.cfg.motion_radius)
    frames = torch.stack([Ly.render(plan["anchor"], plan["layers"], disp[:, :, k]) for k in range(tc, x.shape[1])], 1)
    pred = vqvae.decode_indices(vqvae.encode_indices(frames.flatten(0, 1))).view(len(x), -1, *x.shape[2:])
    return quality(pred, x, labels, reader, tc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[400, 800, 1600, 3200])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="prior.* overrides for every budget, e.g. --set track_clips=1200")
    p.add_argument("--frames", type=Path, default=REPO / "data/frames")
    p.add_argument("--vqvae", type=Path, default=REPO / "models/vqvae")
    p.add_argument("--labels", type=Path, default=REPO / "data/raw/labels.csv")
    p.add_argument("--plot", type=Path, default=None)
    args = p.parse_args()
    params = load_params(REPO / "params.yaml")
    data = FrameData.open(args.frames)
    vqvae, meta = load_vqvae(args.vqvae)
    test = np.asarray(data.clips("test"))
    labels, reader = None, None
    if args.labels.exists() and vqvae.channels == 1:
        index = data.index()
        ids = index[index.split == "test"]["clip"].to_numpy()
        labels = clip_labels(index, pd.read_csv(args.labels), "test", ids, test.shape[1])
        reader = DigitReader.train(params.collect.digit_size)
    extra = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        extra[k] = type(getattr(params.prior, k))(v)
    rows = []
    for steps in args.steps:
        cfg = params.prior.model_copy(update={**extra, "steps": steps})
        t0 = time.perf_counter()
        result = train_prior(cfg, vqvae, meta["fingerprint"], data)
        minutes = (time.perf_counter() - t0) / 60
        rows.append({"steps": steps, "minutes": minutes, **score(result.model, vqvae, test, labels, reader)})
        print(rows[-1], flush=True)
    # the ceiling: the last run's layers moved as tracked in the true future frames
    rows.append({"steps": "tracked motion", "minutes": float("nan"), **ceiling(result.model, vqvae, test, labels, reader)})
    table = pd.DataFrame(rows)
    print(f"\nprior budget on {machine()}; overrides {extra or 'none'}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        top = table.iloc[-1]
        table = table.iloc[:-1]
        fig, ax = plt.subplots(figsize=(6, 3.8))
        ax.axhline(top.ratio_to_copy_last, color="C0", ls=":", lw=1, label="same layers, tracked true motion")
        if "digit_accuracy_10" in table:
            ax.axhline(top.digit_accuracy_10, color="C1", ls=":", lw=1)
        ax.plot(table.minutes, table.ratio_to_copy_last, marker="o", label="10 -> 10 error / copy-last (lower is better)")
        if "digit_accuracy_10" in table:
            ax.plot(table.minutes, table.digit_accuracy_10, marker="s", label="digits read at step 10 (higher is better)")
        for r in table.itertuples():
            ax.annotate(f"{r.steps}", (r.minutes, r.ratio_to_copy_last), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("prior training, CPU minutes (tracking included)")
        ax.set_title("What more prior training buys (Moving Digits test split)")
        ax.legend(frameon=False, fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
