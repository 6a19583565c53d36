"""What the stages write gets the user's umask, like any file: a team on a shared machine, or a
web server, can read the reports (the temporaries they start as are 0600 / 0700)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vqvideo import io


@pytest.fixture
def umask():
    """Set the process umask for one test; the previous one comes back after it."""
    old = os.umask(0o022)
    try:
        yield lambda mask: os.umask(mask)
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _write_everything(root: Path) -> list[Path]:
    """One output of each writer in io; a staged folder with files in it; returns the files."""
    io.write_bytes(root / "a.bin", b"x")
    io.write_text(root / "a.txt", "x")
    io.write_json(root / "a.json", {"a": 1})
    io.write_yaml(root / "a.yaml", {"a": 1})
    io.write_csv(root / "a.csv", pd.DataFrame({"a": [1]}))
    io.write_npy(root / "a.npy", np.zeros(3))
    io.write_history(root / "hist" / "history.csv",
                     [{"split": "train", "step": 1, "loss": 1.0}, {"split": "val", "step": 1, "loss": 2.0}])
    io.save_checkpoint(root / "ckpt.pt", {"step": 1})
    for version in (1, 2):  # the first swap renames, the second exchanges with the old folder
        with io.staging_dir(root / "staged") as tmp:
            io.write_json(tmp / "inner.json", {"v": version})
            (tmp / "sub").mkdir()
            (tmp / "sub" / "plain.txt").write_text("x")  # written the ordinary way
    with io.scratch_dir(root / "moved.txt") as tmp:
        io.write_text(tmp / "moved.txt", "x")
        os.replace(tmp / "moved.txt", root / "moved.txt")
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_outputs_are_group_and_other_readable_under_umask_022(tmp_path, umask):
    umask(0o022)
    files = _write_everything(tmp_path)
    assert {p.name for p in files} >= {
        "a.bin", "a.txt", "a.json", "a.yaml", "a.csv", "a.npy", "history.csv", "train.csv",
        "val.csv", "ckpt.pt", "inner.json", "plain.txt", "moved.txt"}
    assert {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in files} == {
        str(p.relative_to(tmp_path)): "0o644" for p in files}
    for d in (tmp_path / "staged", tmp_path / "staged" / "sub", tmp_path / "hist"):
        assert _mode(d) == 0o755, d
    assert io.read_json(tmp_path / "staged" / "inner.json") == {"v": 2}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "temporaries left"


@pytest.mark.parametrize("mask", [0o002, 0o077])
def test_outputs_follow_whatever_umask_is_set(tmp_path, umask, mask):
    umask(mask)
    files = _write_everything(tmp_path)
    assert {oct(_mode(p)) for p in files} == {oct(0o666 & ~mask)}
    assert oct(_mode(tmp_path / "staged")) == oct(0o777 & ~mask)


def test_umask_is_read_without_changing_it(umask):
    umask(0o027)
    assert io._umask() == 0o027
    assert os.umask(0o027) == 0o027  # still set
