"""A frozen teacher for distillation: loaded from a run or converted directory, run in the step.

`config.distill.teacher=DIR` names a finished run's workdir or an experiments/convert.py
directory; its model may be another architecture and image size than the student's, but it
must read the student's tokens (same tokenizer and context length). The step feeds it the
student's batch: uint8 pixels normalised with the teacher's own mean and std, resized on
device when its image size differs; the teacher's embeddings and logit scale join the
student's outputs as `teacher_*`, under `stop_gradient`, and `losses.distill_clip_loss` adds
the distillation term (open_clip's `DistillClipLoss`).
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from contrastive_jax import data, parallel
from contrastive_jax._errors import ConfigError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A teacher's structure (its parameters travel to the step as an argument, not a constant)."""

    graphdef: object
    rest: object
    image_size: int
    pixel_stats: tuple
    weight: float

    def outputs(self, params, batch, *, pixel_stats) -> dict:
        """`teacher_image_emb`, `teacher_text_emb`, `teacher_logit_scale` for the student's batch."""
        model = nnx.merge(self.graphdef, jax.lax.stop_gradient(params), self.rest)
        images = batch["image"]
        if images.dtype == jnp.uint8:
            images = data.normalize_images(images, *self.pixel_stats)
        else:  # already normalised with the student's statistics: back to pixels, then the teacher's
            mean, std = (jnp.asarray(x, jnp.float32) for x in pixel_stats)
            t_mean, t_std = (jnp.asarray(x, jnp.float32) for x in self.pixel_stats)
            images = ((images * std + mean) - t_mean) / t_std
        if images.shape[1] != self.image_size:
            shape = (images.shape[0], self.image_size, self.image_size, images.shape[-1])
            images = jax.image.resize(images, shape, method="bilinear", antialias=True)
        image_emb = model.encode_image(images)
        text_emb = model.encode_text(batch["tokens"])
        return jax.lax.stop_gradient(
            {
                "teacher_image_emb": image_emb,
                "teacher_text_emb": text_emb,
                "teacher_logit_scale": model.logit_scale(),
            }
        )


def make_teacher(config, run, tokenizer, mesh, *, fsdp_axis: str):
    """`(Teacher, params)` from `run = (teacher_config, model, step, teacher_tokenizer)` (`load_run`
    of `config.distill.teacher`), its parameters laid out like the student's (on `fsdp_axis`).

    Raises:
      ConfigError: the teacher reads other tokens than the student's `tokenizer` gives (another
        vocabulary, or another context length).
    """
    directory = config.distill.teacher
    teacher_config, model, step, teacher_tokenizer = run
    length = int(config.data.context_length)
    if int(teacher_config.data.context_length) != length:
        raise ConfigError(
            f"config.distill.teacher={directory!r} reads {teacher_config.data.context_length} tokens per "
            f"caption but the student {length}: the teacher sees the student's tokens, so both must match"
        )
    probe = ["a photo of two red circles", "three blue squares"]
    same = teacher_tokenizer.vocab_size == tokenizer.vocab_size and (
        np.array_equal(teacher_tokenizer.encode(probe, length), tokenizer.encode(probe, length))
    )
    if not same:
        raise ConfigError(
            f"config.distill.teacher={directory!r} uses tokenizer {teacher_config.data.get('tokenizer')!r}, "
            f"which encodes captions differently from the student's {config.data.get('tokenizer')!r}: the "
            "teacher sees the student's tokens, so both must use the same tokenizer"
        )
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.device_put(params, parallel.fsdp_shardings(params, mesh, axis=fsdp_axis))
    rest = jax.device_put(rest, NamedSharding(mesh, P()))
    teacher = Teacher(
        graphdef=graphdef,
        rest=rest,
        image_size=int(teacher_config.data.image_size),
        pixel_stats=data.pixel_stats(teacher_config.data),
        weight=float(config.distill.get("weight", 1.0)),
    )
    log.info("Distilling from %s (step %d), weight %g", directory, step, teacher.weight)
    return teacher, params
