"""Shared by the training tests and their subprocess worker: tiny configs and run inspection."""

import json
import os

import jax
import numpy as np


def shrink(config, steps=12):
    """Micro model, tiny data, 8-device-divisible batch: seconds per run on a CPU."""
    with config.unlocked():
        config.total_steps, config.batch_size, config.log_every, config.checkpoint_every = steps, 16, 1, 4
        config.optim.warmup_steps = 2
        if config.data.name not in ("shapes_count", "digits_captions"):  # real-data configs: run on shapes
            config.data.update(name="shapes_count", tokenizer="word", image_size=64, context_length=16)
            config.data.update(num_workers=0, augment="none", caption_key="")
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


def clip_config(steps=12, loss="clip"):
    import importlib

    module = importlib.import_module(f"experiments.configs.{loss}")
    return shrink(module.get_config("shapes_count"), steps)


def fsdp_across_hosts(config):
    """The mesh (data 1, fsdp all devices) and a model wide enough (64) that its MLP kernels split."""
    import ml_collections

    with config.unlocked():
        config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1))
        config.model.vision.width = config.model.text.width = 64
    return config


def metric_records(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def losses_of(workdir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metric_records(workdir)}


def saved_state(workdir, config):
    """`(step, state)` of the newest checkpoint in `workdir`, restored for `config` on this host."""
    from contrastive_jax import data, train

    config = config.copy_and_resolve_references()
    tokenizer = train.make_tokenizer(config.data)
    with config.unlocked():
        config.model.text.vocab_size = tokenizer.vocab_size
    source = data.load_source(config.data.name, "train", config=config.data.builder_config)
    mesh = train.make_mesh(config)
    shard = bool(config.loss.get("shard_state", False)) and config.loss.name in ("isogclr", "sogclr")
    *_, state, _ = train.init_state(config, len(source), mesh=mesh, shard_loss_state=shard)
    step, state, _ = train.Checkpointer(os.path.join(workdir, "checkpoints")).restore_latest(state)
    return step, state


def assert_same_state(got, want, *, exact=True, rtol=1e-5):
    """Every leaf of two train states equal (bit for bit, or to `rtol`)."""
    got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(got_leaves, want_leaves):
        a, b = np.asarray(a), np.asarray(b)
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-6)
