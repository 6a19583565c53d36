"""params.yaml validation: bad values stop a stage at load time with one line naming the key."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO, repo_params, tiny_params_dict, write_params
from vqvideo.config import load_params, parse_params
from vqvideo.errors import ConfigError


def test_repo_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.model.arch in ("seed", "resnet")
    assert params.collect.source == "synthetic"


@pytest.mark.parametrize(
    "section,key,value,expect",
    [
        ("model", "codebook_size", 1, "model.codebook_size"),
        ("model", "beta", -0.1, "model.beta"),
        ("model", "arch", "vgg", "'seed' or 'resnet'"),
        ("train", "steps", "many", "train.steps"),
        ("sample", "channels", 2, "sample.channels"),
        ("collect", "source", "youtube", "collect.source"),
        ("prior", "heads", 5, "divisible"),
        ("tune", "codebook_sizes", [1, 4], "codebook_sizes"),
    ],
)
def test_bad_value_names_the_key(section, key, value, expect):
    data = repo_params()
    data[section][key] = value
    with pytest.raises(ConfigError) as err:
        parse_params(data)
    msg = str(err.value)
    assert expect in msg
    assert "\n" not in msg


def test_unknown_key_lists_allowed_keys():
    data = repo_params()
    data["model"]["codebok_size"] = 512
    with pytest.raises(ConfigError, match=r"unknown key 'model.codebok_size'.*codebook_size"):
        parse_params(data)


def test_unknown_and_missing_sections():
    data = repo_params()
    data["trian"] = {}
    with pytest.raises(ConfigError, match="unknown section 'trian'"):
        parse_params(data)
    data = repo_params()
    del data["prior"]
    with pytest.raises(ConfigError, match="missing section 'prior'"):
        parse_params(data)


def test_yaml_syntax_error_gives_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("model:\n  beta: [0.25\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line \d+"):
        load_params(path)


def test_yaml_is_read_safely(tmp_path):
    """A YAML tag that would build a Python object is refused, not executed."""
    path = tmp_path / "params.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_params(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="params file not found"):
        load_params("/nonexistent/params.yaml")


def test_tiny_params_roundtrip(tmp_path):
    path = write_params(tmp_path / "params.yaml", tiny_params_dict())
    params = load_params(path)
    assert params.train.steps == 12
    assert yaml.safe_load(path.read_text())["model"]["codebook_size"] == 32
