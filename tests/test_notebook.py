"""Every notebook in notebooks/ runs headless (nbclient) against a saved results file, and is stored clean."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
RESULTS = Path(__file__).parent / "data" / "report_run_loadtests.json"


def test_there_are_notebooks_to_run():
    # Parametrising over an empty glob would pass silently; this keeps "every notebook is tested" honest.
    assert NOTEBOOKS, "notebooks/ has no .ipynb: the glob below would test nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_headless(path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("STRUCTBENCH_RESULTS", str(RESULTS))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3, "expected the CDF, sweep and QPS plots"
    assert any(RESULTS.name in o.get("text", "") for o in outputs), "the notebook did not load STRUCTBENCH_RESULTS"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"cells {dirty} of {path.name} carry outputs: clear them before committing"
