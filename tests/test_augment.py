"""Tests of gca.augment: shapes, ranges, seeding, per-sample randomness, identities, the crop rule
against a loop port of torchvision's sampler, colour ops against colorsys, CIFAR-10-C brightness
against a straight numpy port of Hendrycks' code, corruptions against scipy / Pillow."""

from __future__ import annotations

import colorsys
import math
import random

import numpy as np
import pytest
import torch

from gca import augment as A

torch.manual_seed(0)


def images(b=16, c=3, h=32, w=32, seed=0, dtype=torch.uint8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.to(dtype) / 255


def off(**kw):
    """Every random op switched off (full-image crop, no flip/jitter/gray), then ``kw``."""
    base = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)
    return A.SimCLRAugment(**{**base, **kw})


# ------------------------------------------------------------------------------------------------
# pipelines: shapes, ranges, seeding
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", A.AUGMENTATIONS)
@pytest.mark.parametrize("channels", [1, 3])
def test_pipelines_shapes_ranges_dtype(name, channels):
    x = images(c=channels)
    aug = A.build_augment(name, 24)
    y = aug(x, generator=torch.Generator().manual_seed(0))
    size = 32 if name == "none" else 24
    assert y.shape == (16, channels, size, size) and y.dtype == torch.float32
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    # float input in [0, 1] gives the same views as uint8 input
    y2 = aug(x.float() / 255, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(y2, y, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["simclr", "strong_crop", "large_erase", "brightness"])
def test_seeded_determinism_and_per_sample_randomness(name):
    aug = A.build_augment(name, 32)
    x = images(b=8)
    a = aug(x, generator=torch.Generator().manual_seed(5))
    b = aug(x, generator=torch.Generator().manual_seed(5))
    c = aug(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    same = images(b=1).expand(8, -1, -1, -1)  # one image repeated: every view must differ
    v = aug(same, generator=torch.Generator().manual_seed(0)).flatten(1)
    d = torch.cdist(v, v) + torch.eye(8) * 1e9
    assert d.min() > 1e-3


def test_global_rng_used_without_generator():
    aug = A.build_augment("simclr")
    torch.manual_seed(1)
    a = aug(images())
    torch.manual_seed(1)
    assert torch.equal(a, aug(images()))


def test_identity_when_all_probabilities_are_zero():
    x = images()
    torch.testing.assert_close(off()(x), x.float() / 255, atol=1e-6, rtol=0)
    torch.testing.assert_close(A.build_augment("none")(x), x.float() / 255, atol=0, rtol=0)


def test_flip_p1_mirrors_and_grayscale_p1_gives_luma():
    x = images()
    torch.testing.assert_close(off(flip_p=1.0)(x), x.flip(-1).float() / 255, atol=1e-6, rtol=0)
    y = off(grayscale_p=1.0)(x)
    xf = x.float() / 255
    luma = 0.299 * xf[:, 0] + 0.587 * xf[:, 1] + 0.114 * xf[:, 2]
    for ch in range(3):
        torch.testing.assert_close(y[:, ch], luma, atol=1e-6, rtol=0)
    g1 = images(c=1)
    torch.testing.assert_close(off(grayscale_p=1.0, jitter=(0, 0, 0.4, 0.1), jitter_p=1.0)(g1),
                               g1.float() / 255, atol=1e-6, rtol=0)  # colour-only ops: identity on grey


def test_probabilities_are_respected():
    x = images(b=2000, h=4, w=4)
    y = off(size=4, flip_p=0.3)(x, generator=torch.Generator().manual_seed(0))
    flipped = (y - x.flip(-1).float() / 255).abs().flatten(1).amax(1) < 1e-6
    assert abs(flipped.float().mean().item() - 0.3) < 0.035  # 3.4 binomial standard deviations


def test_brightness_jitter_factor_range():
    x = torch.full((4000, 3, 4, 4), 0.5)
    y = off(size=4, jitter=(0.4, 0, 0, 0), jitter_p=1.0)(x, generator=torch.Generator().manual_seed(0))
    f = y[:, 0, 0, 0] / 0.5  # brightness factor U[0.6, 1.4]
    assert f.min() >= 0.6 - 1e-6 and f.max() <= 1.4 + 1e-6
    assert abs(f.mean().item() - 1.0) < 0.01 and abs(f.std().item() - 0.8 / math.sqrt(12)) < 0.01


def test_jitter_order_is_random_per_sample():
    # brightness then contrast differs from contrast then brightness when clipping is involved:
    x = images(b=1).float().expand(512, -1, -1, -1) / 255
    aug = off(jitter=(0.4, 0.4, 0, 0), jitter_p=1.0)
    y = aug(x, generator=torch.Generator().manual_seed(0))
    assert y.flatten(1).unique(dim=0).shape[0] == 512


def test_invalid_options_fail_with_clear_messages():
    with pytest.raises(ValueError, match="flip_p"):
        A.SimCLRAugment(flip_p=1.5)
    with pytest.raises(ValueError, match="scale"):
        A.SimCLRAugment(scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="jitter"):
        A.SimCLRAugment(jitter=(0.4, 0.4, 0.4, 0.7))
    with pytest.raises(ValueError, match="unknown augmentation"):
        A.build_augment("solarize")
    with pytest.raises(TypeError, match="valid options"):
        A.build_augment("simclr", bogus=1)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        A.build_augment("simclr")(torch.zeros(2, 4, 8, 8))
    with pytest.raises(TypeError, match="uint8"):
        A.build_augment("simclr")(torch.zeros(2, 3, 8, 8, dtype=torch.int32))


# ------------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------------


def _torchvision_rrc_params(rng: random.Random, h, w, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Straight loop port of torchvision's RandomResizedCrop.get_params."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ar = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


@pytest.mark.parametrize("hw,scale,ratio", [((32, 32), (0.08, 1.0), (3 / 4, 4 / 3)),
                                             ((20, 40), (0.5, 1.0), (0.3, 3.3))])
def test_crop_boxes_match_torchvision_sampler_in_distribution(hw, scale, ratio):
    from scipy.stats import ks_2samp

    H, W = hw
    n = 4000
    boxes = A.sample_resized_crop_boxes(n, H, W, scale=scale, ratio=ratio, generator=torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    assert torch.equal(boxes, boxes.round()) and (h >= 1).all() and (w >= 1).all()
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= H).all() and (left + w <= W).all()
    rng = random.Random(0)
    ref = np.array([_torchvision_rrc_params(rng, H, W, scale, ratio) for _ in range(n)], dtype=float)
    ours = boxes.numpy().astype(np.float64)  # same dtype as ref, or equal values compare unequal
    area, ref_area = ours[:, 2] * ours[:, 3] / (H * W), ref[:, 2] * ref[:, 3] / (H * W)
    assert ks_2samp(area, ref_area).pvalue > 0.001
    assert ks_2samp(ours[:, 3] / ours[:, 2], ref[:, 3] / ref[:, 2]).pvalue > 0.001
    assert ks_2samp(ours[:, 1] + ours[:, 3] / 2, ref[:, 1] + ref[:, 3] / 2).pvalue > 0.001  # centres
    assert abs(area.mean() - ref_area.mean()) < 0.015
    if scale == (0.08, 1.0):  # U(0.08, 1) target areas, lowered to ≈ 0.49 by rejecting crops that do not fit
        assert 0.46 < area.mean() < 0.52 and area.min() < 0.1 and area.max() > 0.95


def test_resized_crop_at_unit_scale_is_an_exact_crop_and_flip():
    x = images(b=2).float() / 255
    boxes = torch.tensor([[3.0, 5.0, 16.0, 20.0], [0.0, 12.0, 16.0, 20.0]])
    y = A.resized_crop(x, boxes, (16, 20), flip=torch.tensor([False, True]))
    torch.testing.assert_close(y[0], x[0, :, 3:19, 5:25], atol=1e-6, rtol=0)
    torch.testing.assert_close(y[1], x[1, :, 0:16, 12:32].flip(-1), atol=1e-6, rtol=0)


def test_resized_crop_of_full_image_equals_bilinear_resize():
    x = images(b=3).float() / 255
    full = torch.tensor([[0.0, 0.0, 32.0, 32.0]]).expand(3, 4)
    ref = torch.nn.functional.interpolate(x, size=48, mode="bilinear", align_corners=False)
    torch.testing.assert_close(A.resized_crop(x, full, 48), ref, atol=1e-5, rtol=0)


def test_fixed_crop_boxes_are_integer_and_inside():
    boxes = A.sample_fixed_crop_boxes(2000, 32, 32, 13, generator=torch.Generator().manual_seed(0))
    assert (boxes[:, 2:] == 13).all() and boxes[:, :2].min() == 0 and boxes[:, :2].max() == 19


@pytest.mark.parametrize("size", [16, 32])
def test_strong_crop_keeps_13_of_32_of_the_resized_crop_at_any_size(size):
    """Paper §5: the strong crop takes 13 px of the 32-px view. It follows the random resized crop
    (a sub-box of it) and keeps the fraction (13/32)² of the view's area at 16 px as at 32 px."""
    aug = A.build_augment("strong_crop", size)
    assert aug.crop_fraction == 13 / 32 and aug.crop_size is None
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    outer = A.sample_resized_crop_boxes(4000, 32, 32, scale=aug.scale, ratio=aug.ratio, generator=g1)
    inner = aug.crop_boxes(4000, 32, 32, generator=g2)
    torch.testing.assert_close(inner[:, 2:], outer[:, 2:] * 13 / 32)  # side: 13/32 of the view's
    assert (inner[:, 0] >= outer[:, 0] - 1e-4).all() and (inner[:, 1] >= outer[:, 1] - 1e-4).all()
    assert (inner[:, 0] + inner[:, 2] <= outer[:, 0] + outer[:, 2] + 1e-4).all()
    assert (inner[:, 1] + inner[:, 3] <= outer[:, 1] + outer[:, 3] + 1e-4).all()
    # a view is an upsampled small patch: its total variation is far below the source's
    x = images(b=64).float() / 255
    v = A.build_augment("strong_crop", size, jitter_p=0, grayscale_p=0)(x, generator=torch.Generator().manual_seed(0))
    ref = A.build_augment("simclr", size, jitter_p=0, grayscale_p=0)(x, generator=torch.Generator().manual_seed(0))
    tv = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean()
    assert tv(v) < 0.6 * tv(ref)


def test_crop_options_are_validated():
    with pytest.raises(ValueError, match="crop_fraction"):
        A.build_augment("simclr", 16, crop_fraction=1.5)
    with pytest.raises(ValueError, match="not both"):
        A.build_augment("simclr", 16, crop_fraction=0.5, crop_size=4)


def test_large_erase_erases_a_quarter_to_half_of_every_image():
    x = images(b=256).float() / 255 * 0.9 + 0.1  # no zero pixels before erasing
    y = A.build_augment("large_erase", 32, jitter_p=0, grayscale_p=0)(x, generator=torch.Generator().manual_seed(0))
    frac = (y == 0).all(1).float().mean((1, 2))
    assert frac.min() >= 0.2 and frac.max() <= 0.55 and abs(frac.mean().item() - 0.375) < 0.03


# ------------------------------------------------------------------------------------------------
# colour maths against references
# ------------------------------------------------------------------------------------------------


def test_hsv_round_trip_and_hue_against_colorsys():
    x = images(b=2, h=6, w=6).float() / 255
    x[0, :, 0, 0] = 0.0  # black
    x[0, :, 0, 1] = 0.4  # grey
    torch.testing.assert_close(A.hsv_to_rgb(A.rgb_to_hsv(x)), x, atol=1e-6, rtol=0)
    shift = torch.tensor([0.1, -0.07])
    y = A.adjust_hue(x, shift)
    for b in range(2):
        for i in range(6):
            for j in range(6):
                h, s, v = colorsys.rgb_to_hsv(*x[b, :, i, j].tolist())
                ref = colorsys.hsv_to_rgb((h + float(shift[b])) % 1.0, s, v)
                np.testing.assert_allclose(y[b, :, i, j].numpy(), ref, atol=1e-5)


def test_contrast_and_saturation_follow_torchvision_formulas():
    x = images(b=2).float() / 255
    f = torch.tensor([0.6, 1.4])
    gray = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    m = gray.mean((1, 2)).view(2, 1, 1, 1)
    torch.testing.assert_close(A.adjust_contrast(x, f), (f.view(2, 1, 1, 1) * x + (1 - f.view(2, 1, 1, 1)) * m).clamp(0, 1))
    ref = (f.view(2, 1, 1, 1) * x + (1 - f.view(2, 1, 1, 1)) * gray.unsqueeze(1)).clamp(0, 1)
    torch.testing.assert_close(A.adjust_saturation(x, f), ref)


# straight numpy port of scikit-image's rgb2hsv / hsv2rgb and Hendrycks' brightness()
def _sk_rgb2hsv(rgb):
    out = np.empty_like(rgb)
    v = rgb.max(-1)
    delta = rgb.ptp(-1) if hasattr(rgb, "ptp") else np.ptp(rgb, -1)
    old = np.seterr(invalid="ignore", divide="ignore")
    s = delta / v
    s[delta == 0.0] = 0
    idx = rgb[..., 0] == v
    h = np.zeros_like(v)
    h[idx] = (rgb[idx, 1] - rgb[idx, 2]) / delta[idx]
    idx = rgb[..., 1] == v
    h[idx] = 2.0 + (rgb[idx, 2] - rgb[idx, 0]) / delta[idx]
    idx = rgb[..., 2] == v
    h[idx] = 4.0 + (rgb[idx, 0] - rgb[idx, 1]) / delta[idx]
    h = (h / 6.0) % 1.0
    h[delta == 0.0] = 0.0
    np.seterr(**old)
    out[..., 0], out[..., 1], out[..., 2] = h, s, v
    return np.nan_to_num(out)


def _sk_hsv2rgb(hsv):
    hi = np.floor(hsv[..., 0] * 6)
    f = hsv[..., 0] * 6 - hi
    p = hsv[..., 2] * (1 - hsv[..., 1])
    q = hsv[..., 2] * (1 - f * hsv[..., 1])
    t = hsv[..., 2] * (1 - (1 - f) * hsv[..., 1])
    v = hsv[..., 2]
    hi = np.stack([hi, hi, hi], axis=-1).astype(np.uint8) % 6
    out = np.choose(hi, np.stack([np.stack((v, t, p), axis=-1), np.stack((q, v, p), axis=-1),
                                  np.stack((p, v, t), axis=-1), np.stack((p, q, v), axis=-1),
                                  np.stack((t, p, v), axis=-1), np.stack((v, p, q), axis=-1)]))
    return out


def _hendrycks_brightness(x_hwc_uint8, severity):
    c = [.05, .1, .15, .2, .3][severity - 1]
    x = np.array(x_hwc_uint8) / 255.
    x = _sk_rgb2hsv(x)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    x = _sk_hsv2rgb(x)
    return np.clip(x, 0, 1) * 255


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_brightness_matches_hendrycks_formula(severity):
    x = images(b=4)
    x[0, :, :4, :4] = 0  # black pixels
    x[1, :, :4, :4] = 250  # near-white greys: the value channel saturates
    ours = A.corrupt(x, "brightness", severity) * 255
    for b in range(4):
        ref = _hendrycks_brightness(x[b].permute(1, 2, 0).numpy(), severity)
        np.testing.assert_allclose(ours[b].permute(1, 2, 0).numpy(), ref, atol=1e-3)


def test_brightness_augmentation_is_severity_5_on_every_image():
    x = images(b=8)
    aug = A.build_augment("brightness", 32, scale=(1, 1), ratio=(1, 1), flip_p=0, jitter_p=0, grayscale_p=0)
    torch.testing.assert_close(aug(x), A.hsv_brightness(x.float() / 255, 0.3), atol=1e-6, rtol=0)
    assert aug(x).mean() > x.float().mean() / 255 + 0.1  # not wiped out (cf. official-code item 9)
    g = images(b=2, c=1).float() / 255
    torch.testing.assert_close(A.hsv_brightness(g, 0.3), (g + 0.3).clamp(0, 1))


# ------------------------------------------------------------------------------------------------
# test-time corruptions
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", A.CORRUPTIONS)
def test_corruptions_shapes_ranges_determinism_and_severity(name):
    x = images(b=8)
    outs = [A.corrupt(x, name, s, generator=torch.Generator().manual_seed(0)) for s in (1, 5)]
    for y in outs:
        assert y.shape == x.shape and y.dtype == torch.float32 and y.min() >= 0 and y.max() <= 1
    again = A.corrupt(x, name, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, outs[1])
    dist = [(y - x.float() / 255).abs().mean().item() for y in outs]
    if name != "saturate":  # saturate's severities change saturation in both directions
        assert dist[1] > dist[0] > 0
    g1 = A.corrupt(images(b=2, c=1), name, 3, generator=torch.Generator().manual_seed(0))
    assert g1.shape == (2, 1, 32, 32)


def test_gaussian_blur_corruption_matches_scipy():
    from scipy.ndimage import gaussian_filter

    x = images(b=2).float() / 255
    y = A.corrupt(x, "gaussian_blur", 5)  # sigma 1, scikit-image: truncate 4, mode nearest
    ref = gaussian_filter(x.numpy(), sigma=(0, 0, 1.0, 1.0), mode="nearest", truncate=4.0)
    np.testing.assert_allclose(y.numpy(), np.clip(ref, 0, 1), atol=1e-5)


def test_pixelate_matches_pillow_box_resize():
    from PIL import Image

    x = images(b=1).float() / 255
    y = A.corrupt(x, "pixelate", 5)  # 32 -> int(32 * 0.65) = 20 -> 32, BOX both ways
    for ch in range(3):
        im = Image.fromarray(x[0, ch].numpy().astype(np.float32), mode="F")
        ref = np.asarray(im.resize((20, 20), Image.BOX).resize((32, 32), Image.BOX))
        np.testing.assert_allclose(y[0, ch].numpy(), np.clip(ref, 0, 1), atol=1e-5)


def test_noise_corruptions_have_the_published_strength():
    x = torch.full((64, 3, 32, 32), 0.5)
    g = torch.Generator().manual_seed(0)
    assert abs((A.corrupt(x, "gaussian_noise", 3, generator=g) - 0.5).std().item() - 0.08) < 0.002
    assert abs((A.corrupt(x, "speckle_noise", 5, generator=g) - 0.5).std().item() - 0.5 * 0.2) < 0.002
    shot = A.corrupt(x, "shot_noise", 5, generator=g)  # Poisson(0.5 * 50) / 50: std sqrt(25)/50
    assert abs(shot.std().item() - 0.1) < 0.003 and torch.allclose(shot * 50, (shot * 50).round(), atol=1e-4)
    imp = A.corrupt(x, "impulse_noise", 5, generator=g)  # 7 % of values replaced by 0 or 1
    assert abs((imp != 0.5).float().mean().item() - 0.07) < 0.005
    assert abs((imp == 1).float().mean().item() - 0.035) < 0.004
    torch.testing.assert_close(A.corrupt(x, "contrast", 2), x)  # contrast keeps a flat image


def test_corrupt_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown corruption"):
        A.corrupt(images(), "rain", 1)
    for s in (0, 6, 2.0, True):
        with pytest.raises(ValueError, match="severity"):
            A.corrupt(images(), "contrast", s)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_views_equal_cpu_views_with_a_cpu_generator():
    x = images(b=64)
    for name in ("simclr", "strong_crop", "large_erase", "brightness"):
        aug = A.build_augment(name, 32, blur_p=0.5)
        cpu = aug(x, generator=torch.Generator().manual_seed(0))
        gpu = aug(x.cuda(), generator=torch.Generator().manual_seed(0))
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
    cg = torch.Generator(device="cuda").manual_seed(0)
    assert A.corrupt(x.cuda(), "gaussian_noise", 3, generator=cg).device.type == "cuda"


def test_functional_ops_check_shapes():
    x = images(b=2).float() / 255
    with pytest.raises(ValueError, match=r"boxes must have shape \(2, 4\)"):
        A.resized_crop(x, torch.zeros(3, 4), 8)
    with pytest.raises(ValueError, match="flip"):
        A.resized_crop(x, torch.tensor([[0.0, 0, 8, 8]] * 2), 8, flip=torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="boxes"):
        A.erase(x, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="sigma"):
        A.gaussian_blur(x, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="channels"):
        A.normalize(x, (0.5,), (0.2,))
    with pytest.raises(ValueError, match="crop size"):
        A.sample_fixed_crop_boxes(2, 32, 32, 40)


def test_blur_option_blurs():
    x = images(b=64).float() / 255
    aug = off(blur_p=1.0, size=32)
    y = aug(x, generator=torch.Generator().manual_seed(0))
    tv = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean(dim=(1, 2, 3))
    assert (tv(y) <= tv(x) + 1e-6).all() and tv(y).mean() < 0.5 * tv(x).mean()  # sigma ~ U(0.1, 2) px
    torch.testing.assert_close(y.mean((2, 3)), x.mean((2, 3)), atol=0.02, rtol=0)  # blur keeps the mean


def test_fused_colour_jitter_equals_a_per_image_loop():
    """The batched jitter (fused blends, per-image order) against torchvision's sequence, image by image."""
    x = images(b=24).float() / 255
    g = torch.Generator().manual_seed(3)
    factors = torch.stack([0.6 + 0.8 * torch.rand(24, generator=g), 0.6 + 0.8 * torch.rand(24, generator=g),
                           0.6 + 0.8 * torch.rand(24, generator=g), -0.1 + 0.2 * torch.rand(24, generator=g)], 1)
    order = torch.argsort(torch.rand(24, 4, generator=g), 1)
    apply = torch.rand(24, generator=g) < 0.8
    y = A.ops._color_jitter(x.clone(), factors, order, apply, (True, True, True, True))
    ops = [A.adjust_brightness, A.adjust_contrast, A.adjust_saturation, A.adjust_hue]
    for b in range(24):
        ref = x[b:b + 1]
        if apply[b]:
            for k in order[b].tolist():
                ref = ops[k](ref, factors[b:b + 1, k])
        torch.testing.assert_close(y[b:b + 1], ref, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_benchmark_script_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_augment.py"
    out = tmp_path / "augment.md"
    subprocess.run([sys.executable, str(script), "--batch", "16", "--rounds", "1", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    text = out.read_text()
    assert "| PIL per image, 1 process |" in text and "gca.augment simclr, batched, 2 threads" in text


def test_float32_inside_autocast():
    x = images(b=4)
    ref = A.build_augment("simclr", blur_p=1.0)(x, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = A.build_augment("simclr", blur_p=1.0)(x, generator=torch.Generator().manual_seed(0))
        c = A.corrupt(x, "pixelate", 3)
    assert y.dtype == torch.float32 and c.dtype == torch.float32
    torch.testing.assert_close(y, ref)
