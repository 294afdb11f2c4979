"""Brute-force Python-loop references for the losses, written from the papers' formulas, not from our code."""

from __future__ import annotations

import math

import torch


def dist(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(max(((a - b) ** 2).sum(), 1e-12) ** 0.5)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def triplet_loop(x, labels, margin, mining, soft=False):
    n = len(labels)
    f = (lambda z: math.log1p(math.exp(z))) if soft else (lambda z: max(0.0, z + margin))
    pos = lambda a: [p for p in range(n) if p != a and labels[p] == labels[a]]  # noqa: E731
    neg = lambda a: [k for k in range(n) if labels[k] != labels[a]]  # noqa: E731
    if mining == "hard":
        losses = [
            f(max(dist(x[a], x[p]) for p in pos(a)) - min(dist(x[a], x[k]) for k in neg(a))) for a in range(n) if pos(a)
        ]
        return sum(losses) / len(losses)
    if mining == "semihard":
        losses = []
        for a in range(n):
            for p in pos(a):
                dap = dist(x[a], x[p])
                farther = [dist(x[a], x[k]) for k in neg(a) if dist(x[a], x[k]) > dap]
                dan = min(farther) if farther else max(dist(x[a], x[k]) for k in neg(a))
                losses.append(f(dap - dan))
        return sum(losses) / len(losses)
    losses = [f(dist(x[a], x[p]) - dist(x[a], x[k])) for a in range(n) for p in pos(a) for k in neg(a)]
    nonzero = [v for v in losses if v > 0]
    return sum(nonzero) / len(nonzero) if nonzero else 0.0


def contrastive_loop(x, labels, pos_margin, neg_margin):
    n = len(labels)
    pos = [
        max(0.0, dist(x[i], x[j]) - pos_margin) for i in range(n) for j in range(n) if i != j and labels[i] == labels[j]
    ]
    neg = [max(0.0, neg_margin - dist(x[i], x[j])) for i in range(n) for j in range(n) if labels[i] != labels[j]]
    return sum(pos) / len(pos) + sum(neg) / len(neg)


def lifted_loop(x, labels, alpha=1.0):
    n = len(labels)
    total, count = 0.0, 0
    for i in range(n):
        for j in range(i + 1, n):
            if labels[i] != labels[j]:
                continue
            s = sum(math.exp(alpha - dist(x[i], x[k])) for k in range(n) if labels[k] != labels[i])
            s += sum(math.exp(alpha - dist(x[j], x[k])) for k in range(n) if labels[k] != labels[j])
            J = math.log(s) + dist(x[i], x[j])
            total += max(0.0, J) ** 2
            count += 1
    return total / (2 * count)


def first_pairs_loop(labels):
    seen: dict[int, list[int]] = {}
    for i, c in enumerate(labels):
        seen.setdefault(int(c), []).append(i)
    return [(v[0], v[1]) for v in seen.values() if len(v) >= 2]


def npair_loop(x, labels, l2_reg):
    pairs = first_pairs_loop(labels)
    ce = 0.0
    for a, p in pairs:
        s_ap = float(x[a] @ x[p])
        ce += math.log(1 + sum(math.exp(float(x[a] @ x[q]) - s_ap) for b, q in pairs if labels[b] != labels[a]))
    reg = 0.25 * l2_reg * (sum(float(x[a] @ x[a]) for a, _ in pairs) + sum(float(x[p] @ x[p]) for _, p in pairs))
    return ce / len(pairs) + reg / len(pairs)


def angular_loop(x, labels, alpha_deg, pairs="first"):
    t2 = math.tan(math.radians(alpha_deg)) ** 2
    n = len(labels)
    if pairs == "first":
        fp = first_pairs_loop(labels)
        tuples = [(a, p, [q for b, q in fp if labels[b] != labels[a]]) for a, p in fp]
    else:
        tuples = [
            (a, p, [k for k in range(n) if labels[k] != labels[a]])
            for a in range(n)
            for p in range(n)
            if a != p and labels[a] == labels[p]
        ]
    total = 0.0
    for a, p, negs in tuples:
        s = sum(math.exp(4 * t2 * float((x[a] + x[p]) @ x[k]) - 2 * (1 + t2) * float(x[a] @ x[p])) for k in negs)
        total += math.log1p(s)
    return total / len(tuples)
