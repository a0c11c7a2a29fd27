"""The training objective: which loss a config asks for, applied to a model's outputs.

`compute_loss` runs inside the per-device function of the train step (under `jax.shard_map`
when there are several devices) and passes `axis_name`/`exchange` on, so the loss is the
global-batch loss with exact gradients. Every metric it returns is already global.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _vma, losses

OBJECTIVES = ("clip", "siglip", "coca", "isogclr", "sogclr", "clip_count", "nt_xent", "dcl")


def needs_loss_state(name: str) -> bool:
    return name in ("isogclr", "sogclr")


def init_loss_state(config, num_samples: int):
    """Per-sample loss state for (i)SogCLR, else an empty dict."""
    if not needs_loss_state(config.name):
        return {}
    return losses.isogclr_init(
        num_samples, tau_init=config.tau_init, tau_min=config.tau_min, tau_max=config.tau_max
    )


def _counting_term(outputs):
    """ "Teaching CLIP to Count": prefer the true caption over the wrong-count one, per image.

    `outputs["cf_text_emb"]` holds the counterfactual captions' embeddings (the train step
    encodes `batch["cf_tokens"]` with the text tower).
    """
    if "cf_text_emb" not in outputs:
        raise ValueError(
            "loss 'clip_count' needs outputs['cf_text_emb'], the counterfactual captions' embeddings"
        )
    return losses.counting_loss(outputs["image_emb"], outputs["text_emb"], outputs["cf_text_emb"])


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


def compute_loss(config, outputs, batch, loss_state, *, axis_name=None):
    """Returns `(loss, metrics, new_loss_state)` for `config.name` (see `OBJECTIVES`).

    Args:
      config: the `loss` section of a training config (name, exchange, block_size, weights...).
      outputs: the model's output dict (`image_emb`, `text_emb`, `logit_scale`, ...; for
        "clip_count" also `cf_text_emb`).
      batch: this device's rows of the batch.
      loss_state: per-sample state (iSogCLR) or `{}`.
      axis_name: the mesh axes the batch is split over when running under shard_map.
    """
    image, text = outputs["image_emb"], outputs["text_emb"]
    common = dict(axis_name=axis_name, exchange=config.exchange)
    block = dict(block_size=config.get("block_size", None))
    metrics = {}
    name = config.name
    if name == "clip":
        fixed = config.get("fixed_temperature", None)  # None: the model's learned logit scale
        if fixed is not None and not fixed > 0:
            raise ValueError(f"loss.fixed_temperature must be positive or None, got {fixed}")
        scale = outputs["logit_scale"] if fixed is None else jnp.float32(1.0 / fixed)
        loss = losses.clip_loss(image, text, scale, label_smoothing=config.label_smoothing, **common, **block)
    elif name == "siglip":
        loss = losses.siglip_loss(
            image, text, outputs["logit_scale"], outputs["logit_bias"], **common, **block
        )
        metrics["logit_bias"] = outputs["logit_bias"]
    elif name == "coca":
        loss, parts = losses.coca_loss(
            image,
            text,
            outputs["logit_scale"],
            outputs["caption_logits"],
            outputs["caption_labels"],
            caption_weight=config.caption_weight,
            contrastive_weight=config.contrastive_weight,
            **common,
            **block,
        )
        metrics.update(contrastive=parts["contrastive"], caption=parts["caption"])
    elif name in ("isogclr", "sogclr"):
        loss, loss_state = losses.isogclr_loss(
            image,
            text,
            batch["index"],
            loss_state,
            learn_temperature=name == "isogclr",
            gamma=config.gamma,
            rho=config.rho,
            eta=config.eta,
            beta=config.beta,
            **common,
        )
        metrics["mean_tau"] = _mean_seen_tau(loss_state, axis_name)
    elif name == "clip_count":
        contrastive = losses.clip_loss(image, text, outputs["logit_scale"], **common, **block)
        counting = _counting_term(outputs)
        if axis_name is not None:
            counting = jax.lax.pmean(counting, axis_name)
        loss = contrastive + config.count_weight * counting
        metrics.update(contrastive=contrastive, counting=counting)
    elif name in ("nt_xent", "dcl"):  # image and text as SimCLR's two views, fixed temperature
        fn = losses.nt_xent_loss if name == "nt_xent" else losses.dcl_loss
        loss = fn(image, text, temperature=config.temperature, **common)
    else:
        raise ValueError(f"unknown loss {name!r}; choose one of {OBJECTIVES}")
    metrics["loss"] = loss
    metrics["logit_scale"] = outputs["logit_scale"]
    return loss, metrics, loss_state
