"""The claims ledger of a study: every pre-registered claim computed from the cached results.

:func:`build_ledger` reads the pre-registration (``results/cpu/preregistration.yaml``: the design
every profile shares), finds for each claim's two arms the current result files of the study's
plan (SimCLR and IOT stand for INCE and GCA-INCE, :mod:`gca.methods`), pairs them by seed, passes
each seed's untrained-encoder accuracy as its floor (a run not above it failed to train and is
excluded with its pair; the floor is measured on the arms' own data), and computes the claim with :func:`gca.study.claims.build_claim`; Holm's
adjustment follows within each family. :func:`write_ledger` writes ``results/<profile>/claims.json``
(atomically) and a copy of the pre-registration beside it, so that
:func:`gca.study.claims.verify_claims` recomputes every number from the files the ledger lists.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from gca.methods import get_method
from gca.study.claims import apply_holm, build_claim, metric_value, write_claims
from gca.study.preregistration import load_preregistration
from gca.study.paths import REPO_ROOT, results_root
from gca.study.plan import study_plan, study_profile
from gca.study.run import get_results

__all__ = ["PREREGISTRATION", "build_ledger", "write_ledger", "untrained_floors"]

#: The pre-registration every profile's ledger follows (the CPU study's design).
PREREGISTRATION = REPO_ROOT / "results" / "cpu" / "preregistration.yaml"


def _arm_key(arm: dict) -> tuple[str, str, str]:
    m = get_method(arm["method"])
    return arm["experiment"], m.same_as or m.name, arm.get("tag", "")


def _dataset(record) -> str:
    return record["config"]["data"]["dataset"]


def untrained_floors(records) -> dict[str, dict[int, float]]:
    """``dataset → {seed → linear accuracy}`` of the untrained encoder among ``records``: the floor
    a pretrained run of that seed on that data must beat (CIFAR-10 for the standard and noisy
    panels, the domain-prior data for the domain panel)."""
    floors: dict[str, dict[int, float]] = {}
    for r in records:
        if r["spec"]["method"] == "untrained":
            floors.setdefault(_dataset(r), {})[r["spec"]["seed"]] = metric_value(r, "metrics.linear_accuracy")
    return floors


def build_ledger(profile: str, *, preregistration: Optional[os.PathLike] = None,
                 root: Optional[os.PathLike] = None) -> tuple[list[dict], dict[str, Any]]:
    """The ledger of study ``profile`` from its current cached results (nothing is computed).

    Returns ``(claims, info)``: the claims (schema of :data:`gca.study.claims.CLAIM_KEYS`) with
    ``p_holm``, and ``info`` with the pre-registration's path and hash and the number of the plan's
    runs that have no current result (a claim then uses the seeds both arms have so far).
    """
    prereg_path = Path(preregistration) if preregistration is not None else PREREGISTRATION
    prereg, sha = load_preregistration(prereg_path)
    results = get_results(study_plan(profile), profile, mode="cached", root=root)
    by_arm: dict[tuple[str, str, str], dict[int, Path]] = {}
    data_of: dict[tuple[str, str, str], str] = {}
    for record, path in zip(results.records, results.paths):
        spec = record["spec"]
        key = (spec["experiment"], spec["method"], spec.get("tag", ""))
        by_arm.setdefault(key, {})[spec["seed"]] = Path(path)
        data_of[key] = _dataset(record)
    floors = untrained_floors(results.records)
    claims = []
    for spec in prereg["claims"]:
        runs = [by_arm.get(_arm_key(arm), {}) for arm in spec["arms"]]
        if spec["pairing"] == "seed":
            seeds = sorted(set(runs[0]) & set(runs[1]))
            paths = [[r[s] for s in seeds] for r in runs]
        else:
            paths = [[r[s] for s in sorted(r)] for r in runs]
        datasets = {data_of[k] for k in map(_arm_key, spec["arms"]) if k in data_of}
        floor = floors.get(datasets.pop()) if len(datasets) == 1 else None  # the untrained encoder on the arms' data
        claims.append(build_claim(spec, paths, sha, REPO_ROOT, untrained_accuracy=floor))
    info = {"preregistration": str(prereg_path.relative_to(REPO_ROOT)) if prereg_path.is_relative_to(REPO_ROOT)
            else str(prereg_path), "preregistration_sha256": sha, "profile": study_profile(profile),
            "runs_missing": len(results.missing), "runs_current": len(results.records), "floors": floors}
    return apply_holm(claims), info


def write_ledger(profile: str, *, root: Optional[os.PathLike] = None,
                 preregistration: Optional[os.PathLike] = None) -> tuple[Path, list[dict], dict[str, Any]]:
    """Build the ledger of ``profile`` and write ``<results>/<profile>/claims.json`` (atomic), with
    the pre-registration copied beside it when it lives elsewhere (for :func:`verify_claims`)."""
    claims, info = build_ledger(profile, preregistration=preregistration, root=root)
    out_dir = results_root(root) / study_profile(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = Path(preregistration) if preregistration is not None else PREREGISTRATION
    dst = out_dir / "preregistration.yaml"
    if src.resolve() != dst.resolve():
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".preregistration.", suffix=".tmp")
        os.close(fd)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    path = write_claims(claims, out_dir / "claims.json")
    return path, claims, info
