r"""The losses by name: one table from a method name to its function, ``nn.Module`` and hyper-parameters.

:data:`LOSSES` declares, for every method of kind ``"alignment"`` in :mod:`gca.methods`, the loss
function (:mod:`gca.losses.named`), its ``nn.Module`` class, the hyper-parameters
:func:`~gca.losses.make_loss` accepts with their defaults (the authors' CIFAR-10 values), and whether it takes
a custom target plan. Its names are exactly ``gca.methods.method_names("alignment")``, in that
order (checked when this module is imported). Configuration (:mod:`gca.config`), command line and
study read the names from :mod:`gca.methods` and the defaults from here; :func:`~gca.losses.make_loss`
builds a loss by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

from torch import Tensor, nn

from ..checks import check_bool, check_epsilon, check_grad, check_int, check_nonneg, check_rho
from ..methods import METHODS, method_names
from .core import (DEFAULT_EPSILON, DEFAULT_LAM, DEFAULT_LAMBDA_P, DEFAULT_N_ITER, DEFAULT_Q, DEFAULT_Q_AUTHORS,
                   DEFAULT_R1, DEFAULT_R2, DEFAULT_RHO, IMPLICIT_RINCE, TargetLike, check_q)
from .named import (gca_ince_loss, gca_rince_authors_loss, gca_rince_loss, gca_uot_loss, ince_loss, iot_loss,
                    iot_uni_loss, joint_only, rince_authors_loss, rince_loss, simclr_loss)
from .targets import check_layout, custom_plan

__all__ = ["LossSpec", "LOSSES", "LOSS_NAMES", "loss_spec", "AlignmentLoss", "SimCLRLoss", "INCELoss", "RINCELoss",
           "RINCEAuthorsLoss", "GCAINCELoss", "GCARINCELoss", "GCARINCEAuthorsLoss", "GCAUOTLoss", "IOTLoss",
           "IOTUniLoss", "make_loss"]


@dataclass(frozen=True)
class LossSpec:
    """One loss of the family.

    Attributes:
        name: the method name (:mod:`gca.methods`).
        function: the functional form, ``function(z1, z2, **hparams) -> Tensor``.
        module: the ``nn.Module`` class (:class:`AlignmentLoss` subclass).
        defaults: every hyper-parameter :func:`~gca.losses.make_loss` accepts (besides ``target``) → its default.
        custom_target: whether a custom target plan (``target=``) is defined for it.
        implicit_ok: whether ``grad="implicit"`` is allowed (not for a RINCE-type term on a balanced plan).
        joint_only: whether it is defined on the joint layout only.
    """

    name: str
    function: Callable
    module: type
    defaults: Mapping[str, Any]
    custom_target: bool = True
    implicit_ok: bool = True
    joint_only: bool = False

    @property
    def accepted(self) -> frozenset:
        """The keyword hyper-parameters :func:`~gca.losses.make_loss` accepts for this loss."""
        return frozenset(self.defaults) | ({"target"} if self.custom_target else frozenset())


#: How each hyper-parameter is checked (the same rules as the functions'; messages name the value).
_CHECKS: Mapping[str, Callable] = MappingProxyType({
    "epsilon": check_epsilon,
    "n_iter": lambda v: check_int("n_iter", v, 1, " (Sinkhorn iterations)"),
    "q": check_q,
    "lam": lambda v: check_nonneg("lam", v, " (RINCE density weight)"),
    "r1": lambda v: check_nonneg("r1", v),
    "r2": lambda v: check_nonneg("r2", v),
    "lambda_p": lambda v: check_nonneg("lambda_p", v),
    "rho": check_rho,
    "layout": check_layout,
    "grad": check_grad,
    "gather": lambda v: check_bool("gather", v),
})


def _validate_hparams(spec: LossSpec, hparams: dict) -> dict:
    """Check hyper-parameters eagerly (in ``__init__``), with the same rules as the functions."""
    for key, value in hparams.items():
        _CHECKS[key](value)
    if not spec.implicit_ok and hparams.get("grad") == "implicit":
        raise ValueError(IMPLICIT_RINCE)
    if spec.joint_only and "layout" in hparams:
        joint_only(spec.name, hparams["layout"])
    if "r1" in spec.defaults and hparams.get("r1", spec.defaults["r1"]) == 0 \
            and hparams.get("r2", spec.defaults["r2"]) == 0:
        raise ValueError(f"r1 = r2 = 0: the {spec.name} loss would be identically 0")
    return hparams


def loss_spec(name: str) -> LossSpec:
    """The :class:`LossSpec` of ``name`` (case and ``_``/``-`` insensitive); ``ValueError`` otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name)!r}")
    key = name.strip().lower().replace("_", "-")
    if key in LOSSES:
        return LOSSES[key]
    if key == "byol":
        raise ValueError("BYOL's loss (normalised MSE between the online predictor's output and the "
                         "EMA target projection) needs the two networks and lives in gca.train; "
                         "its place in the GCA table is documented in gca.losses")
    if key in METHODS:
        raise ValueError(f"method {name!r} is a {METHODS[key].kind} row of the study "
                         f"({METHODS[key].source}), not a loss; choose one of {LOSS_NAMES}")
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSS_NAMES}")


# ----------------------------------------------------------------------------------------------
# nn.Module forms
# ----------------------------------------------------------------------------------------------
class AlignmentLoss(nn.Module):
    """A named loss of the family as an ``nn.Module``: ``forward(z1, z2) -> scalar``.

    Hyperparameters are validated at construction. ``forward(z1, z2, target=None,
    return_details=False)``: ``target`` overrides the module's target for this call;
    ``return_details=True`` returns the :class:`gca.losses.Alignment` (plan, potentials, terms).

    Shape: ``z1, z2``: ``(B, d)``; output: scalar.
    """

    def __init__(self, name: str, **hparams):
        super().__init__()
        spec = loss_spec(name)
        self.name = spec.name
        self.spec = spec
        unknown = set(hparams) - spec.accepted
        if unknown:
            raise TypeError(f"{spec.name!r} does not take {sorted(unknown)}; it accepts {sorted(spec.accepted)}")
        target = hparams.pop("target", None)
        if target is not None and not (callable(target) or isinstance(target, Tensor)):
            raise TypeError(f"target must be None, an (N, N) tensor or a callable, got {type(target)!r}")
        if isinstance(target, Tensor):
            target = custom_plan(target, hparams.get("layout", "joint"))
            self.register_buffer("target", target, persistent=False)
        else:
            self.target = target
        self.hparams = _validate_hparams(spec, dict(hparams))

    def forward(self, z1: Tensor, z2: Tensor, target: TargetLike = None, *,
                return_details: bool = False):
        tgt = self.target if target is None else target
        kwargs = dict(self.hparams)
        if tgt is not None:
            if not self.spec.custom_target:
                raise ValueError(f"{self.name!r} is defined for the positive-pair target only; "
                                 f"pass target=None")
            kwargs["target"] = tgt
        return self.spec.function(z1, z2, return_details=return_details, **kwargs)

    def extra_repr(self) -> str:
        return ", ".join([repr(self.name)] + [f"{k}={v!r}" for k, v in self.hparams.items()])


class SimCLRLoss(AlignmentLoss):
    """``nn.Module`` form of :func:`~gca.losses.simclr_loss` (``make_loss("simclr")``)."""

    def __init__(self, **hparams):
        super().__init__("simclr", **hparams)


class INCELoss(AlignmentLoss):
    """``nn.Module`` form of :func:`~gca.losses.ince_loss` (``make_loss("ince")``)."""

    def __init__(self, **hparams):
        super().__init__("ince", **hparams)


class RINCELoss(AlignmentLoss):
    """``nn.Module`` form of :func:`~gca.losses.rince_loss` (``make_loss("rince")``)."""

    def __init__(self, **hparams):
        super().__init__("rince", **hparams)


class RINCEAuthorsLoss(AlignmentLoss):
    """``nn.Module`` form of :func:`~gca.losses.rince_authors_loss` (``make_loss("rince-authors")``)."""

    def __init__(self, **hparams):
        super().__init__("rince-authors", **hparams)


class GCAINCELoss(AlignmentLoss):
    """``nn.Module`` form of :func:`~gca.losses.gca_ince_loss` (``make_loss("gca-ince")``)."""

    def __init__(self, **hparams):
        super().__init__("gca-ince", **hparams)


class GCARINCELoss(AlignmentLoss):
    """``nn.Module`` form of :func:`~gca.losses.gca_rince_loss` (``make_loss("gca-rince")``)."""

    def __init__(self, **hparams):
        super().__init__("gca-rince", **hparams)


class GCARINCEAuthorsLoss(AlignmentLoss):
    """``nn.Module`` form of :func:`~gca.losses.gca_rince_authors_loss` (``make_loss("gca-rince-authors")``)."""

    def __init__(self, **hparams):
        super().__init__("gca-rince-authors", **hparams)


class GCAUOTLoss(AlignmentLoss):
    """``nn.Module`` form of :func:`~gca.losses.gca_uot_loss` (``make_loss("gca-uot")``)."""

    def __init__(self, **hparams):
        super().__init__("gca-uot", **hparams)


class IOTLoss(AlignmentLoss):
    """``nn.Module`` form of :func:`~gca.losses.iot_loss` (``make_loss("iot")``)."""

    def __init__(self, **hparams):
        super().__init__("iot", **hparams)


class IOTUniLoss(AlignmentLoss):
    """``nn.Module`` form of :func:`~gca.losses.iot_uni_loss` (``make_loss("iot-uni")``)."""

    def __init__(self, **hparams):
        super().__init__("iot-uni", **hparams)


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------
_ROW = {"epsilon": DEFAULT_EPSILON, "layout": "joint", "gather": False}  # the single row projection
_ITERATED = {"epsilon": DEFAULT_EPSILON, "n_iter": DEFAULT_N_ITER, "layout": "joint", "grad": "unrolled",
             "gather": False}


def _table(*specs: LossSpec) -> Mapping[str, LossSpec]:
    table = MappingProxyType({s.name: s for s in specs})
    if tuple(table) != method_names("alignment"):
        raise RuntimeError(f"gca.losses.registry lists {tuple(table)} but gca.methods registers the alignment "
                           f"methods {method_names('alignment')}: add or remove the loss in both, in the same order")
    for s in specs:
        unchecked = sorted(set(s.defaults) - set(_CHECKS))
        if unchecked:
            raise RuntimeError(f"loss {s.name!r}: no check for the hyper-parameters {unchecked} in _CHECKS")
    return table


#: Every loss, in the order of :mod:`gca.methods`.
LOSSES: Mapping[str, LossSpec] = _table(
    LossSpec("iot", iot_loss, IOTLoss, _ITERATED, joint_only=True),
    LossSpec("iot-uni", iot_uni_loss, IOTUniLoss, {**_ITERATED, "lambda_p": DEFAULT_LAMBDA_P},
             custom_target=False, joint_only=True),
    LossSpec("simclr", simclr_loss, SimCLRLoss, _ROW, joint_only=True),
    LossSpec("ince", ince_loss, INCELoss, _ROW),
    LossSpec("rince", rince_loss, RINCELoss, {**_ROW, "lam": DEFAULT_LAM, "q": DEFAULT_Q}),
    LossSpec("rince-authors", rince_authors_loss, RINCEAuthorsLoss, {**_ROW, "q": DEFAULT_Q_AUTHORS}),
    LossSpec("gca-ince", gca_ince_loss, GCAINCELoss, _ITERATED),
    LossSpec("gca-rince", gca_rince_loss, GCARINCELoss, {**_ITERATED, "lam": DEFAULT_LAM, "q": DEFAULT_Q},
             implicit_ok=False),
    LossSpec("gca-rince-authors", gca_rince_authors_loss, GCARINCEAuthorsLoss, {**_ITERATED, "q": DEFAULT_Q_AUTHORS}),
    LossSpec("gca-uot", gca_uot_loss, GCAUOTLoss, {**_ITERATED, "rho": DEFAULT_RHO, "lam": DEFAULT_LAM,
                                                   "q": DEFAULT_Q, "r1": DEFAULT_R1, "r2": DEFAULT_R2}),
)

#: The loss names (= ``gca.methods.method_names("alignment")``).
LOSS_NAMES: tuple[str, ...] = tuple(LOSSES)


def make_loss(name: str, **hparams) -> AlignmentLoss:
    """Build a loss of the family by name, with the authors' CIFAR-10 defaults.

    Parameters
    ----------
    name : str
        One of :data:`~gca.losses.registry.LOSS_NAMES` (case and ``_``/``-`` insensitive).
    **hparams
        Keyword hyperparameters of the matching function (``epsilon``, ``n_iter``, ``lam``, ``q``,
        ``rho``, ``r1``, ``r2``, ``lambda_p``, ``layout``, ``target``, ``grad``, ``gather``; which
        ones a loss takes: ``LOSSES[name].accepted``).

    Returns
    -------
    AlignmentLoss
        ``loss(z1, z2)`` with ``z1, z2`` of shape ``(B, d)`` returns a scalar.

    Examples
    --------
    >>> import torch
    >>> loss = make_loss("gca-uot", epsilon=0.5)
    >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    >>> loss(z1, z2).shape
    torch.Size([])
    """
    return loss_spec(name).module(**hparams)
