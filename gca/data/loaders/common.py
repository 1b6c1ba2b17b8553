"""Helpers every loader shares: option checks and the integer-exact resampling of uint8 images."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["no_options", "check_size", "upsample_uint8"]


def no_options(name: str, kw: dict) -> None:
    """Refuse options a loader does not take (a typo must not be silently ignored)."""
    if kw:
        raise TypeError(f"load_dataset({name!r}) got unexpected option(s) {sorted(kw)}; see the docstring of "
                        f"gca.data.DATASETS[{name!r}].loader for the options it takes")


def check_size(size, lo: int = 4) -> int:
    """``size`` (pixels) as an int of at least ``lo``."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < lo:
        raise ValueError(f"size must be an int >= {lo} (pixels), got {size!r}")
    return int(size)


def upsample_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, h, w) resized bilinearly to (N, C, size, size), rounded back to uint8."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear",
                                        align_corners=False, antialias=size < images.shape[-1])
    return x.round().clamp(0, 255).to(torch.uint8)
