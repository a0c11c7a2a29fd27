"""Checkpoints: exact round trip, damaged latest checkpoint skipped with a warning, SIGTERM flag."""

import logging
import os
import pathlib
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from contrastive_jax import losses
from contrastive_jax.train import Checkpointer, StopSignal


def make_state(value: float):
    params = {"w": jnp.full((3, 4), value), "b": jnp.arange(4.0) * value}
    return {
        "params": params,
        "opt_state": optax.adam(1e-3).init(params),
        "loss_state": losses.isogclr_init(6),
        "step": jnp.int32(0),
        "rng": jax.random.key_data(jax.random.key(1)),
    }


def test_round_trip_keeps_types_and_values(tmp_path):
    ckpt = Checkpointer(str(tmp_path))
    state = make_state(2.0)
    state["loss_state"] = state["loss_state"].replace(tau_image=jnp.linspace(0.01, 0.02, 6))
    ckpt.save(5, state, {"data": {"position": 17}}, force=True)
    ckpt.wait()
    step, restored, meta = ckpt.restore_latest(make_state(0.0))
    assert step == 5 and meta == {"data": {"position": 17}}
    assert type(restored["opt_state"]) is type(state["opt_state"])
    assert isinstance(restored["loss_state"], losses.ISogCLRState)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)
    ckpt.close()


def _damage(step_dir: pathlib.Path) -> None:
    """Overwrite the bytes of every stored array chunk of a finished checkpoint."""
    chunks = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert chunks
    for chunk in chunks:
        data = bytearray(chunk.read_bytes())
        for i in range(len(data) // 2, len(data)):
            data[i] ^= 0x5A
        chunk.write_bytes(bytes(data))


def test_damaged_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    ckpt = Checkpointer(str(tmp_path), max_to_keep=5)
    ckpt.save(1, make_state(1.0), {"data": {"position": 1}}, force=True)
    ckpt.save(2, make_state(2.0), {"data": {"position": 2}}, force=True)
    ckpt.wait()
    _damage(tmp_path / "2")
    with caplog.at_level(logging.WARNING):
        step, restored, meta = Checkpointer(str(tmp_path)).restore_latest(make_state(0.0))
    assert step == 1 and meta["data"]["position"] == 1
    np.testing.assert_array_equal(restored["params"]["w"], 1.0)
    assert any("Skipping damaged checkpoint at step 2" in r.message for r in caplog.records)


def test_incomplete_checkpoints_are_skipped(tmp_path):
    ckpt = Checkpointer(str(tmp_path), max_to_keep=5)
    ckpt.save(1, make_state(1.0), {"data": {}}, force=True)
    ckpt.save(2, make_state(2.0), {"data": {}}, force=True)
    ckpt.save(3, make_state(3.0), {"data": {}}, force=True)
    ckpt.close()
    # A write that never committed keeps Orbax's temporary name; a copy that lost files.
    (tmp_path / "3").rename(tmp_path / "3.orbax-checkpoint-tmp-1234")
    for chunk in (tmp_path / "2" / "state").rglob("manifest.ocdbt"):
        chunk.unlink()
    step, restored, _ = Checkpointer(str(tmp_path)).restore_latest(make_state(0.0))
    assert step == 1
    np.testing.assert_array_equal(restored["params"]["b"], np.arange(4.0))


def test_no_checkpoint_returns_none(tmp_path):
    assert Checkpointer(str(tmp_path)).restore_latest(make_state(0.0)) is None


def test_stop_signal_sets_flag():
    stop = StopSignal()
    try:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
    finally:
        stop.restore_handlers()
    assert signal.getsignal(signal.SIGTERM) is not stop._handle


@pytest.mark.parametrize("bad", [{"params": {"w": jnp.zeros((2, 2))}}])
def test_structure_mismatch_is_reported_as_damaged(tmp_path, bad, caplog):
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(1, make_state(1.0), {"data": {}}, force=True)
    ckpt.wait()
    with caplog.at_level(logging.WARNING):
        assert Checkpointer(str(tmp_path)).restore_latest(bad) is None
    assert any("Skipping" in r.message for r in caplog.records)
