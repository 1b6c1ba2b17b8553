r"""The contrastive loss family as configurations of one alignment core (paper §2–§4).

Every loss here is the same pipeline, only configured differently:

.. math::

    z_1, z_2 \;\to\; S \text{ (cosine similarities, layout)} \;\to\; C \text{ (cost)},\;
    K = e^{-C/\varepsilon} \;\to\; P_\theta = \operatorname{proj}_{\mathcal B}^{(n\_iter)}(K)
    \;\to\; d_M(P_{\mathrm{tgt}} \,\|\, P_\theta) \text{ (mean over anchors)}.

The plan is never formed densely unless asked for: it is represented by the cost ``C`` and the
log-domain potentials of :mod:`gca.ot`, :math:`P = \exp((f \oplus g - C)/\varepsilon)`, and the
losses read the entries they need (:math:`\log P_{i\pi(i)}`, row normalisers) from ``f, g``.

Configurations of :func:`alignment` (paper §3 table, §4 formulas)::

    method     cost C   constraint set (alignment kwargs)            d_M (outer divergence)      d_Γ
    ---------  -------  -------------------------------------------  --------------------------  ----
    SimCLR     -S       rows, one half-step; joint layout            KL  (= NT-Xent)              KL
    INCE       -S       rows, one half-step   constraint="rows"      KL: mean -log P1[i,π(i)]     KL
    RINCE      -S       rows, one half-step                          RINCE (W1-type), h = 0       KL
    GCA-INCE   -S       rows ∩ cols, T iter.  constraint="balanced"  KL: mean -log P2T[i,π(i)]    KL
    GCA-RINCE  -S       rows ∩ cols, T iter.                         RINCE on P(2T-1)/u, h=g_prev KL
    GCA-UOT    1 - S    unbalanced (ρ1, ρ2), T iter., μ = ν = 1/N    r1·KL(row-renormalised P)    KL
                        constraint="unbalanced", mass="probability"  + r2·RINCE on P/u, h = g
    IOT        -S       rows ∩ cols, T iter.; joint layout           KL: mean -log P[i,π(i)]      KL
    IOT-uni    -S       rows ∩ cols, T iter.; joint layout           KL + λ_p·KL(P‖Q)/N           KL
    BYOL       —        R^{B×B}: no constraint, no negatives         KL                           L2
                        (its loss, a normalised MSE, lives in gca.train)

Conventions (paper §2): ``ẑ = z/‖z‖``; layout ``"joint"`` (default, ``N = 2B``,
``Z = [ẑ₁; ẑ₂]``, block order, self-pairs excluded with ``C_ii = +inf``, positive ``π(i) = i ± B``)
or ``"cross"`` (``N = B``, rows view 1, columns view 2, ``π(i) = i``); marginals ``μ = ν = 1_N``
(probability marginals ``1_N/N`` for GCA-UOT, as the authors do); one iteration = one row step then
one column step from ``v⁽⁰⁾ = 1``; every loss is a mean over the ``N`` anchors (rows).

**BYOL** sits in the table with ``d_Γ = L2``, no constraint (``𝓑 = R^{B×B}``), no negatives and
no iteration: its "plan" is the predictor's output itself, matched to the EMA target network's
projection by a normalised MSE. That loss needs the online/target networks, so it lives with the
training code (:mod:`gca.train`); ``make_loss("byol")`` explains this instead of guessing.

Numerics: the OT part always runs in float32 or float64 (half-precision inputs are upcast and
autocast is disabled inside) with :mod:`gca.ot`'s fixed-iteration path (``max_iter=T, tol=0``):
log domain, or its kernel-domain fast path where that is provably safe. RINCE-type terms grow like
``e^{q/ε}``; they are evaluated in factored form ``e^{M}·(…)`` so the value is finite whenever it
fits the dtype, and an :class:`AlignmentOverflowError` naming ``epsilon``, ``q`` and the dtype is
raised when it does not (never a silent inf/NaN).

Global batch: ``gather=True`` all-gathers both views across processes with gradients
(:func:`gca.distributed.gather_with_grad`) before building the plan.

Cost: the iterated losses run on a fast path by default (:data:`FAST_PATH`): the fused solver of
:mod:`gca.fused` where it applies (no host synchronisation, an exact hand-written backward), else the
general solver without its checks, every check folded into one read with the loss (the checked
path is redone if it fails). ``benchmarks/results/losses.md`` measures both paths against INCE
written with ``F.cross_entropy``; losses gather ``log P_iπ(i)`` from the potentials instead of
forming plans, and row normalisers come from fused kernels or the solver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fused as _fused
from . import plans as _plans
from .distributed import gather_with_grad

__all__ = [
    "LOSS_NAMES",
    "GRAD_MODES",
    "AlignmentOverflowError",
    "Alignment",
    "alignment",
    "FAST_PATH",
    "fast_path_enabled",
    "simclr_loss",
    "ince_loss",
    "rince_loss",
    "gca_ince_loss",
    "gca_rince_loss",
    "gca_uot_loss",
    "iot_loss",
    "iot_uni_loss",
    "AlignmentLoss",
    "SimCLRLoss",
    "INCELoss",
    "RINCELoss",
    "GCAINCELoss",
    "GCARINCELoss",
    "GCAUOTLoss",
    "IOTLoss",
    "IOTUniLoss",
    "make_loss",
]

LOSS_NAMES = ("simclr", "ince", "rince", "gca-ince", "gca-rince", "gca-uot", "iot", "iot-uni")
GRAD_MODES = ("unrolled", "implicit", "detach")
COSTS = ("neg_cosine", "cosine_distance")
CONSTRAINTS = ("rows", "balanced", "unbalanced")
MARGINALS = ("ones", "probability")

# The authors' CIFAR-10 values (paper.md §4: ε = 0.5, T = 10, ρ₁ = ρ₂ = 0.2, λ = 0.01, q = 0.6,
# r₁ = 1, r₂ = 0.2; IOT-uni λ_p = 0.2).
DEFAULT_EPSILON = 0.5
DEFAULT_N_ITER = 10
DEFAULT_RHO = 0.2
DEFAULT_LAM = 0.01
DEFAULT_Q = 0.6
DEFAULT_R1 = 1.0
DEFAULT_R2 = 0.2
DEFAULT_LAMBDA_P = 0.2

TargetLike = Union[None, Tensor, Callable[[int, str], Tensor]]


_IMPLICIT_RINCE = (
    "grad='implicit' cannot differentiate the RINCE-type term on a balanced plan: the term reads "
    "the potentials f, g_prev themselves, and the balanced fixed point only fixes them up to the "
    "shift (f + c, g − c), whose gradient component the implicit mode drops; use grad='unrolled' "
    "(exact) or 'detach'")


#: Whether :func:`alignment` runs its iterated constraints on the synchronisation-free fast path:
#: ``"on"`` (default; every device — it saves the host round trips on CUDA and the range passes
#: on the CPU, with the same iterations), ``"off"`` (the checked path only), or ``"cuda"`` (CUDA
#: devices only). The environment variable ``GCA_FAST_PATH`` overrides it.
FAST_PATH = "on"


def fast_path_enabled(device: torch.device) -> bool:
    """Whether :func:`alignment` uses the fast path on ``device`` (see :data:`FAST_PATH`)."""
    import os

    mode = os.environ.get("GCA_FAST_PATH", "").strip().lower() or FAST_PATH
    if mode not in ("on", "off", "cuda"):
        raise ValueError(f"GCA_FAST_PATH / gca.losses.FAST_PATH = {mode!r}: use on, off or cuda")
    return mode == "on" or (mode == "cuda" and device.type == "cuda")


class AlignmentOverflowError(OverflowError, ValueError):
    """A loss value does not fit the floating-point dtype (RINCE-type terms grow like e^(q/ε))."""


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------

def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, Tensor) and value.numel() == 1 and not value.requires_grad:
            value = value.item()
        else:
            raise TypeError(f"{name}={value!r} must be a real number")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name}=nan is not a number; pass a real value")
    return value


def _check_epsilon(epsilon) -> float:
    epsilon = _real("epsilon", epsilon)
    if not (0 < epsilon < math.inf):
        raise ValueError(f"epsilon={epsilon!r} must be finite and > 0 (temperature / entropic "
                         f"regulariser; the paper uses 0.5)")
    return epsilon


def _check_n_iter(n_iter) -> int:
    if isinstance(n_iter, bool) or not isinstance(n_iter, int):
        raise TypeError(f"n_iter={n_iter!r} must be an int >= 1 (number of Sinkhorn iterations)")
    if n_iter < 1:
        raise ValueError(f"n_iter={n_iter} must be >= 1 (one iteration = one row step + one column "
                         f"step; use ince/rince for the single half-step)")
    return n_iter


def _check_q(q) -> float:
    q = _real("q", q)
    if not (0 < q <= 1):
        raise ValueError(f"q={q!r} must lie in (0, 1] (RINCE exponent; q -> 0 recovers the KL/INCE "
                         f"term, q = 1 is the W1-type limit)")
    return q


def _check_nonneg(name: str, value, hint: str = "") -> float:
    value = _real(name, value)
    if not (0 <= value < math.inf):
        raise ValueError(f"{name}={value!r} must be finite and >= 0{hint}")
    return value


def _check_rho(rho) -> tuple[float, float]:
    if isinstance(rho, (tuple, list)):
        if len(rho) != 2:
            raise ValueError(f"rho={rho!r} must be one number or a pair (rho1, rho2)")
        pair = (_real("rho[0]", rho[0]), _real("rho[1]", rho[1]))
    else:
        value = _real("rho", rho)
        pair = (value, value)
    for value in pair:
        if not value > 0:
            raise ValueError(f"rho={rho!r} must be > 0 (marginal KL penalty; inf = hard marginal)")
    return pair


def _check_layout(layout) -> str:
    return _plans.check_layout(layout)


def _check_grad(grad) -> str:
    if grad not in GRAD_MODES:
        raise ValueError(f"grad={grad!r} is not a gradient mode; use one of {GRAD_MODES}")
    return grad


def _check_views(z1, z2) -> None:
    for name, z in (("z1", z1), ("z2", z2)):
        if not isinstance(z, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, d), got {type(z)!r}")
        if not z.is_floating_point():
            raise TypeError(f"{name} must be floating point, got dtype {z.dtype}; cast with .float()")
        if z.dim() != 2:
            raise ValueError(f"{name} must have shape (B, d), got shape {tuple(z.shape)}")
    if z1.shape != z2.shape:
        raise ValueError(f"the two views must have the same shape, got z1 {tuple(z1.shape)} and "
                         f"z2 {tuple(z2.shape)}")
    if z1.dtype != z2.dtype:
        raise TypeError(f"the two views have different dtypes ({z1.dtype}, {z2.dtype}); cast one")
    if z1.device != z2.device:
        raise ValueError(f"the two views are on different devices ({z1.device}, {z2.device})")
    if z1.shape[0] < 2:
        raise ValueError(f"batch size B={z1.shape[0]} is too small: alignment needs at least 2 pairs "
                         f"(with one pair there are no negatives)")
    if z1.shape[1] < 1:
        raise ValueError("embeddings have dimension d=0")


def _check_finite_norms(s1: Tensor, s2: Tensor) -> None:
    """``s1``, ``s2``: each row's largest absolute entry (its scale, see :func:`_unit_rows`)."""
    # one host sync for both checks; details only on failure
    ok = torch.isfinite(s1).all() & torch.isfinite(s2).all() & (s1 > 0).all() & (s2 > 0).all()
    if not bool(ok):
        for name, s in (("z1", s1), ("z2", s2)):
            if not bool(torch.isfinite(s).all()):
                bad = int(torch.nonzero(~torch.isfinite(s))[0])
                raise ValueError(f"{name} contains NaN or inf (row {bad}); check the encoder's output "
                                 "(a diverging training run: lower the learning rate)")
            if not bool((s > 0).all()):
                bad = int(torch.nonzero(s <= 0)[0])
                raise ValueError(f"{name} row {bad} is exactly the zero vector; cosine similarity is "
                                 "undefined (check the encoder's output)")


def _unit_rows(z: Tensor, scale: Tensor) -> Tensor:
    """``z_i / ‖z_i‖`` computed as ``(z_i/s_i) / ‖z_i/s_i‖`` with ``s_i = max_k |z_ik|`` (detached).

    The result is scale-invariant, so dividing by the constant ``s_i`` first changes neither the
    value nor the gradient, while ``‖z_i‖`` itself would overflow (entries ~1e19 in float32) or
    underflow to 0 (entries ~1e-30): any finite, non-zero row is normalised in its own dtype.
    """
    zs = z / scale[:, None]
    return zs / zs.norm(dim=1, keepdim=True)


def _check_epsilon_for_dtype(epsilon: float, dtype: torch.dtype) -> None:
    """The scaled cost ``C/ε`` spans ``[−1/ε, 2/ε]``; refuse ε whose ``1/ε`` does not fit ``dtype``."""
    limit = torch.finfo(dtype).max / 8
    if 1.0 / epsilon > limit:
        raise ValueError(f"epsilon={epsilon!r} is too small for {dtype}: the scaled similarities "
                         f"S/epsilon overflow (1/epsilon > {limit:.3g}); use epsilon >= "
                         f"{1.0 / limit:.3g} or compute the loss in float64")


# ----------------------------------------------------------------------------------------------
# the alignment core
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Alignment:
    r"""Result of :func:`alignment`: the loss and everything needed to inspect the plan.

    The plan is stored as potentials: :math:`P = \exp((f \oplus g - C)/\varepsilon)`, and the plan
    before the last column step :math:`P^{(2T-1)} = \exp((f \oplus g_{prev} - C)/\varepsilon)`.
    Dense matrices (``cost``, ``kernel``, ``plan``, ``target_plan``) are built on access.

    Attributes
    ----------
    loss : Tensor, scalar
        The loss (mean over anchors).
    per_anchor : Tensor, shape ``(N,)``
        Each anchor's contribution; ``loss = per_anchor.mean()``.
    terms : dict[str, Tensor]
        Unweighted scalar components (``"kl"``, ``"rince"``, ``"uniformity"`` where present).
    f, g, g_prev : Tensor, shapes ``(N,)``
        Potentials (``ε log u``, ``ε log v``, and ``ε log v`` before the last row step; ``g = g_prev
        = 0`` for the single row projection).
    epsilon : float
    layout : str
    positives : Tensor, shape ``(N,)``, int64 — :math:`\pi(i)`.
    target : Tensor or None, shape ``(N, N)`` — the custom target (rows sum to 1), None for Π.
    constraint : str — ``"rows"``, ``"balanced"`` or ``"unbalanced"``.
    n_iter : int — iterations run (0 for the single row projection).
    solver : :class:`gca.ot.SinkhornResult` or None
        Diagnostics of the solve. The solver is run on the equivalent dimensionless problem
        (cost ``C/ε``, regulariser 1, ``ρ/ε``), so its potentials are ``f/ε, g/ε``.

    ``scaled_cost`` is internal (``C/ε`` or ``log K``, whichever was built).
    Dense views (formed on access): ``log_kernel`` (``−C/ε``, ``-inf`` on excluded self-pairs),
    ``cost``, ``kernel``, ``plan``, ``plan_before_column_step``, ``target_plan``.
    """

    loss: Tensor
    per_anchor: Tensor
    terms: dict
    scaled_cost: "_ScaledCost"
    f: Tensor
    g: Tensor
    g_prev: Tensor
    epsilon: float
    layout: str
    positives: Tensor
    target: Optional[Tensor]
    constraint: str
    n_iter: int
    solver: object = field(default=None, repr=False)

    @property
    def log_kernel(self) -> Tensor:
        """``log K = −C/ε``, shape ``(N, N)`` (``-inf`` on excluded self-pairs)."""
        return self.scaled_cost.log_kernel

    @property
    def cost(self) -> Tensor:
        """``C``, shape ``(N, N)``, ``+inf`` on excluded self-pairs."""
        return -self.epsilon * self.log_kernel

    @property
    def kernel(self) -> Tensor:
        """``K = exp(-C/ε)``, shape ``(N, N)`` (zero on excluded self-pairs)."""
        return torch.exp(self.log_kernel)

    @property
    def plan(self) -> Tensor:
        """The final plan ``exp((f ⊕ g − C)/ε)``, shape ``(N, N)`` (``P⁽¹⁾`` for row-only losses)."""
        e = self.epsilon
        return torch.exp(self.f[:, None] / e + self.g[None, :] / e + self.log_kernel)

    @property
    def plan_before_column_step(self) -> Tensor:
        """``P⁽²ᵀ⁻¹⁾ = exp((f ⊕ g_prev − C)/ε)``, the plan after the last row step."""
        e = self.epsilon
        return torch.exp(self.f[:, None] / e + self.g_prev[None, :] / e + self.log_kernel)

    @property
    def target_plan(self) -> Tensor:
        """Dense target, shape ``(N, N)``: the custom target or the permutation ``Π``."""
        if self.target is not None:
            return self.target
        n = self.positives.numel()
        out = torch.zeros(n, n, dtype=self.log_kernel.dtype, device=self.log_kernel.device)
        out[torch.arange(n, device=out.device), self.positives] = 1.0
        return out

    def marginals(self) -> tuple[Tensor, Tensor]:
        """Row and column sums of the final plan, shapes ``(N,)`` (no gradient)."""
        with torch.no_grad():
            p = self.plan
            return p.sum(1), p.sum(0)


class _ScaledCost:
    """The dimensionless cost ``Ĉ = C/ε`` or its negation ``−Ĉ = log K``, whichever was built
    (one matmul, the scaling folded into the small factor); the other is formed on demand."""

    __slots__ = ("_c", "_lk")

    def __init__(self, value: Tensor, is_log_kernel: bool):
        self._c = None if is_log_kernel else value
        self._lk = value if is_log_kernel else None

    @property
    def c(self) -> Tensor:
        if self._c is None:
            self._c = -self._lk
        return self._c

    @property
    def log_kernel(self) -> Tensor:
        if self._lk is None:
            self._lk = -self._c
        return self._lk


def _scaled_similarity(z1: Tensor, z2: Tensor, layout: str, cost: str, epsilon: float,
                       as_log_kernel: bool, defer_checks: bool = False):
    r"""Normalised embeddings → (``Ĉ = C/ε`` or ``log K = −Ĉ`` with excluded self-pairs,
    ``Ĉ_iπ(i)`` of shape ``(N,)``, ``π``).

    ``C = −S`` (``"neg_cosine"``) or ``1 − S`` (``"cosine_distance"``), ``S`` the cosine
    similarities of the layout (paper §2)."""
    _check_epsilon_for_dtype(epsilon, z1.dtype)
    s1, s2 = z1.detach().abs().amax(dim=1), z2.detach().abs().amax(dim=1)
    if defer_checks:  # read by the caller once, with its other checks
        ok = torch.isfinite(s1).all() & torch.isfinite(s2).all() & (s1 > 0).all() & (s2 > 0).all()
    else:
        _check_finite_norms(s1, s2)
        ok = None
    h1, h2 = _unit_rows(z1, s1), _unit_rows(z2, s2)
    batch = z1.shape[0]
    offset = 1.0 / epsilon if cost == "cosine_distance" else 0.0  # C/ε = offset − S/ε
    sign = 1.0 if as_log_kernel else -1.0  # log K = S/ε − offset ; Ĉ = offset − S/ε
    pos_sim = (h1 * h2).sum(dim=1)  # <ẑ1_i, ẑ2_i>, O(Bd): no gather from the N × N matrix
    pos_hat = offset - pos_sim / epsilon
    if layout == "cross":
        left, right = h1, h2
    else:
        left = right = torch.cat([h1, h2])
        pos_hat = torch.cat([pos_hat, pos_hat])
    # one matmul, the scaling folded into the (N, d) factor
    if offset:
        mat = torch.addmm(left.new_tensor(-sign * offset), left * (sign / epsilon), right.T)
    else:
        mat = (left * (sign / epsilon)) @ right.T
    if layout == "joint":
        mat = mat.fill_diagonal_(-math.inf if as_log_kernel else math.inf)  # self-pairs: K_ii = 0
    pi = _plans.positive_index(batch, layout, device=z1.device)
    return _ScaledCost(mat, as_log_kernel), pos_hat, pi, ok


def _resolve_target(target: TargetLike, batch: int, layout: str, ref: Tensor) -> Optional[Tensor]:
    if target is None:
        return None
    if callable(target) and not isinstance(target, Tensor):
        target = target(batch, layout)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be None, an (N, N) tensor or a callable (batch_size, layout) "
                        f"-> tensor, got {type(target)!r}")
    target = _plans.custom_plan(target.detach(), layout, batch_size=batch)
    return target.to(device=ref.device, dtype=ref.dtype)


def _solve(cost: _ScaledCost, pos_hat: Tensor, pi: Tensor, *, epsilon: float, constraint: str,
           n_iter: int, rho, mass: str, grad: str, want_row_lse: bool = False, unchecked: bool = False):
    """Dimensionless potentials ``(f/ε, g/ε, g_prev/ε, row_lse, solver result)`` of the constraint
    set; ``row_lse_i = log Σ_j exp(g_j/ε − C_ij/ε)`` (the final plan's row normaliser over ``u``)
    when ``want_row_lse``, else None.

    Entropic OT with ``(C, ε, ρ)`` is the problem ``(C/ε, 1, ρ/ε)`` with potentials divided by
    ``ε`` (same iterates, same plan), so the solver receives ``Ĉ = C/ε`` directly — built by one
    matmul — and never divides an ``N × N`` matrix by ``ε``."""
    ref = cost._lk if cost._lk is not None else cost._c
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
    from . import ot  # lazily: the row-only losses do not need the solver module

    a = torch.full((n,), math.exp(log_mu), dtype=ref.dtype, device=ref.device)
    if unchecked:  # the GPU fast path: Ĉ's finite entries span at most 2/ε (cosines in [−1, 1])
        rho_pair = (math.inf, math.inf) if constraint == "balanced" else (rho[0] / epsilon, rho[1] / epsilon)
        res, solved = ot._solve_unchecked(cost.c, a, a, epsilon=1.0, rho_pair=rho_pair, max_iter=n_iter, grad=grad,
                                          return_row_lse=want_row_lse, range_bound=2.0 * (1 + 1e-3) / epsilon)
        return res.f, res.g, res.g_prev, (res.row_lse if want_row_lse else None), res, solved
    extra = {"return_row_lse": True} if want_row_lse else {}
    if constraint == "balanced":
        res = ot.sinkhorn(cost.c, a, a, epsilon=1.0, max_iter=n_iter, tol=0.0, grad=grad, **extra)
    else:
        res = ot.sinkhorn_unbalanced(cost.c, a, a, epsilon=1.0, rho=(rho[0] / epsilon, rho[1] / epsilon),
                                     max_iter=n_iter, tol=0.0, grad=grad, **extra)
    return res.f, res.g, res.g_prev, (res.row_lse if want_row_lse else None), res, None


def _log_positive_weight(cost: _ScaledCost, pos_hat, h, pi, target):
    r"""``b_i = log Σ_j T_ij K_ij e^{h_j}`` (dimensionless ``h``); for Π: ``h_π(i) − Ĉ_iπ(i)``."""
    if target is None:
        return h[pi] - pos_hat
    return torch.logsumexp(torch.log(target) + h[None, :] + cost.log_kernel, dim=1)


def _target_log_term(cost: _ScaledCost, pos_hat, h, pi, target):
    r"""``Σ_j T_ij (h_j − Ĉ_ij) − Σ_j T_ij log T_ij`` (dimensionless ``h``): the target-dependent
    part of ``−KL(T_i·‖·)``; for Π: ``h_π(i) − Ĉ_iπ(i)``."""
    if target is None:
        return h[pi] - pos_hat
    c = cost.c
    finite_c = torch.where(target > 0, c, torch.zeros_like(c))  # T_ii = 0 meets Ĉ_ii = inf
    ent = torch.special.xlogy(target, target).sum(dim=1)
    return target @ h - (target * finite_c).sum(dim=1) - ent


def _rince_term(a: Tensor, b: Tensor, q: float):
    r"""Per-anchor ``(e^{q a_i} − e^{q b_i})/q`` (a: log of λ/u_i, b: log positive weight), as
    ``(values scaled by e^{-M}, M)`` so that large values stay exact.

    ``e^{q a} − e^{q b} = e^{q m}·w`` with ``m = max(a, b)``, ``d = a − b``,
    ``w = expm1(−q·relu(−d)) − expm1(−q·relu(d)) ∈ (−1, 1)``: no cancellation as ``q → 0``.
    """
    d = a - b
    w = torch.expm1(-q * torch.relu(-d)) - torch.expm1(-q * torch.relu(d))
    m = q * torch.maximum(a, b)
    big = m.detach().max()
    return torch.exp(m - big) * w / q, big


def _finish_rince(scaled: Tensor, big: Tensor, q: float, epsilon: float) -> tuple[Tensor, Tensor]:
    """Undo the scaling of :func:`_rince_term`; raise if the mean does not fit the dtype."""
    mean_scaled = scaled.mean()
    dtype = scaled.dtype
    log_max = math.log(torch.finfo(dtype).max)
    big_v, mean_v = (float(x) for x in torch.stack([big, mean_scaled.detach()]).tolist())
    magnitude = big_v + math.log(max(abs(mean_v), 1e-300))
    if not math.isfinite(big_v) or magnitude > log_max - 1.0:
        raise AlignmentOverflowError(
            f"the RINCE-type term does not fit {dtype}: its value is about e^{magnitude:.0f} > "
            f"e^{log_max:.0f}. It grows like e^(q/epsilon) with q={q:g}, epsilon={epsilon:g}; "
            f"increase epsilon, decrease q, or compute the loss in float64"
        )
    scale = torch.exp(big)
    return mean_scaled * scale, scaled * scale


def alignment(
    z1: Tensor,
    z2: Tensor,
    *,
    epsilon: float = DEFAULT_EPSILON,
    layout: str = "joint",
    cost: str = "neg_cosine",
    constraint: str = "rows",
    n_iter: int = 1,
    rho=math.inf,
    mass: str = "ones",
    kl_weight: float = 1.0,
    kl_on_rows: bool = False,
    rince_weight: float = 0.0,
    rince_potential: str = "g_prev",
    lam: float = DEFAULT_LAM,
    q: float = DEFAULT_Q,
    uniformity_weight: float = 0.0,
    target: TargetLike = None,
    grad: str = "unrolled",
    gather: bool = False,
) -> Alignment:
    r"""The alignment core: similarity → layout → cost → constrained plan → outer divergence.

    .. math::

        L = \frac1N \sum_i \Big[ w_{KL}\,\ell^{KL}_i + w_R\,\ell^{R}_i \Big]
            + w_U \tfrac1N \mathrm{KL}(P \,\|\, Q),

    with :math:`P = \exp((f \oplus g - C)/\varepsilon)` the plan after the constraint's
    projections, :math:`\ell^{KL}_i = \mathrm{KL}(T_{i\cdot} \| P_{i\cdot})` restricted to the target
    (``-log P_iπ(i)`` for Π; the row-renormalised plan if ``kl_on_rows``; the generalised KL's
    mass term ``Σ_j P_ij − 1`` is added for unbalanced plans or probability marginals and omitted
    otherwise, where its mean over the rows is exactly 0),
    :math:`\ell^R_i = [-(\sum_j T_{ij} K_{ij} e^{h_j/\varepsilon})^q + (\lambda/u_i)^q]/q` (the
    RINCE-type term with ``h = g_prev`` or ``g``; for Π the first sum is
    :math:`K_{i\pi(i)} e^{h_{\pi(i)}/\varepsilon}`), and ``Q`` the IOT-uni reference (see
    :func:`iot_uni_loss`). The named losses below are configurations of this function.

    Parameters
    ----------
    z1, z2 : Tensor, shape ``(B, d)``
        Embeddings of the two views (need not be normalised; they are, here).
    epsilon : float > 0
    layout : {"joint", "cross"}
    cost : {"neg_cosine", "cosine_distance"}
        ``C = −S`` (paper §2) or ``C = 1 − S`` (the authors' GCA-UOT).
    constraint : {"rows", "balanced", "unbalanced"}
        One row projection (INCE), ``n_iter`` balanced Sinkhorn iterations, or ``n_iter``
        unbalanced iterations with marginal penalties ``rho``.
    n_iter : int >= 1
    rho : float or (float, float), > 0 (``inf`` = hard marginal); unbalanced only.
    mass : {"ones", "probability"}
        Marginals ``μ = ν = 1_N`` or ``1_N / N``.
    kl_weight, rince_weight, uniformity_weight : float >= 0
        Weights of the three divergence terms (``r1``, ``r2``, ``lambda_p``).
    kl_on_rows : bool
        Compare the target with the row-renormalised plan ``P_ij / Σ_k P_ik`` (GCA-UOT).
    rince_potential : {"g_prev", "g"}
        Column potential in the RINCE-type term: the one before the last row step
        (GCA-RINCE: ``P⁽²ᵀ⁻¹⁾/u⁽ᵀ⁾``) or the final one (GCA-UOT: ``P/u``).
    lam : float >= 0, q : float in (0, 1]
    target : None, Tensor ``(N, N)`` or callable ``(batch_size, layout) -> Tensor``
        Target plan (rows renormalised to 1); None = the positive pairs Π.
    grad : {"unrolled", "implicit", "detach"}
        Gradient mode of :mod:`gca.ot` (iterated constraints only).
    gather : bool
        All-gather both views across processes first (global batch, with gradients).

    Returns
    -------
    Alignment

    Examples
    --------
    >>> z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    >>> res = alignment(z1, z2, epsilon=0.5, constraint="balanced", n_iter=10)
    >>> res.plan.shape, bool(torch.allclose(res.plan.sum(0), torch.ones(8)))
    (torch.Size([8, 8]), True)
    >>> bool(torch.isclose(res.loss, gca_ince_loss(z1, z2, epsilon=0.5, n_iter=10)))
    True
    """
    kwargs = dict(epsilon=epsilon, layout=layout, cost=cost, constraint=constraint, n_iter=n_iter, rho=rho, mass=mass,
                  kl_weight=kl_weight, kl_on_rows=kl_on_rows, rince_weight=rince_weight,
                  rince_potential=rince_potential, lam=lam, q=q, uniformity_weight=uniformity_weight, target=target,
                  grad=grad, gather=gather)
    if not gather and constraint != "rows" and isinstance(z1, Tensor) and fast_path_enabled(z1.device):
        try:
            out = _alignment(z1, z2, fast=True, **kwargs)
        except (ValueError, ArithmeticError):  # e.g. a RINCE term of NaN embeddings: the checked path names it
            out = None
        if out is not None:
            return out
    return _alignment(z1, z2, fast=False, **kwargs)


def _alignment(z1, z2, *, fast: bool, epsilon, layout, cost, constraint, n_iter, rho, mass, kl_weight, kl_on_rows,
               rince_weight, rince_potential, lam, q, uniformity_weight, target, grad, gather) -> Optional[Alignment]:
    """:func:`alignment`'s body. ``fast``: the solver runs without host synchronisation and every
    check is folded into one flag read at the end; ``None`` when it fails (the caller then redoes
    the problem on the checked path, which names the cause or falls back to the log domain)."""
    _check_views(z1, z2)
    epsilon = _check_epsilon(epsilon)
    layout = _check_layout(layout)
    if cost not in COSTS:
        raise ValueError(f"cost={cost!r} must be one of {COSTS}")
    if constraint not in CONSTRAINTS:
        raise ValueError(f"constraint={constraint!r} must be one of {CONSTRAINTS}")
    if mass not in MARGINALS:
        raise ValueError(f"mass={mass!r} must be one of {MARGINALS}")
    if rince_potential not in ("g_prev", "g"):
        raise ValueError(f"rince_potential={rince_potential!r} must be 'g_prev' or 'g'")
    n_iter = _check_n_iter(n_iter)
    if constraint == "rows" and n_iter != 1:
        raise ValueError(f"n_iter={n_iter} with constraint='rows': the row projection is a single "
                         f"half-step; use constraint='balanced' or 'unbalanced' to iterate")
    rho = _check_rho(rho)
    if constraint != "unbalanced" and rho != (math.inf, math.inf):
        raise ValueError(f"rho={rho!r} only applies to constraint='unbalanced' (got {constraint!r})")
    kl_weight = _check_nonneg("r1 (kl_weight)", kl_weight)
    rince_weight = _check_nonneg("r2 (rince_weight)", rince_weight)
    uniformity_weight = _check_nonneg("lambda_p (uniformity_weight)", uniformity_weight)
    if kl_weight == 0 and rince_weight == 0 and uniformity_weight == 0:
        raise ValueError("all loss weights are 0 (r1 = r2 = lambda_p = 0); the loss would be "
                         "identically 0")
    lam = _check_nonneg("lam", lam, " (RINCE density weight)")
    q = _check_q(q)
    grad = _check_grad(grad)
    if grad == "implicit" and rince_weight > 0 and constraint == "balanced":
        raise ValueError(_IMPLICIT_RINCE)
    if uniformity_weight > 0 and target is not None:
        raise ValueError("the IOT-uni uniformity term is defined for the positive-pair target "
                         "only; pass target=None")

    if gather:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    batch = z1.shape[0]

    # the OT part runs in float32/float64 even under mixed precision
    device_type = z1.device.type if z1.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        if z1.dtype in (torch.float16, torch.bfloat16):
            z1, z2 = z1.float(), z2.float()
        rows_only = constraint == "rows"
        # the generalised KL's mass terms Σ_j (P_ij − T_ij) average to 0 over the rows exactly when
        # the plan has total mass N (row-only or balanced projections with μ = ν = 1_N)
        mass_terms = constraint == "unbalanced" or mass == "probability"
        want_row_lse = kl_weight > 0 and (kl_on_rows or mass_terms)
        fused = None
        if fast:  # the fused solver (gca.fused) where it applies, else the unchecked general solver
            fused = _fused._potentials_for_alignment(
                z1, z2, epsilon=epsilon, layout=layout, cost=cost, constraint=constraint, n_iter=n_iter, rho=rho,
                mass=mass, grad=grad, target=target, uniformity_weight=uniformity_weight, want_row_lse=want_row_lse)
        if fused is not None:
            c, pos_hat, pi, fh, gh, gph, row_lse, solver = fused
            tgt = None
            ok = solved = torch.ones((), dtype=torch.bool, device=fh.device)
        else:
            c, pos_hat, pi, ok = _scaled_similarity(z1, z2, layout, cost, epsilon, as_log_kernel=rows_only,
                                                    defer_checks=fast)
            ref = c._lk if rows_only else c._c
            tgt = _resolve_target(target, batch, layout, ref)
            fh, gh, gph, row_lse, solver, solved = _solve(
                c, pos_hat, pi, epsilon=epsilon, constraint=constraint, n_iter=1 if rows_only else n_iter,
                rho=rho, mass=mass, grad=grad, want_row_lse=want_row_lse, unchecked=fast)

        per_anchor = torch.zeros_like(fh)
        terms: dict[str, Tensor] = {}
        loss = fh.new_zeros(())
        if kl_weight > 0:
            # −log P_iπ = −(f_i + g_π − C_iπ)/ε ; on rows: −log(P_iπ / Σ_j P_ij), f cancels
            if kl_on_rows:
                # row_lse_i = log Σ_j K_ij v_j (one matvec in the solver's kernel path)
                kl_i = row_lse - _target_log_term(c, pos_hat, gh, pi, tgt)
            else:
                kl_i = -fh - _target_log_term(c, pos_hat, gh, pi, tgt)
                if mass_terms:
                    kl_i = kl_i + torch.exp(fh + row_lse) - 1.0  # Σ_j P_ij − Σ_j T_ij
            terms["kl"] = kl_i.mean()
            loss = loss + kl_weight * terms["kl"]
            per_anchor = per_anchor + kl_weight * kl_i
        if rince_weight > 0:
            h = gph if rince_potential == "g_prev" else gh
            a = (math.log(lam) if lam > 0 else -math.inf) - fh  # log(λ / u_i)
            b = _log_positive_weight(c, pos_hat, h, pi, tgt)
            scaled, big = _rince_term(a, b, q)
            terms["rince"], rince_i = _finish_rince(scaled, big, q, epsilon)
            loss = loss + rince_weight * terms["rince"]
            per_anchor = per_anchor + rince_weight * rince_i
        if uniformity_weight > 0:
            terms["uniformity"], uni_i = _uniformity(c.c, fh, gh, pi, layout)
            loss = loss + uniformity_weight * terms["uniformity"]
            per_anchor = per_anchor + uniformity_weight * uni_i
        if fast and not bool(ok & solved & torch.isfinite(loss)):  # the one host synchronisation
            return None

    return Alignment(loss=loss, per_anchor=per_anchor, terms=terms, scaled_cost=c,
                     f=fh * epsilon, g=gh * epsilon, g_prev=gph * epsilon, epsilon=epsilon,
                     layout=layout, positives=pi, target=tgt, constraint=constraint,
                     n_iter=0 if rows_only else n_iter, solver=solver)


def _uniformity(c: Tensor, fh: Tensor, gh: Tensor, pi: Tensor, layout: str):
    r"""IOT-uni's ``KL(P‖Q)/N`` (dimensionless potentials, ``c = C/ε``): ``Q = P`` on the
    positives, the mean off-positive entry :math:`\bar p` elsewhere (self-pairs excluded).

    ``KL(P‖Q) = Σ_off [P log(P/p̄) − P + p̄] = Σ_off P log(P/p̄)`` (the mass terms cancel because
    ``p̄`` is the mean of ``P`` over the same entries)."""
    n = c.shape[0]
    excluded = torch.zeros(n, n, dtype=torch.bool, device=c.device)
    excluded[torch.arange(n, device=c.device), pi] = True
    if layout == "joint":
        excluded.fill_diagonal_(True)
    count = n * n - int(pi.numel()) - (n if layout == "joint" else 0)
    # excluded entries get a huge finite negative log: exp() is exactly 0 there and P·log P is a
    # finite 0 with a zero gradient (−inf would give 0·inf = NaN in the backward)
    very_negative = torch.finfo(c.dtype).min / 4
    log_p = (fh[:, None] - c + gh[None, :]).masked_fill(excluded, very_negative)
    p = torch.exp(log_p)
    # log p̄ by logsumexp: p̄ may underflow at small ε while P log(P/p̄) stays finite
    log_p_bar = torch.logsumexp(log_p.flatten(), dim=0) - math.log(count)
    per_row = (p * (log_p - log_p_bar)).sum(dim=1)
    return per_row.mean(), per_row


# ----------------------------------------------------------------------------------------------
# the named losses (functional API)
# ----------------------------------------------------------------------------------------------

def _out(result: Alignment, return_details: bool):
    return result if return_details else result.loss


def _joint_only(name: str, layout) -> None:
    if layout != "joint":
        _check_layout(layout)
        raise ValueError(f"{name} is defined on the joint layout (paper §4); got layout={layout!r}. "
                         f"Use ince/gca-ince for the cross layout")


def simclr_loss(z1, z2, *, epsilon: float = DEFAULT_EPSILON, layout: str = "joint",
                target: TargetLike = None, gather: bool = False, return_details: bool = False):
    r"""SimCLR's NT-Xent: INCE on the joint layout (paper §4).

    .. math:: L = \frac1N \sum_i -\log \frac{e^{s_{i\pi(i)}}}{\sum_{j\ne i} e^{s_{ij}}},
              \quad s = ZZ^\top/\varepsilon,\ Z = [\hat z_1; \hat z_2],\ N = 2B

    Shapes: ``z1, z2``: ``(B, d)``; returns a scalar (or :class:`Alignment`). ``layout`` is
    accepted for uniform configuration code but must be ``"joint"``.
    """
    _joint_only("simclr", layout)
    return _out(alignment(z1, z2, epsilon=epsilon, layout="joint", constraint="rows",
                          target=target, gather=gather), return_details)


def ince_loss(z1, z2, *, epsilon: float = DEFAULT_EPSILON, layout: str = "joint",
              target: TargetLike = None, gather: bool = False, return_details: bool = False):
    r"""INCE: KL between the target and one row projection of the kernel (paper §4).

    .. math:: L = \tfrac1N \mathrm{KL}(\Pi \,\|\, P^{(1)}) = \frac1N\sum_i -\log P^{(1)}_{i\pi(i)},
              \qquad P^{(1)} = \operatorname{diag}(\mu / K1)\,K

    Shapes: ``z1, z2``: ``(B, d)``; ``N = 2B`` (joint) or ``B`` (cross). Returns a scalar.
    With a custom target ``T``: ``(1/N) KL(T ‖ P⁽¹⁾)``.

    Examples
    --------
    >>> z = torch.nn.functional.one_hot(torch.arange(4), 8).float()
    >>> round(float(ince_loss(z, z, epsilon=1.0)), 4)   # log(e + 6) - 1
    1.1654
    """
    return _out(alignment(z1, z2, epsilon=epsilon, layout=layout, constraint="rows",
                          target=target, gather=gather), return_details)


def rince_loss(z1, z2, *, epsilon: float = DEFAULT_EPSILON, lam: float = DEFAULT_LAM,
               q: float = DEFAULT_Q, layout: str = "joint", target: TargetLike = None,
               gather: bool = False, return_details: bool = False):
    r"""RINCE (Chuang et al. 2022), the W1-type outer divergence on one row projection.

    .. math:: L = \frac1N \sum_i \Big[-\frac{e^{q s_{i\pi(i)}}}{q}
              + \frac{(\lambda \sum_{j} e^{s_{ij}})^q}{q}\Big]

    (sum over all columns of row ``i``, positive included, self excluded). ``q → 0`` with
    ``λ = 1`` gives INCE. Values grow like ``e^{q/ε}``: see :class:`AlignmentOverflowError`.
    Shapes: ``z1, z2``: ``(B, d)``; returns a scalar.
    """
    return _out(alignment(z1, z2, epsilon=epsilon, layout=layout, constraint="rows",
                          kl_weight=0.0, rince_weight=1.0, lam=lam, q=q, target=target,
                          gather=gather), return_details)


def gca_ince_loss(z1, z2, *, epsilon: float = DEFAULT_EPSILON, n_iter: int = DEFAULT_N_ITER,
                  layout: str = "joint", target: TargetLike = None, grad: str = "unrolled",
                  gather: bool = False, return_details: bool = False):
    r"""GCA-INCE(T): KL between the target and ``T`` full Sinkhorn iterations (paper §4).

    .. math:: L = \frac1N \sum_i -\log P^{(2T)}_{i\pi(i)}
              = -\frac1N \sum_i \frac{f_i + g_{\pi(i)} - C_{i\pi(i)}}{\varepsilon},
              \qquad \mu = \nu = 1_N,\ C = -S

    Shapes: ``z1, z2``: ``(B, d)``; returns a scalar. With a custom target: ``(1/N) KL(T‖P⁽²ᵀ⁾)``.
    """
    return _out(alignment(z1, z2, epsilon=epsilon, layout=layout, constraint="balanced",
                          n_iter=n_iter, target=target, grad=grad, gather=gather), return_details)


def gca_rince_loss(z1, z2, *, epsilon: float = DEFAULT_EPSILON, n_iter: int = DEFAULT_N_ITER,
                   lam: float = DEFAULT_LAM, q: float = DEFAULT_Q, layout: str = "joint",
                   target: TargetLike = None, grad: str = "unrolled", gather: bool = False,
                   return_details: bool = False):
    r"""GCA-RINCE(T, λ, q): the RINCE-type divergence on the iterated plan (paper §4).

    .. math:: L = \frac1N \sum_i \Big[-\frac{(P^{(2T-1)}_{i\pi(i)}/u^{(T)}_i)^q}{q}
              + \frac{(\lambda/u^{(T)}_i)^q}{q}\Big],

    i.e. RINCE on the kernel ``K diag(v⁽ᵀ⁻¹⁾)``: ``log(P⁽²ᵀ⁻¹⁾_iπ/u_i) = (g_prev_π − C_iπ)/ε`` and
    ``log(1/u_i) = −f_i/ε``. ``n_iter = 1`` is exactly RINCE.
    Shapes: ``z1, z2``: ``(B, d)``; returns a scalar.
    """
    return _out(alignment(z1, z2, epsilon=epsilon, layout=layout, constraint="balanced",
                          n_iter=n_iter, kl_weight=0.0, rince_weight=1.0, rince_potential="g_prev",
                          lam=lam, q=q, target=target, grad=grad, gather=gather), return_details)


def gca_uot_loss(z1, z2, *, epsilon: float = DEFAULT_EPSILON, n_iter: int = DEFAULT_N_ITER,
                 rho=DEFAULT_RHO, lam: float = DEFAULT_LAM, q: float = DEFAULT_Q,
                 r1: float = DEFAULT_R1, r2: float = DEFAULT_R2, layout: str = "joint",
                 target: TargetLike = None, grad: str = "unrolled", gather: bool = False,
                 return_details: bool = False):
    r"""GCA-UOT(T, ρ₁, ρ₂, λ, q, r₁, r₂) on the unbalanced plan (paper §4, authors' conventions).

    .. math:: L = r_1 \frac1N\sum_i -\log\frac{P_{i\pi(i)}}{\sum_j P_{ij}}
              + r_2 \frac1N\sum_i\Big[-\frac{(P_{i\pi(i)}/u_i)^q}{q} + \frac{(\lambda/u_i)^q}{q}\Big]

    with ``P = diag(u) K diag(v)`` after ``T`` unbalanced iterations
    ``u ← (μ/Kv)^{τ₁}``, ``v ← (ν/Kᵀu)^{τ₂}``, ``τ_k = ρ_k/(ρ_k+ε)``, cost ``C = 1 − S``
    (self-pairs excluded), ``μ = ν = 1_N/N`` (so ``λ/u_i`` carries a factor ``N``).
    With ``r2 = 0`` and ``rho = inf`` this is GCA-INCE on the row-renormalised plan, which equals
    GCA-INCE once Sinkhorn has converged (at finite T they differ by ``mean_i log Σ_j P⁽²ᵀ⁾_ij``).
    Shapes: ``z1, z2``: ``(B, d)``; returns a scalar.
    """
    return _out(alignment(z1, z2, epsilon=epsilon, layout=layout, cost="cosine_distance",
                          constraint="unbalanced", n_iter=n_iter, rho=rho, mass="probability",
                          kl_weight=r1, kl_on_rows=True, rince_weight=r2, rince_potential="g",
                          lam=lam, q=q, target=target, grad=grad, gather=gather), return_details)


def iot_loss(z1, z2, *, epsilon: float = DEFAULT_EPSILON, n_iter: int = DEFAULT_N_ITER,
             layout: str = "joint", target: TargetLike = None, grad: str = "unrolled",
             gather: bool = False, return_details: bool = False):
    r"""IOT (Shi et al., ICML 2023): alternating row/column normalisation of the joint kernel.

    .. math:: L = \frac1N \sum_i -\log P_{i\pi(i)}, \qquad P = \text{Sinkhorn}_T(K),\ \mu=\nu=1_N

    By the paper's definition (§4) this is GCA-INCE on the joint layout with uniform marginals;
    it is kept as its own name so configurations and tables read like the paper's.
    Shapes: ``z1, z2``: ``(B, d)``; returns a scalar. ``layout`` must be ``"joint"``.
    """
    _joint_only("iot", layout)
    return _out(alignment(z1, z2, epsilon=epsilon, layout="joint", constraint="balanced",
                          n_iter=n_iter, target=target, grad=grad, gather=gather), return_details)


def iot_uni_loss(z1, z2, *, epsilon: float = DEFAULT_EPSILON, n_iter: int = DEFAULT_N_ITER,
                 lambda_p: float = DEFAULT_LAMBDA_P, layout: str = "joint", grad: str = "unrolled",
                 gather: bool = False, return_details: bool = False):
    r"""IOT-uni: IOT plus a uniformity penalty on the negatives' plan entries.

    .. math::

        L = \frac1N \sum_i -\log P_{i\pi(i)} + \lambda_p \frac1N \mathrm{KL}(P \,\|\, Q),
        \qquad Q_{ij} = \begin{cases} P_{ij} & j = \pi(i) \\ \bar p & j \ne \pi(i),\ j \ne i
        \end{cases}, \quad \bar p = \frac{1}{|\mathcal O|}\sum_{(i,j)\in\mathcal O} P_{ij},

    where :math:`\mathcal O` is the set of off-positive, non-self entries (``N(N−2)`` of them) and
    ``KL`` the generalised KL of §2, which here reduces to :math:`\sum_{\mathcal O} P\log(P/\bar p)`.

    Why this reading of the spec's one-line definition: "``Q`` equals ``P`` on the
    diagonal-of-interest" — the positive pairs, which are the diagonal of the cross layout — "and
    the mean off-positive value elsewhere": one global mean, as written. Self-pairs have no mass
    (``K_ii = 0``), so they are excluded from the mean and the sum. The term is divided by ``N`` so
    that, like every loss here, it is a mean over anchors. It vanishes exactly when every anchor
    spreads its negative mass uniformly, and its gradient is the same whether ``p̄`` is treated
    as a constant or differentiated (``∂/∂P_ij`` is ``log(P_ij/p̄)`` either way).

    Shapes: ``z1, z2``: ``(B, d)``; returns a scalar. Forms the dense ``N × N`` plan.
    ``layout`` must be ``"joint"``.
    """
    _joint_only("iot-uni", layout)
    return _out(alignment(z1, z2, epsilon=epsilon, layout="joint", constraint="balanced",
                          n_iter=n_iter, uniformity_weight=lambda_p, grad=grad, gather=gather),
                return_details)


_FUNCTIONS = {
    "simclr": simclr_loss,
    "ince": ince_loss,
    "rince": rince_loss,
    "gca-ince": gca_ince_loss,
    "gca-rince": gca_rince_loss,
    "gca-uot": gca_uot_loss,
    "iot": iot_loss,
    "iot-uni": iot_uni_loss,
}


# ----------------------------------------------------------------------------------------------
# nn.Module wrappers
# ----------------------------------------------------------------------------------------------

def _validate_hparams(name: str, hparams: dict) -> dict:
    """Check hyperparameters eagerly (in ``__init__``), with the same rules as the functions."""
    checks = {
        "epsilon": _check_epsilon, "n_iter": _check_n_iter, "q": _check_q,
        "lam": lambda v: _check_nonneg("lam", v), "r1": lambda v: _check_nonneg("r1", v),
        "r2": lambda v: _check_nonneg("r2", v), "lambda_p": lambda v: _check_nonneg("lambda_p", v),
        "rho": _check_rho, "layout": _check_layout, "grad": _check_grad,
    }
    for key, value in hparams.items():
        if key in checks:
            checks[key](value)
        elif key == "gather" and not isinstance(value, bool):
            raise TypeError(f"gather={value!r} must be True or False")
    if name == "gca-rince" and hparams.get("grad") == "implicit":
        raise ValueError(_IMPLICIT_RINCE)
    if name in ("simclr", "iot", "iot-uni") and "layout" in hparams:
        _joint_only(name, hparams["layout"])
    if name == "gca-uot" and hparams.get("r1", DEFAULT_R1) == 0 and hparams.get("r2", DEFAULT_R2) == 0:
        raise ValueError("r1 = r2 = 0: the GCA-UOT loss would be identically 0")
    return hparams


class AlignmentLoss(nn.Module):
    """A named loss of the family as an ``nn.Module``: ``forward(z1, z2) -> scalar``.

    Hyperparameters are validated at construction. ``forward(z1, z2, target=None,
    return_details=False)``: ``target`` overrides the module's target for this call;
    ``return_details=True`` returns the :class:`Alignment` (plan, potentials, terms).

    Shape: ``z1, z2``: ``(B, d)``; output: scalar.
    """

    name: str = ""

    def __init__(self, name: str, **hparams):
        super().__init__()
        if name not in _FUNCTIONS:
            raise ValueError(f"unknown loss {name!r}; choose one of {LOSS_NAMES}")
        self.name = name
        fn = _FUNCTIONS[name]
        accepted = set(fn.__kwdefaults__) - {"return_details"}
        unknown = set(hparams) - accepted
        if unknown:
            raise TypeError(f"{name!r} does not take {sorted(unknown)}; it accepts {sorted(accepted)}")
        target = hparams.pop("target", None)
        if target is not None and not (callable(target) or isinstance(target, Tensor)):
            raise TypeError(f"target must be None, an (N, N) tensor or a callable, got {type(target)!r}")
        if isinstance(target, Tensor):
            layout = hparams.get("layout", "joint") if "layout" in accepted else "joint"
            target = _plans.custom_plan(target, layout)
            self.register_buffer("target", target, persistent=False)
        else:
            self.target = target
        self.hparams = _validate_hparams(name, dict(hparams))
        self._fn = fn

    def forward(self, z1: Tensor, z2: Tensor, target: TargetLike = None, *,
                return_details: bool = False):
        tgt = self.target if target is None else target
        kwargs = dict(self.hparams)
        if tgt is not None:
            if "target" not in self._fn.__kwdefaults__:
                raise ValueError(f"{self.name!r} is defined for the positive-pair target only; "
                                 f"pass target=None")
            kwargs["target"] = tgt
        return self._fn(z1, z2, return_details=return_details, **kwargs)

    def extra_repr(self) -> str:
        return ", ".join([repr(self.name)] + [f"{k}={v!r}" for k, v in self.hparams.items()])


def _wrapper(name: str, doc_fn):
    class _Loss(AlignmentLoss):
        def __init__(self, **hparams):
            super().__init__(name, **hparams)

    _Loss.__doc__ = f"``nn.Module`` form of :func:`{doc_fn.__name__}` (``make_loss({name!r})``)."
    return _Loss


SimCLRLoss = _wrapper("simclr", simclr_loss)
INCELoss = _wrapper("ince", ince_loss)
RINCELoss = _wrapper("rince", rince_loss)
GCAINCELoss = _wrapper("gca-ince", gca_ince_loss)
GCARINCELoss = _wrapper("gca-rince", gca_rince_loss)
GCAUOTLoss = _wrapper("gca-uot", gca_uot_loss)
IOTLoss = _wrapper("iot", iot_loss)
IOTUniLoss = _wrapper("iot-uni", iot_uni_loss)
for _cls, _n in ((SimCLRLoss, "SimCLRLoss"), (INCELoss, "INCELoss"), (RINCELoss, "RINCELoss"),
                 (GCAINCELoss, "GCAINCELoss"), (GCARINCELoss, "GCARINCELoss"),
                 (GCAUOTLoss, "GCAUOTLoss"), (IOTLoss, "IOTLoss"), (IOTUniLoss, "IOTUniLoss")):
    _cls.__name__ = _cls.__qualname__ = _n


def make_loss(name: str, **hparams) -> AlignmentLoss:
    """Build a loss of the family by name, with the authors' CIFAR-10 defaults.

    Parameters
    ----------
    name : str
        One of ``"simclr", "ince", "rince", "gca-ince", "gca-rince", "gca-uot", "iot",
        "iot-uni"`` (case and ``_``/``-`` insensitive).
    **hparams
        Keyword hyperparameters of the matching function (``epsilon``, ``n_iter``, ``lam``, ``q``,
        ``rho``, ``r1``, ``r2``, ``lambda_p``, ``layout``, ``target``, ``grad``, ``gather``).

    Returns
    -------
    AlignmentLoss
        ``loss(z1, z2)`` with ``z1, z2`` of shape ``(B, d)`` returns a scalar.

    Examples
    --------
    >>> loss = make_loss("gca-uot", epsilon=0.5)
    >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    >>> loss(z1, z2).shape
    torch.Size([])
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name)!r}")
    key = name.strip().lower().replace("_", "-")
    if key == "byol":
        raise ValueError("BYOL's loss (normalised MSE between the online predictor's output and the "
                         "EMA target projection) needs the two networks and lives in gca.train; "
                         "its place in the GCA table is documented in gca.losses")
    if key not in _FUNCTIONS:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSS_NAMES}")
    return _CLASSES[key](**hparams)


_CLASSES = {"simclr": SimCLRLoss, "ince": INCELoss, "rince": RINCELoss, "gca-ince": GCAINCELoss,
            "gca-rince": GCARINCELoss, "gca-uot": GCAUOTLoss, "iot": IOTLoss, "iot-uni": IOTUniLoss}
