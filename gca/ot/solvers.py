r"""The Sinkhorn solvers: the public functions, the solver settings and the driver.

- :func:`~gca.ot.sinkhorn` (balanced) and :func:`~gca.ot.sinkhorn_unbalanced` (KL-relaxed marginals): validate
  the problem (:func:`gca.ot.problem.make_problem`) and the settings (:class:`SolverOptions`),
  then call the driver :func:`solve`;
- :func:`solve` — problem + settings → :class:`~gca.ot.result.SinkhornResult`: flattens the
  batch, picks the back end per ε stage (kernel domain where safe, else log domain,
  :mod:`gca.ot.backends`), runs the ε-scaling stages, checks the result and wraps it in the
  gradient mode (:mod:`gca.ot.autodiff`). It also serves the losses' one extra need, the final
  plan's row log-normaliser (``row_lse=True``), which is not part of the public signatures;
- :func:`solve_unchecked` — the same fixed-iteration solve without validation or host
  synchronisation, for callers that build valid problems themselves (the losses' fast path).

The conventions (potentials, one iteration, ``g_prev``) are those of :mod:`gca.ot`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..checks import check_choice, check_epsilon, check_grad, check_int, check_nonneg, check_rho
from .autodiff import differentiable_result
from .backends import KernelOps, LogOps, OpenBLAS, Trace, iterate_kernel, iterate_log, kernel_range_limit
from .problem import Problem, check_scaled_range, cost_range, diagnose_infeasible, make_problem, proximal_exponents
from .result import SinkhornConvergenceWarning, SinkhornNumericalError, SinkhornResult

__all__ = ["sinkhorn", "sinkhorn_unbalanced", "epsilon_scaling_schedule", "SolverOptions", "solve",
           "solve_unchecked", "DOMAINS", "STAGE_TOL"]

#: Back ends of the iterations: ``"auto"`` (kernel domain where safe, else log), ``"log"``, ``"kernel"``.
DOMAINS = ("auto", "log", "kernel")
#: Stopping tolerance of the intermediate ε-scaling stages (they only provide a warm start).
STAGE_TOL = 1e-3


@dataclass(frozen=True)
class SolverOptions:
    """How to solve (the problem itself is a :class:`~gca.ot.problem.Problem`); validated on creation.

    Attributes: ``max_iter`` (int ≥ 1), ``tol`` (float ≥ 0; ``0`` = exactly ``max_iter``
    iterations, no test), ``grad`` (one of :data:`gca.checks.GRAD_MODES`), ``domain`` (one of
    :data:`DOMAINS`), ``epsilon_schedule`` (tuple of ε-scaling stages, may be empty),
    ``check_every`` (int ≥ 1). Their meaning: :func:`~gca.ot.sinkhorn`'s parameters of the same names.
    """

    max_iter: int = 1000
    tol: float = 1e-6
    grad: str = "unrolled"
    domain: str = "auto"
    epsilon_schedule: Sequence[float] | None = ()
    check_every: int = 1

    def __post_init__(self):  # validate, and store the canonical values (frozen: object.__setattr__)
        schedule = () if self.epsilon_schedule is None else tuple(
            check_epsilon(e, f"epsilon_schedule[{k}]") for k, e in enumerate(self.epsilon_schedule))
        for name, value in (("max_iter", check_int("max_iter", self.max_iter, 1)),
                            ("tol", check_nonneg("tol", self.tol, " (0 = run exactly max_iter iterations)")),
                            ("grad", check_grad(self.grad)),
                            ("domain", check_choice("domain", self.domain, DOMAINS)),
                            ("epsilon_schedule", schedule),
                            ("check_every", check_int("check_every", self.check_every, 1))):
            object.__setattr__(self, name, value)


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
) -> SinkhornResult:
    r"""Balanced entropic optimal transport by Sinkhorn iterations (log domain; kernel fast path where safe).

    .. math::
        P^\star = \operatorname{argmin}_{P \ge 0,\ P\mathbf 1 = a,\ P^\top\mathbf 1 = b}
        \langle P, C\rangle - \varepsilon H(P), \qquad H(P) = -\textstyle\sum_{ij} P_{ij}(\log P_{ij} - 1),

    the problem of POT's ``ot.sinkhorn(a, b, C, ε)`` (same plan at convergence). The iterations and
    the potentials' convention are in :mod:`gca.ot`'s docstring: ``P = exp((f ⊕ g − C)/ε)``.

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
    to one thread for kernels of at most ``gca.ot.backends.NUMPY_MATVEC_MAX`` entries (``torch.matmul``
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
    problem = make_problem(cost, a, b, epsilon=epsilon, caller="sinkhorn")
    options = SolverOptions(max_iter=max_iter, tol=tol, grad=grad, domain=domain,
                            epsilon_schedule=epsilon_schedule, check_every=check_every)
    return solve(problem, options, init=init, caller="sinkhorn")


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
    check_rho(rho)  # (None is not a valid rho here: use sinkhorn for the balanced problem)
    problem = make_problem(cost, a, b, epsilon=epsilon, rho=rho, caller="sinkhorn_unbalanced")
    options = SolverOptions(max_iter=max_iter, tol=tol, grad=grad, domain=domain,
                            epsilon_schedule=epsilon_schedule, check_every=check_every)
    return solve(problem, options, init=init, caller="sinkhorn_unbalanced")


def epsilon_scaling_schedule(epsilon: float, *, start: float, factor: float = 0.5) -> list[float]:
    """Geometric ε-scaling schedule ``[start, start·factor, ...]`` of values strictly above ``epsilon``.

    Pass it as ``epsilon_schedule=`` to :func:`sinkhorn` / :func:`sinkhorn_unbalanced`.
    """
    eps = check_epsilon(epsilon)
    start = check_epsilon(start, "start")
    if not (0.0 < factor < 1.0):
        raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
    out, e = [], start
    while e > eps * (1 + 1e-12):
        out.append(e)
        e *= factor
    return out


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def solve(problem: Problem, options: SolverOptions, *, init: Tensor | SinkhornResult | None = None,
          row_lse: bool = False, caller: str = "sinkhorn") -> SinkhornResult:
    """Solve a validated ``problem`` with ``options`` (see :func:`~gca.ot.sinkhorn` for everything).

    ``init``: warm start of ``g`` (as :func:`~gca.ot.sinkhorn`). ``row_lse``: also set the result's
    ``row_lse`` (:class:`~gca.ot.SinkhornResult`), the final plan's row log-normaliser
    ``LSE_j((g_j − C_ij)/ε)`` (differentiable; one extra matrix–vector product in the kernel
    path). ``caller`` names the public function in messages.
    """
    if not isinstance(row_lse, bool):
        raise TypeError(f"row_lse={row_lse!r} must be True or False")
    C, eps, rho_pair, domain, tol = problem.cost, problem.epsilon, problem.rho, options.domain, options.tol
    batch_shape, (n, m) = problem.batch_shape, C.shape[-2:]

    # flatten batch dims
    Bt = math.prod(batch_shape)
    Cf = C.reshape(Bt, n, m)
    af, bf = problem.a.reshape(Bt, n), problem.b.reshape(Bt, m)
    g0 = _initial_g(init, C, batch_shape, Bt, m)

    needs_grad = torch.is_grad_enabled() and (Cf.requires_grad or af.requires_grad or bf.requires_grad)
    record = needs_grad and options.grad == "unrolled"

    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device_type=C.device.type, enabled=False))
        stack.enter_context(torch.no_grad())
        stack.enter_context(OpenBLAS.one_thread())
        Cd, la, lb = Cf.detach(), af.detach().log(), bf.detach().log()
        lo, hi, has_inf = cost_range(Cd)  # validation + the kernel-domain rule's range (sinkhorn Notes)
        limit = kernel_range_limit(C.dtype, max(n, m))

        # the kernel rule's range and max |C| over the finite entries, in one read from the device
        R0, big = torch.stack([(hi - lo).amax(), torch.maximum(lo.abs(), hi.abs()).amax()]).tolist()

        def run(e, g_init, rec, tol_):
            check_scaled_range(big, e, C.dtype, caller)  # before any product touches C/ε
            R = R0 / e
            use_kernel = domain != "log" and R <= limit
            if domain == "kernel" and not use_kernel:
                raise ValueError(
                    f"domain='kernel' is unsafe here: cost range/epsilon = {R:.4g} exceeds the limit "
                    f"{limit:.4g} for {C.dtype} (see sinkhorn Notes); use domain='auto' or 'log', or a larger epsilon")
            tau_a, tau_b = proximal_exponents(rho_pair, e)
            if use_kernel:
                tr = iterate_kernel(KernelOps(Cd, e, rec, lo[:, None], has_inf), la, lb, lo[:, None] / e, g_init, e,
                                    tau_a, tau_b, options.max_iter, tol_, options.check_every)
                if tr.ops.ok() and bool(torch.isfinite(tr.f).all()) and bool(torch.isfinite(tr.g).all()):
                    return tr
                if domain == "kernel":
                    raise SinkhornNumericalError(
                        "kernel-domain denominators underflowed (the a-posteriori check of the kernel "
                        "rule failed); use domain='log' or 'auto'")
            return iterate_log(LogOps(Cd, e, rec, la, lb), la, lb, g_init, e, tau_a, tau_b, options.max_iter,
                               tol_, options.check_every)

        g_init = g0
        for e in options.epsilon_schedule:
            g_init = run(e, g_init, False, max(tol, STAGE_TOL)).g  # coarse stages: loose tolerance
        tr = run(eps, g_init, record, tol)

    if not (bool(torch.isfinite(tr.f).all()) and bool(torch.isfinite(tr.g).all())):
        if has_inf:
            diagnose_infeasible(Cd)
        raise SinkhornNumericalError(
            f"{caller} produced non-finite potentials (epsilon={eps}, dtype={C.dtype}, domain={tr.ops.name}); "
            "the cost range/epsilon is too large for this dtype: use float64, a larger epsilon, or rescale the cost")
    if tol > 0 and not tr.converged:
        warnings.warn(
            f"{caller} did not converge: error {tr.error:.3g} > tol={tol:g} after max_iter={options.max_iter} "
            f"iterations (epsilon={eps:g}); increase max_iter, loosen tol, increase epsilon, or use "
            "epsilon_schedule (ε-scaling) with warm starts",
            SinkhornConvergenceWarning, stacklevel=3)

    return differentiable_result(tr, problem, (Cf, af, bf), grad=options.grad, needs_grad=needs_grad,
                                 record=record, row_lse=row_lse)


def _initial_g(init, C: Tensor, batch_shape, Bt: int, m: int) -> Tensor:
    """The warm start ``g^(0)`` as a detached ``(Bt, m)`` tensor (``0`` without ``init``)."""
    if init is None:
        return torch.zeros(Bt, m, dtype=C.dtype, device=C.device)
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
    return g0


def solve_unchecked(problem: Problem, options: SolverOptions, *, row_lse: bool, range_bound: float
                    ) -> tuple[SinkhornResult, Tensor]:
    """Fixed-iteration solve of one ``(n, m)`` problem without host synchronisation (the losses' fast path).

    For callers that build valid problems themselves (:mod:`gca.losses`): the problem is not
    validated (construct the :class:`~gca.ot.problem.Problem` directly), ``options.tol`` must be 0 and
    ``options.epsilon_schedule`` empty, and the kernel-domain rule is decided from
    ``range_bound`` — an upper bound on the cost's finite range that the caller knows
    analytically — instead of a measured range. Returns the result and a 0-dim bool tensor: True
    when the kernel path's a-posteriori check passed and the potentials are finite. The caller
    reads it once; when False it must redo the problem with :func:`solve` (or the public
    solvers), which report the cause or fall back to the log domain. Same iterations and
    gradients as those, to floating-point rounding.
    """
    if options.tol != 0 or options.epsilon_schedule:
        raise ValueError("solve_unchecked runs a fixed number of iterations: use tol=0 and no epsilon_schedule")
    cost, a, b = problem.cost, problem.a, problem.b
    n, m = cost.shape
    eps, grad = problem.epsilon, options.grad
    Cf, af, bf = cost[None], a[None], b[None]
    tau_a, tau_b = proximal_exponents(problem.rho, eps)
    needs_grad = torch.is_grad_enabled() and (Cf.requires_grad or af.requires_grad or bf.requires_grad)
    record = needs_grad and grad == "unrolled"
    use_kernel = range_bound / eps <= kernel_range_limit(cost.dtype, max(n, m))
    with torch.autocast(device_type=cost.device.type, enabled=False), torch.no_grad(), OpenBLAS.one_thread():
        Cd, la, lb = Cf.detach(), af.detach().log(), bf.detach().log()
        g0 = torch.zeros(1, m, dtype=cost.dtype, device=cost.device)
        if use_kernel:
            lo = Cd.reshape(1, -1).amin(-1)  # the shift c = min C, as in solve (no synchronisation)
            ops = KernelOps(Cd, eps, record, lo[:, None], check=True)
            tr: Trace = iterate_kernel(ops, la, lb, lo[:, None] / eps, g0, eps, tau_a, tau_b, options.max_iter, 0.0, 1)
            ok = ops.ok_tensor()
        else:
            tr = iterate_log(LogOps(Cd, eps, record, la, lb), la, lb, g0, eps, tau_a, tau_b, options.max_iter, 0.0, 1)
            ok = torch.ones((), dtype=torch.bool, device=cost.device)
        ok = ok & torch.isfinite(tr.f).all() & torch.isfinite(tr.g).all()
    res = differentiable_result(tr, problem, (Cf, af, bf), grad=grad, needs_grad=needs_grad, record=record,
                                row_lse=row_lse)
    return res, ok
