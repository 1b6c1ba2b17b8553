r"""Back ends of the Sinkhorn iterations: the geometry (log domain or kernel domain) and its fast paths.

One half-step needs ``LSE_j(γ_j − C_ij/ε)`` (or its column analogue) and, for the unrolled
backward, its vector–Jacobian product. Two implementations of that operation:

- :class:`LogOps` — log domain: a streamed ``logsumexp`` over one reused ``n × m`` buffer; always
  valid. Iterated by :func:`iterate_log`.
- :class:`KernelOps` — kernel domain: ``K = exp(−(C − c)/ε)`` formed once, then matrix–vector
  products in scaling form, each scaling renormalised to maximum 1 (:func:`iterate_kernel`), its
  log-scales resolved by a chunked linear recurrence (:class:`Sigmas`). Used where the rule of
  :func:`~gca.ot.kernel_range_limit` makes it safe (see :func:`gca.ot.sinkhorn`, Notes).

On the CPU the kernel products go through NumPy's OpenBLAS pinned to one thread
(:class:`OpenBLAS`, :func:`matvecs`) for kernels of at most :data:`NUMPY_MATVEC_MAX` entries.
Potentials are carried dimensionless inside the iterations: ``φ = f/ε``, ``γ = g/ε``.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "NUMPY_MATVEC_MAX",
    "kernel_range_limit",
    "LogOps",
    "KernelOps",
    "OpenBLAS",
    "matvecs",
    "Trace",
    "iterate_log",
    "iterate_kernel",
    "Sigmas",
    "final_row_lse",
]

#: CPU kernel path: NumPy/OpenBLAS matrix–vector products up to this many kernel entries ``n·m``,
#: ``torch.matmul`` above (:func:`matvecs`).
NUMPY_MATVEC_MAX = 2**21


def kernel_range_limit(dtype: torch.dtype, size: int) -> float:
    """Largest ``(max_finite C − min C)/ε`` for which the kernel-domain path is attempted.

    ``log(eps / (size · tiny)) − 1`` for the compute ``dtype`` (see :func:`gca.ot.sinkhorn`, Notes).
    """
    fi = torch.finfo(dtype)
    return math.log(fi.eps / (max(int(size), 1) * fi.tiny)) - 1.0


class LogOps:
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
        lse = logsumexp_(torch.sub(gam[:, None, :], self.Ce, out=self.buf), -1)
        if self.record:
            self.rows.append((gam, lse))
        return self.la - lse

    def col(self, phi):
        lse = logsumexp_(torch.sub(phi[:, :, None], self.Ce, out=self.buf), -2)
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


def logsumexp_(x: Tensor, dim: int) -> Tensor:
    """``logsumexp`` along ``dim`` that overwrites ``x`` (no temporaries); all ``-inf`` gives ``-inf``."""
    m = x.amax(dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return x.sub_(m).exp_().sum(dim).log_().add_(m.squeeze(dim))


class KernelOps:
    """Kernel domain: ``K = exp(−(C − c)/ε)`` once; the iteration is :func:`iterate_kernel`.

    Holds the kernel, the per-step records the unrolled backward needs — rows ``(v̂_{t−1}, d_t)``,
    columns ``(û_t, e_t)`` — and the denominators for the a-posteriori check (sinkhorn Notes).
    """

    name = "kernel"

    def __init__(self, C: Tensor, eps: float, record: bool, c: Tensor, check: bool):
        self.K = torch.add(c[:, :, None] / eps, C, alpha=-1.0 / eps).exp_()  # 2 passes
        self.check = check  # a-posteriori denominator check (only needed with +inf costs; Notes)
        self.mv, self.rmv = matvecs(self.K)
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


class OpenBLAS:
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
                from threadpoolctl import ThreadpoolController  # optional dependency: imported on first use
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


def matvecs(K: Tensor):
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
            and OpenBLAS.available()):
        Kn = K.detach().numpy()

        def mv(v):
            return torch.from_numpy(OpenBLAS.matmul(Kn, v.numpy()[:, :, None])[:, :, 0])

        def rmv(u):
            return torch.from_numpy(OpenBLAS.matmul(u.numpy()[:, None, :], Kn)[:, 0, :])
    else:
        def mv(v):
            return torch.matmul(K, v[:, :, None]).squeeze_(-1)

        def rmv(u):
            return torch.matmul(u[:, None, :], K).squeeze_(-2)
    return mv, rmv


@dataclass
class Trace:
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


def iterate_log(ops, la, lb, g0, eps, tau_a, tau_b, max_iter, tol, check_every) -> Trace:
    """Run the Sinkhorn iterations of :mod:`gca.ot` (its docstring) with back end ``ops``.

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
            err = rel_l1(a * torch.exp(phi - h), a)
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
        err = rel_l1(a * torch.exp(phi - h), a)
        converged = err <= tol
    return Trace(f=phi * eps, g=gam * eps, g_prev=gam_prev * eps, ops=ops, n_iter=n_iter,
                  converged=converged, error=err, a=a, b=lb.exp(), eps=eps, tau_a=tau_a, tau_b=tau_b,
                  domain=ops.name)


def iterate_kernel(ops: KernelOps, la, lb, c_eps, g0, eps, tau_a, tau_b, max_iter, tol, check_every) -> Trace:
    """The iterations of :func:`iterate_log` in scaling form (no exp/log inside the loop).

    State: ``v̂ = exp(γ − σ_v)`` with ``max v̂ = 1`` and the scalar ``σ_v = max γ`` per problem.
    Row step: ``d = K v̂``, ``r = (a/d)^{τ_a}``, ``M_u = max r``, ``û = r / M_u``,
    ``σ_u = log M_u + τ_a (c/ε − σ_v)`` — i.e. ``φ = τ_a (log a + c/ε − σ_v − log d)`` exactly;
    column step symmetric with ``e = Kᵀ û``. The logs of the maxima are taken in chunks
    (:class:`Sigmas`), and the potentials are formed from ``d``, ``e`` at the end. Memory is
    ``O(n + m)`` per problem unless the unrolled backward records the steps.
    """
    K_v, Kt_u, check = ops.mv, ops.rmv, ops.check  # v ↦ K v, u ↦ Kᵀ u
    a, b = la.exp(), lb.exp()
    balanced = tau_a == 1.0 and tau_b == 1.0
    gam0 = g0 / eps
    sig_v0 = gam0.amax(-1, keepdim=True)
    vhat = torch.exp(gam0 - sig_v0)
    sig = Sigmas(sig_v0, c_eps, tau_a, tau_b)
    last = []  # (d, e) of the last two iterations
    n_iter, converged, err = 0, False, None
    uhat = max_v_prev = None
    for t in range(1, max_iter + 1):
        d = K_v(vhat)
        if check:
            ops.track(d, None)
        if tol > 0 and balanced and t > 1 and (t - 1) % check_every == 0:
            # row marginal of P^(2(t-1)) = û ⊙ d ⊙ exp(σ_u + σ_v − c/ε) = û ⊙ d ⊙ M_v (balanced)
            err = rel_l1(uhat * d * max_v_prev, a)
            if err <= tol:
                converged = True
                break
        r = a / d if tau_a == 1.0 else (a / d).pow_(tau_a)
        max_u = r.amax(-1, keepdim=True)
        uhat_new = r.div_(max_u)
        e = Kt_u(uhat_new)
        if check:
            ops.track(None, e)
        s_ = b / e if tau_b == 1.0 else (b / e).pow_(tau_b)
        max_v = s_.amax(-1, keepdim=True)
        vhat_new = s_.div_(max_v)
        sig.push(max_u, max_v)
        if ops.record:
            ops.rows.append((vhat, d))
            ops.cols.append((uhat_new, e))
        last = [*last[-1:], (d, e)]
        if tol > 0 and not balanced and t > 1 and (t % check_every == 0 or t == max_iter):
            phi_old, gam_old = kernel_potentials(la, lb, c_eps, tau_a, tau_b, sig.sv(t - 2), last[0][0],
                                                  sig.su(t - 1), last[0][1])
            phi_new, gam_new = kernel_potentials(la, lb, c_eps, tau_a, tau_b, sig.sv(t - 1), d, sig.su(t), e)
            err = max(float((phi_new - phi_old).abs().amax()), float((gam_new - gam_old).abs().amax()))
            converged = err <= tol
        uhat, vhat, max_v_prev, n_iter = uhat_new, vhat_new, max_v, t
        if converged:
            break
    if tol > 0 and not converged and balanced:
        d = K_v(vhat)
        err = rel_l1(uhat * d * max_v_prev, a)
        converged = err <= tol
    T = n_iter
    phi, gam = kernel_potentials(la, lb, c_eps, tau_a, tau_b, sig.sv(T - 1), last[-1][0], sig.su(T), last[-1][1])
    if T > 1:
        gam_prev = kernel_potentials(la, lb, c_eps, tau_a, tau_b, sig.sv(T - 2), last[0][0], sig.su(T - 1),
                                      last[0][1])[1]
    else:
        gam_prev = gam0
    return Trace(f=phi * eps, g=gam * eps, g_prev=gam_prev * eps, ops=ops, n_iter=n_iter,
                  converged=converged, error=err, a=a, b=b, eps=eps, tau_a=tau_a, tau_b=tau_b,
                  domain=ops.name, vhat_last=vhat, sig_v_last=sig.sv(T), c_eps=c_eps)


class Sigmas:
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

    def push(self, max_u, max_v):
        self.pending += (max_u, max_v)
        if len(self.pending) >= 2 * self.CHUNK:
            self._resolve()

    def _weights(self, L):
        W, powers = recurrence_weights(self.ta * self.tb, self.CHUNK, self.c_eps.dtype, self.c_eps.device)
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
def recurrence_weights(kappa: float, size: int, dtype: torch.dtype, device: torch.device):
    """``W_tk = κ^{t−k}`` (``k ≤ t``, else 0) and ``κ^{1..size}`` for :class:`Sigmas` (cached)."""
    idx = torch.arange(size, dtype=torch.float64)
    expo = idx[:, None] - idx[None, :]
    k = torch.tensor(kappa, dtype=torch.float64)
    W = torch.where(expo >= 0, k ** expo.clamp(min=0), 0.0)
    return W.to(dtype=dtype, device=device), (k ** (idx + 1)).to(dtype=dtype, device=device)


def kernel_potentials(la, lb, c_eps, tau_a, tau_b, sig_v, d, sig_u, e):
    """Dimensionless ``(φ, γ)`` of one iteration from its denominators (no underflow of û, v̂).

    ``sig_v`` is ``σ_v`` before the row step, ``sig_u`` the ``σ_u`` produced by it.
    """
    phi = tau_a * (la + c_eps - sig_v - d.log())
    gam = tau_b * (lb + c_eps - sig_u - e.log())
    return phi, gam


def final_row_lse(tr: Trace, record: bool) -> Tensor:
    """``LSE_j(γ_j − C_ij/ε)`` at the final ``g`` (one matvec in the kernel path)."""
    ops = tr.ops
    if isinstance(ops, KernelOps):
        d = ops.mv(tr.vhat_last)
        rec = (tr.vhat_last, d)
        lse = d.log() + tr.sig_v_last - tr.c_eps
    else:
        gam = tr.g / tr.eps
        lse = logsumexp_(torch.sub(gam[:, None, :], ops.Ce, out=ops.buf), -1)
        rec = (gam, lse)
    if record:
        tr.extra = rec
    return lse


def rel_l1(x, ref) -> float:
    return float(((x - ref).abs().sum(-1) / ref.sum(-1)).amax())

