"""The pre-registration of a study: its vocabulary, and loading and validating the YAML file.

A **pre-registration** (YAML, committed before any result of the study) states each claim (id,
statement, family, kind, metric, two arms, the paper's effect in points, the pairing), the test,
α, power, the verdict rule, the collapse rule and the sample sizes with the pilot sd they came
from (and any sizes re-estimated later from an interim variance), plus a ``history`` of versions
with their reasons. :func:`load_preregistration` validates it and returns it with the SHA-256 of
the file's bytes, which every claim of the ledger (:mod:`gca.study.claims`) records.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import yaml

from gca.methods import get_method, method_label
from gca.study.stats import minimum_detectable_effect, seeds_needed

__all__ = [
    "FAMILIES", "CLAIM_KINDS", "CLAIM_SPEC_KEYS", "UNIFORMITY_MAX", "ALIGNMENT_MAX",
    "load_preregistration", "validate_preregistration",
]

PathLike = Union[str, os.PathLike]

#: The families of claims; Holm's adjustment runs within each.
FAMILIES = ("primary", "secondary", "exploratory")
#: What a claim is: the paper's claim, a theorem of the paper, or a check of ours.
CLAIM_KINDS = ("paper-claim", "paper-theorem", "our-check")
#: The keys every claim of a pre-registration states.
CLAIM_SPEC_KEYS = frozenset({"id", "statement", "family", "kind", "metric", "arms", "paper_effect", "pairing"})

# Collapse (Wang & Isola 2020, L2-normalised projections, gca.eval): uniformity log E exp(−2‖z − z'‖²)
# ∈ [−4, 0] and alignment E‖z₁ − z₂‖² ∈ [0, 4] are both 0 when every projection is one point; > −0.5
# means the projections crowd a cap of angular radius ≈ 0.5 rad. On results/cpu: other runs −3.0 … −0.69
# (alignment 0.18 … 1.55), the collapsed domain-prior and BYOL runs −0.33 … −0.02 (0.004 … 0.16).
#: A run collapsed when ``uniformity > UNIFORMITY_MAX`` and ``alignment < ALIGNMENT_MAX`` (the default rule).
UNIFORMITY_MAX = -0.5
ALIGNMENT_MAX = 0.2

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_METRIC = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
_CLAIM_SPEC_OPTIONAL = {"scale", "equivalence_margin", "note", "source"}
_TOP_KEYS = ("version", "alpha", "power", "test", "verdict_rule", "sample_sizes", "history")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def load_preregistration(path: PathLike) -> tuple[dict, str]:
    """Read and validate a pre-registration YAML; returns ``(prereg, sha256 of the file's bytes)``,
    ``prereg`` as :func:`validate_preregistration` returns it (resolved specs in ``prereg["claims"]``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the pre-registration ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    return validate_preregistration(data, source=str(path)), hashlib.sha256(raw).hexdigest()


def _text(x: Any) -> bool:
    return isinstance(x, str) and x.strip() != ""


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def validate_preregistration(data: Any, *, source: str = "pre-registration") -> dict:
    """Check a parsed pre-registration and return a copy with resolved claim specs.

    Required: ``version`` (int ≥ 1), ``alpha``, ``power``, ``test`` (text), ``verdict_rule``
    (text, or a mapping with ``text`` and optionally ``equivalence_margin`` in points),
    ``sample_sizes`` (per family used: ``n`` seeds per arm, ``pilot_sd`` the sd of the paired
    differences in points, ``pilot`` where it came from; optional ``mde_target`` in points, which
    ``n`` must reach, and ``paired``, default true), ``claims`` or ``hypotheses`` (each: ``id``,
    ``statement``, ``family``, ``kind``, ``metric``, ``arms`` = two ``{experiment, method[, label]}``,
    ``paper_effect`` in points or null, ``pairing`` = ``seed`` or null; optional ``scale`` (100),
    ``equivalence_margin``, ``note``, ``source``) and ``history`` (``{version, reason}``, increasing,
    ending at ``version``). Optional ``collapse_rule``: ``{uniformity_max, alignment_max}``.
    A no-difference claim (``paper_effect`` 0 or null) needs an equivalence margin.
    """
    _need(isinstance(data, Mapping), f"{source}: the top level must be a mapping, got {type(data).__name__}")
    out = copy.deepcopy(dict(data))
    missing = [k for k in _TOP_KEYS if k not in out]
    if "claims" not in out and "hypotheses" not in out:
        missing.append("claims (or hypotheses)")
    _need(not missing, f"{source}: missing required key(s): {', '.join(missing)}")
    _need("claims" not in out or "hypotheses" not in out, f"{source}: give either claims or hypotheses, not both")
    version = out["version"]
    _need(isinstance(version, int) and not isinstance(version, bool) and version >= 1,
          f"{source}: version = {version!r} must be an integer ≥ 1")
    alpha, power = out["alpha"], out["power"]
    _need(_is_number(alpha) and 0 < alpha < 1, f"{source}: alpha = {alpha!r} must be in (0, 1), e.g. 0.05")
    _need(_is_number(power) and alpha < power < 1, f"{source}: power = {power!r} must be in (alpha, 1), e.g. 0.8")
    _need(_text(out["test"]), f"{source}: test must be a non-empty text")

    rule = out["verdict_rule"]
    default_margin = None
    if isinstance(rule, Mapping):
        _need(_text(rule.get("text")), f"{source}: verdict_rule.text must be a non-empty text")
        default_margin = rule.get("equivalence_margin")
        _need(default_margin is None or (_is_number(default_margin) and default_margin > 0),
              f"{source}: verdict_rule.equivalence_margin = {default_margin!r} must be a number > 0 (points)")
    else:
        _need(_text(rule), f"{source}: verdict_rule must be a text or a mapping with text")

    collapse = out.get("collapse_rule", {"uniformity_max": UNIFORMITY_MAX, "alignment_max": ALIGNMENT_MAX})
    _need(isinstance(collapse, Mapping) and set(collapse) == {"uniformity_max", "alignment_max"}
          and all(_is_number(v) for v in collapse.values()),
          f"{source}: collapse_rule = {collapse!r} must be {{uniformity_max: number, alignment_max: number}}")
    collapse = {k: float(v) for k, v in collapse.items()}

    history = out["history"]
    _need(isinstance(history, list) and history, f"{source}: history must be a non-empty list of {{version, reason}}")
    last = 0
    for i, h in enumerate(history):
        _need(isinstance(h, Mapping) and isinstance(h.get("version"), int) and not isinstance(h.get("version"), bool)
              and _text(h.get("reason")),
              f"{source}: history[{i}] = {h!r} needs an integer version and a non-empty reason")
        _need(h["version"] > last, f"{source}: history[{i}].version = {h['version']} must increase")
        last = h["version"]
    _need(last == version, f"{source}: the last history entry is version {last} but version = {version}; "
                           "add a history entry with the reason for this version")

    claims = out.pop("hypotheses", None) if "claims" not in out else out["claims"]
    _need(isinstance(claims, list) and claims, f"{source}: claims must be a non-empty list")
    sizes = out["sample_sizes"]
    _need(isinstance(sizes, Mapping), f"{source}: sample_sizes must be a mapping family → {{n, pilot_sd, pilot}}")
    resolved, seen = [], set()
    for i, c in enumerate(claims):
        spec = _validate_claim_spec(c, f"{source}: claims[{i}]", default_margin)
        _need(spec["id"] not in seen, f"{source}: claim id {spec['id']!r} appears twice")
        seen.add(spec["id"])
        spec.update(alpha=float(alpha), power=float(power), collapse=dict(collapse))
        resolved.append(spec)
    out["claims"] = resolved

    for family in sorted({c["family"] for c in resolved}):
        _need(family in sizes, f"{source}: sample_sizes has no entry for family {family!r}")
    for family, s in sizes.items():
        where = f"{source}: sample_sizes.{family}"
        _need(family in FAMILIES, f"{where}: unknown family; choose from {', '.join(FAMILIES)}")
        _need(isinstance(s, Mapping), f"{where} must be a mapping with n, pilot_sd, pilot")
        n, sd = s.get("n"), s.get("pilot_sd")
        _need(isinstance(n, int) and not isinstance(n, bool) and n >= 2, f"{where}.n = {n!r} must be an integer ≥ 2")
        _need(_is_number(sd) and sd >= 0, f"{where}.pilot_sd = {sd!r} must be a number ≥ 0 (points)")
        _need(_text(s.get("pilot")), f"{where}.pilot must say which pilot the sd came from")
        paired = s.get("paired", True)
        _need(isinstance(paired, bool), f"{where}.paired = {paired!r} must be true or false")
        target = s.get("mde_target")
        if target is not None:
            _need(_is_number(target) and target > 0, f"{where}.mde_target = {target!r} must be a number > 0 (points)")
            mde = minimum_detectable_effect(sd, n, alpha=alpha, power=power, paired=paired)
            if mde > target:
                need = seeds_needed(sd, target, alpha=alpha, power=power, paired=paired)
                raise ValueError(f"{where}: n = {n} gives MDE {mde:.3f} > mde_target {target} with pilot_sd {sd}; "
                                 f"{need} seeds reach it")
        for j, r in enumerate(s.get("re_estimated", ())):
            _validate_re_estimate(r, f"{where}.re_estimated[{j}]", family, n, target, resolved, alpha, power)
        planned = {r["claim"]: r["n"] for r in s.get("re_estimated", ())}
        for j, r in enumerate(s.get("replacements", ())):
            _validate_replacement(r, f"{where}.replacements[{j}]", family, planned.get(r.get("claim"), n), resolved)
    return out


def _check_size_entry(r: Any, where: str, keys: tuple, family: str, claims: list) -> None:
    """An entry of ``sample_sizes.<family>`` lists: a mapping with ``keys``, naming a claim of ``family``."""
    _need(isinstance(r, Mapping), f"{where} must be a mapping with {', '.join(keys)}")
    missing = sorted(set(keys) - set(r))
    _need(not missing, f"{where}: missing key(s) {', '.join(missing)}")
    ids = {c["id"]: c for c in claims}
    _need(r["claim"] in ids and ids[r["claim"]]["family"] == family,
          f"{where}.claim = {r['claim']!r} is not a claim of family {family!r}")


def _validate_re_estimate(r: Any, where: str, family: str, n_family: int, target: Optional[float],
                          claims: list, alpha: float, power: float) -> None:
    """A sample size re-estimated from an interim sd (internal pilot, Wittes & Brittain 1990):
    ``{claim, interim_n, interim_sd, target, n, reason}`` with ``n`` the fewest seeds whose MDE at
    the interim sd is ≤ ``target`` (itself ≤ the family's ``mde_target``), never fewer than the family's."""
    _check_size_entry(r, where, ("claim", "interim_n", "interim_sd", "target", "n", "reason"), family, claims)
    n, sd, goal = r["n"], r["interim_sd"], r["target"]
    _need(isinstance(n, int) and not isinstance(n, bool) and n >= n_family,
          f"{where}.n = {n!r} must be an integer ≥ the family's n ({n_family})")
    _need(_is_number(sd) and sd > 0, f"{where}.interim_sd = {sd!r} must be a number > 0 (points)")
    _need(_is_number(goal) and goal > 0 and (target is None or goal <= target),
          f"{where}.target = {goal!r} must be a number > 0 and ≤ the family's mde_target ({target})")
    _need(_text(r["reason"]), f"{where}.reason must say why the size was re-estimated")
    need = max(n_family, seeds_needed(sd, goal, alpha=alpha, power=power, paired=True))
    _need(n == need, f"{where}.n = {n} but {need} seeds are the fewest whose MDE at interim_sd {sd} is ≤ {goal}")


def _validate_replacement(r: Any, where: str, family: str, planned_n: int, claims: list) -> None:
    """Excluded pairs replaced by further seeds: ``{claim, planned_n, excluded_pairs, n, reason}`` with
    ``n = planned_n + excluded_pairs`` (one further seed per pair the exclusion rules removed; the
    replacements themselves are not replaced) and ``planned_n`` the claim's size before."""
    _check_size_entry(r, where, ("claim", "planned_n", "excluded_pairs", "n", "reason"), family, claims)
    k = r["excluded_pairs"]
    _need(isinstance(k, int) and not isinstance(k, bool) and k >= 1, f"{where}.excluded_pairs = {k!r} must be an integer ≥ 1")
    _need(r["planned_n"] == planned_n, f"{where}.planned_n = {r['planned_n']!r} but the claim's size is {planned_n}")
    _need(r["n"] == planned_n + k, f"{where}.n = {r['n']!r} must be planned_n + excluded_pairs = {planned_n + k}")
    _need(_text(r["reason"]), f"{where}.reason must say which pairs were excluded and why")


def _validate_claim_spec(c: Any, where: str, default_margin: Optional[float]) -> dict:
    _need(isinstance(c, Mapping), f"{where} must be a mapping")
    missing = sorted(CLAIM_SPEC_KEYS - set(c))
    _need(not missing, f"{where}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(c) - CLAIM_SPEC_KEYS - _CLAIM_SPEC_OPTIONAL)
    _need(not unknown, f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                       f"{', '.join(sorted(CLAIM_SPEC_KEYS | _CLAIM_SPEC_OPTIONAL))}")
    spec = copy.deepcopy(dict(c))
    cid = spec["id"]
    _need(isinstance(cid, str) and _ID.match(cid) is not None,
          f"{where}: id = {cid!r} must be lower-case letters, digits, '.', '_' or '-'")
    where = f"{where} ({cid})"
    _need(_text(spec["statement"]), f"{where}: statement must be a non-empty text")
    _need(spec["family"] in FAMILIES, f"{where}: family = {spec['family']!r}; choose from {', '.join(FAMILIES)}")
    _need(spec["kind"] in CLAIM_KINDS, f"{where}: kind = {spec['kind']!r}; choose from {', '.join(CLAIM_KINDS)}")
    _need(isinstance(spec["metric"], str) and _METRIC.match(spec["metric"]) is not None,
          f"{where}: metric = {spec['metric']!r} must be a dotted path such as metrics.linear_accuracy")
    _need(spec["pairing"] in ("seed", None), f"{where}: pairing = {spec['pairing']!r} must be seed or null")
    pe = spec["paper_effect"]
    _need(pe is None or _is_number(pe), f"{where}: paper_effect = {pe!r} must be a number (points) or null")
    scale = spec.setdefault("scale", 100)
    _need(_is_number(scale) and scale > 0, f"{where}: scale = {scale!r} must be a number > 0")
    margin = spec.get("equivalence_margin", default_margin if not pe else None)
    _need(margin is None or (_is_number(margin) and margin > 0),
          f"{where}: equivalence_margin = {margin!r} must be a number > 0 (points)")
    _need(bool(pe) or margin is not None,
          f"{where}: paper_effect = {pe!r} is a no-difference claim; give equivalence_margin "
          "(here or in verdict_rule) in points")
    spec["equivalence_margin"] = margin
    arms = spec["arms"]
    _need(isinstance(arms, list) and len(arms) == 2,
          f"{where}: arms must list exactly two arms (effect = arm 0 − arm 1)")
    for j, arm in enumerate(arms):
        _need(isinstance(arm, Mapping) and _text(arm.get("experiment")) and _text(arm.get("method")),
              f"{where}: arms[{j}] = {arm!r} needs experiment and method")
        try:
            get_method(arm["method"])
        except ValueError as exc:
            raise ValueError(f"{where}: arms[{j}]: {exc}") from None
        arm.setdefault("label", method_label(arm["method"]))
    return spec
