"""The training objectives: one record per objective, read by the step, the validator, the configs.

An `Objective` says everything the trainer needs to train with one loss: how to call it on the
model's outputs (its adapter), its per-sample state (if any), the model family it needs, the batch
inputs it wants encoded, its config settings with their defaults and the checks on them. The
exchanges it supports are not written down: they are asked of the loss itself, which refuses an
exchange it lacks (`supported_exchanges` traces it once on a one-device mesh).

`compute_loss` runs inside the per-device function of the train step (under `jax.shard_map` when
there are several devices) and passes `axis_name`/`exchange` on, so the loss is the global-batch
loss with exact gradients. Every metric it returns is already global.

To add an objective, write its adapter and one `Objective(...)` entry in `REGISTRY` below; the
config builder (`loss_config`), `validate_config`, the step and the README's objective table
(`objective_table`; `python -m tests.test_objectives` rewrites it) follow from the record.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec as P

from contrastive_jax import _vma, losses, parallel
from contrastive_jax._errors import ConfigError, did_you_mean

# Exchanges the trainer offers: negatives come from every device of the (data, fsdp) mesh.
# "grouped" (M2-Encoder) needs a (group, member) mesh of its own.
TRAINER_EXCHANGES = ("all_gather", "ring")
# Keys every loss section may have besides its objective's own. `block_size` appears in a section
# when the objective's loss function takes it (the blockwise path); `shard_state` when it keeps state.
SHARED_DEFAULTS = {"exchange": "all_gather", "block_size": None, "shard_state": False}
# The model outputs every objective reads (`compute_loss` logs the logit scale for all of them).
BASE_OUTPUTS = ("image_emb", "text_emb", "logit_scale")
# The batch entries of the augmented views (`data.local_views`) that objectives with `views` read.
VIEW_INPUTS = ("local_image", "local_tokens")


@dataclasses.dataclass(frozen=True)
class NoneDefault:
    """A setting that is None unless set, of `type` when set (so `--config.loss.KEY=...` parses)."""

    type: type


Settings = types.SimpleNamespace  # a loss section with its objective's defaults filled in
Adapter = Callable[..., tuple]  # (settings, outputs, batch, state, axis_name) -> (loss, metrics, state)


@dataclasses.dataclass(frozen=True)
class Objective:
    """What the trainer needs to train with one loss.

    Attributes:
      name: the value of `config.loss.name`.
      apply: `(settings, outputs, batch, state, axis_name) -> (loss, metrics, new_state)`, the call
        of the loss on the model's outputs; `metrics` holds the objective's own terms.
      functions: the `losses` functions it calls (the README names them; the first one decides
        whether `block_size` applies).
      defaults: its own settings and their defaults (the loss section's keys besides the shared ones).
      init_state: `(settings, num_samples) -> state` for objectives with per-sample state, else None.
      model: the `config.model.name` it needs (a model output only that family has), None for any.
      outputs: model outputs it reads beyond `BASE_OUTPUTS`.
      batch_keys: batch entries it reads (e.g. "index", the dataset sample ids).
      text_inputs: `{output: batch key}`: batch tokens the step encodes with the text tower and adds
        to the outputs under `output`.
      views: whether it trains on the batch's augmented views (`local_image`, `local_tokens`,
        from `data.local_views`): the step adds `model.encode_views(...)`'s outputs.
      checks: functions of the settings raising `ConfigError` for values the loss cannot take.
    """

    name: str
    apply: Adapter
    functions: tuple[Callable, ...]
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    init_state: Callable | None = None
    model: str | None = None
    outputs: tuple[str, ...] = ()
    batch_keys: tuple[str, ...] = ()
    text_inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    views: bool = False
    checks: tuple[Callable[[Settings], None], ...] = ()

    @property
    def tiled(self) -> bool:
        """Whether its loss takes `block_size` (then the section has `loss.block_size`)."""
        return "block_size" in inspect.signature(self.functions[0]).parameters

    def config_defaults(self) -> dict:
        """Its loss section's keys and defaults: name, exchange, the shared ones that apply, its own."""
        fields = {"name": self.name, "exchange": SHARED_DEFAULTS["exchange"]}
        if self.tiled:
            fields["block_size"] = NoneDefault(int)
        fields.update(self.defaults)
        if self.init_state is not None:
            fields["shard_state"] = SHARED_DEFAULTS["shard_state"]
        return fields

    def settings(self, config) -> Settings:
        """`config` (a loss section) over this objective's defaults; keys it does not read are kept."""
        own = {k: None if isinstance(v, NoneDefault) else v for k, v in self.defaults.items()}
        return Settings(**(SHARED_DEFAULTS | own | dict(config.items())))

    def check(self, settings: Settings) -> None:
        for check in self.checks:
            check(settings)

    def encode_inputs(self, model, batch, *, normalize=None, patch_dropout_key=None) -> dict:
        """The extra outputs the train step adds: `text_inputs` through the model's text tower and,
        for an objective with `views`, the views through `model.encode_views` (uint8 view pixels
        are first mapped by `normalize`; `patch_dropout_key` drives their patch dropout)."""
        outputs = {output: model.encode_text(batch[key]) for output, key in self.text_inputs.items()}
        if self.views:
            for key in VIEW_INPUTS:
                if key not in batch:
                    raise ValueError(
                        f"loss {self.name!r} trains on augmented views: batch[{key!r}] is missing "
                        "(set --config.data.local_views=2)"
                    )
            images = batch["local_image"]
            if images.dtype == jnp.uint8 and normalize is not None:
                images = normalize(images)
            extra = {} if patch_dropout_key is None else {"patch_dropout_key": patch_dropout_key}
            outputs.update(model.encode_views(images, batch["local_tokens"], **extra))
        return outputs


# --------------------------------------------------------------------------------------------
# Checks on settings: each raises a one-line ConfigError naming the field, its value and a fix.


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(key: str, ok: Callable, demand: str, example) -> Callable[[Settings], None]:
    def check(settings: Settings) -> None:
        value = getattr(settings, key)
        if not ok(value):
            raise ConfigError(
                f"config.loss.{key} is {value!r} but must be {demand}; e.g. --config.loss.{key}={example}"
            )

    return check


def _positive(key: str, example) -> Callable[[Settings], None]:
    return _require(key, lambda v: _is_number(v) and v > 0, "a positive number", example)


def _non_negative(key: str, example) -> Callable[[Settings], None]:
    return _require(key, lambda v: _is_number(v) and v >= 0, "a number >= 0", example)


def _positive_int(key: str, example) -> Callable[[Settings], None]:
    ok = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0
    return _require(key, ok, "a positive integer", example)


def _positive_or_none(key: str, example) -> Callable[[Settings], None]:
    return _require(key, lambda v: v is None or (_is_number(v) and v > 0), "positive or None", example)


def _unit_interval(key: str, example) -> Callable[[Settings], None]:
    return _require(key, lambda v: _is_number(v) and 0 <= v < 1, "in [0, 1)", example)


def _one_of(key: str, choices: tuple[str, ...]) -> Callable[[Settings], None]:
    def check(settings: Settings) -> None:
        value = getattr(settings, key)
        if value not in choices:
            raise ConfigError(f"config.loss.{key}={value!r}; {did_you_mean(str(value), choices)}")

    return check


def _temperatures_ordered(settings: Settings) -> None:
    low, init, high = settings.tau_min, settings.tau_init, settings.tau_max
    if not 0 < low <= init <= high:
        raise ConfigError(
            f"the temperatures need 0 < loss.tau_min <= loss.tau_init <= loss.tau_max, got "
            f"{low}, {init}, {high}; e.g. --config.loss.tau_min=0.005 --config.loss.tau_init=0.01 "
            "--config.loss.tau_max=0.05"
        )


# --------------------------------------------------------------------------------------------
# Adapters: the model's outputs (+ batch, state) -> the loss call.


def _clip(s, outputs, batch, state, axis_name):
    # fixed_temperature None: the model's learned logit scale.
    scale = outputs["logit_scale"] if s.fixed_temperature is None else jnp.float32(1.0 / s.fixed_temperature)
    loss = losses.clip_loss(
        outputs["image_emb"],
        outputs["text_emb"],
        scale,
        label_smoothing=s.label_smoothing,
        axis_name=axis_name,
        exchange=s.exchange,
        block_size=s.block_size,
    )
    return loss, {}, state


def _siglip(s, outputs, batch, state, axis_name):
    loss = losses.siglip_loss(
        outputs["image_emb"],
        outputs["text_emb"],
        outputs["logit_scale"],
        outputs["logit_bias"],
        axis_name=axis_name,
        exchange=s.exchange,
        block_size=s.block_size,
    )
    return loss, {"logit_bias": outputs["logit_bias"]}, state


def _coca(s, outputs, batch, state, axis_name):
    loss, parts = losses.coca_loss(
        outputs["image_emb"],
        outputs["text_emb"],
        outputs["logit_scale"],
        outputs["caption_logits"],
        outputs["caption_labels"],
        caption_weight=s.caption_weight,
        contrastive_weight=s.contrastive_weight,
        axis_name=axis_name,
        exchange=s.exchange,
        block_size=s.block_size,
    )
    return loss, {"contrastive": parts["contrastive"], "caption": parts["caption"]}, state


def _mean_seen_tau(state, axis_name):
    """Mean image-side τ over the samples seen so far, whether the state is replicated or sharded.

    Entries never visited (including the padding of a sharded state) keep their initial τ and
    are left out; with a sharded state the two sums are taken over all devices.
    """
    seen = state.seen
    totals = jnp.stack([jnp.sum(jnp.where(seen, state.tau_image, 0.0)), jnp.sum(seen.astype(jnp.float32))])
    if axis_name is not None and _vma.varying_axes(totals):  # sharded: each device holds a slice
        totals = jax.lax.psum(totals, axis_name)
    return totals[0] / jnp.maximum(totals[1], 1.0)


def _temperature_state(s, num_samples: int):
    return losses.isogclr_init(num_samples, tau_init=s.tau_init, tau_min=s.tau_min, tau_max=s.tau_max)


def _temperature_loss(s, outputs, batch, state, axis_name, **hyper):
    loss, state = losses.isogclr_loss(
        outputs["image_emb"],
        outputs["text_emb"],
        batch["index"],
        state,
        axis_name=axis_name,
        exchange=s.exchange,
        **hyper,
    )
    return loss, {"mean_tau": _mean_seen_tau(state, axis_name)}, state


def _isogclr(s, outputs, batch, state, axis_name):
    hyper = dict(gamma=s.gamma, rho=s.rho, eta=s.eta, beta=s.beta)
    return _temperature_loss(s, outputs, batch, state, axis_name, **hyper)


def _sogclr(s, outputs, batch, state, axis_name):  # τ fixed at tau_init: ρ, η, β play no part
    return _temperature_loss(s, outputs, batch, state, axis_name, gamma=s.gamma, learn_temperature=False)


def _clip_count(s, outputs, batch, state, axis_name):
    """ "Teaching CLIP to Count": CLIP plus preferring the true caption over the wrong-count one."""
    image, text = outputs["image_emb"], outputs["text_emb"]
    contrastive = losses.clip_loss(
        image, text, outputs["logit_scale"], axis_name=axis_name, exchange=s.exchange, block_size=s.block_size
    )
    counting = losses.counting_loss(image, text, outputs["cf_text_emb"])
    if axis_name is not None:  # a per-sample mean: the global batch's is the mean over devices
        counting = jax.lax.pmean(counting, axis_name)
    loss = contrastive + s.count_weight * counting
    return loss, {"contrastive": contrastive, "counting": counting}, state


def _two_views(fn, *keys: str):
    """Image and text embeddings as SimCLR's two views; the settings `keys` go to `fn` by name."""

    def apply(s, outputs, batch, state, axis_name):
        options = {key: getattr(s, key) for key in keys}
        loss = fn(
            outputs["image_emb"], outputs["text_emb"], **options, axis_name=axis_name, exchange=s.exchange
        )
        return loss, {}, state

    return apply


def _comp_sum_clip(s, outputs, batch, state, axis_name):
    loss = losses.comp_sum_clip_loss(
        outputs["image_emb"],
        outputs["text_emb"],
        outputs["logit_scale"],
        tau=s.tau,
        axis_name=axis_name,
        exchange=s.exchange,
    )
    return loss, {}, state


def _by_view(stack):
    """`[B, n, D]` (the model's outputs are by sample, as the step splits them) → `[n, B, D]`."""
    return jnp.swapaxes(stack, 0, 1)


def _cl2l_loss(s, outputs, axis_name):
    return losses.cl2l_loss(
        outputs["image_emb"],
        outputs["text_emb"],
        _by_view(outputs["image_local"]),
        _by_view(outputs["text_local"]),
        outputs["logit_scale"],
        outputs["local_logit_scale"],
        label_smoothing=s.label_smoothing,
        reduction=s.reduction,
        axis_name=axis_name,
        exchange=s.exchange,
    )


def _cl2l(s, outputs, batch, state, axis_name):
    return _cl2l_loss(s, outputs, axis_name), {"local_logit_scale": outputs["local_logit_scale"]}, state


def _barlip(s, outputs, batch, state, axis_name):
    """clip-rocket's BarLIP: CL2L plus the Barlow Twins loss between the modalities' projections."""
    contrastive = _cl2l_loss(s, outputs, axis_name)
    barlow = losses.barlip_loss(
        outputs["v_image"],
        outputs["v_text"],
        v_image_local=_by_view(outputs["v_image_local"]),
        v_text_local=_by_view(outputs["v_text_local"]),
        lambda_offdiag=s.lambda_offdiag,
        scale=s.scale,
        axis_name=axis_name,
    )
    metrics = {"cl2l": contrastive, "barlip": barlow, "local_logit_scale": outputs["local_logit_scale"]}
    return contrastive + s.barlip_weight * barlow, metrics, state


_TEMPERATURE_DEFAULTS = dict(tau_init=0.01, tau_min=0.005, tau_max=0.05, gamma=0.9)

REGISTRY: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective(
            "clip",
            _clip,
            (losses.clip_loss,),
            defaults=dict(label_smoothing=0.0, fixed_temperature=NoneDefault(float)),
            checks=(_unit_interval("label_smoothing", 0.1), _positive_or_none("fixed_temperature", 0.07)),
        ),
        Objective("siglip", _siglip, (losses.siglip_loss,), model="siglip", outputs=("logit_bias",)),
        Objective(
            "coca",
            _coca,
            (losses.coca_loss,),
            defaults=dict(caption_weight=2.0, contrastive_weight=1.0),
            model="coca",
            outputs=("caption_logits", "caption_labels"),
        ),
        Objective(
            "isogclr",
            _isogclr,
            (losses.isogclr_loss,),
            defaults=dict(_TEMPERATURE_DEFAULTS, rho=6.0, eta=0.01, beta=0.9),
            init_state=_temperature_state,
            batch_keys=("index",),
            checks=(_temperatures_ordered,),
        ),
        Objective(
            "sogclr",
            _sogclr,
            (losses.isogclr_loss,),
            defaults=_TEMPERATURE_DEFAULTS,
            init_state=_temperature_state,
            batch_keys=("index",),
            checks=(_temperatures_ordered,),
        ),
        Objective(
            "clip_count",
            _clip_count,
            (losses.clip_loss, losses.counting_loss),
            defaults=dict(count_weight=1.0),
            text_inputs={"cf_text_emb": "cf_tokens"},
        ),
        Objective(
            "nt_xent",
            _two_views(losses.nt_xent_loss, "temperature"),
            (losses.nt_xent_loss,),
            defaults=dict(temperature=0.1),
            checks=(_positive("temperature", 0.1),),
        ),
        Objective(
            "dcl",
            _two_views(losses.dcl_loss, "temperature"),
            (losses.dcl_loss,),
            defaults=dict(temperature=0.1),
            checks=(_positive("temperature", 0.1),),
        ),
        Objective(  # the defaults are the authors' (joshr17/HCL)
            "hcl",
            _two_views(losses.hcl_loss, "temperature", "tau_plus", "beta"),
            (losses.hcl_loss,),
            defaults=dict(temperature=0.5, tau_plus=0.1, beta=1.0),
            checks=(
                _positive("temperature", 0.5),
                _unit_interval("tau_plus", 0.1),
                _non_negative("beta", 1.0),
            ),
        ),
        Objective(  # no published τ or K: both must be set; image-text training takes both directions
            "hard_topk_infonce",
            _two_views(losses.hard_topk_infonce_loss, "temperature", "num_hard", "symmetric"),
            (losses.hard_topk_infonce_loss,),
            defaults=dict(temperature=NoneDefault(float), num_hard=NoneDefault(int), symmetric=True),
            checks=(_positive("temperature", 0.07), _positive_int("num_hard", 64)),
        ),
        Objective(  # clip-rocket's defaults: label smoothing 0.1 in every reported run (repro_exps.txt)
            "cl2l",
            _cl2l,
            (losses.cl2l_loss,),
            defaults=dict(label_smoothing=0.1, reduction="mean"),
            model="cl2l",
            outputs=("image_local", "text_local", "local_logit_scale"),
            views=True,
            checks=(_unit_interval("label_smoothing", 0.1), _one_of("reduction", ("mean", "sum"))),
        ),
        Objective(  # --barlip-lamb 5e-3, --barlip-scale-loss 0.025; the authors' total is cl2l + barlip
            "barlip",
            _barlip,
            (losses.cl2l_loss, losses.barlip_loss),
            defaults=dict(
                label_smoothing=0.1, reduction="mean", lambda_offdiag=5e-3, scale=0.025, barlip_weight=1.0
            ),
            model="barlip",
            outputs=(
                "image_local",
                "text_local",
                "local_logit_scale",
                "v_image",
                "v_text",
                "v_image_local",
                "v_text_local",
            ),  # fmt: skip
            views=True,
            checks=(
                _unit_interval("label_smoothing", 0.1),
                _one_of("reduction", ("mean", "sum")),
                _non_negative("lambda_offdiag", 5e-3),
                _positive("scale", 0.025),
                _non_negative("barlip_weight", 1.0),
            ),
        ),
        Objective(
            "comp_sum_clip",
            _comp_sum_clip,
            (losses.comp_sum_clip_loss,),
            defaults=dict(tau=1.0),
            checks=(_non_negative("tau", 1.5),),
        ),
    )
}
OBJECTIVES = tuple(REGISTRY)


# --------------------------------------------------------------------------------------------
# What the rest of the trainer calls.


def get_objective(name: str) -> Objective:
    """The record of objective `name`; a `ConfigError` suggesting close names if there is none."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown loss config.loss.name={name!r}; {did_you_mean(name, OBJECTIVES)}")
    return REGISTRY[name]


def loss_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """The `loss` section of a training config for objective `name`: its keys and defaults.

    `overrides` replace defaults (e.g. `block_size=4096`); a key the section does not have is an error.
    """
    fields = get_objective(name).config_defaults()
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(
            f"loss {name!r} has no setting {unknown[0]!r}; {did_you_mean(unknown[0], fields, what='from')}"
        )
    section = {}
    for key, default in fields.items():
        value = overrides.get(key, None if isinstance(default, NoneDefault) else default)
        if isinstance(default, NoneDefault):  # typed, so that a command-line value parses
            value = ml_collections.FieldReference(value, field_type=default.type)
        section[key] = value
    return ml_collections.ConfigDict(section)


def needs_loss_state(name: str) -> bool:
    return name in REGISTRY and REGISTRY[name].init_state is not None


def init_loss_state(config, num_samples: int):
    """The objective's per-sample loss state (e.g. iSogCLR's temperatures), else an empty dict."""
    objective = get_objective(config["name"])
    if objective.init_state is None:
        return {}
    return objective.init_state(objective.settings(config), num_samples)


def _check_inputs(objective: Objective, outputs, batch) -> None:
    """Raises (at trace time) when an output or batch entry the objective reads is missing."""
    for key in (*BASE_OUTPUTS, *objective.outputs, *objective.text_inputs):
        if key not in outputs:
            source = objective.text_inputs.get(key)
            how = f" (the train step encodes batch[{source!r}] with the text tower)" if source else ""
            if objective.views and key in objective.outputs:
                how = " (the train step adds model.encode_views' outputs: a model with views, e.g. 'cl2l')"
            raise ValueError(f"loss {objective.name!r} needs outputs[{key!r}]{how}")
    for key in objective.batch_keys:
        if key not in batch:
            raise ValueError(f"loss {objective.name!r} needs batch[{key!r}]")


def compute_loss(config, outputs, batch, loss_state, *, axis_name=None):
    """Returns `(loss, metrics, new_loss_state)` for objective `config.name` (see `OBJECTIVES`).

    Args:
      config: the `loss` section of a training config (name, exchange, the objective's settings).
      outputs: the model's output dict (`image_emb`, `text_emb`, `logit_scale`, ...) plus the
        objective's `text_inputs` (e.g. "clip_count": `cf_text_emb`).
      batch: this device's rows of the batch.
      loss_state: per-sample state (iSogCLR) or `{}`.
      axis_name: the mesh axes the batch is split over when running under shard_map.
    """
    objective = get_objective(config["name"])
    settings = objective.settings(config)
    objective.check(settings)
    _check_inputs(objective, outputs, batch)
    loss, metrics, loss_state = objective.apply(settings, outputs, batch, loss_state, axis_name)
    return loss, dict(metrics, loss=loss, logit_scale=outputs["logit_scale"]), loss_state


# --------------------------------------------------------------------------------------------
# Exchanges, asked of the loss: traced (not run) once per objective on a one-device mesh.

_PROBE_BATCH, _PROBE_DIM, _PROBE_LENGTH, _PROBE_VOCAB = 4, 8, 3, 5
_PROBE_SHAPES = {  # output or batch key -> (shape, dtype) of a tiny stand-in
    "logit_scale": ((), jnp.float32),
    "logit_bias": ((), jnp.float32),
    "caption_logits": ((_PROBE_BATCH, _PROBE_LENGTH, _PROBE_VOCAB), jnp.float32),
    "caption_labels": ((_PROBE_BATCH, _PROBE_LENGTH), jnp.int32),
    "index": ((_PROBE_BATCH,), jnp.int32),
    "local_logit_scale": ((), jnp.float32),
    **{key: ((_PROBE_BATCH, 2, _PROBE_DIM), jnp.float32) for key in ("image_local", "text_local")},
    **{key: ((_PROBE_BATCH, 2, _PROBE_DIM), jnp.float32) for key in ("v_image_local", "v_text_local")},
}


def _stand_in(key: str) -> jax.ShapeDtypeStruct:
    shape, dtype = _PROBE_SHAPES.get(key, ((_PROBE_BATCH, _PROBE_DIM), jnp.float32))  # embeddings
    return jax.ShapeDtypeStruct(shape, dtype)


def _traces_with(objective: Objective, exchange: str) -> bool:
    """Whether the objective's loss accepts `exchange` under shard_map (False: it raised ValueError)."""
    unset = {k: v.type(1) for k, v in objective.defaults.items() if isinstance(v, NoneDefault)}  # e.g. K = 1
    settings = objective.settings({"exchange": exchange, **unset})
    outputs = {k: _stand_in(k) for k in (*BASE_OUTPUTS, *objective.outputs, *objective.text_inputs)}
    batch = {k: _stand_in(k) for k in objective.batch_keys}
    state = {} if objective.init_state is None else objective.init_state(settings, _PROBE_BATCH)

    def by_sample(tree):  # as the train step lays them out: scalars replicated, the rest by sample
        return jax.tree.map(lambda x: P("batch") if x.shape else P(), tree)

    def per_device(outputs, batch, state):
        return objective.apply(settings, outputs, batch, state, "batch")[0]

    mesh = parallel.data_mesh("batch", shape=(1,), devices=jax.local_devices()[:1])
    specs = (by_sample(outputs), by_sample(batch), jax.tree.map(lambda _: P(), state))
    probe = jax.shard_map(per_device, mesh=mesh, in_specs=specs, out_specs=P())
    try:
        jax.eval_shape(probe, outputs, batch, state)
    except ValueError:
        return False
    return True


@functools.cache
def supported_exchanges(name: str) -> tuple[str, ...]:
    """The trainer's exchanges (`TRAINER_EXCHANGES`) that objective `name`'s loss implements."""
    objective = get_objective(name)
    if not _traces_with(objective, TRAINER_EXCHANGES[0]):  # the default must work: else a broken record
        raise AssertionError(f"objective {name!r} does not trace with exchange={TRAINER_EXCHANGES[0]!r}")
    return tuple(e for e in TRAINER_EXCHANGES if e == TRAINER_EXCHANGES[0] or _traces_with(objective, e))


# --------------------------------------------------------------------------------------------
# The README's table of objectives.


def _default_text(value) -> str:
    return "None" if isinstance(value, NoneDefault) else repr(value)


def _state_text(objective: Objective) -> str:
    if objective.init_state is None:
        return "—"
    state = jax.eval_shape(lambda: objective.init_state(objective.settings({}), 1))
    return f"`{type(state).__name__}` per sample"


def _inputs_text(objective: Objective) -> str:
    parts = [f"`batch[{k!r}]`" for k in objective.batch_keys]
    parts += [f"`{key}` → text tower → `{out}`" for out, key in objective.text_inputs.items()]
    if objective.views:
        parts.append("`local_image`, `local_tokens` (`data.local_views`) → `encode_views`")
    return ", ".join(parts) or "—"


def objective_table() -> str:
    """The README's objective table, rendered from `REGISTRY` (Markdown)."""
    lines = [
        "| objective | loss function | model | exchanges | state | extra inputs | config keys (defaults) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, objective in REGISTRY.items():
        keys = {k: v for k, v in objective.config_defaults().items() if k not in ("name", "exchange")}
        cells = (
            f"`{name}`",
            " + ".join(f"`{fn.__name__}`" for fn in objective.functions),
            f"`{objective.model}`" if objective.model else "any",
            ", ".join(supported_exchanges(name)),
            _state_text(objective),
            _inputs_text(objective),
            ", ".join(f"`{k}={_default_text(v)}`" for k, v in keys.items()) or "—",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
