r"""The alignment core: the contrastive loss family as configurations of one function (paper §2–§4).

Every loss of :mod:`gca.losses` is the same pipeline, only configured differently:

.. math::

    z_1, z_2 \;\to\; S \text{ (cosine similarities, layout)} \;\to\; C \text{ (cost)},\;
    K = e^{-C/\varepsilon} \;\to\; P_\theta = \operatorname{proj}_{\mathcal B}^{(n\_iter)}(K)
    \;\to\; d_M(P_{\mathrm{tgt}} \,\|\, P_\theta) \text{ (mean over anchors)}.

The stages live in :mod:`gca.losses.cost` (similarity → layout → cost),
:mod:`gca.losses.constraints` (the plan's potentials), :mod:`gca.losses.divergences` (``d_M``) and
:mod:`gca.losses.targets` (target plans); this module composes them. The plan is never formed
densely unless asked for: it is represented by the cost ``C`` and the log-domain potentials of
:mod:`gca.ot`, :math:`P = \exp((f \oplus g - C)/\varepsilon)`, and the
losses read the entries they need (:math:`\log P_{i\pi(i)}`, row normalisers) from ``f, g``.

Configurations of :func:`~gca.losses.alignment` (paper §3 table, §4 formulas)::

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
    RINCE-a    -S       rows, one half-step   kl_power=q             (mean KL)^q / q              KL
    GCA-RINCE-a -S      rows ∩ cols, T iter.; kl_on_rows, kl_power=q (mean KL(row-renorm. P))^q/q KL
    BYOL       —        R^{B×B}: no constraint, no negatives         KL                           L2
                        (its loss, a normalised MSE, lives in gca.train)

    RINCE-a, GCA-RINCE-a: methods rince-authors and gca-rince-authors, what the authors' CIFAR code
    computes under the names RINCE and GCA-RINCE (official-code.md note 5).

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
fits the dtype, and an :class:`~gca.losses.AlignmentOverflowError` naming ``epsilon``, ``q`` and the dtype is
raised when it does not (never a silent inf/NaN).

Global batch: ``gather=True`` all-gathers both views across processes with gradients
(:func:`gca.distributed.gather_with_grad`) before building the plan.

Cost: the iterated losses run on a fast path by default (:data:`FAST_PATH`): the fused solver of
:mod:`gca.losses.fused` where it applies (no host synchronisation, an exact hand-written backward),
else the general solver without its checks, every check folded into one read with the loss (the
checked path is redone if it fails). ``benchmarks/results/losses.md`` measures both paths against INCE
written with ``F.cross_entropy``; losses gather ``log P_iπ(i)`` from the potentials instead of
forming plans, and row normalisers come from fused kernels or the solver.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from ..checks import check_bool, check_choice, check_epsilon, check_grad, check_int, check_nonneg, check_real, check_rho
from ..distributed import gather_with_grad
from .constraints import CONSTRAINTS, MARGINALS, constraint_potentials
from .cost import COSTS, ScaledCost, check_views, scaled_similarity
from .divergences import (finish_rince, log_positive_weight, power_of_mean, rince_term, target_log_term,
                          uniformity)
from .fused import potentials_for_alignment
from .targets import check_layout, custom_plan

__all__ = ["Alignment", "alignment", "FAST_PATH", "fast_path_enabled", "check_q", "TargetLike",
           "DEFAULT_EPSILON", "DEFAULT_N_ITER", "DEFAULT_RHO", "DEFAULT_LAM", "DEFAULT_Q", "DEFAULT_R1",
           "DEFAULT_R2", "DEFAULT_LAMBDA_P", "DEFAULT_Q_AUTHORS", "IMPLICIT_RINCE"]

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
# q of the authors' CIFAR-10 configuration (config/simclr_cifar10.yaml: q = 0.98), the exponent of
# their "RINCE" / "GCA-RINCE", which compute (cross-entropy)^q / q (official-code.md note 5).
DEFAULT_Q_AUTHORS = 0.98

TargetLike = Union[None, Tensor, Callable[[int, str], Tensor]]

IMPLICIT_RINCE = (
    "grad='implicit' cannot differentiate the RINCE-type term on a balanced plan: the term reads "
    "the potentials f, g_prev themselves, and the balanced fixed point only fixes them up to the "
    "shift (f + c, g − c), whose gradient component the implicit mode drops; use grad='unrolled' "
    "(exact) or 'detach'")


#: Whether :func:`~gca.losses.alignment` runs its iterated constraints on the synchronisation-free fast path:
#: ``"on"`` (default; every device — it saves the host round trips on CUDA and the range passes
#: on the CPU, with the same iterations), ``"off"`` (the checked path only), or ``"cuda"`` (CUDA
#: devices only). Set it here (``gca.losses.core.FAST_PATH``; ``gca.losses.FAST_PATH`` is a copy
#: for reading) or with the environment variable ``GCA_FAST_PATH``, which overrides it.
FAST_PATH = "on"


def fast_path_enabled(device: torch.device) -> bool:
    """Whether :func:`~gca.losses.alignment` uses the fast path on ``device`` (see
    :data:`~gca.losses.core.FAST_PATH`)."""
    mode = os.environ.get("GCA_FAST_PATH", "").strip().lower() or FAST_PATH
    if mode not in ("on", "off", "cuda"):
        raise ValueError(f"GCA_FAST_PATH / gca.losses.core.FAST_PATH = {mode!r}: use on, off or cuda")
    return mode == "on" or (mode == "cuda" and device.type == "cuda")


def check_q(q, name: str = "q") -> float:
    """A RINCE-type exponent ``q`` in ``(0, 1]``."""
    q = check_real(name, q)
    if not (0 < q <= 1):
        raise ValueError(f"{name}={q!r} must lie in (0, 1] (the RINCE exponent; q -> 0 recovers the KL/INCE "
                         f"term, q = 1 is the W1-type limit)")
    return q


# ----------------------------------------------------------------------------------------------
# the result
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
        Unweighted scalar components where present: ``"kl"`` (the mean KL term), ``"kl_power"``
        (its power ``(mean KL)^q/q`` when ``kl_power=q``), ``"rince"``, ``"uniformity"``.
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
        (cost ``C/ε``, regulariser 1, ``ρ/ε``; see :mod:`gca.losses.constraints`), so its
        potentials are ``f/ε, g/ε``.

    ``scaled_cost`` is internal (``C/ε`` or ``log K``, whichever was built).
    Dense views (formed on access): ``log_kernel`` (``−C/ε``, ``-inf`` on excluded self-pairs),
    ``cost``, ``kernel``, ``plan``, ``plan_before_column_step``, ``target_plan``.
    """

    loss: Tensor
    per_anchor: Tensor
    terms: dict
    scaled_cost: ScaledCost
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


def _resolve_target(target: TargetLike, batch: int, layout: str, ref: Tensor) -> Optional[Tensor]:
    if target is None:
        return None
    if callable(target) and not isinstance(target, Tensor):
        target = target(batch, layout)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be None, an (N, N) tensor or a callable (batch_size, layout) "
                        f"-> tensor, got {type(target)!r}")
    target = custom_plan(target.detach(), layout, batch_size=batch)
    return target.to(device=ref.device, dtype=ref.dtype)


# ----------------------------------------------------------------------------------------------
# the core
# ----------------------------------------------------------------------------------------------
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
    kl_power: Optional[float] = None,
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
    kl_power : None or float in (0, 1]
        ``q``: the KL term enters as ``w_KL (mean_i ℓ^KL_i)^q / q`` instead of ``w_KL mean_i ℓ^KL_i``
        (the power of the mean cross-entropy that the authors' CIFAR code computes as "RINCE";
        ``per_anchor`` then holds each anchor's share ``ℓ^KL_i (mean ℓ^KL)^{q−1}/q``).
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
                  kl_weight=kl_weight, kl_on_rows=kl_on_rows, kl_power=kl_power, rince_weight=rince_weight,
                  rince_potential=rince_potential, lam=lam, q=q, uniformity_weight=uniformity_weight, target=target,
                  grad=grad, gather=gather)
    if not gather and constraint != "rows" and isinstance(z1, Tensor) and fast_path_enabled(z1.device):
        try:
            out = _run_alignment(z1, z2, fast=True, **kwargs)
        except (ValueError, ArithmeticError):  # e.g. a RINCE term of NaN embeddings: the checked path names it
            out = None
        if out is not None:
            return out
    return _run_alignment(z1, z2, fast=False, **kwargs)


def _run_alignment(z1, z2, *, fast: bool, epsilon, layout, cost, constraint, n_iter, rho, mass, kl_weight, kl_on_rows,
                   kl_power, rince_weight, rince_potential, lam, q, uniformity_weight, target, grad,
                   gather) -> Optional[Alignment]:
    """:func:`alignment`'s body. ``fast``: the solver runs without host synchronisation and every
    check is folded into one flag read at the end; ``None`` when it fails (the caller then redoes
    the problem on the checked path, which names the cause or falls back to the log domain)."""
    check_views(z1, z2)
    epsilon = check_epsilon(epsilon)
    layout = check_layout(layout)
    check_choice("cost", cost, COSTS)
    check_choice("constraint", constraint, CONSTRAINTS)
    check_choice("mass", mass, MARGINALS)
    check_choice("rince_potential", rince_potential, ("g_prev", "g"))
    n_iter = check_int("n_iter", n_iter, 1, " (Sinkhorn iterations: one = a row step + a column step)")
    if constraint == "rows" and n_iter != 1:
        raise ValueError(f"n_iter={n_iter} with constraint='rows': the row projection is a single "
                         f"half-step; use constraint='balanced' or 'unbalanced' to iterate")
    rho = check_rho(rho)
    if constraint != "unbalanced" and rho != (math.inf, math.inf):
        raise ValueError(f"rho={rho!r} only applies to constraint='unbalanced' (got {constraint!r})")
    kl_weight = check_nonneg("kl_weight", kl_weight, " (r1 of GCA-UOT)")
    rince_weight = check_nonneg("rince_weight", rince_weight, " (r2 of GCA-UOT)")
    uniformity_weight = check_nonneg("uniformity_weight", uniformity_weight, " (lambda_p of IOT-uni)")
    if kl_weight == 0 and rince_weight == 0 and uniformity_weight == 0:
        raise ValueError("all loss weights are 0 (r1 = r2 = lambda_p = 0); the loss would be "
                         "identically 0")
    check_bool("kl_on_rows", kl_on_rows)
    if kl_power is not None:
        kl_power = check_q(kl_power, "kl_power")
        if kl_weight == 0:
            raise ValueError(f"kl_power={kl_power!r} raises the KL term to a power, but kl_weight=0")
    lam = check_nonneg("lam", lam, " (RINCE density weight)")
    q = check_q(q)
    grad = check_grad(grad)
    check_bool("gather", gather)
    if grad == "implicit" and rince_weight > 0 and constraint == "balanced":
        raise ValueError(IMPLICIT_RINCE)
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
        if fast:  # the fused solver (gca.losses.fused) where it applies, else the unchecked general solver
            fused = potentials_for_alignment(
                z1, z2, epsilon=epsilon, layout=layout, cost=cost, constraint=constraint, n_iter=n_iter, rho=rho,
                mass=mass, grad=grad, target=target, uniformity_weight=uniformity_weight, want_row_lse=want_row_lse)
        if fused is not None:
            c, pos_hat, pi, fh, gh, gph, row_lse, solver = fused
            tgt = None
            ok = solved = torch.ones((), dtype=torch.bool, device=fh.device)
        else:
            c, pos_hat, pi, ok = scaled_similarity(z1, z2, layout, cost, epsilon, as_log_kernel=rows_only,
                                                   defer_checks=fast)
            tgt = _resolve_target(target, batch, layout, c.built)
            fh, gh, gph, row_lse, solver, solved = constraint_potentials(
                c, pos_hat, pi, epsilon=epsilon, constraint=constraint, n_iter=1 if rows_only else n_iter,
                rho=rho, mass=mass, grad=grad, want_row_lse=want_row_lse, unchecked=fast)

        per_anchor = torch.zeros_like(fh)
        terms: dict[str, Tensor] = {}
        loss = fh.new_zeros(())
        if kl_weight > 0:
            # −log P_iπ = −(f_i + g_π − C_iπ)/ε ; on rows: −log(P_iπ / Σ_j P_ij), f cancels
            if kl_on_rows:
                # row_lse_i = log Σ_j K_ij v_j (one matvec in the solver's kernel path)
                kl_i = row_lse - target_log_term(c, pos_hat, gh, pi, tgt)
            else:
                kl_i = -fh - target_log_term(c, pos_hat, gh, pi, tgt)
                if mass_terms:
                    kl_i = kl_i + torch.exp(fh + row_lse) - 1.0  # Σ_j P_ij − Σ_j T_ij
            terms["kl"] = kl_i.mean()
            if kl_power is None:
                kl_loss, kl_shares = terms["kl"], kl_i
            else:  # the authors' CIFAR code: (mean cross-entropy)^q / q (official-code.md note 5)
                kl_loss, kl_shares = power_of_mean(kl_i, kl_power)
                terms["kl_power"] = kl_loss
            loss = loss + kl_weight * kl_loss
            per_anchor = per_anchor + kl_weight * kl_shares
        if rince_weight > 0:
            h = gph if rince_potential == "g_prev" else gh
            a = (math.log(lam) if lam > 0 else -math.inf) - fh  # log(λ / u_i)
            b = log_positive_weight(c, pos_hat, h, pi, tgt)
            scaled, big = rince_term(a, b, q)
            terms["rince"], rince_i = finish_rince(scaled, big, q, epsilon)
            loss = loss + rince_weight * terms["rince"]
            per_anchor = per_anchor + rince_weight * rince_i
        if uniformity_weight > 0:
            terms["uniformity"], uni_i = uniformity(c.c, fh, gh, pi, layout)
            loss = loss + uniformity_weight * terms["uniformity"]
            per_anchor = per_anchor + uniformity_weight * uni_i
        if fast and not bool(ok & solved & torch.isfinite(loss)):  # the one host synchronisation
            return None

    return Alignment(loss=loss, per_anchor=per_anchor, terms=terms, scaled_cost=c,
                     f=fh * epsilon, g=gh * epsilon, g_prev=gph * epsilon, epsilon=epsilon,
                     layout=layout, positives=pi, target=tgt, constraint=constraint,
                     n_iter=0 if rows_only else n_iter, solver=solver)
