"""The paper's experiments (spec §5) as cached runs: a result cache, a study plan per profile, a runner.

Cache
-----
Every run (pretraining + frozen evaluation, optionally an analysis of the trained encoder) is
stored as one small JSON file ``results/<profile>/<experiment>/<method>[-<tag>]-s<seed>-<key>.json``.

- The **key** is a hash of the *full resolved* :class:`~gca.config.RunConfig` (every option after
  profile, method, dataset and overrides — :func:`gca.config.config_to_dict`) and the analysis
  requested (e.g. ``"plans"``). A different configuration is a different file.
- The **code version** of a result is its *code fingerprint* (:class:`CodeTracker`): while the run
  executes, every function of :mod:`gca` that is called is recorded (``sys.settrace``, call events
  only), and the result stores a hash of the source of each of those functions and of the
  module-level code (imports, constants, class fields) of each module they live in, every source
  parsed with ``ast`` and re-emitted without docstrings (comments, docstrings and formatting do
  not count), plus the torch version. Reporting-only modules (:data:`UNTRACKED_MODULES`) are not
  part of it. Not the git commit: an unrelated commit (a new loss, the book, tests) must not
  invalidate a result, while a change to any code the run executed must. (Limitation: a function
  that ran only at import time, before tracking started, is covered through its module's
  module-level code only when it is called from there.)

A result is reused only when it is *current* (:func:`check_result`): its key matches its stored
configuration and :func:`fingerprint_changes` finds no change; otherwise it is *stale* and is
recomputed (or, in ``cached`` mode, listed as missing with the reason — never shown). Every file
carries :func:`gca.provenance.collect_provenance` (commit, dirty flag, packages, device, seed, data
checksum, time).

Modes (:func:`experiment_mode`; environment variable ``GCA_EXPERIMENTS``, or a notebook's ``mode``
parameter): ``compute`` (default: reuse matching results, compute missing or stale ones),
``cached`` (never compute: missing/stale runs are listed as missing), ``force`` (recompute
everything; ``GCA_RECOMPUTE=1`` is a synonym).

Runner
------
``python -m gca.experiments run --profile cpu --workers 2`` executes the study's run list
(:func:`study_plan`) in priority order, each run in its own subprocess (``python -m gca.experiments
one``), writing each result as soon as it finishes, logging one line per event to
``results/<profile>/study.log``; a killed study keeps every finished run and resumes where it
stopped. Run directories (checkpoints, metrics) go to ``runs/experiments/<profile>/`` (git-ignored):
a finished run directory is reused instead of retrained. ``status`` lists done / stale / missing.

Scale
-----
``smoke``: sklearn digits (40 images per class), tiny network, 2 epochs (CI: every notebook in well under a minute).
``cpu``: the study shown in the book — CIFAR-10 (JPEG copy), a class-balanced subset of 500 training
images per class, views and evaluation at 16×16 px, the small convolutional backbone (width 16,
feature dimension 64), batch 256, 10 epochs, one CPU thread per run; the domain-prior sweep on
``rotated-digits`` (the offline stand-in for PACS; all 1,438 training images, 20 epochs). ``paper``: the paper's configuration (GPU).
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "UNTRACKED_MODULES",
    "CodeTracker",
    "module_index",
    "fingerprint_changes",
    "fingerprint_id",
    "check_result",
    "current_data_checksums",
    "RunClaimedError",
    "source_version",
    "STUDY_PROFILES",
    "BOOK_TO_STUDY",
    "MODES",
    "RunSpec",
    "study_profile",
    "experiment_mode",
    "resolve_spec",
    "result_key",
    "result_path",
    "load_result",
    "save_result",
    "run_one",
    "get_results",
    "study_plan",
    "study_status",
    "run_study",
    "summarise",
    "mean_sd",
    "METHOD_NAMES",
    "PAPER_STANDARD",
    "PAPER_NOISY",
    "PAPER_ABLATION_EPS",
    "PAPER_ABLATION_ITERS",
    "PAPER_DOMAIN",
    "notebook_profile",
    "scale_description",
    "fmt_mean_sd",
    "comparison_table",
    "metric_stats",
    "compare",
    "panel_noise_sd",
    "best_method_verdict",
    "domain_prior_verdict",
    "ablation_verdicts",
    "measure_step_times",
    "saved_tensor_bytes",
    "cost_verdict",
    "Results",
    "main",
]

_REPO_ROOT = Path(__file__).resolve().parent.parent

#: Study profiles (the configuration profile each one starts from is in ``_STUDY``).
STUDY_PROFILES = ("smoke", "cpu", "paper")
#: Book execution profiles (:data:`gca.book.PROFILES`) mapped to study profiles.
BOOK_TO_STUDY = {"smoke": "smoke", "default": "cpu", "full": "paper"}
#: Modes of :func:`get_results`.
MODES = ("compute", "cached", "force")

# --------------------------------------------------------------------------------------------
# Study settings per profile: the configuration profile plus overrides applied to every run.
# --------------------------------------------------------------------------------------------
_STUDY: dict[str, dict[str, Any]] = {
    "smoke": {
        "config_profile": "smoke",
        "overrides": {
            "data.n_per_class": 40, "data.test_n_per_class": 30,
            "train.epochs": 2, "train.batch_size": 128, "train.threads": 1, "train.device": "cpu",
            "optim.warmup_epochs": 0.5,
            "eval.probe_weight_decays": (1e-3, 1e-2), "eval.probe_max_iter": 100, "eval.knn_k": 10,
        },
        "seeds": (0, 1),
        "all_methods_all_seeds": False,  # CI: extra seeds only for the key comparisons
        "noisy_augment": "large_erase",
        "corruptions": ("gaussian_noise", "contrast"),
        "domain_dataset": "rotated-digits",
        "domain_overrides": {},
        "ablation_iters": (1, 5),
        "ablation_eps": (0.2, 1.0),
        "alpha_minus_beta": (-0.2, 0.0, 0.2),
    },
    "cpu": {
        "config_profile": "cpu",
        "overrides": {
            "data.n_per_class": 500, "data.test_n_per_class": 500, "data.image_size": 16,
            "model.width": 16, "model.projector_hidden_dim": 512, "model.projector_out_dim": 128,
            "train.epochs": 10, "train.batch_size": 256, "train.threads": 1, "train.device": "cpu",
            "train.checkpoint_every": 5, "optim.warmup_epochs": 1.0,
            "eval.knn_k": 50,
        },
        "seeds": (0, 1, 2),
        "noisy_augment": "large_erase",
        "corruptions": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
                        "defocus_blur", "brightness", "contrast", "saturate", "pixelate", "jpeg_compression"),
        "domain_dataset": "rotated-digits",
        "domain_overrides": {"data.n_per_class": None, "data.test_n_per_class": None, "data.image_size": None,
                             "train.epochs": 20, "train.batch_size": 256},
        "ablation_iters": (1, 3, 5, 7, 9, 11),
        "ablation_eps": (0.1, 0.2, 0.4, 0.6, 0.8, 1.0),
        "alpha_minus_beta": (-0.5, -0.2, -0.1, -0.05, -0.02, 0.0, 0.02, 0.05, 0.1, 0.2, 0.5),
    },
    "paper": {
        "config_profile": "paper",
        "overrides": {},
        "seeds": (0, 1, 2),
        "noisy_augment": "large_erase",
        "corruptions": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
                        "defocus_blur", "brightness", "contrast", "saturate", "pixelate", "jpeg_compression"),
        "domain_dataset": "pacs",
        "domain_overrides": {},
        "ablation_iters": (1, 3, 5, 7, 9, 11),
        "ablation_eps": (0.1, 0.2, 0.4, 0.6, 0.8, 1.0),
        "alpha_minus_beta": (-0.5, -0.2, -0.1, -0.05, -0.02, 0.0, 0.02, 0.05, 0.1, 0.2, 0.5),
    },
}

METHODS_ORDER = ("byol", "iot", "iot-uni", "simclr", "ince", "rince", "gca-ince", "gca-rince", "gca-uot")
EXPERIMENTS = ("standard", "noisy", "noisy_strong_crop", "noisy_brightness", "domain_prior", "ablation_iters",
               "ablation_eps", "plans")
#: The paper's other two noisy-view augmentations, run for the INCE/RINCE families and GCA-UOT.
EXTRA_NOISY = {"noisy_strong_crop": "strong_crop", "noisy_brightness": "brightness"}


def study_profile(profile: str) -> str:
    """Study profile of ``profile``: a study profile itself or a book profile (``default`` → ``cpu``)."""
    if profile in STUDY_PROFILES:
        return profile
    if profile in BOOK_TO_STUDY:
        return BOOK_TO_STUDY[profile]
    raise ValueError(f"profile={profile!r} is unknown: choose a study profile {STUDY_PROFILES} "
                     f"or a book profile {tuple(BOOK_TO_STUDY)}")


def study_settings(profile: str) -> dict[str, Any]:
    """A copy of the study settings of ``profile`` (see the module docstring)."""
    return copy.deepcopy(_STUDY[study_profile(profile)])


def experiment_mode(mode: str | None = None) -> str:
    """``mode`` if given, else ``$GCA_EXPERIMENTS`` (``GCA_RECOMPUTE=1`` means ``force``), else ``compute``."""
    if mode is None:
        if os.environ.get("GCA_RECOMPUTE", "").strip() not in ("", "0"):
            mode = "force"
        else:
            mode = os.environ.get("GCA_EXPERIMENTS", "").strip() or "compute"
    if mode not in MODES:
        raise ValueError(f"experiment mode {mode!r} is unknown: choose one of {MODES} "
                         "(environment variable GCA_EXPERIMENTS)")
    return mode


# --------------------------------------------------------------------------------------------
# Code fingerprint: the source of exactly the gca code a run executed
# --------------------------------------------------------------------------------------------
_GCA_DIR = str(_REPO_ROOT / "gca") + os.sep
#: Modules never part of a fingerprint — reporting only (provenance, figures, book, command line), or
#: :mod:`gca.config`, whose only effect on a run is the resolved configuration — and that is the key.
UNTRACKED_MODULES = ("provenance.py", "figures.py", "book.py", "cli.py", "__main__.py", "config.py")
#: The functions of this module that compute numbers (the rest of it — settings, which reach a run
#: only through its configuration, caching, notebook helpers — is not part of a fingerprint).
RUNNER_FUNCTIONS = ("_run_one", "_plans_analysis")
_THIS_FILE = str(Path(__file__).resolve())


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_INDEX_CACHE: dict[str, tuple[tuple[int, int], tuple[str, dict[str, str]]]] = {}


def module_index(path: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """``(skeleton hash, {qualified name: hash})`` of a source file, docstrings removed.

    Every top-level function and every method of a top-level class gets its own hash (of its
    ``ast.unparse``, decorators included); the *skeleton* is the rest of the module (imports,
    constants, class bodies without their methods), so a changed default value or dataclass field
    changes the skeleton. Comments, docstrings and formatting change nothing.
    """
    path = str(path)
    st = os.stat(path)
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _INDEX_CACHE.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    tree = _strip_docstrings(ast.parse(Path(path).read_text(), filename=path))
    functions: dict[str, str] = {}
    skeleton_body = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions[node.name] = _h(ast.unparse(node))
            continue
        if isinstance(node, ast.ClassDef):
            kept = []
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    functions[f"{node.name}.{item.name}"] = _h(ast.unparse(item))
                else:
                    kept.append(item)
            node = copy.copy(node)
            node.body = kept or [ast.Pass()]
        skeleton_body.append(node)
    skeleton = _h(ast.unparse(ast.Module(body=skeleton_body, type_ignores=[])))
    _INDEX_CACHE[path] = (stamp, (skeleton, functions))
    return skeleton, functions


def _index_name(qualname: str, functions: Mapping[str, str]) -> str | None:
    """Entry of :func:`module_index` that holds the code object ``qualname`` (``None``: the skeleton)."""
    name = qualname.split(".<locals>")[0]
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in functions:
            return cand
    return None


class CodeTracker:
    """Records which functions of :mod:`gca` run inside a ``with`` block (``sys.settrace`` on call
    events only, no line tracing), then turns them into a fingerprint (:meth:`CodeTracker.fingerprint`)."""

    def __init__(self):
        self.calls: set[tuple[str, str]] = set()
        self._previous = None

    def _trace(self, frame, event, arg):
        co = frame.f_code
        if co.co_filename.startswith(_GCA_DIR):
            if co.co_filename != _THIS_FILE or co.co_qualname.split(".<locals>")[0] in RUNNER_FUNCTIONS:
                self.calls.add((co.co_filename, co.co_qualname))
        return None

    def __enter__(self) -> "CodeTracker":
        self._previous = sys.gettrace()
        sys.settrace(self._trace)
        return self

    def __exit__(self, *exc) -> None:
        sys.settrace(self._previous)

    def fingerprint(self) -> dict[str, Any]:
        """``{"files": {path: skeleton hash}, "functions": {"path::name": hash}, "torch": version}``
        of the recorded calls (see :func:`module_index`)."""
        files: dict[str, str] = {}
        functions: dict[str, str] = {}
        for filename, qualname in sorted(self.calls):
            if Path(filename).name in UNTRACKED_MODULES or not Path(filename).is_file():
                continue
            rel = os.path.relpath(filename, _REPO_ROOT)
            skeleton, index = module_index(filename)
            if filename != _THIS_FILE:
                files[rel] = skeleton
            name = _index_name(qualname, index)
            if name is not None:
                functions[f"{rel}::{name}"] = index[name]
        return {"files": files, "functions": functions, "torch": _torch_version()}


def _torch_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def fingerprint_changes(fp: Mapping[str, Any]) -> list[str]:
    """What changed since fingerprint ``fp`` was recorded (empty list: the code that produced the
    result is unchanged). Each entry names a file, a function or the torch version."""
    if not isinstance(fp, Mapping) or not fp.get("files"):
        return ["no code fingerprint recorded"]
    changes = []
    if fp.get("torch") != _torch_version():
        changes.append(f"torch {fp.get('torch')} -> {_torch_version()}")
    indices = {}
    for rel, skeleton in fp["files"].items():
        path = _REPO_ROOT / rel
        if not path.is_file():
            changes.append(f"{rel} removed")
            continue
        try:
            indices[rel] = module_index(path)
        except SyntaxError as exc:
            changes.append(f"{rel} does not parse ({exc})")
            continue
        if indices[rel][0] != skeleton:
            changes.append(f"{rel}: module-level code (imports, constants, class fields)")
    for key, value in fp.get("functions", {}).items():
        rel, name = key.split("::", 1)
        if rel not in indices:
            path = _REPO_ROOT / rel
            if not path.is_file():
                changes.append(f"{rel} removed")
                continue
            indices[rel] = module_index(path)
        current = indices[rel][1].get(name)
        if current != value:
            changes.append(f"{rel}: {name}" + (" removed" if current is None else ""))
    return changes


def fingerprint_id(fp: Mapping[str, Any]) -> str:
    """Short hash of a fingerprint (for logs and tables)."""
    return _h(json.dumps(fp, sort_keys=True))


# --------------------------------------------------------------------------------------------
# Run specifications
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One run of a study: ``experiment`` (a panel, e.g. ``"standard"``), ``method``, ``seed``,
    ``overrides`` on top of the study profile, an optional ``analysis`` of the trained encoder
    (``"plans"``), a ``tag`` naming the setting inside the panel (e.g. ``"T=5"``) and a ``priority``
    (lower runs first)."""

    experiment: str
    method: str
    seed: int = 0
    overrides: tuple = ()
    analysis: str | None = None
    tag: str = ""
    priority: int = 100

    def __post_init__(self):
        if self.experiment not in EXPERIMENTS:
            raise ValueError(f"experiment={self.experiment!r} is unknown; choose one of {EXPERIMENTS}")
        if self.method not in METHODS_ORDER:
            raise ValueError(f"method={self.method!r} is unknown; choose one of {METHODS_ORDER}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be a non-negative int")
        if isinstance(self.overrides, Mapping):
            object.__setattr__(self, "overrides", tuple(sorted(self.overrides.items())))
        if self.analysis not in (None, "plans"):
            raise ValueError(f"analysis={self.analysis!r} must be None or 'plans'")

    @property
    def label(self) -> str:
        """Readable name, e.g. ``"ablation_iters/gca-ince [T=5] seed 0"``."""
        tag = f" [{self.tag}]" if self.tag else ""
        return f"{self.experiment}/{self.method}{tag} seed {self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (inverse: :meth:`from_dict`)."""
        return {"experiment": self.experiment, "method": self.method, "seed": self.seed,
                "overrides": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.overrides},
                "analysis": self.analysis, "tag": self.tag, "priority": self.priority}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        """The spec of :meth:`to_dict`'s output."""
        ov = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(d.get("overrides", {})).items()}
        return cls(d["experiment"], d["method"], int(d.get("seed", 0)), tuple(sorted(ov.items())),
                   d.get("analysis"), d.get("tag", ""), int(d.get("priority", 100)))


def resolve_spec(spec: RunSpec, profile: str):
    """The full :class:`~gca.config.RunConfig` of ``spec`` under study ``profile``."""
    from gca.config import resolve_config

    st = study_settings(profile)
    overrides = dict(st["overrides"])
    overrides.update(dict(spec.overrides))
    overrides["train.seed"] = spec.seed
    overrides["eval.seed"] = spec.seed
    return resolve_config(st["config_profile"], method=spec.method, overrides=overrides)


def _key_payload(config_dict: Mapping[str, Any], analysis: str | None) -> str:
    from gca.provenance import config_hash

    return config_hash({"config": config_dict, "analysis": analysis}, code_version=None)


def result_key(spec: RunSpec, profile: str) -> str:
    """Cache key of ``spec``: hash of the full resolved config and the analysis (the code is
    checked separately, against the fingerprint stored in the result: :func:`load_result`)."""
    from gca.config import config_to_dict

    return _key_payload(config_to_dict(resolve_spec(spec, profile)), spec.analysis)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def results_root(root: str | os.PathLike | None = None) -> Path:
    """``$GCA_RESULTS_DIR``, else ``<repo>/results``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("GCA_RESULTS_DIR") or _REPO_ROOT / "results")


def result_path(spec: RunSpec, profile: str, key: str, *, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<profile>/<experiment>/<method>[-<tag>]-s<seed>-<key>.json``."""
    tag = f"-{_slug(spec.tag)}" if spec.tag else ""
    return (results_root(root) / study_profile(profile) / spec.experiment /
            f"{spec.method}{tag}-s{spec.seed}-{key}.json")


def _lock_path(path: Path) -> Path:
    return path.with_name("." + path.name + ".lock")


class RunClaimedError(RuntimeError):
    """Another live process holds the claim of this run (it is being computed there)."""


#: How long a non-blocking claim keeps trying while the lock file names no holder (a probe).
_PROBE_GRACE_S = 1.0


class _Claim:
    """Exclusive claim of one path: ``fcntl.flock`` on ``lock`` (created if absent, never deleted).

    The kernel holds the lock for exactly as long as the claiming process lives, so a crashed or
    killed holder's claim is released at once (no stale claim to clean up; a dead pid left in the
    file is only information). ``blocking=False`` raises :class:`RunClaimedError` when the claim
    is held elsewhere.
    """

    def __init__(self, lock: Path, *, blocking: bool, what: str):
        self.lock, self.blocking, self.what = lock, blocking, what
        self.fd: int | None = None

    def __enter__(self) -> "_Claim":
        import fcntl

        self.lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + _PROBE_GRACE_S
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


def in_progress(path: Path) -> bool:
    """Whether a live process holds the claim of result ``path`` (being computed right now)."""
    import fcntl

    lock = _lock_path(Path(path))
    try:
        fd = os.open(lock, os.O_RDONLY)
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
    expected = _key_payload(record.get("config"), record.get("spec", {}).get("analysis"))
    if record.get("key") != expected or not path.stem.endswith(expected):
        return None, "stale: key does not match the stored configuration"
    changes = fingerprint_changes(record.get("code", {}))
    if changes:
        more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
        return None, "stale: code changed: " + "; ".join(changes[:3]) + more
    data_change = _data_change(record, data_memo)
    if data_change:
        return None, "stale: data changed: " + data_change
    return record, "done"


def current_data_checksums(config_dict: Mapping[str, Any], memo: dict | None = None) -> tuple[str | None, str | None]:
    """``(train, test)`` checksums of the evaluation data a run of this configuration reads *now*
    (the same loader and subset as :func:`gca.eval.evaluate_model`), read from disk on every call
    unless ``memo`` (a dict the caller keeps for the checks of one status or one page) has them:
    a long-lived process (a notebook kernel) sees a change of the data at its next call.
    ``(None, None)`` when the data cannot be loaded here (not verifiable, not a change)."""
    from gca.config import config_from_dict
    from gca.data import DatasetNotFoundError
    from gca.eval import load_eval_data

    _use_repo_data_dir()
    memo = {} if memo is None else memo
    key = json.dumps([config_dict.get("data"), config_dict.get("train", {}).get("seed"), config_dict.get("eval"),
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


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------
def _use_repo_data_dir() -> None:
    """Without ``$GCA_DATA_DIR``, point it at ``<repo>/data`` when that exists, so that a notebook
    (whose working directory is ``notebooks/``) finds the same data as the runner. The data root is
    not part of a run's configuration (the data checksum is recorded in its provenance)."""
    if not os.environ.get("GCA_DATA_DIR") and (_REPO_ROOT / "data").is_dir():
        os.environ["GCA_DATA_DIR"] = str(_REPO_ROOT / "data")


def _run_dir(spec: RunSpec, profile: str, train_hash: str) -> Path:
    base = Path(os.environ.get("GCA_RUNS_DIR") or _REPO_ROOT / "runs" / "experiments")
    return base / study_profile(profile) / f"{spec.method}-s{spec.seed}-{train_hash}"


def _plans_analysis(model, config, *, batch: int, n_batches: int) -> dict[str, Any]:
    """Plans of the trained encoder on test batches: heatmaps for one batch, theory inequalities on all."""
    import torch

    from gca import augment as gaug
    from gca.eval import load_eval_data
    from gca.losses import make_loss

    ds = load_eval_data(config, "test")
    size = config.data.image_size or ds.image_size[0]
    aug = gaug.build_augment(config.data.augment, size)
    mean = torch.as_tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.as_tensor(ds.std).view(1, -1, 1, 1)
    gen = torch.Generator().manual_seed(config.eval.seed + 12345)
    perm = torch.randperm(len(ds), generator=gen)
    eps = 0.5
    n_batches = max(1, min(n_batches, len(ds) // batch))
    out: dict[str, Any] = {"batch": batch, "n_batches": n_batches, "epsilon": eps, "checks": []}
    with torch.no_grad():
        for b in range(n_batches):
            idx = perm[b * batch:(b + 1) * batch].sort().values
            x = ds.images[idx]
            v1 = (aug(x, generator=gen) - mean) / std
            v2 = (aug(x, generator=gen) - mean) / std
            z = model.projector(model.backbone(torch.cat([v1, v2]))).double()
            z1, z2 = z.chunk(2)
            rec: dict[str, Any] = {}
            ince = make_loss("ince", epsilon=eps)(z1, z2, return_details=True)
            rec["ince"] = float(ince.loss)
            for T in (1, 2, 5, 10, 50, 200):
                rec[f"gca_ince_T{T}"] = float(make_loss("gca-ince", epsilon=eps, n_iter=T)(z1, z2))
            for T in (1, 10, 200):
                rec[f"gca_rince_q1_T{T}"] = float(make_loss("gca-rince", epsilon=eps, n_iter=T, q=1.0, lam=0.01)(z1, z2))
            rec["rince_q1"] = float(make_loss("rince", epsilon=eps, q=1.0, lam=0.01)(z1, z2))
            out["checks"].append(rec)
            if b == 0:
                k = min(batch, 16)
                z1s, z2s = z1[:k], z2[:k]
                heat = {}
                for name, loss in (("ince", make_loss("ince", epsilon=eps)),
                                   ("gca-ince", make_loss("gca-ince", epsilon=eps)),
                                   ("gca-uot", make_loss("gca-uot", epsilon=eps))):
                    det = loss(z1s, z2s, return_details=True)
                    heat[name] = det.plan.double().tolist()
                    if name == "ince":
                        heat["kernel"] = det.kernel.double().tolist()
                out["heatmaps"] = heat
                out["heatmap_pairs"] = k
                out["heatmap_labels"] = ds.labels[idx[:k]].tolist()
    return out


def run_one(spec: RunSpec, profile: str, *, root: str | os.PathLike | None = None, progress: bool = False,
            tracker: CodeTracker | None = None, reuse_after: float | None = None) -> dict[str, Any]:
    """Pretrain + evaluate ``spec`` under ``profile`` now, write and return its result record.

    The run is first *claimed* (an exclusive ``flock`` on its lock file): if
    another live process holds the claim, :class:`RunClaimedError` is raised and nothing is
    computed. Once claimed, a current result (written at or after ``reuse_after``, a POSIX time;
    ``None``: any) is returned as it is — a concurrent runner may have finished it meanwhile — so
    each run is computed once. The gca code executed is recorded (:class:`CodeTracker`; pass a
    running ``tracker`` to include what ran before, e.g. imports) and stored as the result's code
    fingerprint."""
    return _run_or_reuse(spec, profile, root=root, progress=progress, tracker=tracker, reuse_after=reuse_after)[0]


def _run_or_reuse(spec: RunSpec, profile: str, *, root=None, progress: bool = False,
                  tracker: CodeTracker | None = None, reuse_after: float | None = None,
                  data_memo: dict | None = None) -> tuple[dict[str, Any], bool]:
    """:func:`run_one`, also saying whether it computed the run (``True``) or, once it held the
    claim, found a current result that another process had just written (``False``)."""
    _use_repo_data_dir()
    path = result_path(spec, profile, result_key(spec, profile), root=root)
    with _Claim(_lock_path(path), blocking=False, what=spec.label):
        record, _ = check_result(path, data_memo=data_memo)
        if record is not None and (reuse_after is None or path.stat().st_mtime >= reuse_after):
            return record, False
        own = tracker is None
        tracker = tracker if tracker is not None else CodeTracker()
        if own:
            tracker.__enter__()
        try:
            return _run_one(spec, profile, root=root, progress=progress, tracker=tracker), True
        finally:
            if own:
                tracker.__exit__(None, None, None)


def _run_one(spec: RunSpec, profile: str, *, root, progress: bool, tracker: CodeTracker) -> dict[str, Any]:
    import torch

    from gca.config import config_to_dict, run_config_hash
    from gca.eval import evaluate_model
    from gca.provenance import collect_provenance
    from gca.train import TrainingDataChangedError, pretrain, resolve_device

    config = resolve_spec(spec, profile)
    config_dict = config_to_dict(config)
    key = _key_payload(config_dict, spec.analysis)
    path = result_path(spec, profile, key, root=root)
    path.parent.mkdir(parents=True, exist_ok=True)
    # (run_one holds the claim of ``path``)
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    run_dir = _run_dir(spec, profile, run_config_hash(config))
    t0 = time.perf_counter()
    # A finished run directory is reused only if the training code it ran is unchanged.
    stamp = run_dir / "experiments_fingerprint.json"
    # one process at a time per run directory (two specs that differ only in their analysis share it)
    with _Claim(run_dir.with_name(f".{run_dir.name}.lock"), blocking=True, what=str(run_dir)):
        if (run_dir / "checkpoint.pt").exists():
            old = json.loads(stamp.read_text()) if stamp.is_file() else {}
            if fingerprint_changes(old):
                shutil.rmtree(run_dir)
        try:
            result = pretrain(config, run_dir, resume=(run_dir / "config.json").is_file(), progress=progress)
        except TrainingDataChangedError:  # the data changed since this run directory was trained
            shutil.rmtree(run_dir)
            result = pretrain(config, run_dir, resume=False, progress=progress)
        if not stamp.is_file():
            save_result(tracker.fingerprint(), stamp)
    t1 = time.perf_counter()
    device = resolve_device(config.train.device)
    metrics = evaluate_model(result.model, config, device=device, progress=progress)
    t2 = time.perf_counter()
    epochs = result.epochs
    record: dict[str, Any] = {
        "key": key,
        "profile": study_profile(profile),
        "spec": spec.to_dict(),
        "config": config_dict,
        "config_hash": run_config_hash(config),
        "metrics": metrics,
        "train": {
            "epochs": len(epochs), "final_loss": epochs[-1]["loss"] if epochs else None,
            "loss_curve": [e["loss"] for e in epochs],
            "epoch_seconds": [e["seconds"] for e in epochs],
            "resumed_from_epoch": result.resumed_from_epoch,
            "run_dir": os.path.relpath(run_dir, _REPO_ROOT),
        },
        "timing": {"pretrain_s": t1 - t0, "eval_s": t2 - t1},
    }
    if spec.analysis == "plans":
        result.model.eval()
        record["plans"] = _plans_analysis(result.model.cpu(), config, batch=64, n_batches=8)
        record["timing"]["analysis_s"] = time.perf_counter() - t2
    record["timing"]["total_s"] = time.perf_counter() - t0
    record["code"] = tracker.fingerprint()
    record["code_id"] = fingerprint_id(record["code"])
    record["provenance"] = collect_provenance(
        seed=spec.seed, data_checksum=metrics.get("train_checksum"), device=device,
        command=" ".join(sys.argv), threads=torch.get_num_threads())
    save_result(record, path)
    return record


# --------------------------------------------------------------------------------------------
# Study plan
# --------------------------------------------------------------------------------------------
def _alpha_beta(d: float) -> tuple[float, float]:
    return (max(d, 0.0), max(-d, 0.0))


def study_plan(profile: str, experiments: Iterable[str] | None = None, *, seed: int = 0) -> list[RunSpec]:
    """Every run of the study under ``profile``, most important first (see module docstring).
    ``seed`` shifts the study's seeds (``seed, seed + 1, ...``; the committed results use 0)."""
    st = study_settings(profile)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative int")
    seeds = tuple(seed + s for s in st["seeds"])
    key_std = ("ince", "gca-ince", "gca-uot")
    key_noisy = ("rince", "gca-rince")
    noisy_ov = {"data.augment": st["noisy_augment"], "eval.corruptions": tuple(st["corruptions"])}
    from gca.data import is_available

    _use_repo_data_dir()
    if is_available("cifar10-c"):  # the published CIFAR-10-C files, when present, are evaluated too
        noisy_ov["eval.cifar10c_corruptions"] = ("all",)
    plan: list[RunSpec] = []
    for s in seeds:
        for m in key_std:
            plan.append(RunSpec("standard", m, s, priority=10 + s))
    for s in seeds:
        for m in key_noisy:
            plan.append(RunSpec("noisy", m, s, noisy_ov, priority=20 + s))
    for m in METHODS_ORDER:
        if m not in key_std:
            plan.append(RunSpec("standard", m, seeds[0], priority=30))
    for m in METHODS_ORDER:
        if m not in key_noisy:
            plan.append(RunSpec("noisy", m, seeds[0], noisy_ov, priority=40))
    for d in st["alpha_minus_beta"]:
        a, b = _alpha_beta(d)
        ov = {"data.dataset": st["domain_dataset"], **st["domain_overrides"], "loss.target": "domain_prior",
              "loss.target_alpha": a, "loss.target_beta": b}
        plan.append(RunSpec("domain_prior", "gca-ince", seeds[0], ov, tag=f"a-b={d:g}", priority=50))
    for T in st["ablation_iters"]:
        plan.append(RunSpec("ablation_iters", "gca-ince", seeds[0], {"loss.hparams.n_iter": T},
                            tag=f"T={T}", priority=60))
    for e in st["ablation_eps"]:
        plan.append(RunSpec("ablation_eps", "gca-ince", seeds[0], {"loss.hparams.epsilon": e},
                            tag=f"eps={e:g}", priority=60))
    plan.append(RunSpec("plans", "gca-uot", seeds[0], analysis="plans", priority=70))
    # Last: the remaining seeds of the other methods (so that every method of the two tables has
    # mean ± sd when the machine had time for it).
    for k, s in enumerate(seeds[1:] if st.get("all_methods_all_seeds", True) else ()):
        for m in METHODS_ORDER:
            if m not in key_std:
                plan.append(RunSpec("standard", m, s, priority=80 + 2 * k))
            if m not in key_noisy:
                plan.append(RunSpec("noisy", m, s, noisy_ov, priority=81 + 2 * k))
    # The paper's other noisy-view augmentations, one seed, for the methods the noisy claims are about.
    for exp, aug in EXTRA_NOISY.items():
        for m in ("ince", "gca-ince", "rince", "gca-rince", "gca-uot"):
            plan.append(RunSpec(exp, m, seeds[0], {**noisy_ov, "data.augment": aug}, priority=85))
    # Then more seeds of the ablations.
    for s in (seeds[1:] if st.get("all_methods_all_seeds", True) else ()):
        for T in st["ablation_iters"]:
            plan.append(RunSpec("ablation_iters", "gca-ince", s, {"loss.hparams.n_iter": T}, tag=f"T={T}", priority=90))
        for e in st["ablation_eps"]:
            plan.append(RunSpec("ablation_eps", "gca-ince", s, {"loss.hparams.epsilon": e}, tag=f"eps={e:g}", priority=90))
    if experiments is not None:
        wanted = set(experiments)
        unknown = wanted - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"unknown experiments {sorted(unknown)}; choose from {EXPERIMENTS}")
        plan = [p for p in plan if p.experiment in wanted]
    return sorted(plan, key=lambda p: p.priority)


# --------------------------------------------------------------------------------------------
# Fetching results (notebooks)
# --------------------------------------------------------------------------------------------
@dataclass
class Results:
    """What :func:`get_results` returns: ``records`` (one per finished run, in plan order) and
    ``missing`` (specs with no current result, with the reason: ``missing``, ``stale``,
    ``running``, or the error of a failed computation)."""

    profile: str
    records: list[dict] = field(default_factory=list)
    missing: list[tuple[RunSpec, str]] = field(default_factory=list)
    computed: int = 0
    reused: int = 0
    paths: list[Path] = field(default_factory=list)  # the result file of each record (a figure's inputs)

    def by(self, experiment: str | None = None, method: str | None = None, tag: str | None = None) -> list[dict]:
        """Records of one experiment / method / tag (``None``: any)."""
        return [r for r in self.records if (experiment is None or r["spec"]["experiment"] == experiment)
                and (method is None or r["spec"]["method"] == method) and (tag is None or r["spec"]["tag"] == tag)]

    def missing_text(self) -> str:
        """Plain-text list of the runs not shown and why (or a sentence saying none is missing)."""
        if not self.missing:
            return "All runs of this page are computed with the current code."
        lines = [f"{len(self.missing)} run(s) have no current result and are NOT shown:"]
        lines += [f"- {s.label}: {why}" for s, why in self.missing]
        return "\n".join(lines)


def _find_stale(spec: RunSpec, profile: str, root) -> bool:
    folder = results_root(root) / study_profile(profile) / spec.experiment
    tag = f"-{_slug(spec.tag)}" if spec.tag else ""
    return any(folder.glob(f"{spec.method}{tag}-s{spec.seed}-*.json"))


def get_results(specs: Sequence[RunSpec], profile: str, *, mode: str | None = None,
                root: str | os.PathLike | None = None, progress: bool = False) -> Results:
    """Results of ``specs``: reused when the key matches, else computed (mode ``compute``/``force``)
    or listed as missing (mode ``cached``; also while another process is computing a run)."""
    mode = experiment_mode(mode)
    out = Results(study_profile(profile))
    started = time.time()
    memo: dict = {}  # data checksums, loaded once for this call
    for spec in specs:
        key = result_key(spec, profile)
        path = result_path(spec, profile, key, root=root)
        record, state = check_result(path, data_memo=memo)
        if mode == "force":
            record = None
        if record is not None:
            out.records.append(record)
            out.paths.append(path)
            out.reused += 1
            continue
        if in_progress(path):
            out.missing.append((spec, "being computed by another process (see the study log)"))
            continue
        if mode == "cached":
            why = "not computed yet" if state == "missing" else state + " — not shown"
            out.missing.append((spec, why))
            continue
        try:
            record, computed = _run_or_reuse(spec, profile, root=root, progress=progress, data_memo=memo,
                                             reuse_after=started if mode == "force" else None)
            out.records.append(record)
            out.paths.append(path)
            if computed:
                out.computed += 1
            else:  # another process finished it between our check and our claim
                out.reused += 1
        except RunClaimedError:
            out.missing.append((spec, "being computed by another process (see the study log)"))
        except Exception as exc:  # a failed run is reported on the page, never hidden
            out.missing.append((spec, f"failed: {type(exc).__name__}: {exc}"))
    return out


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (``nan`` for one value) and count."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(vals)
    if n == 0:
        return float("nan"), float("nan"), 0
    m = sum(vals) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1)) if n > 1 else float("nan")
    return m, sd, n


def summarise(records: Sequence[dict], metric: str = "linear_accuracy", *, group: str = "method") -> dict[str, dict]:
    """``{group value: {"mean", "sd", "n", "values", "seeds"}}`` of ``metrics[metric]`` (×100 for
    accuracies is left to the caller)."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        g = r["spec"][group] if group in r["spec"] else r[group]
        groups.setdefault(g, []).append(r)
    out = {}
    for g, rs in groups.items():
        vals = [_metric(r, metric) for r in rs]
        m, sd, n = mean_sd(vals)
        out[g] = {"mean": m, "sd": sd, "n": n, "values": vals, "seeds": [r["spec"]["seed"] for r in rs]}
    return out


def _metric(record: dict, metric: str):
    node: Any = record["metrics"]
    for part in metric.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


# --------------------------------------------------------------------------------------------
# Study status and runner
# --------------------------------------------------------------------------------------------
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


def source_version() -> str:
    """Hash of the raw bytes of every tracked gca source file (the runner retries a failed run
    only after this changes)."""
    h = hashlib.sha256()
    for path in sorted((_REPO_ROOT / "gca").glob("*.py")):
        if path.name not in UNTRACKED_MODULES:
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _status_in_subprocess(profile: str, experiments, env) -> list[tuple[RunSpec, str, Path]]:
    """:func:`study_status` computed by a fresh interpreter, so that keys and fingerprints are those
    of the code on disk now, not of the modules this long-running process imported at its start."""
    cmd = [sys.executable, "-m", "gca.experiments", "status", "--profile", profile, "--json"]
    if experiments:
        cmd += ["--only", *experiments]
    out = subprocess.run(cmd, cwd=_REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
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
    retried under the same key. With ``watch_s > 0`` the runner keeps polling for that many seconds
    after the plan is complete (to pick up later code changes). Each subprocess writes its own
    result file as soon as it finishes; a killed study keeps everything that finished.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1 (runs computed at once), got {workers!r}")
    if isinstance(poll_s, bool) or not isinstance(poll_s, (int, float)) or not 0 < poll_s < math.inf:
        raise ValueError(f"poll_s must be a positive number of seconds, got {poll_s!r}")
    prof = study_profile(profile)
    base = results_root(root) / prof
    base.mkdir(parents=True, exist_ok=True)
    log = Path(log_path) if log_path is not None else base / "study.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1")
    if root is not None:
        env["GCA_RESULTS_DIR"] = str(Path(root).resolve())
    study_started = time.time()
    running: dict[str, tuple[subprocess.Popen, RunSpec, float]] = {}
    failed_keys: set[tuple[str, str]] = set()
    started_code: dict[str, str] = {}
    invalid_logged: set[str] = set()
    forced: set[str] = set()
    done_once = False
    idle_since: float | None = None
    _log(log, f"study {prof}: start (workers={workers}, pid {os.getpid()})")
    last_code = None
    while True:
        # reap finished workers
        for path_key, (proc, spec, t0) in list(running.items()):
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
        # plan: what is due under the current code
        code = source_version()
        if code != last_code:
            _log(log, f"gca sources {code}")
            last_code = code
        if len(running) >= workers:  # no free worker: nothing to plan
            time.sleep(min(2.0, poll_s))
            continue
        due = []
        try:
            rows = _status_in_subprocess(prof, experiments, env)
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            _log(log, f"planning failed ({type(exc).__name__}: {str(exc)[-300:]}); retrying in 30 s")
            time.sleep(30)
            continue
        foreign = sum(1 for _, state, path in rows if state == "running" and str(path) not in running)
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
            # --debug: the traceback of a failed run goes to worker.err
            cmd = [sys.executable, "-m", "gca.experiments", "one", "--profile", prof, "--debug",
                   "--spec", json.dumps(spec.to_dict())]
            if force:  # recompute, unless another runner already did since this study started
                cmd += ["--reuse-after", repr(study_started)]
            with open(base / "worker.err", "a") as err:
                proc = subprocess.Popen(cmd, cwd=_REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
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
# The paper's numbers (spec §5) and helpers for the notebooks
# --------------------------------------------------------------------------------------------
#: Display names of the methods.
METHOD_NAMES = {"byol": "BYOL", "iot": "IOT", "iot-uni": "IOT-uni", "simclr": "SimCLR", "ince": "INCE",
                "rince": "RINCE", "gca-ince": "GCA-INCE", "gca-rince": "GCA-RINCE", "gca-uot": "GCA-UOT"}
#: Linear readout top-1 (%), standard setting (spec §5.1, from the authors' poster).
PAPER_STANDARD = {
    "byol": (90.56, 69.40, 69.75), "iot": (90.99, 58.75, 72.27), "iot-uni": (90.89, 59.05, 72.88),
    "simclr": (92.16, 73.79, 72.20), "ince": (92.01, 74.84, 73.01), "rince": (91.05, 77.05, 71.91),
    "gca-ince": (92.36, 76.00, 73.04), "gca-rince": (92.09, 77.23, 73.44), "gca-uot": (92.61, 77.60, 74.09),
}
PAPER_STANDARD_COLUMNS = ("CIFAR-10", "CIFAR-100", "ImageNet-100")
#: Linear readout top-1 (%), noisy views / extreme augmentation (spec §5.2).
PAPER_NOISY = {
    "byol": (81.55, 54.18, 69.75), "iot": (80.59, 52.40, 67.19), "iot-uni": (80.79, 53.04, 67.03),
    "simclr": (81.87, 54.54, 69.95), "ince": (82.03, 54.70, 70.07), "rince": (82.60, 55.43, 69.06),
    "gca-ince": (82.18, 54.91, 70.11), "gca-rince": (82.76, 55.90, 69.72), "gca-uot": (83.18, 56.30, 71.45),
}
PAPER_NOISY_COLUMNS = ("CIFAR-10", "CIFAR-100", "CIFAR-10-C")
#: GCA-INCE ablation (spec §5.4), accuracy against ε (read from the paper's figure, approximate).
PAPER_ABLATION_EPS = {0.1: 0.66, 0.2: 0.79, 0.4: 0.84, 0.6: 0.82, 0.8: 0.81, 1.0: 0.79}
#: GCA-INCE ablation against iterations; only the end points are recovered (≈ 0.684 at T = 1,
#: ≈ 0.707 at T = 11, best from T = 5 on).
PAPER_ABLATION_ITERS = {1: 0.684, 11: 0.707}
#: Domain-prior sweep (spec §5.3, PACS) — domain-probe accuracy rises ≈ 0.72 → 0.95 from α − β = −0.5 to
#: 0.5; class accuracy stays ≈ 0.89–0.90.
PAPER_DOMAIN = {"domain_accuracy": (0.72, 0.95), "class_accuracy": (0.89, 0.90)}


def notebook_profile(profile: str) -> str:
    """Study profile for a notebook's ``profile`` parameter (book profiles map through
    :data:`BOOK_TO_STUDY`: ``smoke`` → ``smoke``, ``default`` → ``cpu``, ``full`` → ``paper``)."""
    return study_profile(profile)


def scale_description(profile: str) -> str:
    """One paragraph saying what a study profile trains on (shown on every experiment page)."""
    prof = study_profile(profile)
    st = study_settings(prof)
    from gca.config import resolve_config

    c = resolve_config(st["config_profile"], method="gca-ince", overrides=st["overrides"])
    n_train = "all" if c.data.n_per_class is None else f"{c.data.n_per_class} per class"
    n_test = "all" if c.data.test_n_per_class is None else f"{c.data.test_n_per_class} per class"
    size = c.data.image_size or "native"
    width = f", width {c.model.width}" if c.model.width else ""
    return (f"Profile `{prof}`: dataset `{c.data.dataset}` (training images: {n_train}; test images: {n_test}), "
            f"views at {size} px, backbone `{c.model.backbone}`{width}, projector {c.model.projector_hidden_dim}→"
            f"{c.model.projector_out_dim}, batch {c.train.batch_size}, {c.train.epochs} epochs, optimiser "
            f"{c.optim.name} (lr {c.optim.lr:g}, {c.optim.schedule} schedule, {c.optim.warmup_epochs:g} warm-up epochs), "
            f"loss hyperparameters at the authors' CIFAR-10 values (ε = 0.5, 10 iterations), seeds {list(st['seeds'])}. "
            f"Linear probe: L-BFGS logistic regression on frozen features, weight decay chosen on a validation split "
            f"of the training set ({c.eval.val_fraction:g}), reported once on test; kNN: k = {c.eval.knn_k}, "
            f"τ = {c.eval.knn_temperature:g}.")


def fmt_mean_sd(stats: Mapping[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """``"41.3 ± 0.8 (n=3)"`` from a :func:`summarise` entry (``"41.3 (n=1)"`` for one run)."""
    if not stats or stats.get("n", 0) == 0:
        return "—"
    m, sd, n = stats["mean"] * scale, stats["sd"] * scale, stats["n"]
    if n == 1 or math.isnan(sd):
        return f"{m:.{digits}f} (n={n})"
    return f"{m:.{digits}f} ± {sd:.{digits}f} (n={n})"


def comparison_table(results: "Results", experiment: str, *, paper: Mapping[str, Sequence[float]],
                     paper_columns: Sequence[str], metrics: Sequence[tuple[str, str]] = (
                         ("linear_accuracy", "linear"), ("knn_accuracy", "kNN"))):
    """A pandas DataFrame, one row per method (paper order): the paper's numbers beside ours
    (mean ± sd over seeds, %) for each metric."""
    import pandas as pd

    rows = []
    for m in METHODS_ORDER:
        row = {"method": METHOD_NAMES[m]}
        for col, v in zip(paper_columns, paper[m]):
            row[f"paper {col}"] = v
        recs = results.by(experiment, m)
        for metric, name in metrics:
            st = summarise(recs, metric).get(m, {})
            row[f"ours {name} (%)"] = fmt_mean_sd(st)
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def metric_stats(results: "Results", experiment: str, metric: str = "linear_accuracy") -> dict[str, dict]:
    """:func:`summarise` of ``metric`` for every method of ``experiment`` that has results."""
    return summarise(results.by(experiment), metric)


def compare(stats: Mapping[str, dict], a: str, b: str, *, noise_sd: float | None = None) -> dict[str, Any]:
    """Is method ``a`` better than ``b``? Difference of means ``d`` and its standard error
    ``se = sqrt(sd_a²/n_a + sd_b²/n_b)`` (a method with one run borrows ``noise_sd``, the seed-to-seed
    sd of the panel). Verdict: ``"reproduced"`` if ``d > 2 se``, ``"not reproduced at this scale"``
    if ``d < -2 se``, else ``"inconclusive"``; ``"missing"`` when a side has no result."""
    sa, sb = stats.get(a), stats.get(b)
    if not sa or not sb or sa["n"] == 0 or sb["n"] == 0:
        return {"a": a, "b": b, "verdict": "missing (not computed)", "d": float("nan"), "se": float("nan")}
    def var(st):
        sd = st["sd"] if st["n"] > 1 and not math.isnan(st["sd"]) else noise_sd
        return float("nan") if sd is None else sd ** 2 / st["n"]
    d = sa["mean"] - sb["mean"]
    se = math.sqrt(var(sa) + var(sb))
    if math.isnan(se):
        verdict = "inconclusive (one seed, no noise estimate)"
    elif d > 2 * se:
        verdict = "reproduced"
    elif d < -2 * se:
        verdict = "not reproduced at this scale"
    else:
        verdict = "inconclusive"
    return {"a": a, "b": b, "d": d, "se": se, "verdict": verdict, "n_a": sa["n"], "n_b": sb["n"]}


def panel_noise_sd(stats: Mapping[str, dict]) -> float | None:
    """Pooled seed-to-seed sd of the methods of a panel that have several seeds (``None`` if none)."""
    num, den = 0.0, 0
    for st in stats.values():
        if st["n"] > 1 and not math.isnan(st["sd"]):
            num += st["sd"] ** 2 * (st["n"] - 1)
            den += st["n"] - 1
    return math.sqrt(num / den) if den else None


def best_method_verdict(stats: Mapping[str, dict], claimed: str = "gca-uot") -> dict[str, Any]:
    """Is ``claimed`` the best method of a panel? ``"reproduced"`` if it has the highest mean and beats
    the runner-up by more than 2 se (:func:`compare`), ``"not reproduced at this scale"`` if some method
    beats it by more than 2 se, else ``"inconclusive"``."""
    if claimed not in stats:
        return {"verdict": "missing (not computed)", "best": None}
    noise = panel_noise_sd(stats)
    ranked = sorted(stats, key=lambda m: stats[m]["mean"], reverse=True)
    best = ranked[0]
    if best == claimed:
        runner = ranked[1] if len(ranked) > 1 else None
        if runner is None:
            return {"verdict": "inconclusive (one method)", "best": best}
        c = compare(stats, claimed, runner, noise_sd=noise)
        v = "reproduced" if c["verdict"] == "reproduced" else "inconclusive"
        return {"verdict": v, "best": best, "runner_up": runner, "margin": c["d"], "se": c["se"]}
    c = compare(stats, best, claimed, noise_sd=noise)
    v = "not reproduced at this scale" if c["verdict"] == "reproduced" else "inconclusive"
    return {"verdict": v, "best": best, "margin": -c["d"], "se": c["se"], "rank": ranked.index(claimed) + 1}


def domain_prior_verdict(records: Sequence[dict]) -> dict[str, Any]:
    """Does the domain probe's accuracy rise with α − β (paper §5.3)? ``"reproduced"`` when the
    Spearman correlation of domain accuracy with α − β exceeds 0.5 and the last point lies above the
    first, ``"not reproduced at this scale"`` when the correlation is negative, else
    ``"inconclusive"``. ``verdict_class`` — is class accuracy flat (paper: 0.89–0.90)? —
    ``"reproduced"`` when its range over the sweep is at most 0.05, else ``"not reproduced at this
    scale"``."""
    pts = []
    for r in records:
        ov = r["spec"]["overrides"]
        d = float(ov.get("loss.target_alpha", 0.0)) - float(ov.get("loss.target_beta", 0.0))
        dom = r["metrics"].get("domain_accuracy")
        if dom is not None:
            pts.append((d, dom, r["metrics"]["linear_accuracy"]))
    pts.sort()
    out: dict[str, Any] = {"n": len(pts)}
    if len(pts) < 3:
        out.update(verdict="missing (not computed)" if not pts else "inconclusive (fewer than 3 points)",
                   verdict_class="missing (not computed)" if not pts else "inconclusive (fewer than 3 points)",
                   rho_domain=float("nan"), rho_class=float("nan"), domain_lo=float("nan"),
                   domain_hi=float("nan"), class_range=float("nan"))
        return out
    from scipy.stats import spearmanr

    d, dom, cls = zip(*pts)
    rho_dom = float(spearmanr(d, dom).statistic)
    rho_cls = float(spearmanr(d, cls).statistic)
    rises = rho_dom > 0.5 and dom[-1] > dom[0]
    out.update(rho_domain=rho_dom, rho_class=rho_cls, domain_lo=dom[0], domain_hi=dom[-1],
               class_range=max(cls) - min(cls),
               verdict="reproduced" if rises else ("not reproduced at this scale" if rho_dom < 0 else "inconclusive"),
               verdict_class="reproduced" if max(cls) - min(cls) <= 0.05 else "not reproduced at this scale")
    return out


def ablation_verdicts(iters: Mapping[int, float], eps: Mapping[float, float], noise_sd: float | None) -> dict[str, Any]:
    """Verdicts of the GCA-INCE ablations (paper §5.4) from ``{T: accuracy}`` and ``{ε: accuracy}``:
    iterations — mean accuracy at ``T ≥ 5`` above ``T = 1`` by more than 2 ``noise_sd`` (the
    seed-to-seed sd of single runs) is ``"reproduced"``, below by as much ``"not reproduced at this
    scale"``, else ``"inconclusive"``; ε — ``"reproduced"`` if the best ε lies in [0.2, 0.6] and beats
    the smallest ε by more than 2 ``noise_sd``, ``"inconclusive"`` if the best lies there but within
    that margin (or without a noise estimate), else ``"not reproduced at this scale"``."""
    out: dict[str, Any] = {}
    t1 = iters.get(1)
    t5 = [v for t, v in iters.items() if t >= 5]
    out["t1"] = float("nan") if t1 is None else t1
    out["t5plus"] = float(sum(t5) / len(t5)) if t5 else float("nan")
    if t1 is None or not t5:
        out["iters"] = "missing (not computed)"
    elif noise_sd is None:
        out["iters"] = "inconclusive (no noise estimate)"
    else:
        diff = out["t5plus"] - t1
        out["iters"] = ("reproduced" if diff > 2 * noise_sd else
                        "not reproduced at this scale" if diff < -2 * noise_sd else "inconclusive")
    if len(eps) < 2:
        out["eps"] = "missing (not computed)"
        out["best_eps"] = float("nan")
    else:
        best = max(eps, key=eps.get)
        smallest = min(eps)
        out["best_eps"] = best
        margin = eps[best] - eps[smallest]
        out["eps_margin"] = margin
        if not 0.2 <= best <= 0.6:
            out["eps"] = "not reproduced at this scale"
        elif noise_sd is None or margin <= 2 * noise_sd:
            out["eps"] = "inconclusive"
        else:
            out["eps"] = "reproduced"
    return out


def measure_step_times(methods: Sequence[str], *, batch_size: int = 256, image_size: int = 16, width: int = 16,
                       in_channels: int = 3, repeats: int = 5, warmup: int = 1, seed: int = 0,
                       threads: int | None = 1) -> dict[str, dict[str, float]]:
    """Wall-clock seconds of one training step (random images → encoder + projector →
    loss → backward) per method, measured **interleaved** (round-robin over methods, ``repeats``
    rounds) so that load changes hit every method alike; also the loss alone (forward + backward on
    fixed embeddings). Returns ``{method: {"step_median", "step_min", "loss_median", "loss_min"}}``."""
    import statistics

    import torch

    from gca.losses import make_loss
    from gca.models import build_model

    if threads is not None:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * batch_size, in_channels, image_size, image_size, generator=g)
    z_fixed = torch.randn(2 * batch_size, 128, generator=g)
    torch.manual_seed(seed)
    models = {m: build_model(backbone="small", in_channels=in_channels, width=width, projector_hidden_dim=512,
                             projector_out_dim=128) for m in methods}
    loss_fns = {}
    for m in methods:
        name, kw = (m.split("@")[0], dict(kv.split("=") for kv in m.split("@")[1:])) if "@" in m else (m, {})
        loss_fns[m] = make_loss(name, **{k: (int(v) if v.isdigit() else float(v)) for k, v in kw.items()})
    step_t = {m: [] for m in methods}
    loss_t = {m: [] for m in methods}
    for r in range(warmup + repeats):
        for m in methods:
            model = models[m]
            t0 = time.perf_counter()
            out = model(x)
            z = out[1] if isinstance(out, tuple) else out
            z1, z2 = z.float().chunk(2)
            loss = loss_fns[m](z1, z2)
            loss.backward()
            t1 = time.perf_counter()
            zz = z_fixed.clone().requires_grad_(True)
            a, b = zz.chunk(2)
            loss_fns[m](a, b).backward()
            t2 = time.perf_counter()
            if r >= warmup:
                step_t[m].append(t1 - t0)
                loss_t[m].append(t2 - t1)
            model.zero_grad(set_to_none=True)
    return {m: {"step_median": statistics.median(step_t[m]), "step_min": min(step_t[m]),
                "loss_median": statistics.median(loss_t[m]), "loss_min": min(loss_t[m]),
                "step_all": step_t[m], "loss_all": loss_t[m]} for m in methods}


def cost_verdict(times: Mapping[str, dict], multi: str, one: str, *, threshold: float = 0.05) -> dict[str, Any]:
    """Is a multi-step loss's training step at most ``1 + threshold`` times its one-step counterpart's?
    Uses the per-round ratios of :func:`measure_step_times` (interleaved rounds, so paired):
    ``"reproduced"`` if their upper quartile is ≤ ``1 + threshold``, ``"not reproduced at this
    scale"`` if their lower quartile is above it, else ``"inconclusive"`` (load noise)."""
    import statistics

    ratios = sorted(a / b for a, b in zip(times[multi]["step_all"], times[one]["step_all"]))
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    lo, med, hi = q[0], statistics.median(ratios), q[2]
    limit = 1.0 + threshold
    verdict = "reproduced" if hi <= limit else ("not reproduced at this scale" if lo > limit else "inconclusive")
    return {"ratio_median": med, "ratio_q25": lo, "ratio_q75": hi, "verdict": verdict, "rounds": len(ratios)}


def saved_tensor_bytes(method: str, *, n_pairs: int = 256, dim: int = 128, seed: int = 0, **hparams) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one loss evaluation
    (``torch.autograd.graph.saved_tensors_hooks``): the memory cost of a gradient mode, device-free."""
    import torch

    from gca.losses import make_loss

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2 * n_pairs, dim, generator=g, requires_grad=True)
    total = 0
    seen: set[int] = set()

    def pack(t):
        nonlocal total
        key = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        a, b = z.chunk(2)
        loss = make_loss(method, **hparams)(a, b)
    # A custom autograd.Function may also keep tensors as attributes of its context (the unrolled
    # solver keeps its kernel and per-step records there), which the hooks above do not see.
    for held in _tensors_held_by_contexts(loss.grad_fn):
        pack(held)
    loss.backward()
    return total


def _tensors_held_by_contexts(root) -> list:
    """Tensors reachable from the Python attributes of the custom-Function nodes of an autograd graph."""
    import torch

    out, stack, visited = [], [root], set()

    def collect(obj, depth):
        if isinstance(obj, torch.Tensor):
            out.append(obj)
        elif depth < 4 and isinstance(obj, (list, tuple)):
            for x in obj:
                collect(x, depth + 1)
        elif depth < 4 and isinstance(obj, dict):
            for x in obj.values():
                collect(x, depth + 1)
        elif depth < 4 and hasattr(obj, "__dict__") and not isinstance(obj, type) and type(obj).__module__.startswith("gca"):
            for x in vars(obj).values():
                collect(x, depth + 1)

    while stack:
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            for name, value in vars(node).items():
                if not name.startswith("_"):
                    collect(value, 0)
        stack.extend(fn for fn, _ in node.next_functions)
    return out


#: Exit status of ``one`` when another process holds the run's claim (not a failure).
EXIT_CLAIMED = 3


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


def _profile(text: str) -> str:
    try:
        study_profile(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (``prog: error: message``), exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; an error is one line on stderr (exit 2) unless ``--debug`` or ``GCA_DEBUG=1``."""
    parser = _OneLineParser(prog="python -m gca.experiments", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also: GCA_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the study's missing runs (each result written when it finishes)")
    p.add_argument("--profile", default="cpu", type=_profile)
    p.add_argument("--only", nargs="+", default=None, choices=EXPERIMENTS, help="only these experiments")
    p.add_argument("--workers", type=_positive_int, default=1)
    p.add_argument("--force", action="store_true", help="recompute runs that have a current result")
    p.add_argument("--log", default=None)
    p.add_argument("--watch", type=_seconds, default=0.0, help="seconds to keep polling for code changes once done")
    p.add_argument("--poll", type=_seconds, default=20.0,
                   help="seconds between plans while nothing can be started (default 20)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p = sub.add_parser("status", help="done / running / stale / missing for every run of the plan")
    p.add_argument("--profile", default="cpu", type=_profile)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--only", nargs="+", default=None, choices=EXPERIMENTS)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p = sub.add_parser("one", help="compute one run (used by 'run')")
    p.add_argument("--profile", default="cpu", type=_profile)
    p.add_argument("--spec", required=True, help="RunSpec as JSON")
    p.add_argument("--reuse-after", type=float, default=None,
                   help="recompute unless the current result was written after this POSIX time (force mode)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p = sub.add_parser("check", help="is a result file current? (prints done / missing / stale: why)")
    p.add_argument("paths", nargs="*", metavar="path", help="result files")
    p.add_argument("--profile", default=None, type=_profile,
                   help="check every result file stored for this profile instead")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("GCA_DEBUG", "").strip() not in ("", "0")
    try:
        return _main(args, debug)
    except (ValueError, TypeError, OSError) as exc:
        if debug:
            raise
        print(f"python -m gca.experiments {args.command}: error: {exc} (--debug for the traceback)", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace, debug: bool = False) -> int:
    if args.command == "run":
        return 1 if run_study(args.profile, experiments=args.only, workers=args.workers, force=args.force,
                              log_path=args.log, watch_s=args.watch, poll_s=args.poll) else 0
    if args.command == "status":
        rows = study_status(args.profile, args.only)
        if args.json:
            print(json.dumps([{"spec": s.to_dict(), "state": st, "path": str(p)} for s, st, p in rows]))
            return 0
        for spec, state, path in rows:
            print(f"{state:8s} {spec.label:45s} {path.name if state == 'done' else ''}")
        counts = {}
        for _, state, _ in rows:
            counts[state.split(':')[0]] = counts.get(state.split(':')[0], 0) + 1
        print(counts)
        return 0
    if args.command == "one":
        import warnings

        warnings.simplefilter("default")
        spec = _parse_spec(args.spec)
        with CodeTracker() as tracker:  # from before the first gca import of the run
            try:
                path = result_path(spec, args.profile, result_key(spec, args.profile))
            except (ValueError, TypeError) as exc:  # a bad override in --spec: an input error
                raise ValueError(f"--spec: {exc}") from exc
            try:
                rec, computed = _run_or_reuse(spec, args.profile, tracker=tracker, reuse_after=args.reuse_after)
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
            print(f"done elsewhere: {os.path.relpath(path, _REPO_ROOT)} was written by another process "
                  "meanwhile; not recomputed")
            return 0
        m = rec["metrics"]
        print(f"linear {m['linear_accuracy']:.4f} knn {m['knn_accuracy']:.4f} "
              f"total {rec['timing']['total_s']:.0f} s -> {os.path.relpath(result_path(spec, args.profile, rec['key']), _REPO_ROOT)}")
        return 0
    if args.command == "check":
        return _check(args.paths, args.profile)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
