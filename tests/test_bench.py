"""bench/run_all.py --quick: every benchmark still runs and lands in the one table.

Runs the real script as a user would (tiny inputs); checks the machine line, the table's columns
and that every expected row is there with finite, positive figures and a consistent ratio and
target verdict. No timed asserts: the figures of a --quick run mean nothing.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

SETS = ("640x360 mp4v, RGB", "640x360 mp4v, gray", "640x360 VP9, RGB", "256x256 FFV1, RGB", "Moving Digits")
# (bench, regular expression the figure matches from its start, unit, target): one per row
EXPECTED = [
    *[("sample", rf"{re.escape(s)}.*: {what}$", "frames/s", target) for s in SETS
      for what, target in (("raw, FFmpeg's default threads", ""),
                           (r"raw, 2 processes \(this machine's ceiling for 2 workers\)", ""),
                           ("sample, 1 worker", ">= 0.8"), ("sample, 2 workers", ">= 1.6"),
                           ("sample, 2 workers, against its own 1 worker", ""),
                           ("sample, 2 workers, against the raw loop in 2 processes", ""))],
    *[("sample", rf"{re.escape(s)}.*: sample, {w}, CPU time$", "frames/CPU-s", ">= 0.8") for s in SETS
      for w in ("1 worker", "2 workers")],
    *[("sample", rf"{re.escape(s)}.*: raw, 2 processes, CPU time$", "frames/CPU-s", "") for s in SETS],
    ("quantizer", r"ours fwd\+bwd, K=512", "ms", "<= 0.5"),
    ("quantizer", r"ours fwd\+bwd, channels-last", "ms", ""),
    ("train-step", r"fp32 step FLOP/s", "GFLOP/s", ">= 0.3"),
    ("train-step", r"bf16\+channels-last step FLOP/s", "GFLOP/s", ""),
    ("train-step", r"bf16\+channels-last step$", "ms", ""),
    ("train-step", r"fp32 channels-last step", "ms", ""),
    ("train-step", r"data \(gather \+ uint8->float\)", "ms", ""),
    ("train-loop", r"data path per step", "ms", "<= 0.05"),
    ("train-loop", r"prior step, batch", "ms", ""),
    ("train-loop", r"prior training, \d+", "s", ""),
    ("generate", r"generate \(rollout \+ decode\)", "frames/s", ""),
    ("generate", r"prior rollout alone", "frames/s", ""),
    ("generate", r"pick_codes draw", "ms", ""),
    ("memory", r"sample, 200-frame 640x360 video \(10x longer\)", "MiB", "<= 1.2"),
    ("memory", r"control: the 200-frame video read whole", "MiB", ""),
    ("memory", r"default training run, train\(\) worker", "MiB", "<= 1.0"),
]
COLUMNS = ["bench", "figure", "value", "reference", "ref value", "unit", "ratio", "target", "met"]


def table_rows(stdout: str) -> list[dict[str, str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells and cells[0] == COLUMNS, cells[:1]
    return [dict(zip(COLUMNS, c)) for c in cells[2:]]  # after the header and its rule


@pytest.mark.slow
def test_run_all_quick_prints_every_row(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, str(REPO / "bench" / "run_all.py"), "--quick"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    head = out.stdout.splitlines()
    assert head[0].startswith("# vqvideo benchmarks") and "CPUs" in head[1] and "torch" in head[1]
    rows = table_rows(out.stdout)
    assert len(rows) == len(EXPECTED), [r["figure"] for r in rows]
    for bench, figure, unit, target in EXPECTED:
        found = [r for r in rows if (r["bench"], r["unit"]) == (bench, unit) and re.match(figure, r["figure"])]
        assert len(found) == 1, (bench, figure, unit, [r["figure"] for r in rows if r["bench"] == bench])
        r = found[0]
        assert r["target"] == target, r
        value, ref, ratio = float(r["value"]), float(r["ref value"]), float(r["ratio"])
        assert value > 0 and ref > 0 and math.isfinite(value) and math.isfinite(ref), r
        assert ratio == pytest.approx(value / ref, rel=0.01, abs=2e-3), r  # both rounded to 4 digits
        if target:
            op, bound = target.split()
            met = ratio <= float(bound) if op == "<=" else ratio >= float(bound)
            # the verdict follows the printed ratio, except where rounding to 3 digits hides the side
            assert r["met"] == ("yes" if met else "NO") or abs(ratio - float(bound)) < 1e-3, r
        else:
            assert r["met"] == "", r
    # the control shows the peak-RSS measurement sees memory that grows with a video
    control = next(r for r in rows if r["figure"].startswith("control:"))
    assert float(control["ratio"]) > 1.2, control
    assert "targets met" in out.stdout and "FAILED" not in out.stdout
    assert not list(tmp_path.glob("vqvideo_bench_*")), "run_all left its temporary folder behind"
