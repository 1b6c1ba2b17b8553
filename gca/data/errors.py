"""The three ways data can fail: files absent, files damaged, a download that did not complete."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DatasetNotFoundError", "DatasetCorruptError", "DownloadError", "damaged"]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not under the data root; the message says where we looked and how to fetch."""


class DownloadError(RuntimeError):
    """:func:`~gca.data.fetch` could not download or verify a file (network unreachable, bad checksum)."""


class DatasetCorruptError(ValueError):
    """A dataset file exists but cannot be read (truncated, empty, not the expected format)."""


def damaged(path: Path, exc: BaseException) -> DatasetCorruptError:
    """The error for a file that exists but cannot be read: names the file, the cause and the remedy."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty or truncated"
    return DatasetCorruptError(f"{path} is damaged ({type(exc).__name__}: {detail}); delete it and write it again "
                               "(gca data prepare cifar10 / gca data fetch NAME, or your copy of the official files)")
