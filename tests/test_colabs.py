"""The Colab notebooks run top to bottom (with small settings: CJAX_NOTEBOOK_SMOKE=1)."""

import os
import pathlib
import re

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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_its_story_an_install_cell_and_stored_outputs(path):
    """What a reader on GitHub or Colab meets: a title, an install cell that works, the plots."""
    notebook = nbformat.read(path, as_version=4)
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    install = next(c for c in notebook.cells if c.cell_type == "code").source
    assert 'importlib.util.find_spec("contrastive_jax") is None' in install and "REPO_URL" in install
    assert "#" not in install.split("pip", 1)[0].splitlines()[-1]  # the pip line is live code
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outputs, f"{path.name} has no stored outputs: run `make notebooks`"
    assert not [o for o in outputs if o.output_type == "error"]
    if "plt." in "".join(c.source for c in notebook.cells):
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} stores no plot"
    lines = [line for c in notebook.cells if c.cell_type == "code" for line in c.source.splitlines()]
    private = [line for line in lines if re.search(r"\._[a-z]|import _[a-z]", line)]
    assert not private, private  # public APIs only


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
