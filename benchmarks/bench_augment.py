"""Throughput of one augmented view: batched on-device augmentation vs a per-image PIL pipeline.

The PIL pipeline does what torchvision's CIFAR SimCLR transform does image by image (without
torchvision, which does not import here): ``Image.fromarray``, RandomResizedCrop (torchvision's
sampling rule, bilinear), horizontal flip, colour jitter (brightness/contrast/saturation via
ImageEnhance, hue via an HSV uint8 shift, random order) with p = 0.8, grayscale p = 0.2, then
conversion to a float tensor and stacking. The batched path is ``gca.augment.build_augment("simclr")``
on a uint8 batch. Measurements are interleaved (A, B, C, A, B, C, ...) and the median of the rounds
is reported, because the CPU is shared with other processes.

Usage: python benchmarks/bench_augment.py [--batch 512] [--rounds 7] [--out benchmarks/results/augment.md]

With more runnable processes than cores, OpenMP's default spin-waiting makes every multi-threaded
torch op wait for a descheduled partner thread; ``OMP_WAIT_POLICY=PASSIVE`` (set before Python
starts) avoids that. The results file keeps one table per setting.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gca import augment as A  # noqa: E402
from gca import data as gd  # noqa: E402


# ------------------------------------------------------------------------------------------------
# the per-image PIL reference pipeline
# ------------------------------------------------------------------------------------------------


def _rrc_params(rng: random.Random, h: int, w: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ar = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    return 0, 0, h, w


def _hue(img: Image.Image, shift: float) -> Image.Image:
    h, s, v = img.convert("HSV").split()
    np_h = np.array(h, dtype=np.uint8)
    np_h += np.uint8(int(shift * 255) % 256)  # wraps around like torchvision's PIL path
    return Image.merge("HSV", (Image.fromarray(np_h, "L"), s, v)).convert("RGB")


def pil_simclr_view(arr_hwc: np.ndarray, rng: random.Random, size: int = 32) -> torch.Tensor:
    img = Image.fromarray(arr_hwc)
    top, left, h, w = _rrc_params(rng, img.height, img.width)
    img = img.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < 0.8:
        b, c, s, hue = rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4), rng.uniform(-0.1, 0.1)
        for op in rng.sample(range(4), 4):
            if op == 0:
                img = ImageEnhance.Brightness(img).enhance(b)
            elif op == 1:
                img = ImageEnhance.Contrast(img).enhance(c)
            elif op == 2:
                img = ImageEnhance.Color(img).enhance(s)
            else:
                img = _hue(img, hue)
    if rng.random() < 0.2:
        img = img.convert("L").convert("RGB")
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)


def pil_batch(arrs: np.ndarray, seed: int) -> torch.Tensor:
    rng = random.Random(seed)
    return torch.stack([pil_simclr_view(a, rng) for a in arrs])


def _worker_init() -> None:
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------


def load_images(batch: int) -> tuple[torch.Tensor, str]:
    try:
        ds = gd.load_dataset("cifar10", "test")
        return ds.images[:batch].clone(), "CIFAR-10 (JPEG copy) test images"
    except gd.DatasetNotFoundError:
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (batch, 3, 32, 32), generator=g, dtype=torch.uint8), "random uint8 images"


def timed(fn, n_images: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n_images / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    ap.add_argument("--append", action="store_true", help="append to --out instead of overwriting it")
    args = ap.parse_args()

    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    x, source = load_images(args.batch)
    arrs = x.permute(0, 2, 3, 1).contiguous().numpy()
    halves = [arrs[: len(arrs) // 2], arrs[len(arrs) // 2:]]
    augs = {name: A.build_augment(name, 32) for name in ("simclr", "strong_crop", "large_erase", "brightness")}
    gen = torch.Generator().manual_seed(0)

    def batched(name: str, threads: int):
        def run():
            torch.set_num_threads(threads)
            augs[name](x, generator=gen)
        return run

    pool = mp.get_context("fork").Pool(2, initializer=_worker_init)

    def pil_two_procs():
        torch.stack([t for part in pool.starmap(pil_batch, [(halves[0], 1), (halves[1], 2)]) for t in part])

    cases = {
        "PIL per image, 1 process": lambda: pil_batch(arrs, 0),
        "PIL per image, 2 worker processes": pil_two_procs,
        "gca.augment simclr, batched, 1 thread": batched("simclr", 1),
        "gca.augment simclr, batched, 2 threads": batched("simclr", 2),
        "gca.augment strong_crop, batched, 2 threads": batched("strong_crop", 2),
        "gca.augment large_erase, batched, 2 threads": batched("large_erase", 2),
        "gca.augment brightness, batched, 2 threads": batched("brightness", 2),
    }
    for fn in cases.values():  # warm-up
        fn()
    rates = {k: [] for k in cases}
    for _ in range(args.rounds):  # interleaved rounds
        for k, fn in cases.items():
            rates[k].append(timed(fn, args.batch))
    pool.close()
    torch.set_num_threads(2)
    med = {k: statistics.median(v) for k, v in rates.items()}
    base1, base2 = med["PIL per image, 1 process"], med["PIL per image, 2 worker processes"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "## Augmentation throughput: one SimCLR view, batch %d, 32x32, CPU (%s)"
        % (args.batch, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
        "",
        f"Measured by `benchmarks/bench_augment.py` on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, Pillow {Image.__version__}; input: {source}; "
        f"median of {args.rounds} interleaved rounds; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
        f"1-min load average before/after {load0:.1f}/{load:.1f} "
        "(the machine is shared, absolute numbers are noisy, the ratios are measured side by side).",
        "",
        "| pipeline | images/s (median) | min–max | vs PIL 1 process | vs PIL 2 processes |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, v in rates.items():
        lines.append(f"| {k} | {med[k]:,.0f} | {min(v):,.0f}–{max(v):,.0f} | {med[k] / base1:.1f}× | {med[k] / base2:.1f}× |")
    lines += [
        "",
        "The PIL rows do the SimCLR operations image by image as torchvision's CIFAR pipeline does "
        "(crop+resize, flip, colour jitter in random order with p = 0.8, grayscale p = 0.2, to tensor); "
        "'2 worker processes' splits the batch over a 2-process pool, as a DataLoader with 2 workers would. "
        "The batched rows run `gca.augment.build_augment(name)` on the uint8 batch.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.append and args.out.exists():
            text = args.out.read_text() + "\n" + text
        else:
            text = ("# gca.augment throughput (benchmarks/bench_augment.py)\n\nEvery run is kept, in order, with "
                    "the machine's load: the CPU is shared with other jobs.\n\n" + text)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
