"""Zero-shot classification and image↔text retrieval on any prepared TFDS dataset.

Images go through `data.input_from_config` (centre square, the run's resize; uint8 normalised with
its pixel mean/std inside the jitted encoder), as in training's evaluation; a converted model's
`data.mean`/`data.std` are honoured.
"""

from __future__ import annotations

import numpy as np
from flax import nnx

from contrastive_jax import data
from contrastive_jax._errors import ConfigError, did_you_mean
from contrastive_jax.evaluate import _metrics
from contrastive_jax.evaluate._run import Encoders


class _Normalising:
    """A model that is not an NNX module (e.g. a stand-in) gets its images normalised on the host."""

    def __init__(self, model, mean, std):
        self._model, self._mean, self._std = model, mean, std

    def encode_image(self, images):
        images = np.asarray(images)
        if images.dtype == np.uint8:
            images = data.normalize_images(images, self._mean, self._std)
        return self._model.encode_image(images)

    def encode_text(self, tokens):
        return self._model.encode_text(tokens)


def _encoders(model, config=None):
    """`model` ready for the pipeline's uint8 images, normalised with the run's mean/std."""
    mean, std = data.pixel_stats(config.data) if config is not None else (data.PIXEL_MEAN, data.PIXEL_STD)
    if isinstance(model, (Encoders, _Normalising)):
        return model
    if isinstance(model, nnx.Module):
        return Encoders(model, pixel_mean=mean, pixel_std=std)
    return _Normalising(model, mean, std)


def _padded(fn, batch: np.ndarray, size: int) -> np.ndarray:
    """`fn` on `batch` padded to `size` rows (one compiled shape), trimmed back."""
    n = len(batch)
    if n < size:
        batch = np.concatenate([batch, np.repeat(batch[-1:], size - n, axis=0)])
    return np.asarray(fn(batch))[:n]


def embed_images(model, tokenizer, config, source, *, batch_size: int = 256, max_examples: int = 0):
    """`(image_emb f[N, E], labels int[N] or None, indices int[N])` of an `EvalSource`, in order."""
    model = _encoders(model, config)
    dataset = data.input_from_config(
        config.data, "test", batch_size=batch_size, tokenizer=tokenizer, source=source, training=False
    ).dataset
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


def _templates_of(source, templates: str | None) -> tuple[str, tuple[str, ...]]:
    """`(name, templates)`: the dataset's own templates when `templates` is None and it has them,
    else `data.TEMPLATES[templates or "openai"]`."""
    if templates is None and source.templates is not None:
        return source.prompts_from, tuple(source.templates)
    templates = templates or "openai"
    if templates not in data.TEMPLATES:
        raise ConfigError(f"unknown templates {templates!r}; {did_you_mean(templates, data.TEMPLATES)}")
    return templates, tuple(data.TEMPLATES[templates])


def zero_shot_tfds(
    model,
    tokenizer,
    config,
    source,
    *,
    templates: str | None = None,
    batch_size: int = 256,
    max_examples: int = 0,
) -> dict:
    """Zero-shot top-1 (and top-5 with ≥ 5 classes) accuracy on an `EvalSource` with class names.

    Each class is the re-normalised mean embedding of its prompts (the templates filled with the
    class name): CLIP's prompt ensembling (Radford et al. 2021, §3.1.4). `templates`: "openai"
    (80), "simple" (1), or None: the dataset's own (`source.templates`, shipped for the datasets
    of `data.shipped_datasets()`), else "openai". The result's "templates" names the set used.

    Raises:
      ConfigError: unknown `templates`, or images whose label is none of the classes (label -1:
        outside ImageNet-A's / -R's 200).
    """
    templates_name, template_list = _templates_of(source, templates)
    prompts = data.template_prompts(source.class_names, template_list)
    flat = [p for name in source.class_names for p in prompts[name]]
    prompt_emb = embed_texts(model, tokenizer, flat, config.data.context_length, batch_size=batch_size)
    class_emb = _metrics.class_embeddings(np.split(prompt_emb, len(source.class_names)))
    image_emb, labels, _ = embed_images(
        model, tokenizer, config, source, batch_size=batch_size, max_examples=max_examples
    )
    outside = int(np.sum(labels < 0))
    if outside:
        raise ConfigError(
            f"{outside} of {len(labels)} images have a label outside the {len(source.class_names)} "
            f"classes named for {source.prompts_from or 'this dataset'}"
        )
    accuracy = _metrics.zero_shot_topk(image_emb, class_emb, labels, ks=(1, 5))
    return {
        "num_images": int(len(labels)),
        "num_classes": len(source.class_names),
        "templates": templates_name,
        "num_templates": len(template_list),
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


def evaluate_tfds(model, tokenizer, config, source, *, templates: str | None = None, **kwargs) -> dict:
    """`zero_shot_tfds` where the source has class names and `retrieval_tfds` where it has captions."""
    results = {}
    if source.class_names is not None:
        results["classification"] = zero_shot_tfds(
            model, tokenizer, config, source, templates=templates, **kwargs
        )
    if source.caption_key is not None:
        results["retrieval"] = retrieval_tfds(model, tokenizer, config, source, **kwargs)
    return results
