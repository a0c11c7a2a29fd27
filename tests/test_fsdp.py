"""FSDP: parameters and optimizer state split over the mesh's "fsdp" axis (8 fake CPU devices).

The layout must not change the numbers: a run with fsdp = 8 logs the losses of a replicated
run, and a checkpoint written on one mesh resumes on another (8 -> 4 devices, data <-> fsdp)
with the losses of an uninterrupted run. Compiled memory analysis shows what the layout buys.
"""

import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from benchmarks.fsdp_memory import activation_bytes, compiled_memory
from contrastive_jax import parallel
from contrastive_jax import train as training
from contrastive_jax.train import ConfigError
from contrastive_jax.train._validate import mesh_shape
from tests.train_common import clip_config, losses_of, saved_state


def fsdp_config(steps=6, *, data=-1, fsdp=1, loss="clip"):
    """The tiny test model, wide enough (64) that its MLP kernels (64 x 256) get split."""
    config = clip_config(steps=steps, loss=loss)
    with config.unlocked():
        config.mesh = ml_collections.ConfigDict(dict(data=data, fsdp=fsdp))
        config.model.vision.width = config.model.text.width = 64
        config.checkpoint_every = 2
    return config


def stop_at(step_to_stop):
    def hook(step, metrics):
        if step == step_to_stop:
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def sharded_leaves(tree) -> int:
    return sum("fsdp" in str(leaf.sharding.spec) for leaf in jax.tree.leaves(tree))


# --- the rule table ----------------------------------------------------------------------------


def test_fsdp_spec_splits_the_largest_divisible_dimension():
    assert parallel.fsdp_spec((768, 3072), 8) == P(None, "fsdp")
    assert parallel.fsdp_spec((3072, 768), 8) == P("fsdp")
    assert parallel.fsdp_spec((49408, 512), 64) == P("fsdp")  # 49408 = 64 * 772
    assert parallel.fsdp_spec((1000, 768), 64) == P(None, "fsdp")  # 1000 does not divide by 64
    assert parallel.fsdp_spec((512, 512), 8) == P(None, "fsdp")  # ties: the later dimension
    assert parallel.fsdp_spec((768,), 8) == P()  # small: replicated
    assert parallel.fsdp_spec((1001, 999), 8) == P()  # nothing divides: replicated
    assert parallel.fsdp_spec((768, 3072), 1) == P()  # no fsdp axis: replicated
    assert parallel.fsdp_spec((), 8) == P()


def test_fsdp_specs_follow_the_rules_and_reach_optimizer_moments():
    params = {"logit_scale": jnp.zeros((128, 128)), "w": jnp.zeros((256, 128)), "b": jnp.zeros((256,))}
    moments = {"mu": params, "count": jnp.zeros((), jnp.int32)}
    specs = parallel.fsdp_specs({"params": params, "opt": moments}, 8)
    assert specs["params"] == {"logit_scale": P(), "w": P("fsdp"), "b": P()}
    assert specs["opt"]["mu"] == specs["params"] and specs["opt"]["count"] == P()
    with pytest.raises(ValueError, match="unknown sharding rule"):
        parallel.fsdp_specs(params, 8, rules=((".*", "shard_everything"),))


@pytest.mark.parametrize(
    "mesh, devices, want",
    [
        ({}, 8, (8, 1)),
        ({"data": -1, "fsdp": 1}, 8, (8, 1)),
        ({"data": -1, "fsdp": 4}, 8, (2, 4)),
        ({"data": 1, "fsdp": -1}, 8, (1, 8)),
        ({"data": 2, "fsdp": 2}, 8, (2, 2)),
    ],
)
def test_mesh_shape(mesh, devices, want):
    config = ml_collections.ConfigDict({"mesh": mesh})
    assert mesh_shape(config, devices) == want


@pytest.mark.parametrize(
    "mesh, message",
    [
        ({"data": -1, "fsdp": -1}, "both -1"),
        ({"data": -1, "fsdp": 3}, "divide by the other axis"),
        ({"data": 4, "fsdp": 4}, "only 8 devices"),
        ({"data": 1, "fsdp": 0}, r"mesh.fsdp is 0"),
        ({"data": 1, "fsdp": "8"}, r"mesh.fsdp is '8'"),
    ],
)
def test_bad_meshes_are_config_errors(mesh, message):
    with pytest.raises(ConfigError, match=message):
        mesh_shape(ml_collections.ConfigDict({"mesh": mesh}), 8)


def test_batch_must_split_over_data_times_fsdp():
    config = fsdp_config(data=2, fsdp=2)
    with config.unlocked():
        config.batch_size = 6
    with pytest.raises(ConfigError, match=r"4 devices of the mesh \(data 2 x fsdp 2\)"):
        training.validate_config(config, 8)


# --- training ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fsdp8_run(data_dir, tmp_path_factory):
    """An uninterrupted 6-step run with fsdp = 8 (shared by the tests below)."""
    workdir = tmp_path_factory.mktemp("fsdp8")
    training.train(fsdp_config(data=1, fsdp=8), str(workdir), evaluate=False)
    return workdir


def test_fsdp_8_logs_the_losses_of_a_replicated_run(fsdp8_run, tmp_path):
    replicated = fsdp_config(data=-1, fsdp=1)
    training.train(replicated, str(tmp_path / "replicated"), evaluate=False)
    sharded = fsdp_config(data=1, fsdp=8)
    want, got = losses_of(tmp_path / "replicated"), losses_of(fsdp8_run)
    assert list(got) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=1e-5)

    _, state = saved_state(fsdp8_run, sharded)
    _, reference = saved_state(tmp_path / "replicated", replicated)
    # Stored split: every large parameter and its Adam moments, on one eighth of the bytes.
    assert sharded_leaves(reference["params"]) == 0
    for tower in ("vision", "text"):  # the 64 x 256 MLP kernels, split along their 256 features
        mlp = state["params"][tower]["transformer"]["blocks"][0]["mlp"]
        assert mlp["fc1"]["kernel"].value.sharding.spec == P(None, "fsdp")
        assert mlp["fc2"]["kernel"].value.sharding.spec == P("fsdp")
    assert sharded_leaves(state["opt_state"]) == 2 * sharded_leaves(state["params"])  # mu and nu
    big = [leaf for leaf in jax.tree.leaves(state["params"]) if "fsdp" in str(leaf.sharding.spec)]
    for leaf in big:
        assert leaf.addressable_shards[0].data.size * 8 == leaf.size
    for got_leaf, want_leaf in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(reference["params"])):
        np.testing.assert_allclose(np.asarray(got_leaf), np.asarray(want_leaf), rtol=1e-4, atol=1e-5)


def test_step_outputs_keep_the_layout():
    """After each step, parameters and optimizer state come back split as they went in."""
    config = fsdp_config(data=2, fsdp=4)
    with config.unlocked():
        config.model.text.vocab_size = 64
    mesh = training.make_mesh(config)
    _, graphdef, rest, optimizer, state, shardings = training.init_state(config, 1, mesh=mesh)
    step = training.make_train_step(graphdef, optimizer, config.loss, mesh, shardings)
    rng = np.random.default_rng(0)
    batch = parallel.shard_batch(
        {
            "image": rng.normal(size=(16, 64, 64, 3)).astype(np.float32),
            "tokens": rng.integers(1, 64, size=(16, 16)).astype(np.int32),
        },
        mesh,
        ("data", "fsdp"),
    )
    params, opt_state, loss_state = state["params"], state["opt_state"], state["loss_state"]
    for _ in range(2):
        params, opt_state, loss_state, metrics = step(params, rest, opt_state, loss_state, batch)
        for tree, want in ((params, shardings["params"]), (opt_state, shardings["opt_state"])):
            for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(want)):
                assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (leaf.sharding, sharding)
    assert sharded_leaves(params) >= 4 and np.isfinite(float(metrics["loss"]))


def test_checkpoint_resumes_on_another_mesh(fsdp8_run, tmp_path):
    """8 devices (fsdp 8) -> 4 devices (fsdp 4) -> 4 devices (data 2 x fsdp 2), as an elastic restart."""
    workdir = str(tmp_path / "elastic")
    assert training.train(fsdp_config(data=1, fsdp=8), workdir, evaluate=False, on_step=stop_at(2)) == {
        "stopped_at": 2
    }
    assert training.train(fsdp_config(data=1, fsdp=4), workdir, evaluate=False, on_step=stop_at(4)) == {
        "stopped_at": 4
    }
    training.train(fsdp_config(data=2, fsdp=2), workdir, evaluate=False)
    want, got = losses_of(fsdp8_run), losses_of(workdir)
    assert list(got) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=1e-5)
    step, state = saved_state(workdir, fsdp_config(data=2, fsdp=2))
    assert step == 6 and sharded_leaves(state["params"]) > 0
    assert {d.id for leaf in jax.tree.leaves(state["params"]) for d in leaf.sharding.device_set} == {
        0,
        1,
        2,
        3,
    }


def test_sharded_isogclr_state_follows_both_axes(data_dir, tmp_path):
    """The per-sample state splits over data x fsdp and still equals the replicated run's losses."""
    replicated = fsdp_config(steps=3, data=-1, fsdp=1, loss="isogclr")
    training.train(replicated, str(tmp_path / "replicated"), evaluate=False)
    sharded = fsdp_config(steps=3, data=2, fsdp=4, loss="isogclr")
    with sharded.unlocked():
        sharded.loss.shard_state = True
    training.train(sharded, str(tmp_path / "sharded"), evaluate=False)
    want, got = losses_of(tmp_path / "replicated"), losses_of(tmp_path / "sharded")
    np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=1e-5)


# --- compiled memory ---------------------------------------------------------------------------


def test_vit_b16_step_memory_shrinks_with_fsdp():
    """ViT-B/16 train step, compile only: fsdp = 8 stores 1/8 of the parameters and Adam moments."""
    from experiments.configs import vit_b16

    memory = {}
    for data, fsdp in ((-1, 1), (1, 8)):
        config = vit_b16.get_config()
        with config.unlocked():
            config.mesh.data, config.mesh.fsdp = data, fsdp
            config.loss.block_size = None
        memory[fsdp] = compiled_memory(config)[:2]
    (full, full_stored), (split, split_stored) = memory[1], memory[8]
    assert full_stored > 1.7e9  # 149.6M parameters + two Adam moments, float32
    # Arguments: parameters + optimizer state (+ an 8-row batch, < 1%).
    assert abs(split.argument_size_in_bytes / (full.argument_size_in_bytes / 8) - 1) < 0.15
    assert abs(split_stored / (full_stored / 8) - 1) < 0.15

    def peak(m):  # outputs alias the (donated) arguments
        return m.argument_size_in_bytes + m.temp_size_in_bytes

    assert peak(split) < 0.5 * peak(full), (peak(split), peak(full))


# --- large-model switches ------------------------------------------------------------------------


def _loss_fn(model_config, images, tokens):
    from flax import nnx

    from contrastive_jax import losses, models

    model = models.create_model(model_config, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params):
        out = nnx.merge(graphdef, params, rest)(images, tokens)
        return losses.clip_loss(out["image_emb"], out["text_emb"], out["logit_scale"])

    return loss_fn, params


def test_remat_and_bfloat16_keep_the_loss_and_cut_activation_memory():
    from contrastive_jax import models

    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(4, 64, 64, 3)), jnp.float32)
    tokens = jnp.asarray(rng.integers(1, 4096, size=(4, 32)), jnp.int32)
    kept = {}
    results = {}
    for name, options in (("plain", {}), ("remat", {"remat": True}), ("bf16", {"dtype": "bfloat16"})):
        loss_fn, params = _loss_fn(models.model_config("small", **options), images, tokens)
        kept[name] = activation_bytes(loss_fn, params)
        results[name] = jax.jit(jax.value_and_grad(loss_fn))(params)
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))  # parameters stay f32
    (loss, grads), (loss_r, grads_r), (loss_h, grads_h) = results["plain"], results["remat"], results["bf16"]
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_r), jax.tree.leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(loss_h, loss, rtol=2e-2)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(grads_h))
    assert kept["remat"] < 0.1 * kept["plain"], kept  # one block input per block instead of everything
    assert kept["bf16"] < 0.6 * kept["plain"], kept  # most activations in half the bytes


def _count(preset: str, vision_depth: int, text_depth: int) -> int:
    from flax import nnx

    from contrastive_jax import models

    config = models.model_config(preset)
    config.vision.depth, config.text.depth = vision_depth, text_depth
    return models.count_params(nnx.eval_shape(lambda: models.create_model(config, rngs=nnx.Rngs(0))))


@pytest.mark.parametrize(
    "preset, millions",
    [("B/16", 149.62), ("L/14", 427.62), ("H/14", 986.11), ("g/14", 1366.68)],
)
def test_large_presets_have_open_clip_parameter_counts(preset, millions):
    """open_clip's model table: ViT-B-16 149.62M, ViT-L-14 427.62M, ViT-H-14 986.11M, ViT-g-14 1366.68M.

    Counted on 1- and 2-block towers (every block of a tower has the same parameters), so the
    40-block g/14 is not traced whole.
    """
    from contrastive_jax import models

    config = models.model_config(preset)
    base = _count(preset, 1, 1)
    per_vision_block, per_text_block = _count(preset, 2, 1) - base, _count(preset, 1, 2) - base
    total = base + (config.vision.depth - 1) * per_vision_block + (config.text.depth - 1) * per_text_block
    assert total / 1e6 == pytest.approx(millions, abs=0.01)
