"""The training loop, top to bottom: input, model, step, logging, checkpoints, evaluation.

One function, `train(config, workdir)`, in the spirit of big_vision's trainers: everything the
run does is visible here; the pieces it calls (`_objective`, `_optim`, `_checkpoint`,
`_logging`, `contrastive_jax.evaluate`) are small and swappable.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from contrastive_jax import data, losses, models, parallel
from contrastive_jax import evaluate as evaluators
from contrastive_jax._errors import CheckpointError, ConfigError, WorkdirError
from contrastive_jax.train import _distill, _input, _logging, _recipes
from contrastive_jax.train._checkpoint import Checkpointer, StopSignal
from contrastive_jax.train._objective import compute_loss, get_objective, init_loss_state, needs_loss_state
from contrastive_jax.train._optim import make_optimizer
from contrastive_jax.train._rundir import (
    RunPaths,
    check_run_dir,
    read_run_config,
    run_checkpointer,
    write_run_config,
)
from contrastive_jax.train._validate import check_workdir, mesh_shape, validate_config

log = logging.getLogger(__name__)
# The trainer's mesh axes: the batch (and so the losses' negatives) is split over both;
# parameters and optimizer state over "fsdp" (`parallel.fsdp_shardings`).
DATA, FSDP = "data", "fsdp"
BATCH_AXES = (DATA, FSDP)


def quiet_logs() -> None:
    """Keeps absl's console output (Orbax and TFDS log every step at INFO through it) to warnings.

    `train()` calls it; an entry point calls it again after absl has parsed its flags, which sets
    the verbosity back to INFO. The library's own progress lines go through the
    `contrastive_jax` logger and are not affected.
    """
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)


def _loss_inputs(outputs: dict) -> dict:
    """Partition specs for the model outputs entering the loss: scalars replicated, the rest by sample."""
    return {k: P() if jnp.ndim(v) == 0 else P(BATCH_AXES) for k, v in outputs.items()}


def make_train_step(
    graphdef,
    optimizer,
    loss_config,
    mesh,
    shardings: dict,
    *,
    pixel_stats=None,
    grad_accum_steps: int = 1,
    locked=None,
    teacher=None,
):
    """A jitted `(params, rest, opt_state, loss_state, batch[, key, teacher_params]) ->
    (params, opt_state, loss_state, metrics)`.

    The towers run under `jax.jit` on JAX's sharding engine: parameters and optimizer state
    laid out by `shardings` (replicated, or split over "fsdp"), the batch split over
    ("data", "fsdp"). XLA gathers each layer's parameters where it is used and reduce-scatters
    its gradient. The loss then runs per device inside `jax.shard_map` on the embeddings, with
    `axis_name=("data", "fsdp")`, so its exchange sees every device's negatives; the gradient is
    taken outside both, so it is the exact global-batch gradient.

    Images may arrive as uint8 pixels (what the input pipeline sends: a quarter of float32's
    bytes); they are normalised here, inside the jitted step, with `pixel_stats`.

    Args:
      shardings: the train state's `NamedSharding`s (`state_shardings`): "params",
        "opt_state" and "loss_state" are used.
      pixel_stats: `(mean, std)` for uint8 images (`data.pixel_stats(config.data)`); default
        0.5 / 0.5. Float images are taken as already normalised.
      grad_accum_steps: k > 1 contrasts k micro-batches as one batch (`parallel.
        accumulate_value_and_grad`): every micro-batch's outputs first, without activations,
        the loss over the whole batch, then each micro-batch re-encoded for its gradient. Each
        micro-batch holds an equal share of every device's rows, and the outputs are put back
        in the batch's order before the loss, so the loss sees the same global batch as k = 1.
      locked: a tree of bools like the parameters (`locked_mask`): those enter the forward pass
        under `stop_gradient` (the optimizer must leave them unchanged: `lock_optimizer`).
      teacher: a `_distill.Teacher`: the step then takes its parameters as `teacher_params` and
        adds `teacher.weight · distill_clip_loss` to the objective's loss.

    The step's `key` (a PRNG key or None) drives the model's training randomness (FLIP patch
    dropout); None runs the model deterministically.
    """
    state_spec = jax.tree.map(lambda s: s.spec, shardings["loss_state"])
    mean, std = pixel_stats or (data.PIXEL_MEAN, data.PIXEL_STD)
    objective = get_objective(loss_config.name)
    k = int(grad_accum_steps)

    def per_device(outputs, batch, loss_state):
        loss, metrics, loss_state = compute_loss(
            loss_config, outputs, batch, loss_state, axis_name=BATCH_AXES
        )
        if teacher is not None:
            distill = losses.distill_clip_loss(
                outputs["image_emb"], outputs["text_emb"], outputs["logit_scale"],
                outputs["teacher_image_emb"], outputs["teacher_text_emb"], outputs["teacher_logit_scale"],
                axis_name=BATCH_AXES,
            )  # fmt: skip
            metrics = dict(metrics, objective_loss=loss, distill_loss=distill)
            loss = loss + teacher.weight * distill
            metrics["loss"] = loss
        return loss, (metrics, loss_state)

    def sharded_loss(outputs, batch, loss_state):
        return jax.shard_map(
            per_device,
            mesh=mesh,
            in_specs=(_loss_inputs(outputs), P(BATCH_AXES), state_spec),
            out_specs=(P(), (P(), state_spec)),
        )(outputs, batch, loss_state)

    def forward(params, rest, batch, key, teacher_params):
        if locked is not None:
            params = _recipes.stop_locked(params, locked)
        model = nnx.merge(graphdef, params, rest)
        images = batch["image"]
        if images.dtype == jnp.uint8:
            images = data.normalize_images(images, mean, std)
        extra = {} if key is None else {"patch_dropout_key": key}
        outputs = dict(model(images, batch["tokens"], **extra))
        # e.g. clip_count's counterfactual captions, CL2L's augmented views (their own dropout key)
        view_key = None if key is None else jax.random.fold_in(key, 1)
        outputs.update(
            objective.encode_inputs(
                model,
                batch,
                normalize=lambda x: data.normalize_images(x, mean, std),
                patch_dropout_key=view_key,
            )
        )
        if teacher is not None:
            outputs.update(teacher.outputs(teacher_params, batch, pixel_stats=(mean, std)))
        return outputs

    def value_and_grad(params, rest, loss_state, batch, key, teacher_params):
        if k == 1:
            loss_fn = lambda p: sharded_loss(forward(p, rest, batch, key, teacher_params), batch, loss_state)
            return jax.value_and_grad(loss_fn, has_aux=True)(params)
        # The micro-batches run one after another, each with its own key for its randomness.
        # Scalar outputs (the logit scale) travel as a copy per row; the loss reads the first.
        n = mesh.size
        scalars = {
            name
            for name, value in jax.eval_shape(
                lambda p, b: forward(p, rest, b, key, teacher_params), params, batch
            ).items()
            if value.ndim == 0
        }

        def encode(p, micro_batch):
            micro_batch = jax.lax.with_sharding_constraint(micro_batch, NamedSharding(mesh, P(BATCH_AXES)))
            micro_key = None if key is None else jax.random.fold_in(key, micro_batch["micro_batch"][0])
            outputs = forward(p, rest, micro_batch, micro_key, teacher_params)
            rows = micro_batch["tokens"].shape[0]
            return {
                name: jnp.broadcast_to(v, (rows,)) if name in scalars else v for name, v in outputs.items()
            }

        def loss_of_outputs(p, per_row):
            del p  # the parameters reach the loss through the outputs only
            outputs = _recipes.deinterleave(per_row, n, k)
            outputs = {name: v[0] if name in scalars else v for name, v in outputs.items()}
            return sharded_loss(outputs, batch, loss_state)

        micro_ids = jnp.repeat(jnp.arange(k, dtype=jnp.int32), batch["tokens"].shape[0] // k)
        batches = dict(_recipes.interleave(batch, n, k), micro_batch=micro_ids)
        fn = parallel.accumulate_value_and_grad(encode, loss_of_outputs, num_micro_batches=k, has_aux=True)
        return fn(params, batches)

    @functools.partial(
        jax.jit,
        out_shardings=(shardings["params"], shardings["opt_state"], shardings["loss_state"], None),
        donate_argnums=(0, 2),
    )
    def step(params, rest, opt_state, loss_state, batch, key=None, teacher_params=None):
        (_, (metrics, loss_state)), grads = value_and_grad(
            params, rest, loss_state, batch, key, teacher_params
        )
        grads = jax.lax.with_sharding_constraint(grads, shardings["params"])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = dict(metrics, grad_norm=optax.global_norm(grads))
        return params, opt_state, loss_state, metrics

    return step


def _to_global(batch: dict, mesh) -> dict:
    """This process's rows of the batch → global arrays split over ("data", "fsdp")."""
    sharding = NamedSharding(mesh, P(BATCH_AXES))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


make_tokenizer = data.make_tokenizer  # the one tokenizer factory (a spec or a data config)


# A sample-sharded loss state (iSogCLR) is padded to a multiple of this (and of the mesh size),
# so that a checkpoint restores onto any mesh whose size divides it (elastic restarts).
STATE_PADDING = 1024


def loss_state_size(num_samples: int, shard_state: bool, mesh_size: int = 1) -> int:
    """Entries of the per-sample loss state: `num_samples`, padded when it is split over devices."""
    if not shard_state:
        return num_samples
    multiple = math.lcm(STATE_PADDING, mesh_size)
    return -(-num_samples // multiple) * multiple


def state_shardings(state: dict, mesh, *, shard_loss_state: bool = False) -> dict:
    """Where each part of a train state lives on `mesh`.

    Parameters and optimizer state follow `parallel.fsdp_shardings` (split over "fsdp" when
    that axis has more than one device, else replicated); the per-sample loss state is split
    over ("data", "fsdp") with `shard_loss_state`, else replicated; step and RNG replicated.
    """
    replicated = NamedSharding(mesh, P())
    loss_spec = P(BATCH_AXES) if shard_loss_state else P()
    shardings = {
        "params": parallel.fsdp_shardings(state["params"], mesh, axis=FSDP),
        "opt_state": parallel.fsdp_shardings(state["opt_state"], mesh, axis=FSDP),
        "loss_state": jax.tree.map(lambda _: NamedSharding(mesh, loss_spec), state["loss_state"]),
        "step": replicated,
        "rng": replicated,
    }
    if "ema_params" in state:  # laid out like the parameters
        shardings["ema_params"] = parallel.fsdp_shardings(state["ema_params"], mesh, axis=FSDP)
    return shardings


def _single_device_mesh():
    return parallel.data_mesh(BATCH_AXES, shape=(1, 1), devices=jax.local_devices()[:1])


def _creator(config):
    def create():
        model = models.create_model(config.model, rngs=nnx.Rngs(config.seed))
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return params, rest

    return create


def abstract_state(config, num_samples: int = 1, *, mesh=None, shard_loss_state: bool = False):
    """The train state's structure for `config` on `mesh`, without allocating it.

    Returns:
      `(graphdef, rest, optimizer, state, shardings)`: `rest` and `state` hold
      `jax.ShapeDtypeStruct`s that carry their shardings (`state_shardings`), ready for
      `make_train_step(...).lower(...)` (compiled memory analysis) or a restore target.
    """
    mesh = _single_device_mesh() if mesh is None else mesh
    params, rest = jax.eval_shape(_creator(config))
    optimizer = make_optimizer(
        config.optim, config.total_steps, max_logit_scale=config.model.get("max_logit_scale", None)
    )
    if uses_locking(config):
        optimizer = _recipes.lock_optimizer(optimizer, _recipes.locked_mask(params, config.model))
    size = loss_state_size(num_samples, shard_loss_state, mesh.size)
    state = {
        "params": params,
        "opt_state": jax.eval_shape(optimizer.init, params),
        "loss_state": jax.eval_shape(lambda: init_loss_state(config.loss, size)),
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "rng": jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))),
    }
    if ema_decay(config):
        state["ema_params"] = params
    shardings = state_shardings(state, mesh, shard_loss_state=shard_loss_state)
    with_sharding = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)  # noqa: E731
    state = jax.tree.map(with_sharding, state, shardings)
    replicated = NamedSharding(mesh, P())
    rest = jax.tree.map(lambda x: with_sharding(x, replicated), rest)
    graphdef = nnx.split(nnx.eval_shape(lambda: models.create_model(config.model, rngs=nnx.Rngs(0))))[0]
    return graphdef, rest, optimizer, state, shardings


def init_state(config, num_samples: int, *, mesh=None, shard_loss_state: bool = False):
    """Model pieces and the initial train state (the checkpoint's structure) for `config`.

    The parameters and optimizer moments are created directly in their layout on `mesh` (a
    model split over "fsdp" is never whole on one device); `mesh=None` means this process's
    first device. Initial values do not depend on the layout.

    Returns:
      `(model, graphdef, rest, optimizer, state, shardings)`: `state` holds "params",
      "opt_state", "loss_state", "step", "rng"; `shardings` is `state_shardings(state, ...)`.
    """
    mesh = _single_device_mesh() if mesh is None else mesh
    graphdef, abstract_rest, optimizer, abstract, shardings = abstract_state(
        config, num_samples, mesh=mesh, shard_loss_state=shard_loss_state
    )
    replicated = NamedSharding(mesh, P())
    # One compiled program each instead of hundreds of eager ops, written where they belong.
    rest_shardings = jax.tree.map(lambda _: replicated, abstract_rest)
    params, rest = jax.jit(_creator(config), out_shardings=(shardings["params"], rest_shardings))()
    size = loss_state_size(num_samples, shard_loss_state, mesh.size)
    state = {
        "params": params,
        "opt_state": jax.jit(optimizer.init, out_shardings=shardings["opt_state"])(params),
        "loss_state": jax.device_put(init_loss_state(config.loss, size), shardings["loss_state"]),
        "step": jax.device_put(jnp.zeros((), jnp.int32), replicated),
        "rng": jax.device_put(jax.random.key_data(jax.random.key(config.seed)), replicated),
    }
    if "ema_params" in shardings:
        state["ema_params"] = _copy(params, shardings["ema_params"])
    return nnx.merge(graphdef, params, rest), graphdef, rest, optimizer, state, shardings


def _copy(tree, shardings):
    """A copy of `tree` in its own buffers (so that donating one never frees the other)."""
    return jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=shardings)(tree)


def evaluated_params(config) -> str:
    """The state entry evaluation reads for a run of `config`: its EMA when it keeps one."""
    return "ema_params" if ema_decay(config) else "params"


def uses_locking(config) -> bool:
    return bool(config.model.get("lock_image", False) or config.model.get("lock_text", False))


def ema_decay(config) -> float:
    """`config.ema_decay` (0: no EMA)."""
    return float(config.get("ema_decay", 0.0) or 0.0)


def make_ema_step(decay: float, shardings):
    """A jitted `(ema_params, params) -> ema_params` (`_recipes.ema_update`), the EMA donated."""
    return jax.jit(
        lambda ema, params: _recipes.ema_update(ema, params, decay), out_shardings=shardings, donate_argnums=0
    )


def make_mesh(config):
    """The trainer's `("data", "fsdp")` mesh of `config.mesh.data` x `config.mesh.fsdp` devices.

    -1 means all remaining devices (the default: data = -1, fsdp = 1, plain data parallelism).
    With several processes the mesh spans every device; "fsdp" is the inner (fastest) axis, so
    a model's shards sit on neighbouring devices (one host's when fsdp <= its device count).
    """
    devices = jax.devices()
    data, fsdp = mesh_shape(config, len(devices))
    if jax.process_count() > 1 and data * fsdp != len(devices):
        raise ConfigError(
            f"with several processes the mesh must span all {len(devices)} devices, but "
            f"mesh.data * mesh.fsdp = {data * fsdp}; use -1 for one of them"
        )
    return parallel.data_mesh(BATCH_AXES, shape=(data, fsdp), devices=devices[: data * fsdp])


# Data fields that belong to a model (its tokenizer, input sizes, pixel normalisation): with
# `init_from` they follow the model into the new run.
MODEL_DATA_KEYS = ("tokenizer", "context_length", "image_size", "mean", "std")


def apply_init_from(config):
    """With `config.init_from`, the model section comes from that directory's config.json.

    `init_from` is a finished run's workdir or a directory written by experiments/convert.py. Its
    `model` section replaces this config's, and so do the data fields the model depends on
    (`MODEL_DATA_KEYS`; a tokenizer file named relative to that directory is resolved there),
    so that its parameters fit; the dataset, loss and optimizer stay this config's.
    """
    source = config.get("init_from", None)
    if not source:
        return config
    if not os.path.isfile(RunPaths(source).config):
        # A config value that names no run: the fix is in the config, hence ConfigError.
        raise ConfigError(
            f"config.init_from={source!r} has no config.json: give a finished run's workdir or a "
            "directory written by experiments/convert.py"
        )
    saved = read_run_config(source)
    # Training choices in the model section (locking, patch dropout) stay this config's.
    recipe = {key: config.model[key] for key in _recipes.MODEL_RECIPE_DEFAULTS if key in config.model}
    patch_dropout = config.model.get("vision", {}).get("patch_dropout", None)
    with config.unlocked():
        config.model = saved.model
        config.model.update(recipe)
        if patch_dropout is not None:
            config.model.vision.patch_dropout = patch_dropout
        for key in MODEL_DATA_KEYS:
            if key in saved.data:
                value = saved.data[key]
                config.data[key] = data.resolve_tokenizer(value, source) if key == "tokenizer" else value
        # A requested resolution or context length: the parameters are resized when they load.
        if config.get("init_from_image_size", 0):
            config.model.vision.image_size = config.data.image_size = config.init_from_image_size
        if config.get("init_from_context_length", 0):
            config.model.text.context_length = config.data.context_length = config.init_from_context_length
    return config


def _init_params(config, train_state: dict) -> dict:
    """`train_state` with the parameters of `config.init_from`'s newest intact checkpoint (the
    parameters its evaluation used: its EMA when it kept one)."""
    source = config.init_from
    saved = read_run_config(source)
    target = train_state["params"]
    resized = _resized_sizes(saved.model, config.model)
    if resized:  # read at the source's sizes, then fitted to this model's
        mesh = jax.tree.leaves(target)[0].sharding.mesh
        target = abstract_state(saved, mesh=mesh)[3]["params"]
    step, params = run_checkpointer(source).restore_item(
        evaluated_params(saved), target, describe_change=lambda: f"(config.init_from={source!r})"
    )
    if resized:
        fitted = models.resize_params(params, _architecture(saved.model), _architecture(config.model))
        params = jax.device_put(fitted, jax.tree.map(lambda x: x.sharding, train_state["params"]))
        log.info("Resized the position embeddings of %s: %s", source, "; ".join(resized))
    log.info("Initialised the parameters from %s (step %d)", source, step)
    train_state = dict(train_state, params=params)
    if "ema_params" in train_state:  # the average starts at the initial parameters
        train_state["ema_params"] = _copy(
            params, jax.tree.map(lambda x: x.sharding, train_state["ema_params"])
        )
    return train_state


def _architecture(model_config) -> dict:
    """The model section without its training choices (locking): what `models.resize_params` compares."""
    section = model_config.to_dict()
    return {k: v for k, v in section.items() if k not in _recipes.MODEL_RECIPE_DEFAULTS}


def _resized_sizes(source_model, model) -> list[str]:
    """What `init_from_image_size` / `init_from_context_length` changed: "image 32 -> 48", ..."""
    changes = []
    for name, path in (
        ("image size", ("vision", "image_size")),
        ("context length", ("text", "context_length")),
    ):
        before, after = source_model[path[0]][path[1]], model[path[0]][path[1]]
        if before != after:
            changes.append(f"{name} {before} -> {after}")
    return changes


def _config_change(workdir: str, config) -> str:
    """Which config keys differ from the run's saved config.json (for a mismatch message)."""
    try:
        saved = _flatten(read_run_config(workdir).to_dict())
    except WorkdirError:
        return f"(no readable config.json in {workdir} to compare with)"
    current = _flatten(json.loads(config.to_json_best_effort()))
    changed = [
        f"{key}: {saved.get(key, '<absent>')!r} -> {current.get(key, '<absent>')!r}"
        for key in sorted(saved.keys() | current.keys())
        if saved.get(key) != current.get(key)
    ]
    if not changed:
        return "The config equals the run's config.json."
    shown = "; ".join(changed[:8]) + (f"; ... and {len(changed) - 8} more" if len(changed) > 8 else "")
    return f"Config keys changed since the run's config.json: {shown}."


def _flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _resume(checkpointer: Checkpointer, train_state: dict, workdir: str, config):
    """`(first_step, train_state, meta)` from the newest intact checkpoint, or `(0, state, None)`;
    `meta` holds the data position ("data") and the skipped-record counts ("skipped").

    Damaged newer checkpoints are set aside; a checkpoint of another config is an error that
    leaves the workdir (config.json included) as it was. The caller writes config.json once the
    data position has been restored too (`_input.restore_position` may refuse the run).
    """
    restored = checkpointer.restore_latest(
        train_state, set_aside_damaged=True, describe_change=lambda: _config_change(workdir, config)
    )
    if restored is None:
        return 0, train_state, None
    step, train_state, meta = restored
    return step, train_state, meta


def _open_input(config, *, seed: int | None = None):
    """This process's training input (`data.input_from_config`), its batch a share of the global one."""
    return data.input_from_config(
        config.data,
        "train",
        batch_size=config.batch_size // jax.process_count(),
        seed=config.seed if seed is None else seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def train(config, workdir: str, *, evaluate: bool = True, on_step=None) -> dict:
    """Trains the model `config` describes, resuming from `workdir` if it holds checkpoints.

    Args:
      config: a training config (see experiments/configs). With `config.init_from` set, the model
        and its parameters come from that directory (`apply_init_from`) when the run starts.
      workdir: checkpoints, metrics.jsonl, TensorBoard events, eval.json and plots go here.
      evaluate: evaluate and plot at the end (`config.data`'s held-out split). The evaluators of
        `config.evals` run whatever this says: each every `every` steps and all after the last step,
        their metrics ("eval/<dataset>/<split>/...") joining that step's line in metrics.jsonl.
      on_step: optional `on_step(step, metrics)` called after each step (hooks, tests).

    Returns:
      The final evaluation metrics (also written to `workdir/eval.json`), or `{"stopped_at":
      step}` when SIGTERM/SIGINT stopped the run early (after saving a checkpoint at `step`).

    Raises:
      ConfigError: the config is invalid for this machine (e.g. batch size vs. devices).
      CheckpointError: the workdir's checkpoints belong to another config, or none restores.
    """
    quiet_logs()
    config = apply_init_from(config)
    validate_config(config, jax.device_count())
    mesh = make_mesh(config)
    in_loop = evaluators.evaluators_from_config(config.get("evals", None))
    for evaluator in in_loop:
        evaluator.source()  # every dataset opens (or fails: unprepared, unsuitable) before any step
    check_workdir(workdir)

    # Input; the text tower's vocabulary is the tokenizer's (or, fine-tuning, the source model's).
    layout_input = _open_input(config)
    tokenizer = layout_input.tokenizer
    if not config.get("init_from", None):
        with config.unlocked():
            config.model.text.vocab_size = tokenizer.vocab_size
    elif tokenizer.vocab_size > config.model.text.vocab_size:  # a pretrained table keeps its size
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model from config.init_from embeds "
            f"{config.model.text.vocab_size}: use the tokenizer it was converted with"
        )

    # Model, optimizer, loss state; then resume if the workdir has a checkpoint.
    shard_state = bool(config.loss.get("shard_state", False)) and needs_loss_state(config.loss.name)
    model, graphdef, rest, optimizer, train_state, shardings = init_state(
        config, layout_input.num_samples or 1, mesh=mesh, shard_loss_state=shard_state
    )
    checkpointer = run_checkpointer(
        workdir, max_to_keep=config.keep_checkpoints, save_interval_steps=config.checkpoint_every
    )
    first_step, train_state, meta = _resume(checkpointer, train_state, workdir, config)
    if first_step == 0 and config.get("init_from", None):
        train_state = _init_params(config, train_state)
    pipeline, iterator = layout_input, iter(layout_input.dataset)
    if meta is not None:
        if _input.restore_position(iterator, meta["data"], pipeline.layout, config, first_step) == "reseed":
            iterator.close()
            pipeline = _open_input(config, seed=_input.reseeded_seed(config.seed, first_step))
            iterator = iter(pipeline.dataset)
        log.info("Resumed from step %d in %s", first_step, workdir)
    if jax.process_index() == 0:  # the run is new, or compatible with its checkpoints: record its config
        write_run_config(workdir, config)
    skipped = _input.SkipCounter(None if meta is None else meta.get("skipped"))
    if jax.process_index() == 0:
        log.info("%s", models.summary(model, config.model))

    teacher, teacher_params = _teacher(config, tokenizer, mesh)
    locked = _recipes.locked_mask(train_state["params"], config.model) if uses_locking(config) else None
    if locked is not None and jax.process_index() == 0:
        log.info("%s", _recipes.describe_locking(train_state["params"], locked))
    step_fn = make_train_step(
        graphdef,
        optimizer,
        config.loss,
        mesh,
        shardings,
        pixel_stats=(pipeline.pixel_mean, pipeline.pixel_std),
        grad_accum_steps=config.get("grad_accum_steps", 1),
        locked=locked,
        teacher=teacher,
    )
    ema = ema_decay(config)
    ema_step = make_ema_step(ema, shardings["ema_params"]) if ema else None
    ema_params = train_state.get("ema_params")
    dropout_key = _dropout_key(config)
    writer = _logging.MetricWriter(
        workdir, total_steps=config.total_steps, initial_step=first_step, enabled=jax.process_index() == 0
    )
    stop = StopSignal()
    params, opt_state, loss_state = train_state["params"], train_state["opt_state"], train_state["loss_state"]
    step = first_step
    batches = data.DevicePrefetch(iterator, lambda batch: _to_global(batch, mesh))
    del iterator  # `batches` owns it now, and closes it (and its workers) when the loop ends
    try:
        while step < config.total_steps:
            batch, host = next(batches)
            skipped.add(host)
            key = None if dropout_key is None else jax.random.fold_in(dropout_key, step)
            params, opt_state, loss_state, metrics = step_fn(
                params, rest, opt_state, loss_state, batch, key, teacher_params
            )
            if ema_step is not None:
                ema_params = ema_step(ema_params, params)
            step += 1
            evaluated = _run_evaluators(
                in_loop, step, config, graphdef, rest, params if ema_params is None else ema_params, tokenizer
            )
            if step % config.log_every == 0 or step == config.total_steps or evaluated:
                writer.write(step, {**jax.device_get(metrics), **skipped.metrics(), **evaluated})
            if on_step is not None:
                on_step(step, metrics)
            stopping = stop.should_stop(step)  # on every process, every step: they agree on it
            if step % config.checkpoint_every == 0 or step == config.total_steps or stopping:
                train_state = dict(
                    train_state,
                    params=params,
                    opt_state=opt_state,
                    loss_state=loss_state,
                    step=jnp.asarray(step, jnp.int32),
                )
                if ema_params is not None:
                    train_state["ema_params"] = ema_params
                position = _input.data_meta(batches, pipeline.layout)
                checkpointer.save(
                    step, train_state, {"data": position, "skipped": skipped.totals.tolist()}, force=True
                )
                writer.flush()
            if stopping:
                break
    finally:
        batches.close()
        checkpointer.close()
        writer.close()
        stop.restore_handlers()
    if step < config.total_steps:
        log.info("Stopped at step %d; run again with the same --workdir to resume.", step)
        return {"stopped_at": step}

    if not evaluate:
        return {"steps": step}
    model = nnx.merge(graphdef, params if ema_params is None else ema_params, rest)  # the EMA when kept
    started = time.time()
    if not data.has_eval_split(config.data):
        log.info("No held-out data to evaluate on (set config.data.eval_urls); skipping the evaluation")
        return {"steps": step}
    results = evaluators.evaluate_model(model, config, tokenizer=tokenizer)
    results["eval_seconds"] = time.time() - started
    if jax.process_index() == 0:
        with open(RunPaths(workdir).eval_results(), "w") as f:
            json.dump(results, f, indent=2)
        results["plots"] = _logging.save_plots(workdir, model, config, tokenizer)
    return results


def _run_evaluators(evaluators_, step, config, graphdef, rest, params, tokenizer) -> dict:
    """The metrics of the `config.evals` evaluators due after `step` (each every `every` steps, and
    all after the last step), computed with `params` (the EMA when the run keeps one)."""
    due = [e for e in evaluators_ if e.due(step) or step == config.total_steps]
    if not due:
        return {}
    started, model = time.time(), nnx.merge(graphdef, params, rest)
    metrics = {name: value for e in due for name, value in e.run(model, tokenizer, config).items()}
    log.info("Step %d: %d evaluators in %.1f s", step, len(due), time.time() - started)
    return metrics


def _teacher(config, tokenizer, mesh):
    """`(Teacher, params)` for `config.distill.teacher`, or `(None, None)` without one."""
    section = config.get("distill", None)
    directory = section.get("teacher", "") if section is not None else ""
    if not directory:
        return None, None
    return _distill.make_teacher(config, load_run(directory), tokenizer, mesh, fsdp_axis=FSDP)


def _dropout_key(config):
    """The key FLIP patch dropout draws from (folded with the step), or None when it is off: no
    `model.vision.patch_dropout`, or a vision tower locked whole (it then runs as in inference)."""
    rate = float(config.model.vision.get("patch_dropout", 0.0) or 0.0)
    whole_tower_locked = config.model.get("lock_image", False) and not config.model.get(
        "lock_image_unlocked_groups", 0
    )
    if rate == 0.0 or whole_tower_locked:
        return None
    return jax.random.fold_in(jax.random.key(config.seed), 0x70D)


def load_run(workdir: str):
    """`(config, model, step, tokenizer)` of the newest intact checkpoint of the run in `workdir`.

    Reads the run's config.json, rebuilds its state structure and restores without changing
    the workdir (damaged checkpoints are skipped with a warning, not set aside).

    Raises:
      WorkdirError: `workdir` does not exist or has no config.json.
      CheckpointError: it has no checkpoint, none that restores, or one of another model.
    """
    check_run_dir(workdir)
    config = read_run_config(workdir)
    # A converted directory names its tokenizer relative to itself.
    config.data.tokenizer = data.resolve_tokenizer(config.data.get("tokenizer", "word"), workdir)
    # Only the parameters are read (the loss and optimizer state are not needed to evaluate),
    # onto this process's first device, whatever mesh wrote them.
    _, graphdef, rest, _, state, _ = init_state(config, num_samples=1)
    step, params = run_checkpointer(workdir).restore_item(
        evaluated_params(config), state["params"], describe_change=lambda: _config_change(workdir, config)
    )
    model = nnx.merge(graphdef, params, rest)
    return config, model, step, make_tokenizer(config.data)


def load_loss_state(workdir: str) -> tuple[int, dict]:
    """`(step, {name: np.ndarray})`: the per-sample loss state (iSogCLR's learned temperatures
    `tau_image` / `tau_text`, SogCLR's moving averages, `seen`) of the newest intact checkpoint
    of the run in `workdir`, as plain host arrays.

    Entry `i` belongs to the training record at position `i` of the run's training source (the
    batch's `"index"`); entries past the source's length are padding and never `seen`.

    Raises:
      WorkdirError: `workdir` does not exist or has no config.json.
      CheckpointError: no checkpoint, none intact, or the run's loss keeps no per-sample state.
    """
    check_run_dir(workdir)
    loss_name = read_run_config(workdir).loss.name
    if not needs_loss_state(loss_name):
        raise CheckpointError(
            f"the run in {workdir} trains {loss_name!r}, which keeps no per-sample loss state"
        )
    step, state = run_checkpointer(workdir).restore_item("loss_state")
    return step, {name: np.asarray(value) for name, value in state.items()}


def evaluate_checkpoint(workdir: str, split: str = "test") -> dict:
    """Evaluates the newest intact checkpoint of the run in `workdir` (its saved config)."""
    config, model, step, tokenizer = load_run(workdir)
    results = evaluators.evaluate_model(model, config, tokenizer=tokenizer, split=split)
    return {"step": step, **results}
