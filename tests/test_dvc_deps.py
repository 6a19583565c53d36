"""dvc.yaml's deps are exactly the source files each stage runs: editing any of them re-runs the
stage and what follows, and nothing else does.

A stage's files are its module, `src/vqvideo/stages/<stage>.py` (or every module of the package
`stages/<stage>/`), and everything it imports within `vqvideo`, transitively, read with `ast`:
imports at the top and inside functions alike, `from vqvideo.x import y` meaning the module
`vqvideo/x/y.py` when there is one and `vqvideo/x.py` (or `x/__init__.py`) otherwise, relative
imports resolved against the importing module. Not counted: `cli.py` and `__main__.py`, which
start a stage but no stage imports (an argument both the command line and a stage module read is
the stage module's own), and a package's `__init__.py` that Python runs only as the parent of an
imported module and that holds nothing but a docstring and literal constants (the test checks
that it does; once such a file gains code it is counted like any other).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = "vqvideo"
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The source file of the module `name` (dotted), or None when it is not a module of ours."""
    base = SRC.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _walk(node: ast.AST):
    """ast.walk, less the bodies of `if TYPE_CHECKING:` (imports that never run)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            for n in [child.test, *child.orelse]:
                yield from _walk(n)
            continue
        yield from _walk(child)


@cache
def explicit_imports(path: Path) -> frozenset[str]:
    """The `vqvideo` modules `path` imports by name, anywhere in the file."""
    out: set[str] = set()
    for node in _walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..x import y
                base = _package_of(path).split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from mod import y`: the submodule mod.y where there is one, else a name in mod
            names = [f"{mod}.{a.name}" if module_file(f"{mod}.{a.name}") else mod for a in node.names]
        else:
            continue
        out.update(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))
    return frozenset(out)


def trivial(path: Path) -> bool:
    """A docstring, `from __future__` and constants: nothing a stage's behaviour could hang on."""
    for stmt in ast.parse(path.read_text()).body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            continue
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
            try:
                ast.literal_eval(stmt.value)
                continue
            except ValueError:
                pass
        return False
    return True


def stage_roots(stage: str) -> list[Path]:
    mod = SRC / PACKAGE / "stages" / stage
    if mod.is_dir():
        return sorted(mod.rglob("*.py"))
    assert mod.with_suffix(".py").is_file(), f"stage {stage!r}: no module src/{PACKAGE}/stages/{stage}.py"
    return [mod.with_suffix(".py")]


def stage_files(stage: str) -> set[Path]:
    """Every source file the stage runs (see the module docstring for what counts)."""
    seen: set[Path] = set()
    todo = [(p, True) for p in stage_roots(stage)]
    while todo:
        path, named = todo.pop()
        if path in seen:
            continue
        if named or not trivial(path):
            seen.add(path)
        for name in explicit_imports(path):
            parts = name.split(".")
            for i in range(1, len(parts)):  # the parent packages Python runs first
                parent = module_file(".".join(parts[:i]))
                if parent is not None:
                    todo.append((parent, False))
            f = module_file(name)
            assert f is not None, f"{path.relative_to(REPO)} imports {name}, which is not a file in src/"
            todo.append((f, True))
    return seen


def listed(stage: str) -> tuple[set[Path], set[Path]]:
    """(source files, source folders) named in the stage's deps."""
    files, folders = set(), set()
    for d in DVC[stage].get("deps", []):
        p = REPO / d
        if p.is_relative_to(SRC):
            (folders if p.is_dir() else files).add(p)
    return files, folders


def rel(paths) -> list[str]:  # noqa: ANN001
    return sorted(str(p.relative_to(REPO)) for p in paths)


@pytest.mark.parametrize("stage", sorted(DVC))
def test_deps_list_every_source_file_the_stage_imports(stage):
    files, folders = listed(stage)
    needed = stage_files(stage)
    missing = {p for p in needed if p not in files and not any(p.is_relative_to(d) for d in folders)}
    assert not missing, (
        f"dvc.yaml stage {stage!r} imports, but does not list in its deps: {rel(missing)}; add them, "
        "or editing them leaves the stage and what follows it 'up to date'")


@pytest.mark.parametrize("stage", sorted(DVC))
def test_deps_list_no_source_file_the_stage_does_not_import(stage):
    files, folders = listed(stage)
    needed = stage_files(stage)
    in_folders = {p for d in folders for p in d.rglob("*.py") if not trivial(p)}
    extra = (files | in_folders) - needed
    assert not extra, (f"dvc.yaml stage {stage!r} lists in its deps source files it never imports: "
                       f"{rel(extra)}; remove them, or editing them re-runs the stage for nothing")
    missing = [str(p.relative_to(REPO)) for p in files if not p.is_file()]
    assert not missing, f"dvc.yaml stage {stage!r} lists source files that do not exist: {missing}"


def test_the_files_left_out_hold_nothing_a_stage_runs():
    """The parent `__init__.py` files skipped above are trivial; cli.py imports the stages, not
    the other way round."""
    counted = set().union(*(stage_files(s) for s in DVC))
    for init in sorted((SRC / PACKAGE).rglob("__init__.py")):
        assert init in counted or trivial(init), init
    for stage in DVC:
        names = {p.name for p in stage_files(stage) if p.parent == SRC / PACKAGE}
        assert not names & {"cli.py", "__main__.py"}, stage


def test_the_import_reader_resolves_modules_names_and_relative_imports():
    files = stage_files("train")
    assert SRC / PACKAGE / "stages" / "train.py" in files
    assert SRC / PACKAGE / "models" / "quantizer.py" in files  # imported inside a function
    assert SRC / PACKAGE / "io.py" in files  # from vqvideo.io import ..., inside a function
    # `from vqvideo import tracking`: the module tracking.py, not vqvideo/__init__.py
    assert SRC / PACKAGE / "tracking" / "__init__.py" in files
    assert SRC / PACKAGE / "__init__.py" not in files
    assert all(p.is_relative_to(SRC / PACKAGE) for p in files)


def test_no_stage_module_imports_another_stage():
    """Stages are entry points: what two of them share lives in the library, once."""
    stages = SRC / PACKAGE / "stages"
    for path in sorted(stages.rglob("*.py")):
        own = path.relative_to(stages).parts[0].removesuffix(".py")
        for name in explicit_imports(path):
            parts = name.split(".")
            if parts[:2] == [PACKAGE, "stages"] and len(parts) > 2:
                assert parts[2] == own, f"{path.relative_to(REPO)} imports {name}: move what they share into the library"
