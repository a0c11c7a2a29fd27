"""Training recipes: exact accumulation, LiT locking, parameter EMA, distillation, resolution change."""

import math

import jax
import numpy as np
import pytest

from contrastive_jax import losses, train
from contrastive_jax.train import _loop
from tests.train_common import assert_same_state, clip_config, losses_of, metric_records, saved_state

# ----------------------------------------------------------------------------------------------
# grad_accum_steps: k micro-batches contrasted as one batch.


def _step_config(loss, exchange="all_gather", fsdp=1, bf16_remat=False):
    config = clip_config(loss=loss)
    with config.unlocked():
        if bf16_remat:
            config.model.dtype, config.model.remat = "bfloat16", True
        config.batch_size = 32  # 8 devices x 4 micro-batches x 1 row
        config.model.text.vocab_size = 50
        config.loss.exchange = exchange
        config.mesh.fsdp = fsdp
        if fsdp > 1:  # wide enough that the MLP kernels split over "fsdp"
            config.model.vision.width = config.model.text.width = 64
    return config


def _one_step(config, k):
    """Loss, parameters and loss state after one step on a fixed batch of 32, with k micro-batches."""
    mesh = train.make_mesh(config)
    _, graphdef, rest, optimizer, state, shardings = train.init_state(config, 64, mesh=mesh)
    step = train.make_train_step(graphdef, optimizer, config.loss, mesh, shardings, grad_accum_steps=k)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (32, 64, 64, 3), dtype=np.uint8),
        "tokens": rng.integers(1, 50, (32, 16)).astype(np.int32),
        "index": rng.permutation(64)[:32].astype(np.int32),
    }
    params, _, loss_state, metrics = step(
        state["params"], rest, state["opt_state"], state["loss_state"], _loop._to_global(batch, mesh)
    )
    return float(metrics["loss"]), params, loss_state


@pytest.mark.parametrize(
    "loss, exchange, fsdp, bf16_remat",
    [
        ("clip", "ring", 1, False),
        ("siglip", "all_gather", 1, False),
        ("isogclr", "all_gather", 1, False),
        ("clip", "all_gather", 2, False),
        ("clip", "all_gather", 1, True),  # bfloat16 compute, every block rematerialised
    ],
)
def test_accumulated_step_equals_the_whole_batch_step(loss, exchange, fsdp, bf16_remat):
    config = _step_config(loss, exchange, fsdp, bf16_remat)
    whole, accumulated = _one_step(config, 1), _one_step(config, 4)
    np.testing.assert_allclose(accumulated[0], whole[0], rtol=1e-5)
    for got, want in zip(jax.tree.leaves(accumulated[1]), jax.tree.leaves(whole[1])):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    # iSogCLR's running maxima b = (S_ij - S_ii) / tau with tau = 0.01 carry a similarity's float32
    # rounding (the towers see batches of another size) times 100: compared in the similarity domain.
    state = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(whole[2])}
    for path, got in jax.tree_util.tree_leaves_with_path(accumulated[2]):
        name = jax.tree_util.keystr(path)
        scale = state[name.replace(".b_", ".tau_")] if ".b_" in name else 1.0
        np.testing.assert_allclose(
            np.asarray(got) * scale, state[name] * scale, rtol=1e-5, atol=1e-6, err_msg=name
        )


def test_grad_accum_steps_logs_the_losses_of_the_whole_batch(data_dir, tmp_path):
    runs = {}
    for k in (1, 4):
        config = clip_config(steps=3)
        with config.unlocked():
            config.batch_size, config.grad_accum_steps = 32, k
        train.train(config, str(tmp_path / str(k)), evaluate=False)
        runs[k] = losses_of(tmp_path / str(k))
    assert sorted(runs[4]) == [1, 2, 3]
    np.testing.assert_allclose(list(runs[4].values()), list(runs[1].values()), rtol=1e-5)
    config = clip_config()
    with config.unlocked():
        config.grad_accum_steps = 4  # 16 rows over 8 devices: 2 per device, not 4 micro-batches
    with pytest.raises(train.ConfigError, match="multiple of devices x grad_accum_steps = 32"):
        train.validate_config(config, 8)


# ----------------------------------------------------------------------------------------------
# LiT (locked image tower) with parameter EMA, from a finished run.


@pytest.fixture(scope="module")
def source_run(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("source")
    train.train(clip_config(steps=4), str(workdir), evaluate=False)
    return workdir, saved_state(workdir, clip_config(steps=4))[1]


def _vision(tree):
    return {k: v for k, v in tree.items() if k == "vision"}


def test_locked_image_tower_stays_bit_identical_and_keeps_no_moments(source_run, tmp_path):
    source_dir, source = source_run
    config = clip_config(steps=3)
    with config.unlocked():
        config.init_from = str(source_dir)
        config.model.lock_image = True
        config.ema_decay = 0.5
    train.train(config, str(tmp_path), evaluate=False)
    _, state = saved_state(tmp_path, config)
    assert_same_state(_vision(state["params"]), _vision(source["params"]))  # bit for bit
    text_change = [
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(state["params"]["text"]), jax.tree.leaves(source["params"]["text"]))
    ]
    assert max(text_change) > 1e-4
    # The optimizer holds AdamW's two moments for the trainable parameters only.
    mask = train.locked_mask(state["params"], config.model)
    trainable = sum(p.size for p, m in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(mask)) if not m)
    locked = sum(p.size for p, m in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(mask)) if m)
    assert locked == sum(p.size for p in jax.tree.leaves(source["params"]["vision"]))
    moments = sum(x.size for x in jax.tree.leaves(state["opt_state"]) if np.issubdtype(x.dtype, np.floating))
    assert moments == 2 * trainable
    # The EMA of a locked parameter is that parameter; of a trained one, a mixture.
    assert_same_state(_vision(state["ema_params"]), _vision(source["params"]))
    assert any(
        not np.array_equal(np.asarray(e), np.asarray(p))
        for e, p in zip(
            jax.tree.leaves(state["ema_params"]["text"]), jax.tree.leaves(state["params"]["text"])
        )
    )
    # Evaluation (load_run) reads the EMA, not the last parameters.
    _, model, _, _ = train.load_run(str(tmp_path))
    np.testing.assert_array_equal(
        np.asarray(model.text.pos_embed.value), np.asarray(state["ema_params"]["text"]["pos_embed"].value)
    )


def test_unlocked_groups_follow_open_clip(source_run):
    _, source = source_run
    config = clip_config()
    with config.unlocked():
        config.model.lock_image = True
        config.model.vision.depth = 1
        config.model.lock_image_unlocked_groups = 1  # the head: projection
    trained = {
        jax.tree_util.keystr(path)
        for path, locked in jax.tree_util.tree_flatten_with_path(
            train.locked_mask(source["params"], config.model)
        )[0]
        if not locked and "vision" in jax.tree_util.keystr(path)
    }
    assert trained == {"['vision']['proj']['kernel'].value"}
    with config.unlocked():
        config.model.lock_image_unlocked_groups = 9
    with pytest.raises(train.ConfigError, match="lock_image_unlocked_groups=9"):
        train.validate_config(config, 8)


def test_ema_update_is_the_running_average():
    params = [np.array([1.0, 2.0], np.float32), np.array([3.0], np.float32)]
    ema = [np.zeros(2, np.float32), np.zeros(1, np.float32)]
    for step in range(3):
        current = [p * (step + 1) for p in params]
        ema = train.ema_update(ema, current, 0.9)
        expected = [sum(0.1 * 0.9 ** (step - s) * p * (s + 1) for s in range(step + 1)) for p in params]
        for got, want in zip(ema, expected):
            np.testing.assert_allclose(got, want, rtol=1e-6)
    assert all(np.array_equal(e, p) for e, p in zip(train.ema_update(ema, params, 0.0), params))


# ----------------------------------------------------------------------------------------------
# Distillation.


def test_distill_clip_loss_is_the_cross_entropy_against_the_teachers_rows():
    rng = np.random.default_rng(3)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    image, text = unit(rng.normal(size=(6, 4))), unit(rng.normal(size=(6, 4)))
    t_image, t_text = unit(rng.normal(size=(6, 5))), unit(rng.normal(size=(6, 5)))

    def cross_entropy(student_rows, teacher_rows):
        total = 0.0
        for s_row, t_row in zip(student_rows, teacher_rows):
            p = np.exp(t_row - t_row.max()) / np.exp(t_row - t_row.max()).sum()
            log_q = s_row - (s_row.max() + math.log(np.exp(s_row - s_row.max()).sum()))
            total -= float(np.dot(p, log_q))
        return total / len(student_rows)

    s, t = 7.0, 12.0
    expected = 0.5 * (
        cross_entropy(s * image @ text.T, t * t_image @ t_text.T)
        + cross_entropy(s * text @ image.T, t * t_text @ t_image.T)
    )
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    got = losses.distill_clip_loss(f32(image), f32(text), s, f32(t_image), f32(t_text), t)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_distilling_from_itself_starts_at_the_teachers_entropy(source_run, tmp_path):
    source_dir, _ = source_run
    config = clip_config(steps=1)
    with config.unlocked():
        config.init_from = config.distill.teacher = str(source_dir)
        config.distill.weight = 0.5
    train.train(config, str(tmp_path), evaluate=False)
    first = metric_records(tmp_path)[0]
    # The first batch, through the teacher (= the student at step 0), by hand.
    _, model, _, _ = train.load_run(str(source_dir))
    pipeline = _loop._open_input(train.read_run_config(str(tmp_path)))
    batch = next(iter(pipeline.dataset))
    from contrastive_jax import data

    images = data.normalize_images(np.asarray(batch["image"]), pipeline.pixel_mean, pipeline.pixel_std)
    image, text = (
        np.asarray(model.encode_image(images), np.float64),
        np.asarray(model.encode_text(batch["tokens"])),
    )
    scale = float(model.logit_scale())
    entropy = 0.0
    for logits in (scale * image @ text.T, scale * text @ image.T):
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        entropy += 0.5 * float(np.mean(-np.sum(p * np.log(p), axis=1)))
    np.testing.assert_allclose(first["distill_loss"], entropy, rtol=1e-4)
    np.testing.assert_allclose(
        first["loss"], first["objective_loss"] + 0.5 * first["distill_loss"], rtol=1e-6
    )


# ----------------------------------------------------------------------------------------------
# init_from at another resolution and context length, with FLIP patch dropout.


def test_init_from_fine_tunes_at_another_resolution_and_context(source_run, tmp_path):
    source_dir, source = source_run
    config = clip_config(steps=2)
    with config.unlocked():
        config.init_from = str(source_dir)
        config.init_from_image_size, config.init_from_context_length = 96, 12  # 4 x 4 patches -> 6 x 6
        config.model.vision.patch_dropout = 0.5
    train.train(config, str(tmp_path), evaluate=False)
    assert np.isfinite([r["loss"] for r in metric_records(tmp_path)]).all()
    saved = train.read_run_config(str(tmp_path))
    assert (saved.data.image_size, saved.model.vision.image_size, saved.model.text.context_length) == (
        96,
        96,
        12,
    )
    _, state = saved_state(tmp_path, saved)
    assert state["params"]["vision"]["pos_embed"].value.shape == (37, 32)
    assert state["params"]["text"]["pos_embed"].value.shape == (12, 32)
