"""Shared fixtures: a tiny twin and its ONNX export, built once per test session in a temp home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core.quiet import quiet_libraries

REPO = Path(__file__).resolve().parent.parent
quiet_libraries()


@pytest.fixture(scope="session")
def bench_home(tmp_path_factory) -> Path:
    """All generated artifacts of the session go here (STRUCTBENCH_HOME), never into the checkout."""
    home = tmp_path_factory.mktemp("home")
    os.environ["STRUCTBENCH_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_model(bench_home) -> Path:
    from bench.model.sources import materialize

    return materialize("twin:tiny")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model) -> tuple[Path, dict]:
    from exporters.pipeline import ExportConfig, export_all

    # the default parity_n: a service the tests start exports with defaults and then reuses this folder
    return export_all(ExportConfig(model="twin:tiny"))


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m bench ...` in a fresh process, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def pytest_addoption(parser) -> None:
    parser.addoption("--fuzz-examples", type=int, default=40,
                     help="schemathesis/hypothesis examples per operation (make fuzz uses 1000)")
