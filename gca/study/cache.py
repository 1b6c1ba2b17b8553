"""The result cache: one JSON file per run, its key, its claim, and whether it is still current.

Every run (pretraining + frozen evaluation, optionally an analysis of the trained encoder) is
stored as ``results/<profile>/<experiment>/<method>[-<tag>]-s<seed>-<key>.json``.

- The **key** (:func:`config_key`) is a hash of the *full resolved* :class:`~gca.config.RunConfig`
  (every option after profile, method, dataset and overrides — :func:`gca.config.config_to_dict`)
  and the analysis requested. A different configuration is a different file.
- The **code** a result was computed with is its fingerprint (:mod:`gca.study.fingerprint`): the
  set of hashes of the functions that ran, wherever they live.
- The **data** is its checksum (train and test images), compared with the data on disk now.

A result is *current* (:func:`check_result`) when its key matches its stored configuration, its
code is unchanged and its data too; otherwise it is *stale* with the reason. A run being computed
is *claimed* by its process (:class:`Claim`, an exclusive ``flock``) so that two runners never
compute it twice. Every write is atomic (:func:`save_result`).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

from gca.config import config_from_dict, config_to_dict
from gca.data import DatasetNotFoundError
from gca.eval import load_eval_data
from gca.provenance import config_hash
from gca.study.fingerprint import fingerprint_changes, fingerprint_problem
from gca.study.paths import results_root, use_repo_data_dir
from gca.study.plan import RunSpec, resolve_spec, study_profile

__all__ = [
    "config_key",
    "result_key",
    "result_path",
    "lock_path",
    "Claim",
    "RunClaimedError",
    "in_progress",
    "check_result",
    "current_data_checksums",
    "load_result",
    "save_result",
]


def config_key(config_dict: Mapping[str, Any], analysis: str | None) -> str:
    """Cache key of a resolved configuration (:func:`gca.config.config_to_dict`) and an analysis."""
    return config_hash({"config": config_dict, "analysis": analysis}, code_version=None)


def result_key(spec: RunSpec, profile: str) -> str:
    """Cache key of ``spec`` under study ``profile`` (the code and the data are checked separately,
    against what the result stores: :func:`check_result`)."""
    return config_key(config_to_dict(resolve_spec(spec, profile)), spec.analysis)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def result_path(spec: RunSpec, profile: str, key: str, *, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<profile>/<experiment>/<method>[-<tag>]-s<seed>-<key>.json``."""
    tag = f"-{_slug(spec.tag)}" if spec.tag else ""
    return (results_root(root) / study_profile(profile) / spec.experiment /
            f"{spec.method}{tag}-s{spec.seed}-{key}.json")


def lock_path(path: str | os.PathLike) -> Path:
    """The claim file of a result (or run directory) ``path``: ``.<name>.lock`` beside it."""
    path = Path(path)
    return path.with_name("." + path.name + ".lock")


class RunClaimedError(RuntimeError):
    """Another live process holds the claim of this run (it is being computed there)."""


#: How long a non-blocking claim keeps trying while the lock file names no holder (a probe).
PROBE_GRACE_S = 1.0


class Claim:
    """Exclusive claim of one path: ``fcntl.flock`` on ``lock`` (created if absent, never deleted).

    The kernel holds the lock for exactly as long as the claiming process lives, so a crashed or
    killed holder's claim is released at once (no stale claim to clean up; a dead pid left in the
    file is only information). ``blocking=False`` raises :class:`RunClaimedError` when the claim
    is held elsewhere.
    """

    def __init__(self, lock: Path, *, blocking: bool, what: str):
        self.lock, self.blocking, self.what = Path(lock), blocking, what
        self.fd: int | None = None

    def __enter__(self) -> "Claim":
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + PROBE_GRACE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                # A holder writes its pid at once; an empty file is held by a status probe
                # (in_progress: a shared lock for microseconds) or a holder finishing: try again.
                if not holder and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                os.close(fd)
                raise RunClaimedError(f"{self.what} is being computed by another process ({holder or 'pid ?'})") from None
        os.ftruncate(fd, 0)
        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        os.pwrite(fd, f"{os.getpid()} {os.uname().nodename} {stamp}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # releases the flock
            self.fd = None


def in_progress(path: str | os.PathLike) -> bool:
    """Whether a live process holds the claim of result ``path`` (being computed right now)."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def check_result(path: str | os.PathLike, *, data_memo: dict | None = None) -> tuple[dict | None, str]:
    """``(record, state)`` of the result file ``path``: state ``"done"`` (current: its key matches
    its stored config, the code it ran is unchanged and the data it reads now has the checksums it
    stores, where the data is here), ``"missing"``, or ``"stale: <why>"`` (record ``None`` unless
    done). ``data_memo``: a dict shared by the checks of one call (status, one page), so that each
    dataset is read once; without it the data is read afresh."""
    path = Path(path)
    if not path.is_file():
        return None, "missing"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"stale: unreadable ({exc})"
    if not isinstance(record, Mapping):
        return None, "stale: not a result record (a JSON object)"
    spec = record.get("spec") if isinstance(record.get("spec"), Mapping) else {}
    expected = config_key(record.get("config"), spec.get("analysis"))
    if record.get("key") != expected or not path.stem.endswith(expected):
        return None, "stale: key does not match the stored configuration"
    problem = fingerprint_problem(record.get("code"))
    if problem is not None:
        return None, f"stale: {problem}"
    changes = fingerprint_changes(record["code"])
    if changes:
        more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
        return None, "stale: code changed: " + "; ".join(changes[:3]) + more
    data_change = _data_change(record, data_memo)
    if data_change:
        return None, "stale: data changed: " + data_change
    return dict(record), "done"


def current_data_checksums(config_dict: Mapping[str, Any], memo: dict | None = None) -> tuple[str | None, str | None]:
    """``(train, test)`` checksums of the evaluation data a run of this configuration reads *now*
    (:func:`gca.eval.load_eval_data`), read from disk on every call unless ``memo`` (a dict the
    caller keeps for the checks of one status or one page) has them: a long-lived process (a
    notebook kernel) sees a change of the data at its next call. ``(None, None)`` when the data
    cannot be loaded here (not verifiable, not a change)."""
    use_repo_data_dir()
    memo = {} if memo is None else memo
    key = json.dumps([config_dict.get("data"), config_dict.get("train", {}).get("seed"),
                      os.environ.get("GCA_DATA_DIR")], sort_keys=True, default=str)
    if key not in memo:
        try:
            config = config_from_dict(config_dict)
            memo[key] = tuple(load_eval_data(config, split).checksum for split in ("train", "test"))
        except (DatasetNotFoundError, FileNotFoundError):
            memo[key] = (None, None)
    return memo[key]


def _data_change(record: Mapping[str, Any], memo: dict | None = None) -> str | None:
    """Why the data of ``record`` differs from the data on disk now (``None``: the same, or not verifiable)."""
    metrics = record.get("metrics") or {}
    stored = (metrics.get("train_checksum"), metrics.get("test_checksum"))
    if stored == (None, None) or not isinstance(record.get("config"), Mapping):
        return None
    now = current_data_checksums(record["config"], memo)
    for split, old, new in zip(("train", "test"), stored, now):
        if old is not None and new is not None and old != new:
            return f"{split} checksum {new}, the result was computed on {old}"
    return None


def load_result(path: str | os.PathLike) -> dict | None:
    """The stored result at ``path`` if it is current (:func:`check_result`), else ``None``."""
    return check_result(path)[0]


def save_result(record: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``record`` as JSON atomically (temporary file, flushed to disk, then ``os.replace``; the
    temporary file is removed if the write fails, e.g. on a full disk)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as fh:
            fh.write(json.dumps(record, indent=1, sort_keys=True, allow_nan=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
