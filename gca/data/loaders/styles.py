"""CIFAR-10 in four style domains (photo, sketch, cartoon, painting): the offline stand-in for PACS.

PACS (Li et al., 2017) holds the same seven classes in four *depiction styles* — photo, art
painting, cartoon, sketch — and its domains are different pictures. Rotated digits differ only in
geometry; here the domains differ the way PACS's do, in texture, colour and line, while the class
content is kept. ``cifar10-styles`` assigns each CIFAR-10 image (seeded, balanced per class, with
:func:`~gca.data.loaders.rotated.assign_domains`, as for rotated digits) to exactly one domain and
renders it in that domain's style, so the domains are disjoint sets of pictures. What each style
does is described at :func:`render_style`.

Every step is integer arithmetic on the pixels (shifts, sums, medians, integer hashing), so the
same image gives the same rendering on any machine and in any batch; the 60,000 images render in
about 10 s on one core (each image in one style).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from gca.data.datasets import DatasetInfo, ImageDataset
from gca.data.loaders.cifar import CIFAR10, load_cifar10
from gca.data.loaders.common import no_options
from gca.data.loaders.rotated import assign_domains
from gca.data.splits import check_seed

__all__ = ["STYLES", "CIFAR10_STYLES", "render_style", "load_cifar10_styles"]

#: The four style domains, in the order of the domain index.
STYLES: tuple[str, ...] = ("photo", "sketch", "cartoon", "painting")

_CHUNK = 2048  # images rendered at once (bounds the memory of the 9-neighbour stacks)


# ------------------------------------------------------------------------------------------------
# Integer image operations on (N, C, H, W) int32 tensors
# ------------------------------------------------------------------------------------------------


def _pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """Replicate-pad the last two dimensions by ``r`` (exact for any dtype)."""
    h, w = x.shape[-2:]
    rows = torch.arange(-r, h + r, device=x.device).clamp(0, h - 1)
    cols = torch.arange(-r, w + r, device=x.device).clamp(0, w - 1)
    return x[..., rows, :][..., cols]


def _shifts(p: torch.Tensor, h: int, w: int, k: int = 3) -> list[torch.Tensor]:
    """The ``k × k`` neighbours of every pixel of a padded map ``p`` (row-major offsets), each (…, h, w)."""
    return [p[..., i:i + h, j:j + w] for i in range(k) for j in range(k)]


def _binomial3(x: torch.Tensor) -> torch.Tensor:
    """3 × 3 binomial smoothing (weights [1, 2, 1] ⊗ [1, 2, 1] / 16), rounded."""
    h, w = x.shape[-2:]
    p = _pad(x, 1)
    v = p[..., 0:h, :] + 2 * p[..., 1:h + 1, :] + p[..., 2:h + 2, :]
    s = v[..., 0:w] + 2 * v[..., 1:w + 1] + v[..., 2:w + 2]
    return (s + 8) >> 4


def _luminance(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB (N, 3, H, W) as (N, 1, H, W): (77 R + 150 G + 29 B + 128) >> 8."""
    return (77 * x[:, 0:1] + 150 * x[:, 1:2] + 29 * x[:, 2:3] + 128) >> 8


def _sobel_l1(y: torch.Tensor) -> torch.Tensor:
    """|G_x| + |G_y| of the 3 × 3 Sobel operator (0 … 2040 for 8-bit input)."""
    h, w = y.shape[-2:]
    p = _pad(y, 1)
    smooth_r = p[..., 0:h, :] + 2 * p[..., 1:h + 1, :] + p[..., 2:h + 2, :]  # [1, 2, 1] down the rows
    smooth_c = p[..., :, 0:w] + 2 * p[..., :, 1:w + 1] + p[..., :, 2:w + 2]  # [1, 2, 1] along the columns
    gx = smooth_r[..., 2:w + 2] - smooth_r[..., 0:w]
    gy = smooth_c[..., 2:h + 2, :] - smooth_c[..., 0:h, :]
    return gx.abs() + gy.abs()


# Devillard's median-of-9 sorting network (19 compare-exchanges; the median ends in position 4)
_MEDIAN9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
            (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def _median3(x: torch.Tensor) -> torch.Tensor:
    """3 × 3 median per channel (min/max only: exact for any integer dtype)."""
    h, w = x.shape[-2:]
    v = _shifts(_pad(x, 1), h, w)
    for i, j in _MEDIAN9:
        v[i], v[j] = torch.minimum(v[i], v[j]), torch.maximum(v[i], v[j])
    return v[4]


def _box3(p: torch.Tensor) -> torch.Tensor:
    """3 × 3 sums of a padded map over its valid positions (separable; stays in the input's dtype)."""
    h, w = p.shape[-2] - 2, p.shape[-1] - 2
    v = p[..., 0:h, :] + p[..., 1:h + 1, :] + p[..., 2:h + 2, :]
    return v[..., 0:w] + v[..., 1:w + 1] + v[..., 2:w + 2]


def _kuwahara(x: torch.Tensor) -> torch.Tensor:
    """Kuwahara filter of radius 2: the mean colour of the 3 × 3 quadrant (of the 5 × 5 window)
    whose luminance varies least; ties go to the earlier quadrant (top-left, top-right, bottom-left)."""
    h, w = x.shape[-2:]
    y = _luminance(x)
    # 3 × 3 box sums centred on every pixel and on the 1-pixel ring around: (h + 2) × (w + 2) maps
    s_c, s_y, s_yy = _box3(_pad(x, 2)), _box3(_pad(y, 2)), _box3(_pad(y * y, 2))
    var81 = 9 * s_yy - s_y * s_y  # 81 × the variance of each window (integer, exact)
    best_var, best_col = None, None
    for i, j in ((0, 0), (0, 2), (2, 0), (2, 2)):  # quadrants centred at (−1, −1), (−1, +1), (+1, −1), (+1, +1)
        var, col = var81[..., i:i + h, j:j + w], s_c[..., i:i + h, j:j + w]
        if best_var is None:
            best_var, best_col = var, col
        else:
            better = var < best_var
            best_var, best_col = torch.where(better, var, best_var), torch.where(better, col, best_col)
    return (best_col + 4) // 9


def _noise_table(size: int) -> torch.Tensor:
    """A fixed (size × size) field of integers in −4 … 4 from an integer hash of the position
    (three Park–Miller steps; products < 2⁴⁷, exact in int64)."""
    r = torch.arange(size, dtype=torch.int64)
    v = (r.view(-1, 1) * 1103 + r.view(1, -1) * 2903 + 17) % 2147483647
    for _ in range(3):
        v = (v * 48271) % 2147483647
    return (v % 9 - 4).to(torch.int32)


_PHASES = 64  # distinct texture offsets per axis


def _stroke_texture(x: torch.Tensor, amplitude: int, length: int = 5) -> torch.Tensor:
    """Brush-stroke texture (N, 1, H, W) in [−amplitude, amplitude]: hash noise summed along diagonal
    strokes of ``length`` pixels, at an offset drawn from the image's own pixel sum."""
    n, _, h, w = x.shape
    table = _noise_table(_PHASES + max(h, w) + length).to(x.device)
    phase = x.reshape(n, -1).sum(1)  # content-derived: the same image always gets the same texture
    rows = (phase % _PHASES).view(-1, 1, 1) + torch.arange(h + length - 1, device=x.device).view(1, -1, 1)
    cols = (phase // _PHASES % _PHASES).view(-1, 1, 1) + torch.arange(w + length - 1, device=x.device).view(1, 1, -1)
    noise = table[rows, cols]  # (N, H + length − 1, W + length − 1)
    strokes = sum(noise[:, k:k + h, k:k + w] for k in range(length))  # −4·length … 4·length
    return (strokes * amplitude // (4 * length)).unsqueeze(1)


# ------------------------------------------------------------------------------------------------
# The styles
# ------------------------------------------------------------------------------------------------


def _sketch(x: torch.Tensor) -> torch.Tensor:
    edges = _sobel_l1(_binomial3(_luminance(x)))
    dark = (((edges - 96) * 3) >> 2).clamp(0, 255)  # |∇| < 96 (about half the pixels) stays white paper
    return (255 - dark).expand(-1, 3, -1, -1)


def _cartoon(x: torch.Tensor) -> torch.Tensor:
    flat = _median3(_median3(x.to(torch.uint8))).to(torch.int32)  # the sorting network is fastest on bytes
    poster = (flat >> 6) * 64 + 32  # 4 levels per channel, at the bin centres
    outline = _sobel_l1(_luminance(flat)) > 320  # about the strongest 10 % of edges
    return torch.where(outline, torch.zeros_like(poster), poster)


def _painting(x: torch.Tensor) -> torch.Tensor:
    k = _kuwahara(x)
    y = _luminance(k)
    vivid = y + (k - y) * 3 // 2  # saturation × 1.5 about the luma
    return (vivid + _stroke_texture(x, amplitude=10)).clamp(0, 255)


_RENDER = {"sketch": _sketch, "cartoon": _cartoon, "painting": _painting}


def render_style(images: torch.Tensor, style: str) -> torch.Tensor:
    """``images`` (uint8, (N, 3, H, W), RGB) rendered in ``style`` (one of :data:`STYLES`), as a new uint8 tensor.

    The four depiction styles of PACS's domains, made from a photo:

    ``photo``
        the image unchanged.
    ``sketch``
        a pencil drawing: the luminance (BT.601 weights), smoothed by a 3 × 3 binomial filter, its
        Sobel gradient magnitude (L1) turned into dark strokes on white paper
        (``255 − ¾·(|∇| − 96)``, clipped to 0…255), the same value in R, G and B.
    ``cartoon``
        flat colours with ink outlines: a 3 × 3 median filter applied twice per channel
        (edge-preserving smoothing), posterised to 4 levels per channel (bin centres 32, 96, 160,
        224), and black where the smoothed luminance has one of the strongest Sobel edges.
    ``painting``
        brush work: a Kuwahara filter (radius 2: each pixel takes the mean colour of the least
        varying of its four 3 × 3 quadrants, the classic oil-paint filter), saturation raised by half,
        and a brush-stroke texture (an integer hash noise summed along diagonal strokes of 5 pixels,
        ±10 grey levels) at an offset drawn from the image's own pixels.

    Each image is rendered on its own (the result for one image does not depend on the batch) with
    integer arithmetic only (shifts, sums, medians, integer hashing), so the result is the same on
    every machine. ``"photo"`` returns a copy.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
            or images.shape[1] != 3:
        raise TypeError("images must be a uint8 tensor of shape (N, 3, H, W) (RGB), got "
                        f"{type(images).__name__} {getattr(images, 'dtype', '')} {tuple(getattr(images, 'shape', ()))}")
    if not isinstance(style, str) or style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {STYLES}")
    if min(images.shape[-2:]) < 3:
        raise ValueError(f"images must be at least 3 × 3 pixels to render a style, got {tuple(images.shape[-2:])}")
    if style == "photo":
        return images.clone()
    render = _RENDER[style]
    out = [render(images[i:i + _CHUNK].to(torch.int32)).to(torch.uint8) for i in range(0, len(images), _CHUNK)]
    return torch.cat(out) if out else images.clone()


def _check_styles(styles) -> list[str]:
    if isinstance(styles, str) or not isinstance(styles, Sequence):
        raise TypeError(f"styles must be a sequence of style names, got {type(styles).__name__}: {styles!r}")
    styles = list(styles)
    bad = [s for s in styles if s not in STYLES]
    if bad or len(styles) < 2 or len(set(styles)) != len(styles):
        raise ValueError(f"styles must list at least 2 distinct names of {STYLES} (one per domain), got {styles!r}")
    return styles


def load_cifar10_styles(root: Path, split: str, *, styles: Sequence[str] = STYLES, seed: int = 0, **kw) -> ImageDataset:
    """Multi-domain stand-in for PACS: each CIFAR-10 image (seeded, balanced per class) in one style domain.

    ``styles`` lists the domains (default photo, sketch, cartoon, painting; ``.domain_names``);
    ``seed`` draws the assignment (the test split uses ``seed + 1``), as for ``rotated-digits``.
    Reads ``cifar-10-batches-py/`` like ``cifar10`` (the offline JPEG copy works).
    """
    no_options("cifar10-styles", kw)
    styles = _check_styles(styles)
    base = load_cifar10(root, split)
    domains = assign_domains(base.labels, len(styles), check_seed(seed) + (split == "test"))
    images = torch.empty_like(base.images)
    for d, style in enumerate(styles):
        mask = domains == d
        images[mask] = render_style(base.images[mask], style)
    description = f"{base.description} in {len(styles)} styles ({', '.join(styles)})"
    return ImageDataset(images, base.labels, list(base.classes), "cifar10-styles", split, domains=domains,
                        domain_names=styles, description=description)


CIFAR10_STYLES = DatasetInfo(
    "cifar10-styles", "CIFAR-10 in 4 styles (photo, sketch, cartoon, painting)", ("train", "test"),
    "cifar-10-batches-py/ (as for cifar10)", load_cifar10_styles, derived_from="cifar10",
    available=CIFAR10.available)
