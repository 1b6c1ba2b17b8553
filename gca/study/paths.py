"""Where the study reads and writes: the repository, its results, its run directories, its data.

Every location can be moved by an environment variable, so that tests, a second checkout or a
verification (:func:`gca.study.verify.verify`) never touch the committed results.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "results_root", "runs_root", "use_repo_data_dir"]

#: The checkout holding :mod:`gca` (results, run directories and data live under it by default).
REPO_ROOT = Path(__file__).resolve().parents[2]


def results_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$GCA_RESULTS_DIR``, else ``<repo>/results``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("GCA_RESULTS_DIR") or REPO_ROOT / "results")


def runs_root(root: str | os.PathLike | None = None) -> Path:
    """Run directories (checkpoints, metrics; git-ignored): ``root`` if given, else ``$GCA_RUNS_DIR``,
    else ``<repo>/runs/experiments``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("GCA_RUNS_DIR") or REPO_ROOT / "runs" / "experiments")


def use_repo_data_dir() -> None:
    """Without ``$GCA_DATA_DIR``, point it at ``<repo>/data`` when that exists, so that a notebook
    (whose working directory is ``notebooks/``) finds the same data as the runner. The data root is
    not part of a run's configuration (the data checksum is recorded in its provenance)."""
    if not os.environ.get("GCA_DATA_DIR") and (REPO_ROOT / "data").is_dir():
        os.environ["GCA_DATA_DIR"] = str(REPO_ROOT / "data")
