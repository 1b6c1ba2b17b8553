"""Cross-machine check of the CPU study (issue 12 item 10), in one command on another machine.

Recomputes, from scratch on this machine's CPU, every result the committed ledger's primary claims
list (``python -m gca.experiments verify --profile cpu --claims primary``), ``--workers`` runs at a
time, one thread each as the study computes them, and recomputes those claims' verdicts from the
recomputed numbers alone (:func:`gca.study.verify.claims_on_recomputed`)::

    python3 benchmarks/cross_machine.py --out $OUT --data-src .gpu_data/cifar10 --workers 14 --budget-s 420

``--data-src`` holds the offline CIFAR-10 copy (``cifar10-jpeg.tar.gz`` + ``make_cifar10.py``), from
which the official batches are rebuilt into ``data/`` (about 20 s); each recomputed result records
its data checksum beside the cached one's. A verification stopped by ``--budget-s`` keeps what it
recomputed (seed by seed, so pairs stay complete). Writes ``verify.json`` (the report) and
``cross_machine.json`` / ``cross_machine.md`` (machine, spread, claims) under ``--out``; the book's
claims page reads them from ``results/cpu/cross_machine/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # a bare checkout: gca importable without installation

from gca.study.claims import read_claims  # noqa: E402
from gca.study.verify import claims_on_recomputed, VERIFY_METRICS  # noqa: E402


def spread(report: dict) -> dict:
    """Per metric: the recomputed − cached differences (count, mean, sd, largest |difference|)."""
    out = {}
    for _, dotted in VERIFY_METRICS:
        d = [r["metrics"][dotted]["difference"] for r in report["runs"]
             if r["status"] == "recomputed" and r["metrics"][dotted]["difference"] is not None]
        if d:
            mean = sum(d) / len(d)
            sd = (sum((x - mean) ** 2 for x in d) / (len(d) - 1)) ** 0.5 if len(d) > 1 else None
            out[dotted] = {"n": len(d), "mean": mean, "sd": sd, "max_abs": max(abs(x) for x in d),
                           "n_identical": sum(x == 0 for x in d)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for verify.json and cross_machine.{json,md}")
    p.add_argument("--data-src", default=str(REPO / ".gpu_data" / "cifar10"),
                   help="folder with the offline CIFAR-10 copy (cifar10-jpeg.tar.gz + make_cifar10.py)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--budget-s", type=float, default=420.0, help="stop the verification after this many seconds")
    p.add_argument("--commit", default=None, help="the commit of the code (the device's copy has no history)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    from gca.data import prepare_offline_cifar10

    prepare_offline_cifar10(REPO / "data", script=Path(args.data_src) / "make_cifar10.py")
    print(f"data ready in {time.time() - t0:.0f} s", flush=True)
    work = Path("/tmp/gca-cross-machine")
    shutil.rmtree(work, ignore_errors=True)
    cmd = [sys.executable, "-m", "gca.experiments", "verify", "--profile", "cpu", "--claims", "primary",
           "--workers", str(args.workers), "--other-machine", "--out", str(work)]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    try:
        proc.wait(timeout=max(10.0, args.budget_s - (time.time() - t0)))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the runs too: what finished is in the report already
        proc.wait()
        print(f"stopped at the budget ({args.budget_s:.0f} s)", flush=True)
    report_path = work / "verify.json"
    if not report_path.is_file():
        print("no run finished: nothing to report", flush=True)
        return 1
    report = json.loads(report_path.read_text())
    shutil.copyfile(report_path, out / "verify.json")
    claims = [c for c in read_claims(REPO / "results" / "cpu" / "claims.json") if c["family"] == "primary"]
    rows = claims_on_recomputed(claims, report)
    machine = {"cpu": report["machine"]["cpu"], "cpu_count": os.cpu_count(), "platform": platform.platform(),
               "python": platform.python_version(), "blas": report["machine"]["blas"]}
    summary = {"commit": args.commit, "machine": machine, "complete": report.get("complete"),
               "n_recomputed": sum(r["status"] == "recomputed" for r in report["runs"]),
               "n_failed": sum(r["status"] != "recomputed" for r in report["runs"]),
               "spread": spread(report), "claims": rows, "wall_s": time.time() - t0}
    (out / "cross_machine.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    lines = [f"# Cross-machine check on {machine['cpu']} ({machine['cpu_count']} cores)", "",
             f"{summary['n_recomputed']} results recomputed, {summary['n_failed']} failed, complete: {summary['complete']}",
             "", "| metric | n | mean diff | sd | max abs | identical |", "|---|---|---|---|---|---|"]
    for dotted, s in summary["spread"].items():
        lines.append(f"| {dotted} | {s['n']} | {s['mean']:+.5f} | {s['sd'] if s['sd'] is None else round(s['sd'], 5)} "
                     f"| {s['max_abs']:.5f} | {s['n_identical']} |")
    lines += ["", "| claim | n | cached: effect [95 % CI], verdict | recomputed here: effect [95 % CI], verdict |",
              "|---|---|---|---|"]
    for r in rows:
        cells = [f"{x['effect']:+.2f} [{x['ci_low']:+.2f}, {x['ci_high']:+.2f}], {x['verdict']}"
                 for x in (r["here"], r["there"])]
        lines.append(f"| {r['id']} | {r['n']} | {cells[0]} | {cells[1]} |")
    (out / "cross_machine.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
