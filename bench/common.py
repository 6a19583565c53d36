"""Shared by the benchmarks: a timer, one table of figure | reference | ratio, and helpers.

Every figure is printed beside a reference measured in the same run on the same machine, so a
busy or slow machine shifts both and the ratio stays meaningful. Each bench module exposes
`TITLE` and `rows(quick=False, ...) -> list[Row]`; `run_all.py` gathers them into one table.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


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


def format_table(rows: list[Row], groups: list[str] | None = None) -> str:
    """A markdown table; `groups` (one per row) adds a leading column naming each row's benchmark."""
    head = ("figure", "value", "reference", "ref value", "unit", "ratio", "target", "met")
    body = [(r.figure, _fmt(r.value), r.reference, _fmt(r.ref_value), r.unit, f"{r.ratio:.3f}",
             r.target, r.met) for r in rows]
    if groups is not None:
        head = ("bench", *head)
        body = [(g, *b) for g, b in zip(groups, body)]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]

    def line(cells) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), rule, *map(line, body)])


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n## {title}\n")
    print(format_table(rows))


def standalone(title: str, rows: Callable[[bool], list[Row]], description: str, quick_help: str) -> None:
    """A bench module run on its own: `--quick`, the machine line, its table and the time taken."""
    import argparse

    t0 = time.perf_counter()
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    table = rows(ap.parse_args().quick)
    print(machine())
    print_table(title, table)
    print(f"\n({time.perf_counter() - t0:.0f} s)")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line naming what the numbers were measured on, and how busy it was."""
    threads = torch.get_num_threads()
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu_model()}, {os.cpu_count()} CPUs{load}{gpu}; torch {torch.__version__}, "
            f"{threads} thread(s) (OMP_NUM_THREADS={omp}); Python {platform.python_version()}")


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


# ---------------------------------------------------------------- peak memory of a child process

# Appended to a child's code: prints the process's peak RSS in KiB as its last stdout line.
# VmHWM is this process image's own peak; ru_maxrss would also count the parent's RSS at fork
# time, which Linux carries across exec (and the benchmark's own process is big).
PRINT_PEAK = """
try:
    _status = open("/proc/self/status").read()
    print(next(l.split()[1] for l in _status.splitlines() if l.startswith("VmHWM:")))
except OSError:
    import resource
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def child_peaks_mib(jobs: dict[str, tuple[str, list]]) -> dict[str, float]:
    """{name: peak RSS in MiB} of each job (code, argv[1:]) run in its own fresh Python. The jobs
    run at the same time: a process's own peak does not depend on its neighbours, only the wall
    clock does (and this saves a torch import's time per job)."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    procs = {name: subprocess.Popen([sys.executable, "-c", code + PRINT_PEAK, *map(str, args)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (code, args) in jobs.items()}
    peaks, errors = {}, []
    for name, proc in procs.items():
        out, err = proc.communicate()
        if proc.returncode:
            errors.append(f"{name} (exit {proc.returncode}):\n{err[-3000:]}")
        else:
            peaks[name] = int(out.split()[-1]) / 1024  # KiB on Linux
    if errors:
        raise RuntimeError("benchmark child failed: " + "\n".join(errors))
    return peaks


# ---------------------------------------------------------------- shared inputs


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow stderr (progress bars the stages draw with an explicit `disable=`)."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


_WORK: list[Path] = []


def work_dir() -> Path:
    """One temporary folder per process, shared by the benchmarks and removed at exit."""
    if not _WORK:
        _WORK.append(Path(tempfile.mkdtemp(prefix="vqvideo_bench_")))
        atexit.register(shutil.rmtree, _WORK[0], True)
    return _WORK[0]


QUICK_VIDEOS = 20  # Moving Digits videos in --quick mode (the default params collect 500)
_FRAMES: dict[tuple[bool, Path], Path] = {}


def default_frames(quick: bool, params_path: Path = REPO / "params.yaml") -> Path:
    """data/frames of the default params (Moving Digits), made by the real collect and sample
    stages in the shared temporary folder, once per process; --quick collects fewer videos."""
    from vqvideo.config import load_params
    from vqvideo.stages.collect import collect
    from vqvideo.stages.sample import sample
    from vqvideo.utils import resolve_workers

    key = (quick, Path(params_path).resolve())
    if key not in _FRAMES:
        params = load_params(params_path)
        root = Path(tempfile.mkdtemp(prefix="digits_", dir=work_dir()))
        cfg = params.collect.model_copy(update={"num_videos": QUICK_VIDEOS} if quick else {})
        with quiet():
            collect(cfg, root / "raw", workers=resolve_workers(cfg.workers))
            sample(params.sample, root / "raw", root / "frames", workers=resolve_workers(params.sample.workers))
        _FRAMES[key] = root / "frames"
    return _FRAMES[key]

