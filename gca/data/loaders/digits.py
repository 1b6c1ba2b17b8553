"""scikit-learn's handwritten digits (1,797 images at 8 × 8): embedded, so available on every machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gca.data.datasets import DatasetInfo, ImageDataset
from gca.data.loaders.common import check_size, no_options, upsample_uint8
from gca.data.splits import stratified_split

__all__ = ["DIGITS", "load_digits"]


def load_digits(root: Path, split: str, *, size: int = 16, **kw) -> ImageDataset:
    """scikit-learn's 1,797 handwritten digits (8×8, grey levels 0–16), 1 channel.

    Grey levels are mapped to 0–255 (``round(v·255/16)``) and the images upsampled bilinearly to
    ``size × size`` (16 by default; ``size=8`` keeps the raw grid). No official split exists: a
    fixed (seed 0) stratified split holds out 20 % as ``test`` (360 images).
    """
    no_options("digits", kw)
    size = check_size(size)
    from sklearn.datasets import load_digits as _sklearn_digits  # deferred: scikit-learn imports slowly

    d = _sklearn_digits()
    raw = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    train_idx, test_idx = stratified_split(labels, 0.2, seed=0)
    idx = train_idx if split == "train" else test_idx
    return ImageDataset(upsample_uint8(raw[idx], size), labels[idx], [str(i) for i in range(10)], "digits", split,
                        description=DIGITS.description)


DIGITS = DatasetInfo("digits", "scikit-learn digits", ("train", "test"), "(embedded in scikit-learn)",
                     load_digits, embedded=True, available=lambda root: True)
