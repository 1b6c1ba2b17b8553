"""Input validators shared by :mod:`gca.ot` and :mod:`gca.losses`: one definition for each check.

Every function returns the value in canonical form (``float``, ``int``, a pair) or raises
:class:`TypeError` (wrong kind of value) / :class:`ValueError` (right kind, bad value) with a message
of the form ``name=value must ...`` that names the value and what to pass instead. Scalars may be
Python numbers or one-element tensors that carry no gradient (a hyper-parameter is never
differentiated: a tensor that requires grad is refused rather than silently detached).
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "GRAD_MODES",
    "FLOAT_DTYPES",
    "check_real",
    "check_positive",
    "check_nonneg",
    "check_epsilon",
    "check_rho",
    "check_int",
    "check_bool",
    "check_choice",
    "check_grad",
    "compute_dtype",
]

#: Gradient modes through a Sinkhorn solution (:func:`gca.ot.sinkhorn`, the iterated losses).
GRAD_MODES = ("unrolled", "implicit", "detach")
#: Floating-point dtypes the solvers accept (half precisions are computed in float32).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_real(name: str, value) -> float:
    """A real number other than NaN (``inf`` allowed) as ``float``."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        if value.requires_grad:
            raise TypeError(f"{name} is a fixed hyper-parameter and is not differentiated; pass "
                            f"float({name}) instead of a tensor that requires grad")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name}=nan is not a number; pass a real value")
    return value


def check_positive(name: str, value, hint: str = "", *, allow_inf: bool = False) -> float:
    """A real number ``> 0`` (finite unless ``allow_inf``). ``hint`` completes the error message."""
    value = check_real(name, value)
    if not (value > 0 and (allow_inf or math.isfinite(value))):
        raise ValueError(f"{name}={value!r} must be {'' if allow_inf else 'finite and '}> 0{hint}")
    return value


def check_nonneg(name: str, value, hint: str = "") -> float:
    """A finite real number ``>= 0``."""
    value = check_real(name, value)
    if not (0 <= value < math.inf):
        raise ValueError(f"{name}={value!r} must be finite and >= 0{hint}")
    return value


def check_epsilon(epsilon, name: str = "epsilon") -> float:
    """The entropic regulariser ε (the losses' temperature): finite and ``> 0``."""
    return check_positive(name, epsilon, " (the entropic regulariser / temperature; the paper uses 0.5)")


def check_rho(rho, name: str = "rho") -> tuple[float, float]:
    """Marginal penalties: one number or a pair ``(rho_a, rho_b)``, each ``> 0`` (``inf``: a hard marginal)."""
    if isinstance(rho, (tuple, list)):
        if len(rho) != 2:
            raise ValueError(f"{name}={rho!r} must be one number or a pair (rho_a, rho_b)")
        values = [check_real(f"{name}[{k}]", r) for k, r in enumerate(rho)]
        names = [f"{name}[0]", f"{name}[1]"]
    else:
        if rho is None:
            raise TypeError(f"{name}=None must be a number > 0 or a pair (rho_a, rho_b); inf is a hard marginal")
        values, names = [check_real(name, rho)] * 2, [name] * 2
    for n, value in zip(names, values):
        if not value > 0:
            raise ValueError(f"{n}={value!r} must be > 0 (a marginal's KL penalty; inf = a hard marginal)")
    return values[0], values[1]


def check_int(name: str, value, minimum: int, hint: str = "") -> int:
    """An integer (``bool`` excluded) ``>= minimum``, as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={value!r} must be an integer >= {minimum}{hint}")
    if value < minimum:
        raise ValueError(f"{name}={value!r} must be >= {minimum}{hint}")
    return int(value)


def check_bool(name: str, value) -> bool:
    """``True`` or ``False`` (no truthy stand-ins)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r} must be True or False")
    return value


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    """One of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {tuple(choices)}")
    return value


def check_grad(grad) -> str:
    """A gradient mode of :data:`GRAD_MODES`."""
    if not isinstance(grad, str) or grad not in GRAD_MODES:
        raise ValueError(f"grad={grad!r} is not a gradient mode; use one of {GRAD_MODES}")
    return grad


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the solvers compute in: float32 for half precisions, else ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
