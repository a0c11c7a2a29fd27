"""clip-rocket's CL2L and BarLIP as trainable objectives: their heads, the step on views, the checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from contrastive_jax import models, train
from contrastive_jax.train import _loop
from tests.train_common import clip_config, metric_records

# ----------------------------------------------------------------------------------------------
# The heads: clip-rocket's PyTorch modules are the reference.


def _torch_mlp(mlp: models.ProjectionMLP, last_norm: bool) -> torch.nn.Sequential:
    """clip-rocket's head in PyTorch (Linear, BatchNorm1d, ReLU, ...) with `mlp`'s weights."""
    layers = []
    for i, linear in enumerate(mlp.linears):
        kernel = np.asarray(linear.kernel.value)
        torch_linear = torch.nn.Linear(*kernel.shape)
        torch_linear.weight.data = torch.from_numpy(kernel.T.copy()).double()
        torch_linear.bias.data = torch.from_numpy(np.asarray(linear.bias.value)).double()
        layers.append(torch_linear)
        if i < len(mlp.norms):
            norm = torch.nn.BatchNorm1d(kernel.shape[1]).double()
            norm.weight.data = torch.from_numpy(np.asarray(mlp.norms[i].scale.value)).double()
            norm.bias.data = torch.from_numpy(np.asarray(mlp.norms[i].bias.value)).double()
            layers.append(norm)
        if i < len(mlp.linears) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).train()  # training mode: the batch's statistics


@pytest.mark.parametrize("last_norm", [False, True])  # CL2L's local head; BarLIP's projector
def test_heads_equal_clip_rockets_pytorch_heads_in_training_mode(last_norm):
    mlp = models.ProjectionMLP(6, 10, 4, last_norm=last_norm, rngs=nnx.Rngs(0))
    for norm in mlp.norms:  # not the identity affine of a fresh BatchNorm
        norm.scale.value = jax.random.uniform(jax.random.key(1), norm.scale.value.shape, minval=0.5, maxval=2)
        norm.bias.value = jax.random.normal(jax.random.key(2), norm.bias.value.shape)
    x = np.random.default_rng(0).normal(size=(2, 8, 6)).astype(np.float32)  # 2 views of 8 samples
    want = [_torch_mlp(mlp, last_norm)(torch.from_numpy(view).double()).detach().numpy() for view in x]
    np.testing.assert_allclose(mlp(jnp.asarray(x)), np.stack(want), rtol=1e-4, atol=1e-5)


def _model(name, projector="mlp"):
    config = clip_config(loss=name).model
    with config.unlocked():
        config.cl2l.local_projector = projector
    return config, models.create_model(config, rngs=nnx.Rngs(0))


def _inputs(n=2, batch=8):
    rng = np.random.default_rng(0)
    return (
        jnp.asarray(rng.normal(size=(batch, 64, 64, 3)), jnp.float32),
        jnp.asarray(rng.integers(1, 50, (batch, 16)), jnp.int32),
        jnp.asarray(rng.normal(size=(batch, n, 64, 64, 3)), jnp.float32),
        jnp.asarray(rng.integers(1, 50, (batch, n, 16)), jnp.int32),
    )


@pytest.mark.parametrize("name", ["cl2l", "barlip"])
def test_global_outputs_are_clips_and_shared_views_are_the_global_embeddings(name):
    config, model = _model(name, projector="shared")
    images, tokens, _, _ = _inputs()
    clip_config_ = config.copy_and_resolve_references()
    with clip_config_.unlocked():
        clip_config_.name = "clip"
    clip = models.create_model(clip_config_, rngs=nnx.Rngs(0))
    nnx.update(clip, nnx.state(model, nnx.Param).filter(lambda path, _: path[0] in ("vision", "text")))
    got, want = model(images, tokens), clip(images, tokens)
    for key in ("image_emb", "text_emb"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)
    # Two views that are the global pair, through the shared projections: the global embeddings.
    views = model.encode_views(jnp.stack([images, images], 1), jnp.stack([tokens, tokens], 1))
    for key, local in (("image_emb", "image_local"), ("text_emb", "text_local")):
        np.testing.assert_allclose(views[local], jnp.stack([got[key]] * 2, 1), rtol=1e-5, atol=1e-6)
    assert views["local_logit_scale"] == got["logit_scale"]


def test_separate_heads_have_their_own_logit_scale_clamped_like_clips():
    config, model = _model("cl2l")
    views = model.encode_views(*_inputs()[2:])
    assert views["image_local"].shape == (8, 2, config.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(views["text_local"], axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(views["local_logit_scale"], 10.0, rtol=1e-6)  # clip-rocket: ln(1/0.1)
    params = nnx.state(model, nnx.Param)
    clamp = train.clamp_logit_scale(100.0)
    grown = jax.tree.map(lambda p: jnp.full_like(p, 9.0), params)  # a step far past ln 100
    updates, _ = clamp.update(grown, clamp.init(params), params)
    new = jax.tree.map(lambda p, u: p + u, params, updates)
    np.testing.assert_allclose(new["local_logit_scale_param"].value, np.log(100.0), rtol=1e-6)
    assert float(new["local_image_head"]["linears"][0]["bias"].value[0]) > 8.0  # others untouched


def test_views_must_match_in_batch_and_count():
    _, model = _model("cl2l")
    _, _, local_images, local_tokens = _inputs()
    with pytest.raises(ValueError, match="differ in batch or view count"):
        model.encode_views(local_images, local_tokens[:, :1])
    with pytest.raises(ValueError, match=r"rank 5 \(\[B, n, \.\.\.\]"):
        model.encode_views(local_images[:, 0], local_tokens)


# ----------------------------------------------------------------------------------------------
# The train step on views: one device ≡ eight (BatchNorm's statistics are the global batch's).


def _step(name, mesh):
    config = clip_config(loss=name)
    with config.unlocked():
        config.model.text.vocab_size = 50
    _, graphdef, rest, optimizer, state, shardings = train.init_state(config, 16, mesh=mesh)
    step = train.make_train_step(graphdef, optimizer, config.loss, mesh, shardings)
    images, tokens, local_images, local_tokens = _inputs(batch=16)
    to_pixels = lambda x: np.asarray(jnp.clip(x * 40 + 128, 0, 255)).astype(np.uint8)
    batch = {
        "image": to_pixels(images), "tokens": np.asarray(tokens), "index": np.arange(16, dtype=np.int32),
        "local_image": to_pixels(local_images), "local_tokens": np.asarray(local_tokens),
    }  # fmt: skip
    params, _, _, metrics = step(
        state["params"], rest, state["opt_state"], state["loss_state"], _loop._to_global(batch, mesh)
    )
    return {k: float(v) for k, v in metrics.items()}, params


@pytest.mark.parametrize("name", ["barlip"])  # CL2L's terms and heads are BarLIP's first part
def test_step_on_eight_devices_equals_the_step_on_one(name):
    one = _step(name, _loop._single_device_mesh())
    eight = _step(name, train.make_mesh(clip_config(loss=name)))
    assert set(one[0]) >= {"loss", "local_logit_scale"} | ({"cl2l", "barlip"} if name == "barlip" else set())
    for key, value in one[0].items():
        np.testing.assert_allclose(eight[0][key], value, rtol=1e-5, err_msg=key)
    for got, want in zip(jax.tree.leaves(eight[1]), jax.tree.leaves(one[1])):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Configs that cannot train these objectives are refused with the fix.


def _refused(config, match):
    with pytest.raises(train.ConfigError, match=match):
        train.validate_config(config, 8)


def test_configs_without_views_or_with_micro_batched_batchnorm_are_refused(data_dir):
    config = clip_config(loss="cl2l")
    train.validate_config(config, 8)
    with config.unlocked():
        config.data.local_views = 0
    _refused(config, r"trains on augmented views.*--config\.data\.local_views=2")
    config = clip_config(loss="barlip")
    with config.unlocked():
        config.grad_accum_steps = 2
    _refused(config, r"BatchNorm heads.*--config\.grad_accum_steps=1")
    config = clip_config(loss="cl2l")
    with config.unlocked():
        config.grad_accum_steps = 2
        config.model.cl2l.local_projector = "linear"  # no BatchNorm: accumulation is exact
    train.validate_config(config, 8)
    config.model.cl2l.local_projector = "mpl"
    _refused(config, r"local_projector='mpl'.*did you mean 'mlp'")


# ----------------------------------------------------------------------------------------------
# Through train(): the views come from the pipeline, the run evaluates and loads as CLIP does.


def test_barlip_run_logs_its_terms_evaluates_and_reloads(data_dir, tmp_path):
    config = clip_config(steps=3, loss="barlip")
    result = train.train(config, str(tmp_path))
    records = [r for r in metric_records(tmp_path) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:  # the total is the sum of its logged terms
        np.testing.assert_allclose(r["loss"], r["cl2l"] + r["barlip"], rtol=1e-5)
        assert r["local_logit_scale"] > 0
    assert 0 <= result["image_to_text_r@1"] <= 1 and "zero_shot/count" in result  # the global embeddings
    _, model, step, _ = train.load_run(str(tmp_path))
    assert step == 3 and isinstance(model, models.BarLIP)
