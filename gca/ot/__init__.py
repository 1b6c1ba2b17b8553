r"""Entropic optimal transport: log-domain Sinkhorn (balanced and unbalanced), Bregman projections.

The contrastive losses of the paper are built on the alternating KL (Bregman) projections of a Gibbs
kernel onto the row- and column-marginal constraints (``paper.md`` §2, §4). This package provides

- :func:`row_projection`, :func:`column_projection`, :func:`bregman_projections` — the projections
  themselves, on log-plans (small problems, the book: "INCE = one row projection");
- :func:`sinkhorn` — the balanced entropic problem, and :func:`sinkhorn_unbalanced` — KL-relaxed
  marginals; both return a frozen :class:`SinkhornResult`;
- gradient modes through the solution (``grad="unrolled" | "implicit" | "detach"``).

Layout (problem, solver and result kept apart, as in OTT-JAX)
-------------------------------------------------------------
- :mod:`gca.ot.problem` — the problem: :class:`~gca.ot.problem.Problem` (cost, marginals, ε, ρ),
  its checks, the unbalanced proximal exponents, the dense Bregman projections;
- :mod:`gca.ot.solvers` — the public solvers, the settings
  :class:`~gca.ot.solvers.SolverOptions` and the driver :func:`~gca.ot.solvers.solve`;
- :mod:`gca.ot.backends` — the geometry of the iterations: log domain
  (:class:`~gca.ot.backends.LogOps`) or kernel domain (:class:`~gca.ot.backends.KernelOps`, the
  chunked log-scale recurrence :class:`~gca.ot.backends.Sigmas`, NumPy's OpenBLAS pinned to one
  thread on the CPU);
- :mod:`gca.ot.autodiff` — unrolled (lean exact VJP), implicit and detached gradients;
- :mod:`gca.ot.result` — the frozen :class:`SinkhornResult` and the warning / error types.

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

from .backends import kernel_range_limit
from .problem import bregman_projections, column_projection, row_projection
from .result import SinkhornConvergenceWarning, SinkhornNumericalError, SinkhornResult
from .solvers import epsilon_scaling_schedule, sinkhorn, sinkhorn_unbalanced

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
