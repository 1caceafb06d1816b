"""Imports go one way: core ← exporters ← service ← loadtests ← top (pipeline, checks, CLI); reports stand on the
core alone. Read from the source with `ast` (every import, function-level ones included), so no upward import can
hide behind laziness."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "exporters", "loadtests", "reports")
TOP = ("bench.app.pipeline", "bench.app.cli", "bench.app.checks", "bench.app.tune", "bench.__main__")
# layer -> the layers it may import from (itself included)
ALLOWED = {
    "core": {"core"},
    "exporters": {"core", "exporters"},
    "service": {"core", "exporters", "service"},
    "loadtests": {"core", "exporters", "service", "loadtests"},
    "reports": {"core", "reports"},
    "top": {"core", "exporters", "service", "loadtests", "reports", "top"},
}


def layer(module: str) -> str:
    if module == "bench.service" or module.startswith("bench.service."):
        return "service"
    if any(module == t or module.startswith(t + ".") for t in TOP):
        return "top"
    root = module.split(".")[0]
    return {"bench": "core", "exporters": "exporters", "loadtests": "loadtests", "reports": "reports"}[root]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of one of our packages in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, m) for line, m in found if m.split(".")[0] in PACKAGES and is_module(m)]


def is_module(name: str) -> bool:
    """`from bench import paths` names a module; `from bench.core.errors import BenchError` names a class."""
    base = REPO.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def violations() -> list[str]:
    return [v for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))
            for v in file_violations(path, module_name(path), str(path.relative_to(REPO)))]


def file_violations(path: Path, module: str, shown: str) -> list[str]:
    """The imports in `path`, read as the module `module`, that go against the layers."""
    here = layer(module)
    return [f"{shown}:{line} ({here}) imports {target} ({layer(target)})" for line, target in imported(path)
            if layer(target) not in ALLOWED[here]]


def test_imports_go_one_way():
    assert violations() == []


@pytest.mark.parametrize("module,expected", [("bench.core.records", "core"), ("bench.service.app", "service"),
                                             ("bench.app.checks.engine", "top"), ("bench.app.cli", "top"),
                                             ("reports.render", "reports"), ("loadtests.sweep", "loadtests")])
def test_layers_are_named_as_designed(module, expected):
    assert layer(module) == expected


def test_an_upward_import_is_caught(tmp_path):
    """A core module importing the pipeline (or a reports module importing loadtests) is reported; the probe is
    written outside the checkout and read as if it were bench/_layer_probe.py."""
    probe = tmp_path / "_layer_probe.py"
    probe.write_text("def f():\n    from bench.app.pipeline import prepare\n    import loadtests.sweep\n", encoding="utf-8")
    assert file_violations(probe, "bench._layer_probe", "bench/_layer_probe.py") == [
        "bench/_layer_probe.py:2 (core) imports bench.app.pipeline (top)",
        "bench/_layer_probe.py:3 (core) imports loadtests.sweep (loadtests)"]
    reports = tmp_path / "probe_report.py"
    reports.write_text("import loadtests.sweep\n", encoding="utf-8")
    assert file_violations(reports, "reports.probe_report", "reports/probe_report.py") == [
        "reports/probe_report.py:1 (reports) imports loadtests.sweep (loadtests)"]
