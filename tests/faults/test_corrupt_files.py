"""Corrupt files on disk: a results file, an export's manifest and a Parquet store cut short. Each is one clear line
or a rebuild, never a traceback or a silently wrong figure. (These passed before: kept as the suite's corrupt-file
cases.)"""

from __future__ import annotations

import shutil

import pytest

from bench.core import store
from bench.core.results import load_run
from tests.conftest import REPO

pytestmark = pytest.mark.faults

DATA = REPO / "tests" / "data"


def test_a_corrupt_results_file_is_one_error_line_and_exit_2(tmp_path, capsys):
    from bench.app.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text('{"run_id": "x", "cells": [', encoding="utf-8")  # cut short
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error:") and "corrupt" in err and "Traceback" not in err


def test_a_corrupt_manifest_is_rebuilt_with_a_note(tmp_path, capsys):
    from exporters.pipeline import MANIFEST, reusable

    (tmp_path / MANIFEST).write_bytes(b"\x00\x01 not json")
    assert reusable(tmp_path, "any-key") is None  # the export builds afresh
    assert "rebuilding" in capsys.readouterr().err


def test_a_parquet_store_cut_short_is_rebuilt_from_results_json(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(DATA / "report_run.json", run / "results.json")
    store.write_store(load_run(run), run)
    table = next((run / "store").glob("*.parquet"))
    table.write_bytes(table.read_bytes()[: len(table.read_bytes()) // 2])
    assert store.stored_tables(run) is None
    rebuilt = store.read_store([run])
    assert rebuilt["runs"].run_id.tolist() == ["run"] and len(rebuilt["cells"]) == len(load_run(run).cells)
