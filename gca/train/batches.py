"""The training data of a run: a class-balanced subset, batches in a seeded order, two augmented views.

In-memory uint8 images (or a lazy folder dataset decoded by worker processes) → per-epoch
permutation (stream 0 of :func:`~gca.train.runtime.epoch_generator_seed`) → each process's slice
of every global batch → two views drawn from the augmentation stream (stream 1), normalised, on
the device. Nothing here depends on the method: for a given seed every method sees the same subset,
the same batches and the same views (issue 12 item 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from gca import augment as gaug
from gca import data as gdata
from gca.train.runtime import epoch_generator_seed

__all__ = ["load_training_data", "dataset_stats", "BatchSource", "ViewMaker", "Batch", "TrainingBatches"]


def load_training_data(config):
    """The training split of ``config.data`` (class-balanced subset drawn with ``train.seed``)."""
    return gdata.load_run_data(config, "train")


def dataset_stats(ds) -> tuple[Tensor, Tensor]:
    """Per-channel normalisation of ``ds`` (published values where known, see :mod:`gca.data`)."""
    return torch.as_tensor(ds.mean, dtype=torch.float32), torch.as_tensor(ds.std, dtype=torch.float32)


class _LazyBatches(torch.utils.data.Dataset):
    def __init__(self, dataset, batches: list[Tensor]):
        self.dataset, self.batches = dataset, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Tensor:
        return self.dataset.load(self.batches[i])


class BatchSource:
    """uint8 image batches on the device: indexed from device memory for in-memory datasets, or
    decoded by ``num_workers`` background processes for lazy folder datasets (ImageNet-100)."""

    def __init__(self, dataset, device: torch.device, num_workers: int):
        self.dataset, self.device, self.num_workers = dataset, device, num_workers
        images = getattr(dataset, "images", None)
        self.images = None
        if images is not None:
            if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
                raise TypeError(f"dataset {dataset.name!r} must hold uint8 images (N, C, H, W)")
            self.images = images.to(device)
        elif not hasattr(dataset, "load"):
            raise TypeError(f"dataset {getattr(dataset, 'name', dataset)!r} has neither .images nor .load(indices)")

    def iterate(self, batches: list[Tensor]) -> Iterator[Tensor]:
        if self.images is not None:
            for idx in batches:
                yield self.images.index_select(0, idx.to(self.device))
            return
        loader = torch.utils.data.DataLoader(
            _LazyBatches(self.dataset, batches), batch_size=None, shuffle=False, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
        )
        for x in loader:
            yield x.to(self.device, non_blocking=True)


class ViewMaker:
    """Augment a uint8 batch twice (independent per-sample randomness) and normalise."""

    def __init__(self, augment_name: str, size: int, mean: Tensor, std: Tensor, device: torch.device):
        self.augment = gaug.build_augment(augment_name, size)
        self.mean = mean.to(device).view(1, -1, 1, 1)
        self.std = std.to(device).view(1, -1, 1, 1)

    def __call__(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        v1 = self.augment(x, generator=generator)
        v2 = self.augment(x, generator=generator)
        return (v1 - self.mean) / self.std, (v2 - self.mean) / self.std


@dataclass(frozen=True)
class Batch:
    """One training batch of this process.

    views: the two augmented, normalised views ``(B_local, C, S, S)`` each; indices: dataset rows
    of this process's slice; global_indices: the rows of the whole (all-process) batch, which
    target plans are built from.
    """

    step: int
    epoch: int
    views: tuple[Tensor, Tensor]
    indices: Tensor
    global_indices: Tensor


class TrainingBatches:
    """Batches of every epoch, drawn from streams that depend only on ``(seed, epoch, rank)``.

    ``steps_per_epoch = len(dataset) // global_batch`` (the last incomplete batch is dropped);
    process ``rank`` holds rows ``[rank·b, (rank+1)·b)`` of each global batch (``b`` = local batch).
    """

    def __init__(self, dataset, *, global_batch: int, seed: int, augment: str, size: int, device: torch.device,
                 num_workers: int = 0, rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise ValueError(
                f"train.batch_size={global_batch} must be divisible by the number of processes ({world_size})")
        self.n_images = len(dataset)
        self.steps_per_epoch = self.n_images // global_batch
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"train.batch_size={global_batch} exceeds the {self.n_images} training images of {dataset.name!r}; "
                "lower train.batch_size or use more data"
            )
        self.dataset, self.global_batch, self.local_batch = dataset, global_batch, global_batch // world_size
        self.seed, self.rank = seed, rank
        self.source = BatchSource(dataset, device, num_workers)
        mean, std = dataset_stats(dataset)
        self.views = ViewMaker(augment, size, mean, std, device)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of ``epoch``; also seeds the global RNG with the epoch's stream 2."""
        order_gen = torch.Generator().manual_seed(epoch_generator_seed(self.seed, epoch, 0, 0))
        perm = torch.randperm(self.n_images, generator=order_gen)  # the same on every process
        gb, lb, offset = self.global_batch, self.local_batch, self.rank * self.local_batch
        whole = [perm[k * gb:(k + 1) * gb] for k in range(self.steps_per_epoch)]
        local = [rows[offset:offset + lb] for rows in whole]
        # CPU generator: the same views on CPU and CUDA (gca.augment draws parameters on it).
        aug_gen = torch.Generator().manual_seed(epoch_generator_seed(self.seed, epoch, self.rank, 1))
        torch.manual_seed(epoch_generator_seed(self.seed, epoch, self.rank, 2))
        for k, x in enumerate(self.source.iterate(local)):
            yield Batch(step=epoch * self.steps_per_epoch + k, epoch=epoch, views=self.views(x, aug_gen),
                        indices=local[k], global_indices=whole[k])
