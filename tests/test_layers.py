"""Imports go one way, and no package's modules import each other in a circle: the import-linter contracts in
pyproject.toml (`[tool.importlinter]`, run by `make lint`) hold on the real tree, and they catch an upward import
and a cycle when one is put into a copy of it. import-linter reads every import from the source (function-level
and TYPE_CHECKING ones included), so no upward import can hide behind laziness."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "exporters", "loadtests", "reports")
CONFIG = REPO / "pyproject.toml"

importlinter_api = pytest.importorskip("importlinter.api", reason="import-linter is a dev dependency")


def contract_names() -> dict[str, str]:
    """{contract id: name} as configured in pyproject.toml."""
    return {c["id"]: c["name"] for c in importlinter_api.read_configuration(str(CONFIG))["contracts_options"]}


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` over the packages under `root` with the checkout's contracts. Nothing is written: no cache,
    and the packages are only read (found through PYTHONPATH, ahead of any installed copy)."""
    cmd = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
           "--no-logo", "--no-cache", "--config", str(CONFIG)]
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_contracts_are_the_layers_and_the_no_cycle_rule():
    assert set(contract_names()) == {"layers", "acyclic"}


def test_the_import_contracts_hold():
    out = lint_imports(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BROKEN" not in out.stdout and "0 broken" in out.stdout


def test_an_upward_import_and_a_cycle_break_the_contracts(tmp_path):
    """A core module importing the pipeline, and a loadtests module importing the sweep that imports it, in a copy
    of the four packages outside the checkout: lint-imports fails and names both broken contracts."""
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    with open(tmp_path / "bench" / "core" / "records.py", "a", encoding="utf-8") as fh:
        fh.write("\n\ndef _probe():\n    from bench.app.pipeline import prepare\n\n    return prepare\n")
    with open(tmp_path / "loadtests" / "windows.py", "a", encoding="utf-8") as fh:
        fh.write("\n\ndef _probe():\n    from loadtests import sweep\n\n    return sweep\n")
    out = lint_imports(tmp_path)
    report = out.stdout + out.stderr
    assert out.returncode == 1, report
    names = contract_names()
    assert f"{names['layers']} BROKEN" in report and f"{names['acyclic']} BROKEN" in report, report
    assert "bench.core.records -> bench.app.pipeline" in report, report
    assert "No cycles are allowed in loadtests." in report and ".windows -> .sweep" in report, report
