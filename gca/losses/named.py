r"""The named losses of the paper (functional API): each one a configuration of :func:`gca.losses.alignment`.

``z1, z2`` of shape ``(B, d)`` (two views) → a scalar, or the :class:`gca.losses.Alignment` with
``return_details=True``. Defaults are the authors' CIFAR-10 values (:mod:`gca.losses.core`). The
``nn.Module`` forms and the name → loss table are in :mod:`gca.losses.registry`.
"""

from __future__ import annotations

from .core import (DEFAULT_EPSILON, DEFAULT_LAM, DEFAULT_LAMBDA_P, DEFAULT_N_ITER, DEFAULT_Q, DEFAULT_Q_AUTHORS,
                   DEFAULT_R1, DEFAULT_R2, DEFAULT_RHO, Alignment, TargetLike, alignment)
from .targets import check_layout

__all__ = ["simclr_loss", "ince_loss", "rince_loss", "gca_ince_loss", "gca_rince_loss", "gca_uot_loss", "iot_loss",
           "iot_uni_loss", "rince_authors_loss", "gca_rince_authors_loss", "joint_only"]


def _out(result: Alignment, return_details: bool):
    return result if return_details else result.loss


def joint_only(name: str, layout) -> None:
    """Refuse any layout but ``"joint"`` for the losses defined on it (SimCLR, IOT, IOT-uni)."""
    if layout != "joint":
        check_layout(layout)
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
    joint_only("simclr", layout)
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
    >>> import torch
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
    joint_only("iot", layout)
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
    joint_only("iot-uni", layout)
    return _out(alignment(z1, z2, epsilon=epsilon, layout="joint", constraint="balanced",
                          n_iter=n_iter, uniformity_weight=lambda_p, grad=grad, gather=gather),
                return_details)


def rince_authors_loss(z1, z2, *, epsilon: float = DEFAULT_EPSILON, q: float = DEFAULT_Q_AUTHORS,
                       layout: str = "joint", target: TargetLike = None, gather: bool = False,
                       return_details: bool = False):
    r""""RINCE" as the authors' CIFAR code computes it: the mean INCE cross-entropy to the power ``q``, over ``q``.

    .. math:: L = \frac1q \Big(\frac1N \sum_i -\log P^{(1)}_{i\pi(i)}\Big)^q, \qquad q = 0.98,

    ``P⁽¹⁾`` the plan of one row projection (INCE's). What the code does
    (``nerdslab/gca``, ``gca_loss_cifar.py``, class ``rince``, lines 152–168): logits ``S/ε`` of
    the cosine similarities clamped at ``1e-7``, the self-pair's logit set to
    ``S_ii/ε − max(S/ε) ≈ 0``, interleaved positives ``2k ↔ 2k+1``;
    ``F.cross_entropy(logits, targets, weight=class_weights)`` with every class weight first set to
    ``λ`` and then back to 1 (``class_weights[targets.unique()] = 1`` covers every column), so
    ``λ`` has no effect and the weighted cross-entropy is the plain mean; then
    ``loss ** q / q`` — the power of the *mean*, not RINCE's per-anchor
    ``−e^{q s⁺}/q + (λ Σ e^{s})^q/q`` (:func:`rince_loss`, Chuang et al.). ``q = 0.98`` is their
    CIFAR-10 configuration's (``config/simclr_cifar10.yaml``). See ``official-code.md`` note 5.

    Here, with this package's conventions: self-pairs excluded (``K_ii = 0``), no clamping of the
    similarities, block layout (``π(i) = i ± B``; a relabelling, same value). ``λ`` is not a
    parameter because it has no effect. With a custom target: ``(KL(T‖P⁽¹⁾)/N)^q / q``.
    Shapes: ``z1, z2``: ``(B, d)``; returns a scalar.
    """
    return _out(alignment(z1, z2, epsilon=epsilon, layout=layout, constraint="rows", kl_power=q,
                          target=target, gather=gather), return_details)


def gca_rince_authors_loss(z1, z2, *, epsilon: float = DEFAULT_EPSILON, n_iter: int = DEFAULT_N_ITER,
                           q: float = DEFAULT_Q_AUTHORS, layout: str = "joint", target: TargetLike = None,
                           grad: str = "unrolled", gather: bool = False, return_details: bool = False):
    r""""GCA-RINCE" as the authors' CIFAR code computes it: the same power of a cross-entropy, on the GCA plan.

    .. math:: L = \frac1q \Big(\frac1N \sum_i -\log \frac{P_{i\pi(i)}}{\sum_j P_{ij}}\Big)^q,
              \qquad P = \text{Sinkhorn}_T(K),\ q = 0.98,

    What the code does (``nerdslab/gca``, ``gca_loss_cifar.py``, class ``gca_rince``, lines
    219–245): the kernel ``K = exp(−C/ε)`` with ``C = 1 − clamp(S, 1e-7)`` and the self-pair's
    cost set to the largest cost, ``T = 10`` kernel-domain Sinkhorn iterations with marginals
    ``1/N`` from ``v = 1/N``, ``P = diag(u) K diag(v)``, then
    ``F.cross_entropy(P.log(), targets, weight=class_weights)`` — a log-softmax of ``log P``,
    i.e. the row-renormalised plan — with the class weights back at 1 (``λ`` has no effect), then
    ``loss ** q / q``. See ``official-code.md`` notes 2–5.

    Here: self-pairs excluded, no clamping, ``C = −S`` and marginals ``1_N`` (the
    row-renormalised plan does not depend on a constant added to ``C`` nor on the marginals'
    common scale), the log-domain potentials of :mod:`gca.ot` (or its kernel path where safe).
    ``λ`` is not a parameter. ``n_iter = 1`` gives :func:`rince_authors_loss`'s value on the
    row-renormalised ``P⁽²⁾``. Shapes: ``z1, z2``: ``(B, d)``; returns a scalar.
    """
    return _out(alignment(z1, z2, epsilon=epsilon, layout=layout, constraint="balanced", n_iter=n_iter,
                          kl_on_rows=True, kl_power=q, target=target, grad=grad, gather=gather), return_details)
