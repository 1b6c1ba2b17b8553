"""SVHN (cropped digits) in the official MATLAB format: ``svhn/{train,test,extra}_32x32.mat``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gca.data.datasets import DatasetInfo, ImageDataset, Resource
from gca.data.loaders.common import no_options

__all__ = ["SVHN", "load_svhn"]


def _candidates(root: Path, split: str) -> list[Path]:
    return [root / "svhn" / f"{split}_32x32.mat", root / f"{split}_32x32.mat"]


def load_svhn(root: Path, split: str, **kw) -> ImageDataset:
    """SVHN: ``X`` (32, 32, 3, N) and ``y`` (N, 1) of the ``.mat`` file; the digit 0 (labelled 10) becomes 0."""
    no_options("svhn", kw)
    import scipy.io  # deferred: scipy is needed only for this format

    candidates = _candidates(root, split)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise SVHN.not_found(candidates)
    mat = scipy.io.loadmat(path)
    x = np.asarray(mat["X"], dtype=np.uint8)  # (32, 32, 3, N)
    y = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    y = np.where(y == 10, 0, y)  # the official files label the digit 0 as 10
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    return ImageDataset(images, torch.from_numpy(y), [str(i) for i in range(10)], "svhn", split,
                        description=SVHN.description)


SVHN = DatasetInfo(
    "svhn", "SVHN (cropped digits)", ("train", "test", "extra"), "svhn/{train,test,extra}_32x32.mat", load_svhn,
    (Resource("http://ufldl.stanford.edu/housenumbers/train_32x32.mat", "train_32x32.mat",
              "e26dedcc434d2e4c54c9b2d4a06d8373", subdir="svhn"),
     Resource("http://ufldl.stanford.edu/housenumbers/test_32x32.mat", "test_32x32.mat",
              "eb5a983be6a315427106f1b164d9cef3", subdir="svhn")),
    available=lambda root: any(p.is_file() for p in _candidates(root, "test")))
