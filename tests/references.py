"""Slow, independent NumPy references for the core losses: float64, explicit loops.

These are written from the papers and the authors' code, not from the library's code, and deliberately
use a different formulation (per-element loops, explicit soft targets, explicit masks) so that
a wrong vectorised formula in the library cannot also be wrong here in the same way.
"""

from __future__ import annotations

import math

import numpy as np


def _log_sum_exp(values) -> float:
    values = [v for v in values if v != -math.inf]
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def clip_loss(x, y, scale, label_smoothing=0.0) -> float:
    """½ (CE over image rows + CE over text rows) with targets (1−ε)·onehot + ε/B."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    b = len(x)
    logits = [[scale * float(np.dot(x[i], y[j])) for j in range(b)] for i in range(b)]
    total = 0.0
    for direction in ("image", "text"):
        for i in range(b):
            row = [logits[i][j] if direction == "image" else logits[j][i] for j in range(b)]
            lse = _log_sum_exp(row)
            for j in range(b):
                target = (1 - label_smoothing) * (i == j) + label_smoothing / b
                total += target * (lse - row[j])
    return total / (2 * b)


def siglip_loss(x, y, scale, bias) -> float:
    """−(1/B) Σ_ij log σ(z_ij (s x_i·y_j + b)), z_ii = 1, z_ij = −1."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    b = len(x)
    total = 0.0
    for i in range(b):
        for j in range(b):
            z = 1.0 if i == j else -1.0
            logit = scale * float(np.dot(x[i], y[j])) + bias
            total += np.logaddexp(0.0, -z * logit)  # −log σ(z·l) = log(1 + e^{−z·l})
    return total / b


def caption_loss(logits, labels, pad_id=0, label_smoothing=0.0) -> float:
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            if labels[b, t] == pad_id:
                continue
            row = list(logits[b, t])
            lse = _log_sum_exp(row)
            nll = lse - row[labels[b, t]]
            uniform = sum(lse - v for v in row) / len(row)
            total += (1 - label_smoothing) * nll + label_smoothing * uniform
            count += 1
    return total / count if count else 0.0


def grouped_clip_loss(x, y, scale, num_groups) -> float:
    """Dense B×B logits with every cross-group entry at −∞, CE over all rows and columns."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    b = len(x)
    size = b // num_groups
    logits = [
        [scale * float(np.dot(x[i], y[j])) if i // size == j // size else -math.inf for j in range(b)]
        for i in range(b)
    ]
    total = 0.0
    for i in range(b):
        total += _log_sum_exp(logits[i]) - logits[i][i]
        column = [logits[j][i] for j in range(b)]
        total += _log_sum_exp(column) - logits[i][i]
    return total / (2 * b)


class ISogCLR:
    """iSogCLR's update rules (Qiu et al. 2023, Algorithm 1, as the authors' code applies them; see
    `losses.isogclr_loss`'s docstring), one sample at a time, with a dict-of-arrays state."""

    def __init__(
        self,
        n,
        tau_init=0.01,
        tau_min=0.005,
        tau_max=0.05,
        gamma=0.9,
        rho=6.0,
        eta=0.01,
        beta=0.9,
        clip=5.0,
        learn=True,
    ):
        self.state = {
            side: {"u": np.zeros(n), "b": np.zeros(n), "tau": np.full(n, tau_init), "m": np.zeros(n)}
            for side in ("image", "text")
        }
        self.seen = np.zeros(n, bool)
        self.hp = dict(tau_min=tau_min, tau_max=tau_max, gamma=gamma, rho=rho, eta=eta, beta=beta, clip=clip)
        self.learn = learn

    def step(self, x, y, ids):
        """Returns (loss, d loss / d x, d loss / d y) and updates the state (unique ids)."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        hp, n = self.hp, len(x)
        sim = x @ y.T
        loss, grad_x, grad_y = 0.0, np.zeros_like(x), np.zeros_like(y)
        new_seen = self.seen.copy()
        for side in ("image", "text"):
            st = self.state[side]
            s = sim if side == "image" else sim.T
            anchors, cands = (x, y) if side == "image" else (y, x)
            g_anchor, g_cand = (grad_x, grad_y) if side == "image" else (grad_y, grad_x)
            for i in range(n):
                k = ids[i]
                tau = st["tau"][k]
                negs = [j for j in range(n) if j != i]
                h = {j: s[i, j] - s[i, i] for j in negs}
                b_new = max([st["b"][k]] + [h[j] / tau for j in negs])
                g = sum(math.exp(h[j] / tau - b_new) for j in negs) / len(negs)
                if self.seen[k]:
                    u = (1 - hp["gamma"]) * st["u"][k] * math.exp(st["b"][k] - b_new) + hp["gamma"] * g
                else:
                    u = g
                u = max(u, 1e-20)
                w = {j: math.exp(h[j] / tau - b_new) / u for j in negs}
                loss += sum(w[j] * h[j] for j in negs) / len(negs) / n
                for j in negs:  # d h_ij = d s_ij − d s_ii, s_ij = anchor_i · cand_j
                    coef = w[j] / len(negs) / n
                    g_anchor[i] += coef * (cands[j] - cands[i])
                    g_cand[j] += coef * anchors[i]
                    g_cand[i] -= coef * anchors[i]
                if self.learn:
                    grad_tau = (
                        math.log(u) + b_new + hp["rho"] - sum(w[j] * h[j] / tau for j in negs) / len(negs)
                    )
                    if hp["clip"] is not None:
                        grad_tau = min(max(grad_tau, -hp["clip"]), hp["clip"])
                    st["m"][k] = (1 - hp["beta"]) * st["m"][k] + hp["beta"] * grad_tau
                    st["tau"][k] = min(max(tau - hp["eta"] * st["m"][k], hp["tau_min"]), hp["tau_max"])
                st["u"][k], st["b"][k] = u, b_new
                new_seen[k] = True
        self.seen = new_seen
        return loss, grad_x, grad_y


def numeric_grad(fn, args, index, eps=1e-6):
    """Central finite differences of scalar `fn(*args)` w.r.t. `args[index]`, float64."""
    args = [np.array(a, np.float64) if isinstance(a, np.ndarray) or np.ndim(a) else float(a) for a in args]
    target = np.array(args[index], np.float64)
    grad = np.zeros_like(target)
    for pos in np.ndindex(*target.shape):
        for sign in (1, -1):
            moved = target.copy()
            moved[pos] += sign * eps
            call = list(args)
            call[index] = moved if moved.shape else float(moved)
            grad[pos] += sign * fn(*call) / (2 * eps)
    return grad
