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

import io
import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

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

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL and torchvision


# --------------------------------------------------------------------------------------------------
# Input handling and random numbers
# --------------------------------------------------------------------------------------------------


def _no_autocast(fn):
    """Run ``fn`` with autocast disabled on the input's device: augmentations compute in float32
    even inside a mixed-precision training step (convolutions and einsums would otherwise run in half)."""
    import functools

    @functools.wraps(fn)
    def wrapper(self_or_x, *args, **kwargs):
        x = self_or_x if isinstance(self_or_x, torch.Tensor) else (args[0] if args else kwargs.get("x"))
        dev = x.device.type if isinstance(x, torch.Tensor) else "cpu"
        if dev in ("cuda", "cpu") and torch.is_autocast_enabled(dev):
            with torch.autocast(device_type=dev, enabled=False):
                return fn(self_or_x, *args, **kwargs)
        return fn(self_or_x, *args, **kwargs)

    return wrapper


def to_float(x: torch.Tensor) -> torch.Tensor:
    """``uint8`` 0–255 → float32 in [0, 1]; floating input is cast to float32 (values kept).

    Shape: (B, C, H, W) with C in {1, 3}.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of images (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, C, H, W) with C = 1 or 3, got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise TypeError(f"images must be uint8 (0-255) or floating point in [0, 1], got dtype {x.dtype}")
    return x.float()


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x − mean) / std`` per channel; ``x`` float (B, C, H, W)."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if m.shape[1] != x.shape[1] or s.shape[1] != x.shape[1]:
        raise ValueError(f"mean/std have {m.shape[1]}/{s.shape[1]} values but the images have {x.shape[1]} channels")
    return (x - m) / s


def _rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device, returned on ``device``."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gdev).to(device)


def _randn(shape, generator, device) -> torch.Tensor:
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=gdev).to(device)


def _uniform(shape, lo: float, hi: float, generator, device) -> torch.Tensor:
    return lo + (hi - lo) * _rand(shape, generator, device)


def _check_range(name: str, value, lo: float, hi: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (min, max), got {value!r}") from None
    if not (lo <= a <= b <= hi):
        raise ValueError(f"{name} must satisfy {lo} <= min <= max <= {hi}, got {value!r}")
    return a, b


def _check_prob(name: str, p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


# --------------------------------------------------------------------------------------------------
# Geometry: crops and flips through one grid_sample
# --------------------------------------------------------------------------------------------------


def sample_resized_crop_boxes(batch: int, height: int, width: int, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                              generator: torch.Generator | None = None, attempts: int = 10) -> torch.Tensor:
    """Crop boxes of RandomResizedCrop, torchvision's rule, vectorised over the batch.

    Per image, up to ``attempts`` draws of area fraction ``U(scale)`` and log-uniform aspect ratio
    ``w/h`` in ``ratio``; ``w = round(√(A·r))``, ``h = round(√(A/r))``; the first draw that fits
    is placed uniformly at integer offsets. If none fits, the whole image cropped to the nearest
    allowed aspect ratio, centred.

    Returns
    -------
    Tensor float32 (batch, 4): ``top, left, h, w`` in pixels (CPU).
    """
    s0, s1 = _check_range("scale", scale, 0.0, 1.0)
    r0, r1 = _check_range("ratio", ratio, 1e-6, 1e6)
    dev = torch.device("cpu")
    area = height * width
    target = area * _uniform((batch, attempts), s0, s1, generator, dev).double()
    logr = _uniform((batch, attempts), math.log(r0), math.log(r1), generator, dev).double()
    ar = torch.exp(logr)
    w = torch.round(torch.sqrt(target * ar))
    h = torch.round(torch.sqrt(target / ar))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.double().argmax(1), torch.full((batch,), -1, dtype=torch.long))
    # fallback: central crop with the ratio clamped into [r0, r1]
    in_ratio = width / height
    if in_ratio < r0:
        fw, fh = width, int(round(width / r0))
    elif in_ratio > r1:
        fh, fw = height, int(round(height * r1))
    else:
        fw, fh = width, height
    rows = torch.arange(batch)
    hh = torch.where(first >= 0, h[rows, first.clamp(min=0)], torch.full((batch,), float(fh), dtype=torch.double))
    ww = torch.where(first >= 0, w[rows, first.clamp(min=0)], torch.full((batch,), float(fw), dtype=torch.double))
    u = _rand((batch, 2), generator, dev).double()
    top = torch.where(first >= 0, torch.floor(u[:, 0] * (height - hh + 1)), torch.full_like(hh, float((height - fh) // 2)))
    left = torch.where(first >= 0, torch.floor(u[:, 1] * (width - ww + 1)), torch.full_like(ww, float((width - fw) // 2)))
    return torch.stack([top, left, hh, ww], 1).float()


def sample_fixed_crop_boxes(batch: int, height: int, width: int, crop: int | tuple[int, int], *,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Boxes ``(top, left, h, w)`` (batch, 4) of a ``crop``-pixel crop at a uniform integer position."""
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    if not (0 < ch <= height and 0 < cw <= width):
        raise ValueError(f"crop size {(ch, cw)} must be positive and fit in the image {(height, width)}")
    u = _rand((batch, 2), generator, torch.device("cpu"))
    top = torch.floor(u[:, 0] * (height - ch + 1))
    left = torch.floor(u[:, 1] * (width - cw + 1))
    return torch.stack([top, left, torch.full_like(top, ch), torch.full_like(top, cw)], 1)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int],
                 flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop each image to its box and resize it to ``size`` (bilinear), optionally mirrored.

    Equivalent to cropping then resizing with ``align_corners=False`` bilinear interpolation
    (torchvision's tensor ``resized_crop`` without antialiasing): output pixel ``u`` samples the
    input at ``left + (u + ½)·w/size − ½``. Samples just outside the box read the neighbouring
    pixels of the full image (border-replicated at the image edge). No antialiasing: meant for
    crops no larger than the output (CIFAR, ImageNet crops of a ``size``-px image), which are
    upsampled. Shapes: x (B, C, H, W) float;
    boxes (B, 4) ``top, left, h, w``; flip (B,) bool.
    """
    B, _, H, W = x.shape
    oh, ow = (size, size) if isinstance(size, int) else size
    if boxes.shape != (B, 4):
        raise ValueError(f"boxes must have shape ({B}, 4) (top, left, h, w per image), got {tuple(boxes.shape)}")
    if flip is not None and flip.shape != (B,):
        raise ValueError(f"flip must have shape ({B},), got {tuple(flip.shape)}")
    b = boxes.to(device=x.device, dtype=torch.float32)
    top, left, h, w = b.unbind(1)
    sx, sy = w / W, h / H
    tx, ty = (2 * left + w) / W - 1, (2 * top + h) / H - 1
    if flip is not None:
        sx = torch.where(flip.to(x.device), -sx, sx)
    # normalised output coordinates (pixel centres, align_corners=False) mapped affinely per image
    ox = (torch.arange(ow, device=x.device, dtype=torch.float32) * 2 + 1) / ow - 1
    oy = (torch.arange(oh, device=x.device, dtype=torch.float32) * 2 + 1) / oh - 1
    gx = (sx[:, None] * ox[None, :] + tx[:, None])[:, None, :].expand(B, oh, ow)
    gy = (sy[:, None] * oy[None, :] + ty[:, None])[:, :, None].expand(B, oh, ow)
    grid = torch.stack([gx, gy], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# --------------------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------------------


def _per_sample(v, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(v, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma ``0.299 R + 0.587 G + 0.114 B`` (B, 1, H, W); 1-channel input is returned unchanged."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def adjust_brightness(x: torch.Tensor, factor) -> torch.Tensor:
    """``clip(f·x)`` with a factor per image (B,)."""
    return (x * _per_sample(factor, x)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, factor) -> torch.Tensor:
    """``clip(f·x + (1 − f)·m)``, ``m`` the mean grey level of each image (torchvision's rule)."""
    f = _per_sample(factor, x)
    m = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return (f * x + (1 - f) * m).clamp_(0, 1)


def adjust_saturation(x: torch.Tensor, factor) -> torch.Tensor:
    """``clip(f·x + (1 − f)·gray(x))`` per image; identity on 1-channel images."""
    if x.shape[1] == 1:
        return x
    f = _per_sample(factor, x)
    return (f * x + (1 - f) * rgb_to_grayscale(x)).clamp_(0, 1)


def _hsv_parts(x: torch.Tensor):
    """(h, s, v), each (B, 1, H, W), of RGB ``x`` in [0, 1]."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    maxc = x.amax(1, keepdim=True)
    delta = maxc - x.amin(1, keepdim=True)
    grey = delta == 0
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    d = torch.where(grey, torch.ones_like(delta), delta)
    h = torch.where(maxc == r, (g - b) / d, torch.where(maxc == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    h = torch.where(grey, torch.zeros_like(h), torch.remainder(h / 6.0, 1.0))
    return h, s, maxc


def _rgb_from_parts(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    n = torch.tensor([5.0, 3.0, 1.0], dtype=v.dtype, device=v.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v - (v * s) * torch.minimum(k, 4.0 - k).clamp_(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (B, 3, H, W) → HSV in [0, 1] (hue as a fraction of a turn; h = s = 0 for greys)."""
    return torch.cat(_hsv_parts(x), 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    r"""HSV in [0, 1] (B, 3, H, W) → RGB in [0, 1].

    .. math:: c_n = v - v s \, \mathrm{clip}(\min(k_n, 4 - k_n), 0, 1), \quad k_n = (n + 6h) \bmod 6,
              \ n = 5, 3, 1 \text{ for } R, G, B

    (equal to the sector formula of colorsys / scikit-image, without branches).
    """
    return _rgb_from_parts(hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3])


def adjust_hue(x: torch.Tensor, shift) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns (per image, in [−0.5, 0.5]); identity on 1-channel images."""
    if x.shape[1] == 1:
        return x
    h, s, v = _hsv_parts(x)
    return _rgb_from_parts(h + _per_sample(shift, x), s, v)


def hsv_brightness(x: torch.Tensor, c) -> torch.Tensor:
    r"""CIFAR-10-C brightness (Hendrycks & Dietterich): add ``c`` to the HSV value channel.

    .. math:: V' = \mathrm{clip}(V + c, 0, 1), \quad x' = x \cdot V'/V \ (V > 0), \quad x' = V' \ (V = 0)

    which equals ``hsv2rgb(h, s, clip(v + c))`` exactly (hue and saturation are kept, so RGB scales
    by ``V'/V``) without the HSV round trip. ``c`` a float or one value per image; CIFAR-10-C uses
    c = 0.05, 0.1, 0.15, 0.2, 0.3 for severities 1–5. 1-channel: ``clip(x + c)``.
    """
    c = _per_sample(c, x)
    v = x.amax(1, keepdim=True)
    v_new = (v + c).clamp(0, 1)
    scale = v_new / torch.where(v > 0, v, torch.ones_like(v))
    return torch.where(v > 0, x * scale, v_new.expand_as(x)).clamp_(0, 1)


def _color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, apply: torch.Tensor,
                  active: tuple[bool, bool, bool, bool]) -> torch.Tensor:
    """Brightness, contrast, saturation, hue (``factors`` (B, 4)) in the per-image ``order`` (B, 4).

    The first three are blends ``clip(f·x + (1 − f)·t)`` with ``t`` = 0, the mean grey level, or the
    grey image, so each of the four stages applies the one blend chosen for each image in a single
    fused expression; the hue rotation runs on the images whose stage it is. Images with
    ``apply`` False are unchanged. 1-channel images skip saturation and hue.
    """
    B, C = x.shape[:2]
    if C == 1:
        active = (active[0], active[1], False, False)
    one = torch.ones(B, device=x.device, dtype=x.dtype)
    for stage in range(4):
        op = torch.where(apply, order[:, stage], torch.full_like(order[:, stage], -1))
        f = [torch.where((op == k) & active[k], factors[:, k], one) for k in range(3)]
        if active[0] or active[1] or active[2]:
            gray = rgb_to_grayscale(x)
            mean = gray.mean(dim=(1, 2, 3), keepdim=True)
            a = f[0] * f[1] * f[2]  # only one of the three differs from 1 per image
            y = x * a.view(B, 1, 1, 1)
            y.add_(mean * (1 - f[1]).view(B, 1, 1, 1))
            x = y.addcmul_(gray, (1 - f[2]).view(B, 1, 1, 1)).clamp_(0, 1)
        if active[3]:
            idx = torch.nonzero(op == 3).flatten()
            if idx.numel():
                x.index_copy_(0, idx, adjust_hue(x.index_select(0, idx), factors[idx, 3]))
    return x


def _subset_apply(x: torch.Tensor, mask: torch.Tensor, fn, *params: torch.Tensor) -> torch.Tensor:
    """Apply ``fn(x[mask], *params[mask])`` to the selected images only."""
    idx = torch.nonzero(mask).flatten()
    if idx.numel() == 0:
        return x
    if idx.numel() == x.shape[0]:
        return fn(x, *params)
    x = x.clone()
    x[idx] = fn(x[idx], *(p[idx] for p in params))
    return x


# --------------------------------------------------------------------------------------------------
# Blur and erasing
# --------------------------------------------------------------------------------------------------


def _separable_conv(x: torch.Tensor, kernels: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Convolve image b with the 1-D kernel ``kernels[b]`` (B, K) along rows then columns."""
    B, C, H, W = x.shape
    k = kernels.shape[1]
    pad = k // 2
    w = kernels.to(x).repeat_interleave(C, 0)  # (B*C, K)
    y = x.reshape(1, B * C, H, W)
    y = F.pad(y, (pad, pad, 0, 0), mode=padding_mode)
    y = F.conv2d(y, w.view(B * C, 1, 1, k), groups=B * C)
    y = F.pad(y, (0, 0, pad, pad), mode=padding_mode)
    y = F.conv2d(y, w.view(B * C, 1, k, 1), groups=B * C)
    return y.reshape(B, C, H, W)


def _gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=sigma.device)
    k = torch.exp(-0.5 * (t[None, :] / sigma.double()[:, None]) ** 2)
    return (k / k.sum(1, keepdim=True)).float()


def gaussian_blur(x: torch.Tensor, sigma, *, radius: int | None = None, padding_mode: str = "reflect") -> torch.Tensor:
    """Gaussian blur with a standard deviation (pixels) per image; separable, ``radius`` default ``⌈3σ_max⌉``."""
    s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
    if (s <= 0).any():
        raise ValueError(f"sigma must be positive, got min {float(s.min())}")
    if radius is None:
        radius = max(1, int(math.ceil(3 * float(s.max()))))
    radius = min(radius, min(x.shape[-2:]) - 1) if padding_mode == "reflect" else radius
    return _separable_conv(x, _gaussian_kernels(s, radius), padding_mode)


def erase(x: torch.Tensor, boxes: torch.Tensor, value: float = 0.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fill the box ``(top, left, h, w)`` of each image with ``value`` (only where ``mask``)."""
    B, _, H, W = x.shape
    if boxes.shape != (B, 4):
        raise ValueError(f"boxes must have shape ({B}, 4) (top, left, h, w per image), got {tuple(boxes.shape)}")
    b = boxes.to(x.device)
    rows = torch.arange(H, device=x.device).view(1, H, 1)
    cols = torch.arange(W, device=x.device).view(1, 1, W)
    top, left, h, w = (b[:, i].view(B, 1, 1) for i in range(4))
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    if mask is not None:
        inside &= mask.to(x.device).view(B, 1, 1)
    return x.masked_fill(inside.unsqueeze(1), float(value))


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


# --------------------------------------------------------------------------------------------------
# Test-time corruptions (CIFAR-10-C constants)
# --------------------------------------------------------------------------------------------------

# Constants of Hendrycks' make_cifar_c.py, severities 1..5.
_C = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "speckle_noise": [0.06, 0.1, 0.12, 0.16, 0.2],
    "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1.0],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}

#: Corruptions available in :func:`corrupt`.
CORRUPTIONS = tuple(_C)


def _pil_box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of PIL's BOX resampling along one axis (pixel-centre rule of Resample.c)."""
    scale = n_in / n_out
    support = 0.5 * max(scale, 1.0)
    fs = max(scale, 1.0)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for k in range(n_out):
        centre = (k + 0.5) * scale
        lo, hi = max(0, int(centre - support + 0.5)), min(n_in, int(centre + support + 0.5))
        for j in range(lo, hi):
            t = (j - centre + 0.5) / fs
            m[k, j] = 1.0 if -0.5 <= t < 0.5 else 0.0
        m[k] /= m[k].sum()
    return m


def _box_resize(x: torch.Tensor, oh: int, ow: int) -> torch.Tensor:
    A = _pil_box_matrix(x.shape[-2], oh).to(x)
    Bm = _pil_box_matrix(x.shape[-1], ow).to(x)
    return torch.einsum("ih,bchw,jw->bcij", A, x, Bm)


def _disk_kernel(radius: float, alias_blur: float, device) -> torch.Tensor:
    """Hendrycks' defocus disk: 17×17 aliased disk, normalised, smoothed by a 3×3 Gaussian (σ = alias_blur)."""
    L = torch.arange(-8, 9, dtype=torch.float64) if radius <= 8 else torch.arange(-radius, radius + 1, dtype=torch.float64)
    X, Y = torch.meshgrid(L, L, indexing="xy")
    disk = ((X ** 2 + Y ** 2) <= radius ** 2).double()
    disk /= disk.sum()
    g = torch.exp(-0.5 * (torch.arange(-1, 2, dtype=torch.float64) / alias_blur) ** 2)
    g /= g.sum()
    k = F.conv2d(F.pad(disk[None, None], (1, 1, 1, 1), mode="reflect"), (g[:, None] * g[None, :])[None, None])[0, 0]
    return k.float().to(device)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(arr)
    for i, a in enumerate(arr):
        buf = io.BytesIO()
        Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(buf, "JPEG", quality=quality)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        out[i] = dec.reshape(a.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device).float() / 255.0


@_no_autocast
def corrupt(x: torch.Tensor, name: str, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the CIFAR-10-C corruption ``name`` at ``severity`` (1–5) to a batch (an approximation).

    Constants are those of ``make_cifar_c.py``; noise is drawn from ``generator``. Differences from
    the published files: own random draws, float output (no uint8 rounding), defocus blur's 3×3
    anti-alias smoothing done with reflect padding, JPEG through Pillow image by image on the CPU.
    Shapes: (B, C, H, W) → float32 (B, C, H, W) in [0, 1].
    """
    if name not in _C:
        raise ValueError(f"unknown corruption {name!r}; choose one of {CORRUPTIONS}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an int in 1..5, got {severity!r}")
    x = to_float(x)
    c = _C[name][int(severity) - 1]
    dev, g = x.device, generator
    if name == "gaussian_noise":
        y = x + c * _randn(x.shape, g, dev)
    elif name == "shot_noise":
        gdev = g.device if g is not None else torch.device("cpu")
        y = torch.poisson((x * c).to(gdev), generator=g).to(dev) / c
    elif name == "impulse_noise":  # scikit-image random_noise(mode="s&p", amount=c): half salt, half pepper
        u = _rand((2,) + tuple(x.shape), g, dev)
        flipped = u[0] <= c
        y = torch.where(flipped, (u[1] <= 0.5).to(x.dtype), x)
    elif name == "speckle_noise":
        y = x + x * c * _randn(x.shape, g, dev)
    elif name == "gaussian_blur":  # scikit-image gaussian: truncate 4σ, mode "nearest"
        y = gaussian_blur(x, c, radius=int(4 * c + 0.5), padding_mode="replicate")
    elif name == "defocus_blur":  # cv2.filter2D with BORDER_REFLECT_101
        k = _disk_kernel(c[0], c[1], dev)
        r = k.shape[-1] // 2
        B, C, H, W = x.shape
        y = F.conv2d(F.pad(x.reshape(B * C, 1, H, W), (r, r, r, r), mode="reflect"), k[None, None]).reshape(B, C, H, W)
    elif name == "brightness":
        y = hsv_brightness(x, c)
    elif name == "contrast":
        m = x.mean(dim=(2, 3), keepdim=True)  # per channel, as make_cifar_c.py
        y = (x - m) * c + m
    elif name == "saturate":
        if x.shape[1] == 1:
            y = x
        else:
            hsv = rgb_to_hsv(x)
            hsv[:, 1] = (hsv[:, 1] * c[0] + c[1]).clamp(0, 1)
            y = hsv_to_rgb(hsv)
    elif name == "pixelate":
        H, W = x.shape[-2:]
        y = _box_resize(_box_resize(x, int(H * c), int(W * c)), H, W)
    else:  # jpeg_compression
        y = _jpeg(x, int(c))
    return y.clamp(0, 1)
