"""Motion a user or the labels choose for a still image: drags, a pan, labelled objects.

Everything arrives in the input picture's pixels (or the labels'), and leaves as a `Motion` in
the model's frame pixels, for `CodePrior.rollout` (see `models/prior.py`: `plan`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from vqvideo.data.clips import Shrink
from vqvideo.data.frames import FrameData
from vqvideo.errors import VQVideoError
from vqvideo.models.layers import Layers


@dataclass
class Motion:
    """How a still image should move, per input, in the model's pixels: drags (the layer under
    (x, y) makes the step (dx, dy) per frame), a pan (every layer makes it), or known objects
    (`layers` with their `first_step`, from labels)."""

    hints: list[list[tuple[float, float, float, float]]] | None = None
    pan: tuple[float, float] | None = None
    layers: Layers | None = None
    first_step: torch.Tensor | None = None  # (B, L, 2)

    def expand(self, samples: int) -> dict:
        """The rollout's keyword arguments, each input repeated for its samples."""
        out: dict = {}
        if self.hints is not None:
            out["hints"] = [h for h in self.hints for _ in range(samples)]
        if self.layers is not None:
            rep = lambda t: t.repeat_interleave(samples, 0)  # noqa: E731
            content = None if self.layers.content is None else rep(self.layers.content)
            out["layers"] = Layers(rep(self.layers.masks), rep(self.layers.scene), content)
            out["first_step"] = rep(self.first_step)
        if self.pan is not None:
            n = len(self.hints) if self.hints is not None else 1
            out["pan"] = torch.tensor(self.pan, dtype=torch.float32).expand(n * samples, 2)
        return out


_NUM = r"[-+]?\d+(?:\.\d+)?"
_DRAG = re.compile(rf"^\s*({_NUM})\s*,\s*({_NUM})\s*:\s*({_NUM})\s*,\s*({_NUM})\s*$")
_PAIR = re.compile(rf"^\s*({_NUM})\s*,\s*({_NUM})\s*$")


def parse_drag(text: str) -> tuple[float, float, float, float]:
    """'X,Y:DX,DY' -> (x, y, dx, dy), or one line saying what a drag looks like."""
    m = _DRAG.match(text)
    if not m:
        raise VQVideoError(f"--drag {text!r} is not X,Y:DX,DY (a point of the picture in pixels, then pixels "
                           "per frame to the right and down), e.g. --drag 20,30:3,-1")
    return tuple(float(v) for v in m.groups())  # type: ignore[return-value]


def parse_pan(text: str) -> tuple[float, float]:
    m = _PAIR.match(text)
    if not m:
        raise VQVideoError(f"--pan {text!r} is not DX,DY (pixels per frame to the right and down), e.g. --pan 2,0")
    return float(m.group(1)), float(m.group(2))


def picture_motion(drags: list[str], pan: str | None, shape: tuple[int, int], size: int) -> Motion | None:
    """Drags and a pan in the input picture's pixels -> a Motion in the model's, through the
    same centre crop and resize the picture goes through. A point outside the picture, or
    outside the square the model sees, is refused with one line."""
    if not drags and pan is None:
        return None
    h, w = shape
    crop = Shrink.of(h, w, size)
    scale = size / crop.side
    hints = []
    for text in drags:
        x, y, dx, dy = parse_drag(text)
        if not (0 <= x < w and 0 <= y < h):
            raise VQVideoError(f"--drag {text}: ({x:g}, {y:g}) is outside the {w}x{h} picture; give a point with "
                               f"x in 0..{w - 1} and y in 0..{h - 1}")
        if not (crop.x <= x < crop.x + crop.side and crop.y <= y < crop.y + crop.side):
            raise VQVideoError(f"--drag {text}: ({x:g}, {y:g}) is outside the centred square the model sees "
                               f"(x {crop.x}..{crop.x + crop.side - 1}, y {crop.y}..{crop.y + crop.side - 1}); "
                               "drag a point inside it")
        hints.append(((x - crop.x + 0.5) * scale - 0.5, (y - crop.y + 0.5) * scale - 0.5, dx * scale, dy * scale))
    step = None if pan is None else tuple(v * scale for v in parse_pan(pan))
    return Motion(hints=[hints], pan=step)


def labelled_motion(data: FrameData, labels: pd.DataFrame | None, picks: np.ndarray, first: torch.Tensor,
                    max_layers: int, digit_size: int) -> Motion:
    """The labels' objects in `first` (B, C, H, W), frame 0 of the picked test clips, with their
    velocities."""
    from vqvideo.digits import clip_labels, glyph_boxes, labelled_layers

    if labels is None or labels.empty:
        raise VQVideoError("generate.condition is labels, but this data has no motion labels (labels.csv is "
                           "missing or empty: footage has none); set generate.condition: none")
    index = data.index()
    ids = index[index.split == "test"]["clip"].to_numpy()[picks]
    rows = clip_labels(index, labels, "test", ids, 1)
    masks, ink, steps = glyph_boxes(rows, len(picks), max_layers, digit_size, tuple(first.shape[-2:]))
    return Motion(layers=labelled_layers(first, masks, ink), first_step=steps)
