"""The training path: the loss falls; SIGTERM, SIGINT, SIGKILL and a damaged newest checkpoint
each resume to the exact state of an uninterrupted run with every step logged once; another
config's checkpoints are refused untouched; sharded iSogCLR state equals replicated state; the
logit scale comes back from its clamp; every config in experiments/configs runs a step."""

import hashlib
import importlib
import json
import logging
import math
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from contrastive_jax import train as training
from tests.train_common import (
    assert_same_state,
    clip_config,
    losses_of,
    metric_records,
    saved_state,
    shrink,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "experiments" / "configs"
CONFIG_FILES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in ("__init__", "common"))


def on_devices(config, count: int):
    with config.unlocked():
        config.mesh = ml_collections.ConfigDict({"data": count})
    return config


def digest(path: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def stop_at(step_to_stop: int, sig=signal.SIGTERM):
    def hook(step, metrics):
        if step == step_to_stop:
            os.kill(os.getpid(), sig)  # a real signal: the handler asks the loop to save and stop

    return hook


def tensorboard_steps(logdir, tag="train/loss") -> list[int]:
    """The steps TensorBoard shows for `tag`: event files in write order, with its purge rule
    (a SessionLog START at step s hides earlier-written events of steps >= s)."""
    from tensorboardX.proto import event_pb2

    steps = []
    for path in sorted(pathlib.Path(logdir).glob("events.out.tfevents.*"), key=os.path.getmtime):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                steps = [s for s in steps if s < event.step]
            for value in event.summary.value:
                if value.tag == tag:
                    steps.append(event.step)
    return steps


def assert_logged_once(workdir, total, note=""):
    records = metric_records(workdir)
    assert [r["step"] for r in records] == list(range(1, total + 1)), note
    assert tensorboard_steps(os.path.join(workdir, "tensorboard")) == list(range(1, total + 1)), note


@pytest.fixture(scope="module")
def straight_run(data_dir, tmp_path_factory):
    """An uninterrupted 12-step run: the reference every interrupted run must reproduce."""
    workdir = tmp_path_factory.mktemp("straight")
    training.train(clip_config(), str(workdir), evaluate=False)
    return workdir, saved_state(workdir, clip_config())[1]


def test_loss_decreases(data_dir, tmp_path):
    config = clip_config(steps=20)
    with config.unlocked():
        config.optim.lr = 5e-3
    training.train(config, str(tmp_path), evaluate=False)
    curve = losses_of(tmp_path)
    assert np.mean([curve[s] for s in (18, 19, 20)]) < np.mean([curve[s] for s in (1, 2, 3)]) - 0.2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_stops_and_resumes_exactly(straight_run, tmp_path, sig):
    reference_dir, reference = straight_run
    stopped = training.train(clip_config(), str(tmp_path), evaluate=False, on_step=stop_at(5, sig))
    assert stopped == {"stopped_at": 5}
    assert sorted(losses_of(tmp_path)) == [1, 2, 3, 4, 5]
    assert training.Checkpointer(str(tmp_path / "checkpoints")).steps() == [4, 5]
    assert training.train(clip_config(), str(tmp_path), evaluate=False) == {"steps": 12}
    step, state = saved_state(tmp_path, clip_config())
    assert step == 12
    assert_same_state(state, reference)  # params, optimizer state, loss state, step, RNG: bit for bit
    assert_logged_once(tmp_path, 12)
    np.testing.assert_array_equal(list(losses_of(tmp_path).values()), list(losses_of(reference_dir).values()))


def test_sigkill_at_a_random_step_resumes_exactly(straight_run, tmp_path):
    """A process killed outright (no handler runs) resumes from its last checkpoint."""
    reference_dir, reference = straight_run
    kill_after = int(np.random.default_rng().integers(2, 11))  # logged steps before the kill
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop("XLA_FLAGS", None)
    victim = subprocess.Popen(
        [sys.executable, "-m", "tests.train_worker", str(tmp_path), "12", "0.3"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "metrics.jsonl"
    try:
        for _ in range(2400):
            if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_after:
                break
            if victim.poll() is not None:
                pytest.fail(f"worker exited early: {victim.stderr.read()[-3000:]}")
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
    finally:
        victim.wait(timeout=60)
    killed_at = len(metrics.read_text().splitlines())
    assert killed_at < 12, "the worker finished before the kill: make its steps slower"
    assert training.train(clip_config(), str(tmp_path), evaluate=False) == {"steps": 12}
    assert_logged_once(tmp_path, 12, note=f"killed after step {killed_at}")
    assert_same_state(saved_state(tmp_path, clip_config())[1], reference)


def test_damaged_newest_checkpoint_is_set_aside_and_the_run_finishes(straight_run, tmp_path, caplog):
    reference_dir, reference = straight_run
    assert training.train(clip_config(), str(tmp_path), evaluate=False, on_step=stop_at(8)) == {
        "stopped_at": 8
    }
    newest = tmp_path / "checkpoints" / "8"
    for chunk in (newest / "state").rglob("*"):
        if chunk.is_file() and chunk.parent.name == "d":
            chunk.write_bytes(chunk.read_bytes()[::-1])
    damaged = digest(newest)
    older = digest(tmp_path / "checkpoints" / "4")
    with caplog.at_level(logging.WARNING):
        assert training.train(clip_config(), str(tmp_path), evaluate=False) == {"steps": 12}
    assert any("step 8" in r.message and "8.damaged" in r.message for r in caplog.records)
    assert digest(tmp_path / "checkpoints" / "8.damaged") == damaged  # set aside, bytes kept
    assert digest(tmp_path / "checkpoints" / "4") == older  # the older checkpoint is kept
    assert training.Checkpointer(str(tmp_path / "checkpoints")).steps() == [4, 8, 12]
    assert_same_state(saved_state(tmp_path, clip_config())[1], reference)
    assert_logged_once(tmp_path, 12)
    # A third start finds a finished run: nothing to redo, nothing set aside again.
    assert training.train(clip_config(), str(tmp_path), evaluate=False) == {"steps": 12}
    assert_logged_once(tmp_path, 12)
    assert reference_dir.exists()


def test_a_checkpoint_of_the_earlier_data_position_format_resumes_exactly(straight_run, tmp_path):
    """Checkpoints written before the position recorded its layout held the in-process iterator's
    state, a count of batches: such a run resumes where it stopped."""
    reference_dir, reference = straight_run
    assert training.train(clip_config(), str(tmp_path), evaluate=False, on_step=stop_at(5)) == {
        "stopped_at": 5
    }
    (meta,) = [p for p in (tmp_path / "checkpoints" / "5" / "meta").rglob("*") if p.is_file() and p.suffix != ".lock"
               and "data" in p.read_text()]  # fmt: skip
    saved = json.loads(meta.read_text())
    assert saved["data"]["states"] == [{"next_index": 5 * 16}]  # records: 5 steps of batch 16
    meta.write_text(json.dumps({"data": {"next_index": 5}}))  # the earlier format: 5 batches
    assert training.train(clip_config(), str(tmp_path), evaluate=False) == {"steps": 12}
    assert_same_state(saved_state(tmp_path, clip_config())[1], reference)


def test_another_config_is_refused_and_the_run_left_untouched(data_dir, tmp_path):
    training.train(clip_config(steps=4), str(tmp_path), evaluate=False)
    before = digest(tmp_path)
    wider = clip_config(steps=4)
    with wider.unlocked():
        wider.model.embed_dim = 24
    with pytest.raises(training.CheckpointError) as info:
        training.train(wider, str(tmp_path), evaluate=False)
    message = str(info.value)
    assert "written for a different model" in message and "model.embed_dim: 16 -> 24" in message
    assert digest(tmp_path) == before  # checkpoints, config.json, metrics: all as they were
    # Step folders that exist but cannot be restored: an error, never a fresh start over them.
    for chunk in (tmp_path / "checkpoints").rglob("*"):
        if chunk.is_file() and chunk.parent.name == "d":
            chunk.write_bytes(b"\0" * 16)
    before = digest(tmp_path)
    with pytest.raises(training.CheckpointError, match="none of the 1 checkpoints"):
        training.train(clip_config(steps=4), str(tmp_path), evaluate=False)
    assert digest(tmp_path) == before


def test_evaluation_needs_a_run(data_dir, tmp_path):
    with pytest.raises(training.WorkdirError, match="no config.json"):
        training.evaluate_checkpoint(str(tmp_path))
    (tmp_path / "config.json").write_text(clip_config().to_json_best_effort())
    with pytest.raises(training.CheckpointError, match="no checkpoint yet"):
        training.evaluate_checkpoint(str(tmp_path))


def test_loss_state_reader_names_a_run_without_one(straight_run):
    with pytest.raises(training.CheckpointError, match="keeps no per-sample loss state"):
        training.load_loss_state(str(straight_run[0]))


def test_evaluation_skips_a_damaged_latest_checkpoint(straight_run, tmp_path, caplog):
    shutil.copytree(straight_run[0], tmp_path, dirs_exist_ok=True)  # checkpoints at 4, 8, 12
    for chunk in (tmp_path / "checkpoints" / "12" / "state").rglob("*"):
        if chunk.is_file() and chunk.parent.name == "d":
            chunk.write_bytes(chunk.read_bytes()[::-1])
    before = digest(tmp_path / "checkpoints")
    with caplog.at_level(logging.WARNING):
        results = training.evaluate_checkpoint(str(tmp_path))
    assert results["step"] == 8
    assert any("step 12" in r.message for r in caplog.records)
    assert digest(tmp_path / "checkpoints") == before  # evaluation never moves anything
    for key in (
        "zero_shot/color",
        "zero_shot/shape",
        "zero_shot/count",
        "image_to_text_r@1",
        "counting_accuracy",
    ):
        assert 0.0 <= results[key] <= 1.0


@pytest.fixture(scope="module")
def replicated_isogclr(data_dir, tmp_path_factory):
    """4 steps of iSogCLR with its state replicated on one device: the reference of the sharded runs."""
    config = on_devices(clip_config(steps=4, loss="isogclr"), 1)
    workdir = tmp_path_factory.mktemp("replicated_isogclr")
    training.train(config, str(workdir), evaluate=False)
    return workdir, config


@pytest.mark.parametrize("devices", [1, 2, 4, 8])  # and a 2 x 4 data x fsdp mesh: tests/test_fsdp.py
def test_sharded_isogclr_state_equals_replicated_state_and_resumes(replicated_isogclr, tmp_path, devices):
    reference_dir, replicated = replicated_isogclr
    sharded = on_devices(clip_config(steps=4, loss="isogclr"), devices)
    with sharded.unlocked():
        sharded.loss.shard_state = True
    stopped = training.train(sharded, str(tmp_path / "sharded"), evaluate=False, on_step=stop_at(2))
    assert stopped == {"stopped_at": 2}
    training.train(sharded, str(tmp_path / "sharded"), evaluate=False)
    want, got = metric_records(reference_dir), metric_records(tmp_path / "sharded")
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for key in ("loss", "mean_tau", "grad_norm"):  # global metrics, whatever the device count
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in want], rtol=1e-5, err_msg=key)
    _, state = saved_state(tmp_path / "sharded", sharded)
    _, reference = saved_state(reference_dir, replicated)
    if devices > 1:
        assert state["loss_state"].tau_image.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    samples = reference["loss_state"].tau_image.shape[0]
    assert state["loss_state"].tau_image.shape[0] % 1024 == 0  # padded: restores onto other meshes
    assert not np.any(np.asarray(state["loss_state"].seen)[samples:])  # padding never visited
    # Per-sample entries: the reference ran on one device, so sums were taken in another order
    # (observed: ≤ 5e-5 relative on a few of 256 entries after 4 steps).
    for got_leaf, want_leaf in zip(
        jax.tree.leaves(state["loss_state"]), jax.tree.leaves(reference["loss_state"])
    ):
        np.testing.assert_allclose(
            np.asarray(got_leaf)[:samples], np.asarray(want_leaf), rtol=2e-4, atol=1e-5
        )
    assert not np.all(np.asarray(state["loss_state"].tau_image) == 0.01)  # temperatures did move
    # The public reader returns the same arrays as the full restore above, on the host.
    step, loaded = training.load_loss_state(str(tmp_path / "sharded"))
    assert step == 4 and set(loaded) >= {"tau_image", "tau_text", "seen"}
    for name in ("tau_image", "tau_text", "u_image", "seen"):
        np.testing.assert_array_equal(
            loaded[name], np.asarray(getattr(state["loss_state"], name)), err_msg=name
        )


def test_logit_scale_comes_back_from_the_clamp(data_dir, tmp_path):
    """Started above ln 100, the scale is projected to 100 and then falls: its gradient is alive."""
    config = clip_config(steps=6)
    with config.unlocked():
        config.model.init_logit_scale = math.log(100.0) + 0.5
        config.optim.warmup_steps = 0
    training.train(config, str(tmp_path), evaluate=False)
    scales = [r["logit_scale"] for r in metric_records(tmp_path)]
    np.testing.assert_allclose(scales[0], 100.0 * math.exp(0.5), rtol=1e-6)  # step 1: the initial value
    np.testing.assert_allclose(scales[1], 100.0, rtol=1e-6)  # after one update: projected onto the bound
    assert all(s < 100.0 for s in scales[2:]) and scales[-1] < scales[2], scales


def test_init_from_takes_the_model_and_parameters_of_another_run(straight_run, tmp_path):
    """Fine-tuning: the model section and the parameters come from `init_from`, nothing else."""
    source_dir, source = straight_run
    config = clip_config(steps=3, loss="clip_count")  # another objective on the same data
    with config.unlocked():
        config.init_from = str(source_dir)
        config.model.embed_dim = 24  # replaced by the source's model section
        config.optim.warmup_steps = 2  # step 1 has learning rate 0: the parameters stay the source's
    assert training.train(config, str(tmp_path), evaluate=False, on_step=stop_at(1)) == {"stopped_at": 1}
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["embed_dim"] == 16 and saved["loss"]["name"] == "clip_count"
    _, state = saved_state(tmp_path, config)
    assert_same_state(state["params"], source["params"])
    assert int(state["step"]) == 1  # a fresh run: its own step and optimizer state

    with config.unlocked():
        config.init_from = str(tmp_path / "nowhere")
    with pytest.raises(training.ConfigError, match="has no config.json"):
        training.train(config, str(tmp_path / "other"), evaluate=False)


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_builds_and_runs_a_step(data_dir, tmp_path, name):
    module = importlib.import_module(f"experiments.configs.{name}")
    config = shrink(module.get_config(), steps=1)
    assert training.train(config, str(tmp_path), evaluate=False) == {"steps": 1}
    assert np.isfinite(list(losses_of(tmp_path).values())).all()
    assert json.loads((tmp_path / "config.json").read_text())["loss"]["name"] == config.loss.name


def test_clip_objective_with_a_fixed_temperature_ignores_the_learned_scale():
    from contrastive_jax.train._objective import compute_loss
    from tests import references as ref

    config = clip_config().loss
    rng = np.random.default_rng(0)
    x, y = (rng.normal(size=(6, 4)).astype(np.float32) for _ in range(2))
    x, y = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (x, y))
    outputs = {"image_emb": x, "text_emb": y, "logit_scale": np.float32(3.0)}
    learned, _, _ = compute_loss(config, outputs, {}, {})
    np.testing.assert_allclose(learned, ref.clip_loss(x, y, 3.0), rtol=1e-5)
    with config.unlocked():
        config.fixed_temperature = 0.05
    fixed, _, _ = compute_loss(config, outputs, {}, {})
    np.testing.assert_allclose(fixed, ref.clip_loss(x, y, 20.0), rtol=1e-5)
    with config.unlocked():
        config.fixed_temperature = 0.0
    with pytest.raises(ValueError, match="fixed_temperature"):
        compute_loss(config, outputs, {}, {})
