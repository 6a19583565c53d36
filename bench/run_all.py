"""Every benchmark, one table: each figure beside its reference measured in the same run.

    OMP_NUM_THREADS=1 python bench/run_all.py            # the figures (about 5 minutes on 2 cores)
    OMP_NUM_THREADS=1 python bench/run_all.py --quick    # tiny inputs, seconds: checks that all run
    OMP_NUM_THREADS=1 python bench/run_all.py --only memory,train-loop

Prints the machine line (CPU, load average, torch threads), then one table with a row per figure:
bench | figure | value | reference | ref value | unit | ratio | target | met. A reference is
measured in the same run on the same machine (raw OpenCV decode for sample, vector-quantize-pytorch
for the quantizer, a large fp32 matmul's FLOP/s for a training step, decoding alone for
generation, the short video or the 2 GiB budget for memory), so a busy machine shifts both and the
ratio keeps its meaning. Progress goes to stderr. With --quick the figures mean nothing (inputs
are shrunk to seconds); the rows are the same. Exit status 1 when a benchmark failed to run (its
traceback on stderr, the others still reported); a missed target is a figure, not a failure.
See docs/benchmarks.md for what each row means.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported; bars would interleave

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Row, format_table, machine  # noqa: E402

# name (the table's bench column, --only) -> module; in pipeline order
BENCHES = {
    "sample": "bench_sample",
    "quantizer": "bench_quantizer",
    "train-step": "bench_train_step",
    "train-loop": "bench_train_loop",
    "generate": "bench_generate",
    "memory": "bench_memory",
}


def run(names: list[str], quick: bool) -> tuple[list[tuple[str, Row]], list[str]]:
    """([(bench, row)], [names that failed]), running each benchmark's rows(quick=...)."""
    out: list[tuple[str, Row]] = []
    failed: list[str] = []
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(BENCHES[name])
            out += [(name, r) for r in module.rows(quick=quick)]
        except Exception:  # noqa: BLE001 - report it, run the others
            traceback.print_exc()
            failed.append(name)
        print(f"[{i}/{len(names)}] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return out, failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny inputs, one round each: checks that all run")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHES)}")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("vqvideo").setLevel(logging.ERROR)  # tiny --quick data warns of empty splits

    head = machine()  # before the run: the load average the run started under
    t0 = time.perf_counter()
    results, failed = run(names, args.quick)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# vqvideo benchmarks{' (--quick: shrunk inputs, figures not meaningful)' if args.quick else ''}")
    print(head)
    print()
    print(format_table([r for _, r in results], groups=[g for g, _ in results]))
    targets = [r for _, r in results if r.target]
    missed = [r.figure for r in targets if r.met != "yes"]
    print(f"\n{len(targets) - len(missed)} of {len(targets)} targets met; load average {load:.2f} at the end; "
          f"{time.perf_counter() - t0:.0f} s")
    if failed:
        print(f"FAILED to run: {', '.join(failed)} (tracebacks on stderr)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
