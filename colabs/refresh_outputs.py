"""Re-executes the notebooks with their full settings and stores their outputs (`make notebooks`).

    python colabs/refresh_outputs.py [NAME ...]     # all notebooks, or the named ones

The stored outputs are what a reader sees on GitHub; the test suite runs the same notebooks with
small settings (CJAX_NOTEBOOK_SMOKE=1) and never writes them back.
"""

import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def refresh(path: pathlib.Path) -> float:
    started = time.time()
    notebook = nbformat.read(path, as_version=4)
    os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend stores the figures
    os.environ["TQDM_DISABLE"] = "1"  # progress bars would store hundreds of lines
    os.environ.pop("CJAX_NOTEBOOK_SMOKE", None)
    os.environ.pop("XLA_FLAGS", None)  # each notebook chooses its own devices
    NotebookClient(notebook, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(notebook, path)
    return time.time() - started


if __name__ == "__main__":
    names = sys.argv[1:]
    paths = [HERE / f"{n}.ipynb" for n in names] if names else sorted(HERE.glob("*.ipynb"))
    for path in paths:
        print(f"{path.name}: {refresh(path):.0f} s", flush=True)
