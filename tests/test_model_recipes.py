"""Model-side training recipes: cuDNN attention, FLIP patch dropout, resolution and context changes.

Attention: on CPU the "cudnn" models are run with jax's cuDNN call routed to its XLA
implementation (every call recorded), so that what the model hands the kernel (masks, causal
flags, layouts) is checked against today's attention; `test_cudnn_attention_on_gpu` runs the real
kernel and is skipped without a GPU (benchmarks/gpu_check.sh runs it). Patch dropout is checked
against open_clip's `PatchDropout` for the kept count and by hand-built forward passes; the
resizing against open_clip's `resize_pos_embed` / `resize_text_pos_embed` and its models.
"""

import copy
import doctest
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from contrastive_jax import models
from contrastive_jax.models import _resize, _towers

KEY = jax.random.key(7)


def micro_config(name="clip", *, image_size=16, dtype="float32", **model_keys):
    """One block per tower, two heads of 16 (cuDNN needs head dims that are multiples of 8),
    7 text positions (CoCa's 7 + 1 is even, as cuDNN's training kernel with a mask needs)."""
    cfg = models.model_config("tiny", name, image_size=image_size, context_length=7, dtype=dtype)
    cfg.vision.update(patch_size=8, width=32, depth=1, num_heads=2)
    cfg.text.update(width=32, depth=1, num_heads=2, vocab_size=50)
    cfg.embed_dim = 16
    cfg.coca.update(num_caption_queries=3, multimodal_depth=1, pooler_heads=2)
    cfg.update(model_keys)
    return cfg


def graphdef_of(cfg):
    return nnx.split(nnx.eval_shape(lambda: models.create_model(cfg, rngs=nnx.Rngs(0))))[0]


# XLA's backend optimisations off for the larger test programs: they compile in about 60% of the
# time, and the programs compared are compiled alike.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def build(cfg, seed=0):
    """`(graphdef, state)` with random parameters drawn by numpy, so that building a model
    compiles nothing: LayerNorm scales near 1, other vectors and scalars small, matrices of
    standard deviation fan-in^-1/2."""
    rng = np.random.default_rng(seed)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: models.create_model(cfg, rngs=nnx.Rngs(0))))

    def draw(path, leaf):
        noise = rng.standard_normal(leaf.shape)
        if leaf.ndim == 0:
            value = np.log(10.0) + 0.1 * noise
        elif leaf.ndim == 1:
            value = (1.0 if jax.tree_util.keystr(path).endswith("['scale'].value") else 0.0) + 0.1 * noise
        else:
            value = noise * np.prod(leaf.shape[:-1]) ** -0.5
        return jnp.asarray(value, leaf.dtype)

    return graphdef, jax.tree_util.tree_map_with_path(draw, abstract)


def inputs(batch=3, image_size=16, length=7):
    k1, k2 = jax.random.split(jax.random.key(0))
    images = jax.random.normal(k1, (batch, image_size, image_size, 3))
    tokens = jax.random.randint(k2, (batch, length), 1, 50).at[:, -2:].set(0)  # trailing padding
    return images, tokens.at[0, 3:].set(0)  # one short text


def value_and_grad(graphdef, state, images, tokens, **call):
    """`(outputs, gradient)` of the model `graphdef`: every output, and the gradient of a scalar
    that mixes them all (traced, not compiled: call it inside `jax.jit`)."""
    params, rest = nnx.split(nnx.merge(graphdef, state), nnx.Param, ...)[1:]

    def loss(p):
        out = nnx.merge(graphdef, p, rest)(images, tokens, **call)
        out = {k: v for k, v in out.items() if k != "caption_labels"}
        return sum(jnp.sum(jnp.sin(3.0 * v.astype(jnp.float32))) for v in jax.tree.leaves(out)), out

    (_, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return out, grads


# ---------------------------------------------------------------------------------------------
# Attention


@pytest.fixture
def routed_attention(monkeypatch):
    """Records every `jax.nn.dot_product_attention` call traced; runs "cudnn" calls as "xla"."""
    calls = []
    real = jax.nn.dot_product_attention

    def recording(query, key, value, bias=None, mask=None, *, implementation=None, **kw):
        calls.append((implementation, bool(kw.get("is_causal", False)), mask is not None, bias is not None))
        implementation = "xla" if implementation == "cudnn" else implementation
        return real(query, key, value, bias, mask, implementation=implementation, **kw)

    monkeypatch.setattr(jax.nn, "dot_product_attention", recording)
    return calls


# (implementation, is_causal, mask given, bias given) of each attention layer, in call order.
EXPECTED_CALLS = {
    ("clip", "xla"): [(None, False, False, False), (None, False, True, False)],
    ("clip", "cudnn"): [("cudnn", False, False, False), ("cudnn", True, False, False)],
    # vision, pooler, unimodal text (CLS + padding mask), decoder self- and cross-attention
    ("coca", "xla"): [(None, False, False, False)] * 2
    + [(None, False, True, False)] * 2
    + [(None, False, False, False)],
    ("coca", "cudnn"): [("cudnn", False, False, False)] * 2
    + [("cudnn", False, True, False), ("cudnn", True, False, False), ("cudnn", False, False, False)],
}


@pytest.mark.parametrize("name", ["clip", "coca"])
def test_every_attention_layer_takes_the_configured_implementation(routed_attention, name):
    """ "xla" is Flax's attention (jax's `implementation=None`); "cudnn" reaches jax as
    `implementation="cudnn"` in every layer, causal masks as `is_causal` (traced only)."""
    for attention in ("xla", "cudnn"):
        graphdef = graphdef_of(micro_config(name, dtype="bfloat16", attention=attention))
        state = nnx.eval_shape(
            lambda: nnx.split(models.create_model(micro_config(name, dtype="bfloat16"), rngs=nnx.Rngs(0)))[1]
        )
        jax.eval_shape(lambda s: value_and_grad(graphdef, s, *inputs()), state)
        assert routed_attention == EXPECTED_CALLS[(name, attention)]
        routed_attention.clear()


def _text_tower_value_and_grad(graphdef, state, tokens):
    params, rest = nnx.split(nnx.merge(graphdef, state), nnx.Param, ...)[1:]

    def loss(p):
        out = nnx.merge(graphdef, p, rest).text(tokens, return_tokens=True)
        return sum(jnp.sum(jnp.sin(3.0 * v.astype(jnp.float32))) for v in out), out

    (_, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return out, grads["text"]


def _today_and_cudnn(batch, compiler_options=None):
    """`{part: (today's, cudnn's)}` outputs and gradients, same parameters, bfloat16, one compiled
    program: CoCa (vision tower, pooler, text tower with its CLS and padding mask, decoder with
    causal self-attention and cross-attention) and CLIP's causal text tower on padded texts."""
    images, tokens = inputs(batch=batch)
    coca, clip = build(micro_config("coca", dtype="bfloat16")), build(micro_config("clip", dtype="bfloat16"))
    coca_cudnn = graphdef_of(micro_config("coca", dtype="bfloat16", attention="cudnn"))
    clip_cudnn = graphdef_of(micro_config("clip", dtype="bfloat16", attention="cudnn"))

    def both(coca_state, clip_state):
        return {
            "coca": tuple(value_and_grad(g, coca_state, images, tokens) for g in (coca[0], coca_cudnn)),
            "clip text": tuple(
                _text_tower_value_and_grad(g, clip_state, tokens) for g in (clip[0], clip_cudnn)
            ),
        }

    return jax.jit(both).lower(coca[1], clip[1]).compile(compiler_options)(coca[1], clip[1])


def test_cudnn_attention_gives_todays_values_and_gradients(routed_attention):
    """The "cudnn" models' attention calls, run by XLA, give today's outputs and gradients."""
    for want, got in _today_and_cudnn(3, FAST_COMPILE).values():
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(
                np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=0, atol=1e-6
            )
    assert {call[0] for call in routed_attention} == {None, "cudnn"}


def test_transformer_takes_a_mask_or_causal_not_both():
    stack = nnx.eval_shape(lambda: models.Transformer(32, 1, 2, 4.0, dtype=jnp.float32, rngs=nnx.Rngs(0)))
    x = jnp.zeros((2, 5, 32))
    with pytest.raises(ValueError, match="not both"):
        jax.eval_shape(lambda s, x: s(x, mask=jnp.ones((1, 1, 5, 5), bool), causal=True), stack, x)


def test_cudnn_attention_checks_its_dtype_and_backend():
    with pytest.raises(ValueError, match="attention='cudnn' needs bfloat16"):
        graphdef_of(micro_config(attention="cudnn"))
    with pytest.raises(ValueError, match="attention must be one of"):
        graphdef_of(micro_config(attention="flash"))
    if jax.default_backend() == "cpu":
        graphdef = graphdef_of(micro_config(dtype="bfloat16", attention="cudnn"))
        state = nnx.eval_shape(
            lambda: nnx.split(models.create_model(micro_config(dtype="bfloat16"), rngs=nnx.Rngs(0)))[1]
        )
        with pytest.raises(RuntimeError, match="cuDNN"):
            jax.eval_shape(lambda s: nnx.merge(graphdef, s)(*inputs()), state)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN's kernel needs an NVIDIA GPU")
def test_cudnn_attention_on_gpu():
    """The real kernel against XLA's attention, bfloat16: relative error of every output and
    gradient leaf (benchmarks/gpu_check.sh runs this)."""
    for name, (want, got) in _today_and_cudnn(8).items():
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
            assert np.linalg.norm(a - b) <= 2e-2 * np.linalg.norm(b) + 1e-6, name


# ---------------------------------------------------------------------------------------------
# FLIP patch dropout

DROP = 0.5  # 16 patches (32 x 32 images, patch 8) → 8 kept


def dropout_config(name="clip", rate=DROP):
    cfg = micro_config(name, image_size=32)
    cfg.vision.patch_dropout = rate
    return cfg


@pytest.fixture(scope="module")
def dropout_model():
    return build(dropout_config())


def test_patch_dropout_off_is_todays_model(dropout_model):
    """Rate 0.5 without a key, and rate 0 with a key, equal a config without the option."""
    older = micro_config(image_size=32)
    del older.attention, older.vision.patch_dropout  # a config written before the options existed
    graphdef, state = build(older)
    zero_rate = graphdef_of(dropout_config(rate=0.0))
    images, tokens = inputs(image_size=32)

    def three(state):
        return (
            nnx.merge(graphdef, state)(images, tokens),
            nnx.merge(dropout_model[0], state)(images, tokens),
            nnx.merge(zero_rate, state)(images, tokens, patch_dropout_key=KEY),
        )

    want, *others = jax.jit(three)(state)
    for got in others:
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def test_drop_patches_keeps_the_class_token_and_open_clips_count():
    import torch

    open_clip = _open_clip()
    tokens = jnp.broadcast_to(jnp.arange(17.0)[None, :, None], (4, 17, 1))  # the value names the token
    for rate in (0.1, 0.5, 0.7, 0.75, 0.99):
        reference = open_clip.transformer.PatchDropout(rate).train()
        want = reference(torch.zeros(4, 17, 1)).shape[1] - 1
        out = np.asarray(models.drop_patches(tokens, KEY, rate))[..., 0].astype(int)
        assert out.shape == (4, 1 + want) and models.num_kept_patches(16, rate) == want
        assert (out[:, 0] == 0).all()  # the class token, first
        kept = [frozenset(row[1:].tolist()) for row in out]
        assert all(len(k) == want and k <= set(range(1, 17)) for k in kept)
        if 1 < want < 15:
            assert len(set(kept)) > 1  # each image draws its own subset
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="patch_dropout"):
            models.drop_patches(tokens, KEY, bad)
    with pytest.raises(ValueError, match="tokens must be"):
        models.drop_patches(tokens[:, :1], KEY, 0.5)  # the class token alone


def test_drop_patches_is_uniform_without_replacement():
    """Over 4,000 keys, each of 8 patches is kept with probability 3/8 and each pair with
    3·2/(8·7), within 5 standard errors."""
    tokens = jnp.arange(9.0).reshape(1, 9, 1)
    keys = jax.random.split(KEY, 4000)
    kept = jax.jit(jax.vmap(lambda k: models.drop_patches(tokens, k, 0.625)[0, 1:, 0]))(keys)
    kept = np.asarray(kept).astype(int)  # [4000, 3] patch ids 1..8
    assert all(len(set(row)) == 3 for row in kept.tolist())
    member = np.zeros((4000, 9), bool)
    member[np.arange(4000)[:, None], kept] = True
    for p, freq in ((3 / 8, member[:, 1:].mean(0)), (6 / 56, (member[:, 1:2] & member[:, 2:]).mean(0))):
        assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / 4000)), (p, freq)


def test_patch_dropout_sits_after_the_position_embeddings(dropout_model):
    """The tower with a key equals a forward pass written out here: patches, class token, position
    embeddings, then `drop_patches`, then LayerNorm, blocks, LayerNorm, class token, projection."""
    images, _ = inputs(image_size=32)

    def tower_and_by_hand(state):
        v = nnx.merge(dropout_model[0], state).vision
        x = v.patch_embed(images).reshape(images.shape[0], -1, 32)
        x = jnp.concatenate([jnp.broadcast_to(v.cls_token.value, (x.shape[0], 1, 32)), x], axis=1)
        x = models.drop_patches(x + v.pos_embed.value, KEY, DROP)
        by_hand = v.proj(v.norm_post(v.transformer(v.norm_pre(x)))[:, 0])
        return v(images, patch_dropout_key=KEY), by_hand

    tower, by_hand = jax.jit(tower_and_by_hand)(dropout_model[1])
    np.testing.assert_allclose(tower, by_hand, rtol=0, atol=1e-6)


def test_patch_dropout_is_a_function_of_its_key_with_finite_gradients(dropout_model):
    """Same key, same image embedding; another key, another; gradients finite, and for one image
    they reach exactly the kept patches' position embeddings (and the class token's)."""
    images, _ = inputs(batch=1, image_size=32)
    vision_params = nnx.All(nnx.Param, nnx.PathContains("vision"))
    graphdef, params, others = nnx.split(nnx.merge(*dropout_model), vision_params, ...)

    def embed(params, key):
        emb = nnx.merge(graphdef, params, others).encode_image(images, patch_dropout_key=key)
        return jnp.sum(jnp.sin(3.0 * emb)), emb

    step = jax.jit(jax.value_and_grad(embed, has_aux=True))
    ((_, first), grads), ((_, again), _), ((_, other), _) = (
        step(params, k) for k in (KEY, KEY, jax.random.key(8))
    )
    np.testing.assert_array_equal(first, again)
    assert np.abs(np.asarray(first) - np.asarray(other)).max() > 1e-3
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    pos = np.abs(np.asarray(grads["vision"]["pos_embed"].value)).sum(1)
    assert np.count_nonzero(pos[1:]) == models.num_kept_patches(16, DROP) and pos[0] > 0


@pytest.mark.parametrize("name", ["clip", "siglip", "coca"])
def test_every_model_hands_the_key_to_its_vision_tower(monkeypatch, name):
    """Traced only: the model call with a key drops patches once, with that key; without, never."""
    seen = []
    real = _towers.drop_patches
    monkeypatch.setattr(
        _towers,
        "drop_patches",
        lambda x, key, rate, **kw: seen.append((key, rate)) or real(x, key, rate, **kw),
    )
    graphdef = graphdef_of(dropout_config(name))
    state = nnx.eval_shape(lambda: nnx.split(models.create_model(dropout_config(name), rngs=nnx.Rngs(0)))[1])
    images, tokens = inputs(image_size=32)
    for key, calls in ((None, 0), (KEY, 1)):
        seen.clear()
        jax.eval_shape(lambda s, k: nnx.merge(graphdef, s)(images, tokens, patch_dropout_key=k), state, key)
        assert len(seen) == calls and all(rate == DROP for _, rate in seen)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "0.5"])
def test_patch_dropout_rate_outside_0_1_is_an_error(rate):
    cfg = micro_config().to_dict()
    cfg["vision"]["patch_dropout"] = rate
    with pytest.raises(ValueError, match="patch_dropout"):
        graphdef_of(cfg)


# ---------------------------------------------------------------------------------------------
# Resolution and context length


def _open_clip():
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip_torch is not installed")
    from tests import torch_refs

    return torch_refs.import_open_clip()


OPEN_CLIP_CFG = {
    "embed_dim": 16,
    "quick_gelu": False,
    "vision_cfg": {"image_size": 24, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 12, "vocab_size": 40, "width": 24, "heads": 2, "layers": 1},
}


def _open_clip_cfg(image_size=24, context_length=12):
    cfg = copy.deepcopy(OPEN_CLIP_CFG)
    cfg["vision_cfg"]["image_size"], cfg["text_cfg"]["context_length"] = image_size, context_length
    return cfg


@pytest.fixture(scope="module")
def converted():
    """A random tiny open_clip CLIP (3 x 3 patches, 12 positions) and its conversion."""
    from tests import torch_refs

    open_clip = _open_clip()
    ref = torch_refs.randomize(open_clip.model.CLIP(**OPEN_CLIP_CFG), seed=5)
    model, config = models.from_open_clip(ref.state_dict(), OPEN_CLIP_CFG)
    return open_clip, ref, nnx.state(model, nnx.Param), config


def _model_with(params, config, **changes):
    """The model of `config` with `changes` (`vision__image_size=40`), holding `params` resized."""
    new = copy.deepcopy(config)
    for key, value in changes.items():
        tower, leaf = key.split("__")
        new[tower][leaf] = value
    model = nnx.eval_shape(lambda: models.create_model(new, rngs=nnx.Rngs(0)))
    nnx.update(model, models.resize_params(params, config, new))
    return model


def test_resizing_to_the_same_size_is_the_identity():
    table = jax.random.normal(KEY, (1 + 5 * 5, 8))
    np.testing.assert_array_equal(models.resize_vision_pos_embed(table, 5), table)
    np.testing.assert_array_equal(
        models.resize_vision_pos_embed(table[1:], (5, 5), num_prefix_tokens=0), table[1:]
    )
    np.testing.assert_array_equal(models.resize_text_pos_embed(table, 26), table)


@pytest.mark.parametrize("image_size", [16, 40])  # 3 x 3 patches → 2 x 2 and 5 x 5
def test_vision_resize_equals_open_clips_resize_pos_embed(converted, image_size):
    open_clip, ref, params, _ = converted
    state = dict(ref.state_dict())
    open_clip.model.resize_pos_embed(state, open_clip.model.CLIP(**_open_clip_cfg(image_size)))
    want = state["visual.positional_embedding"].numpy()
    got = models.resize_vision_pos_embed(params["vision"]["pos_embed"].value, image_size // 8)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_resized_model_gives_open_clips_image_embeddings_at_the_new_resolution(converted):
    import torch

    from tests import torch_refs

    open_clip, ref, params, config = converted
    state = dict(ref.state_dict())
    target = open_clip.model.CLIP(**_open_clip_cfg(40)).eval()
    open_clip.model.resize_pos_embed(state, target)
    target.load_state_dict(state, strict=True)
    pixels, nhwc = torch_refs.images(2, 40)
    with torch.no_grad():
        want = target.encode_image(pixels, normalize=True).numpy()
    model = _model_with(params, config, vision__image_size=40)
    got = jax.jit(lambda m, x: m.encode_image(x))(model, jnp.asarray(nhwc))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_text_context_cut_keeps_the_embeddings_of_texts_that_fit(converted):
    from tests import torch_refs

    _, _, params, config = converted
    tokens = torch_refs.clip_tokens(3, 8, 40)  # texts of at most 8 tokens
    long = np.zeros((3, 12), np.int64)
    long[:, :8] = tokens
    model = _model_with(params, config, text__context_length=8)
    original = _model_with(params, config)
    encode = jax.jit(lambda m, t: m.encode_text(t))
    np.testing.assert_allclose(
        encode(model, jnp.asarray(tokens)), encode(original, jnp.asarray(long)), atol=1e-6
    )


def test_text_context_extension_equals_open_clips_resize_text_pos_embed(converted):
    open_clip, ref, params, config = converted
    state = dict(ref.state_dict())
    open_clip.model.resize_text_pos_embed(state, open_clip.model.CLIP(**_open_clip_cfg(context_length=20)))
    new = copy.deepcopy(config)
    new.text.context_length = 20
    got = models.resize_params(params, config, new)["text"]["pos_embed"].value
    np.testing.assert_allclose(got, state["positional_embedding"].numpy(), rtol=0, atol=1e-5)


def test_resize_params_takes_any_parameter_tree_and_keeps_cocas_cls_row():
    """nnx.State, its pure dict and a checkpoint's nested dicts give the same arrays; every
    parameter but the position embeddings is returned as it is; CoCa's CLS row is kept."""
    small, large = micro_config("coca"), micro_config("coca", image_size=24)
    large.text.context_length = 5
    params = nnx.state(nnx.merge(*build(small)), nnx.Param)
    fitted = models.resize_params(params, small, large)
    pure = models.resize_params(params.to_pure_dict(), small, large)
    saved = models.resize_params(jax.tree.map(lambda x: {"value": x}, params.to_pure_dict()), small, large)

    def flat(tree):  # path -> array, the checkpoint's trailing "value" dropped
        leaves = jax.tree_util.tree_leaves_with_path(tree)
        return {
            jax.tree_util.keystr(path).removesuffix("['value']").removesuffix(".value"): x
            for path, x in leaves
        }

    want = flat(fitted)
    for tree in (pure, saved):
        got = flat(tree)
        assert got.keys() == want.keys()
        for path, x in want.items():
            np.testing.assert_array_equal(got[path], x)
    before, after = params.to_pure_dict(), fitted.to_pure_dict()
    assert after["vision"]["pos_embed"].shape == (1 + 9, 32)
    np.testing.assert_array_equal(
        after["text"]["pos_embed"],
        np.concatenate([before["text"]["pos_embed"][:5], before["text"]["pos_embed"][7:]]),
    )
    same = lambda path: "pos_embed" not in jax.tree_util.keystr(path)  # noqa: E731
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(before), jax.tree.leaves(after), strict=True):
        if same(path):
            np.testing.assert_array_equal(a, b)
    model = nnx.eval_shape(lambda: models.create_model(large, rngs=nnx.Rngs(0)))
    nnx.update(model, fitted)
    out = jax.eval_shape(lambda m, i, t: m(i, t), model, *inputs(image_size=24, length=5))
    assert out["caption_logits"].shape == (3, 4, 50)


def test_resize_params_refuses_any_other_change():
    base = micro_config()
    params = {"vision": {"pos_embed": jnp.zeros((5, 32))}, "text": {"pos_embed": jnp.zeros((7, 32))}}
    for key, value in (
        ("vision.width", 64),
        ("text.vocab_size", 60),
        ("embed_dim", 8),
        ("vision.act", "gelu"),
    ):
        other = copy.deepcopy(base)
        node, *path = key.split(".")
        (other[node] if path else other)[path[0] if path else node] = value
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            models.resize_params(params, base, other)
    computing = micro_config(dtype="bfloat16", remat=True, attention="cudnn")
    computing.vision.patch_dropout = 0.5
    older = micro_config()
    del older.attention, older.vision.patch_dropout
    models.resize_params(params, older, computing)  # how a model computes may change freely
    with pytest.raises(ValueError, match="vision.pos_embed"):
        models.resize_params({"text": params["text"]}, base, base)


def test_resize_params_without_a_class_token_and_for_coca_only_reads_its_section():
    """A "map" pool has no class token row; CoCa's section may differ for CLIP, not for CoCa."""
    siglip, larger = micro_config("siglip"), micro_config("siglip", image_size=24)
    for cfg in (siglip, larger):
        cfg.vision.pool = "map"
    params = {"vision": {"pos_embed": jnp.zeros((4, 32))}, "text": {"pos_embed": jnp.zeros((7, 32))}}
    assert models.resize_params(params, siglip, larger)["vision"]["pos_embed"].shape == (9, 32)
    for name in ("clip", "coca"):
        base, other = micro_config(name), micro_config(name)
        other.coca.num_caption_queries = 5
        if name == "clip":
            models.check_resizable(base, other)
        else:
            with pytest.raises(ValueError, match=r"coca\.num_caption_queries"):
                models.check_resizable(base, other)


def test_resize_functions_refuse_bad_shapes_and_sizes():
    with pytest.raises(ValueError, match="not a square grid"):
        models.resize_vision_pos_embed(jnp.zeros((1 + 5, 8)), 3)
    with pytest.raises(ValueError, match="grid_size"):
        models.resize_vision_pos_embed(jnp.zeros((1 + 4, 8)), 0)
    with pytest.raises(ValueError, match="pos_embed must be"):
        models.resize_vision_pos_embed(jnp.zeros((5,)), 3)
    with pytest.raises(ValueError, match="context_length"):
        models.resize_text_pos_embed(jnp.zeros((4, 8)), 0)
    with pytest.raises(ValueError, match="pos_embed must be"):
        models.resize_text_pos_embed(jnp.zeros((4,)), 2)


def test_docstring_examples_run():
    assert doctest.testmod(_resize).failed == 0 and doctest.testmod(_towers).failed == 0
