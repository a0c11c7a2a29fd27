"""Two real processes (jax.distributed over 127.0.0.1, CPU collectives) equal one process."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.multihost_common import global_batch, train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_all(procs, timeout=300) -> list[str]:
    """Each process's output once all have exited 0 (the test fails with their logs otherwise)."""
    logs = []
    for proc in procs:
        try:
            logs.append(proc.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("multi-process run timed out")
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    return logs


@pytest.mark.slow
def test_two_processes_match_single_process(tmp_path):
    port, out = str(free_port()), tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.multihost_worker", str(i), port, str(out)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    wait_all(procs)
    results = json.loads(out.read_text())
    images, texts, params = global_batch()
    ref_loss, ref_params = train_step(params, images, texts)
    for exchange in ("all_gather", "ring"):
        np.testing.assert_allclose(results[exchange]["loss"], ref_loss, rtol=1e-5)
        np.testing.assert_allclose(results[exchange]["params"], ref_params, rtol=1e-5, atol=1e-6)
