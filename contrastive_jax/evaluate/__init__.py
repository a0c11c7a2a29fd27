"""Evaluators: zero-shot classification, retrieval recall@K and counting accuracy.

`evaluate_model(model, config, tokenizer=...)` runs all that apply to the config's dataset;
the metric functions work on any embeddings; `evaluate_tfds` runs zero-shot
classification / retrieval on any prepared TFDS dataset (`data.open_eval_source`);
`evaluators_from_config(config.evals)` (or `read_suite(FILE)`) builds `Evaluator`s, one dataset /
split / kind each, whose `run(model, tokenizer, config)` gives flat metrics for a training loop.
"""

from contrastive_jax.evaluate._evaluator import KINDS, Evaluator, evaluators_from_config, read_suite
from contrastive_jax.evaluate._metrics import (
    class_embeddings,
    counting_accuracy,
    retrieval_recall,
    retrieval_recall_grouped,
    zero_shot_accuracy,
    zero_shot_topk,
)
from contrastive_jax.evaluate._run import Encoders, embed_split, evaluate_model, zero_shot
from contrastive_jax.evaluate._tfds import (
    embed_images,
    embed_texts,
    evaluate_tfds,
    retrieval_tfds,
    zero_shot_tfds,
)

__all__ = [
    "KINDS",
    "Evaluator",
    "evaluators_from_config",
    "read_suite",
    "Encoders",
    "embed_images",
    "embed_texts",
    "evaluate_tfds",
    "retrieval_recall_grouped",
    "retrieval_tfds",
    "zero_shot_tfds",
    "zero_shot_topk",
    "class_embeddings",
    "counting_accuracy",
    "embed_split",
    "evaluate_model",
    "retrieval_recall",
    "zero_shot",
    "zero_shot_accuracy",
]
