"""Checkpoints: exact round trip, damaged ones set aside (never deleted), another config's
checkpoints refused without touching them, the same decisions for a single item, the run
directory's config.json and step folders, stop signals."""

import hashlib
import logging
import os
import pathlib
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from contrastive_jax import losses
from contrastive_jax.train import (
    Checkpointer,
    CheckpointError,
    StopSignal,
    WorkdirError,
    check_run_dir,
    checkpoint_steps,
    read_run_config,
    run_checkpointer,
    write_run_config,
)


def make_state(value: float, width: int = 4):
    params = {"w": jnp.full((3, width), value), "b": jnp.arange(float(width)) * value}
    return {
        "params": params,
        "opt_state": optax.adam(1e-3).init(params),
        "loss_state": losses.isogclr_init(6),
        "step": jnp.int32(0),
        "rng": jax.random.key_data(jax.random.key(1)),
    }


def tree_digest(path: pathlib.Path) -> dict[str, str]:
    """Every file under `path` with a hash of its bytes: 'unchanged' means this dict is equal."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def save_steps(directory, steps, **kwargs):
    ckpt = Checkpointer(str(directory), max_to_keep=5)
    for step in steps:
        ckpt.save(step, make_state(float(step), **kwargs), {"data": {"position": step}}, force=True)
    ckpt.close()


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


def test_nan_values_are_saved_and_restored_not_called_damage(tmp_path):
    """A diverged run's state is still its state: NaNs round-trip (the old fingerprint refused them)."""
    state = make_state(1.0)
    state["params"]["w"] = state["params"]["w"].at[0, 0].set(jnp.nan)
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(3, state, {"data": {}}, force=True)
    ckpt.close()
    step, restored, _ = Checkpointer(str(tmp_path)).restore_latest(make_state(0.0))
    assert step == 3 and np.isnan(restored["params"]["w"][0, 0])
    np.testing.assert_array_equal(restored["params"]["w"][1:], 1.0)


def _damage(step_dir: pathlib.Path) -> None:
    """Overwrite the bytes of every stored array chunk of a finished checkpoint."""
    chunks = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert chunks
    for chunk in chunks:
        data = bytearray(chunk.read_bytes())
        for i in range(len(data) // 2, len(data)):
            data[i] ^= 0x5A
        chunk.write_bytes(bytes(data))


def test_damaged_latest_checkpoint_is_set_aside_and_the_previous_one_restored(tmp_path, caplog):
    save_steps(tmp_path, (1, 2))
    _damage(tmp_path / "2")
    damaged_bytes = tree_digest(tmp_path / "2")
    with caplog.at_level(logging.WARNING):
        step, restored, meta = Checkpointer(str(tmp_path)).restore_latest(
            make_state(0.0), set_aside_damaged=True
        )
    assert step == 1 and meta["data"]["position"] == 1
    np.testing.assert_array_equal(restored["params"]["w"], 1.0)
    assert any(
        "damaged checkpoint at step 2" in r.message and "2.damaged" in r.message for r in caplog.records
    )
    # Moved out of Orbax's step namespace, bytes kept; step 2 can now be saved again.
    assert not (tmp_path / "2").exists() and tree_digest(tmp_path / "2.damaged") == damaged_bytes
    ckpt = Checkpointer(str(tmp_path))
    assert ckpt.steps() == [1]
    ckpt.save(2, make_state(5.0), {"data": {"position": 2}}, force=True)
    ckpt.close()
    step, restored, _ = Checkpointer(str(tmp_path)).restore_latest(make_state(0.0))
    assert step == 2 and float(restored["params"]["w"][0, 0]) == 5.0


def test_evaluation_skips_a_damaged_checkpoint_without_moving_it(tmp_path, caplog):
    save_steps(tmp_path, (1, 2))
    _damage(tmp_path / "2")
    before = tree_digest(tmp_path)
    with caplog.at_level(logging.WARNING):
        step, _, _ = Checkpointer(str(tmp_path)).restore_latest(make_state(0.0))
    assert step == 1 and tree_digest(tmp_path) == before
    assert any("Skipping damaged checkpoint at step 2" in r.message for r in caplog.records)


def test_incomplete_checkpoints_are_skipped(tmp_path):
    save_steps(tmp_path, (1, 2, 3))
    # A write that never committed keeps Orbax's temporary name; a copy that lost files.
    (tmp_path / "3").rename(tmp_path / "3.orbax-checkpoint-tmp-1234")
    for chunk in (tmp_path / "2" / "state").rglob("manifest.ocdbt"):
        chunk.unlink()
    step, restored, _ = Checkpointer(str(tmp_path)).restore_latest(make_state(0.0), set_aside_damaged=True)
    assert step == 1
    np.testing.assert_array_equal(restored["params"]["b"], np.arange(4.0))
    assert (tmp_path / "2.damaged").is_dir() and (tmp_path / "3.orbax-checkpoint-tmp-1234").is_dir()


def test_no_checkpoint_returns_none(tmp_path):
    assert Checkpointer(str(tmp_path)).restore_latest(make_state(0.0)) is None


def test_when_no_checkpoint_restores_it_is_an_error_and_nothing_moves(tmp_path):
    save_steps(tmp_path, (1, 2))
    _damage(tmp_path / "1")
    _damage(tmp_path / "2")
    before = tree_digest(tmp_path)
    with pytest.raises(CheckpointError, match="none of the 2 checkpoints .* can be restored"):
        Checkpointer(str(tmp_path)).restore_latest(make_state(0.0), set_aside_damaged=True)
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize(
    "target, expected",
    [
        (make_state(0.0, width=5), r"params/w: checkpoint float32\[3, 4\], config float32\[3, 5\]"),
        (
            {**make_state(0.0), "extra": jnp.zeros(2)},
            "extra is in this config's state but not in the checkpoint",
        ),
        (
            {k: v for k, v in make_state(0.0).items() if k != "rng"},
            "rng is in the checkpoint but not in this config's state",
        ),
    ],
    ids=["shape", "added-leaf", "removed-leaf"],
)
def test_another_configs_checkpoint_is_an_error_not_damage(tmp_path, target, expected):
    save_steps(tmp_path, (1, 2))
    _damage(tmp_path / "2")  # even with a damaged newer one: nothing is set aside before the error
    before = tree_digest(tmp_path)
    with pytest.raises(CheckpointError, match=expected) as info:
        Checkpointer(str(tmp_path)).restore_latest(
            target, set_aside_damaged=True, describe_change=lambda: "model.width: 4 -> 5."
        )
    assert "model.width: 4 -> 5." in str(info.value) and "new --workdir" in str(info.value)
    assert tree_digest(tmp_path) == before


def restore_params_by(path, how: str, target):
    """`(step, params)` restored by `restore_latest` (the whole state) or `restore_item` (the params)."""
    ckpt = Checkpointer(str(path))
    if how == "latest":
        found = ckpt.restore_latest(target, describe_change=lambda: "model.width: 4 -> 5.")
        return None if found is None else (found[0], found[1]["params"])
    return ckpt.restore_item("params", target["params"], describe_change=lambda: "model.width: 4 -> 5.")


BOTH_RESTORES = pytest.mark.parametrize("how", ["latest", "item"])


@BOTH_RESTORES
def test_both_restores_skip_a_damaged_newest_checkpoint_alike(tmp_path, caplog, how):
    save_steps(tmp_path, (1, 2, 3))
    _damage(tmp_path / "3")
    for chunk in (tmp_path / "2" / "state").rglob("manifest.ocdbt"):
        chunk.unlink()  # unreadable metadata: damage too
    before = tree_digest(tmp_path)
    with caplog.at_level(logging.WARNING):
        step, params = restore_params_by(tmp_path, how, make_state(0.0))
    assert step == 1
    np.testing.assert_array_equal(params["w"], 1.0)
    assert tree_digest(tmp_path) == before  # skipped, not set aside
    warned = [r.message for r in caplog.records if "Skipping damaged checkpoint" in r.message]
    assert len(warned) == 2 and "step 3" in warned[0] and "step 2" in warned[1]


@BOTH_RESTORES
def test_both_restores_refuse_when_none_restores_and_move_nothing(tmp_path, how):
    save_steps(tmp_path, (1, 2))
    _damage(tmp_path / "1")
    _damage(tmp_path / "2")
    before = tree_digest(tmp_path)
    with pytest.raises(CheckpointError, match="none of the 2 checkpoints .* can be restored"):
        restore_params_by(tmp_path, how, make_state(0.0))
    assert tree_digest(tmp_path) == before


@BOTH_RESTORES
def test_both_restores_call_another_structure_an_error_not_damage(tmp_path, how):
    save_steps(tmp_path, (1, 2))
    _damage(tmp_path / "2")  # the damaged newer one is skipped; the older one's structure differs
    before = tree_digest(tmp_path)
    with pytest.raises(CheckpointError, match=r"params/w: checkpoint float32\[3, 4\]") as info:
        restore_params_by(tmp_path, how, make_state(0.0, width=5))
    assert "model.width: 4 -> 5." in str(info.value) and "at step 1" in str(info.value)
    assert tree_digest(tmp_path) == before


def test_no_step_folders_are_none_for_the_state_and_an_error_for_an_item(tmp_path):
    assert restore_params_by(tmp_path, "latest", make_state(0.0)) is None
    with pytest.raises(CheckpointError, match="no step folders"):
        restore_params_by(tmp_path, "item", make_state(0.0))


def test_an_item_restores_as_saved_without_a_target(tmp_path):
    save_steps(tmp_path, (1, 2))
    step, loss_state = Checkpointer(str(tmp_path)).restore_item("loss_state")
    assert step == 2 and set(loss_state) >= {"tau_image", "tau_text"}
    assert loss_state["tau_image"].shape == (6,)
    with pytest.raises(CheckpointError, match="at step 2 .* has no 'nope'"):
        Checkpointer(str(tmp_path)).restore_item("nope")


def test_run_directory_config_and_steps(tmp_path):
    with pytest.raises(WorkdirError, match="no config.json"):
        read_run_config(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WorkdirError, match="cannot read"):
        read_run_config(str(tmp_path))
    config = ml_collections.ConfigDict({"loss": {"name": "clip"}, "data": {"mean": [0.5, 0.5]}})
    write_run_config(str(tmp_path), config)
    assert read_run_config(str(tmp_path)).to_dict() == config.to_dict()
    assert sorted(os.listdir(tmp_path)) == ["config.json"]  # replaced in one step, nothing left over

    assert checkpoint_steps(str(tmp_path)) == [] and not (tmp_path / "checkpoints").exists()
    save_steps(tmp_path / "checkpoints", (3, 12))
    (tmp_path / "checkpoints" / "12").rename(tmp_path / "checkpoints" / "12.damaged")
    (tmp_path / "checkpoints" / "15.orbax-checkpoint-tmp-9").mkdir()
    assert checkpoint_steps(str(tmp_path)) == [3]
    assert run_checkpointer(str(tmp_path)).steps() == [3]
    check_run_dir(str(tmp_path))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_turns_signals_into_a_request(sig):
    stop = StopSignal()
    try:
        assert not stop.requested and not stop.should_stop(1)
        os.kill(os.getpid(), sig)
        assert stop.requested and stop.should_stop(2)
    finally:
        stop.restore_handlers()
    assert signal.getsignal(sig) is not stop._handle
