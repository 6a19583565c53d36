"""Small shared helpers: devices, precision, seeds, workers, logging."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: collect and sample need none of it
    import torch


def resolve_workers(n: int) -> int:
    """0 means all cores this process may use."""
    if n > 0:
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from vqvideo.errors import ConfigError

        raise ConfigError("device 'cuda' asked for, but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16: bf16 matmuls and convs run several times faster than fp32 there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    import torch

    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> torch.Generator:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def setup_logging(debug: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("mlflow", "alembic", "urllib3", "matplotlib", "PIL", "git", "optuna"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def pool_context():
    """fork on Linux: workers start in milliseconds and need not re-import torch; the default
    elsewhere (macOS and Windows cannot fork safely)."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return None
