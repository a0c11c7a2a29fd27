"""Slow float64 loop references for the catalogue losses, written from the papers / official code."""

from __future__ import annotations

import math

import numpy as np


def _lse(values):
    values = [v for v in values if v != -math.inf]
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _dot(u, v):
    return float(np.dot(np.asarray(u, np.float64), np.asarray(v, np.float64)))


def _two_views(a, b):
    n = len(a)
    z = list(a) + list(b)
    partner = lambda k: (k + n) % (2 * n)
    return z, n, partner


def nt_xent(a, b, tau):
    z, n, partner = _two_views(a, b)
    total = 0.0
    for i in range(2 * n):
        denom = _lse([_dot(z[i], z[k]) / tau for k in range(2 * n) if k != i])
        total += denom - _dot(z[i], z[partner(i)]) / tau
    return total / (2 * n)


def dcl(a, b, tau, weights=None):
    z, n, partner = _two_views(a, b)
    total = 0.0
    for i in range(2 * n):
        neg = _lse([_dot(z[i], z[k]) / tau for k in range(2 * n) if k not in (i, partner(i))])
        w = 1.0 if weights is None else weights[i % n]
        total += neg - w * _dot(z[i], z[partner(i)]) / tau
    return total / (2 * n)


def dclw_weights(a, b, sigma):
    sims = [_dot(a[i], b[i]) / sigma for i in range(len(a))]
    top = max(sims)
    exps = [math.exp(s - top) for s in sims]
    return [2 - len(a) * e / sum(exps) for e in exps]


def mv_dhel(views, tau):
    v, n = len(views), len(views[0])
    total = 0.0
    for i in range(n):
        pos = _lse([_dot(views[l][i], views[m][i]) / tau for l in range(v) for m in range(l + 1, v)])
        energy = sum(
            _lse([_dot(views[l][i], views[l][j]) / tau for j in range(n) if j != i]) for l in range(v)
        )
        total += energy - pos
    return total / n


def mv_infonce(views, tau):
    v, n = len(views), len(views[0])
    total = 0.0
    for i in range(n):
        num = _lse([_dot(views[l][i], views[m][i]) / tau for l in range(v) for m in range(v) if m != l])
        den = _lse([_dot(views[l][i], views[m][j]) / tau for l in range(v) for m in range(v) for j in range(n)
                    if (m, j) != (l, i)])  # fmt: skip
        total += den - num
    return total / n


def supcon(features, labels, tau, base_tau, mode="all"):
    features = np.asarray(features, np.float64)
    n, v, _ = features.shape
    contrast = [(features[i, k], i) for k in range(v) for i in range(n)]
    anchors = [(features[i, k], i, k * n + i) for k in (range(v) if mode == "all" else [0]) for i in range(n)]
    total = 0.0
    for feat, sample, index in anchors:
        others = [c for c_index, c in enumerate(contrast) if c_index != index]
        denom = _lse([_dot(feat, f) / tau for f, _ in others])
        positives = [_dot(feat, f) / tau - denom for f, s in others if labels[s] == labels[sample]]
        if positives:
            total += -(tau / base_tau) * sum(positives) / len(positives)
    return total / len(anchors)


def infonce_extra(query, positive, negatives, tau, in_batch=True):
    b = len(query)
    total = 0.0
    for i in range(b):
        logits = [_dot(query[i], positive[j]) / tau for j in range(b) if in_batch or j == i]
        negs = negatives[i] if np.ndim(negatives) == 3 else negatives
        logits += [_dot(query[i], neg) / tau for neg in negs]
        total += _lse(logits) - _dot(query[i], positive[i]) / tau
    return total / b


def cwcl(p, q, tau, weights=None):
    n = len(p)
    total = 0.0
    for i in range(n):
        w = [(_dot(q[i], q[j]) / 2 + 0.5) if weights is None else weights[i][j] for j in range(n)]
        lse = _lse([_dot(p[i], q[k]) / tau for k in range(n)])
        total += sum(w[j] * (_dot(p[i], q[j]) / tau - lse) for j in range(n)) / sum(w)
    return -total / n


def mw(scores, labels):
    rows = []
    for s, l in zip(np.atleast_2d(scores), np.atleast_2d(labels)):
        pairs = [
            math.log1p(math.exp(s[n_] - s[p]))
            for p in range(len(s))
            if l[p]
            for n_ in range(len(s))
            if not l[n_]
        ]
        if pairs:
            rows.append(sum(pairs) / len(pairs))
    return sum(rows) / len(rows)


def auc(scores, labels):
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def alignment(x, y, alpha=2.0):
    return sum(
        np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** alpha for a, b in zip(x, y)
    ) / len(x)


def uniformity(x, t=2.0):
    x = np.asarray(x, np.float64)
    values = [
        math.exp(-t * float(np.sum((x[i] - x[j]) ** 2))) for i in range(len(x)) for j in range(i + 1, len(x))
    ]
    return math.log(sum(values) / len(values))
