r"""The solvers' result object and their warning / error types.

A solve returns one immutable :class:`SinkhornResult`: the potentials ``f``, ``g`` (and ``g_prev``,
the column potential one row step earlier), the problem it solved (cost, marginals, ε, ρ), the
solver's report (``n_iter``, ``converged``, ``error``, the back end used) and lazily formed dense
views (plan, half-step plan, marginal errors). The plan convention is the package's:
``P = exp((f ⊕ g − C)/ε)``, no marginal factor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

__all__ = ["SinkhornResult", "SinkhornConvergenceWarning", "SinkhornNumericalError"]


class SinkhornConvergenceWarning(UserWarning):
    """Sinkhorn stopped at ``max_iter`` before reaching ``tol``.

    Filter it with ``warnings.simplefilter("ignore", gca.ot.SinkhornConvergenceWarning)``.
    """


class SinkhornNumericalError(FloatingPointError):
    """Non-finite potentials or a numerically unusable kernel (never silently returned)."""


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
        ``None`` from the public solvers. Set by the internal driver when a caller asks for it
        (:func:`gca.ot.solvers.solve` with ``row_lse=True``, the losses' row-renormalised terms):
        ``LSE_j((g_j − C_ij)/ε)`` at the returned ``g``, i.e. ``log (K v)_i``; the final plan's row
        sums are ``exp(f/ε + row_lse)``. Differentiable in every gradient mode (one extra
        matrix–vector product in the kernel path).

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
