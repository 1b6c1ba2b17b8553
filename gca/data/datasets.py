"""What a dataset is: the in-memory and lazy containers, and the record describing each dataset.

:class:`ImageDataset` holds ``uint8`` images ``(N, C, H, W)``, ``int64`` labels, optional domain
labels and a content checksum (:func:`gca.provenance.array_checksum`) that runs record in their
provenance; :class:`LazyImageDataset` decodes an image folder on access. :class:`DatasetInfo` is one
row of the registry (:data:`gca.data.DATASETS`): its loader, splits, official files and how to
obtain them; :meth:`DatasetInfo.not_found` writes the error a loader raises when files are absent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from gca.data.errors import DatasetNotFoundError
from gca.provenance import array_checksum

__all__ = ["ENV_VAR", "DATASET_STATS", "ImageDataset", "LazyImageDataset", "Resource", "DatasetInfo",
           "as_index_tensor", "decode_image"]

#: The environment variable naming the data root (:func:`gca.data.resolve_data_dir`).
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


def as_index_tensor(indices, n: int) -> torch.Tensor:
    """``indices`` (any int sequence/array/tensor) as a flat int64 tensor, checked against ``n`` images."""
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
    name : str, canonical dataset name (a key of :data:`gca.data.DATASETS`)
    split : str
    domains : Tensor, int64, shape (N,), or None, domain index per image (multi-domain data)
    domain_names : list[str] or None
    checksum : str, :func:`gca.provenance.array_checksum` of images, labels (and domains)
    description : str, human-readable name for reports (default: ``name``), e.g. "CIFAR-10 (JPEG copy)"
        when the files come from the offline JPEG copy (detected from the file names stored in the batches)

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
        if not self.description:  # the loaders pass their registry entry's description
            self.description = self.name
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
        idx = as_index_tensor(indices, len(self))
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
                 root: Path, domains=None, domain_names: list | None = None, description: str = "") -> None:
        self.paths = [Path(p) for p in paths]
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        self.classes = list(classes)
        self.name = name
        self.split = split
        self.size = int(size)
        self.root = Path(root)
        self.domains = None if domains is None else torch.as_tensor(np.asarray(domains), dtype=torch.int64)
        self.domain_names = domain_names
        self.description = description or name
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
        return decode_image(self.paths[i], self.size)

    def __getitem__(self, i):
        return self._decode(int(i)), int(self.labels[i])

    def load(self, indices) -> torch.Tensor:
        """Decode the images at ``indices`` into a uint8 tensor (B, 3, size, size)."""
        idx = as_index_tensor(indices, len(self))
        if not len(idx):
            return torch.empty(0, 3, self.size, self.size, dtype=torch.uint8)
        return torch.stack([self._decode(int(i)) for i in idx])

    def subset(self, indices) -> "LazyImageDataset":
        idx = as_index_tensor(indices, len(self)).tolist()
        return LazyImageDataset([self.paths[i] for i in idx], self.labels[idx], self.classes, self.name, self.split,
                                size=self.size, root=self.root,
                                domains=None if self.domains is None else self.domains[idx],
                                domain_names=self.domain_names, description=self.description)

    def materialize(self, *, progress: bool = True) -> ImageDataset:
        """Decode every image into memory (``N × 3 × size²`` bytes)."""
        from tqdm.auto import tqdm  # deferred: an optional dependency (progress bars), needed only here

        images = torch.empty(len(self), 3, self.size, self.size, dtype=torch.uint8)
        for i in tqdm(range(len(self)), desc=f"decoding {self.name}/{self.split}", disable=not progress):
            images[i] = self._decode(i)
        return ImageDataset(images, self.labels.clone(), self.classes, self.name, self.split,
                            domains=self.domains, domain_names=self.domain_names, description=self.description)


def decode_image(path: Path, size: int) -> torch.Tensor:
    """One image file as uint8 (3, size, size): RGB, shorter side resized (bicubic), centre-cropped."""
    from PIL import Image, ImageOps  # deferred: only the folder datasets decode image files

    with Image.open(path) as img:
        img = ImageOps.fit(img.convert("RGB"), (size, size), method=Image.BICUBIC)
        arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------------------------
# The registry's records
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
    """One dataset of the registry: how to load it, which splits it has, where its files are.

    ``loader(root, split, **options)`` reads the files under the data root ``root``;
    ``available(root)`` says (cheaply, without reading pixels) whether they are there;
    ``resources`` are the official downloads with their published md5 (empty: no public download,
    ``manual`` says how to obtain it); ``embedded`` datasets ship inside a Python package;
    ``derived_from`` names the dataset whose files a derived dataset (rotation or style domains) reads.
    """

    name: str
    description: str
    splits: tuple[str, ...]
    location: str  # what is looked for under the data root (for messages)
    loader: Callable = field(repr=False, compare=False)
    resources: tuple[Resource, ...] = ()
    manual: str = ""  # how to obtain it when there is no public download
    embedded: bool = False
    available: Callable[[Path], bool] | None = field(default=None, repr=False, compare=False)
    hint: str = ""  # a further way to obtain it, appended to the not-found message
    derived_from: str = ""  # computed from this dataset's files (fetching fetches those)

    def not_found(self, searched: Sequence[Path], extra: str = "") -> DatasetNotFoundError:
        """The error for absent files: the folders searched, what was expected, how to fetch it."""
        where = "\n  ".join(str(p) for p in searched)
        if self.resources:
            how = f"Fetch it with `gca data fetch {self.name}` (or gca.data.fetch({self.name!r}, data_dir=...))."
        else:
            how = self.manual
        if self.hint:
            how += " " + self.hint
        msg = (f"{self.description} not found. Searched:\n  {where}\nexpected {self.location}. {how} "
               f"The data root is the data_dir argument / --data-dir, else ${ENV_VAR}, else ./data.")
        return DatasetNotFoundError(msg + (" " + extra if extra else ""))
