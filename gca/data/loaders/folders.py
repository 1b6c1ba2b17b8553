"""Class folders of image files, decoded with PIL on access: ImageNet-100 and PACS.

``imagenet100/{train,val}/<wnid>/*.JPEG`` (build it with :func:`gca.data.make_imagenet100`) and
``PACS/<domain>/<class>/*`` (the layout of the official zip and of DomainBed). Images are listed in
sorted order per class folder, so the order (and the checksum) depends only on the files.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from gca.data.datasets import DatasetInfo, LazyImageDataset
from gca.data.loaders.common import check_size, no_options
from gca.data.splits import check_seed, stratified_split

__all__ = ["PACS_DOMAINS", "PACS_CLASSES", "IMAGENET100", "PACS", "folder_samples", "load_imagenet100",
           "load_pacs"]

PACS_DOMAINS = ["art_painting", "cartoon", "photo", "sketch"]
PACS_CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}


def folder_samples(base: Path, classes: list[str] | None = None):
    """``(paths, labels, classes)`` of the image files under ``base/<class>/`` (recursively, sorted).

    ``classes`` defaults to the sorted sub-folder names; a listed class without a folder has no images.
    """
    classes = classes or sorted(p.name for p in base.iterdir() if p.is_dir())
    paths, labels = [], []
    for k, c in enumerate(classes):
        files = sorted(Path(d) / f for d, _, fs in os.walk(base / c, followlinks=True) for f in fs
                       if Path(f).suffix.lower() in _IMAGE_SUFFIXES) if (base / c).is_dir() else []
        paths += files
        labels += [k] * len(files)
    return paths, labels, classes


def load_imagenet100(root: Path, split: str, *, size: int = 224, **kw) -> LazyImageDataset:
    """ImageNet-100 (the 100-class ILSVRC-2012 subset of Tian et al., CMC): ``imagenet100/{train,val}/<wnid>/``.

    ``split="test"`` reads the ``val`` folder (ImageNet-100 has no public test labels). Lazy.
    """
    no_options("imagenet100", kw)
    size = check_size(size, 8)
    folder = {"train": "train", "test": "val", "val": "val"}[split]
    base = root / "imagenet100" / folder
    if not base.is_dir() or not any(p.is_dir() for p in base.iterdir()):
        raise IMAGENET100.not_found([base])
    paths, labels, classes = folder_samples(base)
    if not paths:
        raise IMAGENET100.not_found([base], "The class folders hold no images.")
    return LazyImageDataset(paths, labels, classes, "imagenet100", split, size=size, root=base,
                            description=IMAGENET100.description)


def _pacs_folders(root: Path) -> tuple[Path, Path, Path]:
    return root / "PACS", root / "pacs", root / "PACS" / "kfold"


def load_pacs(root: Path, split: str, *, size: int = 64, lazy: bool = False, test_fraction: float = 0.2,
              seed: int = 0, **kw):
    """PACS: ``PACS/<domain>/<class>/*`` (the layout of the official zip and DomainBed).

    PACS ships without a train/test split in this layout; ``split="train"``/``"test"`` is a seeded
    split stratified by (domain, class) with ``test_fraction`` held out, ``"all"`` returns everything.
    Images are resized and centre-cropped to ``size`` (64 by default for CPU-scale runs; 224 for the
    ResNet-50 resolution). ``.domains`` indexes ``.domain_names`` = art_painting, cartoon, photo, sketch.
    """
    no_options("pacs", kw)
    size = check_size(size, 8)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    seed = check_seed(seed)
    base = next((p for p in _pacs_folders(root) if (p / "photo").is_dir()), None)
    if base is None:
        raise PACS.not_found([root / "PACS", root / "pacs"])
    paths, labels, domains = [], [], []
    for d, dom in enumerate(PACS_DOMAINS):
        if not (base / dom).is_dir():
            raise PACS.not_found([base / dom], f"Domain folder {dom!r} is missing.")
        p, lab, _ = folder_samples(base / dom, PACS_CLASSES)
        paths += p
        labels += lab
        domains += [d] * len(p)
    labels_t, domains_t = torch.tensor(labels), torch.tensor(domains)
    if split != "all":
        strata = labels_t * len(PACS_DOMAINS) + domains_t
        train_idx, test_idx = stratified_split(strata, test_fraction, seed=seed)
        keep = train_idx if split == "train" else test_idx
        paths = [paths[i] for i in keep.tolist()]
        labels_t, domains_t = labels_t[keep], domains_t[keep]
    ds = LazyImageDataset(paths, labels_t, PACS_CLASSES, "pacs", split, size=size, root=base,
                          domains=domains_t, domain_names=list(PACS_DOMAINS), description=PACS.description)
    return ds if lazy else ds.materialize()


IMAGENET100 = DatasetInfo(
    "imagenet100", "ImageNet-100", ("train", "test", "val"), "imagenet100/{train,val}/<wnid>/*.JPEG",
    load_imagenet100,
    manual=("ImageNet has no public download (its licence requires registration at image-net.org): download "
            "ILSVRC-2012 (train/ and val/ in class folders), then run "
            "gca.data.make_imagenet100(ilsvrc_dir, data_dir) to link the 100 CMC classes into "
            "<data root>/imagenet100/{train,val}/<wnid>/."),
    available=lambda root: (root / "imagenet100" / "val").is_dir())

PACS = DatasetInfo(
    "pacs", "PACS", ("train", "test", "all"), "PACS/{art_painting,cartoon,photo,sketch}/<class>/*", load_pacs,
    manual=("PACS is distributed by its authors (Li et al., 2017) through Google Drive, without a published "
            "checksum: download PACS.zip from the link on https://domaingeneralization.github.io/ (or with "
            "DomainBed's download script) and unzip it so that <data root>/PACS/photo/dog/ exists."),
    available=lambda root: any((p / "photo").is_dir() for p in _pacs_folders(root)))
