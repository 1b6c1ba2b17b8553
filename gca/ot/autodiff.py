r"""Differentiation through a Sinkhorn solution: unrolled (exact for the iterates), implicit, or detached.

- :class:`Unrolled` — the exact vector–Jacobian product of the ``T`` iterations that were run, a
  reverse sweep over the half-steps the back end recorded (lean: ``O(nm + T(n+m))`` memory).
- :class:`Implicit` — the implicit function theorem at the fixed point (dense adjoint solve by
  :func:`solve_psd` up to :data:`IMPLICIT_DENSE_MAX` columns, :func:`conjugate_gradient` above).
- ``"detach"`` — the potentials carry no gradient.

:func:`differentiable_result` wraps a solve's trace in the chosen mode and returns the
:class:`~gca.ot.result.SinkhornResult`.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .backends import OpenBLAS, Trace, final_row_lse
from .problem import Problem
from .result import SinkhornConvergenceWarning, SinkhornResult

__all__ = ["IMPLICIT_DENSE_MAX", "Unrolled", "Implicit", "solve_psd", "conjugate_gradient", "differentiable_result"]

#: Implicit backward: a dense ``m × m`` solve up to this ``m``, conjugate gradient above.
IMPLICIT_DENSE_MAX = 2048


def differentiable_result(tr: Trace, problem: Problem, flat: tuple, *, grad: str, needs_grad: bool, record: bool,
                          row_lse: bool) -> SinkhornResult:
    """The solve's potentials wrapped in the gradient mode ``grad``, as a :class:`~gca.ot.SinkhornResult`.

    ``flat = (C, a, b)``: the problem's cost and marginals with the batch dimensions flattened,
    ``(B, n, m)``, ``(B, n)``, ``(B, m)`` (the tensors the gradient flows to); ``record``: the trace
    holds the half-steps the unrolled backward needs; ``row_lse``: also compute the final plan's
    row log-normaliser (the result's ``row_lse``).
    """
    Cf, af, bf = flat
    eps = problem.epsilon
    n, m = Cf.shape[-2:]
    if row_lse:
        with torch.no_grad(), torch.autocast(device_type=Cf.device.type, enabled=False), OpenBLAS.one_thread():
            tr.row_lse = final_row_lse(tr, record)
    f, g, g_prev, lse = tr.f, tr.g, tr.g_prev, tr.row_lse
    if needs_grad and grad == "unrolled":
        f, g, g_prev, lse = Unrolled.apply(Cf, af, bf, tr)
        lse = lse if row_lse else None
    elif needs_grad and grad == "implicit":
        f, g, g_prev = Implicit.apply(Cf, af, bf, tr.f, tr.g, tr.g_prev, eps, tr.tau_a, tr.tau_b)
    if needs_grad and grad != "unrolled" and row_lse:  # explicit formula, dense
        lse = torch.logsumexp((g[:, None, :] - Cf) / eps, -1)
    if not record:
        tr.ops = None  # drop the kernel / scaled cost unless the unrolled backward needs it
    batch_shape = problem.batch_shape
    shp_n, shp_m = (*batch_shape, n), (*batch_shape, m)
    return SinkhornResult(
        f=f.reshape(shp_n), g=g.reshape(shp_m), g_prev=g_prev.reshape(shp_m), cost=problem.cost, a=problem.a,
        b=problem.b, epsilon=eps, rho=problem.rho, n_iter=tr.n_iter, converged=tr.converged, error=tr.error,
        domain=tr.domain, grad=grad, row_lse=None if lse is None else lse.reshape(shp_n))


class Unrolled(torch.autograd.Function):
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
        with OpenBLAS.one_thread():
            return Unrolled._backward(ctx.trace, ctx.needs_input_grad, fbar, gbar, gpbar, lbar)

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


class Implicit(torch.autograd.Function):
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
            w = solve_psd(Mat, rhs)
            del Mat
        else:
            def matvec(x):
                y = x - kappa * torch.matmul(torch.matmul(x[:, None, :], Q.transpose(-1, -2)), Q)[:, 0, :]
                return y if q is None else y + q * (q * x).sum(-1, keepdim=True)

            w = conjugate_gradient(matvec, rhs)
        del Q
        mu = sc * w
        lam = fbar - tb * torch.matmul(P, (mu / c)[:, :, None])[:, :, 0]
        Cbar = P.mul_((ta * lam / r)[:, :, None] + (tb * mu / c)[:, None, :])
        abar = ta * eps * lam / a if ctx.needs_input_grad[1] else None
        bbar = tb * eps * mu / b if ctx.needs_input_grad[2] else None
        return Cbar, abar, bbar, None, None, None, None, None, None


def solve_psd(Mat: Tensor, rhs: Tensor) -> Tensor:
    """Solve the symmetric positive semi-definite adjoint system ``Mat w = rhs`` (batched).

    Well conditioned (the usual case): Cholesky. At small ε the plan is numerically block-diagonal
    (off-block entries ``e^{−ΔC/ε}`` below the dtype's resolution): each block carries its own
    gauge shift ``(f + s, g − s)``, so ``Mat`` has one (near-)null direction per block besides the
    pinned global one. Then the minimum-norm solution is taken (eigendecomposition, eigenvalues
    below ``m · eps_dtype · λ_max`` dropped) — the gradient of a loss that, like every loss here,
    only reads ``f_i + g_j`` inside a block; if ``rhs`` has a relative component above
    ``sqrt(eps_dtype)`` in the dropped directions the gradient is ill-determined and a
    :class:`~gca.ot.SinkhornConvergenceWarning` says so.
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


def conjugate_gradient(matvec, rhs: Tensor, max_iter: int | None = None) -> Tensor:
    """Batched CG for the symmetric positive-definite system of the implicit backward.

    Stops at relative residual ``≤ 100·eps`` of the dtype (checked every 5 steps); warns with
    :class:`~gca.ot.SinkhornConvergenceWarning` if ``max_iter`` (default ``2 m``) is reached.
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
