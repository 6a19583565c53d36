"""Shared by the benchmarks: a timer and one table of figure | reference | ratio.

Every figure is printed beside a reference measured in the same run on the same machine, so a
busy or slow machine shifts both and the ratio stays meaningful.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Row:
    figure: str  # what was measured, e.g. "ours fwd+bwd"
    value: float
    reference: str  # what it is compared with, e.g. "vector-quantize-pytorch fwd+bwd"
    ref_value: float
    unit: str  # of value and ref_value
    target: str = ""  # e.g. "<= 0.5"; empty when the row is informative only

    @property
    def ratio(self) -> float:
        return self.value / self.ref_value if self.ref_value else float("nan")

    @property
    def met(self) -> str:
        if not self.target:
            return ""
        op, bound = self.target.split()
        ok = self.ratio <= float(bound) if op == "<=" else self.ratio >= float(bound)
        return "yes" if ok else "NO"


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def format_table(rows: list[Row]) -> str:
    head = ("figure", "value", "reference", "ref value", "unit", "ratio", "target", "met")
    body = [(r.figure, _fmt(r.value), r.reference, _fmt(r.ref_value), r.unit, f"{r.ratio:.3f}",
             r.target, r.met) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]

    def line(cells) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), rule, *map(line, body)])


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n## {title}\n")
    print(format_table(rows))


def machine() -> str:
    """One line naming what the numbers were measured on."""
    threads = torch.get_num_threads()
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    return f"torch {torch.__version__}, {threads} thread(s) (OMP_NUM_THREADS={omp}), {os.cpu_count()} CPUs"


def median_time(fn: Callable[[], object], *, warmup: int = 2, repeat: int = 7) -> float:
    """Median wall time of fn() in seconds; the median shrugs off a neighbour's burst."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_times(fns: dict[str, Callable[[], object]], *, warmup: int = 2, repeat: int = 7) -> dict[str, float]:
    """Median time of each fn, running them in turn so that load changes hit all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_flops(n: int = 2048, dtype: torch.dtype = torch.float32, repeat: int = 5) -> float:
    """FLOP/s of an n x n matmul: the machine's practical ceiling for dense math."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / median_time(lambda: a @ b, warmup=1, repeat=repeat)
