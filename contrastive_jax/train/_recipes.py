"""Training recipes the step composes: locked towers (LiT), parameter EMA, exact accumulation.

Each is a small function of the parameters or the batch; `make_train_step` and `train()` call
them, so the loop stays one readable function.

- **Locking** (`locked_mask`, `lock_optimizer`): a locked parameter enters the forward pass under
  `stop_gradient` (XLA then drops the backward pass through a wholly locked tower) and gets
  `optax.set_to_zero()` instead of AdamW, so it has no optimizer moments and stays bit-identical.
- **EMA** (`ema_update`): `ema ← d·ema + (1 − d)·params` after every step.
- **Accumulation** (`interleave`, `deinterleave`): the global batch is split into k micro-batches
  that each take an equal share of every device's rows, so every micro-batch is spread over all
  devices like the batch is; the embeddings are put back in the batch's own order before the loss.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import optax

from contrastive_jax._errors import ConfigError
from contrastive_jax.train._rundir import RunPaths

# The recipe keys of a training config with their defaults (configs may omit any: an old run's
# config.json trains as before). The model section's are training choices, not architecture: with
# `init_from` they stay this config's while the architecture comes from the source.
RECIPE_DEFAULTS = dict(
    grad_accum_steps=1,
    ema_decay=0.0,
    init_from_image_size=0,  # with init_from: fine-tune at this image size (0: the source's)
    init_from_context_length=0,  # ... and this context length (0: the source's)
    evals=(),  # in-training evaluators (`evaluate.evaluators_from_config`), run as `train` says
)
DISTILL_DEFAULTS = dict(teacher="", weight=1.0)
MODEL_RECIPE_DEFAULTS = dict(
    lock_image=False, lock_text=False, lock_image_unlocked_groups=0, lock_text_unlocked_layers=0
)


def with_recipe_defaults(config):
    """`config` with every recipe key present (at its default where absent); returns it."""
    with config.unlocked():
        for key, value in RECIPE_DEFAULTS.items():
            if key not in config:
                config[key] = value
        if "distill" not in config:
            config.distill = ml_collections.ConfigDict(DISTILL_DEFAULTS)
        for key, value in MODEL_RECIPE_DEFAULTS.items():
            if key not in config.model:
                config.model[key] = value
        if "patch_dropout" not in config.model.vision:
            config.model.vision.patch_dropout = 0.0
    return config


# Top-level model modules per side. CLIP/SigLIP keep a tower's projection inside it; CoCa has the
# image pooler and both projections beside the towers.
IMAGE_MODULES = ("vision", "pooler", "image_proj")
TEXT_MODULES = ("text", "text_proj")


def _keys(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", None))) for k in path)


def vision_groups(depth: int) -> list:
    """The vision tower's parameter groups in open_clip's order (`VisionTransformer.lock`).

    Embeddings (patch, class token, positions, pre-LayerNorm), blocks 0..depth−2, the last block
    with the final LayerNorm, then the head (projection or attentional pooler; CoCa's pooler and
    image projection). A group is a predicate on a parameter's path.
    """
    embed = {"patch_embed", "cls_token", "pos_embed", "norm_pre"}
    groups = [lambda k: k[0] == "vision" and k[1] in embed]
    for i in range(depth - 1):
        groups.append(lambda k, i=i: k[:4] == ("vision", "transformer", "blocks", i))
    groups.append(
        lambda k: k[:4] == ("vision", "transformer", "blocks", depth - 1) or k[:2] == ("vision", "norm_post")
    )
    groups.append(lambda k: k[:2] in (("vision", "proj"), ("vision", "pooler")) or k[0] in IMAGE_MODULES[1:])
    return groups


def text_groups(depth: int) -> list:
    """The text tower's groups, as open_clip's `lock_text_tower`: token and position embeddings,
    each block, then the final LayerNorm with the projection."""
    groups = [lambda k: k[0] == "text" and k[1] in ("token_embed", "pos_embed", "cls_token")]
    for i in range(depth):
        groups.append(lambda k, i=i: k[:4] == ("text", "transformer", "blocks", i))
    groups.append(lambda k: (k[0] == "text" and k[1] in ("norm_final", "proj")) or k[0] == "text_proj")
    return groups


def _side_mask(params, modules, groups, unlocked: int):
    def locked(path, _):
        keys = _keys(path)
        if keys[0] not in modules:
            return False
        return not any(group(keys) for group in groups[len(groups) - unlocked :]) if unlocked else True

    return jax.tree_util.tree_map_with_path(locked, params)


def locked_mask(params, model_config):
    """A tree of bools like `params`: True for the parameters `model.lock_image` / `lock_text` lock.

    `model.lock_image_unlocked_groups=N` (and `lock_text_unlocked_layers=N`) leave the last N
    groups of a locked tower trainable (`vision_groups`, `text_groups`). The logit scale (and
    SigLIP's bias, CoCa's multimodal decoder) always train.
    """
    lock_image = bool(model_config.get("lock_image", False))
    lock_text = bool(model_config.get("lock_text", False))
    masks = [jax.tree.map(lambda _: False, params)]
    if lock_image:
        groups = vision_groups(model_config.vision.depth)
        unlocked = int(model_config.get("lock_image_unlocked_groups", 0))
        masks.append(_side_mask(params, IMAGE_MODULES, groups, unlocked))
    if lock_text:
        groups = text_groups(model_config.text.depth)
        unlocked = int(model_config.get("lock_text_unlocked_layers", 0))
        masks.append(_side_mask(params, TEXT_MODULES, groups, unlocked))
    return jax.tree.map(lambda *m: any(m), *masks)


def check_locking(model_config) -> None:
    """ConfigErrors for lock settings a model cannot take."""
    for key, groups in (
        ("lock_image_unlocked_groups", len(vision_groups(model_config.vision.depth))),
        ("lock_text_unlocked_layers", len(text_groups(model_config.text.depth))),
    ):
        value = model_config.get(key, 0)
        if not isinstance(value, int) or not 0 <= value <= groups:
            raise ConfigError(f"model.{key}={value!r}: give an integer in [0, {groups}] for this model")
        tower = "image" if "image" in key else "text"
        if value and not model_config.get(f"lock_{tower}", False):
            raise ConfigError(f"model.{key}={value} has no effect without model.lock_{tower}=True")


def describe_locking(params, mask) -> str:
    """One line: how many parameters are locked, and the optimizer memory that saves."""
    sizes = [
        (int(p.size), p.dtype.itemsize, locked)
        for p, locked in zip(jax.tree.leaves(params), jax.tree.leaves(mask))
    ]
    locked = sum(n for n, _, is_locked in sizes if is_locked)
    total = sum(n for n, _, _ in sizes)
    moment_bytes = sum(2 * n * 4 for n, _, is_locked in sizes if is_locked)  # AdamW's two float32 moments
    return (
        f"Locked {locked / 1e6:.2f}M of {total / 1e6:.2f}M parameters: no gradient, no optimizer moments "
        f"({moment_bytes / 2**20:.1f} MiB of AdamW state not kept)"
    )


def lock_optimizer(optimizer: optax.GradientTransformation, mask) -> optax.GradientTransformation:
    """`optimizer` for the trainable parameters, zero updates and no state for the locked ones."""
    labels = jax.tree.map(lambda locked: "locked" if locked else "trained", mask)
    return optax.multi_transform({"trained": optimizer, "locked": optax.set_to_zero()}, labels)


def stop_locked(params, mask):
    """The parameters with the locked ones under `stop_gradient` (no backward pass reaches them)."""
    return jax.tree.map(lambda p, locked: jax.lax.stop_gradient(p) if locked else p, params, mask)


def ema_update(ema, params, decay):
    """`decay · ema + (1 − decay) · params`, leaf by leaf, in each leaf's dtype."""
    return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema, params)


def interleave(tree, num_devices: int, k: int):
    """Reorders each leaf's batch axis so that contiguous k-way splitting gives micro-batches that
    take rows `[j·b, (j+1)·b)` of every device's share (b = per-device rows / k)."""

    def move(x):
        b = x.shape[0] // (num_devices * k)
        y = x.reshape(num_devices, k, b, *x.shape[1:])
        return jnp.swapaxes(y, 0, 1).reshape(x.shape)

    return jax.tree.map(move, tree)


def deinterleave(tree, num_devices: int, k: int):
    """The inverse of `interleave`: rows back in the batch's own order."""

    def move(x):
        b = x.shape[0] // (num_devices * k)
        y = x.reshape(k, num_devices, b, *x.shape[1:])
        return jnp.swapaxes(y, 0, 1).reshape(x.shape)

    return jax.tree.map(move, tree)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_recipes(config, num_devices: int) -> None:
    """ConfigErrors (one line: field, value, fix) for recipe settings that cannot train."""
    k = config.get("grad_accum_steps", 1)
    if not _is_int(k) or k < 1:
        raise ConfigError(
            f"config.grad_accum_steps is {k!r} but must be a positive integer; e.g. --config.grad_accum_steps=1"
        )
    if k > 1 and config.batch_size % (num_devices * k):  # k = 1: the batch check of _validate
        raise ConfigError(
            f"config.batch_size={config.batch_size} does not split into {k} micro-batches of equal shares of the "
            f"{num_devices} devices (batch_size must be a multiple of devices x grad_accum_steps = {num_devices * k})"
        )
    decay = config.get("ema_decay", 0.0)
    if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0 <= decay < 1:
        raise ConfigError(
            f"config.ema_decay is {decay!r} but must lie in [0, 1) (0: no EMA); e.g. --config.ema_decay=0.999"
        )
    for key in ("init_from_image_size", "init_from_context_length"):
        value = config.get(key, 0)
        if not _is_int(value) or value < 0:
            raise ConfigError(f"config.{key} is {value!r} but must be 0 (the source's) or a positive integer")
        if value and not config.get("init_from", None):
            raise ConfigError(f"config.{key}={value} resizes a model from config.init_from, which is not set")
    section = config.get("distill", None)
    if section is not None and section.get("teacher", ""):
        if not os.path.isfile(RunPaths(section.teacher).config):
            raise ConfigError(
                f"config.distill.teacher={section.teacher!r} has no config.json: give a finished run's workdir "
                "or a directory written by experiments/convert.py"
            )
        weight = section.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
            raise ConfigError(
                f"config.distill.weight is {weight!r} but must be >= 0; e.g. --config.distill.weight=1.0"
            )
    rate = config.model.vision.get("patch_dropout", 0.0)
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate < 1:
        raise ConfigError(
            f"config.model.vision.patch_dropout is {rate!r} but must lie in [0, 1) (the fraction of patches dropped)"
        )
    check_locking(config.model)
