"""Slow float64 loop references for clip-rocket's objectives (CL2L, BarLIP, SiamLIP, SwALIP, Sinkhorn).

Written from the authors' code (github.com/facebookresearch/clip-rocket @ebd9e5863cae, losses.py), in
its own structure: per-modality sums of cross-entropies, explicit soft targets, the Sinkhorn iterations
in the exponential domain with the prototype × sample orientation of the code, and element loops.
They do not normalise their inputs except where the authors' loss is applied to raw outputs
(SiamLIP, which normalises inside, as the library's function does).
"""

from __future__ import annotations

import math

import numpy as np


def _dot(u, v):
    return float(np.dot(np.asarray(u, np.float64), np.asarray(v, np.float64)))


def _cross_entropy(row, target, smoothing=0.0):
    """−Σ_c q_c log softmax(row)_c with q = (1−ε)·onehot(target) + ε/K (PyTorch's label_smoothing)."""
    top = max(row)
    log_norm = top + math.log(sum(math.exp(v - top) for v in row))
    k = len(row)
    return -sum(((1 - smoothing) * (c == target) + smoothing / k) * (row[c] - log_norm) for c in range(k))


def _direction(anchors, candidates, scale, smoothing):
    """Mean over anchors of the CE of picking their own candidate among all (one direction of CLIP)."""
    b = len(anchors)
    return (
        sum(
            _cross_entropy([scale * _dot(anchors[i], candidates[j]) for j in range(b)], i, smoothing)
            for i in range(b)
        )
        / b
    )


def cl2l(z_image, z_text, h_image, h_text, scale, local_scale, smoothing, reduction="mean"):
    """The code's CL2LLoss: per-modality weighted means of the global CE and the n² local CEs."""
    n = len(h_image)
    image_global = _direction(z_image, z_text, scale, 0.0)
    text_global = _direction(z_text, z_image, scale, 0.0)
    image_local = [_direction(h, h_text[i], local_scale, smoothing) for i in range(n) for h in h_image]
    text_local = [_direction(h, h_image[i], local_scale, smoothing) for i in range(n) for h in h_text]
    image_side = (image_global + (sum(image_local) / len(image_local) if n else 0.0) * n) / (1 + n)
    text_side = (text_global + (sum(text_local) / len(text_local) if n else 0.0) * n) / (1 + n)
    return (image_side + text_side) / 2 * (2 if reduction == "sum" else 1)


def _barlow(v_image, v_text, lam, scale):
    v_image, v_text = np.asarray(v_image, np.float64), np.asarray(v_text, np.float64)
    n, d = v_image.shape
    total = 0.0
    for i in range(d):
        for j in range(d):
            corr = sum(v_image[k, i] * v_text[k, j] for k in range(n)) / n
            total += (1 - corr) ** 2 if i == j else lam * corr**2
    return scale * total


def barlip(v_image, v_text, v_image_local=(), v_text_local=(), lam=5e-3, scale=0.025):
    """The code's BarLIPLoss term: mean of the global pair's and every local pair's Barlow loss."""
    terms = [_barlow(v_image, v_text, lam, scale)]
    terms += [_barlow(a, b, lam, scale) for a in v_image_local for b in v_text_local]
    return sum(terms) / len(terms)


def _negative_cosine(p, v):
    total = 0.0
    for pi, vi in zip(p, v):
        total += _dot(pi, vi) / (max(math.sqrt(_dot(pi, pi)), 1e-12) * max(math.sqrt(_dot(vi, vi)), 1e-12))
    return 2 - 2 * total / len(p)


def siamlip(p_image, p_text, v_image, v_text, p_image_local=(), p_text_local=(), v_image_local=(),
            v_text_local=()):  # fmt: skip
    terms = [_negative_cosine(p_image, v_text), _negative_cosine(p_text, v_image)]
    terms += [_negative_cosine(p, v) for p in p_image_local for v in v_text_local]
    terms += [_negative_cosine(p, v) for p in p_text_local for v in v_image_local]
    return sum(terms) / len(terms)


def sinkhorn(shards, epsilon=0.05, iters=3):
    """The code's sinkhorn_knopp on logits split by rows over len(shards) workers (all_reduce = Σ over
    shards). Each shard is `[b, K]`; returns the `[b, K]` targets of every shard, concatenated."""
    q = [np.exp(np.asarray(s, np.float64).T / epsilon) for s in shards]  # each K × b
    k, total_b = q[0].shape[0], sum(x.shape[1] for x in q)
    total = sum(float(x[p, s]) for x in q for p in range(k) for s in range(x.shape[1]))
    q = [x / total for x in q]
    for _ in range(iters):
        per_prototype = [sum(float(x[p, s]) for x in q for s in range(x.shape[1])) for p in range(k)]
        for x in q:
            for p in range(k):
                x[p, :] /= per_prototype[p] * k
        for x in q:
            for s in range(x.shape[1]):
                x[:, s] /= sum(float(x[p, s]) for p in range(k)) * total_b
    return np.concatenate([x.T * total_b for x in q])


def _soft_cross_entropy(logits, targets):
    total = 0.0
    for row, target in zip(logits, targets):
        top = max(row)
        log_norm = top + math.log(sum(math.exp(v - top) for v in row))
        total -= sum(t * (v - log_norm) for t, v in zip(target, row))
    return total / len(logits)


def swalip_targets(h_image, h_text, epsilon=0.05, iters=3):
    """`(image targets, text targets)`, each indexed `[a][b]` as the code's lists of lists."""
    cos = lambda u, v: [[_dot(ui, vj) for vj in v] for ui in u]
    image = [[sinkhorn([cos(h_image[a], h_text[b])], epsilon, iters) for b in range(2)] for a in range(2)]
    text = [[sinkhorn([cos(h_text[a], h_image[b])], epsilon, iters) for b in range(2)] for a in range(2)]
    return image, text


def swalip(h_image, h_text, local_scale, epsilon=0.05, iters=3, targets=None):
    """The code's SwALIPLoss term; `targets` (from `swalip_targets`) held fixed if given."""
    image_t, text_t = swalip_targets(h_image, h_text, epsilon, iters) if targets is None else targets
    total = 0.0
    for a in range(2):
        for b in range(2):
            image_logits = [[local_scale * _dot(u, v) for v in h_text[b]] for u in h_image[a]]
            text_logits = [[local_scale * _dot(u, v) for v in h_image[b]] for u in h_text[a]]
            total += (
                _soft_cross_entropy(image_logits, image_t[1 - a][1 - b])
                + _soft_cross_entropy(text_logits, text_t[1 - a][1 - b])
            ) / 2
    return total / 4
