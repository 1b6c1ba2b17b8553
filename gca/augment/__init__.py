"""Batched, per-sample random image augmentations on the device, and test-time corruptions.

Every function works on a whole batch ``x`` of shape ``(B, C, H, W)`` (``C`` = 1 or 3) on any
device: ``uint8`` in 0–255 or floating point in [0, 1]; the result is ``float32`` in [0, 1] on the
same device. Each image gets its own random parameters. Randomness comes from ``generator`` (a
``torch.Generator``; parameters are drawn on the generator's device and moved to ``x``'s device, so a
CPU generator gives the same views on CPU and CUDA up to floating-point rounding); with
``generator=None`` the global RNG is used.

Pipelines (:func:`build_augment`)

* ``"simclr"`` — the SimCLR CIFAR recipe (paper §5): random resized crop (scale 0.08–1, ratio
  3/4–4/3, torchvision's sampling rule), horizontal flip p = 0.5, colour jitter
  (brightness 0.4, contrast 0.4, saturation 0.4, hue 0.1; random order per image) with p = 0.8,
  grayscale p = 0.2, optional Gaussian blur (``blur_p``; off for CIFAR).
* ``"strong_crop"`` — the SimCLR recipe whose random resized crop is followed by a random square
  sub-crop of side ``13/32`` of the view, resized back (paper §5: "crop 13 px of 32 then resize"; the
  severity-5 crop ``⌊32 · 96/224⌋ = 13``). The fraction, not the pixel count, is kept at any image
  size: 13 of 32 px, 6.5 of 16 px — always ``(13/32)² ≈ 16.5 %`` of the view's area. The two crops
  are composed into one box, so the image is resampled once.
* ``"large_erase"`` — the SimCLR recipe followed by random erasing with p = 1 of a rectangle of
  25–50 % of the image (ratio 0.3–3.3), filled with 0. (The authors' code did no erasing during
  pretraining, official-code item 9; the area range is our choice, stated here.)
* ``"brightness"`` — CIFAR-10-C brightness at severity 5 (HSV value channel + 0.3, Hendrycks &
  Dietterich's formula, applied to the [0, 1] image, not to an image divided by 255 twice as in the
  authors' code) on every image, followed by the SimCLR recipe.
* ``"none"`` — conversion to float only.

Test-time corruptions (:func:`corrupt`, :data:`CORRUPTIONS`) reproduce a subset of the CIFAR-10-C
corruptions at severities 1–5 with the constants of Hendrycks' ``make_cifar_c.py``. They are
computed from the clean test set and are approximations of the published files (own random draws,
torch kernels instead of scikit-image/OpenCV, no uint8 rounding), not substitutes for them; the
published CIFAR-10-C files load with ``gca.data.load_dataset("cifar10-c")``.

Grey-scale (1-channel) inputs: crops, flips, erasing, blur, brightness and contrast act as usual;
saturation, hue and grayscale are identities; HSV brightness reduces to ``clip(x + c)``.
"""

from __future__ import annotations


from .corruptions import CORRUPTIONS, corrupt
from .ops import (adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, erase, gaussian_blur,
                  hsv_brightness, hsv_to_rgb, normalize, resized_crop, rgb_to_grayscale, rgb_to_hsv,
                  sample_fixed_crop_boxes, sample_resized_crop_boxes, to_float)
from .pipelines import AUGMENTATIONS, STRONG_CROP_FRACTION, SimCLRAugment, build_augment

__all__ = [
    "SimCLRAugment",
    "build_augment",
    "AUGMENTATIONS",
    "CORRUPTIONS",
    "corrupt",
    "to_float",
    "normalize",
    "sample_resized_crop_boxes",
    "sample_fixed_crop_boxes",
    "resized_crop",
    "rgb_to_grayscale",
    "rgb_to_hsv",
    "hsv_to_rgb",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "hsv_brightness",
    "gaussian_blur",
    "erase",
]

