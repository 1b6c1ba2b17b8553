r"""The entropic OT problem: cost, marginals, ε, marginal penalties ρ — and the KL projections.

A :class:`Problem` holds the data of one (batched) problem, validated once by
:func:`make_problem`; the solver settings (iterations, tolerance, gradient mode, back end) are
separate (:class:`gca.ot.solvers.SolverOptions`). Here also:

- the input checks of costs and marginals (the messages name the value and the fix);
- the unbalanced relaxation's proximal exponents ``τ = ρ/(ρ + ε)`` (:func:`proximal_exponents`):
  the KL-relaxed row step is the proximal step ``u ← (a / K v)^τ``, ``τ = 1`` the hard projection;
- the Bregman (KL) projections on dense log-plans, :func:`~gca.ot.row_projection`,
  :func:`~gca.ot.column_projection`, :func:`~gca.ot.bregman_projections` (small problems, the book: "INCE = one
  row projection").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..checks import FLOAT_DTYPES, check_epsilon, check_int, check_rho, compute_dtype
from .result import SinkhornNumericalError

__all__ = [
    "Problem",
    "make_problem",
    "proximal_exponents",
    "row_projection",
    "column_projection",
    "bregman_projections",
    "check_cost",
    "cost_range",
    "diagnose_infeasible",
    "check_scaled_range",
    "check_log_plan",
    "marginal",
]


@dataclass(frozen=True, eq=False)
class Problem:
    r"""One (batched) entropic OT problem, validated (:func:`make_problem`).

    .. math::
        \min_{P \ge 0}\ \langle P, C\rangle - \varepsilon H(P)
        + \rho_a \mathrm{KL}(P\mathbf 1 \,\|\, a) + \rho_b \mathrm{KL}(P^\top\mathbf 1 \,\|\, b),

    with ``ρ = inf`` a hard marginal (both ``inf``: the balanced problem).

    Attributes
    ----------
    cost : Tensor ``(..., n, m)`` — in the compute dtype (float32 for half precisions).
    a, b : Tensor ``(..., n)``, ``(..., m)`` — marginals broadcast to the batch shape.
    epsilon : float
    rho : tuple of float — ``(rho_a, rho_b)``.
    """

    cost: Tensor
    a: Tensor
    b: Tensor
    epsilon: float
    rho: tuple

    @property
    def balanced(self) -> bool:
        return self.rho == (math.inf, math.inf)

    @property
    def batch_shape(self) -> torch.Size:
        return self.cost.shape[:-2]


def make_problem(cost, a=None, b=None, *, epsilon, rho=None, caller: str = "sinkhorn") -> Problem:
    """Validate the problem's data (``rho=None``: balanced) and return a :class:`Problem`.

    Raises ``TypeError`` / ``ValueError`` naming the bad value; for the balanced problem the two
    marginals must carry the same mass.
    """
    eps = check_epsilon(epsilon)
    C = check_cost(cost)
    rho_pair = (math.inf, math.inf) if rho is None else check_rho(rho)
    batch_shape, (n, m) = C.shape[:-2], C.shape[-2:]
    a_ = marginal(a, C, n, "a", batch_shape)
    b_ = marginal(b, C, m, "b", batch_shape)
    if rho_pair == (math.inf, math.inf):
        with torch.no_grad():
            ma, mb = a_.detach().sum(-1), b_.detach().sum(-1)
            rtol = 1e-9 if C.dtype == torch.float64 else 1e-4
            if bool(((ma - mb).abs() > rtol * torch.maximum(ma, mb)).any()):
                raise ValueError(
                    f"{caller}: the balanced problem needs a.sum() == b.sum(), got {float(ma.flatten()[0])!r} "
                    f"and {float(mb.flatten()[0])!r}; normalise the marginals or use sinkhorn_unbalanced(..., rho=...)")
    return Problem(cost=C, a=a_, b=b_, epsilon=eps, rho=rho_pair)


def proximal_exponents(rho: tuple, epsilon: float) -> tuple:
    """``(τ_a, τ_b)`` with ``τ = ρ/(ρ + ε)`` (``1`` for a hard marginal): the exponents of the
    unbalanced (KL-proximal) scaling steps ``u ← (a / K v)^{τ_a}``, ``v ← (b / Kᵀ u)^{τ_b}``."""
    return tuple(1.0 if math.isinf(r) else r / (r + epsilon) for r in rho)


# ----------------------------------------------------------------------------------------------
# Bregman projections (reference implementation; dense log-plans)
# ----------------------------------------------------------------------------------------------
def row_projection(log_plan: Tensor, a: Tensor | None = None) -> Tensor:
    r"""KL projection onto the row constraint :math:`\{P : P\mathbf 1 = a\}`, in the log domain.

    .. math::
        \operatorname{argmin}_{P\mathbf 1 = a} \mathrm{KL}(P\,\|\,Q) = \operatorname{diag}(a / Q\mathbf 1)\,Q .

    Parameters
    ----------
    log_plan : Tensor ``(..., n, m)``
        ``log Q`` (``-inf`` for zero entries; every row needs a finite entry).
    a : Tensor ``(..., n)`` or ``(n,)``, optional
        Row marginal (positive). Default: uniform ``1/n``.

    Returns
    -------
    Tensor ``(..., n, m)``: ``log`` of the projected plan. With ``log_plan = S/ε`` and ``a = 1``
    this is the row ``log_softmax`` — the plan ``P^(1)`` whose positive-pair entries give INCE.
    """
    check_log_plan(log_plan, "log_plan")
    la = marginal(a, log_plan, log_plan.shape[-2], "a", batch_shape=log_plan.shape[:-2]).log()
    return log_plan - torch.logsumexp(log_plan, -1, keepdim=True) + la[..., :, None]


def column_projection(log_plan: Tensor, b: Tensor | None = None) -> Tensor:
    r"""KL projection onto the column constraint :math:`\{P : P^\top\mathbf 1 = b\}` (log domain).

    .. math::
        \operatorname{argmin}_{P^\top\mathbf 1 = b} \mathrm{KL}(P\,\|\,Q) = Q\,\operatorname{diag}(b / Q^\top\mathbf 1).

    Parameters and returns as :func:`row_projection` (``b`` of shape ``(..., m)``, default ``1/m``).
    """
    check_log_plan(log_plan, "log_plan")
    lb = marginal(b, log_plan, log_plan.shape[-1], "b", batch_shape=log_plan.shape[:-2]).log()
    return log_plan - torch.logsumexp(log_plan, -2, keepdim=True) + lb[..., None, :]


def bregman_projections(
    cost: Tensor, a: Tensor | None = None, b: Tensor | None = None, *, epsilon: float, n_steps: int
) -> Tensor:
    r"""The sequence of alternating Bregman projections :math:`P^{(0)}, \dots, P^{(n)}` (log domain).

    .. math::
        P^{(0)} = K = e^{-C/\varepsilon},\quad
        P^{(2t-1)} = \operatorname{diag}(a / P^{(2t-2)}\mathbf 1)\,P^{(2t-2)},\quad
        P^{(2t)} = P^{(2t-1)}\operatorname{diag}(b / P^{(2t-1)\top}\mathbf 1).

    A dense reference (each step materialises an ``n × m`` matrix): ``P^(2T)`` equals
    ``sinkhorn(cost, a, b, epsilon=ε, max_iter=T, tol=0).plan`` and ``P^(2T−1)`` its ``plan_prev``.

    Parameters
    ----------
    cost : Tensor ``(..., n, m)``
    a, b : Tensor, optional — marginals (default uniform probability vectors).
    epsilon : float > 0
    n_steps : int ≥ 0 — number of half-steps (projections).

    Returns
    -------
    Tensor ``(n_steps + 1, ..., n, m)``: ``log P^(k)`` for ``k = 0..n_steps``.
    """
    eps = check_epsilon(epsilon)
    n_steps = check_int("n_steps", n_steps, 0)
    C = check_cost(cost)
    cost_range(C.detach().reshape(-1, *C.shape[-2:]))
    diagnose_infeasible(C.detach().reshape(-1, *C.shape[-2:]))
    a_ = marginal(a, C, C.shape[-2], "a", batch_shape=C.shape[:-2])
    b_ = marginal(b, C, C.shape[-1], "b", batch_shape=C.shape[:-2])
    out = [-C / eps]
    for k in range(1, n_steps + 1):
        out.append(row_projection(out[-1], a_) if k % 2 else column_projection(out[-1], b_))
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------
def check_cost(cost) -> Tensor:
    """Validate type/dtype/shape; returns the cost in its compute dtype (values: :func:`cost_range`)."""
    if not isinstance(cost, Tensor):
        raise TypeError(f"cost must be a torch.Tensor, got {type(cost).__name__}; "
                        "convert with torch.as_tensor(cost, dtype=torch.float64)")
    if cost.dtype not in FLOAT_DTYPES:
        raise TypeError(f"cost must be a floating-point tensor, got dtype {cost.dtype}; "
                        "convert with cost.float() or cost.double()")
    if cost.ndim < 2 or cost.shape[-1] == 0 or cost.shape[-2] == 0:
        raise ValueError(f"cost must have shape (..., n, m) with n, m >= 1, got {tuple(cost.shape)}")
    if cost.numel() == 0:
        raise ValueError(f"cost has an empty batch dimension: shape {tuple(cost.shape)}")
    return cost.to(compute_dtype(cost.dtype))


def cost_range(Cd: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Per-problem ``(min C, max finite C, has +inf)`` of a detached ``(B, n, m)`` cost (1–3 passes).

    Raises on NaN / ``-inf`` entries and on problems whose costs are all ``+inf``.
    """
    flat = Cd.reshape(Cd.shape[0], -1)
    lo, hi = flat.amin(-1), flat.amax(-1)  # (torch.aminmax is much slower on CPU)
    lo_v, hi_v = torch.stack([lo.min(), hi.max()]).tolist()
    if math.isnan(lo_v) or math.isnan(hi_v):
        raise ValueError("cost contains NaN; remove or replace the NaN entries (use +inf to exclude a pair)")
    if lo_v == -math.inf:
        raise ValueError("cost contains -inf; costs must be finite or +inf (an excluded pair)")
    has_inf = hi_v == math.inf
    if has_inf:
        hi = flat.nan_to_num(posinf=-math.inf).amax(-1)
        if bool((hi == -math.inf).any()):
            raise ValueError("cost has only +inf entries: no feasible plan; give every row and column "
                             "at least one finite cost")
    return lo, hi, has_inf


def diagnose_infeasible(Cd: Tensor) -> None:
    """Raise a clear ValueError if a row or column of the cost is entirely ``+inf``."""
    mask = Cd == math.inf
    for which, bad in (("row", mask.all(-1)), ("column", mask.all(-2))):
        if bool(bad.any()):
            idx = bad.nonzero()[0].tolist()
            raise ValueError(f"cost has a {which} with only +inf entries (batch, index) = {idx}: no "
                             "feasible plan; give every row and column at least one finite cost")


def check_scaled_range(big: float, eps: float, dtype: torch.dtype, caller: str) -> None:
    """Refuse a problem whose scaled cost ``C/ε`` (or ``1/ε``) would not be finite in ``dtype``.

    Both domains form ``C/ε`` (the kernel as ``exp((c − C)/ε)``, a difference of two such terms);
    an ``inf`` there would reach the BLAS products as ``inf``/``NaN`` — whose floating-point
    flags (and NumPy's warnings) depend on the CPU's kernel — so it is reported here, first.
    """
    limit = torch.finfo(dtype).max / 4  # room for one difference of two scaled entries
    if 1.0 / eps > limit:
        raise SinkhornNumericalError(
            f"{caller}: epsilon={eps:.3g} is too small for {dtype}: 1/epsilon is not representable "
            f"(non-finite scaled cost); use epsilon >= {1.0 / limit:.3g}, float64, or rescale the cost")
    if big / eps > limit:
        raise SinkhornNumericalError(
            f"{caller}: cost/epsilon is non-finite in {dtype} (max |cost| = {big:.3g}, epsilon={eps:.3g}, "
            f"ratio {big / eps:.3g} > {limit:.3g}); rescale the cost (e.g. divide by its max), use a "
            "larger epsilon, or float64")


def check_log_plan(log_plan, name):
    if not isinstance(log_plan, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(log_plan).__name__}")
    if log_plan.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be floating point, got dtype {log_plan.dtype}; use .float()")
    if log_plan.ndim < 2:
        raise ValueError(f"{name} must have shape (..., n, m), got {tuple(log_plan.shape)}")
    if bool(torch.isnan(log_plan).any()) or bool((log_plan == math.inf).any()):
        raise ValueError(f"{name} contains NaN or +inf; log-plans take values in [-inf, inf)")


def marginal(x, C: Tensor, size: int, name: str, batch_shape) -> Tensor:
    """Validated marginal broadcast to ``batch_shape + (size,)`` in C's dtype/device."""
    if x is None:
        return torch.full((*batch_shape, size), 1.0 / size, dtype=C.dtype, device=C.device)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(x).__name__}; "
                        f"convert with torch.as_tensor({name}, dtype=cost.dtype)")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; use {name}.to(cost.dtype)")
    if x.device != C.device:
        raise ValueError(f"{name} is on {x.device} but cost is on {C.device}; move it with {name}.to(cost.device)")
    if x.ndim == 0 or x.shape[-1] != size:
        raise ValueError(f"{name} must have length {size} in its last dimension (cost shape "
                         f"{(*batch_shape, '…')}), got shape {tuple(x.shape)}")
    try:
        x = torch.broadcast_to(x, (*batch_shape, size))
    except RuntimeError:
        raise ValueError(f"{name} of shape {tuple(x.shape)} does not broadcast to the batch shape "
                         f"{tuple(batch_shape) + (size,)}") from None
    x = x.to(C.dtype)
    with torch.no_grad():
        xd = x.detach()
        if not bool(torch.isfinite(xd).all()):
            raise ValueError(f"{name} contains non-finite values; marginals must be finite and > 0")
        if bool((xd <= 0).any()):
            mn = float(xd.min())
            raise ValueError(f"{name} must be strictly positive, found min {mn!r}; drop zero-mass "
                             "points from the problem (or remove their rows/columns of the cost)")
    return x
