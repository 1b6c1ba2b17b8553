"""Slow references written straight from the paper's formulas (spec ``paper.md`` §2 and §4).

Explicit Python loops over entries, in float64 and in the kernel domain, sharing no code with
:mod:`gca.losses` or :mod:`gca.ot`: the tests and the book's notebooks check the library against
them (a check against another configuration of the same code would prove nothing). Slow by design
(``O(N²)`` Python operations per iteration): for batches of a few dozen rows.

- :func:`reference_problem` — normalised embeddings, similarities ``S``, kernel ``K = e^{−C/ε}``
  (``C = −S`` or ``1 − S``; zero on the joint layout's self-pairs) and the positives ``π``;
- :func:`reference_sinkhorn` — ``u⁽ᵗ⁾ = (μ / K v⁽ᵗ⁻¹⁾)^{τ₁}``, ``v⁽ᵗ⁾ = (ν / Kᵀ u⁽ᵗ⁾)^{τ₂}`` from ``v⁽⁰⁾ = 1``;
- :func:`reference_loss` — every loss of the family from those two: Chuang et al.'s RINCE
  (``"rince"``: ``−e^{q s⁺}/q + (λ Σ_j e^{s_ij})^q/q`` per anchor) and the authors' CIFAR code's
  variant (``"rince-authors"``, ``"gca-rince-authors"``: ``(mean_i CE_i)^q/q``) included;
- :func:`reference_half_step_plan` — ``P⁽¹⁾ = diag(1/K1) K``, the plan of one row projection;
- :func:`reference_generalised_kl` — ``Σ T log(T/P) − T + P``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["reference_problem", "reference_sinkhorn", "reference_loss", "reference_half_step_plan",
           "reference_generalised_kl"]

D = torch.float64


def reference_problem(z1, z2, layout, cost, eps):
    """``(S, K, π)`` of two views ``(B, d)``: similarities, kernel ``e^{−C/ε}`` (``cost`` ``"neg"``:
    ``C = −S``; ``"one_minus"``: ``C = 1 − S``; self-pairs of the joint layout excluded) and positives."""
    b = z1.shape[0]
    h1 = [z / math.sqrt(sum(float(x) ** 2 for x in z)) for z in z1.to(D)]
    h2 = [z / math.sqrt(sum(float(x) ** 2 for x in z)) for z in z2.to(D)]
    if layout == "cross":
        rows, cols, pi = h1, h2, list(range(b))
    else:
        rows = cols = h1 + h2
        pi = [i + b for i in range(b)] + list(range(b))
    n = len(rows)
    K = torch.zeros(n, n, dtype=D)
    S = torch.zeros(n, n, dtype=D)
    for i in range(n):
        for j in range(n):
            s = float(sum(float(x) * float(y) for x, y in zip(rows[i], cols[j])))
            S[i, j] = s
            if layout == "joint" and i == j:
                continue  # self-pair excluded: K_ii = 0
            c = -s if cost == "neg" else 1.0 - s
            K[i, j] = math.exp(-c / eps)
    return S, K, pi


def reference_sinkhorn(K, mu, nu, T, tau1=1.0, tau2=1.0):
    """u⁽ᵗ⁾ = (μ / K v⁽ᵗ⁻¹⁾)^τ₁, v⁽ᵗ⁾ = (ν / Kᵀ u⁽ᵗ⁾)^τ₂, v⁽⁰⁾ = 1; returns u⁽ᵀ⁾, v⁽ᵀ⁾, v⁽ᵀ⁻¹⁾."""
    n = K.shape[0]
    v = [1.0] * n
    for _ in range(T):
        v_prev = v
        u = [(mu[i] / sum(float(K[i, j]) * v[j] for j in range(n))) ** tau1 for i in range(n)]
        v = [(nu[j] / sum(float(K[i, j]) * u[i] for i in range(n))) ** tau2 for j in range(n)]
    return u, v, v_prev


def reference_loss(name, z1, z2, *, eps=0.5, T=10, lam=0.01, q=0.6, rho=0.2, r1=1.0, r2=0.2,
                   lambda_p=0.2, layout="joint", target=None):
    """The loss ``name`` (``ince``, ``simclr``, ``rince``, ``rince-authors``, ``gca-ince``, ``iot``,
    ``iot-uni``, ``gca-rince``, ``gca-rince-authors``, ``gca-uot``) of two views, as a Python float,
    from the formulas of paper.md §4 (the ``-authors`` variants: ``official-code.md`` note 5)."""
    cost = "one_minus" if name == "gca-uot" else "neg"
    S, K, pi = reference_problem(z1, z2, layout, cost, eps)
    n = K.shape[0]
    if name in ("rince-authors", "gca-rince-authors"):
        # (mean over anchors of the cross-entropy)^q / q, the cross-entropy taken on the row-renormalised
        # plan: one row projection of K (rince-authors) or T Sinkhorn iterations (gca-rince-authors)
        if name == "rince-authors":
            P = [[float(K[i, j]) for j in range(n)] for i in range(n)]
        else:
            u, v, _ = reference_sinkhorn(K, [1.0] * n, [1.0] * n, T)
            P = [[u[i] * float(K[i, j]) * v[j] for j in range(n)] for i in range(n)]
        rows = [[P[i][j] / sum(P[i]) for j in range(n)] for i in range(n)]
        if target is None:
            mean_ce = sum(-math.log(rows[i][pi[i]]) for i in range(n)) / n
        else:
            mean_ce = reference_generalised_kl(target, rows) / n
        return mean_ce ** q / q
    if name in ("ince", "simclr"):
        P = [[float(K[i, j]) / sum(float(K[i, k]) for k in range(n)) for j in range(n)] for i in range(n)]
        if target is None:
            return sum(-math.log(P[i][pi[i]]) for i in range(n)) / n
        return reference_generalised_kl(target, P) / n
    if name == "rince":
        total = 0.0
        for i in range(n):
            s_pos = S[i, pi[i]] / eps
            total += -math.exp(q * s_pos) / q + (lam * sum(float(K[i, j]) for j in range(n))) ** q / q
        return total / n
    if name in ("gca-ince", "iot", "iot-uni", "gca-rince"):
        u, v, v_prev = reference_sinkhorn(K, [1.0] * n, [1.0] * n, T)
        P = [[u[i] * float(K[i, j]) * v[j] for j in range(n)] for i in range(n)]
        if name == "gca-rince":
            total = 0.0
            for i in range(n):
                p_odd = u[i] * float(K[i, pi[i]]) * v_prev[pi[i]]  # P^(2T-1)
                total += -(p_odd / u[i]) ** q / q + (lam / u[i]) ** q / q
            return total / n
        if target is not None:
            return reference_generalised_kl(target, P) / n
        value = sum(-math.log(P[i][pi[i]]) for i in range(n)) / n
        if name == "iot-uni":
            off = [(i, j) for i in range(n) for j in range(n) if j != pi[i] and j != i]
            p_bar = sum(P[i][j] for i, j in off) / len(off)
            kl = sum(P[i][j] * math.log(P[i][j] / p_bar) - P[i][j] + p_bar for i, j in off)
            value += lambda_p * kl / n
        return value
    if name == "gca-uot":
        mu = [1.0 / n] * n
        r = (rho, rho) if not isinstance(rho, tuple) else rho
        taus = [x / (x + eps) if math.isfinite(x) else 1.0 for x in r]
        u, v, _ = reference_sinkhorn(K, mu, mu, T, *taus)
        P = [[u[i] * float(K[i, j]) * v[j] for j in range(n)] for i in range(n)]
        kl = 0.0
        rince = 0.0
        for i in range(n):
            if target is None:
                kl += -math.log(P[i][pi[i]] / sum(P[i]))
                pos = P[i][pi[i]] / u[i]
            else:
                row = sum(P[i])
                kl += sum(float(target[i, j]) * math.log(float(target[i, j]) * row / P[i][j])
                          for j in range(n) if target[i, j] > 0)
                pos = sum(float(target[i, j]) * P[i][j] for j in range(n)) / u[i]
            rince += -pos ** q / q + (lam / u[i]) ** q / q
        return r1 * kl / n + r2 * rince / n
    raise KeyError(name)


def reference_generalised_kl(T, P):
    """``Σ_ij T_ij log(T_ij / P_ij) − T_ij + P_ij`` (``0 log 0 = 0``) of a target and a plan (lists or tensors)."""
    n = T.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            t = float(T[i, j])
            total += (t * math.log(t / P[i][j]) if t > 0 else 0.0) - t + P[i][j]
    return total


def reference_half_step_plan(z1, z2, *, eps=0.5, layout="joint", cost="neg"):
    """``P⁽¹⁾_ij = K_ij / Σ_k K_ik`` (one KL projection of the kernel onto the row marginals ``1``),
    as an ``(N, N)`` float64 tensor, with the positives ``π``."""
    _, K, pi = reference_problem(z1, z2, layout, cost, eps)
    n = K.shape[0]
    P = torch.zeros(n, n, dtype=D)
    for i in range(n):
        row = sum(float(K[i, k]) for k in range(n))
        for j in range(n):
            P[i, j] = float(K[i, j]) / row
    return P, pi
