"""Preemption across hosts: two real processes (jax.distributed on 127.0.0.1) run the real train
loop with FSDP spanning both (parameters and optimizer state split over their 4 devices, each
process writing its own shards); SIGTERM reaches one of them; both save the same step through
JAX's preemption sync point and exit 0; running the command again finishes with the exact
state of an uninterrupted run."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tests.test_multihost import free_port, wait_all
from tests.test_train import assert_logged_once
from tests.train_common import assert_same_state, clip_config, fsdp_across_hosts, saved_state

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS, PAUSE = 20, 0.15


def launch(workdir, pause=PAUSE) -> list[subprocess.Popen]:
    """The same command on two processes, as a cluster scheduler would start it."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    port = str(free_port())
    command = [sys.executable, "-m", "tests.train_worker", str(workdir), str(STEPS), str(pause)]
    return [
        subprocess.Popen(
            [*command, str(i), "2", port],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]


def results(procs) -> list[dict]:
    """What `train()` returned in each process (all must exit 0)."""
    return [json.loads(log.split("RESULT ")[-1].splitlines()[0]) for log in wait_all(procs)]


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes_exactly(data_dir, tmp_path):
    from contrastive_jax import data

    data.load_source("shapes_count", "train", config="tiny")  # prepared once, before the workers read it
    reference = launch(tmp_path / "uninterrupted", pause=0.0)
    preempted = launch(tmp_path / "preempted")
    metrics = tmp_path / "preempted" / "metrics.jsonl"
    for _ in range(6000):
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        if any(p.poll() is not None for p in preempted):
            break
        time.sleep(0.05)
    preempted[1].send_signal(signal.SIGTERM)  # the scheduler's notice reaches one host only
    stopped = results(preempted)
    assert stopped[0] == stopped[1] and "stopped_at" in stopped[0], stopped
    step = stopped[0]["stopped_at"]
    assert 3 <= step < STEPS
    assert (tmp_path / "preempted" / "checkpoints" / str(step)).is_dir()
    # Each process wrote its own shards (a replicated state is written by process 0 alone).
    state_dir = tmp_path / "preempted" / "checkpoints" / str(step) / "state"
    written = [sum(f.stat().st_size for f in (state_dir / f"ocdbt.process_{i}").rglob("*")) for i in (0, 1)]
    assert min(written) > 0.3 * sum(written), written

    assert results(launch(tmp_path / "preempted", pause=0.0)) == [{"steps": STEPS}] * 2
    assert results(reference) == [{"steps": STEPS}] * 2
    config = fsdp_across_hosts(clip_config(STEPS))
    assert_same_state(
        saved_state(tmp_path / "preempted", config)[1], saved_state(tmp_path / "uninterrupted", config)[1]
    )
    assert_logged_once(tmp_path / "preempted", STEPS, note=f"preempted at step {step}")
