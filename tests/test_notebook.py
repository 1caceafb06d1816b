"""Every notebook in notebooks/ runs headless (nbclient) against a saved results file and a results store of three
runs from two hosts, and is stored clean."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
RESULTS = Path(__file__).parent / "data" / "report_run_loadtests.json"


def test_there_are_notebooks_to_run():
    # Parametrising over an empty glob would pass silently; this keeps "every notebook is tested" honest.
    assert NOTEBOOKS, "notebooks/ has no .ipynb: the glob below would test nothing"


@pytest.fixture(scope="module")
def store_runs(tmp_path_factory) -> Path:
    """Three runs from two hosts with their stores (tests/test_store.py), for the notebook's cross-run cells."""
    from tests.test_store import three_stored_runs

    return three_stored_runs(tmp_path_factory.mktemp("store"))


def texts(output) -> str:
    """What an output shows as text: a print's stream, or a display's plain-text form."""
    return output.get("text", "") + output.get("data", {}).get("text/plain", "")


@pytest.mark.e2e
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_headless(path, monkeypatch, store_runs):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("STRUCTBENCH_RESULTS", str(RESULTS))
    monkeypatch.setenv("STRUCTBENCH_STORE", str(store_runs))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3, "expected the CDF, sweep and QPS plots"
    assert any(RESULTS.name in o.get("text", "") for o in outputs), "the notebook did not load STRUCTBENCH_RESULTS"
    shown = "\n".join(texts(o) for o in outputs)
    assert "3 runs from 2 hosts" in shown, "the notebook did not read the store at STRUCTBENCH_STORE"
    assert "cheapest at 500 req/s (P95 <= 300 ms): int8 batching on AMD EPYC 2c (run tinyq-test-loadtests)" in shown
    assert "Intel Xeon Platinum 8375C 8c + NVIDIA T4" in shown and "p50_lo_ms" in shown  # P50 by host


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"cells {dirty} of {path.name} carry outputs: clear them before committing"
