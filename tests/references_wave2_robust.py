"""Slow float64 loop references: HCL / debiased CL, hard top-K InfoNCE, LDR-KL / ALDR-KL, comp-sum.

Written from the authors' code (HCL's `criterion`, DCL's `train`, ICML2023_LDR's `LDRLoss_V1` and
`ALDRLoss_V1`) or, where there is none, from the papers' formulas (Wang & Liu's top-K reading, Mao et
al.'s `((1 + u)^{1−τ} − 1)/(1 − τ)` form of the comp-sum family): plain exponentials and ratios,
one anchor / sample at a time, never the library's log-domain rewrite.
"""

from __future__ import annotations

import math

import numpy as np


def _dot(u, v):
    return float(np.dot(np.asarray(u, np.float64), np.asarray(v, np.float64)))


def _lse(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def hcl(a, b, tau, tau_plus, beta, frozen_weights=None):
    """HCL's estimator, anchor by anchor, as its `criterion(estimator="hard")` computes it.

    `frozen_weights[r][k]` (optional) replaces the importance weights `e^{β s/τ} / mean e^{β s/τ}`
    by constants (to show the library differentiates through them).
    """
    z = list(a) + list(b)
    n = len(a)
    m = 2 * n - 2
    total = 0.0
    for r in range(2 * n):
        partner = (r + n) % (2 * n)
        pos = math.exp(_dot(z[r], z[partner]) / tau)
        negs = [math.exp(_dot(z[r], z[k]) / tau) for k in range(2 * n) if k not in (r, partner)]
        imp = [e**beta for e in negs]
        mean_imp = sum(imp) / m
        weights = [w / mean_imp for w in imp] if frozen_weights is None else frozen_weights[r]
        reweighted = sum(w * e for w, e in zip(weights, negs))
        ng = (reweighted - tau_plus * m * pos) / (1 - tau_plus)
        ng = max(ng, m * math.exp(-1 / tau))
        total += -math.log(pos / (pos + ng))
    return total / (2 * n)


def hcl_weights(a, b, tau, beta):
    """The importance weights `e^{β s_rk/τ} / mean_k e^{β s_rk/τ}` of `hcl` (per anchor, negatives in order)."""
    z = list(a) + list(b)
    n = len(a)
    rows = []
    for r in range(2 * n):
        partner = (r + n) % (2 * n)
        imp = [math.exp(beta * _dot(z[r], z[k]) / tau) for k in range(2 * n) if k not in (r, partner)]
        rows.append([w * len(imp) / sum(imp) for w in imp])
    return rows


def hard_topk_infonce(a, b, tau, num_hard, symmetric=False):
    """Per anchor: its positive against the `num_hard` most similar other candidates."""

    def one_direction(anchors, candidates):
        total = 0.0
        for i, anchor in enumerate(anchors):
            sims = sorted((_dot(anchor, c) for j, c in enumerate(candidates) if j != i), reverse=True)
            pos = _dot(anchor, candidates[i]) / tau
            total += _lse([pos] + [s / tau for s in sims[:num_hard]]) - pos
        return total / len(anchors)

    if not symmetric:
        return one_direction(a, b)
    return 0.5 * (one_direction(a, b) + one_direction(b, a))


def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def ldr_kl(logits, labels, threshold, lam):
    """`LDRLoss_V1`: softplus scores over their mean, margin on the wrong classes, λ-smoothed max."""
    total = 0.0
    for row, y in zip(np.asarray(logits, np.float64), labels):
        k = len(row)
        scores = [_softplus(float(v)) for v in row]
        mean = sum(scores) / k
        q = [s / mean for s in scores]
        d = [threshold * (c != y) + q[c] - q[y] for c in range(k)]
        total += lam * math.log(sum(math.exp(v / lam) for v in d) / k)
    return total / len(labels)


def _aldr_scores(row, softplus):
    scores = [_softplus(float(v)) if softplus else float(v) for v in row]
    l1 = sum(abs(s) for s in scores) / len(scores)
    return [s / l1 for s in scores]


def aldr_terms(logits, labels, lams, threshold, lam0, alpha, softplus=False):
    """Mean of ALDR-KL's per-sample terms at given (new) λ's: `λ·log mean e^{d/λ} − ½ α log K (λ−λ₀)²/λ₀`."""
    total = 0.0
    for row, y, lam in zip(np.asarray(logits, np.float64), labels, lams):
        k = len(row)
        q = _aldr_scores(row, softplus)
        d = [threshold * (c != y) + q[c] - q[y] for c in range(k)]
        total += lam * math.log(sum(math.exp(v / lam) for v in d) / k)
        total -= 0.5 * alpha * math.log(k) / lam0 * (lam - lam0) ** 2
    return total / len(labels)


class ALDRKL:
    """`ALDRLoss_V1` with its per-sample λ table, one sample at a time."""

    def __init__(self, n, lam0=10.0, threshold=0.1, alpha=2.0, softplus=False):
        self.lam = np.full(n, float(lam0))
        self.lam0, self.threshold, self.alpha, self.softplus = lam0, threshold, alpha, softplus

    def new_lambdas(self, logits, ids):
        """Each sample's updated λ from its stored one (no state change)."""
        out = []
        for row, i in zip(np.asarray(logits, np.float64), ids):
            k = len(row)
            q = _aldr_scores(row, self.softplus)
            exps = [math.exp(v / self.lam[i]) for v in q]
            p = [e / sum(exps) + 1e-5 for e in exps]
            p = [v / sum(p) for v in p]
            kl = sum(v * math.log(k * v) for v in p)
            out.append(self.lam0 - self.lam0 * kl / (self.alpha * math.log(k)))
        return out

    def step(self, logits, labels, ids):
        """Returns `(loss, new λ's)` and stores them (a repeated id keeps its last occurrence)."""
        lams = self.new_lambdas(logits, ids)
        loss = aldr_terms(logits, labels, lams, self.threshold, self.lam0, self.alpha, self.softplus)
        for i, lam in zip(ids, lams):
            self.lam[i] = lam
        return loss, lams


def comp_sum(logits, labels, tau):
    """Mao et al.'s comp-sum loss `((1 + u)^{1−τ} − 1)/(1 − τ)`, `u = Σ_{k≠y} e^{o_k − o_y}` (log at τ=1)."""
    total = 0.0
    for row, y in zip(np.asarray(logits, np.float64), labels):
        u = sum(math.exp(row[k] - row[y]) for k in range(len(row)) if k != y)
        total += math.log1p(u) if tau == 1 else ((1 + u) ** (1 - tau) - 1) / (1 - tau)
    return total / len(labels)


def comp_sum_clip(x, y, scale, tau):
    """The comp-sum loss of each image over the texts and each text over the images, averaged."""
    n = len(x)
    logits = [[scale * _dot(x[i], y[j]) for j in range(n)] for i in range(n)]
    rows = comp_sum(logits, list(range(n)), tau)
    cols = comp_sum([[logits[j][i] for j in range(n)] for i in range(n)], list(range(n)), tau)
    return 0.5 * (rows + cols)
