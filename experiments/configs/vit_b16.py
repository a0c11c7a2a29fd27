"""CLIP ViT-B/16 on real image-text data: webdataset shards (the default) or a prepared TFDS set.

    python -m experiments.train --config experiments/configs/vit_b16.py --workdir DIR \
        --config.data.urls='/data/cc3m/{00000..00331}.tar' --config.data.eval_urls='/data/val/{00000..00003}.tar'
    python -m experiments.train --config experiments/configs/vit_b16.py:coco_captions --workdir DIR

Sizes follow CLIP's ViT-B/16 (Radford et al. 2021, Table 20) and open_clip's recipe (AdamW, lr 5e-4,
wd 0.2, β2 0.98, warm-up 10k steps, batch 32k in the paper; scale batch_size to your devices);
its training transform (RandomResizedCrop 0.9-1.0, bicubic) and CLIP's BPE tokenizer. Eight input
workers per host: set `--config.data.num_workers` to the cores a host can spare for decoding.
"""

import ml_collections

from contrastive_jax import data, models, train


def get_config(dataset: str = "webdataset"):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 100_000
    c.batch_size = 4096
    c.log_every = 100
    c.checkpoint_every = 2000
    c.keep_checkpoints = 3
    c.init_from = ml_collections.FieldReference(None, field_type=str)
    # Devices: the batch splits over data x fsdp; parameters and optimizer state over fsdp
    # (-1: all remaining devices). fsdp = 1 is plain data parallelism.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
    tfds = dataset not in ("webdataset", "parquet")
    c.data = data.with_data_defaults(
        dict(
            name=dataset or "webdataset",
            builder_config="",
            tokenizer="clip_bpe",
            image_size=224,
            context_length=77,
            image_key="image",
            caption_key="captions/text" if dataset == "coco_captions" else "",
            augment="rrc",
            num_workers=0 if tfds else 8,
        )
    )
    c.model = models.model_config("B/16", "clip", dtype="bfloat16")
    c.loss = train.loss_config("clip", block_size=4096)
    c.optim = ml_collections.ConfigDict(
        dict(
            lr=5e-4,
            warmup_steps=10_000,
            weight_decay=0.2,
            b1=0.9,
            b2=0.98,
            eps=1e-6,
            grad_clip=1.0,
            final_lr_fraction=0.0,
        )
    )
    c.eval = ml_collections.ConfigDict(dict(batch_size=1024, questions=(), max_examples=5000))
    return train.with_recipe_defaults(c)
