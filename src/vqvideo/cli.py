"""`vqvideo <stage>` and `python -m vqvideo <stage>`.

Every problem with the user's input ends in one line naming it and what to do, and a non-zero
exit code; `--debug` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from vqvideo.stages import STAGES

log = logging.getLogger("vqvideo")

EXTRA_COMMANDS = {"apply-best": "vqvideo.stages.tune:apply_best_main"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqvideo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in STAGES:
        module = importlib.import_module(f"vqvideo.stages.{name}")
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        _common(p)
        module.add_arguments(p)
    from vqvideo.stages import tune

    p = sub.add_parser("apply-best", help="write the best tuning trial's params into params.yaml")
    _common(p)
    tune.add_apply_arguments(p)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="the params file")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def main(argv: list[str] | None = None) -> int:
    from vqvideo.errors import VQVideoError
    from vqvideo.utils import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    target = EXTRA_COMMANDS.get(args.command, f"vqvideo.stages.{args.command}:main")
    module_name, fn = target.split(":")
    try:
        getattr(importlib.import_module(module_name), fn)(args)
    except VQVideoError as err:
        if args.debug:
            raise
        print(f"vqvideo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vqvideo {args.command}: interrupted; re-run to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0
