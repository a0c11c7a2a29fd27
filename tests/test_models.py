"""Models: shapes, causal and padding properties, CoCa's shift, sizes against published numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from contrastive_jax import models


def micro_config(name="clip", **kw):
    cfg = models.model_config("tiny", name, image_size=16, context_length=8, **kw)
    cfg.vision.update(patch_size=8, width=32, depth=1, num_heads=2)
    cfg.text.update(width=32, depth=2, num_heads=2, vocab_size=50)
    cfg.embed_dim = 16
    cfg.coca.update(num_caption_queries=3, multimodal_depth=1, pooler_heads=2)
    return cfg


def inputs(batch=3, length=8, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    images = jax.random.normal(k1, (batch, 16, 16, 3))
    tokens = jax.random.randint(k2, (batch, length), 1, 50).at[:, -2:].set(0)  # two trailing pads
    return images, tokens


class Jitted:
    """A model whose methods run under jit (eager NNX calls are slow), with `.module` for the rest."""

    def __init__(self, module):
        self.module = module
        self._graphdef, self._state = nnx.split(module)
        self._calls = {}

    def __getattr__(self, method):
        if method not in self._calls:
            graphdef = self._graphdef
            self._calls[method] = jax.jit(lambda s, *a: getattr(nnx.merge(graphdef, s), method)(*a))
        return lambda *args: self._calls[method](self._state, *args)

    def __call__(self, *args):
        return self.__getattr__("__call__")(*args)


@pytest.fixture(scope="module")
def built():
    return {
        name: Jitted(models.create_model(micro_config(name), rngs=nnx.Rngs(0)))
        for name in ("clip", "siglip", "coca")
    }


@pytest.mark.parametrize("name", ["clip", "siglip", "coca"])
def test_outputs_are_what_the_losses_take(built, name):
    images, tokens = inputs()
    out = built[name](images, tokens)
    assert out["image_emb"].shape == out["text_emb"].shape == (3, 16)
    np.testing.assert_allclose(jnp.linalg.norm(out["image_emb"], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(out["text_emb"], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out["logit_scale"], {"siglip": 10.0}.get(name, 1 / 0.07), rtol=1e-5)
    if name == "siglip":
        assert float(out["logit_bias"]) == -10.0
    if name == "coca":
        assert out["caption_logits"].shape == (3, 7, 50)
        np.testing.assert_array_equal(out["caption_labels"], tokens[:, 1:])


def test_text_embedding_ignores_trailing_padding(built):
    _, tokens = inputs()
    for name in ("clip", "coca"):
        model = built[name]
        short = model.encode_text(tokens[:, :6])  # the pads removed
        np.testing.assert_allclose(model.encode_text(tokens), short, rtol=1e-5, atol=1e-6)


def test_text_tower_is_causal(built):
    _, tokens = inputs()
    text = built["clip"].module.text
    changed = tokens.at[:, 4].set(7)
    _, before = text(tokens, return_tokens=True)
    _, after = text(changed, return_tokens=True)
    np.testing.assert_allclose(before[:, :4], after[:, :4], rtol=1e-5, atol=1e-6)
    assert not np.allclose(before[:, 4], after[:, 4])


def test_coca_logits_depend_only_on_earlier_tokens(built):
    images, tokens = inputs()
    tokens = tokens.at[:, -2:].set(5)  # no padding, so every position is real text
    out = built["coca"](images, tokens)
    out_changed = built["coca"](images, tokens.at[:, 5].set(9))
    # logits at position t predict token t+1 and may see tokens ≤ t only
    np.testing.assert_allclose(
        out["caption_logits"][:, :5], out_changed["caption_logits"][:, :5], rtol=1e-5, atol=1e-5
    )
    assert not np.allclose(out["caption_logits"][:, 5], out_changed["caption_logits"][:, 5])


def test_clip_vit_b16_parameter_count_matches_published():
    # CLIP ViT-B/16: 149,620,737 parameters (open_clip's model table: 149.62M); the vision tower
    # 86.19M as ViT-B/16 with CLIP's projection. Shapes only: nothing is allocated.
    abstract = nnx.eval_shape(
        lambda: models.create_model(models.model_config("B/16", "clip"), rngs=nnx.Rngs(0))
    )
    assert models.count_params(abstract) == 149_620_737
    assert models.count_params(abstract.vision) == 86_192_640


def test_flops_estimate_matches_compiled_cost():
    cfg = models.model_config("small", "clip", image_size=32)
    model = models.create_model(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    fwd = lambda s, i, t: nnx.merge(graphdef, s)(i, t)  # both towers (an unused one would be dropped)
    images, tokens = jnp.zeros((2, 32, 32, 3)), jnp.ones((2, 32), jnp.int32)
    cost = jax.jit(fwd).lower(state, images, tokens).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    # cost_analysis also counts elementwise work (softmax, LayerNorm, GELU): allow it on top.
    assert 0.85 < models.estimate_flops(cfg, batch_size=2) / cost["flops"] < 1.05


def test_gradients_reach_every_parameter(built):
    from contrastive_jax import losses

    images, tokens = inputs(batch=4)
    for name in ("clip", "coca"):
        graphdef, params, rest = nnx.split(built[name].module, nnx.Param, ...)

        def loss(p):
            out = nnx.merge(graphdef, p, rest)(images, tokens)
            value = losses.clip_loss(out["image_emb"], out["text_emb"], out["logit_scale"])
            if name == "coca":
                value += losses.caption_loss(out["caption_logits"], out["caption_labels"])
            return value

        grads = jax.jit(jax.grad(loss))(params)
        dead = [
            jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_leaves_with_path(grads) if not np.any(g)
        ]
        assert not dead, dead


def test_jit_split_merge_equals_eager_and_bf16_is_close(built):
    images, tokens = inputs()
    model = built["clip"].module
    graphdef, state = nnx.split(model)
    jitted = jax.jit(lambda s, i, t: nnx.merge(graphdef, s)(i, t))(state, images, tokens)
    eager = model(images, tokens)
    np.testing.assert_allclose(jitted["image_emb"], eager["image_emb"], rtol=1e-5, atol=1e-6)
    bf16 = nnx.merge(
        nnx.split(models.create_model(micro_config("clip", dtype="bfloat16"), rngs=nnx.Rngs(0)))[0], state
    )(images, tokens)
    assert bf16["image_emb"].dtype == jnp.float32
    np.testing.assert_allclose(bf16["image_emb"], eager["image_emb"], atol=5e-2)


def test_bad_inputs(built):
    images, tokens = inputs()
    model = built["clip"].module
    with pytest.raises(ValueError):
        model(images[:, :8], tokens)  # wrong image size
    with pytest.raises(TypeError):
        model(images, tokens.astype(jnp.float32))
    with pytest.raises(ValueError):
        model(images, jnp.ones((3, 9), jnp.int32))  # longer than context_length
    with pytest.raises(ValueError):
        model(images, tokens[:2])
    with pytest.raises(ValueError):
        models.model_config("huge")
    unknown = micro_config("clip")
    unknown.name = "align"
    with pytest.raises(ValueError):
        models.create_model(unknown, rngs=nnx.Rngs(0))


def test_last_token_index_is_a_position_not_a_count():
    """CLIP's BPE pads with 0, which is also "!": a pad-valued token inside the text must not
    move the pooled position."""
    from contrastive_jax.models._towers import last_token_index

    tokens = jnp.array([[5, 0, 7, 0, 0], [0, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
    assert last_token_index(tokens, 0).tolist() == [2, 0, 4]
