"""CIFAR-10 and CIFAR-100 in the official python format: ``cifar-10-batches-py/``, ``cifar-100-python/``.

Each batch file is a Python-2 pickle of a dict with ``data`` (N × 3072 uint8, rows channel-major:
the R plane, then G, then B, 32 × 32 each), the labels and the file names.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from gca.data.datasets import DatasetInfo, ImageDataset, Resource
from gca.data.errors import damaged
from gca.data.loaders.common import no_options

__all__ = ["CIFAR10_CLASSES", "CIFAR10", "CIFAR100", "load_cifar10", "load_cifar100", "unpickle"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def unpickle(path: Path) -> dict:
    """One official CIFAR batch (a Python-2 pickle of a dict); DatasetCorruptError if unreadable."""
    try:
        with open(path, "rb") as fh:
            out = pickle.load(fh, encoding="latin1")  # official files are Python-2 pickles
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, MemoryError) as exc:
        raise damaged(path, exc) from None
    if not isinstance(out, dict):
        raise damaged(path, ValueError(f"holds a {type(out).__name__}, not the dict of a CIFAR batch"))
    return out


def load_cifar10(root: Path, split: str, **kw) -> ImageDataset:
    """CIFAR-10: the five training batches in order (50,000 images) or the test batch (10,000).

    ``description`` is "CIFAR-10 (JPEG copy)" when the batches name ``.jpg`` files (the offline
    copy of :func:`gca.data.prepare_offline_cifar10`; the official files name ``.png``).
    """
    no_options("cifar10", kw)
    base = root / "cifar-10-batches-py"
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [base / f for f in files + ["batches.meta"] if not (base / f).is_file()]
    if missing:
        raise CIFAR10.not_found([base], f"Missing: {', '.join(p.name for p in missing)}.")
    data, labels, names = [], [], []
    for f in files:
        d = unpickle(base / f)
        data.append(np.asarray(d["data"], dtype=np.uint8))
        labels.extend(d["labels"])
        names.extend(d.get("filenames", []))
    classes = list(unpickle(base / "batches.meta")["label_names"])
    images = torch.from_numpy(np.concatenate(data).reshape(-1, 3, 32, 32))
    jpeg_copy = bool(names) and all(str(n).endswith(".jpg") for n in names)  # official files name .png
    return ImageDataset(images, torch.tensor(labels), classes, "cifar10", split,
                        description=f"{CIFAR10.description} (JPEG copy)" if jpeg_copy else CIFAR10.description)


def load_cifar100(root: Path, split: str, *, label: str = "fine", **kw) -> ImageDataset:
    """CIFAR-100 with its 100 ``"fine"`` classes or its 20 ``"coarse"`` superclasses (``label=``)."""
    no_options("cifar100", kw)
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' (100 classes) or 'coarse' (20 superclasses), got {label!r}")
    base = root / "cifar-100-python"
    if not (base / split).is_file() or not (base / "meta").is_file():
        raise CIFAR100.not_found([base])
    d = unpickle(base / split)
    meta = unpickle(base / "meta")
    images = torch.from_numpy(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
    return ImageDataset(images, torch.tensor(d[f"{label}_labels"]), list(meta[f"{label}_label_names"]),
                        "cifar100", split, description=CIFAR100.description)


CIFAR10 = DatasetInfo(
    "cifar10", "CIFAR-10", ("train", "test"), "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
    load_cifar10,
    (Resource("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
              "c58f30108f718f92721af3b95e74349a", extract=True),),
    available=lambda root: (root / "cifar-10-batches-py" / "test_batch").is_file(),
    hint=("Offline, the JPEG copy can be prepared with gca.data.prepare_offline_cifar10(data_dir) "
          "(runs shared/data/cifar10/make_cifar10.py)."))

CIFAR100 = DatasetInfo(
    "cifar100", "CIFAR-100", ("train", "test"), "cifar-100-python/{train,test,meta}", load_cifar100,
    (Resource("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
              "eb9058c3a382ffc7106e4002c42a8d85", extract=True),),
    available=lambda root: (root / "cifar-100-python" / "test").is_file())
