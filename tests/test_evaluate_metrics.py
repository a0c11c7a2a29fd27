"""Evaluation metrics against brute-force loops and hand-made cases."""

import numpy as np
import pytest

from contrastive_jax.evaluate import _metrics as metrics


def unit(rng, n, d):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_zero_shot_accuracy_hand_case():
    classes = np.eye(3)
    images = np.array([[1, 0.1, 0], [0, 0, 1], [0.2, 0.9, 0], [1, 0, 0]])
    assert metrics.zero_shot_accuracy(images, classes, np.array([0, 2, 1, 1])) == 0.75
    with pytest.raises(ValueError):
        metrics.zero_shot_accuracy(images, classes, np.array([0, 3, 1, 1]))


def test_class_embeddings_average_then_normalise():
    emb = metrics.class_embeddings([np.array([[1.0, 0], [0, 1.0]]), np.array([[0, -1.0]])])
    np.testing.assert_allclose(emb, [[2**-0.5, 2**-0.5], [0, -1]])


def test_retrieval_recall_matches_a_loop():
    rng = np.random.default_rng(0)
    images, texts = unit(rng, 40, 6), unit(rng, 40, 6)
    texts[:10] = images[:10] + 0.01  # some easy pairs
    got = metrics.retrieval_recall(images, texts, ks=(1, 5))
    for k in (1, 5):
        hits = 0
        for i in range(40):
            order = sorted(range(40), key=lambda j: -float(images[i] @ texts[j]))
            hits += i in order[:k]
        assert got[f"image_to_text_r@{k}"] == pytest.approx(hits / 40)


def test_retrieval_counts_same_caption_as_correct():
    images = np.eye(3)
    texts = np.array([[0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]])  # texts 0 and 1 swapped...
    assert metrics.retrieval_recall(images, texts, ks=(1,))["image_to_text_r@1"] == pytest.approx(1 / 3)
    # ...but if they are the same caption, retrieving either is right.
    assert metrics.retrieval_recall(images, texts, ks=(1,), keys=["a", "a", "b"])["image_to_text_r@1"] == 1.0


def test_counting_accuracy():
    images = np.array([[1.0, 0], [0, 1.0]])
    true = np.array([[0.9, 0.1], [0.1, 0.9]])
    cf = np.array([[0.1, 0.9], [0.0, 1.0]])
    assert metrics.counting_accuracy(images, true, cf) == 0.5
