"""Evaluators: zero-shot classification, retrieval recall@K and counting accuracy.

`evaluate_model(model, config, tokenizer=...)` runs all that apply to the config's dataset;
the metric functions work on any embeddings.
"""

from contrastive_jax.evaluate._metrics import (
    class_embeddings,
    counting_accuracy,
    retrieval_recall,
    zero_shot_accuracy,
)
from contrastive_jax.evaluate._run import embed_split, evaluate_model, zero_shot

__all__ = [
    "class_embeddings",
    "counting_accuracy",
    "embed_split",
    "evaluate_model",
    "retrieval_recall",
    "zero_shot",
    "zero_shot_accuracy",
]
