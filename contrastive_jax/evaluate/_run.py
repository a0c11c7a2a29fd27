"""Evaluate a model on a dataset split: embeddings once, then every evaluator on them."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from contrastive_jax import data
from contrastive_jax.evaluate import _metrics


class Encoders:
    """`encode_image` / `encode_text` of an NNX model, jitted once (eager NNX calls are slow).

    `encode_image` takes uint8 pixels, as the input pipeline gives them (normalised inside the
    jitted function with `pixel_mean` / `pixel_std`, `data.normalize_images`), or float images
    already normalised. Encoders of models of the same structure and pixel statistics share their
    jitted functions, so evaluating a training model every N steps traces them once.
    """

    def __init__(self, model, *, pixel_mean=data.PIXEL_MEAN, pixel_std=data.PIXEL_STD):
        graphdef, state = nnx.split(model)
        self._state = state
        self._image, self._text = _jitted_encoders(graphdef, _key(pixel_mean), _key(pixel_std))

    def encode_image(self, images):
        return np.asarray(self._image(self._state, images))

    def encode_text(self, tokens):
        return np.asarray(self._text(self._state, tokens))


def _key(stat) -> tuple[float, ...]:
    """A mean / std (scalar or per channel) as a hashable tuple of its float32 values."""
    return tuple(np.asarray(stat, np.float32).reshape(-1).tolist())


@functools.lru_cache(maxsize=16)
def _jitted_encoders(graphdef, pixel_mean: tuple, pixel_std: tuple):
    def image(state, x):
        if x.dtype == jnp.uint8:
            x = data.normalize_images(x, pixel_mean, pixel_std)
        return nnx.merge(graphdef, state).encode_image(x)

    return jax.jit(image), jax.jit(lambda state, tokens: nnx.merge(graphdef, state).encode_text(tokens))


# Which batch field holds the label of each zero-shot question, and the value of class 0.
QUESTION_LABELS = {"color": ("color", 0), "shape": ("shape", 0), "count": ("count", 1), "digit": ("label", 0)}


def embed_split(model, config, tokenizer, split: str = "test") -> dict[str, np.ndarray]:
    """Image/text (and counterfactual-text) embeddings plus labels of a whole split, in order.

    `model` is an `Encoders` (or anything with its methods taking the pipeline's uint8 images)."""
    dataset = data.input_from_config(
        config.data, split, batch_size=config.eval.batch_size, tokenizer=tokenizer
    ).dataset
    chunks: dict[str, list] = {}
    limit = config.eval.get("max_examples", 0) or None
    seen = 0
    for batch in dataset:
        out = {
            "image_emb": model.encode_image(batch["image"]),
            "text_emb": model.encode_text(batch["tokens"]),
        }
        if "cf_tokens" in batch:
            out["cf_emb"] = model.encode_text(batch["cf_tokens"])
        out.update({k: v for k, v in data.host_fields(batch)[0].items() if k != "image"})
        for key, value in out.items():
            chunks.setdefault(key, []).append(np.asarray(value))
        seen += len(batch["tokens"])
        if limit and seen >= limit:
            break
    arrays = {k: np.concatenate(v) for k, v in chunks.items()}
    return {k: v[:limit] for k, v in arrays.items()} if limit else arrays


def zero_shot(model, tokenizer, dataset_name: str, question: str, context_length: int, image_emb, labels):
    """Zero-shot accuracy of `question`, with each class embedded as its prompts' mean."""
    prompts = data.zero_shot_prompts(dataset_name, question)
    class_embs = [
        np.asarray(model.encode_text(tokenizer.encode(list(p), context_length))) for p in prompts.values()
    ]
    _, first_value = QUESTION_LABELS[question]
    return _metrics.zero_shot_accuracy(image_emb, _metrics.class_embeddings(class_embs), labels - first_value)


def evaluate_model(model, config, *, tokenizer, split: str = "test") -> dict[str, float]:
    """Zero-shot accuracy per question, retrieval recall@1/5/10 and (if available) counting accuracy."""
    mean, std = data.pixel_stats(config.data)
    model = Encoders(model, pixel_mean=mean, pixel_std=std)
    emb = embed_split(model, config, tokenizer, split)
    results = {"num_examples": int(len(emb["image_emb"]))}
    for question in config.eval.questions:
        label_key, _ = QUESTION_LABELS[question]
        results[f"zero_shot/{question}"] = zero_shot(
            model,
            tokenizer,
            config.eval.get("prompts", config.data.name),  # whose caption grammar the prompts follow
            question,
            config.data.context_length,
            emb["image_emb"],
            emb[label_key],
        )
    caption_keys = [row.tobytes() for row in emb["tokens"]]  # identical captions count as correct
    results.update(_metrics.retrieval_recall(emb["image_emb"], emb["text_emb"], keys=caption_keys))
    if "cf_emb" in emb:
        results["counting_accuracy"] = _metrics.counting_accuracy(
            emb["image_emb"], emb["text_emb"], emb["cf_emb"]
        )
    return results
