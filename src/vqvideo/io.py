"""Files that are either the old version or the new one, never torn.

Everything a stage writes goes through a temporary name in the same folder and `os.replace`,
which is atomic on POSIX; a stage killed mid-write leaves the previous output in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from vqvideo.errors import VQVideoError


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix + ".tmp",
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_yaml(path: str | Path, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path: str | Path, df) -> None:  # noqa: ANN001 - a pandas DataFrame
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_history(path: str | Path, rows: list[dict]) -> None:
    """history.csv (both splits) plus train.csv and val.csv beside it, for `dvc plots`."""
    import pandas as pd

    path = Path(path)
    df = pd.DataFrame(rows)
    write_csv(path, df)
    for split in ("train", "val"):
        write_csv(path.with_name(f"{split}.csv"), df[df.split == split].dropna(axis=1, how="all"))


def write_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".tmp.npy") as tmp:
        np.save(tmp, array)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save through a temporary file; `state` must hold only tensors and plain types."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """Load with weights_only=True: a file carrying pickled code is refused, not run."""
    path = Path(path)
    if not path.exists():
        raise VQVideoError(f"{what} not found at {path}; run the stage that writes it first")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VQVideoError(
            f"{what} at {path} cannot be loaded safely ({first[:200]}); "
            "it is corrupt or not a vqvideo file: delete it and re-run the stage that writes it"
        ) from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Swap a fully written folder into place; the old one is removed only after the swap."""
    final_dir = Path(final_dir)
    old = final_dir.with_name(f".{final_dir.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def staging_dir(final_dir: str | Path) -> Iterator[Path]:
    """A temporary sibling folder to fill; renamed onto `final_dir` when the block succeeds."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", suffix=".tmp", dir=final_dir.parent))
    try:
        yield tmp
        replace_dir(tmp, final_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
