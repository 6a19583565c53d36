"""The layout the project keeps: MLflow behind one package, files of one concern."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vqvideo"
MAX_LINES = 400  # a file past this holds more than one concern: make it a package


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_mlflow_is_imported_by_the_tracking_package_alone():
    outside = [str(p.relative_to(SRC)) for p in sorted(SRC.rglob("*.py"))
               if "mlflow" in _imports(p) and p.parent != SRC / "tracking"]
    assert not outside, f"these import mlflow; go through vqvideo.tracking instead: {outside}"


def test_no_source_file_is_over_the_limit():
    long = {str(p.relative_to(SRC)): n for p in sorted(SRC.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
