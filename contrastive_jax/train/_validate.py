"""Checks a run's config before it touches anything (the workdir's checks are in `_rundir`).

Each check raises a `TrainingError` whose message names the offending field, the value it got and
the fix, phrased as the command-line override that would repair it (`--config.batch_size=16`), so
`experiments/train.py` can print it as one line. Nothing here writes anything.
"""

from __future__ import annotations

from contrastive_jax import data
from contrastive_jax._errors import ConfigError, did_you_mean
from contrastive_jax.evaluate import evaluators_from_config
from contrastive_jax.models import LOCAL_PROJECTORS, MODELS
from contrastive_jax.train import _recipes
from contrastive_jax.train._objective import (
    TRAINER_EXCHANGES,
    get_objective,
    needs_loss_state,
    supported_exchanges,
)

# The workdir checks live with the rest of the run directory's rules; re-exported for old callers.
from contrastive_jax.train._rundir import check_run_dir, check_workdir  # noqa: F401

# Dotted paths of the plain numbers a run cannot start with outside their range (see `_check_numbers`).
# The loss section's own settings are checked by their objective's record (`train/_objective.py`).
POSITIVE_INTS = (
    "total_steps",
    "batch_size",
    "log_every",
    "checkpoint_every",
    "eval.batch_size",
    "data.image_size",
    "data.context_length",
)
POSITIVE_NUMBERS = ("optim.lr", "optim.eps")
NON_NEGATIVE_INTS = ("optim.warmup_steps",)
NON_NEGATIVE_NUMBERS = ("optim.weight_decay",)
OPTIONAL_POSITIVE_INTS = ("keep_checkpoints", "loss.block_size")  # None: keep all / no tiling
OPTIONAL_POSITIVE = ()  # positive or None (none at present: loss.fixed_temperature is clip's)
OPTIONAL_NON_NEGATIVE = ("optim.grad_clip",)  # None or 0: no clipping
UNIT_INTERVAL = ("optim.b1", "optim.b2")  # [0, 1)


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
    """The loss section against its objective's record: name, exchange, settings, model."""
    loss = config.loss
    objective = get_objective(loss.name)  # unknown: suggests close names
    settings = objective.settings(loss)
    if settings.exchange not in TRAINER_EXCHANGES:
        raise ConfigError(
            f"unknown exchange config.loss.exchange={settings.exchange!r} (the trainer gathers negatives over "
            f"every device of its mesh); {did_you_mean(settings.exchange, TRAINER_EXCHANGES)}"
        )
    supported = supported_exchanges(loss.name)
    if settings.exchange not in supported:
        raise ConfigError(
            f"loss {loss.name!r} has no {settings.exchange} exchange; use --config.loss.exchange={supported[0]}"
        )
    objective.check(settings)
    if objective.model is not None and config.model.name != objective.model:
        raise ConfigError(
            f"loss {loss.name!r} needs the {objective.model!r} model, but config.model.name is "
            f"{config.model.name!r}; use experiments/configs/{objective.model}.py"
        )
    views = config.data.get("local_views", 0)
    if objective.views and not (_is_int(views) and views >= 1):
        raise ConfigError(
            f"loss {loss.name!r} trains on augmented views of each sample, but config.data.local_views="
            f"{views!r}; set --config.data.local_views=2 (clip-rocket's --num-augs)"
        )


def _check_model(config) -> None:
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
    for tower in ("vision", "text"):
        width, heads = _get(model, f"{tower}.width"), _get(model, f"{tower}.num_heads")
        if _MISSING not in (width, heads) and (not _is_int(heads) or heads <= 0 or width % heads):
            raise ConfigError(
                f"config.model.{tower}.width={width} does not split over config.model.{tower}.num_heads="
                f"{heads} attention heads; choose a head count that divides the width"
            )
    _check_view_heads(config)
    image, patch = _get(model, "vision.image_size"), _get(model, "vision.patch_size")
    if _MISSING not in (image, patch) and (not _is_int(patch) or patch <= 0 or image % patch):
        raise ConfigError(
            f"config.model.vision.image_size={image} is not a multiple of config.model.vision.patch_size="
            f"{patch}; choose a patch size that divides the image size"
        )


def _check_view_heads(config) -> None:
    """CL2L's local projector must be one it knows; heads with BatchNorm (its "mlp" projector,
    BarLIP's) normalise by the batch's statistics, which a micro-batch (`grad_accum_steps`) changes."""
    model = config.model
    if model.name not in ("cl2l", "barlip"):
        return
    projector = model.get("cl2l", {}).get("local_projector", "mlp")
    if projector not in LOCAL_PROJECTORS:
        raise ConfigError(
            f"config.model.cl2l.local_projector={projector!r}; {did_you_mean(str(projector), LOCAL_PROJECTORS)}"
        )
    batch_norm = projector == "mlp" or model.name == "barlip"
    steps = config.get("grad_accum_steps", 1)
    if batch_norm and _is_int(steps) and steps > 1:
        raise ConfigError(
            f"config.model.name={model.name!r} has BatchNorm heads, which normalise by the statistics of "
            f"the whole batch, so grad_accum_steps={steps} would change the loss; set "
            "--config.grad_accum_steps=1" + ("" if model.name == "barlip" else
            " or --config.model.cl2l.local_projector=linear")
        )  # fmt: skip


def _check_data(config) -> None:
    """The tokenizer spec (data's one parser), the source and its options, and an objective
    that keeps per-sample state needs sample ids, which a stream (resampled shards, parquet) lacks."""
    data.check_tokenizer(config.data.get("tokenizer", "word"))
    data.check_data_config(config.data)
    if data.streams(config.data) and needs_loss_state(config.loss.name):
        raise ConfigError(
            f"loss {config.loss.name!r} keeps per-sample state indexed by sample id, but "
            f"config.data.name={config.data.name!r}{' with resampled=True' if config.data.name == 'webdataset' else ''} "
            "streams records without ids; use indexed shards (--config.data.resampled=False) or another loss"
        )


def _check_eval(config) -> None:
    """Zero-shot questions need prompts of a dataset that has them (`config.eval.prompts`), and
    `config.evals` must list well-formed evaluators (whether their datasets are prepared is checked
    when `train` opens them, before the first step)."""
    try:
        evaluators_from_config(config.get("evals", None))
    except ConfigError as err:
        raise ConfigError(
            f"config.{err}" if str(err).startswith("evals") else f"config.evals: {err}"
        ) from None
    questions = _get(config, "eval.questions")
    if questions is _MISSING or not questions:
        return
    prompts = config.eval.get("prompts", config.data.name)
    known = data.QUESTIONS.get(prompts)
    unknown = [q for q in questions if known is None or q not in known]
    if unknown:
        have = f"{prompts!r} has the questions {known}" if known else f"{prompts!r} has no zero-shot prompts"
        raise ConfigError(
            f"config.eval.questions asks {unknown} but {have}; set --config.eval.questions='()' or "
            f"--config.eval.prompts to one of {sorted(data.QUESTIONS)}"
        )


def validate_config(config, num_devices: int) -> None:
    """Raises `ConfigError` (one line: the field, its value, the fix) if `config` cannot train.

    Checks what fails late or obscurely otherwise: non-positive steps, intervals and batch sizes,
    a batch that does not split over `num_devices`, unknown loss, exchange, model or tokenizer
    names, inconsistent image/context sizes and out-of-range optimizer numbers. The data section
    (dataset name and builder config, shards, tokenizer) is checked by `contrastive_jax.data`.

    Args:
      config: a training config (see experiments/configs).
      num_devices: the devices the batch is split over (`jax.device_count()` in `train`).
    """
    _check_numbers(config, num_devices)
    _check_batch(config, num_devices)
    _check_loss(config)
    _check_model(config)
    _check_data(config)
    _check_eval(config)
    _recipes.check_recipes(config, num_devices)
