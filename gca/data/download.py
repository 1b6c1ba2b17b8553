"""Downloads for users with network access: the official files, verified against their published md5.

:func:`fetch` downloads a dataset's :class:`~gca.data.datasets.Resource` files into the data root
(atomically, through a ``.part`` file), checks each md5 (the only checksums the datasets publish)
and extracts archives, refusing paths that would escape the data root. Without network the first
connection fails within ``timeout`` seconds with a :class:`DownloadError` saying so. The Debian
package's Fashion-MNIST ``.gz`` files are recompressed (their md5 differs from the official
archives); they are read, not verified.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from gca.data.errors import DownloadError
from gca.data.registry import DATASETS, canonical_name, resolve_data_dir

__all__ = ["fetch", "md5sum"]


def md5sum(path: Path) -> str:
    """The md5 hex digest of a file (read in 1 MiB chunks)."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, md5: str, *, timeout: float = 10.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (atomically, via a temporary file) and verify its md5."""
    from tqdm.auto import tqdm  # deferred: an optional dependency (progress bars), needed only here

    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"could not download {url}: {exc}. This machine may have no internet access; "
                            f"download the file elsewhere and place it at {dest}.") from exc
    got = md5sum(tmp)
    if got != md5:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"checksum mismatch for {url}: md5 {got}, expected {md5} (published). "
                            "The download is corrupt or the file changed upstream; nothing was kept.")
    tmp.replace(dest)
    return dest


def _extract(archive: Path, into: Path) -> None:
    into = into.resolve()
    if archive.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tar:
            for m in tar.getmembers():  # refuse paths that escape the target folder
                if not (into / m.name).resolve().is_relative_to(into):
                    raise DownloadError(f"{archive} contains an unsafe path {m.name!r}; not extracted")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.12: refuse links/devices as well
                tar.extractall(into, filter="data")
            else:  # pragma: no cover
                tar.extractall(into)
    elif archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(into)
    else:
        raise ValueError(f"do not know how to extract {archive}")


def fetch(name: str, data_dir: str | os.PathLike | None = None, *, timeout: float = 10.0,
          keep_archive: bool = False, progress: bool = True) -> Path:
    """Download dataset ``name`` from its official URLs into the data root and verify the published md5.

    Archives are extracted in place (and removed unless ``keep_archive``). Datasets without a public
    download (ImageNet-100, PACS) raise :class:`DownloadError` with instructions; embedded ones
    (digits, mnist-5k, rotated-digits) need no download; derived ones (rotated-fashion-mnist,
    cifar10-styles) fetch the dataset they are computed from. Without network the first connection fails
    within ``timeout`` seconds with a :class:`DownloadError` saying so. Returns the data root.
    """
    key = canonical_name(name)
    info = DATASETS[key]
    root = resolve_data_dir(data_dir)
    if info.derived_from:  # rotation / style domains: fetch the files they are computed from
        return fetch(info.derived_from, root, timeout=timeout, keep_archive=keep_archive, progress=progress)
    if info.embedded:
        return root
    if not info.resources:
        raise DownloadError(f"{info.description} cannot be downloaded automatically. {info.manual}")
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    for res in info.resources:
        dest = root / res.subdir / res.filename
        _download(res.url, dest, res.md5, timeout=timeout, progress=progress)
        if res.extract:
            _extract(dest, root / res.subdir)
            if not keep_archive:
                dest.unlink()
    return root
