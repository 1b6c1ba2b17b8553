"""CIFAR-10-C (Hendrycks & Dietterich, 2019): ``CIFAR-10-C/<corruption>.npy`` + ``labels.npy``.

Each ``<corruption>.npy`` holds 50,000 images (N, 32, 32, 3): severities 1..5 in blocks of the
10,000 CIFAR-10 test images; ``labels.npy`` holds their labels in the same order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gca.data.datasets import DatasetInfo, ImageDataset, Resource
from gca.data.loaders.cifar import CIFAR10_CLASSES
from gca.data.loaders.common import no_options

__all__ = ["CIFAR10C_CORRUPTIONS", "CIFAR10C", "load_cifar10c"]

#: The 19 corruption files of CIFAR-10-C (15 benchmark corruptions + 4 extra).
CIFAR10C_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate",
)


def _folders(root: Path) -> tuple[Path, Path]:
    return root / "CIFAR-10-C", root / "cifar10-c"


def load_cifar10c(root: Path, split: str, *, corruption="all", severity=(1, 2, 3, 4, 5), **kw) -> ImageDataset:
    """CIFAR-10-C: ``corruption`` a name, a list of names or "all"; ``severity`` 1–5 or a list.

    Everything (19 corruptions × 5 severities) is 950,000 images, 2.9 GB in memory: select what
    you evaluate (e.g. ``severity=5``).

    Each ``<corruption>.npy`` holds 50,000 images: severities 1..5 in blocks of 10,000 test images.
    ``.domains`` indexes ``.domain_names`` = ``["<corruption>-<severity>", ...]``.
    """
    no_options("cifar10-c", kw)
    if corruption == "all":
        names = list(CIFAR10C_CORRUPTIONS)
    else:
        names = [corruption] if isinstance(corruption, str) else list(corruption)
    bad = [c for c in names if c not in CIFAR10C_CORRUPTIONS]
    if bad or not names:
        raise ValueError(f"unknown CIFAR-10-C corruption(s) {bad or names}; choose from {CIFAR10C_CORRUPTIONS} or 'all'")
    sevs = [severity] if isinstance(severity, (int, np.integer)) else list(severity)
    if not sevs or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 1 <= s <= 5 for s in sevs):
        raise ValueError(f"severity must be an int in 1..5 or a list of them, got {severity!r}")
    base = next((p for p in _folders(root) if p.is_dir()), root / "CIFAR-10-C")
    needed = [base / "labels.npy"] + [base / f"{c}.npy" for c in names]
    if any(not p.is_file() for p in needed):
        raise CIFAR10C.not_found([base], "Missing: " + ", ".join(p.name for p in needed if not p.is_file()) + ".")
    labels_all = np.load(base / "labels.npy")
    n = labels_all.shape[0] // 5
    from tqdm.auto import tqdm  # deferred: an optional dependency (progress bars), needed only here

    imgs, labels, domains, domain_names = [], [], [], []
    for c in tqdm(names, desc="CIFAR-10-C", disable=len(names) < 3):
        arr = np.load(base / f"{c}.npy", mmap_mode="r")
        if arr.shape[0] != labels_all.shape[0] or arr.shape[1:] != (32, 32, 3):
            raise ValueError(f"{base / (c + '.npy')} has shape {arr.shape}, expected ({labels_all.shape[0]}, 32, 32, 3)")
        for s in sevs:
            sl = slice((s - 1) * n, s * n)
            imgs.append(torch.from_numpy(np.ascontiguousarray(arr[sl]).transpose(0, 3, 1, 2).copy()))
            labels.append(torch.from_numpy(labels_all[sl].astype(np.int64)))
            domains.append(torch.full((n,), len(domain_names), dtype=torch.int64))
            domain_names.append(f"{c}-{s}")
    return ImageDataset(torch.cat(imgs), torch.cat(labels), list(CIFAR10_CLASSES), "cifar10-c", split,
                        domains=torch.cat(domains), domain_names=domain_names, description=CIFAR10C.description)


CIFAR10C = DatasetInfo(
    "cifar10-c", "CIFAR-10-C", ("test",), "CIFAR-10-C/{<corruption>.npy, labels.npy}", load_cifar10c,
    (Resource("https://zenodo.org/record/2535967/files/CIFAR-10-C.tar", "CIFAR-10-C.tar",
              "56bf5dcef84df0e2308c6dcbcbbd8499", extract=True),),
    available=lambda root: any((p / "labels.npy").is_file() for p in _folders(root)))
