"""Checks a run's inputs before it touches anything: the config, and the workdir it writes to.

Each check raises a `TrainingError` whose message names the offending field, the value it got and
the fix, phrased as the command-line override that would repair it (`--config.batch_size=16`), so
`experiments/train.py` can print it as one line. Nothing here writes to an existing workdir's
files: `check_workdir` creates a missing directory and probes it with a temporary file, no more.
"""

from __future__ import annotations

import os
import tempfile

from contrastive_jax.train._errors import ConfigError, WorkdirError, did_you_mean

# Exchanges the trainer supports: negatives come from every device of the (data, fsdp) mesh.
# "grouped" (M2-Encoder) needs a (group, member) mesh of its own.
TRAINER_EXCHANGES = ("all_gather", "ring")
# Objectives whose loss gathers its candidates and has no ring implementation.
GATHER_ONLY_OBJECTIVES = ("nt_xent", "dcl")
# Objectives that read a model output only one model family has.
MODEL_FOR_OBJECTIVE = {"siglip": "siglip", "coca": "coca"}

# Dotted paths of the plain numbers a run cannot start with outside their range (see `_check_numbers`).
POSITIVE_INTS = (
    "total_steps",
    "batch_size",
    "log_every",
    "checkpoint_every",
    "eval.batch_size",
    "data.image_size",
    "data.context_length",
)
POSITIVE_NUMBERS = ("optim.lr", "optim.eps", "loss.temperature")
NON_NEGATIVE_INTS = ("optim.warmup_steps",)
NON_NEGATIVE_NUMBERS = ("optim.weight_decay",)
OPTIONAL_POSITIVE_INTS = ("keep_checkpoints", "loss.block_size")  # None: keep all / no tiling
OPTIONAL_POSITIVE = ("loss.fixed_temperature",)  # None: the learned temperature
OPTIONAL_NON_NEGATIVE = ("optim.grad_clip",)  # None or 0: no clipping
UNIT_INTERVAL = ("optim.b1", "optim.b2", "loss.label_smoothing")  # [0, 1)


_MISSING = object()


def _get(config, path: str):
    """`config.a.b` for "a.b", or `_MISSING` when any part is absent (configs may omit fields)."""
    node = config
    for part in path.split("."):
        if not hasattr(node, "keys") or part not in node:
            return _MISSING
        node = node[part]
    return node


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bad_value(path: str, value, demand: str, example) -> ConfigError:
    return ConfigError(f"config.{path} is {value!r} but must be {demand}; e.g. --config.{path}={example}")


def _check_numbers(config, num_devices: int) -> None:
    rules = (
        (POSITIVE_INTS, lambda v: _is_int(v) and v > 0, "a positive integer", 1),
        (POSITIVE_NUMBERS, lambda v: _is_number(v) and v > 0, "a positive number", 0.001),
        (NON_NEGATIVE_INTS, lambda v: _is_int(v) and v >= 0, "a non-negative integer", 0),
        (NON_NEGATIVE_NUMBERS, lambda v: _is_number(v) and v >= 0, "zero or more", 0),
        (
            OPTIONAL_POSITIVE_INTS,
            lambda v: v is None or (_is_int(v) and v > 0),
            "a positive integer or None",
            1,
        ),
        (OPTIONAL_POSITIVE, lambda v: v is None or (_is_number(v) and v > 0), "positive or None", 0.07),
        (
            OPTIONAL_NON_NEGATIVE,
            lambda v: v is None or (_is_number(v) and v >= 0),
            "zero or more, or None",
            1.0,
        ),
        (UNIT_INTERVAL, lambda v: _is_number(v) and 0 <= v < 1, "in [0, 1)", 0.9),
    )
    for paths, ok, demand, example in rules:
        for path in paths:
            value = _get(config, path)
            if value is not _MISSING and not ok(value):
                raise _bad_value(path, value, demand, 16 * num_devices if path == "batch_size" else example)


def mesh_shape(config, num_devices: int) -> tuple[int, int]:
    """`(data, fsdp)`: the trainer's mesh from `config.mesh.data` and `config.mesh.fsdp`.

    -1 means all remaining devices (at most one of the two); absent means data = -1, fsdp = 1.
    The mesh uses the first `data * fsdp` devices; the batch splits over all of them.
    """
    sizes = {}
    for axis, default in (("data", -1), ("fsdp", 1)):
        size = _get(config, f"mesh.{axis}")
        size = default if size is _MISSING else size
        if not _is_int(size) or not (size == -1 or 1 <= size <= num_devices):
            raise ConfigError(
                f"config.mesh.{axis} is {size!r} but there are {num_devices} devices; use -1 (all remaining "
                f"devices) or 1..{num_devices}, e.g. --config.mesh.{axis}={default}"
            )
        sizes[axis] = size
    data, fsdp = sizes["data"], sizes["fsdp"]
    if data == -1 and fsdp == -1:
        raise ConfigError(
            "config.mesh.data and config.mesh.fsdp are both -1; set one, e.g. --config.mesh.data=1"
        )
    for axis, other in (("data", fsdp), ("fsdp", data)):
        if sizes[axis] == -1:
            if num_devices % other:
                raise ConfigError(
                    f"config.mesh.{axis}=-1 needs the {num_devices} devices to divide by the other axis's "
                    f"{other}; e.g. --config.mesh.{'fsdp' if axis == 'data' else 'data'}=1"
                )
            sizes[axis] = num_devices // other
    data, fsdp = sizes["data"], sizes["fsdp"]
    if data * fsdp > num_devices:
        raise ConfigError(
            f"config.mesh.data * config.mesh.fsdp = {data} * {fsdp} = {data * fsdp} but there are only "
            f"{num_devices} devices; e.g. --config.mesh.data=-1 --config.mesh.fsdp={fsdp}"
        )
    return data, fsdp


def _check_batch(config, num_devices: int) -> None:
    data, fsdp = mesh_shape(config, num_devices)
    batch, devices = config.batch_size, data * fsdp
    if batch % devices:
        fixed = max(devices, round(batch / devices) * devices)
        raise ConfigError(
            f"config.batch_size is {batch}, which does not divide evenly over the {devices} devices of the "
            f"mesh (data {data} x fsdp {fsdp}); use a multiple of {devices}, e.g. --config.batch_size={fixed}"
        )


def _check_loss(config) -> None:
    from contrastive_jax.train._objective import OBJECTIVES

    loss = config.loss
    if loss.name not in OBJECTIVES:
        raise ConfigError(
            f"unknown loss config.loss.name={loss.name!r}; {did_you_mean(loss.name, OBJECTIVES)}"
        )
    exchange = loss.get("exchange", "all_gather")
    if exchange not in TRAINER_EXCHANGES:
        raise ConfigError(
            f"unknown exchange config.loss.exchange={exchange!r} (the trainer gathers negatives over every device of its mesh); "
            f"{did_you_mean(exchange, TRAINER_EXCHANGES)}"
        )
    if exchange == "ring" and loss.name in GATHER_ONLY_OBJECTIVES:
        raise ConfigError(f"loss {loss.name!r} has no ring exchange; use --config.loss.exchange=all_gather")
    if loss.name in ("isogclr", "sogclr"):
        low, init, high = loss.tau_min, loss.tau_init, loss.tau_max
        if not 0 < low <= init <= high:
            raise ConfigError(
                f"the temperatures need 0 < loss.tau_min <= loss.tau_init <= loss.tau_max, got "
                f"{low}, {init}, {high}; e.g. --config.loss.tau_min=0.005 --config.loss.tau_init=0.01 "
                "--config.loss.tau_max=0.05"
            )
    needed = MODEL_FOR_OBJECTIVE.get(loss.name)
    if needed is not None and config.model.name != needed:
        raise ConfigError(
            f"loss {loss.name!r} needs the {needed!r} model, but config.model.name is "
            f"{config.model.name!r}; use experiments/configs/{needed}.py"
        )


def _check_model(config) -> None:
    from contrastive_jax.models import MODELS

    model = config.model
    if model.name not in MODELS:
        raise ConfigError(
            f"unknown model config.model.name={model.name!r}; {did_you_mean(model.name, MODELS)}"
        )
    pairs = (("vision.image_size", "data.image_size"), ("text.context_length", "data.context_length"))
    for model_path, data_path in pairs:
        model_value, data_value = _get(model, model_path), _get(config, data_path)
        if _MISSING not in (model_value, data_value) and model_value != data_value:
            raise ConfigError(
                f"config.model.{model_path}={model_value} but config.{data_path}={data_value}; set both "
                f"to the same value, e.g. --config.model.{model_path}={data_value}"
            )
    image, patch = _get(model, "vision.image_size"), _get(model, "vision.patch_size")
    if _MISSING not in (image, patch) and (not _is_int(patch) or patch <= 0 or image % patch):
        raise ConfigError(
            f"config.model.vision.image_size={image} is not a multiple of config.model.vision.patch_size="
            f"{patch}; choose a patch size that divides the image size"
        )


def _check_data(config) -> None:
    spec = str(config.data.get("tokenizer", "word"))
    if spec in ("word", "clip_bpe"):
        return
    tokenizer = spec.removeprefix("siglip:")
    if not tokenizer.endswith((".model", ".json", ".txt.gz")) or (
        spec != tokenizer and not tokenizer.endswith(".model")
    ):
        raise ConfigError(
            f"config.data.tokenizer is {spec!r}; use 'word', 'clip_bpe', a SentencePiece .model file "
            "('siglip:PATH.model' for SigLIP's), a Hugging Face tokenizers .json file or a CLIP BPE .txt.gz "
            "vocabulary"
        )
    if not os.path.isfile(tokenizer):
        raise ConfigError(
            f"config.data.tokenizer file {tokenizer!r} does not exist; pass the path to an existing file"
        )


def validate_config(config, num_devices: int) -> None:
    """Raises `ConfigError` (one line: the field, its value, the fix) if `config` cannot train.

    Checks what fails late or obscurely otherwise: non-positive steps, intervals and batch sizes,
    a batch that does not split over `num_devices`, unknown loss, exchange, model or tokenizer
    names, inconsistent image/context sizes and out-of-range optimizer numbers. The dataset name
    and builder config are checked by `contrastive_jax.data.check_source`, which this calls.

    Args:
      config: a training config (see experiments/configs).
      num_devices: the devices the batch is split over (`jax.device_count()` in `train`).
    """
    from contrastive_jax import data

    _check_numbers(config, num_devices)
    _check_batch(config, num_devices)
    _check_loss(config)
    _check_model(config)
    _check_data(config)
    data.check_source(config.data.name, config=config.data.get("builder_config", None))


def _first_existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _check_writable(directory: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".write_probe_"):
            pass
    except OSError as err:
        raise WorkdirError(
            f"cannot write to {directory} ({err.strerror}); pass a --workdir you can write to"
        ) from err


def check_workdir(workdir: str) -> None:
    """Makes sure the run can write to `workdir`: creates it if missing, else changes nothing.

    Raises `WorkdirError` when it is a file, lies under a file, or cannot be created or written
    (also its `checkpoints/` folder, if present).
    """
    if not workdir:
        raise WorkdirError("the workdir is empty; pass --workdir=DIR")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(
            f"--workdir {workdir} is a file, not a directory; pass a directory (new or an earlier run's)"
        )
    ancestor = _first_existing_ancestor(workdir)
    if not os.path.isdir(ancestor):
        raise WorkdirError(
            f"--workdir {workdir} lies under {ancestor}, which is a file; pass a directory path"
        )
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as err:
        raise WorkdirError(
            f"cannot create --workdir {workdir} ({err.strerror}); pass a path you can write to"
        ) from err
    _check_writable(workdir)
    checkpoints = os.path.join(workdir, "checkpoints")
    if os.path.isdir(checkpoints):
        _check_writable(checkpoints)


def check_run_dir(workdir: str) -> None:
    """Raises `WorkdirError` / `CheckpointError` unless `workdir` holds a run to evaluate: its
    config.json and at least one checkpoint step folder."""
    from contrastive_jax.train._errors import CheckpointError

    if not os.path.isdir(workdir):
        what = "is a file" if os.path.exists(workdir) else "does not exist"
        raise WorkdirError(f"--workdir {workdir} {what}; pass the directory of a training run")
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise WorkdirError(
            f"{workdir} has no config.json, so it is not a training run's workdir; pass the --workdir "
            "given to experiments.train"
        )
    checkpoints = os.path.join(workdir, "checkpoints")
    steps = [n for n in os.listdir(checkpoints) if n.isdigit()] if os.path.isdir(checkpoints) else []
    if not steps:
        raise CheckpointError(
            f"{workdir} has no checkpoints yet; train first (python -m experiments.train --workdir {workdir})"
        )
