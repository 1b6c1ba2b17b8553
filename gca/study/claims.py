"""The claims ledger: the exclusion rules and ``results/cpu/claims.json``.

Each claim is built from a claim of the pre-registration (:mod:`gca.study.preregistration`, whose
SHA-256 every claim records) and the result files of its two arms.

A **claim** of the ledger is one JSON object with exactly the keys :data:`CLAIM_KEYS`
(issue 12 item 6). ``effect = arm 0 − arm 1`` in points (``metric × scale``); the arms' result
files are listed in seed order so that pairs line up; ``n`` counts pairs (paired) or the smaller
arm (Welch). A run is **excluded** — never averaged in — when its projections collapsed
(:func:`is_collapsed`) or it failed to train (:func:`failed_to_train`, when the untrained floor is
known); with ``pairing: seed`` the whole pair goes. Excluded paths are listed in
``collapsed_excluded``. The statistics are those of :mod:`gca.study.stats`; ``p_holm`` is Holm's
adjustment within the claim's family (:func:`apply_holm`); ``mde`` is the exact minimum detectable
effect of the design as run (observed se and df, the pre-registered α and power).

:func:`verify_claims` recomputes every number of a ledger from the files it lists;
:func:`claims_table_markdown` renders it for the book.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union


from gca.methods import METHODS, get_method, method_label
from gca.study.preregistration import (
    ALIGNMENT_MAX,
    CLAIM_KINDS,
    CLAIM_SPEC_KEYS,
    FAMILIES,
    UNIFORMITY_MAX,
    load_preregistration,
)
from gca.study.stats import NOT_TESTED, VERDICTS, holm, mde_from_se, paired_comparison, verdict, welch_comparison

__all__ = [
    "CLAIM_KEYS", "metric_value", "is_collapsed", "failed_to_train", "build_claim", "compare_arms", "apply_holm",
    "write_claims",
    "read_claims", "verify_claims", "claims_table_markdown",
]

PathLike = Union[str, os.PathLike]

#: The keys of one ledger entry, in the order they are written (issue 12 item 6).
CLAIM_KEYS = (
    "id", "statement", "family", "kind", "metric", "scale", "arms", "pairing", "paper_effect",
    "effect", "ci_low", "ci_high", "p", "p_holm", "n", "mde", "verdict", "collapsed_excluded",
    "preregistration_sha256",
)

_SHA = re.compile(r"^[0-9a-f]{64}$")


# records and exclusion rules ------------------------------------------------------------

def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def metric_value(record: Mapping, metric: str, *, source: str = "record") -> float:
    """The number at the dotted path ``metric`` (e.g. ``"metrics.linear_accuracy"``) of a result record."""
    if not isinstance(record, Mapping):
        raise TypeError(f"{source}: a result record must be a mapping, got {type(record).__name__}")
    node: Any = record
    for part in metric.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ValueError(f"{source}: no {metric!r} in this result (missing {part!r}); is the metric path right?")
        node = node[part]
    if not _is_number(node):
        raise ValueError(f"{source}: {metric} = {node!r} is not a finite number")
    return float(node)


def is_collapsed(record: Mapping, *, uniformity_max: float = UNIFORMITY_MAX,
                 alignment_max: float = ALIGNMENT_MAX, source: str = "record") -> bool:
    """Whether a run's projections collapsed: ``metrics.uniformity > uniformity_max`` and
    ``metrics.alignment < alignment_max`` (both near 0: every projection near one point).
    The thresholds are the pre-registered rule (``UNIFORMITY_MAX``, ``ALIGNMENT_MAX``)."""
    u = metric_value(record, "metrics.uniformity", source=source)
    a = metric_value(record, "metrics.alignment", source=source)
    return u > uniformity_max and a < alignment_max


def failed_to_train(record: Mapping, untrained_accuracy: float, *,
                    metric: str = "metrics.linear_accuracy", source: str = "record") -> bool:
    """Whether a pretrained run is no better than the untrained encoder: its linear accuracy
    ``≤ untrained_accuracy`` (same units as the record, e.g. a fraction in [0, 1])."""
    if not _is_number(untrained_accuracy):
        raise ValueError(f"untrained_accuracy = {untrained_accuracy!r} must be a finite number "
                         "(the untrained encoder's accuracy, in the record's units)")
    return metric_value(record, metric, source=source) <= float(untrained_accuracy)


def _run_spec(record: Mapping) -> Mapping:
    """The ``spec`` of a result record (experiment, method, seed, ...), ``{}`` when absent."""
    spec = record.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _canonical(method: str) -> str:
    """The method whose runs stand for ``method`` (SimCLR → INCE, IOT → GCA-INCE; :mod:`gca.methods`)."""
    m = get_method(method)
    return m.same_as or m.name


# building a claim ------------------------------------------------------------

def _read_run(path: PathLike, root: Path) -> tuple[str, dict]:
    """(path relative to ``root`` in POSIX form, the result record) of one result file."""
    full = Path(path) if Path(path).is_absolute() else root / path
    try:
        rel = full.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise ValueError(f"{path}: a result file must lie inside the repository {root}") from None
    record = _read_json(full, rel, "result file", "result", hint="")
    if not isinstance(record, dict):
        raise ValueError(f"{rel}: a result file must hold a JSON object")
    return rel, record


def _read_json(path: Path, name: str, what: str, short: str, hint: str) -> Any:
    """The JSON of ``path``; a missing or unreadable file is a ValueError naming ``name``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{name}: {what} not found{hint}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name}: cannot read the {short} ({exc})") from None


def _seed(record: Mapping) -> Optional[int]:
    seed = _run_spec(record).get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _arm_runs(paths: Sequence[PathLike], root: Path, arm: Mapping, where: str) -> list[tuple[str, dict]]:
    if isinstance(paths, (str, bytes, os.PathLike)) or not isinstance(paths, Sequence):
        raise TypeError(f"{where}: the result paths of an arm must be a list of paths")
    runs = [_read_run(p, root) for p in paths]
    for rel, record in runs:
        method, experiment = _run_spec(record).get("method"), _run_spec(record).get("experiment")
        if "method" in arm and method in METHODS and _canonical(method) != _canonical(arm["method"]):
            raise ValueError(f"{rel}: a {method!r} run cannot stand for arm {arm['method']!r} of {where}")
        if "experiment" in arm and experiment is not None and experiment != arm["experiment"]:
            raise ValueError(f"{rel}: experiment {experiment!r} is not arm experiment {arm['experiment']!r} of {where}")
    seeds = [_seed(r) for _, r in runs]
    if runs and all(s is not None for s in seeds):
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{where}: arm {arm.get('label')!r} lists seed(s) twice: {sorted(seeds)}")
        runs.sort(key=lambda run: _seed(run[1]))
    return runs


def _floor(untrained_accuracy, record: Mapping) -> Optional[float]:
    """The untrained floor for ``record``: one number, or the floor of the record's seed from a
    mapping ``seed → accuracy`` (``None`` when that seed's floor is unknown)."""
    if isinstance(untrained_accuracy, Mapping):
        return untrained_accuracy.get(_seed(record))
    return untrained_accuracy


def _excluded(record: Mapping, rel: str, collapse: Mapping, untrained_accuracy) -> bool:
    method = _run_spec(record).get("method")
    if method in METHODS and METHODS[method].kind == "calibration":
        return False  # the floor and the ceiling are references, not candidates for exclusion
    if is_collapsed(record, source=rel, **collapse):
        return True
    floor = _floor(untrained_accuracy, record)
    return floor is not None and failed_to_train(record, floor, source=rel)


def build_claim(spec_from_prereg: Mapping, result_paths_by_arm: Sequence[Sequence[PathLike]],
                prereg_sha256: str, repo_root: PathLike, *,
                untrained_accuracy: Optional[Union[float, Mapping[int, float]]] = None) -> dict:
    """One ledger entry (:data:`CLAIM_KEYS`) from a resolved claim spec and the arms' result files.

    Parameters
    ----------
    spec_from_prereg : mapping
        One entry of ``load_preregistration(...)[0]["claims"]``.
    result_paths_by_arm : sequence of two sequences of paths
        ``[paths of arm 0, paths of arm 1]``, relative to ``repo_root`` (or absolute inside it).
        Sorted by ``spec.seed`` when every record has one; with ``pairing: seed`` both arms must
        hold the same seeds.
    prereg_sha256 : str
        The pre-registration's hash (second value of :func:`load_preregistration`).
    repo_root : path
        The repository root the paths are stored relative to.
    untrained_accuracy : float or mapping, optional
        The untrained encoder's ``metrics.linear_accuracy`` (record units), one number or a mapping
        ``seed → accuracy`` (the floor of each seed); when given, runs not above it are excluded as
        failed to train.

    Notes
    -----
    ``effect``, ``ci_low``, ``ci_high``, ``p``, ``mde`` in points; ``p_holm`` is ``None`` until
    :func:`apply_holm`. Fewer than two usable pairs (runs per arm): verdict ``"not tested"``.
    """
    return _build(spec_from_prereg, result_paths_by_arm, prereg_sha256, repo_root, untrained_accuracy, ())


def _build(spec: Mapping, paths_by_arm: Sequence[Sequence[PathLike]], sha: str, repo_root: PathLike,
           untrained_accuracy: Optional[float], extra_excluded: Sequence[str]) -> dict:
    """:func:`build_claim`; ``extra_excluded`` (recorded exclusions :func:`verify_claims` cannot
    recheck without the untrained floor) is private so that no caller can drop runs by hand."""
    if not isinstance(spec, Mapping):
        raise TypeError("spec_from_prereg must be a mapping (a claim of the pre-registration), "
                        f"got {type(spec).__name__}")
    missing = sorted(CLAIM_SPEC_KEYS - set(spec))
    if missing:
        raise ValueError(f"claim spec {spec.get('id', '?')!r} lacks {', '.join(missing)}; "
                         "pass a claim from load_preregistration")
    cid = spec["id"]
    if not (isinstance(sha, str) and _SHA.match(sha)):
        raise ValueError(f"claim {cid}: prereg_sha256 = {sha!r} must be 64 lower-case hex digits")
    root = Path(repo_root)
    if not root.is_dir():
        raise ValueError(f"repo_root = {str(repo_root)!r} is not a directory")
    if isinstance(paths_by_arm, (str, bytes)) or len(paths_by_arm) != 2 or len(spec["arms"]) != 2:
        raise ValueError(f"claim {cid}: give the result paths of exactly two arms (effect = arm 0 − arm 1)")
    scale = float(spec.get("scale", 100))
    collapse = spec.get("collapse", {"uniformity_max": UNIFORMITY_MAX, "alignment_max": ALIGNMENT_MAX})
    arms = [_arm_runs(p, root, a, f"claim {cid}") for p, a in zip(paths_by_arm, spec["arms"])]
    extra = set(extra_excluded)
    drop = [[rel in extra or _excluded(rec, rel, collapse, untrained_accuracy) for rel, rec in arm] for arm in arms]
    values = [[scale * metric_value(rec, spec["metric"], source=rel) for rel, rec in arm] for arm in arms]

    paired = spec["pairing"] == "seed"
    if paired:
        if len(arms[0]) != len(arms[1]):
            raise ValueError(f"claim {cid}: pairing by seed needs as many runs in both arms "
                             f"({len(arms[0])} vs {len(arms[1])})")
        seeds = [[_seed(r) for _, r in arm] for arm in arms]
        if seeds[0] != seeds[1] and None not in seeds[0] + seeds[1]:
            raise ValueError(f"claim {cid}: the arms hold different seeds {seeds[0]} vs {seeds[1]}; "
                             "pairing by seed needs the same seeds")
        pair_drop = [d0 or d1 for d0, d1 in zip(*drop)]
        drop = [pair_drop, pair_drop]
    kept = [[v for v, d in zip(vals, dr) if not d] for vals, dr in zip(values, drop)]
    excluded = [rel for arm, dr in zip(arms, drop) for (rel, _), d in zip(arm, dr) if d]

    claim = {
        "id": cid, "statement": spec["statement"], "family": spec["family"], "kind": spec["kind"],
        "metric": spec["metric"], "scale": spec.get("scale", 100),
        "arms": [{"label": a.get("label") or method_label(a["method"]), "results": [rel for rel, _ in arm]}
                 for a, arm in zip(spec["arms"], arms)],
        "pairing": spec["pairing"], "paper_effect": spec["paper_effect"],
        "effect": None, "ci_low": None, "ci_high": None, "p": None, "p_holm": None, "n": 0, "mde": None,
        "verdict": NOT_TESTED, "collapsed_excluded": excluded, "preregistration_sha256": sha,
    }
    if not kept[0] or not kept[1]:
        return claim
    claim.update(compare_arms(kept[0], kept[1], paired=paired, paper_effect=spec["paper_effect"],
                              margin=spec.get("equivalence_margin"), alpha=spec.get("alpha", 0.05),
                              power=spec.get("power", 0.8)))
    return claim


def compare_arms(arm0: Sequence[float], arm1: Sequence[float], *, paired: bool, paper_effect: Optional[float],
                 margin: Optional[float] = None, alpha: float = 0.05, power: float = 0.8) -> dict:
    """The pre-registered test and verdict of two arms' values (points, pairs aligned when
    ``paired``): ``effect`` and ``n``, and with at least two pairs (runs per arm) ``ci_low``,
    ``ci_high``, ``p``, ``mde`` and ``verdict`` (:func:`gca.study.stats.verdict`)."""
    cmp = (paired_comparison if paired else welch_comparison)(arm0, arm1, alpha=alpha)
    out = {"effect": cmp.effect, "n": cmp.n}
    if cmp.ci_low is not None:  # n >= 2
        out.update(ci_low=cmp.ci_low, ci_high=cmp.ci_high, p=cmp.p,
                   mde=mde_from_se(cmp.se, cmp.df, alpha=alpha, power=power),
                   verdict=verdict(cmp.ci_low, cmp.ci_high, paper_effect, margin=margin))
    return out


def apply_holm(claims: Sequence[Mapping]) -> list[dict]:
    """Copies of ``claims`` with ``p_holm``: Holm's adjustment within each family.

    ``m`` is the number of claims of the family in the ledger (the pre-registered family); a claim
    without a test (``p`` is ``None``, ``n < 2``) counts as ``p = 1`` and keeps ``p_holm = None``.
    """
    out = [dict(c) for c in claims]
    for family in FAMILIES:
        members = [c for c in out if c.get("family") == family]
        if not members:
            continue
        adjusted = holm([1.0 if c.get("p") is None else c["p"] for c in members])
        for c, ph in zip(members, adjusted):
            c["p_holm"] = None if c.get("p") is None else ph
    return out


# the ledger file ------------------------------------------------------------

def _check_claim(c: Any, i: int) -> None:
    if not isinstance(c, Mapping):
        raise ValueError(f"claims[{i}] must be an object, got {type(c).__name__}")
    if set(c) != set(CLAIM_KEYS):
        extra, missing = sorted(set(c) - set(CLAIM_KEYS)), sorted(set(CLAIM_KEYS) - set(c))
        raise ValueError(f"claims[{i}] ({c.get('id', '?')}): keys differ from the schema "
                         f"(missing {missing}, unexpected {extra})")
    if c["family"] not in FAMILIES or c["kind"] not in CLAIM_KINDS or c["verdict"] not in VERDICTS:
        raise ValueError(f"claims[{i}] ({c['id']}): family/kind/verdict = "
                         f"{c['family']!r}/{c['kind']!r}/{c['verdict']!r} not in {FAMILIES}/{CLAIM_KINDS}/{VERDICTS}")


def write_claims(claims: Sequence[Mapping], path: PathLike) -> Path:
    """Write the ledger as a JSON list, atomically (a temporary file beside it, then ``os.replace``)."""
    if isinstance(claims, Mapping) or not isinstance(claims, Sequence):
        raise TypeError("claims must be a list of claim objects")
    for i, c in enumerate(claims):
        _check_claim(c, i)
    ids = [c["id"] for c in claims]
    dup = sorted({x for x in ids if ids.count(x) > 1})
    if dup:
        raise ValueError(f"claim id(s) {dup} appear twice")
    ordered = [{k: c[k] for k in CLAIM_KEYS} for c in claims]
    try:
        text = json.dumps(ordered, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError as exc:
        raise ValueError(f"claims hold a non-finite number ({exc}); use null for a missing value") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_claims(path: PathLike) -> list[dict]:
    """Read a ledger written by :func:`write_claims` and check every entry's keys."""
    path = Path(path)
    data = _read_json(path, str(path), "claims ledger", "claims ledger",
                      hint=" (build it with python -m gca.experiments claims)")
    if not isinstance(data, list):
        raise ValueError(f"{path}: the ledger must be a JSON list of claims")
    for i, c in enumerate(data):
        _check_claim(c, i)
    return data


def _same(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def verify_claims(path: PathLike, repo_root: PathLike, *, preregistration: Optional[PathLike] = None,
                  untrained_accuracy: Optional[Union[float, Mapping[int, float]]] = None) -> list[str]:
    """Recompute every claim of the ledger at ``path`` from the result files it lists; return the
    mismatches (``"<id>: <field>: recorded X, recomputed Y"``), an empty list when all agree.
    Checked: effect, ci_low, ci_high, p, p_holm, n, mde, verdict, the arms' seed order and
    ``collapsed_excluded``. The pre-registration (default: ``preregistration.yaml`` beside the
    ledger, when present) supplies α, power and equivalence margins; its hash, ids and claim fields
    are compared too. Without one: α = 0.05, power = 0.8, no margin. Collapse is always rechecked;
    a recorded exclusion of a run that did not collapse is rechecked against ``untrained_accuracy``
    when given, else accepted as "failed to train" (the book passes the floor)."""
    claims = read_claims(path)
    root = Path(repo_root)
    prereg_path = Path(preregistration) if preregistration is not None else Path(path).parent / "preregistration.yaml"
    specs, sha = {}, None
    if preregistration is not None or prereg_path.is_file():
        prereg, sha = load_preregistration(prereg_path)
        specs = {c["id"]: c for c in prereg["claims"]}
    problems: list[str] = []
    rebuilt: list[dict] = []
    for c in claims:
        cid = c["id"]
        spec = specs.get(cid)
        if sha is not None:
            if spec is None:
                problems.append(f"{cid}: not a claim of the pre-registration {prereg_path}")
            if c["preregistration_sha256"] != sha:
                problems.append(f"{cid}: preregistration_sha256: recorded {c['preregistration_sha256']}, file {sha}")
        if spec is None:  # α = 0.05, power = 0.8, no margin, default collapse rule
            spec = dict(c, arms=[{"label": a["label"]} for a in c["arms"]])
        else:
            for key in ("statement", "family", "kind", "metric", "scale", "pairing", "paper_effect"):
                if not _same(c[key], spec[key]):
                    problems.append(f"{cid}: {key}: recorded {c[key]!r}, pre-registered {spec[key]!r}")
        paths = [a["results"] for a in c["arms"]]
        # Without the floor, recorded exclusions are accepted as "failed to train"; a collapsed run
        # missing from them still shows as a collapsed_excluded mismatch.
        extra = c["collapsed_excluded"] if untrained_accuracy is None else ()
        try:
            new = _build(spec, paths, c["preregistration_sha256"], root, untrained_accuracy, extra)
        except (ValueError, TypeError) as exc:
            problems.append(f"{cid}: cannot recompute: {exc}")
            rebuilt.append(dict(c))
            continue
        for key in ("effect", "ci_low", "ci_high", "p", "n", "mde", "verdict", "collapsed_excluded"):
            if not _same(c[key], new[key]):
                problems.append(f"{cid}: {key}: recorded {c[key]!r}, recomputed {new[key]!r}")
        for j, (a, b) in enumerate(zip(c["arms"], new["arms"])):
            if a["results"] != b["results"]:
                problems.append(f"{cid}: arms[{j}].results are not in seed order: recorded {a['results']}, "
                                f"expected {b['results']}")
        rebuilt.append(new)
    for cid in sorted(set(specs) - {c["id"] for c in claims}):
        problems.append(f"{cid}: pre-registered but missing from the ledger")
    for c, new in zip(claims, apply_holm(rebuilt)):
        if not _same(c["p_holm"], new["p_holm"]):
            problems.append(f"{c['id']}: p_holm: recorded {c['p_holm']!r}, recomputed {new['p_holm']!r}")
    return problems


# the book's table ------------------------------------------------------------

def _signed(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:+.2f}".replace("-", "−")


def _pval(p: Optional[float]) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def claims_table_markdown(claims: Sequence[Mapping]) -> str:
    """A Markdown table of the ledger: claim, kind, family, effect, 95 % CI, n, p (Holm), MDE, verdict.

    Points with two decimals and a sign; ``p (Holm)`` shows the raw p with the Holm-adjusted one in
    parentheses; ``—`` marks a value that does not exist (no test).
    """
    for i, c in enumerate(claims):
        _check_claim(c, i)
    lines = ["| claim | kind | family | effect | 95 % CI | n | p (Holm) | MDE | verdict |",
             "|---|---|---|---:|---|---:|---|---:|---|"]
    for c in claims:
        claim = f"{c['statement']} (`{c['id']}`)".replace("|", "\\|")
        ci = "—" if c["ci_low"] is None else f"[{_signed(c['ci_low'])}, {_signed(c['ci_high'])}]"
        p = "—" if c["p"] is None else f"{_pval(c['p'])} ({_pval(c['p_holm'])})"
        mde = "—" if c["mde"] is None else f"{c['mde']:.2f}"
        lines.append(f"| {claim} | {c['kind']} | {c['family']} | {_signed(c['effect'])} | {ci} | {c['n']} "
                     f"| {p} | {mde} | {c['verdict']} |")
    return "\n".join(lines) + "\n"
