"""The training path: the loss falls, kill-and-resume is exact, damaged checkpoints are skipped,
and every config in experiments/configs builds and runs a step."""

import importlib
import json
import logging
import os
import pathlib
import signal

import numpy as np
import pytest

from contrastive_jax import train as training

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"
CONFIG_FILES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in ("__init__", "common"))


def shrink(config, steps=12):
    """Micro model, tiny data, 8-device-divisible batch: seconds per run on a CPU."""
    with config.unlocked():
        config.total_steps, config.batch_size, config.log_every, config.checkpoint_every = steps, 16, 1, 4
        config.optim.warmup_steps = 2
        if config.data.name not in ("shapes_count", "digits_captions"):  # real-data configs: run on shapes
            config.data.update(name="shapes_count", tokenizer="word", image_size=64, context_length=16)
        config.data.builder_config = "tiny" if config.data.name == "shapes_count" else "default"
        config.model.vision.update(
            image_size=config.data.image_size, patch_size=16, width=32, depth=1, num_heads=2
        )
        config.model.text.update(context_length=config.data.context_length, width=32, depth=1, num_heads=2)
        config.model.embed_dim, config.model.dtype = 16, "float32"
        config.model.coca.update(num_caption_queries=4, multimodal_depth=1, pooler_heads=2)
        config.loss.block_size = None
        config.eval.batch_size, config.eval.max_examples = 64, 64
    return config


def clip_config(steps=12):
    from experiments.configs.clip import get_config

    return shrink(get_config("shapes_count"), steps)


def losses_of(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f)}


def test_loss_decreases(data_dir, tmp_path):
    config = clip_config(steps=20)
    with config.unlocked():
        config.optim.lr = 5e-3
    training.train(config, str(tmp_path), evaluate=False)
    curve = losses_of(tmp_path)
    assert np.mean([curve[s] for s in (18, 19, 20)]) < np.mean([curve[s] for s in (1, 2, 3)]) - 0.2


def test_kill_and_resume_matches_an_uninterrupted_run(data_dir, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    training.train(clip_config(), str(straight), evaluate=False)

    def kill_at_five(step, metrics):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # a real SIGTERM: the handler asks the loop to stop

    assert training.train(clip_config(), str(killed), evaluate=False, on_step=kill_at_five) == {
        "stopped_at": 5
    }
    assert sorted(losses_of(killed)) == [1, 2, 3, 4, 5]
    training.train(clip_config(), str(killed), evaluate=False)
    expected, resumed = losses_of(straight), losses_of(killed)
    assert sorted(resumed) == list(range(1, 13))
    np.testing.assert_allclose(
        [resumed[s] for s in range(1, 13)], [expected[s] for s in range(1, 13)], rtol=1e-5
    )


def test_evaluation_skips_a_damaged_latest_checkpoint(data_dir, tmp_path, caplog):
    training.train(clip_config(), str(tmp_path), evaluate=False)  # checkpoints at 4, 8, 12
    for chunk in (tmp_path / "checkpoints" / "12" / "state").rglob("*"):
        if chunk.is_file() and chunk.parent.name == "d":
            chunk.write_bytes(chunk.read_bytes()[::-1])
    with caplog.at_level(logging.WARNING):
        results = training.evaluate_checkpoint(str(tmp_path))
    assert results["step"] == 8
    assert any("step 12" in r.message for r in caplog.records)
    for key in (
        "zero_shot/color",
        "zero_shot/shape",
        "zero_shot/count",
        "image_to_text_r@1",
        "counting_accuracy",
    ):
        assert 0.0 <= results[key] <= 1.0


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_builds_and_runs_a_step(data_dir, tmp_path, name):
    module = importlib.import_module(f"experiments.configs.{name}")
    config = shrink(module.get_config(), steps=1)
    assert training.train(config, str(tmp_path), evaluate=False) == {"steps": 1}
    assert np.isfinite(list(losses_of(tmp_path).values())).all()


def test_clip_objective_with_a_fixed_temperature_ignores_the_learned_scale():
    from contrastive_jax.train._objective import compute_loss
    from tests import references as ref

    config = clip_config().loss
    rng = np.random.default_rng(0)
    x, y = (rng.normal(size=(6, 4)).astype(np.float32) for _ in range(2))
    x, y = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (x, y))
    outputs = {"image_emb": x, "text_emb": y, "logit_scale": np.float32(3.0)}
    learned, _, _ = compute_loss(config, None, outputs, {}, {})
    np.testing.assert_allclose(learned, ref.clip_loss(x, y, 3.0), rtol=1e-5)
    with config.unlocked():
        config.fixed_temperature = 0.05
    fixed, _, _ = compute_loss(config, None, outputs, {}, {})
    np.testing.assert_allclose(fixed, ref.clip_loss(x, y, 20.0), rtol=1e-5)
    with config.unlocked():
        config.fixed_temperature = 0.0
    with pytest.raises(ValueError, match="fixed_temperature"):
        compute_loss(config, None, outputs, {}, {})
