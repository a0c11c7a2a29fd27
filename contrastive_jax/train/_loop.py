"""The training loop, top to bottom: input, model, step, logging, checkpoints, evaluation.

One function, `train(config, workdir)`, in the spirit of big_vision's trainers: everything the
run does is visible here; the pieces it calls (`_objective`, `_optim`, `_checkpoint`,
`_logging`, `contrastive_jax.evaluate`) are small and swappable.
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from contrastive_jax import parallel
from contrastive_jax.train import _logging
from contrastive_jax.train._checkpoint import Checkpointer, StopSignal
from contrastive_jax.train._errors import CheckpointError, ConfigError
from contrastive_jax.train._objective import compute_loss, init_loss_state, needs_loss_state
from contrastive_jax.train._optim import make_optimizer
from contrastive_jax.train._validate import check_workdir, validate_config

log = logging.getLogger(__name__)
AXIS = "data"


def quiet_logs() -> None:
    """Orbax and TFDS log every step at INFO through absl; keep the console to warnings."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)


def make_train_step(graphdef, optimizer, loss_config, mesh, state_spec):
    """A jitted `(params, rest, opt_state, loss_state, batch) -> (params, opt_state, loss_state, metrics)`.

    The model and the loss run per device inside `jax.shard_map` (data parallel, parameters
    replicated); the gradient is taken outside it, so the loss's exchange gives exact
    global-batch gradients, already summed over devices.
    """

    def per_device(params, rest, batch, loss_state):
        model = nnx.merge(graphdef, params, rest)
        outputs = model(batch["image"], batch["tokens"])
        loss, metrics, loss_state = compute_loss(
            loss_config, model, outputs, batch, loss_state, axis_name=AXIS
        )
        return loss, (metrics, loss_state)

    sharded_loss = jax.shard_map(
        per_device, mesh=mesh, in_specs=(P(), P(), P(AXIS), state_spec), out_specs=(P(), (P(), state_spec))
    )

    @jax.jit
    def step(params, rest, opt_state, loss_state, batch):
        (_, (metrics, loss_state)), grads = jax.value_and_grad(sharded_loss, has_aux=True)(
            params, rest, batch, loss_state
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = dict(metrics, grad_norm=optax.global_norm(grads))
        return params, opt_state, loss_state, metrics

    return step


def _to_global(batch: dict, mesh) -> dict:
    """This process's rows of the batch → global arrays split over the data axis."""
    sharding = NamedSharding(mesh, P(AXIS))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def make_tokenizer(data_config):
    """`data_config.tokenizer`: "word" (built from the embedded dataset), "clip_bpe" (OpenAI's BPE),
    a SentencePiece `.model`, a Hugging Face `tokenizers` `.json` or a CLIP BPE `.txt.gz` file
    (`data.make_tokenizer`)."""
    from contrastive_jax import data

    return data.make_tokenizer(data_config.get("tokenizer", "word"), data_config.name)


def _build_input(config, split: str, *, shuffle: bool, num_epochs=None, seed_offset: int = 0):
    from contrastive_jax import data

    source = data.load_source(config.data.name, split, config=config.data.get("builder_config", None))
    tokenizer = make_tokenizer(config.data)
    batch_size = config.batch_size // jax.process_count()
    dataset = data.make_dataset(
        source,
        tokenizer=tokenizer,
        batch_size=batch_size,
        context_length=config.data.context_length,
        seed=config.seed + seed_offset,
        shuffle=shuffle,
        num_epochs=num_epochs,
        image_size=config.data.image_size,
        pixel_mean=data.pixel_stats(config.data)[0],
        pixel_std=data.pixel_stats(config.data)[1],
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    return source, tokenizer, dataset


def init_state(config, num_samples: int, *, state_shards: int = 1):
    """Model pieces and the initial train state (the checkpoint's structure) for `config`.

    `state_shards`: the per-sample loss state (iSogCLR) is sized to a multiple of it, so that it
    splits evenly over the devices when `loss.shard_state` is set (ids past `num_samples` are
    never visited).
    """
    from contrastive_jax import models

    # Initialise under jit: one compiled program instead of hundreds of eager ops.
    model = nnx.jit(lambda: models.create_model(config.model, rngs=nnx.Rngs(config.seed)))()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = make_optimizer(
        config.optim, config.total_steps, max_logit_scale=config.model.get("max_logit_scale", None)
    )
    state = {
        "params": params,
        "opt_state": jax.jit(optimizer.init)(params),
        "loss_state": init_loss_state(config.loss, -(-num_samples // state_shards) * state_shards),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.key_data(jax.random.key(config.seed)),
    }
    return model, graphdef, rest, optimizer, state


def place_state(state: dict, mesh, loss_state_spec) -> dict:
    """Parameters and optimizer state replicated over the mesh; per-sample loss state as asked.

    Explicit placement also gives restored checkpoints the same shardings as fresh ones.
    """
    replicated = NamedSharding(mesh, P())
    placed = {k: jax.device_put(v, replicated) for k, v in state.items() if k != "loss_state"}
    placed["loss_state"] = jax.device_put(state["loss_state"], NamedSharding(mesh, loss_state_spec))
    return placed


def make_mesh(config):
    """The data-parallel mesh: `config.mesh.data` devices (-1 or absent: all of them)."""
    size = config.get("mesh", {}).get("data", -1)
    devices = jax.devices()
    if size == -1:
        size = len(devices)
    if not 1 <= size <= len(devices):
        raise ConfigError(f"mesh.data={size} but there are {len(devices)} devices; use -1 for all of them")
    if jax.process_count() > 1 and size != len(devices):
        raise ConfigError("with several processes mesh.data must span every device (-1)")
    return parallel.data_mesh(AXIS, devices=devices[:size])


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
    import ml_collections

    source = config.get("init_from", None)
    if not source:
        return config
    path = os.path.join(source, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(
            f"config.init_from={source!r} has no config.json: give a finished run's workdir or a "
            "directory written by experiments/convert.py"
        )
    with open(path) as f:
        saved = ml_collections.ConfigDict(json.load(f))
    with config.unlocked():
        config.model = saved.model
        for key in MODEL_DATA_KEYS:
            if key in saved.data:
                value = saved.data[key]
                if key == "tokenizer" and os.path.isfile(os.path.join(source, str(value))):
                    value = os.path.abspath(os.path.join(source, value))
                config.data[key] = value
    return config


def _init_params(config, train_state: dict) -> dict:
    """`train_state` with the parameters of `config.init_from`'s newest intact checkpoint."""
    source = config.init_from
    step, params = Checkpointer(os.path.join(source, "checkpoints")).restore_params(
        train_state["params"], describe_change=lambda: f"(config.init_from={source!r})"
    )
    print(f"Initialised the parameters from {source} (step {step})", flush=True)
    return dict(train_state, params=params)


def _config_change(workdir: str, config) -> str:
    """Which config keys differ from the run's saved config.json (for a mismatch message)."""
    path = os.path.join(workdir, "config.json")
    try:
        with open(path) as f:
            saved = _flatten(json.load(f))
    except (OSError, ValueError):
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
    """`(first_step, train_state, data_state)` from the newest intact checkpoint, or step 0.

    Damaged newer checkpoints are set aside; a checkpoint of another config is an error that
    leaves the workdir (config.json included) as it was. Only then is config.json written.
    """
    restored = checkpointer.restore_latest(
        train_state, set_aside_damaged=True, describe_change=lambda: _config_change(workdir, config)
    )
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    if restored is None:
        return 0, train_state, None
    step, train_state, meta = restored
    return step, train_state, meta["data"]


def train(config, workdir: str, *, evaluate: bool = True, on_step=None) -> dict:
    """Trains the model `config` describes, resuming from `workdir` if it holds checkpoints.

    Args:
      config: a training config (see experiments/configs). With `config.init_from` set, the model
        and its parameters come from that directory (`apply_init_from`) when the run starts.
      workdir: checkpoints, metrics.jsonl, TensorBoard events, eval.json and plots go here.
      evaluate: evaluate and plot at the end.
      on_step: optional `on_step(step, metrics)` called after each step (hooks, tests).

    Returns:
      The final evaluation metrics (also written to `workdir/eval.json`), or `{"stopped_at":
      step}` when SIGTERM/SIGINT stopped the run early (after saving a checkpoint at `step`).

    Raises:
      ConfigError: the config is invalid for this machine (e.g. batch size vs. devices).
      CheckpointError: the workdir's checkpoints belong to another config, or none restores.
    """
    from contrastive_jax import evaluate as evaluators
    from contrastive_jax import models

    quiet_logs()
    config = apply_init_from(config)
    validate_config(config, jax.device_count())
    mesh = make_mesh(config)
    check_workdir(workdir)

    # Input; the text tower's vocabulary is the tokenizer's (or, fine-tuning, the source model's).
    source, tokenizer, dataset = _build_input(config, "train", shuffle=True)
    iterator = iter(dataset)
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
    model, graphdef, rest, optimizer, train_state = init_state(
        config, len(source), state_shards=mesh.size if shard_state else 1
    )
    state_spec = P(AXIS) if shard_state else P()
    train_state = place_state(train_state, mesh, state_spec)
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=config.keep_checkpoints,
        save_interval_steps=config.checkpoint_every,
    )
    first_step, train_state, data_state = _resume(checkpointer, train_state, workdir, config)
    if first_step == 0 and config.get("init_from", None):
        train_state = _init_params(config, train_state)
    if data_state is not None:
        iterator.set_state(data_state)
        print(f"Resumed from step {first_step} in {workdir}", flush=True)
    if jax.process_index() == 0:
        print(models.summary(model, config.model), flush=True)

    step_fn = make_train_step(graphdef, optimizer, config.loss, mesh, state_spec)
    writer = _logging.MetricWriter(
        workdir, total_steps=config.total_steps, initial_step=first_step, enabled=jax.process_index() == 0
    )
    stop = StopSignal()
    params, opt_state, loss_state = train_state["params"], train_state["opt_state"], train_state["loss_state"]
    step = first_step
    try:
        while step < config.total_steps:
            batch = _to_global(next(iterator), mesh)
            params, opt_state, loss_state, metrics = step_fn(params, rest, opt_state, loss_state, batch)
            step += 1
            if step % config.log_every == 0 or step == config.total_steps:
                writer.write(step, jax.device_get(metrics))
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
                checkpointer.save(step, train_state, {"data": iterator.get_state()}, force=True)
                writer.flush()
            if stopping:
                break
    finally:
        checkpointer.close()
        writer.close()
        stop.restore_handlers()
    if step < config.total_steps:
        print(f"Stopped at step {step}; run again with the same --workdir to resume.", flush=True)
        return {"stopped_at": step}

    if not evaluate:
        return {"steps": step}
    model = nnx.merge(graphdef, params, rest)
    started = time.time()
    results = evaluators.evaluate_model(model, config, tokenizer=tokenizer)
    results["eval_seconds"] = time.time() - started
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "eval.json"), "w") as f:
            json.dump(results, f, indent=2)
        results["plots"] = _logging.save_plots(workdir, model, config, tokenizer)
    return results


def load_run(workdir: str):
    """`(config, model, step, tokenizer)` of the newest intact checkpoint of the run in `workdir`.

    Reads the run's config.json, rebuilds its state structure and restores without changing
    the workdir (damaged checkpoints are skipped with a warning, not set aside).

    Raises:
      CheckpointError: `workdir` has no config.json, no checkpoint, or none that restores.
    """
    import ml_collections

    from contrastive_jax import data

    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{workdir} has no config.json: it is not a training run's workdir (train into it first)"
        )
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    tokenizer_file = os.path.join(workdir, str(config.data.get("tokenizer", "word")))
    if os.path.isfile(tokenizer_file):  # a converted directory names its tokenizer relative to itself
        config.data.tokenizer = os.path.abspath(tokenizer_file)
    num_samples = 1  # only a per-sample loss state needs the training set's size
    if needs_loss_state(config.loss.name):
        builder = config.data.get("builder_config", None)
        num_samples = len(data.load_source(config.data.name, "train", config=builder))
    shard_state = bool(config.loss.get("shard_state", False)) and needs_loss_state(config.loss.name)
    shards = make_mesh(config).size if shard_state else 1
    _, graphdef, rest, _, state = init_state(config, num_samples, state_shards=shards)
    restored = Checkpointer(os.path.join(workdir, "checkpoints")).restore_latest(
        state, describe_change=lambda: _config_change(workdir, config)
    )
    if restored is None:
        raise CheckpointError(f"{workdir} has no checkpoint yet: train first, or check the --workdir path")
    step, state, _ = restored
    model = nnx.merge(graphdef, state["params"], rest)
    return config, model, step, make_tokenizer(config.data)


def evaluate_checkpoint(workdir: str, split: str = "test") -> dict:
    """Evaluates the newest intact checkpoint of the run in `workdir` (its saved config)."""
    from contrastive_jax import evaluate

    config, model, step, tokenizer = load_run(workdir)
    results = evaluate.evaluate_model(model, config, tokenizer=tokenizer, split=split)
    return {"step": step, **results}
