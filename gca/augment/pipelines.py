"""The augmentation pipelines: the SimCLR CIFAR recipe and the paper's extreme variants
(:class:`SimCLRAugment`, :func:`build_augment`; described in :mod:`gca.augment`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .ops import (_check_prob, _check_range, _color_jitter, _no_autocast, _rand, _subset_apply, _uniform,
                  erase, gaussian_blur, hsv_brightness, resized_crop, rgb_to_grayscale, sample_fixed_crop_boxes,
                  sample_resized_crop_boxes, to_float)

# --------------------------------------------------------------------------------------------------
# The pipelines
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimCLRAugment:
    """One random view per image, batched: the SimCLR CIFAR recipe and its extreme variants.

    Order: [HSV brightness] → crop + flip → colour jitter (random order) → grayscale → [blur] →
    [erase]. Defaults are the paper's (§5).

    Parameters
    ----------
    size : output side in pixels.
    scale, ratio : RandomResizedCrop area fraction and aspect-ratio range.
    crop_size : if set, a fixed ``crop_size``-pixel random crop of the source replaces the resized crop.
    crop_fraction : if set, the resized crop is followed by a random square sub-crop whose side is this
        fraction of the view's side, placed uniformly inside it ("strong crop": 13/32).
    flip_p : horizontal-flip probability.
    jitter : (brightness, contrast, saturation, hue) strengths; factors ``U[1 − s, 1 + s]``
        (hue ``U[−h, h]``), applied in a random order per image with probability ``jitter_p``.
    grayscale_p : probability of converting to grey (3 equal channels).
    blur_p, blur_sigma : Gaussian-blur probability and σ range in output pixels (as torchvision's
        ``GaussianBlur``; SimCLR's ImageNet recipe: p = 0.5, σ ∈ [0.1, 2.0]); the kernel radius is
        ``⌈3 σ_max⌉`` (reflect padding, capped below the image side). Off (p = 0) for CIFAR.
    erase_p, erase_scale, erase_ratio, erase_value : random erasing (torchvision's box rule).
    brightness_c : HSV value shift (CIFAR-10-C brightness) applied with ``brightness_p`` first.

    Call: ``aug(x, generator=None) -> float32 (B, C, size, size)`` in [0, 1].
    """

    size: int = 32
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    crop_size: int | None = None
    crop_fraction: float | None = None
    flip_p: float = 0.5
    jitter: tuple = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple = (0.1, 2.0)
    erase_p: float = 0.0
    erase_scale: tuple = (0.25, 0.5)
    erase_ratio: tuple = (0.3, 3.3)
    erase_value: float = 0.0
    brightness_c: float | None = None
    brightness_p: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be a positive int (pixels), got {self.size!r}")
        _check_range("scale", self.scale, 0.0, 1.0)
        if self.scale[1] <= 0:
            raise ValueError(f"scale must have a positive maximum, got {self.scale!r}")
        _check_range("ratio", self.ratio, 1e-6, 1e6)
        if self.crop_size is not None and (isinstance(self.crop_size, bool) or not isinstance(self.crop_size, int)
                                           or self.crop_size < 1):
            raise ValueError(f"crop_size must be None or a positive int, got {self.crop_size!r}")
        if self.crop_fraction is not None and not (isinstance(self.crop_fraction, (int, float))
                                                   and not isinstance(self.crop_fraction, bool)
                                                   and 0.0 < float(self.crop_fraction) <= 1.0):
            raise ValueError(f"crop_fraction must be None or a number in (0, 1] (side of the sub-crop relative to "
                             f"the view), got {self.crop_fraction!r}")
        if self.crop_size is not None and self.crop_fraction is not None:
            raise ValueError("set crop_size (a fixed crop of the source) or crop_fraction (a sub-crop of the resized "
                             "crop), not both")
        for n in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "erase_p", "brightness_p"):
            _check_prob(n, getattr(self, n))
        if len(self.jitter) != 4 or any(float(v) < 0 for v in self.jitter) or float(self.jitter[3]) > 0.5:
            raise ValueError(f"jitter must be 4 non-negative strengths (brightness, contrast, saturation, hue <= 0.5), "
                             f"got {self.jitter!r}")
        _check_range("blur_sigma", self.blur_sigma, 1e-6, 1e3)
        _check_range("erase_scale", self.erase_scale, 0.0, 1.0)
        _check_range("erase_ratio", self.erase_ratio, 1e-6, 1e6)
        if self.brightness_c is not None and not -1.0 <= float(self.brightness_c) <= 1.0:
            raise ValueError(f"brightness_c must be in [-1, 1] (a shift of the HSV value), got {self.brightness_c!r}")

    def crop_boxes(self, batch: int, height: int, width: int, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """The crop of each view as a box ``(top, left, h, w)`` in source pixels (batch, 4), float32:
        the resized crop, or the fixed ``crop_size`` crop, then the ``crop_fraction`` sub-crop."""
        if self.crop_size is not None:
            return sample_fixed_crop_boxes(batch, height, width, self.crop_size, generator=generator)
        boxes = sample_resized_crop_boxes(batch, height, width, scale=self.scale, ratio=self.ratio,
                                          generator=generator)
        if self.crop_fraction is not None:  # strong crop: a sub-box of side f·(h, w) at a uniform position
            f = float(self.crop_fraction)
            top, left, h, w = boxes.unbind(1)
            u = _rand((batch, 2), generator, torch.device("cpu"))
            boxes = torch.stack([top + u[:, 0] * (1 - f) * h, left + u[:, 1] * (1 - f) * w, f * h, f * w], 1)
        return boxes

    # one random view ---------------------------------------------------------------------------
    @_no_autocast
    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = to_float(x)
        B, C, H, W = x.shape
        dev = x.device
        g = generator
        if B == 0:
            return x.new_empty(0, C, self.size, self.size)
        # 0. CIFAR-10-C brightness (source image), "brightness" extreme augmentation
        if self.brightness_c is not None:
            apply = _rand(B, g, dev) < self.brightness_p
            x = torch.where(apply.view(B, 1, 1, 1), hsv_brightness(x, float(self.brightness_c)), x)
        # 1. crop + flip: one grid_sample
        boxes = self.crop_boxes(B, H, W, generator=g)
        flip = _rand(B, g, dev) < self.flip_p
        x = resized_crop(x, boxes, self.size, flip)
        # 2. colour jitter with probability jitter_p, random order of the four ops per image
        jb, jc, js, jh = (float(v) for v in self.jitter)
        do_jitter = _rand(B, g, dev) < self.jitter_p
        factors = torch.stack([_uniform(B, max(0.0, 1 - jb), 1 + jb, g, dev),
                               _uniform(B, max(0.0, 1 - jc), 1 + jc, g, dev),
                               _uniform(B, max(0.0, 1 - js), 1 + js, g, dev),
                               _uniform(B, -jh, jh, g, dev)], 1)
        order = torch.argsort(_rand((B, 4), g, dev), dim=1)
        x = _color_jitter(x, factors, order, do_jitter, (jb > 0, jc > 0, js > 0, jh > 0))
        # 3. grayscale
        to_gray = _rand(B, g, dev) < self.grayscale_p
        if C == 3 and self.grayscale_p > 0:
            x = torch.where(to_gray.view(B, 1, 1, 1), rgb_to_grayscale(x).expand(-1, 3, -1, -1), x)
        # 4. blur: sigma ~ U(blur_sigma) pixels, kernel radius ceil(3 * max sigma)
        do_blur = _rand(B, g, dev) < self.blur_p
        sig = _uniform(B, *self.blur_sigma, g, dev)
        if self.blur_p > 0:
            x = _subset_apply(x, do_blur, lambda t, s: gaussian_blur(t, s, radius=math.ceil(3 * self.blur_sigma[1])), sig)
        # 5. random erasing
        if self.erase_p > 0:
            do_erase = _rand(B, g, dev) < self.erase_p
            eboxes = sample_resized_crop_boxes(B, self.size, self.size, scale=self.erase_scale,
                                               ratio=self.erase_ratio, generator=g)
            x = erase(x, eboxes, self.erase_value, do_erase)
        return x


def _identity(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return to_float(x)


#: Side of the strong crop relative to the view: the paper's 13 px of 32 (⌊32 · 96/224⌋ = 13).
STRONG_CROP_FRACTION = 13 / 32

#: Names accepted by :func:`build_augment`.
AUGMENTATIONS = ("simclr", "strong_crop", "large_erase", "brightness", "none")


def build_augment(name: str, size: int = 32, **overrides):
    """The augmentation pipeline ``name`` (see :data:`AUGMENTATIONS`) producing ``size``-pixel views.

    ``overrides`` replace fields of :class:`SimCLRAugment` (e.g. ``blur_p=0.5``). The strong crop is a
    sub-crop of side :data:`STRONG_CROP_FRACTION` (13/32) of the resized crop, at any ``size``.
    """
    if not isinstance(name, str):
        raise TypeError(f"augmentation name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {AUGMENTATIONS}")
    if key == "none":
        if overrides:
            raise TypeError(f"augmentation 'none' takes no options, got {sorted(overrides)}")
        return _identity
    base = SimCLRAugment(size=size)
    extra = {"simclr": {},
             "strong_crop": {"crop_fraction": STRONG_CROP_FRACTION},
             "large_erase": {"erase_p": 1.0, "erase_scale": (0.25, 0.5)},
             "brightness": {"brightness_c": 0.3}}[key]
    try:
        return replace(base, **{**extra, **overrides})
    except TypeError as exc:
        raise TypeError(f"build_augment({name!r}): {exc}; valid options are the fields of SimCLRAugment") from None


