"""Rotation domains (DomainBed's Rotated-MNIST construction) over digits and Fashion-MNIST.

Each image is assigned (seeded, stratified by class) to exactly one domain and rotated by that
domain's angle (default 0°, 30°, 60°, 90°: four domains as in PACS). ``.domains`` holds the domain
index and ``.domain_names`` the angles. The test split draws its assignment with ``seed + 1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from gca.data.datasets import DatasetInfo, ImageDataset
from gca.data.loaders.common import no_options
from gca.data.loaders.digits import load_digits
from gca.data.loaders.mnist import fashion_mnist_available, load_fashion_mnist
from gca.data.splits import check_seed

__all__ = ["ROTATED_DIGITS", "ROTATED_FASHION_MNIST", "assign_domains", "rotate_images", "load_rotated_digits",
           "load_rotated_fashion_mnist"]


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


def assign_domains(labels: torch.Tensor, n_domains: int, seed: int) -> torch.Tensor:
    """One domain per image, seeded and balanced per class: within each class (in label order) a
    random permutation of its images is dealt to the domains in turn, so per class the domain
    counts differ by at most one."""
    g = torch.Generator().manual_seed(seed)
    domains = torch.empty(len(labels), dtype=torch.int64)
    for c in torch.unique(labels):  # stratified: each class spread evenly over the domains
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        domains[idx] = torch.arange(len(idx)) % n_domains
    return domains


def _rotated(base: ImageDataset, info: DatasetInfo, angles: Sequence[float], seed: int) -> ImageDataset:
    angles = [float(a) for a in angles]
    if len(angles) < 2:
        raise ValueError(f"angles must list at least 2 rotation angles (one per domain), got {angles!r}")
    domains = assign_domains(base.labels, len(angles), seed)
    images = rotate_images(base.images, torch.tensor(angles)[domains])
    return ImageDataset(images, base.labels.clone(), list(base.classes), info.name, base.split, domains=domains,
                        domain_names=[f"{a:g}deg" for a in angles], description=info.description)


def load_rotated_digits(root: Path, split: str, *, size: int = 16, angles=(0, 30, 60, 90), seed: int = 0, **kw):
    """Multi-domain stand-in for PACS: each digit (seeded, stratified) in one of ``len(angles)`` rotation domains."""
    no_options("rotated-digits", kw)
    return _rotated(load_digits(root, split, size=size), ROTATED_DIGITS, angles,
                    check_seed(seed) + (split == "test"))


def load_rotated_fashion_mnist(root: Path, split: str, *, angles=(0, 30, 60, 90), seed: int = 0, **kw):
    """Rotated-Fashion-MNIST domains (as DomainBed's Rotated-MNIST), where Fashion-MNIST is installed."""
    no_options("rotated-fashion-mnist", kw)
    return _rotated(load_fashion_mnist(root, split), ROTATED_FASHION_MNIST, angles,
                    check_seed(seed) + (split == "test"))


ROTATED_DIGITS = DatasetInfo(
    "rotated-digits", "Rotated digits (4 rotation domains)", ("train", "test"), "(embedded in scikit-learn)",
    load_rotated_digits, embedded=True, available=lambda root: True)

ROTATED_FASHION_MNIST = DatasetInfo(
    "rotated-fashion-mnist", "Rotated Fashion-MNIST (4 rotation domains)", ("train", "test"),
    "fashion-mnist/ (as for fashion-mnist)", load_rotated_fashion_mnist, derived_from="fashion-mnist",
    available=fashion_mnist_available)
