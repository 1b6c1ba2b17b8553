"""Cross-machine reproducibility: recompute cached results elsewhere and compare (issue 12 item 10).

``python -m gca.experiments verify --sample K`` recomputes K random current results of a study,
``verify --claims primary`` every result the ledger's primary claims use; each run is recomputed
from scratch in its own subprocess (as the runner computes it) into a scratch results root — never
the cache — and :data:`VERIFY_METRICS` are compared. Run on another machine, the report measures the
cross-machine spread; :func:`claims_on_recomputed` then recomputes the claims' verdicts from the
recomputed numbers alone, so a reader sees whether a verdict depends on the machine.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from gca.provenance import blas_info, cpu_model
from gca.study.cache import check_result, result_key, result_path
from gca.study.claims import compare_arms, read_claims
from gca.study.preregistration import FAMILIES
from gca.study.paths import REPO_ROOT, results_root
from gca.study.plan import RunSpec, study_profile

__all__ = ["VERIFY_METRICS", "verify", "verify_table", "claims_on_recomputed"]

#: What :func:`verify` compares: ``(label, dotted path in a result record)``.
VERIFY_METRICS = (("linear accuracy", "metrics.linear_accuracy"), ("kNN accuracy", "metrics.knn_accuracy"),
                  ("final loss", "train.final_loss"))
#: The environment of a run's subprocess: one BLAS/OpenMP thread (a run sets its torch threads itself).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def one_command(profile: str, spec: RunSpec) -> list[str]:
    """The command that computes ``spec`` in its own process (``python -m gca.experiments one``)."""
    # --debug: the traceback of a failed run goes to the worker's stderr
    return [sys.executable, "-m", "gca.experiments", "one", "--profile", profile, "--debug",
            "--spec", json.dumps(spec.to_dict())]


def _dotted(record: Mapping[str, Any], path: str):
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _machine(provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    prov = provenance or {}
    return {"cpu": prov.get("cpu"), "blas": prov.get("blas"), "device": prov.get("device"),
            "git_commit": prov.get("git_commit"), "torch": (prov.get("packages") or {}).get("torch"),
            "data_checksum": prov.get("data_checksum")}


def _study_relative(path: Path) -> str:
    """``results/<profile>/<experiment>/<file>`` of a result file, wherever its results root is."""
    return "/".join(("results",) + Path(path).parts[-3:])


def _claimed_results(family: str, ledger: Path) -> set[str]:
    if family not in FAMILIES:
        raise ValueError(f"claims family {family!r} is unknown; choose one of {', '.join(FAMILIES)}")
    claims = [c for c in read_claims(ledger) if c["family"] == family]
    if not claims:
        raise ValueError(f"{ledger} has no claim of family {family!r}: build the ledger first "
                         "(python -m gca.experiments claims)")
    return {p for c in claims for arm in c["arms"] for p in arm["results"]}


def _environment_only(path: Path, state: str) -> Optional[dict]:
    """The record of a result that is stale here only through this machine's environment, else
    ``None``. On another machine the checkout is the same but the environment is not: another torch
    version, data decoded to other bytes, and another Python, whose ``ast`` gives the same source
    other function hashes (the fingerprint is exact within one Python version). The report keeps
    each reason (``cached_state_here``); the caller vouches that the checkout is the same."""
    if not (state.startswith("stale: code changed") or state.startswith("stale: data changed")):
        return None
    return json.loads(path.read_text())


def verify(profile: str, sample: Optional[int] = None, *, claims: Optional[str] = None, seed: int = 0,
           workers: int = 1, other_machine: bool = False, out: str | os.PathLike | None = None,
           root: str | os.PathLike | None = None, timeout_s: float = 6 * 3600) -> dict[str, Any]:
    """Recompute current results of study ``profile`` into another results root — never the cache —
    each in its own subprocess as the runner computes them, ``workers`` at a time, and compare
    :data:`VERIFY_METRICS`.

    Which results: ``sample`` random ones (drawn with ``seed``), or with ``claims="primary"`` (a
    family) every result that family's claims list in the ledger ``<root>/<profile>/claims.json``.
    Candidates are the current result files whose spec still resolves to the configuration they
    store (so that ``one`` recomputes exactly that configuration). With ``other_machine`` (on
    another machine, with the same checkout), results whose code fingerprint or data checksum
    differ there are candidates too, and each row says why (``cached_state_here``). Returns the
    report, also written to ``<out>/verify.json`` after every run (``complete`` false until the
    end); ``out`` (default: a new temporary folder) also holds the recomputed results and run
    directories."""
    if (sample is None) == (claims is None):
        raise ValueError("give either sample=K (random results) or claims=FAMILY (the results of the ledger's "
                         f"claims of that family), not {'both' if sample is not None else 'neither'}")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise ValueError(f"sample={sample!r} must be a whole number >= 1 (results to recompute)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an integer")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be a whole number >= 1 (runs at a time)")
    prof = study_profile(profile)
    base = results_root(root) / prof
    wanted = _claimed_results(claims, base / "claims.json") if claims is not None else None
    memo: dict = {}
    current, skipped = [], 0
    for path in sorted(f for f in base.glob("*/*.json") if not f.name.startswith(".")):
        if wanted is not None and _study_relative(path) not in wanted:
            continue
        record, state = check_result(path, data_memo=memo)
        if record is None and other_machine:
            record = _environment_only(path, state)
        if record is None:
            continue
        try:
            spec = RunSpec.from_dict(record["spec"])
            same = result_key(spec, prof) == record["key"]
        except (KeyError, TypeError, ValueError):
            same = False
        if same:
            current.append((spec, path, record, state))
        else:  # the study's settings changed since: ``one`` would compute another configuration
            skipped += 1
    if not current:
        raise ValueError(f"no current result of profile {prof!r} under {base} that can be recomputed: compute "
                         f"some first (python -m gca.experiments run --profile {prof})")
    if wanted is not None and len(current) + skipped < len(wanted):
        missing = len(wanted) - len(current) - skipped
        raise ValueError(f"{missing} result file(s) the {claims} claims list are not current under {base}: "
                         "rebuild the ledger (python -m gca.experiments claims) or recompute them")
    if sample is None:  # seed by seed, so that a stopped verification leaves complete pairs
        chosen = sorted(current, key=lambda item: (item[0].seed, item[0].experiment, item[0].method, item[0].tag))
    else:
        chosen = random.Random(seed).sample(current, min(sample, len(current)))
    work = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="gca-verify-"))
    work.mkdir(parents=True, exist_ok=True)
    if (work / "results").resolve() == results_root(root).resolve():
        raise ValueError(f"--out {work} would write into the cache itself: choose another folder")
    env = dict(os.environ, **WORKER_ENV, GCA_RESULTS_DIR=str((work / "results").resolve()),
               GCA_RUNS_DIR=str((work / "runs").resolve()))
    report: dict[str, Any] = {
        "profile": prof, "sample": sample, "claims": claims, "seed": seed, "workers": workers,
        "other_machine": other_machine,
        "n_candidates": len(current), "n_not_recomputable": skipped, "folder": str(work),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "blas": blas_info(), "cpu_count": os.cpu_count()}, "runs": [],
    }

    def recompute(item) -> dict[str, Any]:
        spec, path, record, state_here = item
        t0 = time.time()
        proc = subprocess.run(one_command(prof, spec), cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout_s)
        again_path = result_path(spec, prof, record["key"], root=work / "results")
        row: dict[str, Any] = {"run": spec.label, "cached": str(path), "result": _study_relative(path),
                               "recomputed": str(again_path), "seconds": time.time() - t0,
                               "cached_machine": _machine(record.get("provenance")),
                               "cached_state_here": state_here}
        if proc.returncode != 0 or not again_path.is_file():
            lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
            row["status"] = f"failed (exit {proc.returncode}): {lines[-1]}"
            return row
        again = json.loads(again_path.read_text())
        row["status"] = "recomputed"
        row["machine"] = _machine(again.get("provenance"))
        row["metrics"] = {}
        for _, dotted in VERIFY_METRICS:
            a, b = _dotted(record, dotted), _dotted(again, dotted)
            diff = b - a if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
            row["metrics"][dotted] = {"cached": a, "recomputed": b, "difference": diff}
        return row

    def write(complete: bool) -> None:  # atomic: a reader never sees half a report
        report.update(complete=complete, n_done=len(report["runs"]), wall_s=time.time() - t_start)
        tmp = work / ".verify.json.tmp"
        tmp.write_text(json.dumps(report, indent=1, sort_keys=True, default=str) + "\n")
        os.replace(tmp, work / "verify.json")

    t_start = time.time()
    order = {str(path): i for i, (_, path, _, _) in enumerate(chosen)}
    with ThreadPoolExecutor(max_workers=workers) as pool:  # each run is its own process
        for future in as_completed([pool.submit(recompute, item) for item in chosen]):
            report["runs"].append(future.result())
            report["runs"].sort(key=lambda row: order[row["cached"]])
            write(complete=False)  # a verification stopped midway keeps what it recomputed
    write(complete=True)
    report["report"] = str(work / "verify.json")
    return report


def verify_table(report: Mapping[str, Any]) -> str:
    """The per-metric differences of a :func:`verify` report as a plain-text table."""
    lines = [f"{'run':44s} {'metric':16s} {'cached':>10s} {'recomputed':>10s} {'difference':>11s}"]
    for row in report["runs"]:
        if row["status"] != "recomputed":
            lines.append(f"{row['run']:44s} {row['status']}")
            continue
        for label, dotted in VERIFY_METRICS:
            m = row["metrics"][dotted]
            if m["difference"] is None:
                lines.append(f"{row['run']:44s} {label:16s} {m['cached']!s:>10s} {m['recomputed']!s:>10s} {'—':>11s}")
            else:
                lines.append(f"{row['run']:44s} {label:16s} {m['cached']:10.4f} {m['recomputed']:10.4f} "
                             f"{m['difference']:+11.4f}")
    return "\n".join(lines)


def claims_on_recomputed(claims: Sequence[Mapping[str, Any]], report: Mapping[str, Any], *,
                         margins: Optional[Mapping[str, float]] = None) -> list[dict[str, Any]]:
    """The ledger's ``claims`` on the runs a :func:`verify` report recomputed, from the cached numbers
    (``here``) and from the recomputed ones alone (``there``), side by side.

    Each claim uses the results of its lists that the report recomputed — for a paired claim the
    pairs whose two results were both recomputed, in the ledger's order — minus the runs the ledger
    excluded (``collapsed_excluded``, with their pairs); claims whose metric is not one of
    :data:`VERIFY_METRICS`, with fewer than two usable runs per arm, or without
    interval (a no-difference claim whose margin ``margins`` does not give) are left out. The test and the
    verdict rule are the ledger's (paired t or Welch, 95 % interval, :func:`gca.study.stats.verdict`;
    ``margins`` maps a no-difference claim's id to its equivalence margin). Returns one row per
    claim: ``id``, ``family``, ``n`` (pairs, or runs per arm), ``here`` and ``there`` (``effect``,
    ``ci_low``, ``ci_high``, ``mde``, ``verdict``) and ``same_verdict``.
    """
    metrics = {d for _, d in VERIFY_METRICS}
    cached: dict[str, dict[str, float]] = {}
    again: dict[str, dict[str, float]] = {}
    for row in report.get("runs", ()):
        if row.get("status") == "recomputed":
            key = row.get("result") or _study_relative(Path(row["cached"]))
            cached[key] = {d: m["cached"] for d, m in row["metrics"].items()}
            again[key] = {d: m["recomputed"] for d, m in row["metrics"].items()}
    out = []
    for c in claims:
        if c["metric"] not in metrics:
            continue
        excluded = set(c.get("collapsed_excluded") or ())
        paired = c.get("pairing") == "seed"
        if not paired:
            ok = [[p for p in arm["results"] if p in again and p not in excluded] for arm in c["arms"]]
        else:
            pairs = [(x, y) for x, y in zip(*(arm["results"] for arm in c["arms"]))
                     if x in again and y in again and x not in excluded and y not in excluded]
            ok = [[x for x, _ in pairs], [y for _, y in pairs]]
        margin = (margins or {}).get(c["id"])
        if min(len(ok[0]), len(ok[1])) < 2 or (not c["paper_effect"] and margin is None):
            continue  # no interval, or a no-difference claim without its margin
        sides = {}
        for side, values in (("here", cached), ("there", again)):
            arms = [[values[p][c["metric"]] * c["scale"] for p in files] for files in ok]
            stats = compare_arms(*arms, paired=paired, paper_effect=c["paper_effect"], margin=margin)
            sides[side] = {k: stats[k] for k in ("effect", "ci_low", "ci_high", "mde", "verdict")}
        out.append({"id": c["id"], "family": c["family"], "n": len(ok[0]), **sides,
                    "same_verdict": sides["here"]["verdict"] == sides["there"]["verdict"]})
    return out
