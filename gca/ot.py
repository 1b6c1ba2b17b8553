r"""Entropic optimal transport: log-domain Sinkhorn (balanced and unbalanced), Bregman projections.

The contrastive losses of the paper are built on the alternating KL (Bregman) projections of a Gibbs
kernel onto the row- and column-marginal constraints (``paper.md`` §2, §4). This module provides

- :func:`row_projection`, :func:`column_projection`, :func:`bregman_projections` — the projections
  themselves, on log-plans (small problems, the book: "INCE = one row projection");
- :func:`sinkhorn` — the balanced entropic problem, and :func:`sinkhorn_unbalanced` — KL-relaxed
  marginals; both return a frozen :class:`SinkhornResult`;
- gradient modes through the solution (``grad="unrolled" | "implicit" | "detach"``).

Conventions (used by every function here)
-----------------------------------------
Cost ``C`` of shape ``(..., n, m)`` (leading batch dimensions allowed; ``+inf`` marks an excluded
pair), marginals ``a`` ``(..., n)`` and ``b`` ``(..., m)`` (default: uniform probability vectors
``1/n``, ``1/m``; the losses pass ``1_N``). Potentials ``f`` ``(..., n)``, ``g`` ``(..., m)`` define the
plan **without** any marginal factor:

.. math::
    P_{ij} = \exp\big((f_i + g_j - C_{ij})/\varepsilon\big), \qquad
    u = e^{f/\varepsilon},\ v = e^{g/\varepsilon},\ P = \operatorname{diag}(u)\,K\,\operatorname{diag}(v),
    \ K = e^{-C/\varepsilon}.

One *iteration* is a row step followed by a column step, starting from ``g = 0`` (``v = 1``):

.. math::
    f^{(t)} = \tau_a\big(\varepsilon\log a - \varepsilon\,\mathrm{LSE}_j[(g^{(t-1)}_j - C_{ij})/\varepsilon]\big),\quad
    g^{(t)} = \tau_b\big(\varepsilon\log b - \varepsilon\,\mathrm{LSE}_i[(f^{(t)}_i - C_{ij})/\varepsilon]\big),

with :math:`\tau = 1` (balanced) or :math:`\tau_k = \rho_k/(\rho_k+\varepsilon)` (unbalanced). Thus
``P^(2t) = exp((f^(t) ⊕ g^(t) − C)/ε)`` and the half-step plan
``P^(2t−1) = exp((f^(t) ⊕ g^(t−1) − C)/ε)``; the result's ``g_prev`` is ``g^(T−1)``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "SinkhornResult",
    "SinkhornConvergenceWarning",
    "SinkhornNumericalError",
    "sinkhorn",
    "sinkhorn_unbalanced",
    "row_projection",
    "column_projection",
    "bregman_projections",
    "epsilon_scaling_schedule",
    "kernel_range_limit",
]

GRAD_MODES = ("unrolled", "implicit", "detach")
STAGE_TOL = 1e-3  # stopping tolerance of the intermediate ε-scaling stages
IMPLICIT_DENSE_MAX = 2048  # implicit backward: dense m × m solve up to this m, conjugate gradient above
DOMAINS = ("auto", "log", "kernel")
NUMPY_MATVEC_MAX = 2**21  # CPU kernel path: NumPy/OpenBLAS matvecs up to this n·m, torch.matmul above (_matvecs)


class SinkhornConvergenceWarning(UserWarning):
    """Sinkhorn stopped at ``max_iter`` before reaching ``tol``.

    Filter it with ``warnings.simplefilter("ignore", gca.ot.SinkhornConvergenceWarning)``.
    """


class SinkhornNumericalError(FloatingPointError):
    """Non-finite potentials or a numerically unusable kernel (never silently returned)."""


# ----------------------------------------------------------------------------------------------
# Result object
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SinkhornResult:
    r"""Solution of an entropic OT problem; the plan is formed lazily.

    Attributes
    ----------
    f, g : Tensor ``(..., n)``, ``(..., m)``
        Potentials after the last iteration: ``P = exp((f[..., :, None] + g[..., None, :] − C)/ε)``.
    g_prev : Tensor ``(..., m)``
        Column potential before the last row step, ``g^(T−1)`` (``0`` or the warm start if
        ``n_iter = 1``): the half-step plan is ``P^(2T−1) = exp((f ⊕ g_prev − C)/ε)``.
    cost : Tensor ``(..., n, m)``
        The cost the solver used (float32 for half/bfloat16 inputs).
    a, b : Tensor ``(..., n)``, ``(..., m)``
        Marginals used (after defaults and broadcasting).
    epsilon : float
    rho : tuple of float
        ``(rho_a, rho_b)``; ``(inf, inf)`` for the balanced problem.
    n_iter : int
        Full iterations run.
    converged : bool
        ``error <= tol``. Always ``False`` when ``tol = 0`` (fixed iteration count, not tested).
    error : float or None
        The stopping criterion at the returned iterate (``None`` when ``tol = 0``): balanced — the
        relative L1 row-marginal error ``‖P1 − a‖₁/‖a‖₁`` (columns are exact after a column step);
        unbalanced — ``max(‖Δf‖∞, ‖Δg‖∞)/ε`` between the last two iterations.
    domain : str
        ``"kernel"`` or ``"log"``: which implementation produced the iterates.
    grad : str
        Gradient mode.
    row_lse : Tensor ``(..., n)`` or None
        Only with ``return_row_lse=True``: ``LSE_j((g_j − C_ij)/ε)`` at the returned ``g``, i.e.
        ``log (K v)_i``; the final plan's row sums are ``exp(f/ε + row_lse)``. Differentiable in
        every gradient mode (one extra matrix–vector product in the kernel path).

    Lazy properties: :attr:`plan`, :attr:`plan_prev`, :attr:`marginal_error_a`,
    :attr:`marginal_error_b` (relative L1 errors per batch element, shape ``(...)``).
    """

    f: Tensor
    g: Tensor
    g_prev: Tensor
    cost: Tensor = field(repr=False)
    a: Tensor = field(repr=False)
    b: Tensor = field(repr=False)
    epsilon: float
    rho: tuple
    n_iter: int
    converged: bool
    error: float | None
    domain: str
    grad: str
    row_lse: Tensor | None = None

    def _log_plan(self, g: Tensor) -> Tensor:
        e = self.epsilon  # f/ε ⊕ g/ε − C/ε in two n×m passes (the second in place)
        return ((self.f / e)[..., :, None] + (g / e)[..., None, :]).add_(self.cost, alpha=-1.0 / e)

    @cached_property
    def log_plan(self) -> Tensor:
        """``log P = (f ⊕ g − C)/ε`` ``(..., n, m)`` (``-inf`` on excluded pairs)."""
        return self._log_plan(self.g)

    @cached_property
    def plan(self) -> Tensor:
        """Transport plan ``P = exp((f ⊕ g − C)/ε)`` ``(..., n, m)`` (dense; formed on first access)."""
        return self._log_plan(self.g).exp_()  # (not via log_plan: no second n×m cached)

    @cached_property
    def plan_prev(self) -> Tensor:
        """Half-step plan ``P^(2T−1) = exp((f ⊕ g_prev − C)/ε)``: rows match ``a`` (balanced)."""
        return self._log_plan(self.g_prev).exp_()

    @cached_property
    def marginal_error_a(self) -> Tensor:
        """Relative L1 error of the row marginal, ``‖P1 − a‖₁ / ‖a‖₁``, shape ``(...)``."""
        with torch.no_grad():
            rows = torch.logsumexp(self._log_plan(self.g).detach(), -1).exp()
            return (rows - self.a).abs().sum(-1) / self.a.sum(-1)

    @cached_property
    def marginal_error_b(self) -> Tensor:
        """Relative L1 error of the column marginal, ``‖Pᵀ1 − b‖₁ / ‖b‖₁``, shape ``(...)``."""
        with torch.no_grad():
            cols = torch.logsumexp(self._log_plan(self.g).detach(), -2).exp()
            return (cols - self.b).abs().sum(-1) / self.b.sum(-1)


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
    _check_log_plan(log_plan, "log_plan")
    la = _marginal(a, log_plan, log_plan.shape[-2], "a", batch_shape=log_plan.shape[:-2]).log()
    return log_plan - torch.logsumexp(log_plan, -1, keepdim=True) + la[..., :, None]


def column_projection(log_plan: Tensor, b: Tensor | None = None) -> Tensor:
    r"""KL projection onto the column constraint :math:`\{P : P^\top\mathbf 1 = b\}` (log domain).

    .. math::
        \operatorname{argmin}_{P^\top\mathbf 1 = b} \mathrm{KL}(P\,\|\,Q) = Q\,\operatorname{diag}(b / Q^\top\mathbf 1).

    Parameters and returns as :func:`row_projection` (``b`` of shape ``(..., m)``, default ``1/m``).
    """
    _check_log_plan(log_plan, "log_plan")
    lb = _marginal(b, log_plan, log_plan.shape[-1], "b", batch_shape=log_plan.shape[:-2]).log()
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
    eps = _check_epsilon(epsilon)
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 0:
        raise ValueError(f"n_steps must be an integer >= 0, got {n_steps!r}")
    C = _check_cost(cost)
    _cost_range(C.detach().reshape(-1, *C.shape[-2:]))
    _diagnose_infeasible(C.detach().reshape(-1, *C.shape[-2:]))
    a_ = _marginal(a, C, C.shape[-2], "a", batch_shape=C.shape[:-2])
    b_ = _marginal(b, C, C.shape[-1], "b", batch_shape=C.shape[:-2])
    out = [-C / eps]
    for k in range(1, n_steps + 1):
        out.append(row_projection(out[-1], a_) if k % 2 else column_projection(out[-1], b_))
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------
# Public solvers
# ----------------------------------------------------------------------------------------------
def sinkhorn(
    cost: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    *,
    epsilon: float,
    max_iter: int = 1000,
    tol: float = 1e-6,
    grad: str = "unrolled",
    domain: str = "auto",
    init: Tensor | SinkhornResult | None = None,
    epsilon_schedule: Sequence[float] | None = None,
    check_every: int = 1,
    return_row_lse: bool = False,
) -> SinkhornResult:
    r"""Balanced entropic optimal transport by Sinkhorn iterations (log domain; kernel fast path where safe).

    .. math::
        P^\star = \operatorname{argmin}_{P \ge 0,\ P\mathbf 1 = a,\ P^\top\mathbf 1 = b}
        \langle P, C\rangle - \varepsilon H(P), \qquad H(P) = -\textstyle\sum_{ij} P_{ij}(\log P_{ij} - 1),

    the problem of POT's ``ot.sinkhorn(a, b, C, ε)`` (same plan at convergence). The iterations and
    the potentials' convention are in the module docstring: ``P = exp((f ⊕ g − C)/ε)``.

    Parameters
    ----------
    cost : Tensor ``(..., n, m)``, floating point
        ``+inf`` entries are excluded pairs (``K = 0``); every row and column needs a finite entry.
        NaN and ``-inf`` are rejected. half/bfloat16 costs are solved in float32 (results float32).
    a, b : Tensor ``(n,)`` / ``(..., n)`` and ``(m,)`` / ``(..., m)``, optional
        Positive marginals with equal mass. Default: uniform probability vectors.
    epsilon : float > 0
        Entropic regulariser (the temperature of the losses).
    max_iter : int ≥ 1
        Maximum number of iterations. With ``tol = 0`` exactly ``max_iter`` iterations are run and
        no convergence test (nor warning) happens — the fixed-``T`` path of the losses.
    tol : float ≥ 0
        Stop when the relative L1 row-marginal error ``‖P1 − a‖₁/‖a‖₁`` is ``≤ tol`` (tested every
        ``check_every`` iterations, at no extra matrix–vector product). If ``max_iter`` is reached
        first, a :class:`SinkhornConvergenceWarning` is emitted.
    grad : {"unrolled", "implicit", "detach"}
        Differentiation through the solution (w.r.t. ``cost``, ``a``, ``b``):

        - ``"unrolled"`` — exact gradient of the returned iterates (``f``, ``g``, ``g_prev``) for
          any number of iterations, converged or not. Custom backward: 2 matrix–vector products per
          half-step plus **one** low-rank product ``K ⊙ (X Yᵀ)`` (``X, Y`` with ``2T`` columns) in
          the kernel domain, or one streamed ``n × m`` pass per half-step in the log domain; memory
          ``O(nm + T(n+m))`` instead of ``T`` dense matrices. Always valid for what was computed;
          with ``tol > 0`` the (data-dependent) number of iterations is treated as fixed.
        - ``"implicit"`` — implicit function theorem at the fixed point (a dense ``m × m`` solve,
          ``O(m³)`` time and ``O(nm + m²)`` memory, for ``m ≤ 2048``; matrix-free conjugate
          gradient above, ``O(nm)`` memory), whatever the iteration count; exact only at
          convergence (use ``tol > 0``; with ``tol = 0`` it is an approximation whose error decays
          with the marginal error). ``g_prev`` is treated as ``g``.
          The balanced fixed point is defined up to ``(f + c, g − c)``: the gradient is exact for
          functions invariant to that shift (anything computed from the plan); the component
          along the shift is dropped otherwise.
        - ``"detach"`` — potentials carry no gradient; the plan (from :attr:`SinkhornResult.plan`)
          is still differentiable through the explicit ``−C/ε``.
    domain : {"auto", "log", "kernel"}
        ``"auto"`` uses the kernel-domain fast path when it is safe (rule below), else the log
        domain; ``"kernel"`` requires it (``ValueError`` if the rule fails); ``"log"`` forces logs.
    init : Tensor ``(..., m)`` or SinkhornResult, optional
        Warm start for ``g^(0)`` (detached). Default ``0``.
    epsilon_schedule : sequence of float, optional
        ε-scaling: solve successively for each value (e.g. decreasing to ``epsilon``, see
        :func:`epsilon_scaling_schedule`) with ``max_iter``/``tol``, warm-starting each from the
        previous potentials, then solve at ``epsilon``. Intermediate stages stop at
        ``max(tol, 1e-3)`` (they only provide a warm start); only the final stage is differentiated
        and tested against ``tol``.
    check_every : int ≥ 1
        Test the stopping criterion every this many iterations.
    return_row_lse : bool
        Also return ``SinkhornResult.row_lse`` ``= LSE_j((g_j − C_ij)/ε)`` (the final plan's
        row log-normaliser up to ``f/ε``), differentiable; one extra matvec in the kernel path.

    Returns
    -------
    SinkhornResult

    Notes
    -----
    **Kernel-domain safety rule.** Let ``c = min C`` (per problem), ``R = (max_finite C − c)/ε``
    and ``K = exp(−(C − c)/ε)``, whose entries lie in ``{0} ∪ [e^{−R}, 1]``. The kernel path runs
    the scaling iterations ``u ← (a / K v)^{τ_a}``, ``v ← (b / Kᵀ u)^{τ_b}`` with each scaling
    renormalised to maximum 1 at every half-step (its log-scale is tracked separately), so nothing
    can overflow (``K v̂ ≤ m``), and the potentials are formed from the denominators
    ``d = K v̂``, ``e = Kᵀ û`` — algebraically the log-domain update. Terms that underflow are each
    ``< tiny``, so every denominator has relative error ``≤ eps`` when ``d ≥ m·tiny/eps``. The fast
    path is attempted iff ``R ≤ kernel_range_limit(dtype, max(n, m)) = log(eps/(max(n,m)·tiny)) − 1``
    (≈ 61 for float32, ≈ 700 for float64 at ``n = 1024``); for costs without ``+inf`` this
    *guarantees* ``d ≥ e^{−R}`` (the row's entry at the column where ``v̂ = 1``), hence
    working-precision agreement with the log domain. With ``+inf`` entries that argument does not
    hold, so the bound is checked a posteriori: all denominators are kept, and if any is below
    ``max(n,m)·tiny/eps`` (or a potential is non-finite) the solve is repeated in the log domain
    (``SinkhornNumericalError`` for ``domain="kernel"``). Typical use — cosine costs (range 2) at
    ``ε ≥ 0.05`` in float32 — is always on the fast path.

    **Speed on CPU.** The kernel path's matrix–vector products go through NumPy's OpenBLAS pinned
    to one thread for kernels of at most ``gca.ot.NUMPY_MATVEC_MAX`` entries (``torch.matmul``
    above, and on CUDA): at these sizes that is faster than ``torch.matmul``, and it leaves no
    spinning BLAS workers behind to slow the training step that follows. Measured side by side
    with POT's solvers in ``benchmarks/results/ot.md``.

    Examples
    --------
    >>> import torch
    >>> from gca.ot import sinkhorn
    >>> C = torch.rand(5, 4, dtype=torch.float64)
    >>> res = sinkhorn(C, epsilon=0.1, tol=1e-10)
    >>> bool(torch.allclose(res.plan.sum(1), torch.full((5,), 0.2, dtype=torch.float64)))
    True
    """
    return _solve(cost, a, b, epsilon=epsilon, rho=None, max_iter=max_iter, tol=tol, grad=grad,
                  domain=domain, init=init, epsilon_schedule=epsilon_schedule,
                  check_every=check_every, return_row_lse=return_row_lse, caller="sinkhorn")


def sinkhorn_unbalanced(
    cost: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    *,
    epsilon: float,
    rho: float | tuple[float, float],
    max_iter: int = 1000,
    tol: float = 1e-6,
    grad: str = "unrolled",
    domain: str = "auto",
    init: Tensor | SinkhornResult | None = None,
    epsilon_schedule: Sequence[float] | None = None,
    check_every: int = 1,
    return_row_lse: bool = False,
) -> SinkhornResult:
    r"""Unbalanced entropic OT with KL-relaxed marginals (paper §4, "unbalanced plan").

    .. math::
        P^\star = \operatorname{argmin}_{P \ge 0}\ \langle P, C\rangle - \varepsilon H(P)
        + \rho_a \mathrm{KL}(P\mathbf 1 \,\|\, a) + \rho_b \mathrm{KL}(P^\top\mathbf 1 \,\|\, b),

    with generalised KL ``KL(p‖q) = Σ p log(p/q) − p + q`` and ``H`` as in :func:`sinkhorn`. Iterations
    ``u ← (a / K v)^{τ_a}``, ``v ← (b / Kᵀ u)^{τ_b}``, ``τ = ρ/(ρ + ε)``, ``v⁰ = 1`` (log domain:
    the potential update is damped by ``τ``). ``ρ = inf`` on a side makes that marginal hard.

    This is POT's ``ot.unbalanced.sinkhorn_unbalanced(a, b, C, reg=ε, reg_m=(ρ_a, ρ_b),
    reg_type="entropy")`` (entropy = KL to the all-ones matrix, the same ``−H(P)`` up to a constant).
    POT's default ``reg_type="kl"`` regularises by ``KL(P‖a⊗b)`` instead, which equals this
    problem with cost ``C − ε log(a ⊗ b)`` (plus a constant).

    Parameters
    ----------
    rho : float > 0 or pair ``(rho_a, rho_b)``
        Marginal penalties (``inf`` allowed: a hard marginal; both ``inf`` is :func:`sinkhorn`).
    tol : float ≥ 0
        Stop when ``max(‖f^(t) − f^(t−1)‖∞, ‖g^(t) − g^(t−1)‖∞)/ε ≤ tol`` (the largest change of a
        log-scaling). ``tol = 0``: exactly ``max_iter`` iterations, no test.

    Other parameters, returns, gradient modes and the kernel-domain rule: as :func:`sinkhorn`
    (``a``/``b`` need not have equal masses). The implicit mode solves the damped fixed point,
    which is non-singular when ``τ_a τ_b < 1``.
    """
    _check_rho(rho)  # (None is not a valid rho here: use sinkhorn for the balanced problem)
    return _solve(cost, a, b, epsilon=epsilon, rho=rho, max_iter=max_iter, tol=tol, grad=grad,
                  domain=domain, init=init, epsilon_schedule=epsilon_schedule,
                  check_every=check_every, return_row_lse=return_row_lse, caller="sinkhorn_unbalanced")


def epsilon_scaling_schedule(epsilon: float, *, start: float, factor: float = 0.5) -> list[float]:
    """Geometric ε-scaling schedule ``[start, start·factor, ...]`` of values strictly above ``epsilon``.

    Pass it as ``epsilon_schedule=`` to :func:`sinkhorn` / :func:`sinkhorn_unbalanced`.
    """
    eps = _check_epsilon(epsilon)
    start = _check_epsilon(start, "start")
    if not (0.0 < factor < 1.0):
        raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
    out, e = [], start
    while e > eps * (1 + 1e-12):
        out.append(e)
        e *= factor
    return out


def kernel_range_limit(dtype: torch.dtype, size: int) -> float:
    """Largest ``(max_finite C − min C)/ε`` for which the kernel-domain path is attempted.

    ``log(eps / (size · tiny)) − 1`` for the compute ``dtype`` (see :func:`sinkhorn`, Notes).
    """
    fi = torch.finfo(dtype)
    return math.log(fi.eps / (max(int(size), 1) * fi.tiny)) - 1.0


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_epsilon(epsilon, name: str = "epsilon") -> float:
    if isinstance(epsilon, Tensor):
        if epsilon.numel() != 1:
            raise ValueError(f"{name} must be a positive scalar, got a tensor of shape {tuple(epsilon.shape)}")
        epsilon = epsilon.item()
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {type(epsilon).__name__} {epsilon!r}")
    epsilon = float(epsilon)
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"{name} must be finite and > 0, got {epsilon!r}; pass e.g. {name}=0.1")
    return epsilon


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _check_cost(cost) -> Tensor:
    """Validate type/dtype/shape; returns the cost in its compute dtype (values: :func:`_cost_range`)."""
    if not isinstance(cost, Tensor):
        raise TypeError(f"cost must be a torch.Tensor, got {type(cost).__name__}; "
                        "convert with torch.as_tensor(cost, dtype=torch.float64)")
    if cost.dtype not in _FLOATS:
        raise TypeError(f"cost must be a floating-point tensor, got dtype {cost.dtype}; "
                        "convert with cost.float() or cost.double()")
    if cost.ndim < 2 or cost.shape[-1] == 0 or cost.shape[-2] == 0:
        raise ValueError(f"cost must have shape (..., n, m) with n, m >= 1, got {tuple(cost.shape)}")
    if cost.numel() == 0:
        raise ValueError(f"cost has an empty batch dimension: shape {tuple(cost.shape)}")
    return cost.to(_compute_dtype(cost.dtype))


def _cost_range(Cd: Tensor) -> tuple[Tensor, Tensor, bool]:
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


def _diagnose_infeasible(Cd: Tensor) -> None:
    """Raise a clear ValueError if a row or column of the cost is entirely ``+inf``."""
    mask = Cd == math.inf
    for which, bad in (("row", mask.all(-1)), ("column", mask.all(-2))):
        if bool(bad.any()):
            idx = bad.nonzero()[0].tolist()
            raise ValueError(f"cost has a {which} with only +inf entries (batch, index) = {idx}: no "
                             "feasible plan; give every row and column at least one finite cost")


def _check_scaled_range(big: float, eps: float, dtype: torch.dtype, caller: str) -> None:
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


def _check_log_plan(log_plan, name):
    if not isinstance(log_plan, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(log_plan).__name__}")
    if log_plan.dtype not in _FLOATS:
        raise TypeError(f"{name} must be floating point, got dtype {log_plan.dtype}; use .float()")
    if log_plan.ndim < 2:
        raise ValueError(f"{name} must have shape (..., n, m), got {tuple(log_plan.shape)}")
    if bool(torch.isnan(log_plan).any()) or bool((log_plan == math.inf).any()):
        raise ValueError(f"{name} contains NaN or +inf; log-plans take values in [-inf, inf)")


def _marginal(x, C: Tensor, size: int, name: str, batch_shape) -> Tensor:
    """Validated marginal broadcast to ``batch_shape + (size,)`` in C's dtype/device."""
    if x is None:
        return torch.full((*batch_shape, size), 1.0 / size, dtype=C.dtype, device=C.device)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(x).__name__}; "
                        f"convert with torch.as_tensor({name}, dtype=cost.dtype)")
    if x.dtype not in _FLOATS:
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


def _check_rho(rho) -> tuple[float, float]:
    if isinstance(rho, (tuple, list)):
        if len(rho) != 2:
            raise ValueError(f"rho must be a number or a pair (rho_a, rho_b), got {rho!r}")
        pair = tuple(rho)
    else:
        pair = (rho, rho)
    out = []
    for r in pair:
        if isinstance(r, Tensor) and r.numel() == 1:
            r = r.item()
        if isinstance(r, bool) or not isinstance(r, numbers.Real):
            raise TypeError(f"rho must be a positive number or a pair, got {rho!r}")
        r = float(r)
        if math.isnan(r) or r <= 0:
            raise ValueError(f"rho must be > 0 (inf for a hard marginal), got {rho!r}")
        out.append(r)
    return out[0], out[1]


def _check_int(x, name, minimum):
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(x).__name__} {x!r}")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x!r}")
    return int(x)


# ----------------------------------------------------------------------------------------------
# Iteration back ends: the two implementations of one half-step's log-sum-exp, with their VJPs
# ----------------------------------------------------------------------------------------------
class _LogOps:
    """Log domain: ``LSE_j(γ_j − C_ij/ε)`` by ``torch.logsumexp`` over an ``n × m`` temporary.

    Potentials are carried dimensionless, ``φ = f/ε``, ``γ = g/ε``. ``row(γ)`` returns
    ``log a − LSE_j(γ_j − C_ij/ε)`` and ``col(φ)`` returns ``log b − LSE_i(φ_i − C_ij/ε)``.
    """

    name = "log"

    def __init__(self, C: Tensor, eps: float, record: bool, la: Tensor, lb: Tensor):
        self.Ce = C / eps  # (B, n, m)
        self.buf = torch.empty_like(self.Ce)  # one reused work matrix: no n×m allocation per step
        self.la, self.lb = la, lb
        self.record = record
        self.rows: list = []  # (γ_{t-1}, lse_row_t)
        self.cols: list = []  # (φ_t, lse_col_t)

    def row(self, gam):
        lse = _logsumexp_(torch.sub(gam[:, None, :], self.Ce, out=self.buf), -1)
        if self.record:
            self.rows.append((gam, lse))
        return self.la - lse

    def col(self, phi):
        lse = _logsumexp_(torch.sub(phi[:, :, None], self.Ce, out=self.buf), -2)
        if self.record:
            self.cols.append((phi, lse))
        return self.lb - lse

    def pop_row(self):
        if self.record:
            self.rows.pop()

    def ok(self):
        return True

    # VJPs: Pr = softmax_j(γ − C/ε) (row step), Pc = softmax_i(φ − C/ε) (column step).
    # The backward accumulates into a fresh ``acc`` dict per call (re-entrant).
    def row_vjp(self, t, hbar, acc, rec=None):
        gam, lse = self.rows[t] if rec is None else rec
        W = torch.sub(gam[:, None, :], self.Ce, out=self.buf).sub_(lse[:, :, None]).exp_().mul_(hbar[:, :, None])
        out = W.sum(-2)  # Prᵀ h̄
        if acc is not None:
            acc["Cbar"] = W.clone() if acc.get("Cbar") is None else acc["Cbar"].add_(W)
        return out

    def col_vjp(self, t, kbar, acc):
        phi, lse = self.cols[t]
        W = torch.sub(phi[:, :, None], self.Ce, out=self.buf).sub_(lse[:, None, :]).exp_().mul_(kbar[:, None, :])
        out = W.sum(-1)  # Pc k̄
        if acc is not None:
            acc["Cbar"] = W.clone() if acc.get("Cbar") is None else acc["Cbar"].add_(W)
        return out

    def cost_grad(self, acc):
        return acc.get("Cbar")


def _logsumexp_(x: Tensor, dim: int) -> Tensor:
    """``logsumexp`` along ``dim`` that overwrites ``x`` (no temporaries); all ``-inf`` gives ``-inf``."""
    m = x.amax(dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return x.sub_(m).exp_().sum(dim).log_().add_(m.squeeze(dim))


class _KernelOps:
    """Kernel domain: ``K = exp(−(C − c)/ε)`` once; the iteration is :func:`_iterate_kernel`.

    Holds the kernel, the per-step records the unrolled backward needs — rows ``(v̂_{t−1}, d_t)``,
    columns ``(û_t, e_t)`` — and the denominators for the a-posteriori check (sinkhorn Notes).
    """

    name = "kernel"

    def __init__(self, C: Tensor, eps: float, record: bool, c: Tensor, check: bool):
        self.K = torch.add(c[:, :, None] / eps, C, alpha=-1.0 / eps).exp_()  # 2 passes
        self.check = check  # a-posteriori denominator check (only needed with +inf costs; Notes)
        self.mv, self.rmv = _matvecs(self.K)
        self.record = record
        self.rows: list = []
        self.cols: list = []
        fi = torch.finfo(C.dtype)
        n, m = C.shape[-2:]
        self.thr_d = m * fi.tiny / fi.eps
        self.thr_e = n * fi.tiny / fi.eps
        self.dmin = self.emin = None  # running minima of the denominators (checked once, no sync)

    def track(self, d, e):
        # fmin would drop NaNs; minimum propagates them, so a NaN denominator fails ok()
        if d is not None:
            self.dmin = d.clone() if self.dmin is None else torch.minimum(self.dmin, d, out=self.dmin)
        if e is not None:
            self.emin = e.clone() if self.emin is None else torch.minimum(self.emin, e, out=self.emin)

    def ok(self):
        return True if not self.check else bool(self.ok_tensor())

    def ok_tensor(self) -> Tensor:
        """The a-posteriori check as a 0-dim bool tensor (no host synchronisation)."""
        if not self.check:
            return torch.ones((), dtype=torch.bool, device=self.K.device)
        good = (self.dmin >= self.thr_d).all()
        if self.emin is not None:
            good = good & (self.emin >= self.thr_e).all()
        return good

    # Pr = diag(1/d) K diag(v̂), Pc = diag(ŵ) K diag(1/e): C̄ = K ⊙ Σ_t (x_t y_tᵀ) = K ⊙ (X Yᵀ)
    def row_vjp(self, t, hbar, acc, rec=None):
        vhat, d = self.rows[t] if rec is None else rec
        x = hbar / d
        if acc is not None:
            acc.setdefault("X", []).append(x)
            acc.setdefault("Y", []).append(vhat)
        return vhat * self.rmv(x)

    def col_vjp(self, t, kbar, acc):
        what, e = self.cols[t]
        y = kbar / e
        if acc is not None:
            acc.setdefault("X", []).append(what)
            acc.setdefault("Y", []).append(y)
        return what * self.mv(y)

    def cost_grad(self, acc):
        if not acc.get("X"):
            return None
        X = torch.stack(acc["X"], -1)  # (B, n, 2T)
        Y = torch.stack(acc["Y"], -1)  # (B, m, 2T)
        return torch.matmul(X, Y.transpose(-1, -2)).mul_(self.K)


class _OpenBLAS:
    """NumPy's OpenBLAS, pinned to one thread while the solver runs (threadpoolctl; found once, lazily).

    Single-threaded on purpose: after a multithreaded call OpenBLAS's workers spin for ~0.1 s
    and slow the next parallel torch op (an N² ``exp`` right after a 2-thread gemv ran 1.4–1.7×
    slower in ``benchmarks/results/ot.md`` runs); one thread is still at least as fast as ``torch.matmul``.
    """

    libs: list | None = None

    @classmethod
    def available(cls) -> bool:
        if cls.libs is None:
            try:
                from threadpoolctl import ThreadpoolController
                cls.libs = [lib for lib in ThreadpoolController().lib_controllers if lib.internal_api == "openblas"]
            except Exception:  # threadpoolctl missing or failing: the torch path is always correct
                cls.libs = []
        return bool(cls.libs)

    pinned = False  # inside one_thread(): the calls need no per-call pinning (BLAS settings are per process)

    @classmethod
    @contextlib.contextmanager
    def one_thread(cls):
        """Pin OpenBLAS to one thread for a whole solve / backward (one toggle instead of two per call)."""
        if cls.pinned or not cls.available():
            yield
            return
        old = [lib.get_num_threads() for lib in cls.libs]
        for lib in cls.libs:
            lib.set_num_threads(1)
        cls.pinned = True
        try:
            yield
        finally:
            cls.pinned = False
            for lib, k in zip(cls.libs, old):
                lib.set_num_threads(k)

    @classmethod
    def matmul(cls, x, y):
        # The solver checks its inputs before (finite kernel, _check_scaled_range) and its outputs
        # after (ok(), finite potentials), raising its own errors; whether a BLAS kernel sets
        # floating-point flags in between (e.g. on a NaN from an underflowed denominator) depends on
        # the CPU, so NumPy's flag warnings are off here rather than differing between machines.
        with np.errstate(all="ignore"):
            if cls.pinned:
                return np.matmul(x, y)
            with cls.one_thread():
                return np.matmul(x, y)


def _matvecs(K: Tensor):
    """``(v ↦ K v, u ↦ Kᵀ u)`` for a ``(B, n, m)`` kernel and ``(B, m)`` / ``(B, n)`` vectors.

    On CPU, for kernels of at most :data:`NUMPY_MATVEC_MAX` entries, the products go through
    NumPy's OpenBLAS on one thread, on zero-copy views (neither the kernel loop nor the
    ``once_differentiable`` unrolled backward runs under autograd): at N = 1024 float32 a gemv
    is 5–25 % faster than ``torch.matmul`` (MKL), and a batch of 64 problems of 128 × 128 solves
    3.4–3.9× faster (one BLAS call per problem instead of torch's batched path); see
    ``benchmarks/results/ot.md``. Larger kernels (where multithreaded MKL can win on many-core
    machines), CUDA and other dtypes use ``torch.matmul``.
    """
    n, m = K.shape[-2:]
    if (K.device.type == "cpu" and K.dtype in (torch.float32, torch.float64) and n * m <= NUMPY_MATVEC_MAX
            and _OpenBLAS.available()):
        Kn = K.detach().numpy()

        def mv(v):
            return torch.from_numpy(_OpenBLAS.matmul(Kn, v.numpy()[:, :, None])[:, :, 0])

        def rmv(u):
            return torch.from_numpy(_OpenBLAS.matmul(u.numpy()[:, None, :], Kn)[:, 0, :])
    else:
        def mv(v):
            return torch.matmul(K, v[:, :, None]).squeeze_(-1)

        def rmv(u):
            return torch.matmul(u[:, None, :], K).squeeze_(-2)
    return mv, rmv


@dataclass
class _Trace:
    """Output of one solve: iterates, back end (with the records the unrolled backward needs)."""

    f: Tensor
    g: Tensor
    g_prev: Tensor
    ops: object
    n_iter: int
    converged: bool
    error: float | None
    a: Tensor
    b: Tensor
    eps: float
    tau_a: float
    tau_b: float
    domain: str
    vhat_last: Tensor | None = None  # kernel path: v̂ and σ_v after the last column step
    sig_v_last: Tensor | None = None
    c_eps: Tensor | None = None
    row_lse: Tensor | None = None
    extra: tuple | None = None  # record of the final row log-normaliser (for its VJP)


def _iterate(ops, la, lb, g0, eps, tau_a, tau_b, max_iter, tol, check_every) -> _Trace:
    """Run the Sinkhorn iterations of the module docstring with back end ``ops``.

    Dimensionless potentials ``φ = f/ε``, ``γ = g/ε``: ``φ^(t) = τ_a · ops.row(γ^(t−1))``,
    ``γ^(t) = τ_b · ops.col(φ^(t))``.
    """
    balanced = tau_a == 1.0 and tau_b == 1.0
    a = la.exp()
    gam = g0 / eps
    gam_prev, phi = gam, None
    n_iter, converged, err = 0, False, None
    for t in range(1, max_iter + 1):
        h = ops.row(gam)
        if tol > 0 and balanced and phi is not None and (t - 1) % check_every == 0:
            # row marginal of P^(2(t-1)) = a · exp(φ^(t-1) − φ^(t)): free from this row step
            err = _rel_l1(a * torch.exp(phi - h), a)
            if err <= tol:
                ops.pop_row()
                converged = True
                break
        phi_new = h if tau_a == 1.0 else h.mul_(tau_a)
        k = ops.col(phi_new)
        gam_new = k if tau_b == 1.0 else k.mul_(tau_b)
        if tol > 0 and not balanced and phi is not None and (t % check_every == 0 or t == max_iter):
            err = max(float((phi_new - phi).abs().amax()), float((gam_new - gam).abs().amax()))
            converged = err <= tol
        gam_prev, phi, gam, n_iter = gam, phi_new, gam_new, t
        if converged:
            break
    if tol > 0 and not converged and balanced:
        rec, ops.record = ops.record, False
        h = ops.row(gam)
        ops.record = rec
        err = _rel_l1(a * torch.exp(phi - h), a)
        converged = err <= tol
    return _Trace(f=phi * eps, g=gam * eps, g_prev=gam_prev * eps, ops=ops, n_iter=n_iter,
                  converged=converged, error=err, a=a, b=lb.exp(), eps=eps, tau_a=tau_a, tau_b=tau_b,
                  domain=ops.name)


def _iterate_kernel(ops: _KernelOps, la, lb, c_eps, g0, eps, tau_a, tau_b, max_iter, tol, check_every) -> _Trace:
    """The iterations of :func:`_iterate` in scaling form (no exp/log inside the loop).

    State: ``v̂ = exp(γ − σ_v)`` with ``max v̂ = 1`` and the scalar ``σ_v = max γ`` per problem.
    Row step: ``d = K v̂``, ``r = (a/d)^{τ_a}``, ``M_u = max r``, ``û = r / M_u``,
    ``σ_u = log M_u + τ_a (c/ε − σ_v)`` — i.e. ``φ = τ_a (log a + c/ε − σ_v − log d)`` exactly;
    column step symmetric with ``e = Kᵀ û``. The logs of the maxima are taken in chunks
    (:class:`_Sigmas`), and the potentials are formed from ``d``, ``e`` at the end. Memory is
    ``O(n + m)`` per problem unless the unrolled backward records the steps.
    """
    K_v, Kt_u, check = ops.mv, ops.rmv, ops.check  # v ↦ K v, u ↦ Kᵀ u
    a, b = la.exp(), lb.exp()
    balanced = tau_a == 1.0 and tau_b == 1.0
    gam0 = g0 / eps
    sig_v0 = gam0.amax(-1, keepdim=True)
    vhat = torch.exp(gam0 - sig_v0)
    sig = _Sigmas(sig_v0, c_eps, tau_a, tau_b)
    last = []  # (d, e) of the last two iterations
    n_iter, converged, err = 0, False, None
    uhat = mv_prev = None
    for t in range(1, max_iter + 1):
        d = K_v(vhat)
        if check:
            ops.track(d, None)
        if tol > 0 and balanced and t > 1 and (t - 1) % check_every == 0:
            # row marginal of P^(2(t-1)) = û ⊙ d ⊙ exp(σ_u + σ_v − c/ε) = û ⊙ d ⊙ M_v (balanced)
            err = _rel_l1(uhat * d * mv_prev, a)
            if err <= tol:
                converged = True
                break
        r = a / d if tau_a == 1.0 else (a / d).pow_(tau_a)
        mu = r.amax(-1, keepdim=True)
        uhat_new = r.div_(mu)
        e = Kt_u(uhat_new)
        if check:
            ops.track(None, e)
        s_ = b / e if tau_b == 1.0 else (b / e).pow_(tau_b)
        mv = s_.amax(-1, keepdim=True)
        vhat_new = s_.div_(mv)
        sig.push(mu, mv)
        if ops.record:
            ops.rows.append((vhat, d))
            ops.cols.append((uhat_new, e))
        last = [*last[-1:], (d, e)]
        if tol > 0 and not balanced and t > 1 and (t % check_every == 0 or t == max_iter):
            phi_old, gam_old = _kernel_potentials(la, lb, c_eps, tau_a, tau_b, sig.sv(t - 2), last[0][0],
                                                  sig.su(t - 1), last[0][1])
            phi_new, gam_new = _kernel_potentials(la, lb, c_eps, tau_a, tau_b, sig.sv(t - 1), d, sig.su(t), e)
            err = max(float((phi_new - phi_old).abs().amax()), float((gam_new - gam_old).abs().amax()))
            converged = err <= tol
        uhat, vhat, mv_prev, n_iter = uhat_new, vhat_new, mv, t
        if converged:
            break
    if tol > 0 and not converged and balanced:
        d = K_v(vhat)
        err = _rel_l1(uhat * d * mv_prev, a)
        converged = err <= tol
    T = n_iter
    phi, gam = _kernel_potentials(la, lb, c_eps, tau_a, tau_b, sig.sv(T - 1), last[-1][0], sig.su(T), last[-1][1])
    if T > 1:
        gam_prev = _kernel_potentials(la, lb, c_eps, tau_a, tau_b, sig.sv(T - 2), last[0][0], sig.su(T - 1),
                                      last[0][1])[1]
    else:
        gam_prev = gam0
    return _Trace(f=phi * eps, g=gam * eps, g_prev=gam_prev * eps, ops=ops, n_iter=n_iter,
                  converged=converged, error=err, a=a, b=b, eps=eps, tau_a=tau_a, tau_b=tau_b,
                  domain=ops.name, vhat_last=vhat, sig_v_last=sig.sv(T), c_eps=c_eps)


class _Sigmas:
    """Log-scales of the kernel iteration, resolved in vectorised chunks.

    ``σ_u^t = log M_u^t + τ_a (c/ε − σ_v^{t−1})``, ``σ_v^t = log M_v^t + τ_b (c/ε − σ_u^t)``,
    ``σ_v^0 = max γ^(0)``. Eliminating ``σ_u``: ``σ_v^t = κ σ_v^{t−1} + w^t`` with ``κ = τ_a τ_b``
    and ``w^t = log M_v^t − τ_b log M_u^t + τ_b (1 − τ_a) c/ε`` — a linear recurrence, solved for a
    whole chunk at once as ``σ_v = W w + κ^{1..L} σ_v^{start}`` with the lower-triangular
    ``W_tk = κ^{t−k}`` (all powers ≤ 1: no overflow). The loop only appends the maxima
    (:meth:`push`); only the last few ``σ`` are kept (``O(1)`` memory).
    """

    KEEP = 4
    CHUNK = 256

    def __init__(self, sig_v0, c_eps, tau_a, tau_b):
        self._su, self._sv = {}, {0: sig_v0}
        self.pending: list = []  # M_u^t, M_v^t, M_u^{t+1}, ... not yet resolved
        self.resolved = 0  # iterations whose σ are known
        self.c_eps, self.ta, self.tb = c_eps, tau_a, tau_b

    def push(self, mu, mv):
        self.pending += (mu, mv)
        if len(self.pending) >= 2 * self.CHUNK:
            self._resolve()

    def _weights(self, L):
        W, powers = _recurrence_weights(self.ta * self.tb, self.CHUNK, self.c_eps.dtype, self.c_eps.device)
        return W[:L, :L], powers[:L]

    def _resolve(self):
        L = len(self.pending) // 2
        if L == 0:
            return
        lm = torch.stack(self.pending).log().unflatten(0, (L, 2))  # (L, 2, B, 1)
        lu, lv = lm[:, 0], lm[:, 1]
        w = lv - self.tb * lu + self.tb * (1.0 - self.ta) * self.c_eps  # (L, B, 1)
        W, powers = self._weights(L)
        s0 = self._sv[self.resolved]
        sv = torch.tensordot(W, w, dims=1) + powers[:, None, None] * s0  # σ_v^{r+1..r+L}
        sv_prev = torch.cat([s0[None], sv[:-1]])
        su = lu + self.ta * (self.c_eps - sv_prev)
        r = self.resolved
        for i in range(max(0, L - self.KEEP), L):
            self._su[r + 1 + i], self._sv[r + 1 + i] = su[i], sv[i]
        self.resolved = r + L
        for dct in (self._su, self._sv):
            for t in [t for t in dct if t <= self.resolved - self.KEEP]:
                del dct[t]
        self.pending = []

    def su(self, t):
        """``σ_u^t`` (``t ≥ 1``, one of the last few iterations)."""
        self._resolve()
        return self._su[t]

    def sv(self, t):
        """``σ_v^t`` (``t ≥ 0``, one of the last few iterations)."""
        self._resolve()
        return self._sv[t]


@functools.lru_cache(maxsize=16)
def _recurrence_weights(kappa: float, size: int, dtype: torch.dtype, device: torch.device):
    """``W_tk = κ^{t−k}`` (``k ≤ t``, else 0) and ``κ^{1..size}`` for :class:`_Sigmas` (cached)."""
    idx = torch.arange(size, dtype=torch.float64)
    expo = idx[:, None] - idx[None, :]
    k = torch.tensor(kappa, dtype=torch.float64)
    W = torch.where(expo >= 0, k ** expo.clamp(min=0), 0.0)
    return W.to(dtype=dtype, device=device), (k ** (idx + 1)).to(dtype=dtype, device=device)


def _kernel_potentials(la, lb, c_eps, tau_a, tau_b, sig_v, d, sig_u, e):
    """Dimensionless ``(φ, γ)`` of one iteration from its denominators (no underflow of û, v̂).

    ``sig_v`` is ``σ_v`` before the row step, ``sig_u`` the ``σ_u`` produced by it.
    """
    phi = tau_a * (la + c_eps - sig_v - d.log())
    gam = tau_b * (lb + c_eps - sig_u - e.log())
    return phi, gam


def _final_row_lse(tr: _Trace, record: bool) -> Tensor:
    """``LSE_j(γ_j − C_ij/ε)`` at the final ``g`` (one matvec in the kernel path)."""
    ops = tr.ops
    if isinstance(ops, _KernelOps):
        d = ops.mv(tr.vhat_last)
        rec = (tr.vhat_last, d)
        lse = d.log() + tr.sig_v_last - tr.c_eps
    else:
        gam = tr.g / tr.eps
        lse = _logsumexp_(torch.sub(gam[:, None, :], ops.Ce, out=ops.buf), -1)
        rec = (gam, lse)
    if record:
        tr.extra = rec
    return lse


def _rel_l1(x, ref) -> float:
    return float(((x - ref).abs().sum(-1) / ref.sum(-1)).amax())


# ----------------------------------------------------------------------------------------------
# Autograd wrappers
# ----------------------------------------------------------------------------------------------
class _Unrolled(torch.autograd.Function):
    """Exact VJP of ``T`` unrolled iterations: a reverse sweep over the recorded half-steps.

    Row step ``h = ε log a − ε LSE_j((g − C)/ε)``, ``f = τ_a h``: ``∂h/∂C = Pr``, ``∂h/∂g = −Pr``,
    ``∂h/∂a = ε/a`` with ``Pr = softmax_j((g − C)/ε)``; column step symmetric with ``Pc``. Per
    half-step one matvec with ``K`` (kernel) or one streamed ``n × m`` pass (log); the kernel path
    accumulates ``C̄ = K ⊙ (X Yᵀ)`` with ``X``, ``Y`` of ``2T`` columns (one low-rank product).
    """

    @staticmethod
    def forward(ctx, C, a, b, trace):
        ctx.trace = trace
        lse = trace.row_lse.clone() if trace.row_lse is not None else trace.f.new_empty(0)
        return trace.f.clone(), trace.g.clone(), trace.g_prev.clone(), lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, fbar, gbar, gpbar, lbar):
        with _OpenBLAS.one_thread():
            return _Unrolled._backward(ctx.trace, ctx.needs_input_grad, fbar, gbar, gpbar, lbar)

    @staticmethod
    def _backward(tr, needs_input_grad, fbar, gbar, gpbar, lbar):
        need_C, need_a, need_b = needs_input_grad[:3]
        ops, eps, ta, tb = tr.ops, tr.eps, tr.tau_a, tr.tau_b
        T = len(ops.cols)
        fb = torch.zeros_like(tr.f) if fbar is None else fbar
        gb = torch.zeros_like(tr.g) if gbar is None else gbar
        abar = torch.zeros_like(tr.a) if need_a else None
        bbar = torch.zeros_like(tr.b) if need_b else None
        acc = {} if need_C else None
        if lbar is not None and tr.extra is not None and lbar.numel():
            # row_lse = LSE_j((g − C)/ε): ∂/∂g = Pr/ε, ∂/∂C = −Pr/ε (a row VJP with h̄ = −l̄/ε)
            gb = gb - ops.row_vjp(None, -lbar / eps, acc, rec=tr.extra)
        for t in reversed(range(T)):
            # column step t: g = τ_b (ε log b − ε LSE_i((f − C)/ε))
            kb = gb if tb == 1.0 else tb * gb
            if need_b:
                bbar = bbar + eps * kb / tr.b
            fb = fb - ops.col_vjp(t, kb, acc)
            # row step t: f = τ_a (ε log a − ε LSE_j((g_prev − C)/ε))
            hb = fb if ta == 1.0 else ta * fb
            if need_a:
                abar = abar + eps * hb / tr.a
            gb = -ops.row_vjp(t, hb, acc)
            if t == T - 1 and gpbar is not None:
                gb = gb + gpbar
            fb = torch.zeros_like(fb)
        Cbar = ops.cost_grad(acc) if need_C else None
        return Cbar, abar, bbar, None


class _Implicit(torch.autograd.Function):
    r"""Implicit differentiation of the fixed point ``f = τ_a T_a(g, C, a)``, ``g = τ_b T_b(f, C, b)``.

    Adjoint system (``A = diag(1/P1) P``, ``B = diag(1/Pᵀ1) Pᵀ``):
    ``λ + τ_b Bᵀ μ = f̄``, ``τ_a Aᵀ λ + μ = ḡ``; then ``C̄ = τ_a diag(λ/r) P + τ_b P diag(μ/c)``,
    ``ā = τ_a ε λ/a``, ``b̄ = τ_b ε μ/b``. Solved through the symmetric ``(I − τ_aτ_b S) w = ·``,
    ``S = D_c^{-1/2} Pᵀ D_r^{-1} P D_c^{-1/2}``, ``μ = √c ⊙ w``; for ``τ_aτ_b = 1`` the null
    direction ``√c`` (the gauge ``f + s, g − s``) is projected out.
    """

    @staticmethod
    def forward(ctx, C, a, b, f, g, g_prev, eps, tau_a, tau_b):
        ctx.save_for_backward(C, a, b, f, g)
        ctx.consts = (eps, tau_a, tau_b)
        return f.clone(), g.clone(), g_prev.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, fbar, gbar, gpbar):
        C, a, b, f, g = ctx.saved_tensors
        eps, ta, tb = ctx.consts
        fbar = torch.zeros_like(f) if fbar is None else fbar
        gbar = torch.zeros_like(g) if gbar is None else gbar
        if gpbar is not None:
            gbar = gbar + gpbar
        # (in-place where possible: peak ≈ 2 n×m + 2 m×m buffers)
        P = (f[:, :, None] - C).add_(g[:, None, :]).div_(eps).exp_()
        r = P.sum(-1)
        c = P.sum(-2)
        sc = c.sqrt()
        Q = P.div(r.sqrt()[:, :, None]).div_(sc[:, None, :])  # S = Qᵀ Q
        kappa = ta * tb
        rhs = gbar - ta * torch.matmul((fbar / r)[:, None, :], P)[:, 0, :]
        rhs = rhs / sc
        q = None
        if kappa == 1.0:  # gauge direction √c: project it out of the right-hand side, pin it in the matrix
            q = sc / sc.norm(dim=-1, keepdim=True)
            rhs = rhs - q * (q * rhs).sum(-1, keepdim=True)
        if Q.shape[-1] <= IMPLICIT_DENSE_MAX:
            Mat = torch.matmul(Q.transpose(-1, -2), Q)  # (B, m, m), becomes I − κ S (+ q qᵀ)
            Mat.mul_(-kappa).diagonal(dim1=-2, dim2=-1).add_(1.0)
            if q is not None:
                Mat.add_(q[:, :, None] * q[:, None, :])
            w = _solve_psd(Mat, rhs)
            del Mat
        else:
            def matvec(x):
                y = x - kappa * torch.matmul(torch.matmul(x[:, None, :], Q.transpose(-1, -2)), Q)[:, 0, :]
                return y if q is None else y + q * (q * x).sum(-1, keepdim=True)

            w = _conjugate_gradient(matvec, rhs)
        del Q
        mu = sc * w
        lam = fbar - tb * torch.matmul(P, (mu / c)[:, :, None])[:, :, 0]
        Cbar = P.mul_((ta * lam / r)[:, :, None] + (tb * mu / c)[:, None, :])
        abar = ta * eps * lam / a if ctx.needs_input_grad[1] else None
        bbar = tb * eps * mu / b if ctx.needs_input_grad[2] else None
        return Cbar, abar, bbar, None, None, None, None, None, None


def _solve_psd(Mat: Tensor, rhs: Tensor) -> Tensor:
    """Solve the symmetric positive semi-definite adjoint system ``Mat w = rhs`` (batched).

    Well conditioned (the usual case): Cholesky. At small ε the plan is numerically block-diagonal
    (off-block entries ``e^{−ΔC/ε}`` below the dtype's resolution): each block carries its own
    gauge shift ``(f + s, g − s)``, so ``Mat`` has one (near-)null direction per block besides the
    pinned global one. Then the minimum-norm solution is taken (eigendecomposition, eigenvalues
    below ``m · eps_dtype · λ_max`` dropped) — the gradient of a loss that, like every loss here,
    only reads ``f_i + g_j`` inside a block; if ``rhs`` has a relative component above
    ``sqrt(eps_dtype)`` in the dropped directions the gradient is ill-determined and a
    :class:`SinkhornConvergenceWarning` says so.
    """
    fi = torch.finfo(Mat.dtype)
    L, info = torch.linalg.cholesky_ex(Mat)
    if not bool(info.any()):
        dg = L.diagonal(dim1=-2, dim2=-1)
        rcond = (dg.amin(-1) / dg.amax(-1)) ** 2  # crude reciprocal condition number estimate
        if bool((rcond > 1e3 * Mat.shape[-1] * fi.eps).all()):
            return torch.cholesky_solve(rhs[:, :, None], L)[:, :, 0]
    evals, evecs = torch.linalg.eigh(Mat)
    keep = evals > Mat.shape[-1] * fi.eps * evals.amax(-1, keepdim=True)
    coef = torch.matmul(rhs[:, None, :], evecs)[:, 0, :]  # rhs in the eigenbasis
    lost = (coef * ~keep).norm(dim=-1) / coef.norm(dim=-1).clamp_min(fi.tiny)
    if bool((lost > fi.eps ** 0.5).any()):
        warnings.warn(
            f"implicit backward: the adjoint system is singular to {Mat.dtype} precision (epsilon too small "
            f"for the cost range: the plan splits into numerically disconnected blocks) and the loss's "
            f"gradient has a relative component {float(lost.max()):.2e} along the undetermined gauge "
            "directions; the returned gradient drops it. Use grad='unrolled', a larger epsilon or float64",
            SinkhornConvergenceWarning, stacklevel=4)
    coef = torch.where(keep, coef / torch.where(keep, evals, torch.ones_like(evals)), torch.zeros_like(coef))
    return torch.matmul(evecs, coef[:, :, None])[:, :, 0]


def _conjugate_gradient(matvec, rhs: Tensor, max_iter: int | None = None) -> Tensor:
    """Batched CG for the symmetric positive-definite system of the implicit backward.

    Stops at relative residual ``≤ 100·eps`` of the dtype (checked every 5 steps); warns with
    :class:`SinkhornConvergenceWarning` if ``max_iter`` (default ``2 m``) is reached.
    """
    tol = 100 * torch.finfo(rhs.dtype).eps
    max_iter = 2 * rhs.shape[-1] if max_iter is None else max_iter
    x = torch.zeros_like(rhs)
    res = rhs.clone()
    p = res.clone()
    rs = (res * res).sum(-1, keepdim=True)
    ref = rs.sqrt().clamp_min(torch.finfo(rhs.dtype).tiny)
    for k in range(max_iter):
        Ap = matvec(p)
        alpha = rs / (p * Ap).sum(-1, keepdim=True).clamp_min(torch.finfo(rhs.dtype).tiny)
        x.add_(alpha * p)
        res.sub_(alpha * Ap)
        rs_new = (res * res).sum(-1, keepdim=True)
        if k % 5 == 4 and bool((rs_new.sqrt() <= tol * ref).all()):
            return x
        p = res + (rs_new / rs.clamp_min(torch.finfo(rhs.dtype).tiny)) * p
        rs = rs_new
    warnings.warn(f"implicit backward: conjugate gradient stopped after {max_iter} iterations at relative "
                  f"residual {float((rs.sqrt() / ref).max()):.2e}; the fixed point is ill-conditioned "
                  "(small epsilon): use grad='unrolled' or a larger epsilon", SinkhornConvergenceWarning,
                  stacklevel=2)
    return x


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def _solve(cost, a, b, *, epsilon, rho, max_iter, tol, grad, domain, init, epsilon_schedule,
           check_every, return_row_lse, caller) -> SinkhornResult:
    if not isinstance(return_row_lse, bool):
        raise TypeError(f"return_row_lse must be True or False, got {return_row_lse!r}")
    eps = _check_epsilon(epsilon)
    max_iter = _check_int(max_iter, "max_iter", 1)
    check_every = _check_int(check_every, "check_every", 1)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0 (0 = run exactly max_iter iterations), got {tol!r}")
    tol = float(tol)
    if grad not in GRAD_MODES:
        raise ValueError(f"grad must be one of {GRAD_MODES}, got {grad!r}")
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    C = _check_cost(cost)
    rho_pair = (math.inf, math.inf) if rho is None else _check_rho(rho)
    batch_shape, (n, m) = C.shape[:-2], C.shape[-2:]
    a_ = _marginal(a, C, n, "a", batch_shape)
    b_ = _marginal(b, C, m, "b", batch_shape)
    if rho_pair == (math.inf, math.inf):
        with torch.no_grad():
            ma, mb = a_.detach().sum(-1), b_.detach().sum(-1)
            rtol = 1e-9 if C.dtype == torch.float64 else 1e-4
            if bool(((ma - mb).abs() > rtol * torch.maximum(ma, mb)).any()):
                raise ValueError(
                    f"{caller}: the balanced problem needs a.sum() == b.sum(), got {float(ma.flatten()[0])!r} "
                    f"and {float(mb.flatten()[0])!r}; normalise the marginals or use sinkhorn_unbalanced(..., rho=...)")
    schedule = [] if epsilon_schedule is None else [_check_epsilon(e, "epsilon_schedule entry")
                                                    for e in epsilon_schedule]
    tau_a, tau_b = (1.0 if math.isinf(r) else r / (r + eps) for r in rho_pair)

    # flatten batch dims
    Bt = math.prod(batch_shape)
    Cf = C.reshape(Bt, n, m)
    af, bf = a_.reshape(Bt, n), b_.reshape(Bt, m)
    if init is None:
        g0 = torch.zeros(Bt, m, dtype=C.dtype, device=C.device)
    else:
        gi = init.g if isinstance(init, SinkhornResult) else init
        if not isinstance(gi, Tensor):
            raise TypeError(f"init must be a Tensor of shape (..., {m}) or a SinkhornResult, got {type(init).__name__}")
        if gi.shape[-1] != m:
            raise ValueError(f"init must have last dimension m={m}, got shape {tuple(gi.shape)}")
        try:
            g0 = torch.broadcast_to(gi.detach().to(C), (*batch_shape, m)).reshape(Bt, m).clone()
        except RuntimeError:
            raise ValueError(f"init of shape {tuple(gi.shape)} does not broadcast to {(*batch_shape, m)}") from None
        if not bool(torch.isfinite(g0).all()):
            raise ValueError("init contains non-finite values; pass finite potentials (or None)")

    needs_grad = torch.is_grad_enabled() and (Cf.requires_grad or af.requires_grad or bf.requires_grad)
    record = needs_grad and grad == "unrolled"

    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device_type=C.device.type, enabled=False))
        stack.enter_context(torch.no_grad())
        stack.enter_context(_OpenBLAS.one_thread())
        Cd, la, lb = Cf.detach(), af.detach().log(), bf.detach().log()
        lo, hi, has_inf = _cost_range(Cd)  # validation + the kernel-domain rule's range (sinkhorn Notes)
        limit = kernel_range_limit(C.dtype, max(n, m))

        # the kernel rule's range and max |C| over the finite entries, in one read from the device
        R0, big = torch.stack([(hi - lo).amax(), torch.maximum(lo.abs(), hi.abs()).amax()]).tolist()

        def run(e, g_init, rec, tol_):
            _check_scaled_range(big, e, C.dtype, caller)  # before any product touches C/ε
            R = R0 / e
            use_kernel = domain != "log" and R <= limit
            if domain == "kernel" and not use_kernel:
                raise ValueError(
                    f"domain='kernel' is unsafe here: cost range/epsilon = {R:.4g} exceeds the limit "
                    f"{limit:.4g} for {C.dtype} (see sinkhorn Notes); use domain='auto' or 'log', or a larger epsilon")
            if use_kernel:
                tr = _iterate_kernel(_KernelOps(Cd, e, rec, lo[:, None], has_inf), la, lb, lo[:, None] / e, g_init, e,
                                     *_taus(rho_pair, e), max_iter, tol_, check_every)
                if tr.ops.ok() and bool(torch.isfinite(tr.f).all()) and bool(torch.isfinite(tr.g).all()):
                    return tr
                if domain == "kernel":
                    raise SinkhornNumericalError(
                        "kernel-domain denominators underflowed (the a-posteriori check of the kernel "
                        "rule failed); use domain='log' or 'auto'")
            return _iterate(_LogOps(Cd, e, rec, la, lb), la, lb, g_init, e, *_taus(rho_pair, e), max_iter,
                            tol_, check_every)

        g_init = g0
        for e in schedule:
            g_init = run(e, g_init, False, max(tol, STAGE_TOL)).g  # coarse stages: loose tolerance
        tr = run(eps, g_init, record, tol)

    if not (bool(torch.isfinite(tr.f).all()) and bool(torch.isfinite(tr.g).all())):
        if has_inf:
            _diagnose_infeasible(Cd)
        raise SinkhornNumericalError(
            f"{caller} produced non-finite potentials (epsilon={eps}, dtype={C.dtype}, domain={tr.ops.name}); "
            "the cost range/epsilon is too large for this dtype: use float64, a larger epsilon, or rescale the cost")
    if tol > 0 and not tr.converged:
        warnings.warn(
            f"{caller} did not converge: error {tr.error:.3g} > tol={tol:g} after max_iter={max_iter} "
            f"iterations (epsilon={eps:g}); increase max_iter, loosen tol, increase epsilon, or use "
            "epsilon_schedule (ε-scaling) with warm starts",
            SinkhornConvergenceWarning, stacklevel=3)

    return _differentiable_result(tr, C, Cf, af, bf, a_, b_, eps, rho_pair, grad, needs_grad, record, return_row_lse,
                                  batch_shape)


def _differentiable_result(tr, C, Cf, af, bf, a_, b_, eps, rho_pair, grad, needs_grad, record, return_row_lse,
                           batch_shape) -> SinkhornResult:
    """The solve's potentials wrapped in the chosen gradient mode, as a :class:`SinkhornResult`."""
    n, m = Cf.shape[-2:]
    if return_row_lse:
        with torch.no_grad(), torch.autocast(device_type=C.device.type, enabled=False), _OpenBLAS.one_thread():
            tr.row_lse = _final_row_lse(tr, record)
    f, g, g_prev, row_lse = tr.f, tr.g, tr.g_prev, tr.row_lse
    if needs_grad and grad == "unrolled":
        f, g, g_prev, row_lse = _Unrolled.apply(Cf, af, bf, tr)
        row_lse = row_lse if return_row_lse else None
    elif needs_grad and grad == "implicit":
        f, g, g_prev = _Implicit.apply(Cf, af, bf, tr.f, tr.g, tr.g_prev, eps, tr.tau_a, tr.tau_b)
    if needs_grad and grad != "unrolled" and return_row_lse:  # explicit formula, dense
        row_lse = torch.logsumexp((g[:, None, :] - Cf) / eps, -1)
    if not record:
        tr.ops = None  # drop the kernel / scaled cost unless the unrolled backward needs it
    shp_n, shp_m = (*batch_shape, n), (*batch_shape, m)
    return SinkhornResult(
        f=f.reshape(shp_n), g=g.reshape(shp_m), g_prev=g_prev.reshape(shp_m), cost=C, a=a_, b=b_,
        epsilon=eps, rho=rho_pair, n_iter=tr.n_iter, converged=tr.converged, error=tr.error,
        domain=tr.domain, grad=grad, row_lse=None if row_lse is None else row_lse.reshape(shp_n))


def _solve_unchecked(cost: Tensor, a: Tensor, b: Tensor, *, epsilon: float, rho_pair: tuple[float, float],
                     max_iter: int, grad: str, return_row_lse: bool, range_bound: float
                     ) -> tuple[SinkhornResult, Tensor]:
    """Fixed-iteration solve of one ``(n, m)`` problem without host synchronisation (the losses' fast path).

    For callers that build valid inputs themselves (:func:`gca.losses.alignment`): no validation,
    and the kernel-domain rule decided from ``range_bound`` — an upper bound on the cost's finite
    range that the caller knows analytically — instead of a measured range. Returns the result
    and a 0-dim bool tensor: True when the kernel path's a-posteriori check passed and the
    potentials are finite. The caller reads it once; when False it must redo the problem with
    :func:`sinkhorn` / :func:`sinkhorn_unbalanced`, which report the cause or fall back to the
    log domain. Same iterations and gradients as those, to floating-point rounding.
    """
    n, m = cost.shape
    eps = float(epsilon)
    Cf, af, bf = cost[None], a[None], b[None]
    tau_a, tau_b = _taus(rho_pair, eps)
    needs_grad = torch.is_grad_enabled() and (Cf.requires_grad or af.requires_grad or bf.requires_grad)
    record = needs_grad and grad == "unrolled"
    use_kernel = range_bound / eps <= kernel_range_limit(cost.dtype, max(n, m))
    with torch.autocast(device_type=cost.device.type, enabled=False), torch.no_grad(), _OpenBLAS.one_thread():
        Cd, la, lb = Cf.detach(), af.detach().log(), bf.detach().log()
        g0 = torch.zeros(1, m, dtype=cost.dtype, device=cost.device)
        if use_kernel:
            lo = Cd.reshape(1, -1).amin(-1)  # the shift c = min C, as in _solve (no synchronisation)
            ops = _KernelOps(Cd, eps, record, lo[:, None], check=True)
            tr = _iterate_kernel(ops, la, lb, lo[:, None] / eps, g0, eps, tau_a, tau_b, max_iter, 0.0, 1)
            ok = ops.ok_tensor()
        else:
            tr = _iterate(_LogOps(Cd, eps, record, la, lb), la, lb, g0, eps, tau_a, tau_b, max_iter, 0.0, 1)
            ok = torch.ones((), dtype=torch.bool, device=cost.device)
        ok = ok & torch.isfinite(tr.f).all() & torch.isfinite(tr.g).all()
    res = _differentiable_result(tr, cost, Cf, af, bf, a, b, eps, rho_pair, grad, needs_grad, record,
                                 return_row_lse, ())
    return res, ok


def _taus(rho_pair, eps):
    return tuple(1.0 if math.isinf(r) else r / (r + eps) for r in rho_pair)

