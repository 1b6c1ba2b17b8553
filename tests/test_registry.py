"""One list of method names: configuration, command line and the loss registry use gca.methods' names.

(The study's and the book's uses are checked here too as they are moved onto the registry.)
"""

from __future__ import annotations

import argparse
import inspect

import pytest

from gca import methods
from gca.cli import build_parser
from gca.config import METHODS as CONFIG_METHODS
from gca.config import resolve_config
from gca.losses import registry


def _method_choices(parser: argparse.ArgumentParser) -> dict[str, tuple]:
    """``--method`` choices of every sub-command that has the option."""
    out = {}
    for action in parser._actions:  # argparse keeps sub-parsers only there
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                for opt in sub._actions:
                    if "--method" in opt.option_strings:
                        out[command] = tuple(opt.choices)
    return out


def test_configuration_accepts_exactly_the_registry():
    assert tuple(CONFIG_METHODS) == methods.method_names("alignment", "byol", "calibration") == methods.METHOD_NAMES
    for name in methods.METHOD_NAMES:  # every registered name validates (its loss, if any, builds)
        assert resolve_config("smoke", method=name).loss.method == name
    with pytest.raises(ValueError, match="loss.method"):
        resolve_config("smoke", method="infonce")


def test_command_line_offers_exactly_the_registry():
    choices = _method_choices(build_parser())
    assert set(choices) == {"pretrain", "config"}
    for command, names in choices.items():
        assert names == methods.METHOD_NAMES, command


def test_loss_registry_is_the_alignment_methods():
    assert registry.LOSS_NAMES == tuple(registry.LOSSES) == methods.method_names("alignment")
    for name, spec in registry.LOSSES.items():
        assert spec.name == name and methods.get_method(name).kind == "alignment"
        assert registry.make_loss(name).spec is spec and isinstance(registry.make_loss(name), spec.module)
    for name in methods.method_names("byol", "calibration"):
        with pytest.raises(ValueError, match="gca.train|not a loss"):
            registry.make_loss(name)


def test_declared_defaults_are_the_functions_defaults():
    """The registry declares each loss's hyper-parameters and defaults explicitly; they must be the ones
    of the function's signature (introspected here, in the test, never at run time)."""
    for name, spec in registry.LOSSES.items():
        params = inspect.signature(spec.function).parameters
        keywords = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k != "return_details"}
        expected = {k: v for k, v in keywords.items() if k != "target"}
        assert dict(spec.defaults) == expected, name
        assert spec.custom_target == ("target" in keywords), name
        assert spec.accepted == set(keywords), name
