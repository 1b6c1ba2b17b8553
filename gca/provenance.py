"""Provenance of a result: code version, packages, machine, seed, data checksum, time.

Every run directory, cached result and saved figure carries the dictionary returned by
:func:`collect_provenance`, so a reader can tell exactly what produced it — including the CPU
model and the BLAS kernels (:func:`cpu_model`, :func:`blas_info`): floating-point results of the
same code differ in the last bits across CPUs and BLAS builds, and training amplifies them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from gca import __version__

try:  # optional (installed with scikit-learn): without it the BLAS libraries are not listed
    import threadpoolctl
except ImportError:  # pragma: no cover
    threadpoolctl = None

__all__ = [
    "git_commit",
    "git_dirty",
    "package_versions",
    "device_description",
    "cpu_model",
    "blas_info",
    "collect_provenance",
    "config_hash",
    "file_checksum",
    "array_checksum",
]

_REPO_ROOT = Path(__file__).resolve().parent.parent
_DEFAULT_PACKAGES = ("torch", "numpy", "scipy", "pot", "scikit-learn", "matplotlib", "kornia")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=_REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit() -> str:
    """Commit hash of the working tree holding :mod:`gca`, or ``"unknown"`` outside git."""
    return _git("rev-parse", "HEAD") or "unknown"


def git_dirty() -> bool | None:
    """Whether tracked files differ from the commit (``None`` outside git)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def package_versions(packages: Iterable[str] = _DEFAULT_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (``"not installed"`` where absent)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description(device: Any = None) -> str:
    """Human-readable name of ``device`` (default: CUDA if available, else the CPU)."""
    dev = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    )
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return f"cpu:{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s "model name"; else ``platform.processor()``, else
    the machine type)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


#: Environment variables that change which BLAS kernel runs or how many threads it uses.
_BLAS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
             "MKL_DEBUG_CPU_TYPE", "OPENBLAS_CORETYPE", "OPENBLAS_VERBOSE", "ATEN_CPU_CAPABILITY")


def _torch_build_value(key: str) -> str | None:
    """A ``KEY=value`` of torch's build settings (:func:`torch.__config__.show`)."""
    match = re.search(rf"\b{key}=([^,\s]+)", torch.__config__.show())
    return match.group(1) if match else None


def blas_info() -> dict[str, Any]:
    """The BLAS kernels this process computes with.

    ``libraries``: every BLAS/OpenMP library loaded (threadpoolctl: ``user_api``,
    ``internal_api``, ``version``, ``architecture`` — the kernel it chose for this CPU —,
    ``threading_layer``, ``num_threads``), with the package that ships it (``numpy``, ``torch``,
    ``scipy`` or ``other``); ``torch``: its own BLAS (``BLAS_INFO``, linked statically, so not in
    ``libraries``), the CPU capability its kernels dispatch to and its thread count; ``env``: the
    environment variables that change kernels or threads, where set.
    """
    libraries = []
    if threadpoolctl is not None:
        for lib in threadpoolctl.threadpool_info():
            path = str(lib.get("filepath", ""))
            owner = next((p for p in ("numpy", "torch", "scipy") if f"{os.sep}{p}" in path), "other")
            libraries.append({"owner": owner, **{k: lib.get(k) for k in (
                "user_api", "internal_api", "version", "architecture", "threading_layer", "num_threads", "prefix")}})
    torch_blas = {
        "blas": _torch_build_value("BLAS_INFO"), "lapack": _torch_build_value("LAPACK_INFO"),
        "mkl": torch.backends.mkl.is_available(),
        "mkl_version": (re.findall(r"Math Kernel Library Version (\S+)", torch.__config__.show()) or [None])[0],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "num_threads": torch.get_num_threads(),
    }
    return {"libraries": libraries, "torch": torch_blas, "numpy": np.__version__,
            "env": {k: os.environ[k] for k in _BLAS_ENV if k in os.environ}}


def collect_provenance(
    *, seed: int | None = None, data_checksum: str | None = None, device: Any = None, **extra: Any
) -> dict[str, Any]:
    """Everything needed to say what produced a result.

    Returns a JSON-serialisable dict: ``git_commit``, ``git_dirty``, ``gca_version``,
    ``packages``, ``python``, ``device``, ``cpu`` (:func:`cpu_model`), ``blas``
    (:func:`blas_info`), ``seed``, ``data_checksum``, ``time`` (UTC, ISO 8601) plus any ``extra``
    keyword given by the caller (e.g. ``notebook=...``, ``parameters=...``).
    """
    record: dict[str, Any] = {
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "gca_version": __version__,
        "packages": package_versions(),
        "python": platform.python_version(),
        "device": device_description(device),
        "cpu": cpu_model(),
        "blas": blas_info(),
        "seed": seed,
        "data_checksum": data_checksum,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(extra)
    return record


def config_hash(config: Any, *, code_version: str | None = None, length: int = 16) -> str:
    """Stable hash of a JSON-serialisable ``config`` (keys sorted) and a code version string."""
    payload = json.dumps({"config": config, "code": code_version}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def file_checksum(path: str | os.PathLike, *, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def array_checksum(*arrays: Any, length: int = 16) -> str:
    """SHA-256 over the raw bytes, dtypes and shapes of numpy arrays / tensors (data identity)."""
    h = hashlib.sha256()
    for arr in arrays:
        if hasattr(arr, "detach"):
            arr = arr.detach().cpu().numpy()
        arr = np.ascontiguousarray(arr)
        h.update(str((arr.dtype.str, arr.shape)).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:length]
