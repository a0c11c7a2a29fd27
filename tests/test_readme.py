"""The README's code examples run as written (the first python block of "Five lines")."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_five_line_example_runs():
    text = README.read_text()
    section = text.split("## Five lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert np.isfinite(float(namespace["loss"]))
    assert all(np.isfinite(g).all() for g in namespace["grads"])
