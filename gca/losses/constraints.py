r"""The constraint set 𝓑 of the alignment core: the plan's potentials (paper §2, §4).

Given the dimensionless cost ``Ĉ = C/ε`` (:mod:`gca.losses.cost`), the plan of a constraint is
represented by its potentials, :math:`P = \exp(f/ε ⊕ g/ε − Ĉ)`:

- ``"rows"`` — one KL projection of ``K`` onto the row marginals (a Bregman half-step: INCE);
- ``"balanced"`` — ``n_iter`` Sinkhorn iterations (GCA-INCE, IOT);
- ``"unbalanced"`` — ``n_iter`` KL-relaxed iterations with penalties ``ρ`` (GCA-UOT).

The iterated constraints call the driver of :mod:`gca.ot` on the dimensionless problem
``(Ĉ, ε = 1, ρ/ε)``: the same iterates and plan as ``(C, ε, ρ)``, potentials divided by ``ε``, and
``Ĉ`` comes out of the one similarity matmul with ``1/ε`` folded into the ``(N, d)`` factor — so no
``N × N`` matrix is ever divided by ``ε``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ot.problem import Problem, make_problem
from ..ot.solvers import SolverOptions, solve, solve_unchecked
from .cost import ScaledCost

__all__ = ["CONSTRAINTS", "MARGINALS", "constraint_potentials"]

CONSTRAINTS = ("rows", "balanced", "unbalanced")
MARGINALS = ("ones", "probability")


def constraint_potentials(cost: ScaledCost, pos_hat: Tensor, pi: Tensor, *, epsilon: float, constraint: str,
                          n_iter: int, rho, mass: str, grad: str, want_row_lse: bool = False,
                          unchecked: bool = False):
    """Dimensionless potentials of the constraint set: ``(f/ε, g/ε, g_prev/ε, row_lse, solver result,
    solved)``.

    ``row_lse_i = log Σ_j exp(g_j/ε − Ĉ_ij)`` (the final plan's row normaliser over ``u``) when
    ``want_row_lse``, else None. ``pos_hat``: ``Ĉ_iπ(i)``, shape ``(N,)``; ``pi``: the positives.
    ``unchecked``: the solver's synchronisation-free path (:func:`gca.ot.solvers.solve_unchecked`);
    ``solved`` is then its 0-dim success flag, to be read by the caller, else None.
    """
    ref = cost.built
    n = ref.shape[0]
    log_mu = -math.log(n) if mass == "probability" else 0.0
    if constraint == "rows":
        # one KL projection of K onto the rows (Bregman half-step, paper §2), v⁽⁰⁾ = 1:
        # f/ε = log μ − logsumexp_j(log K_ij) ; g = g_prev = 0. The log-normaliser is read from
        # the fused log-softmax of F.cross_entropy: CE_i = LSE_i − log K_iπ(i) = LSE_i + Ĉ_iπ(i).
        ce = F.cross_entropy(cost.log_kernel, pi, reduction="none")
        lse = ce - pos_hat
        zeros = torch.zeros(n, dtype=ref.dtype, device=ref.device)
        return log_mu - lse, zeros, zeros, (lse if want_row_lse else None), None, None

    a = torch.full((n,), math.exp(log_mu), dtype=ref.dtype, device=ref.device)
    rho_hat = None if constraint == "balanced" else (rho[0] / epsilon, rho[1] / epsilon)  # ρ/ε: dimensionless
    options = SolverOptions(max_iter=n_iter, tol=0.0, grad=grad)
    if unchecked:  # the fast path: Ĉ's finite entries span at most 2/ε (cosines in [−1, 1])
        problem = Problem(cost=cost.c, a=a, b=a, epsilon=1.0, rho=(math.inf, math.inf) if rho_hat is None else rho_hat)
        res, solved = solve_unchecked(problem, options, row_lse=want_row_lse, range_bound=2.0 * (1 + 1e-3) / epsilon)
        return res.f, res.g, res.g_prev, (res.row_lse if want_row_lse else None), res, solved
    caller = "sinkhorn" if rho_hat is None else "sinkhorn_unbalanced"
    problem = make_problem(cost.c, a, a, epsilon=1.0, rho=rho_hat, caller=caller)
    res = solve(problem, options, row_lse=want_row_lse, caller=caller)
    return res.f, res.g, res.g_prev, (res.row_lse if want_row_lse else None), res, None
