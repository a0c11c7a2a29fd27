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
from contrastive_jax.train._objective import compute_loss, init_loss_state
from contrastive_jax.train._optim import make_optimizer

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
    """`data_config.tokenizer`: "word" (built from the embedded dataset), a SentencePiece `.model`
    file or a Hugging Face `tokenizers` `.json` file."""
    from contrastive_jax import data

    kind = data_config.get("tokenizer", "word")
    if kind == "word":
        return data.word_tokenizer_for(data_config.name)
    if kind.endswith(".model"):
        return data.SentencePieceTokenizer(kind)
    if kind.endswith(".json"):
        return data.HFTokenizer(kind)
    raise ValueError(f"data.tokenizer must be 'word', a .model or a .json file, got {kind!r}")


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
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    return source, tokenizer, dataset


def init_state(config, num_samples: int):
    """Model pieces and the initial train state (the checkpoint's structure) for `config`."""
    from contrastive_jax import models

    # Initialise under jit: one compiled program instead of hundreds of eager ops.
    model = nnx.jit(lambda: models.create_model(config.model, rngs=nnx.Rngs(config.seed)))()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = make_optimizer(config.optim, config.total_steps)
    state = {
        "params": params,
        "opt_state": jax.jit(optimizer.init)(params),
        "loss_state": init_loss_state(config.loss, num_samples),
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


def train(config, workdir: str, *, evaluate: bool = True, on_step=None) -> dict:
    """Trains the model `config` describes, resuming from `workdir` if it holds checkpoints.

    Args:
      config: a training config (see experiments/configs).
      workdir: checkpoints, metrics.jsonl, TensorBoard events, eval.json and plots go here.
      evaluate: evaluate and plot at the end.
      on_step: optional `on_step(step, metrics)` called after each step (hooks, tests).

    Returns:
      The final evaluation metrics (also written to `workdir/eval.json`), or `{"stopped_at":
      step}` when a SIGTERM stopped the run early (after saving a checkpoint).
    """
    from contrastive_jax import evaluate as evaluators
    from contrastive_jax import models

    quiet_logs()
    os.makedirs(workdir, exist_ok=True)
    mesh = parallel.data_mesh(AXIS)
    if config.batch_size % mesh.size:
        raise ValueError(f"batch_size {config.batch_size} must divide by the {mesh.size} devices")

    # Input; the text tower's vocabulary is the tokenizer's.
    source, tokenizer, dataset = _build_input(config, "train", shuffle=True)
    iterator = iter(dataset)
    with config.unlocked():
        config.model.text.vocab_size = tokenizer.vocab_size
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))

    # Model, optimizer, loss state; then resume if the workdir has a checkpoint.
    model, graphdef, rest, optimizer, train_state = init_state(config, len(source))
    print(models.summary(model, config.model), flush=True)
    state_spec = P(AXIS) if config.loss.get("shard_state", False) else P()
    train_state = place_state(train_state, mesh, state_spec)
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=config.keep_checkpoints,
        save_interval_steps=config.checkpoint_every,
    )
    restored = checkpointer.restore_latest(train_state)
    first_step = 0
    if restored is not None:
        first_step, train_state, meta = restored
        iterator.set_state(meta["data"])
        print(f"Resumed from step {first_step} in {workdir}", flush=True)

    step_fn = make_train_step(graphdef, optimizer, config.loss, mesh, state_spec)
    writer = _logging.MetricWriter(workdir, total_steps=config.total_steps, initial_step=first_step)
    stop = StopSignal()
    params, opt_state, loss_state = train_state["params"], train_state["opt_state"], train_state["loss_state"]
    step = first_step
    try:
        while step < config.total_steps and not stop.requested:
            batch = _to_global(next(iterator), mesh)
            params, opt_state, loss_state, metrics = step_fn(params, rest, opt_state, loss_state, batch)
            step += 1
            if step % config.log_every == 0 or step == config.total_steps:
                writer.write(step, jax.device_get(metrics))
            if on_step is not None:
                on_step(step, metrics)
            if step % config.checkpoint_every == 0 or step == config.total_steps or stop.requested:
                train_state = dict(
                    train_state,
                    params=params,
                    opt_state=opt_state,
                    loss_state=loss_state,
                    step=jnp.asarray(step, jnp.int32),
                )
                checkpointer.save(step, train_state, {"data": iterator.get_state()}, force=True)
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
    with open(os.path.join(workdir, "eval.json"), "w") as f:
        json.dump(results, f, indent=2)
    results["plots"] = _logging.save_plots(workdir, model, config, tokenizer)
    return results


def evaluate_checkpoint(workdir: str, split: str = "test") -> dict:
    """Evaluates the newest intact checkpoint of the run in `workdir` (its saved config)."""
    import ml_collections

    from contrastive_jax import data, evaluate

    with open(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    source = data.load_source(config.data.name, "train", config=config.data.get("builder_config", None))
    _, graphdef, rest, _, state = init_state(config, len(source))
    restored = Checkpointer(os.path.join(workdir, "checkpoints")).restore_latest(state)
    if restored is None:
        raise FileNotFoundError(f"no intact checkpoint in {workdir}/checkpoints")
    step, state, _ = restored
    model = nnx.merge(graphdef, state["params"], rest)
    results = evaluate.evaluate_model(model, config, tokenizer=make_tokenizer(config.data), split=split)
    return {"step": step, **results}
