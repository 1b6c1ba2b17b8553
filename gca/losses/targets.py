r"""Target transport plans :math:`P_{\mathrm{tgt}}` for the alignment losses (paper §2, §4).

(``gca.plans`` before the losses became a package.)

A target plan says where each anchor's mass *should* go. Rows are anchors, columns candidates, in
one of the two layouts of the paper (§2):

- ``"cross"``: :math:`N = B`; row ``i`` is view-1 sample ``i``, column ``j`` view-2 sample ``j``;
  the positive of ``i`` is :math:`\pi(i) = i`.
- ``"joint"``: :math:`N = 2B`, rows/columns are :math:`[\hat z_1; \hat z_2]` in *block* order;
  self-pairs are excluded (the target must put no mass on the diagonal); the positive of ``i`` is
  :math:`\pi(i) = i \pm B`.

Every builder returns a dense, non-negative ``(N, N)`` matrix whose rows are renormalised to the
row marginal :math:`\mu = 1_N` (each row has mass 1), the convention the losses use. With the
default target (the permutation :math:`\Pi` of :math:`\pi`) the losses never form this matrix:
they gather the positive entries with :func:`positive_index` instead.

Builders
--------
- :func:`positive_pairs` — :math:`\Pi`, one positive per anchor (SimCLR/INCE/GCA default).
- :func:`supervised_plan` — multi-positive from labels: same label :math:`\Rightarrow` positive.
- :func:`domain_prior_plan` — the paper's domain prior (page 9):
  :math:`1[j = \pi(i)] + \alpha\,1[D_i = D_j,\ j \ne \pi(i)] + \beta\,1[D_i \ne D_j]`.
- :func:`custom_plan` — any user-given non-negative matrix, validated and renormalised.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..checks import check_int, check_nonneg

__all__ = [
    "LAYOUTS",
    "check_layout",
    "plan_size",
    "positive_index",
    "positive_pairs",
    "supervised_plan",
    "domain_prior_plan",
    "DOMAIN_PRIOR_FORMS",
    "custom_plan",
]

LAYOUTS = ("joint", "cross")


def check_layout(layout: str) -> str:
    """Validate a layout name (``"joint"`` or ``"cross"``) and return it."""
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(
            f"layout={layout!r} is not a layout; use 'joint' (N = 2B, SimCLR style, self-pairs "
            f"excluded) or 'cross' (N = B, view 1 against view 2)"
        )
    return layout


def _check_batch_size(batch_size) -> int:
    return check_int("batch_size", batch_size, 2,
                     " (the number of pairs B: contrastive alignment needs at least 2 pairs, with one pair "
                     "there are no negatives)")


def plan_size(batch_size: int, layout: str = "joint") -> int:
    """Number of rows/columns ``N`` of a plan: ``2B`` for ``"joint"``, ``B`` for ``"cross"``."""
    check_layout(layout)
    return 2 * batch_size if layout == "joint" else batch_size


def positive_index(batch_size: int, layout: str = "joint", *, device=None) -> Tensor:
    r"""Column index :math:`\pi(i)` of each anchor's positive.

    Returns
    -------
    Tensor, shape ``(N,)``, int64
        ``[B, ..., 2B-1, 0, ..., B-1]`` for ``"joint"`` (block order, :math:`i \leftrightarrow i+B`);
        ``[0, ..., B-1]`` for ``"cross"``.
    """
    check_layout(layout)
    batch_size = _check_batch_size(batch_size)
    idx = torch.arange(batch_size, device=device)
    if layout == "cross":
        return idx
    return torch.cat([idx + batch_size, idx])


def positive_pairs(batch_size: int, layout: str = "joint", *, device=None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    r"""The default target :math:`\Pi`, the permutation matrix of :math:`\pi`.

    .. math:: \Pi_{ij} = 1[j = \pi(i)]

    Returns
    -------
    Tensor, shape ``(N, N)``
        Rows sum to 1; zero diagonal in the ``"joint"`` layout.

    Examples
    --------
    >>> positive_pairs(2, "joint")
    tensor([[0., 0., 1., 0.],
            [0., 0., 0., 1.],
            [1., 0., 0., 0.],
            [0., 1., 0., 0.]])
    """
    pi = positive_index(batch_size, layout, device=device)
    n = pi.numel()
    plan = torch.zeros(n, n, device=device, dtype=dtype)
    plan[torch.arange(n, device=device), pi] = 1.0
    return plan


def _check_groups(values, name: str, batch_size: Optional[int] = None) -> Tensor:
    if not isinstance(values, Tensor):
        try:
            values = torch.as_tensor(values)
        except Exception as exc:  # noqa: BLE001 - re-raised with a clear message
            raise TypeError(f"{name} must be a 1-D tensor of integer ids, got {type(values)!r}") from exc
    if values.dim() != 1:
        raise ValueError(f"{name} must be 1-D with one id per pair (shape (B,)), got shape "
                         f"{tuple(values.shape)}")
    if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer ids (e.g. torch.long), got dtype {values.dtype}")
    if batch_size is not None and values.numel() != batch_size:
        raise ValueError(f"{name} has {values.numel()} entries but the batch has B={batch_size} pairs")
    _check_batch_size(values.numel())
    return values


def _renormalise_rows(plan: Tensor, mass: Tensor | float = 1.0) -> Tensor:
    return plan * (mass / plan.sum(dim=1, keepdim=True))


def _expand_layout(values: Tensor, layout: str) -> Tensor:
    """Per-pair ids ``(B,)`` to per-row ids ``(N,)`` in the given layout."""
    return torch.cat([values, values]) if layout == "joint" else values


def supervised_plan(labels, layout: str = "joint", *, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""Multi-positive target from class labels (supervised contrastive prior).

    .. math:: P_{ij} \propto 1[y_i = y_j], \quad P_{ii} = 0 \text{ in the joint layout},
              \quad \textstyle\sum_j P_{ij} = 1.

    Each anchor's own other view is always a positive (same label), so every row has mass.

    Parameters
    ----------
    labels : Tensor, shape ``(B,)``, integer
        Class label of each pair (both views share it).
    layout : {"joint", "cross"}

    Returns
    -------
    Tensor, shape ``(N, N)``, rows summing to 1.
    """
    check_layout(layout)
    labels = _check_groups(labels, "labels")
    y = _expand_layout(labels, layout)
    plan = (y[:, None] == y[None, :]).to(dtype)
    if layout == "joint":
        plan.fill_diagonal_(0.0)
    return _renormalise_rows(plan)


#: The two forms of :func:`domain_prior_plan`.
DOMAIN_PRIOR_FORMS = ("per-entry", "row-mass")


def domain_prior_plan(domains, *, alpha: float, beta: float, layout: str = "joint",
                      form: str = "per-entry", mass: float = 0.2,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    r"""The paper's domain prior (page 9), rows renormalised to mass 1, in one of two forms.

    ``form="per-entry"`` (the spec's reading): every entry gets its own weight,

    .. math:: P_{ij} \propto 1[j = \pi(i)] + \alpha\,1[D_i = D_j,\ j \ne \pi(i)]
              + \beta\,1[D_i \ne D_j], \qquad P_{ii} = 0 \text{ (joint layout)}.

    The prior's share of a row then grows with the batch: at N = 512 and four domains,
    α = 0.02 already puts 2.5× the positive's mass on same-domain entries.

    ``form="row-mass"``: the prior's total off-positive mass per row is fixed at ``mass`` (the
    positive keeps ``1 − mass`` at any batch size) and split between same- and cross-domain
    entries by :math:`\delta = \alpha - \beta \in [-1, 1]`:

    .. math:: P_{i\pi(i)} = 1 - m, \quad
              \sum_{j \in S_i} P_{ij} = m\,\tfrac{1 + \delta}{2}, \quad
              \sum_{j \in X_i} P_{ij} = m\,\tfrac{1 - \delta}{2},

    spread evenly over the same-domain non-positive entries :math:`S_i` and the cross-domain
    entries :math:`X_i` (a group absent from the batch passes its mass to the other). The paper's
    own parametrisation is not recoverable (the authors' code has no domain prior).

    In both forms ``alpha > beta`` asks same-domain samples to stay close (domain information
    kept), ``alpha < beta`` pushes towards domain invariance.

    Parameters
    ----------
    domains : Tensor, shape ``(B,)``, integer
        Domain id of each pair.
    alpha, beta : float, ``>= 0``
        per-entry: weight of each same-domain / cross-domain non-positive entry, relative to the
        positive's 1. row-mass: only ``alpha − beta`` matters and must lie in ``[-1, 1]``.
    layout : {"joint", "cross"}
    form : {"per-entry", "row-mass"}
    mass : float in ``[0, 1)``
        row-mass only: the prior's total share of each row.

    Returns
    -------
    Tensor, shape ``(N, N)``, rows summing to 1.
    """
    check_layout(layout)
    alpha = check_nonneg("alpha", alpha, " (a target plan is non-negative)")
    beta = check_nonneg("beta", beta, " (a target plan is non-negative)")
    if form not in DOMAIN_PRIOR_FORMS:
        raise ValueError(f"form={form!r}; choose one of {DOMAIN_PRIOR_FORMS}")
    domains = _check_groups(domains, "domains")
    batch_size = domains.numel()
    d = _expand_layout(domains, layout)
    same = (d[:, None] == d[None, :]).to(dtype)
    pi = positive_index(batch_size, layout, device=d.device)
    rows = torch.arange(pi.numel(), device=d.device)
    if form == "per-entry":
        plan = alpha * same + beta * (1.0 - same)
        plan[rows, pi] = 1.0
        if layout == "joint":
            plan.fill_diagonal_(0.0)
        return _renormalise_rows(plan)
    # row-mass: fixed prior mass m per row, split (1 ± δ)/2 between the two groups
    delta = alpha - beta
    if not -1.0 <= delta <= 1.0:
        raise ValueError(f"alpha - beta = {delta:g} must lie in [-1, 1] for form='row-mass' (it splits the prior's "
                         "row mass between same- and cross-domain entries)")
    mass = check_nonneg("mass", mass)
    if mass >= 1.0:
        raise ValueError(f"mass={mass!r} must be < 1 (the positive keeps 1 - mass of each row)")
    off = torch.ones_like(same)
    off[rows, pi] = 0.0
    if layout == "joint":
        off.fill_diagonal_(0.0)
    s_mask, x_mask = same * off, (1.0 - same) * off
    n_s, n_x = s_mask.sum(1, keepdim=True), x_mask.sum(1, keepdim=True)
    w_s = torch.full_like(n_s, 0.5 * (1.0 + delta))
    w_x = 1.0 - w_s
    w_s, w_x = torch.where(n_x == 0, torch.ones_like(w_s), w_s), torch.where(n_s == 0, torch.ones_like(w_x), w_x)
    plan = mass * (w_s * s_mask / n_s.clamp_min(1.0) + w_x * x_mask / n_x.clamp_min(1.0))
    plan[rows, pi] = 1.0 - mass
    return _renormalise_rows(plan)  # exact up to rounding; also covers a row with no off-positive entry


def custom_plan(matrix, layout: str = "joint", *, batch_size: Optional[int] = None) -> Tensor:
    r"""Validate a user-given non-negative target and renormalise its rows to mass 1.

    .. math:: P_{ij} = M_{ij} / \textstyle\sum_k M_{ik}

    Parameters
    ----------
    matrix : Tensor or array-like, shape ``(N, N)``
        Non-negative, finite, every row with positive mass; zero diagonal in the ``"joint"``
        layout (self-pairs are excluded from the plan, so they cannot carry target mass).
    layout : {"joint", "cross"}
    batch_size : int, optional
        If given, the expected number of pairs ``B`` (checks ``N``).

    Returns
    -------
    Tensor, shape ``(N, N)``, floating point, rows summing to 1.
    """
    check_layout(layout)
    if not isinstance(matrix, Tensor):
        try:
            matrix = torch.as_tensor(matrix)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"target must be a tensor or array-like (N, N) matrix, got {type(matrix)!r}") from exc
    if matrix.dtype.is_complex:
        raise TypeError(f"target must be real, got dtype {matrix.dtype}")
    if not matrix.dtype.is_floating_point:
        matrix = matrix.to(torch.get_default_dtype())
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"target must be a square (N, N) matrix, got shape {tuple(matrix.shape)}")
    n = matrix.shape[0]
    if batch_size is not None:
        expected = plan_size(batch_size, layout)
        if n != expected:
            raise ValueError(
                f"target has shape {tuple(matrix.shape)} but layout={layout!r} with B={batch_size} "
                f"pairs needs ({expected}, {expected})"
            )
    if layout == "joint" and n % 2:
        raise ValueError(f"target has odd size N={n}; the joint layout has N = 2B rows")
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError("target contains NaN or inf entries; a target plan must be finite")
    if bool((matrix < 0).any()):
        raise ValueError(f"target has negative entries (min {matrix.min().item():.3g}); a transport "
                         f"plan must be non-negative")
    if layout == "joint" and bool((matrix.diagonal() != 0).any()):
        raise ValueError("target puts mass on self-pairs (non-zero diagonal) but the joint layout "
                         "excludes them; set the diagonal to 0")
    row_mass = matrix.sum(dim=1)
    if bool((row_mass <= 0).any()):
        bad = int(torch.nonzero(row_mass <= 0)[0])
        raise ValueError(f"target row {bad} has no mass; every anchor needs at least one positive entry")
    return _renormalise_rows(matrix)
