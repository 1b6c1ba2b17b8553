"""Subsets and splits: class-balanced subsets and seeded stratified splits (train/validation, train/test).

Every function is seeded (a :class:`torch.Generator` per call) and returns sorted indices or datasets
in their original order, so a subset's checksum depends only on the data and the seed.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["check_seed", "stratified_split", "balanced_subset", "train_val_split"]


def check_seed(seed) -> int:
    """``seed`` as an int (TypeError for anything else, bools included)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}: {seed!r}")
    return int(seed)


def stratified_split(strata: torch.Tensor, fraction: float, *, seed: int,
                     nonempty: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held out): per stratum ``round(fraction · n_s)`` held out, seeded; both sorted.

    ``nonempty=True``: every stratum of at least two items keeps at least one item on each side
    (the linear probe's per-class validation split).
    """
    if not isinstance(strata, torch.Tensor) or strata.dim() != 1:
        raise TypeError(f"strata must be a 1-D tensor of stratum ids, got {type(strata).__name__} "
                        f"{tuple(getattr(strata, 'shape', ()))}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must lie in (0, 1), got {fraction!r}")
    g = torch.Generator().manual_seed(check_seed(seed))
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
    g = torch.Generator().manual_seed(check_seed(seed))
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
    train_idx, val_idx = stratified_split(strata, float(val_fraction), seed=check_seed(seed))
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise ValueError(f"val_fraction={val_fraction} leaves an empty split for {len(ds)} images; change it.")
    train, val = ds.subset(train_idx), ds.subset(val_idx)
    val.split = f"{ds.split}-val"
    return train, val
