"""Two structbench processes on one run folder and on one cold model (bench.core.paths.locked). Before: each process
saved its own copy of results.json, so the records the other one added meanwhile were lost; two cold builds of one
model shared the same `.partial` folder, and one deleted the other's files while it wrote them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core.results import load_run
from tests.conftest import REPO

pytestmark = pytest.mark.faults

DATA = REPO / "tests" / "data"

# Each writer holds a copy of the run taken before the other wrote (as a sweep beside `bench all` does), waits until
# both are ready, then adds one cell under its own key.
WRITER = """
import sys, time
from dataclasses import replace
from pathlib import Path
from bench.app.pipeline import RunContext
from bench.core.results import load_run
run_dir, tag, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
run = load_run(run_dir)
ctx = RunContext(run_dir, run, run_dir, None)
(run_dir / f"ready-{tag}").touch()
while not go.exists():
    time.sleep(0.01)
cell = replace(run.cells[0], spec=replace(run.cells[0].spec, backend=f"ort-int8-cpu-{tag}"))
ctx.update(lambda r: r.with_cell(cell))
"""


def test_two_processes_adding_to_one_run_keep_each_others_records(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text((DATA / "report_run.json").read_text(encoding="utf-8"), encoding="utf-8")
    before = len(load_run(run_dir).cells)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir), tag, str(go)], cwd=REPO)
             for tag in ("a", "b")]
    try:
        while not all((run_dir / f"ready-{t}").exists() for t in ("a", "b")):
            assert all(p.poll() is None for p in procs), "a writer died before it was ready"
        go.touch()
        assert [p.wait(60) for p in procs] == [0, 0]
    finally:
        for p in procs:
            p.kill()
    keys = {c.spec.backend for c in load_run(run_dir).cells}
    assert {"ort-int8-cpu-a", "ort-int8-cpu-b"} <= keys and len(load_run(run_dir).cells) == before + 2


BUILDER = """
import sys
from bench.model.sources import materialize
print(materialize("twin:tiny"))
"""


def test_two_cold_builds_of_one_model_both_get_the_finished_folder(tmp_path):
    env = {**os.environ, "STRUCTBENCH_HOME": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-600:] for _, err in outs]
    folders = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(folders) == 1
    folder = Path(folders.pop())
    assert json.loads((folder / "source.json").read_text()) and (folder / "config.json").is_file()
    assert not folder.with_name(folder.name + ".partial").exists()
