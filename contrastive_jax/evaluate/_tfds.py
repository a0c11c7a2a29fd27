"""Zero-shot classification and image↔text retrieval on any prepared TFDS dataset.

Images go through `data.make_dataset` (centre square, then the run's resize and pixel mean/std),
so a model sees them as in training; a converted model's `data.mean`/`data.std` are honoured.
"""

from __future__ import annotations

import numpy as np

from contrastive_jax.evaluate import _metrics
from contrastive_jax.evaluate._run import Encoders


def _encoders(model):
    from flax import nnx

    return Encoders(model) if isinstance(model, nnx.Module) else model


def _padded(fn, batch: np.ndarray, size: int) -> np.ndarray:
    """`fn` on `batch` padded to `size` rows (one compiled shape), trimmed back."""
    n = len(batch)
    if n < size:
        batch = np.concatenate([batch, np.repeat(batch[-1:], size - n, axis=0)])
    return np.asarray(fn(batch))[:n]


def embed_images(model, tokenizer, config, source, *, batch_size: int = 256, max_examples: int = 0):
    """`(image_emb f[N, E], labels int[N] or None, indices int[N])` of an `EvalSource`, in order."""
    from contrastive_jax import data

    model = _encoders(model)
    mean, std = data.pixel_stats(config.data)
    dataset = data.make_dataset(
        source,
        tokenizer=tokenizer,
        batch_size=batch_size,
        context_length=config.data.context_length,
        shuffle=False,
        num_epochs=1,
        drop_remainder=False,
        image_size=config.data.image_size,
        pixel_mean=mean,
        pixel_std=std,
    )
    embs, labels, indices = [], [], []
    for batch in dataset:
        embs.append(_padded(model.encode_image, batch["image"], batch_size))
        indices.append(batch["index"])
        if "label" in batch:
            labels.append(batch["label"])
        if max_examples and sum(map(len, indices)) >= max_examples:
            break
    limit = max_examples or None
    labels_out = np.concatenate(labels)[:limit] if labels else None
    return np.concatenate(embs)[:limit], labels_out, np.concatenate(indices)[:limit]


def embed_texts(model, tokenizer, texts, context_length: int, *, batch_size: int = 256) -> np.ndarray:
    """`f[len(texts), E]` normalised text embeddings, in batches of `batch_size`."""
    model = _encoders(model)
    chunks = [
        _padded(
            model.encode_text, tokenizer.encode(list(texts[i : i + batch_size]), context_length), batch_size
        )
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(chunks)


def zero_shot_tfds(
    model,
    tokenizer,
    config,
    source,
    *,
    templates: str = "openai",
    batch_size: int = 256,
    max_examples: int = 0,
) -> dict:
    """Zero-shot top-1 (and top-5 with ≥ 5 classes) accuracy on an `EvalSource` with class names.

    Each class is the re-normalised mean embedding of its prompts (`data.TEMPLATES[templates]`
    filled with the class name): CLIP's prompt ensembling (Radford et al. 2021, §3.1.4).
    """
    from contrastive_jax import data

    prompts = data.template_prompts(source.class_names, templates)
    flat = [p for name in source.class_names for p in prompts[name]]
    prompt_emb = embed_texts(model, tokenizer, flat, config.data.context_length, batch_size=batch_size)
    per_class = len(data.TEMPLATES[templates])
    class_emb = _metrics.class_embeddings(np.split(prompt_emb, len(source.class_names)))
    image_emb, labels, _ = embed_images(
        model, tokenizer, config, source, batch_size=batch_size, max_examples=max_examples
    )
    accuracy = _metrics.zero_shot_topk(image_emb, class_emb, labels, ks=(1, 5))
    return {
        "num_images": int(len(labels)),
        "num_classes": len(source.class_names),
        "templates": templates,
        "num_templates": per_class,
        **{f"zero_shot_{k}": v for k, v in accuracy.items()},
    }


def retrieval_tfds(model, tokenizer, config, source, *, batch_size: int = 256, max_examples: int = 0) -> dict:
    """Image↔text recall@1/5/10 on an `EvalSource` with captions (`retrieval_recall_grouped`:
    every caption of an image is a correct answer for it)."""
    image_emb, _, indices = embed_images(
        model, tokenizer, config, source, batch_size=batch_size, max_examples=max_examples
    )
    captions, text_image = [], []
    for row, index in enumerate(indices):
        for caption in source.captions(int(index)):
            captions.append(caption)
            text_image.append(row)
    text_emb = embed_texts(model, tokenizer, captions, config.data.context_length, batch_size=batch_size)
    return {
        "num_images": int(len(image_emb)),
        "num_captions": len(captions),
        **_metrics.retrieval_recall_grouped(image_emb, text_emb, np.asarray(text_image)),
    }


def evaluate_tfds(model, tokenizer, config, source, *, templates: str = "openai", **kwargs) -> dict:
    """`zero_shot_tfds` where the source has class names and `retrieval_tfds` where it has captions."""
    results = {}
    if source.class_names is not None:
        results["classification"] = zero_shot_tfds(
            model, tokenizer, config, source, templates=templates, **kwargs
        )
    if source.caption_key is not None:
        results["retrieval"] = retrieval_tfds(model, tokenizer, config, source, **kwargs)
    return results
