"""Forward + backward time of the loss family against INCE (F.cross_entropy), side by side.

Setting of the issue: B = 512 pairs, joint layout (N = 1024), d = 128, 10 iterations, ε = 0.5,
float32, ``torch.set_num_threads(2)``. Other processes may share the CPU, so the methods are
measured *interleaved* (one repetition of each in turn, many rounds) and the table reports the
median time of each and the ratio of medians plus the median of per-round ratios.

Run: ``.venv/bin/python benchmarks/bench_losses.py [--rounds 30] [--out benchmarks/results/losses.md]``
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gca import losses


def nt_xent_reference(z1, z2, epsilon):
    """INCE as practitioners write it: masked similarities + F.cross_entropy."""
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / epsilon).fill_diagonal_(-math.inf)
    labels = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(logits, labels)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--n-iter", type=int, default=10)
    ap.add_argument("--epsilon", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    z1 = torch.randn(args.batch, args.dim, requires_grad=True)
    z2 = (z1.detach() + 0.5 * torch.randn(args.batch, args.dim)).requires_grad_(True)
    eps, T = args.epsilon, args.n_iter
    methods = {
        "INCE (F.cross_entropy)": lambda: nt_xent_reference(z1, z2, eps),
        "ince (gca.losses)": lambda: losses.ince_loss(z1, z2, epsilon=eps),
        "rince": lambda: losses.rince_loss(z1, z2, epsilon=eps),
        "gca-ince": lambda: losses.gca_ince_loss(z1, z2, epsilon=eps, n_iter=T),
        "gca-rince": lambda: losses.gca_rince_loss(z1, z2, epsilon=eps, n_iter=T),
        "gca-uot": lambda: losses.gca_uot_loss(z1, z2, epsilon=eps, n_iter=T),
        "iot-uni": lambda: losses.iot_uni_loss(z1, z2, epsilon=eps, n_iter=T),
    }

    def step(fn):
        z1.grad = z2.grad = None
        t0, c0 = time.perf_counter(), time.process_time()
        fn().backward()
        return time.perf_counter() - t0, time.process_time() - c0

    for fn in methods.values():  # warm-up
        for _ in range(3):
            step(fn)
    wall = {k: [] for k in methods}
    cpu = {k: [] for k in methods}
    for _ in range(args.rounds):
        for k, fn in methods.items():
            w, c = step(fn)
            wall[k].append(w)
            cpu[k].append(c)
    ref = "INCE (F.cross_entropy)"
    rows = []
    for k in methods:
        med, best, cmed = (statistics.median(wall[k]), min(wall[k]), statistics.median(cpu[k]))
        per_round = statistics.median(t / r for t, r in zip(wall[k], wall[ref]))
        rows.append((k, med * 1e3, best * 1e3, cmed * 1e3, med / statistics.median(wall[ref]),
                     best / min(wall[ref]), per_round, cmed / statistics.median(cpu[ref])))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = (f"B={args.batch} (joint, N={2 * args.batch}), d={args.dim}, n_iter={T}, epsilon={eps}, "
              f"float32, {args.threads} threads, {args.rounds} interleaved rounds (3 warm-up); torch "
              f"{torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
              f"{load:.1f} at the end of the run")
    lines = [header, "",
             "| loss | wall median (ms) | wall min (ms) | CPU median (ms) | ratio: wall medians | "
             "ratio: wall mins | ratio: median per-round | ratio: CPU medians |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.2f}x | {r[5]:.2f}x | "
              f"{r[6]:.2f}x | {r[7]:.2f}x |" for r in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
