"""`vqvideo <stage>` and `python -m vqvideo <stage>`.

Every problem with the user's input ends in one line naming it and what to do, and a non-zero
exit code; `--debug` (or VQVIDEO_DEBUG=1, for runs under `dvc repro`) shows the traceback too.
Only the chosen stage's module is imported: each stage starts seconds sooner than if all were.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path

from vqvideo.stages import STAGES

log = logging.getLogger("vqvideo")

EXTRA_COMMANDS = {
    "apply-best": "vqvideo.stages.tune:apply_best_main",
    "footage": "vqvideo.data.footage:main",
}
EXIT_USER_ERROR = 2  # a VQVideoError: the input is at fault
EXIT_BUG = 1  # anything else


def _summary(module_name: str) -> str:
    """The first docstring line of a module, read from its source without importing it."""
    spec = importlib.util.find_spec(module_name)
    try:
        doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) if spec and spec.origin else None
    except (OSError, SyntaxError):
        doc = None
    return (doc or "").strip().splitlines()[0] if doc else ""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported for its arguments (all when None, none when "")."""
    parser = argparse.ArgumentParser(prog="vqvideo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in STAGES:
        p = sub.add_parser(name, help=_summary(f"vqvideo.stages.{name}"))
        _common(p)
        if command in (None, name):
            importlib.import_module(f"vqvideo.stages.{name}").add_arguments(p)
    p = sub.add_parser("apply-best", help="write the best tuning trial's params into params.yaml")
    _common(p)
    if command in (None, "apply-best"):
        from vqvideo.stages import tune

        tune.add_apply_arguments(p)
    p = sub.add_parser("footage", help="film scikit-image's photos as camera pans and zooms: real footage to try")
    _common(p)
    if command in (None, "footage"):
        from vqvideo.data import footage

        footage.add_arguments(p)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="the params file")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def _command_of(argv: list[str]) -> str | None:
    """The sub-command named in `argv` (the first word that is not an option), if any."""
    known = {*STAGES, *EXTRA_COMMANDS}
    for a in argv:
        if not a.startswith("-"):
            return a if a in known else None
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so it unwinds like Ctrl-C."""


def _terminate(signum: int, _frame) -> None:  # noqa: ANN001
    # SIGTERM (a scheduler, `kill`, torchrun stopping a job) unwinds like Ctrl-C: temporary
    # outputs are removed and the MLflow run is closed, instead of the process just vanishing.
    raise Terminated(signum)


def describe_unexpected(err: BaseException) -> str:
    """One line for an error no check caught: what happened and how to see more."""
    if isinstance(err, MemoryError):
        return ("out of memory; lower train.batch_size / prior.batch_size / evaluate.batch_size "
                "or sample.size, then re-run")
    if isinstance(err, OSError) and err.strerror:
        where = f" ({err.filename})" if err.filename else ""
        return (f"{err.strerror}{where}; check the path, its permissions and the free disk space, "
                "then re-run")
    text = " ".join(str(err).split())[:300]
    return (f"unexpected {type(err).__name__}: {text or 'no message'}; re-run with --debug for the "
            "traceback and report it if the inputs look right")


def _check_params_early(command: str, argv: list[str], env_debug: bool) -> int | None:
    """Validate the params file; the exit code if it is invalid, None if it is fine."""
    from vqvideo.config import load_params
    from vqvideo.errors import ConfigError

    pre = argparse.ArgumentParser(add_help=False)
    _common(pre)
    known, _ = pre.parse_known_args(argv)
    try:
        load_params(known.params)
    except ConfigError as err:
        if known.debug or env_debug:
            raise
        print(f"vqvideo {command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except UnicodeDecodeError:
        if known.debug or env_debug:
            raise
        print(f"vqvideo {command}: error: {known.params} is not UTF-8 text; give a YAML params file",
              file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:  # a folder or an unreadable file given as --params
        if known.debug or env_debug:
            raise
        print(f"vqvideo {command}: error: {describe_unexpected(err)}", file=sys.stderr)
        return EXIT_BUG
    return None


def main(argv: list[str] | None = None) -> int:
    from vqvideo.errors import VQVideoError

    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_of(argv)
    env_debug = os.environ.get("VQVIDEO_DEBUG", "") not in ("", "0")
    if command in STAGES and not {"-h", "--help"} & set(argv):
        # params.yaml first, before the stage (and torch) is even imported: a typo in it is
        # reported in a fraction of a second, and certainly before any work is done.
        early = _check_params_early(command, argv, env_debug)
        if early is not None:
            return early
    args = build_parser(command or "").parse_args(argv)
    debug = args.debug or env_debug
    from vqvideo.utils import setup_logging

    setup_logging(debug)
    target = EXTRA_COMMANDS.get(args.command, f"vqvideo.stages.{args.command}:main")
    module_name, fn = target.split(":")
    prog = f"vqvideo {args.command}"
    old_term = signal.signal(signal.SIGTERM, _terminate)
    try:
        getattr(importlib.import_module(module_name), fn)(args)
    except VQVideoError as err:
        if debug:
            raise
        print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        print(f"{prog}: interrupted; re-run to resume from the last checkpoint", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)
    except Exception as err:  # noqa: BLE001 - the one place that turns any failure into one line
        if debug:
            raise
        print(f"{prog}: error: {describe_unexpected(err)}", file=sys.stderr)
        return EXIT_BUG
    finally:
        signal.signal(signal.SIGTERM, old_term)
    return 0
