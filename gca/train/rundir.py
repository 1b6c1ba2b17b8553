"""The run directory of a pretraining run, and the rules that keep it consistent.

Files: ``config.json`` (the resolved :class:`~gca.config.RunConfig`), ``provenance.json``
(:func:`gca.provenance.collect_provenance`; a resumption adds ``provenance-resumed-at-epoch-K.json``),
``metrics.jsonl`` (one JSON object per line: step and epoch records), ``checkpoint.pt`` and
``summary.json``.

Rules:

- every file is written atomically (a temporary ``.<name>.tmp-<pid>`` in the same directory, then
  ``os.replace``); a failed write never replaces the previous file, and temporaries left by a
  killed process are removed on the next start (:func:`remove_orphaned_temp_files`);
- a directory holding a checkpoint is continued only with ``resume=True``, and only with the same
  configuration (:data:`RESUME_FREE_KEYS` may differ) and the same training data (checksum);
- nothing is overwritten that pretraining did not write: a non-empty directory that is not a run
  is refused;
- on resumption, metric records written after the checkpoint (the killed part, replayed) are dropped.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_NAME", "CONFIG_NAME", "PROVENANCE_NAME", "METRICS_NAME", "SUMMARY_NAME", "RESUME_FREE_KEYS",
    "TrainingDataChangedError", "save_checkpoint_atomic", "load_checkpoint", "remove_orphaned_temp_files",
    "read_json_file", "write_json_atomic", "read_metrics", "check_resume_config", "RunDirectory",
]

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
PROVENANCE_NAME = "provenance.json"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"

#: Config fields that may differ between a killed run and its resumption (they do not change results).
RESUME_FREE_KEYS = frozenset({("train", "device"), ("train", "threads"), ("train", "log_every"),
                              ("train", "num_workers"),
                              ("data", "data_dir")})  # the data itself is checked by its checksum


class TrainingDataChangedError(ValueError):
    """Resuming a run whose checkpoint was trained on other data (its checksum differs)."""


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def save_checkpoint_atomic(state: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then ``os.replace``.

    A failed write (disk full, a kill) never replaces the previous checkpoint; the temporary file
    is removed on failure (and an orphan left by a killed process by :func:`remove_orphaned_temp_files`).
    """
    path = Path(path)
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) or "enforce fail" in str(exc) or "file write failed" in str(exc):
            why = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc).splitlines()[0]
            raise OSError(getattr(exc, "errno", None) or errno.EIO,
                          f"could not write the checkpoint {path} ({why}); the previous checkpoint is intact: "
                          "free disk space, then continue with --resume") from None
        raise


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load ``checkpoint.pt`` with ``torch.load(weights_only=True)``: tensors and plain Python values only.

    A checkpoint that carries other objects (code that unpickling would run) is refused with a
    ValueError: only load checkpoints written by ``gca pretrain`` (or that you trust and convert).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; run 'gca pretrain --out {path.parent}' first")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "global" in str(exc).lower():
            raise ValueError(f"{path} is not a plain gca checkpoint: it carries Python objects that loading would "
                             f"execute ({first}); refusing to load it. Only load checkpoints written by "
                             "'gca pretrain' or from a source you trust") from None
        raise ValueError(f"{path} is damaged ({first}); restore it or retrain the run") from None
    except (EOFError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"{path} is damaged or truncated ({type(exc).__name__}: {first}); "
                         "restore it, or delete it and retrain the run") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a gca checkpoint (it holds a {type(state).__name__}, not a dict); point at "
                         "a run directory written by 'gca pretrain'")
    return state


def remove_orphaned_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.tmp-<pid>`` files a killed process left in ``run_dir`` (its pid no longer runs).

    A kill or a full disk during a save leaves such a file (hundreds of MB for a checkpoint);
    :func:`gca.train.pretrain` calls this on start and on resume. Returns the files removed.
    """
    removed = []
    for tmp in Path(run_dir).glob(".*.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_json_file(path: str | os.PathLike, what: str) -> Any:
    """JSON of ``path``; a damaged file raises ValueError naming it and the fix."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} ({what}) is not valid JSON ({exc.msg} at line {exc.lineno}); the file is damaged: "
                         "restore it, or start a new run directory") from None


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Indented, key-sorted JSON of ``obj`` written atomically; a failed write names the file and the fix."""
    path = Path(path)
    tmp = _temp_name(path)
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"could not write {path} ({exc.strerror or exc}): free disk space, then continue "
                                 "with --resume") from None


def read_metrics(run_dir: str | os.PathLike, kind: str | None = None) -> list[dict]:
    """Records of ``metrics.jsonl`` (optionally only ``type == kind``).

    A torn last line (a kill during its write: no final newline) is dropped; any other unreadable
    line raises ValueError naming the file and the line.
    """
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")
    records = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if k == len(lines) - 1:  # no newline after it: the write was cut off
                warnings.warn(f"{path}: dropped a torn last line ({len(line)} characters, written when the run "
                              "was killed)", RuntimeWarning, stacklevel=2)
                continue
            raise ValueError(f"{path} line {k + 1} is not valid JSON ({exc.msg}); the file is damaged: delete that "
                             "line (records after the last checkpoint are rewritten on --resume) or start a new "
                             "run") from None
    return [r for r in records if kind is None or r.get("type") == kind]


def check_resume_config(saved: dict, current: dict) -> None:
    """ValueError listing every field (outside :data:`RESUME_FREE_KEYS`) where ``current`` differs from ``saved``."""
    diffs = []
    for section, values in current.items():
        if not isinstance(values, dict):
            if saved.get(section) != values:
                diffs.append(f"{section}: {saved.get(section)!r} -> {values!r}")
            continue
        for key, value in values.items():
            if (section, key) in RESUME_FREE_KEYS:
                continue
            old = saved.get(section, {}).get(key)
            if old != value:
                diffs.append(f"{section}.{key}: {old!r} -> {value!r}")
    if diffs:
        raise ValueError(
            "cannot resume: the configuration differs from the checkpoint's ("
            + "; ".join(diffs) + "). Resume with the run's own config (gca pretrain --resume --out DIR) "
            "or start a new run directory."
        )


# ---------------------------------------------------------------------------------------------
# The directory
# ---------------------------------------------------------------------------------------------
class RunDirectory:
    """One run directory as the training loop sees it.

    :meth:`open` applies the start/resume rules of the module docstring and loads the checkpoint
    (``self.checkpoint``, ``None`` for a new run); only the main process (``is_main``) writes.
    """

    def __init__(self, path: Path, checkpoint: dict | None, is_main: bool):
        self.path, self.checkpoint, self.is_main = Path(path), checkpoint, is_main

    @classmethod
    def open(cls, path: str | os.PathLike, *, resume: bool, is_main: bool = True) -> "RunDirectory":
        out = Path(path)
        ckpt_path = out / CHECKPOINT_NAME
        checkpoint = None
        if ckpt_path.exists():
            if not resume:
                raise FileExistsError(
                    f"{out} already holds a run ({CHECKPOINT_NAME}); pass resume=True (--resume) to continue it "
                    "or choose another output directory"
                )
            checkpoint = load_checkpoint(ckpt_path, map_location="cpu")
        elif resume and not (out / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"cannot resume: {out} holds no run (no {CONFIG_NAME}); check the path, or drop "
                                    "--resume (resume=False) to start a new run there")
        elif not resume and out.is_dir() and any(out.iterdir()):
            what = (f"a run killed before its first checkpoint ({CONFIG_NAME}); pass --resume to restart it"
                    if (out / CONFIG_NAME).is_file() else "files that are not a run; choose a new or empty directory")
            raise FileExistsError(f"{out} is not empty: it holds {what} (pretraining never overwrites files it did "
                                  "not write)")
        if is_main:
            out.mkdir(parents=True, exist_ok=True)
            for orphan in remove_orphaned_temp_files(out):
                print(f"[gca] removed {orphan.name}, left by a killed process", file=sys.stderr)
        return cls(out, checkpoint, is_main)

    # ---- resumption -------------------------------------------------------------------------
    @property
    def start_epoch(self) -> int:
        """Epochs already done (0 for a new run)."""
        return 0 if self.checkpoint is None else int(self.checkpoint["epoch"])

    @property
    def resumed_from(self) -> int | None:
        return None if self.checkpoint is None else self.start_epoch

    @property
    def finished(self) -> bool:
        return self.checkpoint is not None and bool(self.checkpoint.get("finished"))

    def check_resumable(self, config_dict: dict, data_checksum: str | None) -> None:
        """The checkpoint was written with this configuration and this data (no-op for a new run)."""
        if self.checkpoint is None:
            return
        check_resume_config(self.checkpoint["config"], config_dict)
        saved = self.checkpoint.get("data_checksum")
        if saved is not None and data_checksum is not None and saved != data_checksum:
            raise TrainingDataChangedError(
                f"cannot resume: the training data changed (checksum {data_checksum}, the checkpoint was trained on "
                f"{saved}); point --data-dir at the run's data or start a new run")

    # ---- writing ----------------------------------------------------------------------------
    def start(self, config_dict: dict, provenance: dict) -> list[dict]:
        """Write ``config.json`` and the provenance record; reset ``metrics.jsonl`` (a new run) or drop
        its records after the checkpoint (a resumption). Returns the epoch records kept."""
        if not self.is_main:
            return []
        write_json_atomic(config_dict, self.path / CONFIG_NAME)
        # the original record is kept; a resumption adds its own
        name = PROVENANCE_NAME if self.checkpoint is None else f"provenance-resumed-at-epoch-{self.start_epoch}.json"
        write_json_atomic(provenance, self.path / name)
        metrics = self.path / METRICS_NAME
        if self.checkpoint is None:
            metrics.write_text("")
            return []
        if metrics.exists():  # the killed part is replayed: drop what it wrote
            kept = [r for r in read_metrics(self.path) if r.get("epoch", 0) < self.start_epoch]
            metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return read_metrics(self.path, "epoch")

    def log(self, record: dict) -> None:
        """Append one record to ``metrics.jsonl``."""
        if self.is_main:
            with open(self.path / METRICS_NAME, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def save_checkpoint(self, state: dict) -> None:
        if self.is_main:
            save_checkpoint_atomic(state, self.path / CHECKPOINT_NAME)

    def has_summary(self) -> bool:
        return (self.path / SUMMARY_NAME).is_file()

    def write_summary(self, summary: dict) -> None:
        if self.is_main:
            write_json_atomic(summary, self.path / SUMMARY_NAME)
