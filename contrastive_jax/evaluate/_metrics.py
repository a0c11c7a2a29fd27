"""Evaluation metrics on embeddings: zero-shot accuracy, retrieval recall@K, counting accuracy.

Pure NumPy on already-computed, L2-normalised embeddings, so they are easy to test and to call
on embeddings from any model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_embeddings(prompt_embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """Prompt ensembling: the re-normalised mean embedding of each class's prompts.

    Args:
      prompt_embeddings: one `f[P_c, E]` array of normalised prompt embeddings per class.

    Returns:
      `f[C, E]`, unit rows.

    References:
      Radford et al. 2021 (CLIP), §3.1.4 "Prompt engineering and ensembling".
    """
    means = np.stack([np.asarray(e, np.float64).mean(axis=0) for e in prompt_embeddings])
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def zero_shot_accuracy(image_emb: np.ndarray, class_emb: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of images whose most similar class embedding is their label's.

    Args:
      image_emb: `f[N, E]`; class_emb: `f[C, E]`; labels: `int[N]` class indices into class_emb.
    """
    labels = np.asarray(labels)
    if image_emb.shape[0] != labels.shape[0]:
        raise ValueError(f"{image_emb.shape[0]} images but {labels.shape[0]} labels")
    if labels.min() < 0 or labels.max() >= class_emb.shape[0]:
        raise ValueError(
            f"labels must lie in [0, {class_emb.shape[0]}), got [{labels.min()}, {labels.max()}]"
        )
    predictions = np.argmax(np.asarray(image_emb) @ np.asarray(class_emb).T, axis=1)
    return float(np.mean(predictions == labels))


def retrieval_recall(
    image_emb: np.ndarray, text_emb: np.ndarray, ks: Sequence[int] = (1, 5, 10), keys: Sequence | None = None
) -> dict[str, float]:
    """Image→text and text→image recall@K for pairs `(image_i, text_i)`.

    A retrieved item is correct if it is the paired one or shares its `keys` entry (e.g. the
    same caption string, or the same image id when an image has several captions), so repeated
    captions do not count as misses. Ties in score are resolved against the query (the correct
    item must strictly beat the K-th incorrect one).

    Returns:
      `{"image_to_text_r@K": ..., "text_to_image_r@K": ...}` for each K, fractions in [0, 1].
    """
    image_emb, text_emb = np.asarray(image_emb, np.float64), np.asarray(text_emb, np.float64)
    n = image_emb.shape[0]
    keys = np.arange(n) if keys is None else np.asarray(keys)
    correct = keys[:, None] == keys[None, :]
    sim = image_emb @ text_emb.T
    results = {}
    for name, scores in (("image_to_text", sim), ("text_to_image", sim.T)):
        best_correct = np.max(np.where(correct, scores, -np.inf), axis=1)
        # rank of the best correct item = number of incorrect items scoring at least as high
        rank = np.sum((scores >= best_correct[:, None]) & ~correct, axis=1)
        for k in ks:
            results[f"{name}_r@{k}"] = float(np.mean(rank < k))
    return results


def counting_accuracy(image_emb: np.ndarray, text_emb: np.ndarray, counterfactual_emb: np.ndarray) -> float:
    """Fraction of images more similar to their true caption than to the wrong-count caption.

    References:
      Paiss et al., "Teaching CLIP to Count to Ten", ICCV 2023 (the CountBench protocol compares
      the true count against other counts; here one counterfactual per image).
    """
    true_sim = np.sum(np.asarray(image_emb) * np.asarray(text_emb), axis=1)
    cf_sim = np.sum(np.asarray(image_emb) * np.asarray(counterfactual_emb), axis=1)
    return float(np.mean(true_sim > cf_sim))


def zero_shot_topk(
    image_emb: np.ndarray, class_emb: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """`{"top1": ..., "top5": ...}`: fractions of images whose label is among the K best classes.

    A label's rank counts the classes scoring higher, and equal-scoring classes of lower index
    (so top-1 agrees with `zero_shot_accuracy`'s argmax). K larger than the class count is left out.
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= class_emb.shape[0]):
        raise ValueError(f"labels must lie in [0, {class_emb.shape[0]})")
    scores = np.asarray(image_emb, np.float64) @ np.asarray(class_emb, np.float64).T
    label_score = scores[np.arange(len(labels)), labels][:, None]
    lower_index = np.arange(scores.shape[1])[None, :] < labels[:, None]
    rank = np.sum((scores > label_score) | ((scores == label_score) & lower_index), axis=1)
    return {f"top{k}": float(np.mean(rank < k)) for k in ks if k <= scores.shape[1]}


def retrieval_recall_grouped(
    image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@K with several captions per image (the COCO / Flickr30k protocol).

    Image→text: an image is a hit if any of its captions ranks in the top K of all `M` texts;
    text→image: a caption is a hit if its image ranks in the top K of all `N` images. Ties count
    against the query, as in `retrieval_recall`.

    Args:
      image_emb: `f[N, E]`; text_emb: `f[M, E]`; text_image: `int[M]`, the image of each caption.
    """
    image_emb, text_emb = np.asarray(image_emb, np.float64), np.asarray(text_emb, np.float64)
    text_image = np.asarray(text_image)
    image_ids = np.arange(image_emb.shape[0])
    results = {}
    for name, queries, items, query_keys, item_keys in (
        ("image_to_text", image_emb, text_emb, image_ids, text_image),
        ("text_to_image", text_emb, image_emb, text_image, image_ids),
    ):
        rank = _ranks(queries, items, query_keys, item_keys)
        for k in ks:
            results[f"{name}_r@{k}"] = float(np.mean(rank < k))
    return results


def _ranks(queries, items, query_keys, item_keys, chunk: int = 1024) -> np.ndarray:
    """Per query: the incorrect items scoring at least as high as its best correct one."""
    ranks = []
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ items.T
        correct = query_keys[start : start + chunk, None] == item_keys[None, :]
        best_correct = np.max(np.where(correct, scores, -np.inf), axis=1)
        ranks.append(np.sum((scores >= best_correct[:, None]) & ~correct, axis=1))
    return np.concatenate(ranks)
