"""Tests of gca.ot: against POT, slow formula loops, fixed-point equations, gradients, bad input."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import ot as pot
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from gca.ot import (
    SinkhornConvergenceWarning,
    SinkhornNumericalError,
    SinkhornResult,
    bregman_projections,
    column_projection,
    epsilon_scaling_schedule,
    kernel_range_limit,
    row_projection,
    sinkhorn,
    sinkhorn_unbalanced,
)
from gca.ot import autodiff, backends
from gca.ot.problem import make_problem
from gca.ot.solvers import SolverOptions, solve

F64 = torch.float64
INF = math.inf


def _problem(n, m, seed, dtype=F64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    C = scale * torch.rand(n, m, generator=g, dtype=dtype)
    a = torch.rand(n, generator=g, dtype=dtype) + 0.2
    b = torch.rand(m, generator=g, dtype=dtype) + 0.2
    return C, a / a.sum(), b / b.sum()


def _joint_cost(B, d, seed, dtype=F64):
    """Joint-layout cost −ẑẑᵀ with +inf self-pairs (paper §2)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(2 * B, d, generator=g, dtype=dtype), dim=1)
    C = -(z @ z.T)
    C.fill_diagonal_(INF)
    return C


def _with_row_lse(C, a, b, *, epsilon, rho=None, domain="auto", **options):
    """The driver with the final plan's row log-normaliser (the losses' need; not in the public signatures)."""
    caller = "sinkhorn" if rho is None else "sinkhorn_unbalanced"
    problem = make_problem(C, a, b, epsilon=epsilon, rho=rho, caller=caller)
    return solve(problem, SolverOptions(domain=domain, **options), row_lse=True, caller=caller)


def _pot_quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


# ------------------------------------------------------------------------------------------------
# Against POT (float64, plans to 1e-8)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("domain", ["log", "kernel"])
@pytest.mark.parametrize("n,m,eps,seed", [(7, 5, 0.1, 0), (12, 20, 0.05, 1), (30, 9, 1.0, 2)])
def test_balanced_matches_pot(domain, n, m, eps, seed):
    C, a, b = _problem(n, m, seed)
    res = sinkhorn(C, a, b, epsilon=eps, tol=1e-13, max_iter=20000, domain=domain)
    assert res.converged and res.domain == domain
    Pk = _pot_quiet(pot.sinkhorn, a.numpy(), b.numpy(), C.numpy(), eps, numItermax=200000, stopThr=1e-15)
    Pl = _pot_quiet(pot.bregman.sinkhorn_log, a.numpy(), b.numpy(), C.numpy(), eps,
                    numItermax=200000, stopThr=1e-15)
    np.testing.assert_allclose(res.plan.numpy(), Pk, atol=1e-8, rtol=0)
    np.testing.assert_allclose(res.plan.numpy(), Pl, atol=1e-8, rtol=0)


@pytest.mark.parametrize("domain", ["log", "kernel"])
@pytest.mark.parametrize("rho", [(0.5, 2.0), (3.0, 0.1), (INF, 0.3), (0.4, INF), 0.7])
def test_unbalanced_matches_pot(domain, rho):
    C, a, b = _problem(9, 6, 3)
    b = 1.7 * b  # unequal masses are allowed
    eps = 0.1
    res = sinkhorn_unbalanced(C, a, b, epsilon=eps, rho=rho, tol=1e-14, max_iter=100000, domain=domain)
    assert res.converged
    P = _pot_quiet(pot.unbalanced.sinkhorn_unbalanced, a.numpy(), b.numpy(), C.numpy(), eps, rho,
                   reg_type="entropy", numItermax=200000, stopThr=1e-16)
    np.testing.assert_allclose(res.plan.numpy(), P, atol=1e-8, rtol=0)
    if rho == (INF, 0.3):  # the hard side is met exactly
        torch.testing.assert_close(res.plan.sum(1), a, atol=1e-9, rtol=0)


def test_unbalanced_kl_reference_equals_shifted_cost():
    """POT's default reg_type='kl' (KL to a⊗b) is our problem with cost C − ε log(a⊗b)."""
    C, a, b = _problem(6, 8, 4)
    eps, rho = 0.2, (0.5, 1.5)
    res = sinkhorn_unbalanced(C - eps * torch.log(a[:, None] * b[None, :]), a, b, epsilon=eps, rho=rho,
                              tol=1e-14, max_iter=100000)
    P = _pot_quiet(pot.unbalanced.sinkhorn_unbalanced, a.numpy(), b.numpy(), C.numpy(), eps, rho,
                   reg_type="kl", numItermax=200000, stopThr=1e-16)
    np.testing.assert_allclose(res.plan.numpy(), P, atol=1e-8, rtol=0)


def test_unbalanced_large_rho_tends_to_balanced():
    """τ = ρ/(ρ+ε) → 1: the iterates approach the balanced ones (same T), error O(T ε/ρ)."""
    C, a, b = _problem(8, 8, 5)
    bal = sinkhorn(C, a, b, epsilon=0.1, tol=0, max_iter=50).plan
    for rho, atol in ((1e4, 1e-4), (1e8, 1e-8)):
        unb = sinkhorn_unbalanced(C, a, b, epsilon=0.1, rho=rho, tol=0, max_iter=50).plan
        torch.testing.assert_close(unb, bal, atol=atol, rtol=0)


# ------------------------------------------------------------------------------------------------
# The mathematics: marginals, fixed point, projections, slow loops
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("domain", ["log", "kernel"])
def test_fixed_point_equations_balanced(domain):
    C, a, b = _problem(10, 7, 6)
    eps = 0.3
    r = sinkhorn(C, a, b, epsilon=eps, tol=1e-13, max_iter=10000, domain=domain)
    f_fp = eps * torch.log(a) - eps * torch.logsumexp((r.g[None, :] - C) / eps, 1)
    g_fp = eps * torch.log(b) - eps * torch.logsumexp((r.f[:, None] - C) / eps, 0)
    torch.testing.assert_close(r.f, f_fp, atol=1e-11, rtol=0)
    torch.testing.assert_close(r.g, g_fp, atol=1e-12, rtol=0)
    assert float(r.marginal_error_a) < 1e-12 and float(r.marginal_error_b) < 1e-12
    torch.testing.assert_close(r.plan_prev.sum(1), a, atol=1e-14, rtol=0)  # half-step rows are exact


def test_fixed_point_equations_unbalanced():
    C, a, b = _problem(10, 7, 7)
    eps, (ra, rb) = 0.3, (0.8, 2.5)
    r = sinkhorn_unbalanced(C, a, b, epsilon=eps, rho=(ra, rb), tol=1e-14, max_iter=100000)
    ta, tb = ra / (ra + eps), rb / (rb + eps)
    f_fp = ta * (eps * torch.log(a) - eps * torch.logsumexp((r.g[None, :] - C) / eps, 1))
    g_fp = tb * (eps * torch.log(b) - eps * torch.logsumexp((r.f[:, None] - C) / eps, 0))
    torch.testing.assert_close(r.f, f_fp, atol=1e-11, rtol=0)
    torch.testing.assert_close(r.g, g_fp, atol=1e-11, rtol=0)
    # first-order optimality of the unbalanced objective: P1 = a·exp(−f/ρ_a), Pᵀ1 = b·exp(−g/ρ_b)
    torch.testing.assert_close(r.plan.sum(1), a * torch.exp(-r.f / ra), atol=1e-11, rtol=0)
    torch.testing.assert_close(r.plan.sum(0), b * torch.exp(-r.g / rb), atol=1e-11, rtol=0)


def _slow_scaling_loop(C, a, b, eps, T, tau_a=1.0, tau_b=1.0):
    """Straight from paper §2/§4: u = (a / K v)^τa, v = (b / Kᵀ u)^τb, v⁰ = 1, explicit loops."""
    n, m = len(C), len(C[0])
    K = [[math.exp(-C[i][j] / eps) for j in range(m)] for i in range(n)]
    v = [1.0] * m
    v_prev = v
    for _ in range(T):
        u = [(a[i] / sum(K[i][j] * v[j] for j in range(m))) ** tau_a for i in range(n)]
        v_prev = v
        v = [(b[j] / sum(K[i][j] * u[i] for i in range(n))) ** tau_b for j in range(m)]
    P = [[u[i] * K[i][j] * v[j] for j in range(m)] for i in range(n)]
    Ph = [[u[i] * K[i][j] * v_prev[j] for j in range(m)] for i in range(n)]
    return torch.tensor(P, dtype=F64), torch.tensor(Ph, dtype=F64)


@pytest.mark.parametrize("domain", ["log", "kernel"])
@pytest.mark.parametrize("T", [1, 2, 5])
def test_fixed_iterations_match_slow_loop(domain, T):
    C, a, b = _problem(5, 4, 8)
    eps = 0.2
    P, Ph = _slow_scaling_loop(C.tolist(), a.tolist(), b.tolist(), eps, T)
    r = sinkhorn(C, a, b, epsilon=eps, max_iter=T, tol=0, domain=domain)
    assert r.n_iter == T and r.converged is False and r.error is None
    torch.testing.assert_close(r.plan, P, atol=1e-14, rtol=1e-12)
    torch.testing.assert_close(r.plan_prev, Ph, atol=1e-14, rtol=1e-12)
    ta, tb = 0.5 / (0.5 + eps), 2.0 / (2.0 + eps)
    P, Ph = _slow_scaling_loop(C.tolist(), a.tolist(), b.tolist(), eps, T, ta, tb)
    r = sinkhorn_unbalanced(C, a, b, epsilon=eps, rho=(0.5, 2.0), max_iter=T, tol=0, domain=domain)
    torch.testing.assert_close(r.plan, P, atol=1e-14, rtol=1e-12)
    torch.testing.assert_close(r.plan_prev, Ph, atol=1e-14, rtol=1e-12)


@pytest.mark.parametrize("domain", ["log", "kernel"])
def test_fixed_iterations_match_bregman_projections_joint_layout(domain):
    """Joint layout (+inf diagonal), μ = ν = 1_N: P^(2T) and P^(2T−1) of the projection sequence."""
    C = _joint_cost(4, 5, 9)
    ones = torch.ones(8, dtype=F64)
    T, eps = 4, 0.5
    logs = bregman_projections(C, ones, ones, epsilon=eps, n_steps=2 * T)
    r = sinkhorn(C, ones, ones, epsilon=eps, max_iter=T, tol=0, domain=domain)
    torch.testing.assert_close(r.plan, logs[2 * T].exp(), atol=1e-14, rtol=1e-12)
    torch.testing.assert_close(r.plan_prev, logs[2 * T - 1].exp(), atol=1e-14, rtol=1e-12)
    assert torch.all(r.plan.diagonal() == 0) and torch.all(r.log_plan.diagonal() == -INF)
    # exactly T iterations: T + 1 gives a different plan
    r2 = sinkhorn(C, ones, ones, epsilon=eps, max_iter=T + 1, tol=0, domain=domain)
    assert r2.n_iter == T + 1 and not torch.allclose(r2.plan, r.plan, atol=1e-12, rtol=0)


def test_one_row_projection_is_row_softmax_and_first_half_step():
    """INCE = one row projection: P^(1) = diag(1/K1) K, i.e. the row softmax of −C/ε."""
    C = _joint_cost(3, 4, 10)
    eps = 0.5
    ones = torch.ones(6, dtype=F64)
    lp1 = row_projection(-C / eps, ones)
    torch.testing.assert_close(lp1, torch.log_softmax(-C / eps, -1))
    r = sinkhorn(C, ones, ones, epsilon=eps, max_iter=1, tol=0)
    assert torch.all(r.g_prev == 0)
    torch.testing.assert_close(r.plan_prev, lp1.exp(), atol=1e-15, rtol=1e-13)
    lc = column_projection(lp1, ones)
    torch.testing.assert_close(lc.exp().sum(0), ones)
    torch.testing.assert_close(r.plan, lc.exp(), atol=1e-15, rtol=1e-13)


def test_projection_defaults_and_validation():
    C, _, _ = _problem(4, 3, 11)
    lp = row_projection(-C)
    torch.testing.assert_close(lp.exp().sum(1), torch.full((4,), 0.25, dtype=F64))
    with pytest.raises(ValueError, match="log_plan"):
        row_projection(torch.full((2, 2), float("nan")))
    with pytest.raises(TypeError, match="log_plan"):
        column_projection(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="n_steps"):
        bregman_projections(C, epsilon=1.0, n_steps=-1)


# ------------------------------------------------------------------------------------------------
# Regimes: small ε, range of ε in float32, kernel vs log, ε-scaling, warm starts, batches, dtypes
# ------------------------------------------------------------------------------------------------
def test_small_epsilon_recovers_assignment():
    g = torch.Generator().manual_seed(12)
    n = 8
    C = torch.rand(n, n, generator=g, dtype=F64)
    rows, cols = linear_sum_assignment(C.numpy())
    perm = torch.zeros(n, n, dtype=F64)
    perm[rows, cols] = 1.0 / n
    eps = 1e-3
    r = sinkhorn(C, epsilon=eps, tol=1e-10, max_iter=20000,
                 epsilon_schedule=epsilon_scaling_schedule(eps, start=1.0, factor=0.5))
    assert r.converged and r.domain == "log"  # (1 − 0)/1e-3 exceeds nothing for float64? see below
    torch.testing.assert_close(r.plan, perm, atol=2e-3, rtol=0)
    opt = float((C * perm).sum())
    assert abs(float((C * r.plan).sum()) - opt) < 2 * eps * math.log(n) + 1e-6


@pytest.mark.parametrize("eps", [1e-3, 1e-2, 0.1, 1.0, 10.0])
def test_float32_epsilon_range(eps):
    g = torch.Generator().manual_seed(13)
    n, m = 24, 17
    C = 2 * torch.rand(n, m, generator=g)
    sched = epsilon_scaling_schedule(eps, start=2.0) if eps < 0.1 else None
    r = sinkhorn(C, epsilon=eps, tol=1e-4, max_iter=5000, epsilon_schedule=sched)
    assert r.f.dtype == torch.float32 and r.converged
    assert torch.isfinite(r.plan).all()
    assert float(r.marginal_error_a) < 2e-4 and float(r.marginal_error_b) < 1e-4
    # unbalanced criterion max|Δf|/ε: float32 resolution of f is ~|f|·1e-7, hence tol ≥ ~1e-7/ε
    ru = sinkhorn_unbalanced(C, epsilon=eps, rho=(1.0, 0.5), tol=max(1e-5, 1e-6 / eps), max_iter=5000,
                             epsilon_schedule=sched)
    assert ru.converged and torch.isfinite(ru.plan).all()
    ta, tb = 1.0 / (1.0 + eps), 0.5 / (0.5 + eps)
    f_fp = ta * (eps * torch.log(ru.a) - eps * torch.logsumexp((ru.g[None, :] - C) / eps, 1))
    assert float((f_fp - ru.f).abs().max()) / eps < 10 * max(1e-5, 1e-6 / eps)


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-6), (F64, 1e-13)])
@pytest.mark.parametrize("joint", [False, True])
def test_kernel_and_log_paths_agree(dtype, atol, joint):
    if joint:
        C = _joint_cost(16, 8, 14, dtype)
        a = b = torch.ones(32, dtype=dtype)
    else:
        C, a, b = _problem(20, 30, 14, dtype, scale=2.0)
    for eps in (0.05, 0.5):
        rk = sinkhorn(C, a, b, epsilon=eps, max_iter=20, tol=0, domain="kernel")
        rl = sinkhorn(C, a, b, epsilon=eps, max_iter=20, tol=0, domain="log")
        assert rk.domain == "kernel" and rl.domain == "log"
        scale = float(a.sum())
        torch.testing.assert_close(rk.plan / scale, rl.plan / scale, atol=atol, rtol=0)
        torch.testing.assert_close(rk.f, rl.f, atol=50 * atol, rtol=0)


def test_kernel_rule_and_fallback():
    C, a, b = _problem(6, 6, 15, torch.float32, scale=2.0)
    limit = kernel_range_limit(torch.float32, 6)
    assert 60 < limit < 90 and kernel_range_limit(F64, 6) > 600
    assert sinkhorn(C, epsilon=2.0 / (0.9 * limit), max_iter=3, tol=0).domain == "kernel"
    assert sinkhorn(C, epsilon=2.0 / (1.1 * limit), max_iter=3, tol=0).domain == "log"
    with pytest.raises(ValueError, match="domain='kernel'"):
        sinkhorn(C, epsilon=1e-3, max_iter=3, tol=0, domain="kernel")
    # +inf entries: the rule is re-checked a posteriori. Here the only cheap entry of column 1 is
    # excluded and all others are expensive, so the kernel denominators underflow -> log fallback.
    Cx = torch.tensor([[0.0, INF, 0.0], [0.0, 4.0, 0.0], [4.0, 4.0, 4.0]])
    eps = 4.0 / 60
    r = sinkhorn(Cx, epsilon=eps, max_iter=30, tol=0)
    rl = sinkhorn(Cx, epsilon=eps, max_iter=30, tol=0, domain="log")
    torch.testing.assert_close(r.plan, rl.plan)


def test_epsilon_scaling_and_warm_start():
    C, a, b = _problem(16, 16, 16)
    eps = 0.01
    direct = sinkhorn(C, a, b, epsilon=eps, tol=1e-9, max_iter=100000)
    sched = epsilon_scaling_schedule(eps, start=1.0)
    assert sched[0] == 1.0 and all(s > eps for s in sched) and sched == sorted(sched, reverse=True)
    scaled = sinkhorn(C, a, b, epsilon=eps, tol=1e-9, max_iter=100000, epsilon_schedule=sched)
    torch.testing.assert_close(scaled.plan, direct.plan, atol=1e-8, rtol=0)
    assert scaled.n_iter < direct.n_iter  # final stage starts near the solution
    warm = sinkhorn(C, a, b, epsilon=eps, tol=1e-9, max_iter=100000, init=direct)
    assert warm.n_iter <= 2
    torch.testing.assert_close(warm.plan, direct.plan, atol=1e-9, rtol=0)


def test_batch_dimensions_match_individual_problems():
    g = torch.Generator().manual_seed(17)
    C = torch.rand(3, 2, 5, 4, generator=g, dtype=F64)
    a = torch.rand(3, 2, 5, generator=g, dtype=F64) + 0.1
    b = torch.rand(4, generator=g, dtype=F64) + 0.1  # broadcast over the batch
    b = b / b.sum()
    a = a / a.sum(-1, keepdim=True)
    for solve in (lambda *x: sinkhorn(*x, epsilon=0.2, max_iter=7, tol=0),
                  lambda *x: sinkhorn_unbalanced(*x, epsilon=0.2, rho=(1.0, 0.3), max_iter=7, tol=0)):
        r = solve(C, a, b)
        assert r.f.shape == (3, 2, 5) and r.g.shape == (3, 2, 4) and r.marginal_error_a.shape == (3, 2)
        for i in range(3):
            for j in range(2):
                rij = solve(C[i, j], a[i, j], b)
                torch.testing.assert_close(r.plan[i, j], rij.plan, atol=1e-15, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_solved_in_float32(dtype):
    C, _, _ = _problem(8, 6, 18, torch.float32)
    Ch = C.to(dtype).requires_grad_()
    r = sinkhorn(Ch, epsilon=0.1, tol=1e-5)
    r32 = sinkhorn(Ch.detach().float(), epsilon=0.1, tol=1e-5)
    assert r.f.dtype == torch.float32 and r.cost.dtype == torch.float32
    torch.testing.assert_close(r.plan, r32.plan)
    (r.f.sum() + r.g.sum()).backward()
    assert Ch.grad.dtype == dtype and torch.isfinite(Ch.grad.float()).all()


def test_autocast_does_not_change_the_solution():
    C = _joint_cost(8, 4, 19, torch.float32)
    ones = torch.ones(16)
    ref = sinkhorn(C, ones, ones, epsilon=0.5, max_iter=10, tol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = sinkhorn(C, ones, ones, epsilon=0.5, max_iter=10, tol=0)
    assert r.f.dtype == torch.float32
    torch.testing.assert_close(r.f, ref.f)


def test_invariances():
    C, a, b = _problem(7, 5, 20)
    eps = 0.2
    r = sinkhorn(C, a, b, epsilon=eps, tol=1e-12, max_iter=10000)
    # row/column constant shifts do not change a balanced plan
    shift = torch.arange(7, dtype=F64)[:, None] + 3 * torch.arange(5, dtype=F64)[None, :]
    rs = sinkhorn(C + shift, a, b, epsilon=eps, tol=1e-12, max_iter=10000)
    torch.testing.assert_close(rs.plan, r.plan, atol=1e-10, rtol=0)
    # transposition swaps the roles of a and b
    rt = sinkhorn(C.T, b, a, epsilon=eps, tol=1e-12, max_iter=10000)
    torch.testing.assert_close(rt.plan, r.plan.T, atol=1e-10, rtol=0)
    # permuting points permutes the plan
    p, q = torch.randperm(7, generator=torch.Generator().manual_seed(0)), torch.tensor([4, 2, 0, 1, 3])
    rp = sinkhorn(C[p][:, q], a[p], b[q], epsilon=eps, tol=1e-12, max_iter=10000)
    torch.testing.assert_close(rp.plan, r.plan[p][:, q], atol=1e-10, rtol=0)


# ------------------------------------------------------------------------------------------------
# Convergence reporting and non-finite values
# ------------------------------------------------------------------------------------------------
def test_non_convergence_warns_and_is_filterable():
    C, a, b = _problem(20, 20, 21)
    with pytest.warns(SinkhornConvergenceWarning, match=r"tol=1e-09.*max_iter=3.*epsilon=0\.01") as rec:
        r = sinkhorn(C, a, b, epsilon=0.01, tol=1e-9, max_iter=3)
    assert issubclass(rec[0].category, UserWarning)
    assert not r.converged and r.n_iter == 3 and r.error > 1e-9
    assert r.error == pytest.approx(float(r.marginal_error_a), rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        sinkhorn_unbalanced(C, a, b, epsilon=0.01, rho=0.5, tol=1e-12, max_iter=3)
        sinkhorn(C, a, b, epsilon=0.01, tol=0, max_iter=3)  # tol=0: fixed iterations, never warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sinkhorn(C, a, b, epsilon=0.01, tol=0, max_iter=3)


def test_non_finite_values_are_reported():
    C = torch.full((3, 3), 3e38)  # finite, but C/ε overflows float32
    with pytest.raises(SinkhornNumericalError, match="non-finite"):
        sinkhorn(C, epsilon=1e-3, max_iter=5, tol=0)
    with pytest.raises(SinkhornNumericalError):
        sinkhorn(C, epsilon=1e-3, max_iter=5, tol=0, domain="kernel")


def test_result_is_frozen_and_lazy():
    C, a, b = _problem(4, 4, 22)
    r = sinkhorn(C, a, b, epsilon=0.5, max_iter=3, tol=0)
    assert isinstance(r, SinkhornResult) and "plan" not in r.__dict__
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.f = r.g
    _ = r.plan
    assert "plan" in r.__dict__


# ------------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------------
def _solve(C, a, b, rho, **kw):
    if rho is None:
        return sinkhorn(C, a, b, **kw)
    return sinkhorn_unbalanced(C, a, b, rho=rho, **kw)


@pytest.mark.parametrize("domain", ["log", "kernel"])
@pytest.mark.parametrize("rho", [None, (0.5, 2.0), (INF, 0.3)])
def test_gradcheck_unrolled(domain, rho):
    C, a, b = _problem(5, 4, 23)
    C.requires_grad_()
    if rho is None:  # balanced: perturb a through a softmax so the masses stay equal
        theta = a.log().requires_grad_()

        def fn(C, theta):
            r = _solve(C, torch.softmax(theta, 0), b, rho, epsilon=0.4, max_iter=4, tol=0, domain=domain)
            return r.f, r.g, r.g_prev

        assert torch.autograd.gradcheck(fn, (C, theta))
    else:
        a.requires_grad_()
        b.requires_grad_()

        def fn(C, a, b):
            r = _solve(C, a, b, rho, epsilon=0.4, max_iter=4, tol=0, domain=domain)
            return r.f, r.g, r.g_prev

        assert torch.autograd.gradcheck(fn, (C, a, b))


@pytest.mark.parametrize("domain", ["log", "kernel"])
def test_gradcheck_unrolled_joint_layout_with_infinite_costs(domain):
    C = _joint_cost(3, 4, 24)
    ones = torch.ones(6, dtype=F64)
    mask = torch.isinf(C)
    base = C.masked_fill(mask, 0.0).requires_grad_()

    def fn(x):
        r = sinkhorn(x.masked_fill(mask, INF), ones, ones, epsilon=0.5, max_iter=5, tol=0, domain=domain)
        return r.f, r.g, r.g_prev

    assert torch.autograd.gradcheck(fn, (base,))


@pytest.mark.parametrize("rho", [None, (0.5, 2.0), (INF, 0.3)])
def test_gradcheck_implicit(rho):
    C, a, b = _problem(5, 4, 25)
    C.requires_grad_()
    W = torch.randn(5, 4, dtype=F64, generator=torch.Generator().manual_seed(1))

    def fn(C, *ab):
        aa, bb = ab if ab else (a, b)
        r = _solve(C, aa, bb, rho, epsilon=0.5, tol=1e-14, max_iter=10000, grad="implicit")
        return (r.plan * W).sum(), r.f[:, None] + r.g[None, :]

    if rho is None:
        assert torch.autograd.gradcheck(fn, (C,))
    else:
        assert torch.autograd.gradcheck(fn, (C, a.clone().requires_grad_(), b.clone().requires_grad_()))


@pytest.mark.parametrize("rho", [None, (0.5, 2.0)])
def test_implicit_equals_unrolled_at_convergence(rho):
    C, a, b = _problem(8, 6, 26)
    W = torch.randn(8, 6, dtype=F64, generator=torch.Generator().manual_seed(2))
    grads = []
    for mode in ("implicit", "unrolled"):
        Cg = C.clone().requires_grad_()
        r = _solve(Cg, a, b, rho, epsilon=0.3, tol=1e-14, max_iter=20000, grad=mode)
        (r.plan * W).sum().backward()
        grads.append(Cg.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=0)


def test_detach_mode_differentiates_only_the_explicit_cost():
    C, a, b = _problem(5, 5, 27)
    Cg = C.clone().requires_grad_()
    r = sinkhorn(Cg, a, b, epsilon=0.5, tol=1e-12, grad="detach")
    assert not r.f.requires_grad and not r.g.requires_grad and r.plan.requires_grad
    W = torch.randn(5, 5, dtype=F64, generator=torch.Generator().manual_seed(3))
    (r.plan * W).sum().backward()
    torch.testing.assert_close(Cg.grad, -W * r.plan.detach() / 0.5)


def test_no_autograd_state_without_requires_grad():
    C, a, b = _problem(6, 6, 28)
    r = sinkhorn(C, a, b, epsilon=0.5, max_iter=5, tol=0)
    assert r.f.grad_fn is None and not r.f.requires_grad


# ------------------------------------------------------------------------------------------------
# Bad input: ValueError / TypeError naming the value and the fix
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps,exc", [(0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                                     (INF, ValueError), ("0.1", TypeError), (True, TypeError)])
def test_bad_epsilon(eps, exc):
    C, _, _ = _problem(3, 3, 0)
    with pytest.raises(exc, match="epsilon"):
        sinkhorn(C, epsilon=eps)


def test_bad_costs():
    with pytest.raises(TypeError, match="torch.Tensor"):
        sinkhorn(np.zeros((3, 3)), epsilon=1.0)
    with pytest.raises(TypeError, match="floating-point"):
        sinkhorn(torch.zeros(3, 3, dtype=torch.int64), epsilon=1.0)
    with pytest.raises(TypeError, match="floating-point"):
        sinkhorn(torch.zeros(3, 3, dtype=torch.bool), epsilon=1.0)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., n, m\)"):
        sinkhorn(torch.zeros(3), epsilon=1.0)
    with pytest.raises(ValueError, match="n, m >= 1"):
        sinkhorn(torch.zeros(3, 0), epsilon=1.0)
    bad = torch.zeros(3, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        sinkhorn(bad, epsilon=1.0)
    bad[1, 2] = -INF
    with pytest.raises(ValueError, match="-inf"):
        sinkhorn(bad, epsilon=1.0)
    bad = torch.zeros(3, 3)
    bad[1, :] = INF
    with pytest.raises(ValueError, match="row with only \\+inf"):
        sinkhorn(bad, epsilon=1.0)
    bad = torch.zeros(3, 3)
    bad[:, 0] = INF
    with pytest.raises(ValueError, match="column with only \\+inf"):
        sinkhorn(bad, epsilon=1.0, domain="log")
    with pytest.raises(ValueError, match="only \\+inf"):
        sinkhorn(torch.full((2, 2), INF), epsilon=1.0)


def test_bad_marginals():
    C, a, b = _problem(4, 3, 1)
    with pytest.raises(ValueError, match="a must be strictly positive"):
        sinkhorn(C, a - 0.3, b, epsilon=1.0)
    with pytest.raises(ValueError, match="a must be strictly positive.*zero-mass"):
        sinkhorn(C, torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=F64), b, epsilon=1.0)
    with pytest.raises(ValueError, match="b must have length 3"):
        sinkhorn(C, a, torch.ones(4, dtype=F64) / 4, epsilon=1.0)
    with pytest.raises(TypeError, match="a must be a floating-point"):
        sinkhorn(C, torch.ones(4, dtype=torch.int64), b, epsilon=1.0)
    with pytest.raises(TypeError, match="b must be a torch.Tensor"):
        sinkhorn(C, a, [1 / 3] * 3, epsilon=1.0)
    with pytest.raises(ValueError, match="non-finite"):
        sinkhorn(C, a, torch.tensor([0.5, INF, 0.5], dtype=F64), epsilon=1.0)
    with pytest.raises(ValueError, match=r"a.sum\(\) == b.sum\(\).*sinkhorn_unbalanced"):
        sinkhorn(C, a, 2 * b, epsilon=1.0)
    with pytest.raises(ValueError, match="does not broadcast"):
        sinkhorn(torch.rand(2, 4, 3, dtype=F64), torch.ones(3, 4, dtype=F64) / 4, epsilon=1.0)
    sinkhorn_unbalanced(C, a, 2 * b, epsilon=1.0, rho=1.0, max_iter=3, tol=0)  # fine when relaxed


@pytest.mark.parametrize("rho,exc", [(0.0, ValueError), (-2.0, ValueError), (float("nan"), ValueError),
                                     ((1.0, -1.0), ValueError), ((1.0, 2.0, 3.0), ValueError),
                                     ("1", TypeError), (None, TypeError)])
def test_bad_rho(rho, exc):
    C, a, b = _problem(3, 3, 2)
    with pytest.raises(exc, match="rho"):
        sinkhorn_unbalanced(C, a, b, epsilon=1.0, rho=rho)


def test_bad_knobs():
    C, a, b = _problem(3, 3, 3)
    with pytest.raises(ValueError, match="max_iter"):
        sinkhorn(C, epsilon=1.0, max_iter=0)
    with pytest.raises(TypeError, match="max_iter"):
        sinkhorn(C, epsilon=1.0, max_iter=2.5)
    with pytest.raises(ValueError, match="tol"):
        sinkhorn(C, epsilon=1.0, tol=-1.0)
    with pytest.raises(ValueError, match="grad"):
        sinkhorn(C, epsilon=1.0, grad="envelope")
    with pytest.raises(ValueError, match="domain"):
        sinkhorn(C, epsilon=1.0, domain="gpu")
    with pytest.raises(ValueError, match="init"):
        sinkhorn(C, epsilon=1.0, init=torch.zeros(5, dtype=F64))
    with pytest.raises(ValueError, match="epsilon_schedule"):
        sinkhorn(C, epsilon=1.0, epsilon_schedule=[1.0, 0.0])
    with pytest.raises(ValueError, match="factor"):
        epsilon_scaling_schedule(0.1, start=1.0, factor=1.5)
    with pytest.raises(ValueError, match="check_every"):
        sinkhorn(C, epsilon=1.0, check_every=0)


@pytest.mark.parametrize("grad", ["unrolled", "implicit", "detach"])
@pytest.mark.parametrize("domain", ["log", "kernel"])
def test_row_lse_value_and_gradient(grad, domain):
    """row_lse = LSE_j((g − C)/ε): equals the dense formula, and its gradient matches it too."""
    C = _joint_cost(3, 4, 29)
    ones = torch.ones(6, dtype=F64)
    mask = torch.isinf(C)
    base = C.masked_fill(mask, 0.0)
    kw = dict(epsilon=0.5, rho=(0.4, 0.9), max_iter=6, tol=0, domain=domain, grad=grad)
    if grad == "implicit":
        kw.update(max_iter=5000, tol=1e-14)
    x = base.clone().requires_grad_()
    r = _with_row_lse(x.masked_fill(mask, INF), ones, ones, **kw)
    dense = torch.logsumexp((r.g[None, :] - r.cost) / 0.5, -1)
    torch.testing.assert_close(r.row_lse, dense.detach() if grad == "detach" else dense)
    w = torch.randn(6, dtype=F64, generator=torch.Generator().manual_seed(4))
    (g1,) = torch.autograd.grad((r.row_lse * w).sum(), x, retain_graph=True)
    (g2,) = torch.autograd.grad((dense * w).sum(), x)
    torch.testing.assert_close(g1, g2, atol=1e-10, rtol=1e-8)
    if grad == "unrolled":
        def fn(x):
            return _with_row_lse(x.masked_fill(mask, INF), ones, ones, **kw).row_lse

        assert torch.autograd.gradcheck(fn, (base.clone().requires_grad_(),))
    assert sinkhorn(C, ones, ones, epsilon=0.5, max_iter=3, tol=0).row_lse is None
    r0 = _with_row_lse(C, ones, ones, epsilon=0.5, max_iter=3, tol=0, domain=domain)
    torch.testing.assert_close(r0.row_lse, torch.logsumexp((r0.g[None, :] - C) / 0.5, -1))


def test_row_lse_is_served_by_the_driver_only():
    """The row log-normaliser is the losses' need: the public solvers neither take nor set it."""
    import inspect

    for fn in (sinkhorn, sinkhorn_unbalanced):
        assert "return_row_lse" not in inspect.signature(fn).parameters
    with pytest.raises(TypeError, match="row_lse"):
        solve(make_problem(torch.rand(3, 3, dtype=F64), epsilon=1.0), SolverOptions(), row_lse=1)


# ------------------------------------------------------------------------------------------------
# A larger problem and CUDA (gpu marker; skipped without a device)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("domain", ["log", "kernel"])
def test_larger_problem_matches_pot(domain):
    C, a, b = _problem(300, 200, 30, scale=2.0)
    eps = 0.05
    r = sinkhorn(C, a, b, epsilon=eps, tol=1e-12, max_iter=100000, domain=domain)
    P = _pot_quiet(pot.bregman.sinkhorn_log, a.numpy(), b.numpy(), C.numpy(), eps, numItermax=100000,
                   stopThr=1e-14)
    np.testing.assert_allclose(r.plan.numpy(), P, atol=1e-8, rtol=0)
    ru = sinkhorn_unbalanced(C, a, b, epsilon=eps, rho=(0.3, INF), tol=1e-13, max_iter=100000, domain=domain)
    Pu = _pot_quiet(pot.unbalanced.sinkhorn_unbalanced, a.numpy(), b.numpy(), C.numpy(), eps, (0.3, INF),
                    reg_type="entropy", numItermax=200000, stopThr=1e-15)
    np.testing.assert_allclose(ru.plan.numpy(), Pu, atol=1e-8, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("grad", ["unrolled", "implicit"])
def test_cuda_matches_cpu(grad):
    C = _joint_cost(64, 16, 31, torch.float32)
    ones = torch.ones(128)
    ref = sinkhorn(C.clone().requires_grad_(), ones, ones, epsilon=0.5, max_iter=10, tol=0)
    Cc = C.cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.float16):
        r = _with_row_lse(Cc, ones.cuda(), ones.cuda(), epsilon=0.5, max_iter=10, tol=0, grad=grad)
    assert r.f.device.type == "cuda" and r.f.dtype == torch.float32
    if grad == "unrolled":
        torch.testing.assert_close(r.f.cpu(), ref.f, atol=1e-5, rtol=1e-5)
    (r.f.sum() + r.row_lse.sum()).backward()
    assert torch.isfinite(Cc.grad).all()


@pytest.mark.parametrize("rho", [None, (0.2, 3.0)])
def test_kernel_path_long_runs_match_log_path(rho):
    """Many iterations (the kernel path resolves its log-scales in batches of 256)."""
    C, a, b = _problem(9, 7, 32, scale=2.0)
    kw = dict(epsilon=0.03, max_iter=700, tol=0)
    rk = _solve(C, a, b, rho, domain="kernel", **kw)
    rl = _solve(C, a, b, rho, domain="log", **kw)
    torch.testing.assert_close(rk.f, rl.f, atol=1e-11, rtol=0)
    torch.testing.assert_close(rk.g_prev, rl.g_prev, atol=1e-11, rtol=0)
    torch.testing.assert_close(rk.plan, rl.plan, atol=1e-12, rtol=0)


@pytest.mark.parametrize("rho", [None, (0.5, 2.0)])
def test_implicit_conjugate_gradient_matches_dense(monkeypatch, rho):
    C, a, b = _problem(9, 7, 33)
    W = torch.randn(9, 7, dtype=F64, generator=torch.Generator().manual_seed(5))
    grads = []
    for dense_max in (10**9, 0):
        monkeypatch.setattr(autodiff, "IMPLICIT_DENSE_MAX", dense_max)
        Cg = C.clone().requires_grad_()
        r = _solve(Cg, a, b, rho, epsilon=0.3, tol=1e-14, max_iter=20000, grad="implicit")
        (r.plan * W).sum().backward()
        grads.append(Cg.grad)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-11, rtol=0)


@pytest.mark.parametrize("taus", [(1.0, 1.0), (0.7, 0.9)])
def test_log_scale_recurrence_matches_sequential_loop(monkeypatch, taus):
    """Sigmas solves σ_u^t = log M_u^t + τ_a(c − σ_v^{t−1}), σ_v^t = log M_v^t + τ_b(c − σ_u^t)
    in vectorised chunks; compare with the recurrence run step by step (chunks of 5, 23 steps)."""
    monkeypatch.setattr(backends.Sigmas, "CHUNK", 5)
    ta, tb = taus
    g = torch.Generator().manual_seed(40)
    B, T = 3, 23
    c = torch.randn(B, 1, generator=g, dtype=F64)
    sv0 = torch.randn(B, 1, generator=g, dtype=F64)
    M = torch.rand(T, 2, B, 1, generator=g, dtype=F64) + 0.1
    sig = backends.Sigmas(sv0, c, ta, tb)
    su_ref, sv_ref = {}, {0: sv0}
    for t in range(1, T + 1):
        sig.push(M[t - 1, 0], M[t - 1, 1])
        su_ref[t] = M[t - 1, 0].log() + ta * (c - sv_ref[t - 1])
        sv_ref[t] = M[t - 1, 1].log() + tb * (c - su_ref[t])
        if t in (7, 16):  # resolving mid-chunk (what the unbalanced stopping test does)
            torch.testing.assert_close(sig.sv(t - 2), sv_ref[t - 2], atol=1e-12, rtol=0)
            torch.testing.assert_close(sig.su(t), su_ref[t], atol=1e-12, rtol=0)
    for t in (T - 2, T - 1, T):
        torch.testing.assert_close(sig.sv(t), sv_ref[t], atol=1e-12, rtol=0)
        torch.testing.assert_close(sig.su(t), su_ref[t], atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cpu_matvec_backends_agree(monkeypatch, dtype):
    """The kernel path's NumPy/OpenBLAS matvecs equal torch.matmul's, forward and unrolled backward."""
    if not backends.OpenBLAS.available():
        pytest.skip("NumPy is not linked against OpenBLAS here: both back ends would be torch.matmul")
    g = torch.Generator().manual_seed(41)
    K = torch.rand(4, 9, 6, generator=g, dtype=dtype)
    v, u = torch.rand(4, 6, generator=g, dtype=dtype), torch.rand(4, 9, generator=g, dtype=dtype)
    mv, rmv = backends.matvecs(K)
    tol = dict(atol=1e-6 if dtype == torch.float32 else 1e-14, rtol=0)
    torch.testing.assert_close(mv(v), torch.einsum("bij,bj->bi", K, v), **tol)
    torch.testing.assert_close(rmv(u), torch.einsum("bij,bi->bj", K, u), **tol)

    C, a, b = _problem(9, 7, 42, dtype, scale=2.0)
    W = torch.randn(9, 7, generator=g, dtype=dtype)
    out = []
    for limit in (backends.NUMPY_MATVEC_MAX, 0):  # 0: every kernel goes through torch.matmul
        monkeypatch.setattr(backends, "NUMPY_MATVEC_MAX", limit)
        Cg = C.clone().requires_grad_()
        r = sinkhorn_unbalanced(Cg, a, b, epsilon=0.2, rho=(0.5, 2.0), max_iter=40, tol=0, domain="kernel")
        (r.plan * W).sum().backward()
        out.append((r.f.detach(), Cg.grad))
    torch.testing.assert_close(out[0][0], out[1][0], **tol)
    torch.testing.assert_close(out[0][1], out[1][1], atol=100 * tol["atol"], rtol=0)


def test_openblas_thread_count_is_restored(monkeypatch):
    """The solver pins NumPy's OpenBLAS to one thread while it runs and restores the setting."""
    from threadpoolctl import threadpool_info

    if not backends.OpenBLAS.available():
        pytest.skip("NumPy is not linked against OpenBLAS here (the torch matvecs are used)")

    def counts():
        return [i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"]

    before = counts()
    C, a, b = _problem(8, 8, 43, torch.float32)
    Cg = C.clone().requires_grad_()
    seen = []
    orig = np.matmul
    monkeypatch.setattr(backends.np, "matmul", lambda *x: (seen.append(counts()), orig(*x))[1])
    r = _with_row_lse(Cg, a, b, epsilon=0.5, max_iter=5, tol=0)
    (r.f.sum() + r.row_lse.sum()).backward()
    monkeypatch.undo()
    assert seen and all(all(k == 1 for k in c) for c in seen)  # forward, row_lse and backward
    assert counts() == before


# ------------------------------------------------------------------------------------------------
# Non-finite values never reach BLAS (issue: a SkylakeX OpenBLAS kernel warned on inf in a gemv)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["cost_overflow", "cost_overflow_kernel", "epsilon_underflow",
                                  "epsilon_underflow_f64", "overflow_unbalanced"])
def test_non_finite_scaled_cost_is_refused_before_any_blas_call(monkeypatch, case):
    seen = []
    real = backends.OpenBLAS.matmul.__func__

    def recording(cls, x, y):
        seen.append(bool(np.isfinite(x).all() and np.isfinite(y).all()))
        return real(cls, x, y)

    monkeypatch.setattr(backends.OpenBLAS, "matmul", classmethod(recording))
    monkeypatch.setattr(backends.OpenBLAS, "available", classmethod(lambda cls: True))
    monkeypatch.setattr(backends.OpenBLAS, "libs", [])
    f32 = torch.float32
    problems = {
        "cost_overflow": (lambda: sinkhorn(torch.full((3, 3), 3e38), epsilon=1e-3, max_iter=5, tol=0), "non-finite"),
        "cost_overflow_kernel": (lambda: sinkhorn(torch.full((3, 3), 3e38), epsilon=1e-3, max_iter=5, tol=0,
                                                  domain="kernel"), "non-finite"),
        "epsilon_underflow": (lambda: sinkhorn(torch.zeros(4, 3, dtype=f32), epsilon=1e-40, max_iter=5, tol=0),
                              "too small"),
        "epsilon_underflow_f64": (lambda: sinkhorn(torch.rand(4, 3, dtype=F64), epsilon=1e-310, max_iter=5,
                                                   tol=0), "too small"),
        "overflow_unbalanced": (lambda: sinkhorn_unbalanced(torch.full((3, 4), -2e38), rho=1.0, epsilon=1e-2,
                                                            max_iter=5, tol=0), "non-finite"),
    }
    fn, match = problems[case]
    with pytest.raises(SinkhornNumericalError, match=match):
        fn()
    assert all(seen), "a non-finite operand reached np.matmul"


def test_solver_emits_no_numpy_floating_point_warning_on_underflowing_kernels():
    # +inf rows force the kernel path's a-posteriori check and the fallback to the log domain:
    # whatever the BLAS kernel, the outcome is the solver's own error, never a NumPy warning
    C = torch.rand(5, 4, dtype=F64)
    C[2] = math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="only \\+inf"):
            sinkhorn(C, epsilon=0.1, max_iter=20, tol=0)
        C2 = torch.rand(64, 64, dtype=torch.float32) * 80  # range/ε near the kernel rule's limit
        r = sinkhorn(C2, epsilon=1.0, max_iter=50, tol=0)
        assert bool(torch.isfinite(r.f).all())
