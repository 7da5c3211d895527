"""notebook.ipynb: stored without outputs, and executes headless from top to bottom."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebook.ipynb"


def test_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    assert all(not cell.outputs and cell.execution_count is None for cell in code_cells)


@pytest.mark.slow
def test_notebook_executes_and_shows_the_data_check(tmp_path: Path) -> None:
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Raises CellExecutionError, naming the cell, if any cell fails.
    NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()

    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    texts = [o.get("text", "") for o in outputs if o.output_type == "stream"]
    errors = [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert errors == []
    assert any("Data check of" in text and "Imbalance ratio" in text for text in texts)
    assert any("test_accuracy" in text for text in texts)
    # The real model's section: every labelled real photo right, then the grid.
    assert any("9/9 labelled real photos right" in text for text in texts), texts
    assert len(images) >= 6  # balance, sizes, samples, input, curves, confusion, real
