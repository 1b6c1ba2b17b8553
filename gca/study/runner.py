"""The study's runner and command line: ``python -m gca.experiments run | status | one | check | verify``.

``python -m gca.experiments run --profile cpu --workers 2`` executes the study's run list
(:func:`gca.study.plan.study_plan`) in priority order, each run in its own subprocess (``one``),
writing each result as soon as it finishes, logging one line per event to
``results/<profile>/study.log``; a killed study keeps every finished run and resumes where it
stopped. Run directories (checkpoints, metrics) go to ``runs/experiments/<profile>/``
(git-ignored): a finished run directory is reused instead of retrained. ``status`` lists done /
running / stale / missing; ``check`` says whether result files are current; ``verify`` recomputes
a random sample of current results (or every result of a family of claims) elsewhere and reports
the differences (:mod:`gca.study.verify`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from gca.study.cache import RunClaimedError, check_result, in_progress, result_key, result_path
from gca.study.fingerprint import CodeTracker, source_version
from gca.study.paths import REPO_ROOT, results_root
from gca.study.plan import EXPERIMENTS, RunSpec, study_plan, study_profile
from gca.study.claims import claims_table_markdown, verify_claims
from gca.study.preregistration import FAMILIES
from gca.study.ledger import write_ledger
from gca.study.run import run_or_reuse
from gca.study.verify import VERIFY_METRICS, WORKER_ENV, one_command, verify, verify_table

__all__ = ["study_status", "run_study", "EXIT_CLAIMED", "main"]

#: Exit status of ``one`` when another process holds the run's claim (not a failure).
EXIT_CLAIMED = 3


def study_status(profile: str, experiments: Iterable[str] | None = None, *, root=None) -> list[tuple[RunSpec, str, Path]]:
    """``(spec, state, path)`` for every run of the plan; state in done / running / stale / missing."""
    rows = []
    memo: dict = {}  # data checksums, loaded once for this call
    for spec in study_plan(profile, experiments):
        try:
            key = result_key(spec, profile)
        except ValueError as exc:
            rows.append((spec, f"invalid: {exc}", Path("-")))
            continue
        path = result_path(spec, profile, key, root=root)
        _, state = check_result(path, data_memo=memo)
        if state != "done" and in_progress(path):
            state = "running"
        rows.append((spec, state, path))
    return rows


def _status_in_subprocess(profile: str, experiments, env) -> list[tuple["_SpecView", str, Path]]:
    """:func:`study_status` computed by a fresh interpreter, so that keys and fingerprints are those
    of the code on disk now, not of the modules this long-running process imported at its start."""
    cmd = [sys.executable, "-m", "gca.experiments", "status", "--profile", profile, "--json"]
    if experiments:
        cmd += ["--only", *experiments]
    out = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise ValueError(out.stderr)
    return [(_SpecView(r["spec"]), r["state"], Path(r["path"])) for r in json.loads(out.stdout)]


class _SpecView:
    """A run spec as the planning subprocess wrote it, not re-validated here: the code on disk may
    define experiments this long-running process does not know yet."""

    def __init__(self, d: Mapping[str, Any]):
        self._d = dict(d)
        tag = f" [{d.get('tag')}]" if d.get("tag") else ""
        self.label = f"{d['experiment']}/{d['method']}{tag} seed {d['seed']}"

    def to_dict(self) -> dict[str, Any]:
        return dict(self._d)


def _log(log_path: Path, message: str) -> None:
    line = f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} {message}"
    print(line, flush=True)
    with open(log_path, "a") as fh:
        fh.write(line + "\n")


def run_study(profile: str, *, experiments: Iterable[str] | None = None, workers: int = 1, root=None,
              log_path: str | os.PathLike | None = None, force: bool = False, watch_s: float = 0.0,
              poll_s: float = 20.0) -> int:
    """Compute every run of the plan that has no current result, ``workers`` subprocesses at a time,
    most important first; returns the number of failed runs.

    The queue is re-planned whenever a worker is free: the code version and every key are computed
    again, so a code change during the study makes the runs it invalidated due again (in priority
    order) and the study converges to results of the current code. A run that failed is not
    retried until the source changes (:func:`gca.study.fingerprint.source_version`). With
    ``watch_s > 0`` the runner keeps polling for that many seconds after the plan is complete (to
    pick up later code changes). Each subprocess writes its own result file as soon as it
    finishes; a killed study keeps everything that finished.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1 (runs computed at once), got {workers!r}")
    if isinstance(poll_s, bool) or not isinstance(poll_s, (int, float)) or not 0 < poll_s < math.inf:
        raise ValueError(f"poll_s must be a positive number of seconds, got {poll_s!r}")
    prof = study_profile(profile)
    base = results_root(root) / prof
    base.mkdir(parents=True, exist_ok=True)
    log = Path(log_path) if log_path is not None else base / "study.log"
    env = dict(os.environ, **WORKER_ENV)
    if root is not None:
        env["GCA_RESULTS_DIR"] = str(Path(root).resolve())
    study_started = time.time()
    running: dict[str, tuple[subprocess.Popen, Any, float]] = {}
    failed_keys: set[tuple[str, str]] = set()
    started_code: dict[str, str] = {}
    invalid_logged: set[str] = set()
    forced: set[str] = set()
    done_once = False
    idle_since: float | None = None
    last_code = None
    _log(log, f"study {prof}: start (workers={workers}, pid {os.getpid()})")
    while True:
        for path_key, (proc, spec, t0) in list(running.items()):  # reap finished workers
            if proc.poll() is None:
                continue
            out = proc.stdout.read() if proc.stdout else ""
            del running[path_key]
            last = out.strip().splitlines()[-1] if out.strip() else ""
            if proc.returncode == 0 and last.startswith("done elsewhere"):
                _log(log, f"skip  {spec.label}: {last}")  # another runner computed it meanwhile
            elif proc.returncode == 0:
                _log(log, f"done  {spec.label} in {time.time() - t0:.0f} s: {last}")
            elif proc.returncode == EXIT_CLAIMED:
                _log(log, f"busy  {spec.label}: claimed by another process, not computed here")
            else:
                failed_keys.add((path_key, started_code[path_key]))
                _log(log, f"FAIL  {spec.label} after {time.time() - t0:.0f} s (exit {proc.returncode}); "
                          f"see {base / 'worker.err'}")
        code = source_version()  # plan: what is due under the current code
        if code != last_code:
            _log(log, f"gca sources {code}")
            last_code = code
        if len(running) >= workers:  # no free worker: nothing to plan
            time.sleep(min(2.0, poll_s))
            continue
        try:
            rows = _status_in_subprocess(prof, experiments, env)
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            _log(log, f"planning failed ({type(exc).__name__}: {str(exc)[-300:]}); retrying in 30 s")
            time.sleep(30)
            continue
        foreign = sum(1 for _, state, path in rows if state == "running" and str(path) not in running)
        due = []
        for spec, state, path in rows:
            if state.startswith("invalid"):
                if spec.label not in invalid_logged:
                    _log(log, f"skip  {spec.label}: {state}")
                    invalid_logged.add(spec.label)
                continue
            k = str(path)
            if k in running or (k, code) in failed_keys:
                continue
            if state == "missing" or state.startswith("stale") or (force and k not in forced):
                due.append((spec, k))
        if not done_once:
            _log(log, f"{len(due)} runs due, {len(running)} running")
            done_once = True
        started = 0
        while due and len(running) + foreign < workers:
            started += 1
            spec, k = due.pop(0)
            forced.add(k)
            cmd = one_command(prof, spec)
            if force:  # recompute, unless another runner already did since this study started
                cmd += ["--reuse-after", repr(study_started)]
            with open(base / "worker.err", "a") as err:
                proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
            running[k] = (proc, spec, time.time())
            started_code[k] = code
            _log(log, f"start {spec.label} (pid {proc.pid}; {len(due)} more due)")
        if not running and not due and not foreign:
            if idle_since is None:
                idle_since = time.time()
                _log(log, f"study {prof}: nothing due ({len(failed_keys)} failed under their current keys)")
            if time.time() - idle_since >= watch_s:
                break
            time.sleep(poll_s)
            continue
        idle_since = None
        time.sleep(min(2.0, poll_s) if started else poll_s)  # nothing started: wait before planning again
    _log(log, f"study {prof}: exit, {len(failed_keys)} failed")
    return len(failed_keys)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def _parse_spec(text: str) -> RunSpec:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--spec is not valid JSON ({exc.msg} at column {exc.colno}): pass a RunSpec as "
                         "JSON, e.g. '{\"experiment\": \"standard\", \"method\": \"ince\", \"seed\": 0}'") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"--spec must be a JSON object, got {type(data).__name__}")
    missing = [k for k in ("experiment", "method") if k not in data]
    if missing:
        raise ValueError(f"--spec lacks {missing}: give at least experiment and method (and seed)")
    try:
        return RunSpec.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--spec: {exc}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; pass e.g. --workers 2") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1 (number of parallel run processes)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0; pass e.g. 20")
    return value


def _profile(text: str) -> str:
    try:
        study_profile(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _check(paths: Sequence[str], profile: str | None) -> int:
    """``check``: the state of result files (or of every one stored for ``profile``); exit 0 iff all done."""
    if bool(paths) == (profile is not None):
        raise ValueError("give result files or --profile (not both), e.g. "
                         "python -m gca.experiments check --profile cpu")
    if profile is not None:
        base = results_root() / study_profile(profile)
        if not base.is_dir():
            raise ValueError(f"{base} does not exist: compute the study first (python -m gca.experiments run "
                             f"--profile {profile}) or point GCA_RESULTS_DIR at its results")
        files = sorted(f for f in base.glob("*/*.json") if not f.name.startswith("."))
    else:
        files = [Path(f) for f in paths]
    memo: dict = {}
    counts: dict[str, int] = {}
    for f in files:
        _, state = check_result(f, data_memo=memo)
        counts[state.split(":")[0]] = counts.get(state.split(":")[0], 0) + 1
        print(state if len(files) == 1 and profile is None else f"{state}  {f}")
    if profile is not None or len(files) > 1:
        print(counts)
    return 0 if counts and set(counts) == {"done"} else 1


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (``prog: error: message``), exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m gca.experiments", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also: GCA_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        return p

    p = command("run", "run the study's missing runs (each result written when it finishes)")
    p.add_argument("--profile", default="cpu", type=_profile)
    p.add_argument("--only", nargs="+", default=None, choices=EXPERIMENTS, help="only these experiments")
    p.add_argument("--workers", type=_positive_int, default=1)
    p.add_argument("--force", action="store_true", help="recompute runs that have a current result")
    p.add_argument("--log", default=None)
    p.add_argument("--watch", type=_seconds, default=0.0, help="seconds to keep polling for code changes once done")
    p.add_argument("--poll", type=_seconds, default=20.0,
                   help="seconds between plans while nothing can be started (default 20)")
    p = command("status", "done / running / stale / missing for every run of the plan")
    p.add_argument("--profile", default="cpu", type=_profile)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--only", nargs="+", default=None, choices=EXPERIMENTS)
    p = command("one", "compute one run (used by 'run')")
    p.add_argument("--profile", default="cpu", type=_profile)
    p.add_argument("--spec", required=True, help="RunSpec as JSON")
    p.add_argument("--reuse-after", type=float, default=None,
                   help="recompute unless the current result was written after this POSIX time (force mode)")
    p = command("check", "is a result file current? (prints done / missing / stale: why)")
    p.add_argument("paths", nargs="*", metavar="path", help="result files")
    p.add_argument("--profile", default=None, type=_profile,
                   help="check every result file stored for this profile instead")
    p = command("verify", "recompute current results elsewhere (K random ones, or every result of a family of "
                          "claims) and print the differences")
    p.add_argument("--profile", default="cpu", type=_profile)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--sample", type=_positive_int, metavar="K", help="K random results")
    which.add_argument("--claims", choices=FAMILIES, metavar="FAMILY",
                       help=f"every result the ledger's claims of FAMILY list ({', '.join(FAMILIES)})")
    p.add_argument("--workers", type=_positive_int, default=1, help="runs at a time (default 1)")
    p.add_argument("--other-machine", action="store_true",
                   help="on another machine with the same checkout: also recompute results whose code fingerprint "
                        "(torch, Python version) or data checksum differ there")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draw (default 0)")
    p.add_argument("--out", default=None, help="folder for the recomputed results and verify.json "
                                                "(default: a new temporary folder)")
    p = command("claims", "compute the claims ledger results/<profile>/claims.json from the cached results")
    p.add_argument("--profile", default="cpu", type=_profile)
    p.add_argument("--verify", action="store_true",
                   help="instead, recompute every number of the existing ledger from the files it lists")
    return parser


def _claims(args: argparse.Namespace) -> int:
    if args.verify:
        path = results_root() / study_profile(args.profile) / "claims.json"
        if not path.is_file():
            raise ValueError(f"{path}: no ledger yet; run 'python -m gca.experiments claims --profile {args.profile}'")
        # recorded exclusions are accepted as "failed to train" (the floors differ per panel's data);
        # collapse, every statistic and the Holm adjustment are recomputed from the listed files
        problems = verify_claims(path, REPO_ROOT)
        print("\n".join(problems) if problems else f"{os.path.relpath(path, REPO_ROOT)}: every number recomputes")
        return 1 if problems else 0
    path, claims, info = write_ledger(args.profile)
    print(claims_table_markdown(claims))
    print(f"{os.path.relpath(path, REPO_ROOT)}: {len(claims)} claims from {info['runs_current']} current runs "
          f"({info['runs_missing']} of the plan not computed yet); pre-registration {info['preregistration']} "
          f"sha256 {info['preregistration_sha256'][:12]}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; an error is one line on stderr (exit 2) unless ``--debug`` or ``GCA_DEBUG=1``."""
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("GCA_DEBUG", "").strip() not in ("", "0")
    try:
        return _main(args, debug)
    except (ValueError, TypeError, OSError) as exc:
        if debug:
            raise
        print(f"python -m gca.experiments {args.command}: error: {exc} (--debug for the traceback)", file=sys.stderr)
        return 2


def _one(args: argparse.Namespace, debug: bool) -> int:
    warnings.simplefilter("default")
    spec = _parse_spec(args.spec)
    with CodeTracker() as tracker:  # from before the run's first call into gca
        try:
            path = result_path(spec, args.profile, result_key(spec, args.profile))
        except (ValueError, TypeError) as exc:  # a bad override in --spec: an input error
            raise ValueError(f"--spec: {exc}") from exc
        try:
            rec, computed = run_or_reuse(spec, args.profile, tracker=tracker, reuse_after=args.reuse_after)
        except RunClaimedError as exc:
            print(f"busy: {exc}", file=sys.stderr)
            return EXIT_CLAIMED
        except Exception as exc:  # a failed run: its traceback with --debug (the runner passes it)
            if debug:
                traceback.print_exc()
            first = (str(exc).strip().splitlines() or [""])[0]
            print(f"failed: {spec.label}: {type(exc).__name__}: {first}"
                  + ("" if debug else " (--debug for the traceback)"), file=sys.stderr)
            return 1
    if not computed:
        print(f"done elsewhere: {os.path.relpath(path, REPO_ROOT)} was written by another process "
              "meanwhile; not recomputed")
        return 0
    m = rec["metrics"]
    print(f"linear {m['linear_accuracy']:.4f} knn {m['knn_accuracy']:.4f} "
          f"total {rec['timing']['total_s']:.0f} s -> {os.path.relpath(path, REPO_ROOT)}")
    return 0


def _main(args: argparse.Namespace, debug: bool = False) -> int:
    if args.command == "run":
        return 1 if run_study(args.profile, experiments=args.only, workers=args.workers, force=args.force,
                              log_path=args.log, watch_s=args.watch, poll_s=args.poll) else 0
    if args.command == "status":
        rows = study_status(args.profile, args.only)
        if args.json:
            print(json.dumps([{"spec": s.to_dict(), "state": st, "path": str(p)} for s, st, p in rows]))
            return 0
        counts: dict[str, int] = {}
        for spec, state, path in rows:
            print(f"{state:8s} {spec.label:45s} {path.name if state == 'done' else ''}")
            counts[state.split(":")[0]] = counts.get(state.split(":")[0], 0) + 1
        print(counts)
        return 0
    if args.command == "one":
        return _one(args, debug)
    if args.command == "check":
        return _check(args.paths, args.profile)
    if args.command == "claims":
        return _claims(args)
    if args.command == "verify":
        report = verify(args.profile, args.sample, claims=args.claims, seed=args.seed, workers=args.workers,
                        other_machine=args.other_machine, out=args.out)
        print(verify_table(report))
        print(f"report: {report['report']}")
        return 0 if all(r["status"] == "recomputed" for r in report["runs"]) else 1
    return 2  # pragma: no cover
