"""Slow float64 loop references for SBCL, EBV, TCM and UNPG, written from the authors' code.

Each function walks anchors / pairs one at a time in plain Python (no vectorised formula), so a
test comparing it with the library checks the library's masks and reductions independently.
"""

from __future__ import annotations

import math


def _lse(values):
    values = [v for v in values if v != -math.inf]
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _dot(u, v):
    return sum(float(a) * float(b) for a, b in zip(u, v))


def _norm(u):
    return math.sqrt(_dot(u, u))


def _unit(u):
    n = _norm(u)
    return [float(a) / n for a in u]


# --- SBCL (JackHck/SBCL, SimCLR/loss.py::SupConLoss_rank and SimCLR/main.py::cluster) -----------


def sbcl(z_a, z_b, labels, subclasses, class_temperatures, tau=0.1, base_tau=0.07, gamma=0.25):
    """Mean over the 2N anchors of (τ/τ_base)·L_sub + γ·L_cls, sets built pair by pair."""
    n = len(z_a)
    z = list(z_a) + list(z_b)
    lab = [int(v) for v in labels] * 2
    sub = [int(v) for v in subclasses] * 2
    total = 0.0
    for r in range(2 * n):
        other = (r + n) % (2 * n)
        # Subclass term: positives = same subclass (the other view included), contrast = all but r.
        lse_all = _lse([_dot(z[r], z[a]) / tau for a in range(2 * n) if a != r])
        positives = [p for p in range(2 * n) if p != r and sub[p] == sub[r]]
        sub_term = -sum(_dot(z[r], z[p]) / tau - lse_all for p in positives) / len(positives)
        # Class term: contrast = the other view and every other subclass; positives = the other
        # view and the same-class samples of other subclasses; the anchor's class temperature.
        tau_c = float(class_temperatures[lab[r]])
        contrast = [a for a in range(2 * n) if a == other or (a != r and sub[a] != sub[r])]
        class_pos = [p for p in contrast if p == other or lab[p] == lab[r]]
        lse_c = _lse([_dot(z[r], z[a]) / tau_c for a in contrast])
        cls_term = -sum(_dot(z[r], z[p]) / tau_c - lse_c for p in class_pos) / len(class_pos)
        total += (tau / base_tau) * sub_term + gamma * cls_term
    return total / (2 * n)


def _percentile(values, q):
    """NumPy's default ("linear") percentile, by hand."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def sbcl_class_temperatures(features, labels, clusters_per_class, tau=0.1):
    num_classes = len(clusters_per_class)
    spread = []
    for c in range(num_classes):
        rows = [list(map(float, f)) for f, y in zip(features, labels) if int(y) == c]
        centre = [sum(col) / len(rows) for col in zip(*rows)]
        mean_dist = sum(_norm([a - b for a, b in zip(row, centre)]) for row in rows) / len(rows)
        spread.append(mean_dist / math.log(len(rows) + 10))
    low, high = _percentile(spread, 20), _percentile(spread, 80)
    clipped = [min(max(d, low), high) for d in spread]
    mean = sum(clipped) / num_classes
    return [tau if k == 1 else tau * d / mean for d, k in zip(clipped, clusters_per_class)]


# --- EBV (aassxun/Equiangular-Basis-Vectors) --------------------------------------------------------


def ebv(z, labels, basis, tau=0.07, eps=0.1):
    """PyTorch's label-smoothed cross-entropy of ⟨z, d_c⟩/τ, one sample at a time."""
    num_classes = len(basis)
    total = 0.0
    for zi, y in zip(z, labels):
        logits = [_dot(zi, d) / tau for d in basis]
        lse = _lse(logits)
        for c in range(num_classes):
            target = (1 - eps) * (c == int(y)) + eps / num_classes
            total += target * (lse - logits[c])
    return total / len(z)


def ebv_objective(basis, threshold=0.002):
    total = 0.0
    for i in range(len(basis)):
        for j in range(len(basis)):
            if i != j:
                total += max(abs(_dot(basis[i], basis[j])) - threshold, 0.0)
    return total


def ebv_sgd_step(basis, threshold=0.002, lr=1e-3):
    """One step of `Generate_EBV.py::main` on unit rows: SGD on J (every ordered pair), re-normalise."""
    rows = [list(map(float, d)) for d in basis]
    moved = []
    for i, d in enumerate(rows):
        grad = [0.0] * len(d)
        for j, other in enumerate(rows):
            cos = _dot(d, other)
            if j != i and abs(cos) > threshold:  # d_i meets d_j in the pairs (i, j) and (j, i)
                grad = [g + 2 * math.copysign(1.0, cos) * o for g, o in zip(grad, other)]
        moved.append(_unit([a - lr * g for a, g in zip(d, grad)]))
    return moved


# --- TCM (pytorch-metric-learning, losses/tcm_loss.py) ----------------------------------------------


def tcm(raw, labels, margin_pos=0.9, margin_neg=0.5, lambda_pos=1.0, lambda_neg=1.0, normalize=True):
    """Cosines of every ordered pair i ≠ j (normalising inside, as F.cosine_similarity)."""
    z = [_unit(r) if normalize else list(map(float, r)) for r in raw]
    pos_sum = pos_count = neg_sum = neg_count = 0.0
    for i in range(len(z)):
        for j in range(len(z)):
            if i == j:
                continue
            s = _dot(z[i], z[j])
            if int(labels[i]) == int(labels[j]):
                if s <= margin_pos:
                    pos_sum, pos_count = pos_sum + (margin_pos - s), pos_count + 1
            elif s >= margin_neg:
                neg_sum, neg_count = neg_sum + (s - margin_neg), neg_count + 1
    pos = pos_sum / pos_count if pos_count else 0.0
    neg = neg_sum / neg_count if neg_count else 0.0
    return lambda_pos * pos + lambda_neg * neg


# --- UNPG (Jung-Jun-Uk/UNPG, recognition/models/build.py and head.py) --------------------------------


def box_and_whisker(values, whisker):
    """The kept values of `build.py::box_and_whisker_algorithm`, ascending."""
    ordered = sorted(values)
    l = len(ordered)
    if l == 0:
        return []
    q1, q3 = ordered[int(0.25 * l)], ordered[int(0.75 * l)]
    iqr = q3 - q1
    return [v for v in ordered if q1 - whisker * iqr <= v <= q3 + whisker * iqr]


def negative_pairs(raw, labels, normalize=True):
    """Cosines of the pairs i < j with different labels (`build.py::convert_label_to_similarity`)."""
    z = [_unit(r) if normalize else list(map(float, r)) for r in raw]
    cosines = []
    for i in range(len(z)):
        for j in range(i + 1, len(z)):
            if int(labels[i]) != int(labels[j]):
                cosines.append(_dot(z[i], z[j]))
    return cosines


def unpg(margin_logits, raw, labels, scale=64.0, whisker=1.5, normalize=True):
    """Cross-entropy of each row's [s·margin logits, s·kept negative-pair cosines]."""
    kept = box_and_whisker(negative_pairs(raw, labels, normalize), whisker)
    total = 0.0
    for row, y in zip(margin_logits, labels):
        logits = [scale * float(v) for v in row] + [scale * v for v in kept]
        total += _lse(logits) - scale * float(row[int(y)])
    return total / len(labels)


def plain_ce(margin_logits, labels, scale):
    total = 0.0
    for row, y in zip(margin_logits, labels):
        logits = [scale * float(v) for v in row]
        total += _lse(logits) - logits[int(y)]
    return total / len(labels)
