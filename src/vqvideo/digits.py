"""Digit identity: is the digit still readable where the labels say it is?

MSE rewards a blob that stays put over a sharp digit one pixel off, so the evaluate stage also
asks a classifier to read each digit at its labelled place. The classifier is trained here, in
seconds and deterministically, on scikit-learn's digits from the training pool (the held-out
images that test videos draw from are never seen), rendered exactly as Moving Digits renders
them (`data/synthetic.py`), each also with a second digit composited over it by maximum at a
random offset, as happens in the videos, and moved by up to a pixel (a label's sub-pixel place
is drawn rounded). It reads a 28x28 crop at the labelled top-left
corner, shrunk to 14x14: a digit that drifted, shrank or smeared is misread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

READ = 14  # px a side the classifier reads (28 px crops shrunk by 2: robust to stray pixels)


def features(crops: np.ndarray) -> np.ndarray:
    """(N, S, S) float crops in [0, 1] -> (N, READ*READ) features."""
    return np.stack([cv2.resize(c.astype(np.float32), (READ, READ), interpolation=cv2.INTER_AREA)
                     for c in crops]).reshape(len(crops), -1) if len(crops) else np.zeros((0, READ * READ))


@dataclass
class DigitReader:
    model: object  # a fitted scikit-learn classifier
    size: int  # digit_size of the data

    @classmethod
    def train(cls, size: int, seed: int = 0) -> DigitReader:
        from sklearn.linear_model import LogisticRegression

        from vqvideo.data.synthetic import load_digit_bank

        bank = load_digit_bank(size)
        imgs = bank.images[: bank.heldout_from].astype(np.float32) / 255.0
        labels = bank.labels[: bank.heldout_from]
        rng = np.random.default_rng(seed)
        over = []
        for img in imgs:  # a second digit over half of each, as overlapping digits are in videos
            other = imgs[rng.integers(len(imgs))]
            dx, dy = rng.integers(-size + 6, size - 5, size=2)
            canvas = np.zeros((3 * size, 3 * size), np.float32)
            canvas[size + dy : 2 * size + dy, size + dx : 2 * size + dx] = other
            over.append(np.maximum(img, canvas[size : 2 * size, size : 2 * size]))
        # and each moved by up to a pixel: a label's sub-pixel place is drawn rounded
        moved = [np.roll(im, tuple(rng.integers(-1, 2, size=2)), axis=(0, 1)) for im in imgs]
        x = features(np.concatenate([imgs, np.stack(over), np.stack(moved)]))
        y = np.concatenate([labels, labels, labels])
        model = LogisticRegression(C=0.5, max_iter=400)
        model.fit(x, y)
        return cls(model, size)

    def read(self, frames: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """frames (N, H, W) in [0, 1], top-left corners (N, 2) -> (N,) the digit read there."""
        s = self.size
        n, h, w = frames.shape
        pad = np.pad(frames, ((0, 0), (s, s), (s, s)))
        crops = np.stack([pad[i, int(round(y)) + s : int(round(y)) + 2 * s, int(round(x)) + s : int(round(x)) + 2 * s]
                          for i, (x, y) in enumerate(xy)]) if n else np.zeros((0, s, s))
        return self.model.predict(features(crops)) if n else np.zeros(0, int)


def read_labels(path: Path | None) -> pd.DataFrame | None:
    """collect's labels.csv, or None where there are none (footage: header only, or no file)."""
    from vqvideo.errors import VQVideoError

    if path is None or not Path(path).exists():
        return None
    try:
        labels = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise VQVideoError(f"motion labels {path} cannot be read ({' '.join(str(err).split())[:120]}); "
                           "re-run `dvc repro collect`") from None
    return None if labels.empty else labels


def clip_labels(index: pd.DataFrame, labels: pd.DataFrame, split: str, clip_ids: np.ndarray,
                length: int) -> pd.DataFrame:
    """The labels of each digit at each frame of the given clips of `split`.

    Rows: clip (position in `clip_ids`), step (frame within the clip), digit, label, digit_image
    (its image in the digit bank), x, y, vx, vy
    (vx, vy in px per clip frame, i.e. times the sampling interval).
    """
    rows = index[index.split == split].set_index("clip").loc[clip_ids]
    parts = []
    for pos, (_, r) in enumerate(rows.iterrows()):
        frames = r.start_frame + np.arange(length) * r.frame_interval
        sel = labels[(labels.video == r.video) & labels.frame.isin(frames)].copy()
        sel["step"] = (sel.frame - r.start_frame) // r.frame_interval
        sel["clip"] = pos
        sel[["vx", "vy"]] = sel[["vx", "vy"]] * r.frame_interval
        parts.append(sel)
    cols = ["clip", "step", "digit", "label", "digit_image", "x", "y", "vx", "vy"]
    return pd.concat(parts)[cols].sort_values(["clip", "step", "digit"]).reset_index(drop=True) if parts else pd.DataFrame(columns=cols)


def glyph_boxes(labels: pd.DataFrame, n: int, max_layers: int, size: int, shape: tuple[int, int]):  # noqa: ANN201
    """Each digit's own ink at its labelled place in frame 0 -> (n, L, H, W) masks (the labels
    name the digit image: objects known exactly, as labelled data knows them) and (n, L, 2) its
    velocity (the action)."""
    import torch

    from vqvideo.data.synthetic import load_digit_bank
    from vqvideo.models.layers import HALO, INK

    bank = load_digit_bank(size)
    h, w = shape
    masks = torch.zeros(n, max_layers, h, w)
    ink = torch.zeros(n, max_layers, h, w)
    steps = torch.zeros(n, max_layers, 2)
    for r in labels[labels.step == 0].itertuples(index=False):
        if r.digit >= max_layers or r.clip >= n:
            continue
        x0, y0 = int(round(r.x)), int(round(r.y))
        canvas = np.zeros((h + 2 * size, w + 2 * size), np.float32)
        canvas[y0 + size : y0 + 2 * size, x0 + size : x0 + 2 * size] = bank.images[int(r.digit_image)] / 255.0
        own = canvas[size : size + h, size : size + w]
        ink[r.clip, r.digit] = torch.from_numpy(own.copy())
        # the mask the segmentation gives the digit alone: its ink with the halo, cut at the frame
        halo = np.ones((2 * HALO + 1, 2 * HALO + 1), np.uint8)
        masks[r.clip, r.digit] = torch.from_numpy(cv2.dilate((own > INK).astype(np.uint8), halo).astype(np.float32))
        steps[r.clip, r.digit] = torch.tensor([r.vx, r.vy], dtype=torch.float32)
    return masks, ink, steps


def labelled_layers(frame, masks, ink):  # noqa: ANN001, ANN201 - torch tensors
    """Layers of frames (B, C, H, W) from each object's mask and own ink (B, L, H, W): a layer's
    pixels are the frame's, but no brighter than its own ink, so where two digits overlap each
    layer keeps only its own strokes (the data composites by maximum: min(frame, own) = own)."""
    import torch

    from vqvideo.models.layers import Layers

    content = torch.minimum(frame.float()[:, None], ink[:, :, None]) * masks[:, :, None]
    return Layers(masks, torch.zeros(len(frame), dtype=torch.bool), content)
