r"""The outer divergences ``d_M`` of the alignment core: the terms a loss is made of (paper §2, §4).

All work on the dimensionless cost ``Ĉ = C/ε`` and potentials ``h = g/ε`` of
:mod:`gca.losses.constraints`, per anchor (row) ``i``:

- :func:`target_log_term` — the target-dependent part of ``−KL(T_i·‖P_i·)`` (KL terms);
- :func:`log_positive_weight`, :func:`rince_term`, :func:`finish_rince` — the RINCE-type term
  ``[(λ/u_i)^q − (Σ_j T_ij K_ij e^{h_j})^q]/q``, evaluated in factored form so that large values
  stay exact, with :class:`AlignmentOverflowError` when the mean does not fit the dtype;
- :func:`power_of_mean` — ``(mean_i ℓ_i)^q / q``, the power of the mean cross-entropy that the
  authors' CIFAR code calls RINCE (``official-code.md`` note 5);
- :func:`uniformity` — IOT-uni's ``KL(P‖Q)/N``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .cost import ScaledCost

__all__ = ["AlignmentOverflowError", "target_log_term", "log_positive_weight", "rince_term", "finish_rince",
           "power_of_mean", "uniformity"]


class AlignmentOverflowError(OverflowError, ValueError):
    """A loss value does not fit the floating-point dtype (RINCE-type terms grow like e^(q/ε))."""


def log_positive_weight(cost: ScaledCost, pos_hat, h, pi, target):
    r"""``b_i = log Σ_j T_ij K_ij e^{h_j}`` (dimensionless ``h``); for Π: ``h_π(i) − Ĉ_iπ(i)``."""
    if target is None:
        return h[pi] - pos_hat
    return torch.logsumexp(torch.log(target) + h[None, :] + cost.log_kernel, dim=1)


def target_log_term(cost: ScaledCost, pos_hat, h, pi, target):
    r"""``Σ_j T_ij (h_j − Ĉ_ij) − Σ_j T_ij log T_ij`` (dimensionless ``h``): the target-dependent
    part of ``−KL(T_i·‖·)``; for Π: ``h_π(i) − Ĉ_iπ(i)``."""
    if target is None:
        return h[pi] - pos_hat
    c = cost.c
    finite_c = torch.where(target > 0, c, torch.zeros_like(c))  # T_ii = 0 meets Ĉ_ii = inf
    ent = torch.special.xlogy(target, target).sum(dim=1)
    return target @ h - (target * finite_c).sum(dim=1) - ent


def rince_term(a: Tensor, b: Tensor, q: float):
    r"""Per-anchor ``(e^{q a_i} − e^{q b_i})/q`` (a: log of λ/u_i, b: log positive weight), as
    ``(values scaled by e^{-M}, M)`` so that large values stay exact.

    ``e^{q a} − e^{q b} = e^{q m}·w`` with ``m = max(a, b)``, ``d = a − b``,
    ``w = expm1(−q·relu(−d)) − expm1(−q·relu(d)) ∈ (−1, 1)``: no cancellation as ``q → 0``.
    """
    d = a - b
    w = torch.expm1(-q * torch.relu(-d)) - torch.expm1(-q * torch.relu(d))
    m = q * torch.maximum(a, b)
    big = m.detach().max()
    return torch.exp(m - big) * w / q, big


def finish_rince(scaled: Tensor, big: Tensor, q: float, epsilon: float) -> tuple[Tensor, Tensor]:
    """Undo the scaling of :func:`rince_term`; raise if the mean does not fit the dtype."""
    mean_scaled = scaled.mean()
    dtype = scaled.dtype
    log_max = math.log(torch.finfo(dtype).max)
    big_v, mean_v = (float(x) for x in torch.stack([big, mean_scaled.detach()]).tolist())
    magnitude = big_v + math.log(max(abs(mean_v), 1e-300))
    if not math.isfinite(big_v) or magnitude > log_max - 1.0:
        raise AlignmentOverflowError(
            f"the RINCE-type term does not fit {dtype}: its value is about e^{magnitude:.0f} > "
            f"e^{log_max:.0f}. It grows like e^(q/epsilon) with q={q:g}, epsilon={epsilon:g}; "
            f"increase epsilon, decrease q, or compute the loss in float64"
        )
    scale = torch.exp(big)
    return mean_scaled * scale, scaled * scale


def power_of_mean(values: Tensor, q: float) -> tuple[Tensor, Tensor]:
    r"""``(m^q / q, shares)`` with ``m = mean_i values_i`` (non-negative values, e.g. cross-entropies).

    The power applies to the mean over anchors, not to each anchor's value (as in the authors'
    CIFAR code, ``(F.cross_entropy(...) ** q) / q``). ``shares_i = values_i · m^{q−1}/q`` split it
    over the anchors (their mean is ``m^q/q``; ``0`` where ``m = 0``).
    """
    mean = values.mean()
    powered = mean.pow(q) / q
    shares = values * (powered / mean.clamp_min(torch.finfo(mean.dtype).tiny))
    return powered, shares


def uniformity(c: Tensor, fh: Tensor, gh: Tensor, pi: Tensor, layout: str):
    r"""IOT-uni's ``KL(P‖Q)/N`` (dimensionless potentials, ``c = C/ε``): ``Q = P`` on the
    positives, the mean off-positive entry :math:`\bar p` elsewhere (self-pairs excluded).

    ``KL(P‖Q) = Σ_off [P log(P/p̄) − P + p̄] = Σ_off P log(P/p̄)`` (the mass terms cancel because
    ``p̄`` is the mean of ``P`` over the same entries)."""
    n = c.shape[0]
    excluded = torch.zeros(n, n, dtype=torch.bool, device=c.device)
    excluded[torch.arange(n, device=c.device), pi] = True
    if layout == "joint":
        excluded.fill_diagonal_(True)
    count = n * n - int(pi.numel()) - (n if layout == "joint" else 0)
    # excluded entries get a huge finite negative log: exp() is exactly 0 there and P·log P is a
    # finite 0 with a zero gradient (−inf would give 0·inf = NaN in the backward)
    very_negative = torch.finfo(c.dtype).min / 4
    log_p = (fh[:, None] - c + gh[None, :]).masked_fill(excluded, very_negative)
    p = torch.exp(log_p)
    # log p̄ by logsumexp: p̄ may underflow at small ε while P log(P/p̄) stays finite
    log_p_bar = torch.logsumexp(log_p.flatten(), dim=0) - math.log(count)
    per_row = (p * (log_p - log_p_bar)).sum(dim=1)
    return per_row.mean(), per_row
