r"""Similarity → layout → cost: the first stages of the alignment core (paper §2).

Embeddings ``z1, z2`` ``(B, d)`` are normalised (:func:`unit_rows`), their cosine similarities
``S`` laid out (``"joint"``: ``N = 2B``, ``Z = [ẑ₁; ẑ₂]``, self-pairs excluded; ``"cross"``:
``N = B``, view 1 against view 2) and turned into the dimensionless cost ``Ĉ = C/ε`` with
``C = −S`` or ``1 − S`` (:func:`scaled_similarity`, one matrix product). :class:`ScaledCost` holds
whichever of ``Ĉ`` and ``log K = −Ĉ`` was built.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .targets import positive_index

__all__ = ["COSTS", "check_views", "check_finite_norms", "unit_rows", "check_epsilon_for_dtype", "ScaledCost",
           "scaled_similarity"]

COSTS = ("neg_cosine", "cosine_distance")


def check_views(z1, z2) -> None:
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


def check_finite_norms(s1: Tensor, s2: Tensor) -> None:
    """``s1``, ``s2``: each row's largest absolute entry (its scale, see :func:`unit_rows`)."""
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


def unit_rows(z: Tensor, scale: Tensor) -> Tensor:
    """``z_i / ‖z_i‖`` computed as ``(z_i/s_i) / ‖z_i/s_i‖`` with ``s_i = max_k |z_ik|`` (detached).

    The result is scale-invariant, so dividing by the constant ``s_i`` first changes neither the
    value nor the gradient, while ``‖z_i‖`` itself would overflow (entries ~1e19 in float32) or
    underflow to 0 (entries ~1e-30): any finite, non-zero row is normalised in its own dtype.
    """
    zs = z / scale[:, None]
    return zs / zs.norm(dim=1, keepdim=True)


def check_epsilon_for_dtype(epsilon: float, dtype: torch.dtype) -> None:
    """The scaled cost ``C/ε`` spans ``[−1/ε, 2/ε]``; refuse ε whose ``1/ε`` does not fit ``dtype``."""
    limit = torch.finfo(dtype).max / 8
    if 1.0 / epsilon > limit:
        raise ValueError(f"epsilon={epsilon!r} is too small for {dtype}: the scaled similarities "
                         f"S/epsilon overflow (1/epsilon > {limit:.3g}); use epsilon >= "
                         f"{1.0 / limit:.3g} or compute the loss in float64")


class ScaledCost:
    """The dimensionless cost ``Ĉ = C/ε`` or its negation ``−Ĉ = log K``, whichever was built
    (one matmul, the scaling folded into the small factor); the other is formed on demand."""

    __slots__ = ("_c", "_lk")

    def __init__(self, value: Tensor, is_log_kernel: bool):
        self._c = None if is_log_kernel else value
        self._lk = value if is_log_kernel else None

    @property
    def built(self) -> Tensor:
        """The matrix that was built (``Ĉ`` or ``log K``): for its shape, dtype and device."""
        return self._lk if self._lk is not None else self._c

    @property
    def c(self) -> Tensor:
        """``Ĉ = C/ε``, shape ``(N, N)`` (``+inf`` on excluded self-pairs)."""
        if self._c is None:
            self._c = -self._lk
        return self._c

    @property
    def log_kernel(self) -> Tensor:
        """``log K = −C/ε``, shape ``(N, N)`` (``-inf`` on excluded self-pairs)."""
        if self._lk is None:
            self._lk = -self._c
        return self._lk


def scaled_similarity(z1: Tensor, z2: Tensor, layout: str, cost: str, epsilon: float,
                       as_log_kernel: bool, defer_checks: bool = False):
    r"""Normalised embeddings → (``Ĉ = C/ε`` or ``log K = −Ĉ`` with excluded self-pairs,
    ``Ĉ_iπ(i)`` of shape ``(N,)``, ``π``).

    ``C = −S`` (``"neg_cosine"``) or ``1 − S`` (``"cosine_distance"``), ``S`` the cosine
    similarities of the layout (paper §2)."""
    check_epsilon_for_dtype(epsilon, z1.dtype)
    s1, s2 = z1.detach().abs().amax(dim=1), z2.detach().abs().amax(dim=1)
    if defer_checks:  # read by the caller once, with its other checks
        ok = torch.isfinite(s1).all() & torch.isfinite(s2).all() & (s1 > 0).all() & (s2 > 0).all()
    else:
        check_finite_norms(s1, s2)
        ok = None
    h1, h2 = unit_rows(z1, s1), unit_rows(z2, s2)
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
    pi = positive_index(batch, layout, device=z1.device)
    return ScaledCost(mat, as_log_kernel), pos_hat, pi, ok
