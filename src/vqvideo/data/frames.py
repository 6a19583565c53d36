"""Reading a sampled dataset: one memory-mapped uint8 array (N, T, C, H, W) per split, its
stats and index, and the conversions every stage makes from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vqvideo.errors import MissingInputError, VQVideoError


@dataclass(frozen=True)
class FrameData:
    """The sampled dataset: one memory-mapped array per split, plus its stats."""

    root: Path
    stats: dict

    @classmethod
    def open(cls, root: str | Path) -> FrameData:
        root = Path(root)
        stats_path = root / "stats.json"
        if not stats_path.exists():
            raise MissingInputError(
                f"sampled frames not found in {root} (no stats.json); run `dvc repro sample` first"
            )
        from vqvideo.io import read_json

        return cls(root, read_json(stats_path, "sampled frames' stats.json"))

    def clips(self, split: str) -> np.ndarray:
        """(N, T, C, H, W) uint8, memory-mapped."""
        path = self.root / f"{split}.npy"
        if not path.exists():
            raise MissingInputError(f"{path} is missing; re-run `dvc repro sample`")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise VQVideoError(f"{path} is truncated or corrupt ({err}); re-run `dvc repro sample`") from None
        if len(arr) == 0:
            raise VQVideoError(
                f"the {split} split in {self.root} is empty; collect more videos or change "
                "sample.val_fraction / sample.test_fraction / sample.clip_length"
            )
        return arr

    def index(self) -> pd.DataFrame:
        return pd.read_csv(self.root / "index.csv")

    @property
    def fingerprint(self) -> str:
        return str(self.stats.get("fingerprint", ""))


def to_tensor(a: np.ndarray):
    """A (memory-mapped) uint8 array as a writable in-memory torch tensor."""
    import torch

    return torch.from_numpy(np.array(a))


def to_float(x, device):  # noqa: ANN001, ANN201 - torch tensors; torch is imported by callers
    """uint8 (..., C, H, W) tensor -> float in [0, 1] on `device`, channels-last for fast convs."""
    import torch

    x = x.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def open_checked(frames: str | Path, channels: int, size: int) -> FrameData:
    """The sampled frames, checked against the sample section the models are built for (its
    channels and size), with non-empty train and val splits: before a run opens or a file is
    written."""
    data = FrameData.open(frames)
    for split in ("train", "val"):
        data.clips(split)  # raises, naming the split, when it is missing or empty
    shape = data.stats.get("clip_shape") or data.clips("train").shape[1:]
    c, h, w = (int(v) for v in shape[-3:])
    if (c, h, w) != (channels, size, size):
        raise VQVideoError(
            f"{frames} holds {c}x{h}x{w} frames but params.yaml's sample section asks for "
            f"{channels}x{size}x{size}; re-run `dvc repro sample` so the frames match"
        )
    return data


def frames_of(clips: np.ndarray) -> np.ndarray:
    """(N, T, C, H, W) -> (N*T, C, H, W) view."""
    n, t = clips.shape[:2]
    return clips.reshape(n * t, *clips.shape[2:])
