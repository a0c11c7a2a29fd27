"""Shared defaults for the training configs (each config file's `get_config` starts here)."""

import ml_collections

from contrastive_jax import data, models, train

# Per embedded dataset: image size and the default preset of the tiny CPU models.
DATASETS = {
    "shapes_count": dict(image_size=64, context_length=16),
    "digits_captions": dict(image_size=32, context_length=16),
}


def base_config(loss: str = "clip", dataset: str = "shapes_count", model: str = "clip", preset: str = "tiny"):
    """A complete config for `loss` on `dataset`: CPU-sized unless the caller overrides it."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown embedded dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 400  # ~4 minutes on a 2-core CPU for the tiny CLIP
    c.batch_size = 128
    c.log_every = 10
    c.checkpoint_every = 100
    c.keep_checkpoints = 3
    # A finished run's workdir or an experiments/convert.py directory: its model and parameters
    # start this run (fine-tuning). None: random initialisation.
    c.init_from = ml_collections.FieldReference(None, field_type=str)
    # Devices: the batch splits over data x fsdp; parameters and optimizer state over fsdp
    # (-1: all remaining devices). fsdp = 1 is plain data parallelism.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))

    # The input pipeline's options (shards, workers, augmentation, ...) with their defaults:
    # contrastive_jax/data/_input.py, DATA_DEFAULTS.
    c.data = data.with_data_defaults(
        dict(name=dataset, builder_config="default", tokenizer="word", **DATASETS[dataset])
    )
    c.model = models.model_config(
        preset,
        model,
        image_size=DATASETS[dataset]["image_size"],
        context_length=DATASETS[dataset]["context_length"],
    )
    # The objective's own settings and defaults come from its record (contrastive_jax/train/_objective.py).
    c.loss = train.loss_config(loss)
    c.optim = ml_collections.ConfigDict(
        dict(
            lr=2e-3,
            warmup_steps=50,
            weight_decay=0.1,
            b1=0.9,
            b2=0.98,
            eps=1e-6,
            grad_clip=1.0,
            final_lr_fraction=0.0,
        )
    )
    c.eval = ml_collections.ConfigDict(dict(batch_size=500, questions=(), max_examples=0))
    c.eval.questions = {"shapes_count": ("color", "shape", "count"), "digits_captions": ("digit",)}[dataset]
    # The dataset whose zero-shot prompts the questions use: still this one when its records come
    # from shards written by experiments/make_shards.py (config.data.name=webdataset).
    c.eval.prompts = dataset
    # Recipes (grad_accum_steps, ema_decay, distill, model.lock_image/lock_text,
    # model.vision.patch_dropout, init_from_image_size/context_length) at their defaults:
    # contrastive_jax/train/_recipes.py, RECIPE_DEFAULTS.
    return train.with_recipe_defaults(c)
