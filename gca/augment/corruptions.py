"""Test-time corruptions: a subset of CIFAR-10-C's at severities 1-5, computed from clean images with
the constants of Hendrycks' ``make_cifar_c.py`` (approximations of the published files, see
:mod:`gca.augment`)."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F

from .ops import (_no_autocast, _rand, _randn, adjust_contrast, gaussian_blur, hsv_brightness, rgb_to_hsv,
                  hsv_to_rgb, to_float)

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
