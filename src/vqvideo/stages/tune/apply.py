"""`vqvideo apply-best`: the best trial's values written into params.yaml, comments kept."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vqvideo.errors import ConfigError, VQVideoError

log = logging.getLogger(__name__)


def add_apply_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--best", type=Path, default=Path("reports/tuning/best_params.yaml"))


def apply_best(best_file: Path, params_file: Path) -> dict:
    """Write the best trial's values into params.yaml, keeping its comments and layout.

    The result is validated before anything is written: a best_params.yaml that does not fit
    the current params (a renamed key, an out-of-range value) leaves params.yaml untouched.
    """
    import io

    import yaml
    from ruamel.yaml import YAML

    from vqvideo.config import parse_params
    from vqvideo.io import write_text

    if not best_file.exists():
        raise VQVideoError(f"{best_file} not found; run `vqvideo tune` or `dvc repro tune` first")
    if not params_file.exists():
        raise ConfigError(f"params file not found: {params_file}; run from the repo root or pass --params")
    try:
        best = (yaml.safe_load(best_file.read_text()) or {})["params"]
        if not isinstance(best, dict) or not all(isinstance(v, dict) for v in best.values()):
            raise TypeError("params must map sections to values")
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise VQVideoError(f"{best_file} is not a vqvideo best_params.yaml ({err}); "
                           "re-run `vqvideo tune` to write it") from None
    rt = YAML()
    rt.preserve_quotes = True
    # ruamel writes None as an empty value by default; keep params.yaml's explicit `null`
    rt.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = rt.load(params_file.read_text())
    for section, values in best.items():
        if section not in doc:
            raise ConfigError(f"{params_file} has no section {section!r} for the best params; "
                              "is it the params file the study was run with?")
        for key, value in values.items():
            doc[section][key] = value
    buf = io.StringIO()
    rt.dump(doc, buf)
    try:  # never write an invalid file
        parse_params(yaml.safe_load(buf.getvalue()), str(params_file))
    except yaml.YAMLError as err:
        raise ConfigError(f"{params_file}: {getattr(err, 'problem', err)}; fix the file") from None
    write_text(params_file, buf.getvalue())
    return best


def apply_best_main(args: argparse.Namespace) -> None:
    best = apply_best(args.best, args.params)
    shown = ", ".join(f"{s}.{k}={v}" for s, values in best.items() for k, v in values.items())
    log.info("apply-best: %s written into %s; `dvc repro` retrains with them", shown, args.params)
