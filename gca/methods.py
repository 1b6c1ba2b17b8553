"""The one registry of method names.

Every list of methods in the code base (configuration, command line, losses, study, book) is read
from :data:`METHODS`; nothing else spells the names out. A method is

* ``"alignment"``: a loss of the alignment family (:mod:`gca.losses`, spec §3), trained on two views;
* ``"byol"``: BYOL (Grill et al., 2020), the paper's non-contrastive baseline;
* ``"calibration"``: a reference row of the study, not a method of the paper — the untrained encoder
  (the floor) and the same backbone trained with labels for the same number of steps (the ceiling).

``same_as`` marks methods that are identical by the spec's definitions (SimCLR ≡ INCE, spec §3.1;
IOT ≡ GCA-INCE, spec §3.4): a study runs them once and reports the run under both labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Optional

__all__ = ["Method", "METHODS", "METHOD_NAMES", "KINDS", "method_names", "get_method", "method_label"]

#: The kinds of method (see the module docstring).
KINDS = ("alignment", "byol", "calibration")


@dataclass(frozen=True)
class Method:
    """One entry of the registry.

    Attributes:
        name: the name used in configurations, on the command line and in result files.
        label: the name printed in tables and figures.
        kind: one of :data:`KINDS`.
        source: where the method is defined (paper section or reference).
        same_as: name of a method this one equals by definition, else ``None``.
    """

    name: str
    label: str
    kind: str
    source: str
    same_as: Optional[str] = None


def _registry(*methods: Method) -> Mapping[str, Method]:
    table = {m.name: m for m in methods}
    for m in methods:
        if m.kind not in KINDS:
            raise ValueError(f"method {m.name!r}: kind {m.kind!r} is not one of {KINDS}")
        if m.same_as is not None and m.same_as not in table:
            raise ValueError(f"method {m.name!r}: same_as={m.same_as!r} is not a registered method")
    return MappingProxyType(table)


#: All methods, in the row order of the paper's tables (then the study's calibration rows).
METHODS: Mapping[str, Method] = _registry(
    Method("byol", "BYOL", "byol", "Grill et al. (2020); spec §4"),
    Method("iot", "IOT", "alignment", "spec §3.4 (IOT ≡ GCA-INCE)", same_as="gca-ince"),
    Method("iot-uni", "IOT-uni", "alignment", "spec §3.4"),
    Method("simclr", "SimCLR", "alignment", "Chen et al. (2020); spec §3.1 (SimCLR ≡ INCE)", same_as="ince"),
    Method("ince", "INCE", "alignment", "spec §3.1, eq. (1)"),
    Method("rince", "RINCE", "alignment", "Chuang et al. (2022); spec §3.2 (λ = 0.01, q = 0.6)"),
    Method("rince-authors", "RINCE (authors' code)", "alignment",
           "authors' CIFAR code: (cross-entropy)^q / q, q = 0.98, λ without effect (official-code note 5)"),
    Method("gca-ince", "GCA-INCE", "alignment", "spec §3.3"),
    Method("gca-rince", "GCA-RINCE", "alignment", "spec §3.3"),
    Method("gca-rince-authors", "GCA-RINCE (authors' code)", "alignment",
           "authors' CIFAR code: (cross-entropy to the GCA plan)^q / q, q = 0.98 (official-code note 5)"),
    Method("gca-uot", "GCA-UOT", "alignment", "spec §3.3, unbalanced"),
    Method("untrained", "untrained encoder", "calibration", "the floor: the initial weights, not trained"),
    Method("supervised", "supervised", "calibration",
           "the ceiling: the same backbone trained with labels (cross-entropy) for the same steps"),
)

#: Every method name, in registry order.
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


def method_names(*kinds: str) -> tuple[str, ...]:
    """Names of the methods of the given kinds (all kinds when none is given), in registry order."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown method kind {kind!r}; choose from {', '.join(KINDS)}")
    return tuple(m.name for m in METHODS.values() if not kinds or m.kind in kinds)


def get_method(name: str) -> Method:
    """The registry entry of ``name``; ``ValueError`` naming the choices for an unknown name."""
    if not isinstance(name, str):
        raise TypeError(f"method name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHOD_NAMES)}")
    return METHODS[key]


def method_label(name: str) -> str:
    """The display label of ``name`` (e.g. ``"gca-uot"`` → ``"GCA-UOT"``)."""
    return get_method(name).label
