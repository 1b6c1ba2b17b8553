"""Pretraining step time of GCA-UOT and GCA-INCE against INCE (same backbone, batch, device).

A *step* is exactly what :func:`gca.train.pretrain` runs per iteration
(:class:`gca.train.TrainStep`): two augmented views of a uint8 batch made on the device
(:class:`gca.train.ViewMaker`), one forward of both views, the loss, backward, optimiser step.
Methods are timed in interleaved rounds (INCE, GCA-INCE, GCA-UOT, INCE, ...) so that machine
noise hits all of them alike; the table reports medians and the ratio to INCE. On the CPU the
ratios use the process's CPU time (``time.process_time``), which a busy shared machine does not
inflate the way it inflates wall-clock time (while another job holds the core, this one is not
charged); wall-clock medians are reported beside them. On CUDA the ratios use wall-clock time
(with synchronisation). Also reported:
the time to make the two views (to show data augmentation is not the bottleneck) and the loss's
own forward+backward on the step's embeddings.

Target (issue 4): GCA-UOT and GCA-INCE steps ≤ 1.10 × the INCE step on CPU.

Usage::

    python benchmarks/bench_step.py                       # cpu-profile backbone, batch 256
    python benchmarks/bench_step.py --backbone resnet18 --batch 64 --rounds 5
    python benchmarks/bench_step.py --quick               # a few seconds, for tests
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(*, methods=("ince", "gca-ince", "gca-uot"), backbone="small", width=None, batch=256, image_size=32,
        channels=3, rounds=8, warmup=2, device="cpu", threads=None, amp=False, seed=0, progress=True) -> dict:
    """Time training steps; returns a JSON-serialisable dict of medians (seconds) and ratios."""
    from gca.config import resolve_config
    from gca.train import ViewMaker, build_training, resolve_device

    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    base = {"model.backbone": backbone, "model.width": "none" if width is None else width,
            "train.batch_size": batch, "train.amp": amp, "train.device": str(dev), "train.seed": seed}
    profile = "cpu" if backbone == "small" else "paper"
    steppers = {}
    for m in methods:
        cfg = resolve_config(profile, method=m, overrides=base)
        steppers[m] = build_training(cfg, in_channels=channels, device=dev, total_steps=10**6)
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, channels, image_size, image_size), dtype=torch.uint8, generator=g).to(dev)
    views = ViewMaker("simclr", image_size, torch.full((channels,), 0.5), torch.full((channels,), 0.25), dev)

    cpu_clock = dev.type == "cpu"
    clock = time.process_time if cpu_clock else time.perf_counter
    times = {m: [] for m in methods}
    wall = {m: [] for m in methods}
    aug_times, loss_times = [], {m: [] for m in methods}
    total = (warmup + rounds) * len(methods)
    done = 0
    for r in range(warmup + rounds):
        for m in methods:
            st = steppers[m]
            _sync(dev)
            w0, t0 = time.perf_counter(), clock()
            v = views(images, g)
            _sync(dev)
            t1 = clock()
            st.step(v, r)
            _sync(dev)
            w2, t2 = time.perf_counter(), clock()
            # the loss alone on this step's embeddings (forward + backward)
            with torch.no_grad():
                z1, z2 = st.model(torch.cat(v)).float().chunk(2)
            z1.requires_grad_(True)
            z2.requires_grad_(True)
            _sync(dev)
            t3 = clock()
            st.loss_fn(z1, z2).backward()
            _sync(dev)
            t4 = clock()
            if r >= warmup:
                times[m].append(t2 - t0)
                wall[m].append(w2 - w0)
                aug_times.append(t1 - t0)
                loss_times[m].append(t4 - t3)
            done += 1
            if progress:
                print(f"\r{done}/{total} steps", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    med = {m: statistics.median(t) for m, t in times.items()}
    loss_med = {m: statistics.median(t) for m, t in loss_times.items()}
    ref = methods[0]
    return {
        "device": str(dev), "device_name": _device_name(dev), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "backbone": backbone, "feat_dim": steppers[ref].model.backbone.feat_dim,
        "batch": batch, "image_size": image_size, "rounds": rounds, "amp": amp,
        "clock": "process CPU time" if cpu_clock else "wall clock",
        "step_s": med, "step_ratio": {m: med[m] / med[ref] for m in methods},
        "step_wall_s": {m: statistics.median(t) for m, t in wall.items()},
        "loss_fwd_bwd_s": loss_med, "loss_ratio": {m: loss_med[m] / loss_med[ref] for m in methods},
        "augment_two_views_s": statistics.median(aug_times),
        "augment_fraction_of_step": statistics.median(aug_times) / med[ref],
        "reference": ref,
    }


def _device_name(dev: torch.device) -> str:
    from gca.provenance import device_description

    return device_description(dev)


def to_markdown(res: dict) -> str:
    lines = [
        f"Device: {res['device_name']} · torch {res['torch']} · {res['threads']} thread(s) · "
        f"backbone `{res['backbone']}` (feature size {res['feat_dim']}) · batch {res['batch']} "
        f"({2 * res['batch']} views of {res['image_size']}×{res['image_size']}) · median of {res['rounds']} "
        f"interleaved rounds · AMP {'on' if res['amp'] else 'off'} · times are {res['clock']}",
        "",
        f"| method | step (s) | step / {res['reference'].upper()} | step wall (s) | loss fwd+bwd (ms) "
        f"| loss / {res['reference'].upper()} |",
        "|---|---|---|---|---|---|",
    ]
    for m in res["step_s"]:
        lines.append(f"| {m} | {res['step_s'][m]:.3f} | {res['step_ratio'][m]:.3f} | {res['step_wall_s'][m]:.3f} | "
                     f"{1e3 * res['loss_fwd_bwd_s'][m]:.1f} | {res['loss_ratio'][m]:.2f} |")
    lines += ["", f"Two augmented views per step: {1e3 * res['augment_two_views_s']:.1f} ms "
              f"({100 * res['augment_fraction_of_step']:.1f} % of the {res['reference'].upper()} step; "
              "included in the step times above)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="ince,gca-ince,gca-uot", help="comma-separated; the first is the reference")
    p.add_argument("--backbone", default="small", choices=["small", "resnet18", "resnet50"])
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds): checks that the benchmark runs")
    p.add_argument("--out", default=None, help="write <out>.md and <out>.json (default: print only)")
    a = p.parse_args(argv)
    kw = dict(methods=tuple(a.methods.split(",")), backbone=a.backbone, width=a.width, batch=a.batch,
              image_size=a.image_size, rounds=a.rounds, warmup=a.warmup, device=a.device, threads=a.threads,
              amp=a.amp)
    if a.quick:
        kw.update(width=4, batch=16, image_size=8, rounds=2, warmup=1)
    t0 = time.perf_counter()
    res = run(**kw)
    res["wall_s"] = time.perf_counter() - t0
    res["command"] = " ".join(["python", "benchmarks/bench_step.py", *(argv if argv is not None else sys.argv[1:])])
    res["machine"] = platform.platform()
    md = to_markdown(res)
    print(md)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
        out.with_suffix(".md").write_text(f"# Pretraining step time (`{res['command']}`)\n\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
