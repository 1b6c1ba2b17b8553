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
own forward+backward on the step's embeddings. The measurement is
:func:`gca.study.cost.measure_train_steps` (shared with the GPU campaign); this script prints and saves it.

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
import sys
import time
from pathlib import Path

from gca.study.cost import measure_train_steps

RESULTS = Path(__file__).resolve().parent / "results"

#: The measurement (:func:`gca.study.cost.measure_train_steps`); this script formats and saves it.
run = measure_train_steps


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
