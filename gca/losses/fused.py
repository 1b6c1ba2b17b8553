r"""Fast path of the iterated losses: a fixed-``T`` Sinkhorn on cosine kernels, fused with its exact VJP.

The reference path of :func:`gca.losses.alignment` builds the cost, hands it to the general solver
of :mod:`gca.ot` (validation, cost range, log/kernel domain choice, checks) and differentiates the
``T`` unrolled iterations there. For the configurations the paper trains with — positive-pair
target, ``grad="unrolled"`` or ``"detach"``, balanced (GCA-INCE, GCA-RINCE, IOT) or unbalanced
(GCA-UOT) constraint, float32/float64 — everything that general solver decides at run time is known
in advance, because the embeddings are normalised (``|S_ij| ≤ 1``):

* the kernel ``K' = exp((S − 1)/ε)`` has entries in ``[e^{−2/ε}, 1]`` (``0`` on the joint layout's
  self-pairs), whatever the data, so the kernel (scaling) domain is safe whenever ``2/ε`` is below
  the static bound of :func:`fast_path_supported` — no cost-range reduction, no host
  synchronisation, no data-dependent branch inside the iterations;
* the log-scales that the general solver tracks per step are data-independent scalars here
  (``σ_u^t = τ_a(log a + δ − σ_v^{t−1})``, ``σ_v^t = τ_b(log b + δ − σ_u^t)``, ``δ`` the shift
  between ``K'`` and ``e^{−C/ε}``, constant marginals ``a, b``) and are carried as Python floats.

One iteration (paper §2, :mod:`gca.ot` conventions ``u = (a/Kv)^{τ_a}``, ``v = (b/Kᵀu)^{τ_b}``,
here with ``u^t = e^{σ_u^t} û^t``, ``v^t = e^{σ_v^t} v̂^t``, ``v̂⁰ = 1``): two kernel launches per
half-step,

.. math::
    d^t = K' \hat v^{t-1},\quad \hat u^t = (d^t)^{-\tau_a},\quad
    e^t = K'^\top \hat u^t,\quad \hat v^t = (e^t)^{-\tau_b},

and the dimensionless potentials are ``f/ε = log û^T + σ_u^T``, ``g/ε = log v̂^T + σ_v^T``,
``g_prev/ε`` the same at ``T − 1``, ``row_lse = log(K' v̂^T) − δ + σ_v^T``.

**Exact backward** (``_FusedSinkhorn``): the reverse sweep over the ``2T`` matrix–vector
products gives ``K̄' = X Yᵀ`` (rank ``2T + 1``; the same unrolled gradient as :mod:`gca.ot`),
``S̄ = K' ⊙ K̄'/ε``. On the joint layout ``S = H Hᵀ`` is symmetric and so is ``K'``, so the
gradient with respect to the normalised embeddings is one product,
``H̄ = (S̄ + S̄ᵀ) H = (K' ⊙ [X, Y][Y, X]ᵀ/ε) H``, instead of the two (``S̄ H`` and ``S̄ᵀ H``)
that autograd forms — one ``N × N × d`` matrix product fewer than INCE's backward.

It is chosen automatically by :func:`gca.losses.alignment` on its synchronisation-free path
(:data:`gca.losses.core.FAST_PATH`, on by default) where it applies (see
:func:`fast_path_supported`); elsewhere that path runs the general solver without checks
(:func:`gca.ot.solvers.solve_unchecked`). Its results are read once, with the loss: a non-finite
value sends the call to the checked path. ``GCA_FUSED=0`` in the environment or
``with gca.losses.fused.disabled():`` turns only this fused solver off (``GCA_FUSED=1`` keeps it
on); ``GCA_FAST_PATH=off`` turns the whole fast path off.

Why here and not in :mod:`gca.ot`: everything that makes it fast is a property of the losses'
problem, not of entropic OT — cosine costs of unit embeddings (the static range), constant
marginals (the log-scales as Python floats), the joint layout's symmetry (one product in the
backward) — and it hands back the pieces of a :class:`gca.losses.Alignment` (positives, lazy
dense views). :mod:`gca.ot` stays a general solver for any cost.
Tested against a float64 loop written from the formulas (values and gradients) in
``tests/test_fused.py``.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Optional

import torch
from torch import Tensor

from ..checks import check_epsilon, check_int
from ..ot.backends import OpenBLAS
from .constraints import constraint_potentials
from .cost import scaled_similarity, unit_rows
from .targets import positive_index

__all__ = ["fast_path_supported", "max_range", "enabled", "disabled", "forced", "potentials_for_alignment"]

_STATE = {"override": None}  # None: environment / default; True/False: forced by the context managers


def enabled() -> bool:
    """Whether :func:`gca.losses.alignment` may use the fast path (``GCA_FUSED``: ``0`` off, else on)."""
    if _STATE["override"] is not None:
        return _STATE["override"]
    return os.environ.get("GCA_FUSED", "1").strip().lower() not in ("0", "false", "off", "no")


@contextlib.contextmanager
def _override(value: bool):
    old = _STATE["override"]
    _STATE["override"] = value
    try:
        yield
    finally:
        _STATE["override"] = old


def disabled():
    """Context manager: the reference path of :mod:`gca.ot` inside (tests, benchmarks)."""
    return _override(False)


def forced():
    """Context manager: the fast path wherever :func:`fast_path_supported` allows it."""
    return _override(True)


def max_range(dtype: torch.dtype, n: int) -> float:
    r"""Largest ``R = 2/ε`` (range of ``C/ε`` for cosine costs) accepted by the fast path.

    With ``K'`` in ``[e^{−R}, 1]`` and ``v̂⁰ = 1``, monotonicity of the Sinkhorn map keeps
    ``|log v̂^t| ≤ 2R`` and ``d^t = K'v̂^{t−1} ∈ [N e^{−3R}, N e^{2R}]``, so every iterate is a
    normal number of ``dtype`` when ``3R + 2 log N`` stays below ``log(max)`` (with a margin of 4):
    ``R ≤ 23.6`` (``ε ≥ 0.085``) in float32 at ``N = 1024``. The unbalanced iterates
    (``v̂ = e^{−τ}``, ``τ < 1``) contract towards 1 and stay inside the same range.
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype={dtype!r} must be a floating-point torch.dtype")
    check_int("n", n, 1, " (the number of rows of the plan)")
    return (math.log(torch.finfo(dtype).max) - 4.0 - 2.0 * math.log(max(n, 2))) / 3.0


def fast_path_supported(*, layout: str, cost: str, constraint: str, target, grad: str,
                        uniformity_weight: float, epsilon: float, dtype: torch.dtype, n: int) -> bool:
    """Whether the fused path computes exactly what the reference path computes for this call
    (and is enabled): iterated constraint, positive-pair target, unrolled or detached gradient, no
    IOT-uni term, float32/float64, and ``2/ε ≤`` :func:`max_range` ``(dtype, n)``."""
    epsilon = check_epsilon(epsilon)
    check_int("n", n, 1, " (the number of rows of the plan)")
    return (enabled() and constraint in ("balanced", "unbalanced") and target is None
            and grad in ("unrolled", "detach") and uniformity_weight == 0
            and layout in ("joint", "cross") and cost in ("neg_cosine", "cosine_distance")
            and dtype in (torch.float32, torch.float64) and 2.0 / epsilon <= max_range(dtype, n))


def _scales(T: int, delta: float, tau_a: float, tau_b: float, a: float, b: float):
    """Log-scales ``σ_u^t, σ_v^t`` (t = 0..T) of the iterates: data-independent Python floats.

    ``u^t = e^{σ_u^t} û^t`` with ``û^t = (d^t)^{−τ_a}`` and ``σ_u^t = τ_a(log a + δ − σ_v^{t−1})``;
    ``v^t = e^{σ_v^t} v̂^t`` with ``v̂^t = (e^t)^{−τ_b}`` and ``σ_v^t = τ_b(log b + δ − σ_u^t)``
    (the marginals, being constant, live in the scalars: one kernel launch per half-step fewer)."""
    su, sv = [0.0], [0.0]
    for _ in range(T):
        su.append(tau_a * (math.log(a) + delta - sv[-1]))
        sv.append(tau_b * (math.log(b) + delta - su[-1]))
    return su, sv


def _iterate(K: Tensor, symmetric: bool, T: int, tau_a: float, tau_b: float, extra: bool):
    """The ``T`` scaling iterations: lists ``d, u, e, v`` (index t = 1..T; ``v[0] = 1``), and
    ``K'v̂^T`` when ``extra``. No host synchronisation, no data-dependent branch."""
    mv, rmv = _matvecs(K, symmetric)
    v = K.new_ones(K.shape[1])
    d, u, e, vs = [None], [None], [None], [v]
    for _ in range(T):
        dt = mv(v)
        ut = torch.reciprocal(dt) if tau_a == 1.0 else dt.pow(-tau_a)
        et = rmv(ut)
        v = torch.reciprocal(et) if tau_b == 1.0 else et.pow(-tau_b)
        d.append(dt)
        u.append(ut)
        e.append(et)
        vs.append(v)
    d_extra = mv(v) if extra else None
    return d, u, e, vs, d_extra


NUMPY_MATVECS = True  # CPU: matvecs through NumPy's OpenBLAS on one thread where available


def _openblas():
    """:class:`gca.ot.backends.OpenBLAS` (NumPy's OpenBLAS, pinned to one thread) if usable here, else None."""
    try:
        return OpenBLAS if OpenBLAS.available() else None
    except Exception:  # threadpoolctl failing: torch.mv is always correct
        return None


def _use_numpy(K: Tensor) -> bool:
    return (NUMPY_MATVECS and K.device.type == "cpu" and K.dtype in (torch.float32, torch.float64)
            and K.is_contiguous() and _openblas() is not None)


def _blas_context(K: Tensor):
    """One-thread OpenBLAS for a whole sweep of matvecs (its idle workers would otherwise spin and
    slow the next multithreaded torch op; see :class:`gca.ot.backends.OpenBLAS`)."""
    return _openblas().one_thread() if _use_numpy(K) else contextlib.nullcontext()


def _matvecs(K: Tensor, symmetric: bool):
    """``(v ↦ K'v, u ↦ K'ᵀu)``. CPU: NumPy's OpenBLAS gemv on one thread, on zero-copy views (51 µs
    against 73 µs for ``torch.mv`` at N = 1024 float32 on the 2-core test machine, whose torch uses
    MKL); elsewhere ``torch.mv``. Both are plain sums of products: only rounding differs."""
    if _use_numpy(K):
        Kn = K.numpy()
        Ktn = Kn if symmetric else Kn.T

        def mv(x):
            return torch.from_numpy(Kn @ x.numpy())

        def rmv(x):
            return torch.from_numpy(Ktn @ x.numpy())
        return mv, rmv
    Kt = K if symmetric else K.T
    return (lambda x: torch.mv(K, x)), (lambda x: torch.mv(Kt, x))


class _FusedSinkhorn(torch.autograd.Function):
    """``(L, R) ↦ (f/ε, g/ε, g_prev/ε, row_lse)`` for ``S = L Rᵀ`` (joint: ``R is L``), exact VJP."""

    @staticmethod
    def forward(ctx, L, R, cfg):
        symmetric, s, delta, T, ta, tb, a, b, extra = cfg
        # K' = exp(s·S − s) in one GEMM (scale and shift folded in) and one in-place exp
        K = torch.addmm(L.new_full((1, 1), -s), L, R.T, alpha=s).exp_()  # (new_full: no host copy)
        if symmetric:
            K.fill_diagonal_(0.0)  # joint layout: self-pairs excluded (C_ii = +inf)
        with _blas_context(K):
            d, u, e, v, d_extra = _iterate(K, symmetric, T, ta, tb, extra)
        su, sv = _scales(T, delta, ta, tb, a, b)
        phi = su[T] - ta * torch.log(d[T])
        gam = sv[T] - tb * torch.log(e[T])
        gprev = (sv[T - 1] - tb * torch.log(e[T - 1])) if T > 1 else torch.zeros_like(gam)
        row_lse = (torch.log(d_extra) + (sv[T] - delta)) if extra else phi.new_empty(0)
        ctx.cfg = cfg
        ctx.records = (d, u, e, v, d_extra)
        ctx.save_for_backward(L, R, K)
        return phi, gam, gprev, row_lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, phib, gamb, gpb, rlb):
        with _blas_context(ctx.saved_tensors[2]):
            return _FusedSinkhorn._backward(ctx, phib, gamb, gpb, rlb)

    @staticmethod
    def _backward(ctx, phib, gamb, gpb, rlb):
        symmetric, s, delta, T, ta, tb, a, b, extra = ctx.cfg
        L, R, K = ctx.saved_tensors
        d, u, e, v, d_extra = ctx.records
        mv, rmv = _matvecs(K, symmetric)
        # derivative factors of all half-steps at once (few launches): ∂û^t/∂d^t = −τ_a û^t/d^t,
        # ∂v̂^t/∂e^t = −τ_b v̂^t/e^t (rows t − 1 of the stacks)
        Wu = torch.div(torch.stack(u[1:]), torch.stack(d[1:])).mul_(-ta)
        Wv = torch.div(torch.stack(v[1:]), torch.stack(e[1:])).mul_(-tb)
        X, Y = [], []  # K̄' = Σ x yᵀ
        vbar = None  # adjoint of v̂^t
        if extra and rlb is not None:
            db = rlb / d_extra  # row_lse = log(K'v̂^T) + const
            X.append(db)
            Y.append(v[T])
            vbar = rmv(db)
        for t in range(T, 0, -1):
            eb = None if vbar is None else vbar * Wv[t - 1]  # v̂^t = B (e^t)^(−τ_b)
            if t == T and gamb is not None:  # g/ε = const − τ_b log e^T
                term = gamb / e[T] * (-tb)
                eb = term if eb is None else eb.add_(term)
            if t == T - 1 and gpb is not None:  # g_prev/ε = const − τ_b log e^{T−1}
                term = gpb / e[T - 1] * (-tb)
                eb = term if eb is None else eb.add_(term)
            db = None
            if eb is not None:  # e^t = K'ᵀ û^t, û^t = A (d^t)^(−τ_a)
                X.append(u[t])
                Y.append(eb)
                db = mv(eb).mul_(Wu[t - 1])
            if t == T and phib is not None:  # f/ε = const − τ_a log d^T
                term = phib / d[T] * (-ta)
                db = term if db is None else db.add_(term)
            vbar = None
            if db is not None:  # d^t = K' v̂^{t−1}
                X.append(db)
                Y.append(v[t - 1])
                if t > 1:
                    vbar = rmv(db)
        if not X:
            return None, None, None
        Xm = torch.stack(X, 1).mul_(s)  # S̄ = s K' ⊙ (X Yᵀ)
        Ym = torch.stack(Y, 1)
        if symmetric:
            # H̄ = (S̄ + S̄ᵀ) H with S̄ + S̄ᵀ = s K' ⊙ ([X, Y][Y, X]ᵀ): one N×N×d product
            G = torch.mm(torch.cat([Xm, Ym], 1), torch.cat([Ym, Xm], 1).T).mul_(K)
            return torch.mm(G, L), None, None
        G = torch.mm(Xm, Ym.T).mul_(K)
        Lb = torch.mm(G, R) if ctx.needs_input_grad[0] else None
        Rb = torch.mm(G.T, L) if ctx.needs_input_grad[1] else None
        return Lb, Rb, None


def _sinkhorn_potentials(h1: Tensor, h2: Tensor, *, layout: str, cost: str, epsilon: float, n_iter: int,
                        tau: tuple = (1.0, 1.0), mass: float = 1.0, row_lse: bool = False, grad: str = "unrolled"):
    r"""Dimensionless potentials ``(f/ε, g/ε, g_prev/ε, row_lse or None)`` of ``n_iter`` Sinkhorn
    iterations on the cost ``C/ε`` of the layout, from normalised embeddings ``h1, h2`` ``(B, d)``
    (unit rows: the static kernel range of :func:`max_range` rests on ``|S_ij| ≤ 1``). Internal:
    called by :func:`gca.losses.alignment` after its validation, where :func:`fast_path_supported`.

    ``C = −S`` (``"neg_cosine"``) or ``1 − S`` (``"cosine_distance"``); marginals ``a = b = mass·1``;
    ``tau = (ρ₁/(ρ₁+ε), ρ₂/(ρ₂+ε))`` (``(1, 1)`` balanced). Same iterates as
    ``gca.ot.sinkhorn[_unbalanced](C/ε, a, b, epsilon=1, max_iter=n_iter, tol=0)``.
    """
    s = 1.0 / epsilon
    offset = s if cost == "cosine_distance" else 0.0  # C/ε = offset − S/ε
    delta = offset - s  # K' = e^δ · exp(−C/ε)
    symmetric = layout == "joint"
    if symmetric:
        L = R = torch.cat([h1, h2])
    else:
        L, R = h1, h2
    cfg = (symmetric, s, delta, int(n_iter), float(tau[0]), float(tau[1]), float(mass), float(mass), bool(row_lse))
    if grad == "detach" or not (torch.is_grad_enabled() and (L.requires_grad or R.requires_grad)):
        with torch.no_grad():
            out = _FusedSinkhorn.forward(_NoCtx(), L.detach(), R.detach(), cfg)
    else:
        out = _FusedSinkhorn.apply(L, R, cfg)
    phi, gam, gprev, rl = out
    return phi, gam, gprev, (rl if row_lse else None)


class _NoCtx:
    """Stand-in autograd context for the no-gradient call of the forward."""

    def save_for_backward(self, *args):
        pass


class _LazyScaledCost:
    """``C/ε`` and ``log K`` of the call, built (one matmul, differentiable) only when a dense view of
    the :class:`gca.losses.Alignment` is asked for; the fast path itself never forms them."""

    def __init__(self, z1, z2, layout, cost, epsilon):
        self._args = (z1, z2, layout, cost, epsilon)
        self._value = None

    def scaled_cost(self):
        """The :class:`gca.losses.cost.ScaledCost` of the call (built on first use)."""
        if self._value is None:
            z1, z2, layout, cost, epsilon = self._args
            self._value = scaled_similarity(z1, z2, layout, cost, epsilon, as_log_kernel=False)[0]
        return self._value

    @property
    def c(self) -> Tensor:
        return self.scaled_cost().c

    @property
    def log_kernel(self) -> Tensor:
        return self.scaled_cost().log_kernel


class _LazySolverResult:
    """The reference solver's :class:`gca.ot.SinkhornResult` of the same problem, solved (without
    gradient) on first attribute access: diagnostics of a fast-path call cost nothing unless read."""

    def __init__(self, cost: _LazyScaledCost, kwargs: dict):
        self._cost, self._kwargs, self._res = cost, kwargs, None

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._res is None:
            with torch.no_grad():
                self._res = constraint_potentials(self._cost.scaled_cost(), None, None, grad="detach",
                                                  **self._kwargs)[4]
        return getattr(self._res, name)

    def __repr__(self):
        return f"_LazySolverResult({self._kwargs})"


def potentials_for_alignment(z1: Tensor, z2: Tensor, *, epsilon: float, layout: str, cost: str, constraint: str,
                             n_iter: int, rho, mass: str, grad: str, target, uniformity_weight: float,
                             want_row_lse: bool) -> Optional[tuple]:
    """The hook of :func:`gca.losses.alignment`: ``None`` where the fast path does not apply, else
    ``(scaled_cost, pos_hat, positives, f/ε, g/ε, g_prev/ε, row_lse, solver)`` exactly as the
    reference path's :func:`~gca.losses.cost.scaled_similarity` +
    :func:`~gca.losses.constraints.constraint_potentials` produce them (``scaled_cost`` and
    ``solver`` lazy)."""
    n = z1.shape[0] * (2 if layout == "joint" else 1)
    if not fast_path_supported(layout=layout, cost=cost, constraint=constraint, target=target, grad=grad,
                               uniformity_weight=uniformity_weight, epsilon=epsilon, dtype=z1.dtype, n=n):
        return None
    # no validation read here: a NaN/inf or zero row gives a non-finite loss, which the caller's one
    # folded check sends to the checked path (which names the cause)
    h1 = unit_rows(z1, z1.detach().abs().amax(dim=1))
    h2 = unit_rows(z2, z2.detach().abs().amax(dim=1))
    s = 1.0 / epsilon
    offset = s if cost == "cosine_distance" else 0.0
    pos_hat = offset - (h1 * h2).sum(dim=1) * s  # Ĉ_iπ(i), O(Bd)
    if layout == "joint":
        pos_hat = torch.cat([pos_hat, pos_hat])
    pi = positive_index(z1.shape[0], layout, device=z1.device)
    mass_value = 1.0 / n if mass == "probability" else 1.0
    tau = (1.0, 1.0) if constraint == "balanced" else tuple(
        1.0 if math.isinf(r) else r / (r + epsilon) for r in rho)
    phi, gam, gprev, rl = _sinkhorn_potentials(h1, h2, layout=layout, cost=cost, epsilon=epsilon, n_iter=n_iter,
                                              tau=tau, mass=mass_value, row_lse=want_row_lse, grad=grad)
    lazy = _LazyScaledCost(z1, z2, layout, cost, epsilon)
    solver = _LazySolverResult(lazy, dict(epsilon=epsilon, constraint=constraint, n_iter=n_iter, rho=rho,
                                          mass=mass, want_row_lse=want_row_lse))
    return lazy, pos_hat, pi, phi, gam, gprev, rl, solver
