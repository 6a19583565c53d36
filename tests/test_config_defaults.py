"""One source of defaults: params.yaml names every key config.py knows, with the code's default.

params.yaml is what runs (DVC passes it to every stage); config.py's defaults are what a bare
`TrainConfig()` or a params file missing a key would use. When the two disagree, a test or a
library caller silently trains something else than the pipeline does.
"""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from vqvideo.config import Params

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())

def _sections() -> list:
    return list(Params.model_fields)


def test_params_yaml_has_exactly_the_sections_of_config_py():
    assert list(PARAMS) == list(Params.model_fields)


@pytest.mark.parametrize("section", _sections())
def test_params_yaml_and_the_code_defaults_agree(section):
    model = Params.model_fields[section].annotation
    in_yaml = PARAMS.get(section) or {}
    problems = [f"{section}.{k}: in config.py only (add it to params.yaml)"
                for k in model.model_fields if k not in in_yaml]
    problems += [f"{section}.{k}: in params.yaml only (config.py rejects it)"
                 for k in in_yaml if k not in model.model_fields]
    # both through the model and back to plain values: (0.05, 2.0) equals [0.05, 2.0], 3 equals 3.0
    yaml_values = model.model_validate(
        {k: v for k, v in in_yaml.items() if k in model.model_fields}).model_dump(mode="json")
    defaults = model.model_construct().model_dump(mode="json")
    for key, field in model.model_fields.items():
        if key not in in_yaml:
            continue
        if field.is_required():
            problems.append(f"{section}.{key}: no default in config.py")
        elif defaults[key] != yaml_values[key]:
            problems.append(f"{section}.{key}: config.py {defaults[key]!r}, params.yaml {yaml_values[key]!r}")
    assert not problems, "params.yaml and config.py disagree:\n  " + "\n  ".join(problems)
