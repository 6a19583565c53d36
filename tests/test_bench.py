"""bench/run_all.py --quick: every benchmark still runs and lands in the one table.

Runs the real script as a user would (tiny inputs); checks the machine line, the table's columns
and that every expected row is there with finite, positive figures and a consistent ratio and
target verdict. No timed asserts: the figures of a --quick run mean nothing.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from conftest import REPO

COLUMNS = ["bench", "figure", "value", "reference", "ref value", "unit", "ratio", "target", "met"]


def table_rows(stdout: str) -> list[dict[str, str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells and cells[0] == COLUMNS, cells[:1]
    return [dict(zip(COLUMNS, c)) for c in cells[2:]]  # after the header and its rule


@pytest.mark.slow
def test_run_all_quick_prints_every_row(tmp_path):
    """Every benchmark runs and prints finite rows: the wording of a row is the benchmark's own."""
    sys.path.insert(0, str(REPO / "bench"))
    from run_all import BENCHES

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, str(REPO / "bench" / "run_all.py"), "--quick"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    head = out.stdout.splitlines()
    assert head[0].startswith("# vqvideo benchmarks") and "CPUs" in head[1] and "torch" in head[1]
    rows = table_rows(out.stdout)
    assert {r["bench"] for r in rows} == set(BENCHES), [r["bench"] for r in rows]
    assert all(r["figure"] and r["unit"] for r in rows), rows
    for r in rows:
        value, ref, ratio = float(r["value"]), float(r["ref value"]), float(r["ratio"])
        assert value > 0 and ref > 0 and math.isfinite(value) and math.isfinite(ref), r
        assert ratio == pytest.approx(value / ref, rel=0.01, abs=2e-3), r  # both rounded to 4 digits
        if r["target"]:
            op, bound = r["target"].split()
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
