"""Slow float64 loop references for CACR and GroCo (with the odd-even differentiable sort).

Written from the authors' code (JegZheng/CACR-SSL `small_scale_experiments/losses`, ninatu/learning_by_sorting
`losses/groco.py`, Felix-Petersen/diffsort `functional.py` + `networks.py`), not from the library: plain
per-sample Python loops over lists, one comparator at a time, the two BCE terms of GroCo each computed
as the code does. Arguments named `frozen` hold a constant copy of the inputs: the parts the losses
treat as constants for the gradient are read from it, so central differences w.r.t. the first argument
give the gradient with those parts stopped.
"""

from __future__ import annotations

import math

import numpy as np


def _vec(x):
    return np.asarray(x, np.float64)


def _sq_dist(u, v):
    diff = _vec(u) - _vec(v)
    return float(np.dot(diff, diff))


def cosine(u, v):
    """The authors' `cosine_similatity`: both rows scaled by 1 / max(‖·‖, 1e-8)."""
    u, v = _vec(u), _vec(v)
    return float(np.dot(u, v) / (max(np.linalg.norm(u), 1e-8) * max(np.linalg.norm(v), 1e-8)))


def dot(u, v):
    return float(np.dot(_vec(u), _vec(v)))


def _softmax(values):
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


# --------------------------------------------------------------------------------------------- CACR


def cacr_terms(views, alpha=1.0, beta=1.0, tau_pos=1.0, tau_neg=1.0, tau_plus=None, frozen=None):
    """`(L_CA, L_CR)` of the small-scale CACR code; `frozen` (a copy of `views`) fixes the weights."""
    views = [[_vec(row) for row in view] for view in views]
    weight_views = views if frozen is None else [[_vec(row) for row in view] for view in frozen]
    n_views, n = len(views), len(views[0])

    attraction = 0.0
    for q in range(n_views):  # every view is the query once; the others are its positives
        per_sample = 0.0
        for i in range(n):
            others = [v for v in range(n_views) if v != q]
            costs = [alpha * _sq_dist(views[q][i], views[v][i]) for v in others]
            weights = _softmax([tau_pos * _sq_dist(weight_views[q][i], weight_views[v][i]) for v in others])
            per_sample += sum(w * c for w, c in zip(weights, costs))
        attraction += per_sample / n
    attraction /= n_views

    repulsion, pairs = 0.0, 0
    for a in range(n_views):
        for b in range(a + 1, n_views):
            per_sample = 0.0
            for i in range(n):
                negs = [j for j in range(n) if j != i]
                costs = [-beta * _sq_dist(views[a][i], views[b][j]) for j in negs]
                weights = _softmax(
                    [-tau_neg * _sq_dist(weight_views[a][i], weight_views[b][j]) for j in negs]
                )
                r = sum(w * c for w, c in zip(weights, costs))
                if tau_plus is not None:
                    r = (r - tau_plus * _sq_dist(views[a][i], views[b][i])) / (1 - tau_plus)
                per_sample += r
            repulsion += per_sample / n
            pairs += 1
    return attraction, repulsion / pairs


def cacr(views, **kw):
    attraction, repulsion = cacr_terms(views, **kw)
    return attraction + repulsion


# ---------------------------------------------------------------------------------- odd-even sort


def diffsort_odd_even(u, steepness):
    """Soft ascending sort of one vector: `(values, P)` with `P[e][j]` the weight of input e at slot j."""
    values = [float(x) for x in u]
    n = len(values)
    perm = [[1.0 if e == j else 0.0 for j in range(n)] for e in range(n)]
    for layer in range(n):
        for m in range(layer % 2, n - 1, 2):
            a, b = values[m], values[m + 1]
            keep = 0.5 + math.atan(steepness * (b - a)) / math.pi
            values[m] = keep * a + (1 - keep) * b
            values[m + 1] = (1 - keep) * a + keep * b
            for e in range(n):
                pa, pb = perm[e][m], perm[e][m + 1]
                perm[e][m] = keep * pa + (1 - keep) * pb
                perm[e][m + 1] = (1 - keep) * pa + keep * pb
    return values, perm


# -------------------------------------------------------------------------------------------- GroCo


def _bce(pred, target):
    """PyTorch `BCELoss` (mean, logs floored at −100) on two equal-length lists."""
    total = 0.0
    for p, t in zip(pred, target):
        log_p = max(math.log(p), -100.0) if p > 0 else -100.0
        log_1mp = max(math.log(1 - p), -100.0) if p < 1 else -100.0
        total += -(t * log_p + (1 - t) * log_1mp)
    return total / len(pred)


def groco_anchor(anchor, positives, negatives, topk, steepness, similarity=cosine):
    """ℓ_i for one anchor: similarity to its positives and to its candidate negatives (self excluded)."""
    pos = sorted(similarity(anchor, p) for p in positives)
    neg = sorted((similarity(anchor, c) for c in negatives), reverse=True)[:topk]
    u = sorted(neg) + pos
    _, perm = diffsort_odd_even(u, steepness)
    n = len(u)
    upper = [min(max(sum(perm[e][j] for j in range(topk, n)), 0.0), 1.0) for e in range(n)]
    lower = [min(max(sum(perm[e][j] for j in range(topk)), 0.0), 1.0) for e in range(n)]
    target = [1.0 if e >= topk else 0.0 for e in range(n)]
    return 0.5 * (_bce(upper, target) + _bce(lower, [1 - t for t in target]))


def groco(views, topk=10, steepness=1.0, num_positive_views=None, frozen=None, similarity=cosine):
    """GroCo over `views: [V][B][D]`; `frozen` (a copy) supplies the stop-gradient positives and negatives."""
    targets = views if frozen is None else frozen
    n_views, n = len(views), len(views[0])
    n_pos = n_views if num_positive_views is None else num_positive_views
    total = 0.0
    for a in range(n_views):
        per_anchor = 0.0
        for i in range(n):
            positives = [targets[p][i] for p in range(n_pos) if p != a]
            negatives = [targets[a][j] for j in range(n) if j != i]
            per_anchor += groco_anchor(views[a][i], positives, negatives, topk, steepness, similarity)
        total += per_anchor / n
    return total / n_views
