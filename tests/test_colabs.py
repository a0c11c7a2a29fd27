"""The Colab notebooks run top to bottom (with small settings: CJAX_NOTEBOOK_SMOKE=1)."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colabs").glob("*.ipynb"))


def test_the_four_colabs_exist():
    assert {p.stem for p in NOTEBOOKS} >= {
        "losses_tour",
        "train_tiny_clip",
        "distributed_negatives",
        "temperatures",
    }


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, data_dir, monkeypatch):
    monkeypatch.setenv("CJAX_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # each notebook chooses its own devices
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors
