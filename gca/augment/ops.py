"""The building blocks of the augmentations, batched and per sample: input handling and random
numbers, crops and flips through one ``grid_sample``, colour operations (RGB/HSV), blur and erasing.
Formulas and conventions: :mod:`gca.augment`."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

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


