"""Benchmark of gca.ot against POT, and backward-pass peak memory per gradient mode.

Run:  .venv/bin/python benchmarks/bench_ot.py [--n 1024] [--iters 100] [--repeats 5] [--threads 2]

1. Time, side by side in one run on the same float32 inputs (N × N cosine-type costs in [0, 2]):
   ``gca.ot.sinkhorn`` (auto = kernel fast path where safe, and forced log domain) vs POT's
   ``ot.bregman.sinkhorn_log`` and ``ot.sinkhorn`` (Knopp), NumPy and torch back ends, for a fixed
   number of iterations (``tol=0`` / ``stopThr=0``), at ε = 0.05 and ε = 0.5. Medians over
   interleaved repeats; the row marginal error of each plan is printed to show the iterates agree.
   Each timed call is preceded by an untimed 0.3 s pause: after a multithreaded call OpenBLAS's
   workers spin for ~0.1 s and slow whatever runs next (section 2 measures it), which would
   penalise the solver that follows a NumPy one in the interleaving.
2. Matrix–vector back ends of the kernel path: one ``K v`` / ``Kᵀ u`` at N through
   ``torch.matmul`` (MKL) and through NumPy's OpenBLAS pinned to one thread (what ``gca.ot``
   uses on CPU); an N² ``torch.exp`` right after a 1- vs multi-threaded OpenBLAS gemv; and
   ``sinkhorn`` on a batch of 64 problems of 128 × 128 with either back end.
3. Peak memory of forward + backward through ``sinkhorn`` for 1, 10, 50 iterations per gradient
   mode (``unrolled``, ``implicit`` dense and conjugate-gradient, ``detach``) and, for reference,
   plain PyTorch autograd through an unrolled log-domain loop. Loss: ``w₁·f + w₂·g`` (for
   ``detach``: the row log-normaliser of ``(f ⊕ g − C)/ε``, i.e. the explicit dependence).

Timings (1, 2) run in this process with the default allocator; ``OMP_WAIT_POLICY=PASSIVE`` is set
(unless set) before torch loads: on a shared, oversubscribed machine spinning OpenMP workers make
small torch ops 10–30× slower, which would distort the comparison with NumPy-based POT.

Memory method (3): a child process (``--memory-only``) runs with ``MALLOC_MMAP_THRESHOLD_=65536``
so every tensor buffer ≥ 64 KiB is its own ``mmap`` returned to the OS on free (that setting makes
every large allocation pay its page faults, so it is kept away from the timings); before each
measurement the kernel's peak-RSS counter is reset (``echo 5 > /proc/self/clear_refs``) and the
peak is read from ``VmHWM`` in ``/proc/self/status``; we report ``VmHWM − VmRSS(before)`` (inputs
excluded), median of 3. Resolution is a few MiB (RSS counters are updated in batches); one N × N
float32 matrix is 4 MiB at N = 1024. (tracemalloc does not see torch's CPU allocator.)

Results: printed, and written to ``benchmarks/results/ot.json`` and ``benchmarks/results/ot.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

# shared, oversubscribed machine: spinning OpenMP workers make small torch ops 10-30x slower
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if ("--memory-only" in sys.argv and os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536"
        and sys.platform.startswith("linux")):
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # the memory measurement's process (docstring)
    os.execv(sys.executable, [sys.executable, *sys.argv])

import numpy as np  # noqa: E402
import ot as pot  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from gca.ot import autodiff, backends  # noqa: E402
from gca.ot import sinkhorn  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PAUSE = 0.3  # s between timed calls: OpenBLAS workers spin ~0.1 s after a multithreaded call


def _time_us(fn, reps: int) -> float:
    """Median over 5 blocks of the mean time of ``reps`` calls (µs)."""
    fn()
    blocks = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        blocks.append((time.perf_counter() - t0) / reps * 1e6)
    return statistics.median(blocks)


@contextlib.contextmanager
def matvec_limit(limit: int):
    """Temporarily set ``gca.ot.backends.NUMPY_MATVEC_MAX`` (0: every kernel through ``torch.matmul``)."""
    old = backends.NUMPY_MATVEC_MAX
    backends.NUMPY_MATVEC_MAX = limit
    try:
        yield
    finally:
        backends.NUMPY_MATVEC_MAX = old


def backend_table(n, iters, progress):
    """Matvec back ends of the kernel path, side by side (what ``gca.ot.backends.matvecs`` chooses from)."""
    from threadpoolctl import threadpool_limits

    C = make_cost(n)
    K = torch.exp(-C / 0.5)[None].contiguous()
    v = torch.rand(1, n, generator=torch.Generator().manual_seed(3))
    Kn, vn = K.numpy(), v.numpy()
    X = torch.rand(n, n)
    rows = []
    mv_np, rmv_np = backends.matvecs(K)
    with matvec_limit(0):
        mv_t, rmv_t = backends.matvecs(K)
    for name, fn in (("K v, torch.matmul (MKL)", lambda: mv_t(v)), ("Kᵀ u, torch.matmul (MKL)", lambda: rmv_t(v)),
                     ("K v, NumPy OpenBLAS 1 thread (gca)", lambda: mv_np(v)),
                     ("Kᵀ u, NumPy OpenBLAS 1 thread (gca)", lambda: rmv_np(v)),
                     ("K v, NumPy OpenBLAS default threads", lambda: np.matmul(Kn, vn[:, :, None]))):
        time.sleep(PAUSE)
        rows.append({"what": f"one matvec, N = {n}", "variant": name, "us": _time_us(fn, 400)})
    progress.update(1)
    # a parallel N² torch op right after a gemv: spinning OpenBLAS workers slow it down
    for k in (1, os.cpu_count()):
        def after_gemv():
            np.matmul(Kn, vn[:, :, None])
            torch.exp(X)
        time.sleep(PAUSE)
        with threadpool_limits(limits=k, user_api="blas"):
            rows.append({"what": f"N² torch.exp right after a gemv (N = {n})",
                         "variant": f"OpenBLAS {k} thread(s)", "us": _time_us(after_gemv, 50)})
    progress.update(1)
    # batches of small problems: one BLAS call per problem vs torch's batched matmul
    Bs, ns = 64, 128
    Cb = torch.stack([make_cost(ns, seed=s) for s in range(Bs)])
    for name, lim in (("NumPy OpenBLAS 1 thread (gca)", backends.NUMPY_MATVEC_MAX), ("torch.matmul", 0)):
        time.sleep(PAUSE)
        with matvec_limit(lim):
            us = _time_us(lambda: sinkhorn(Cb, epsilon=0.5, max_iter=iters, tol=0), 3)
        rows.append({"what": f"sinkhorn, {Bs} problems of {ns}×{ns}, {iters} iterations", "variant": name,
                     "us": us})
    progress.update(1)
    return rows


def _status(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def peak_memory(fn) -> float:
    """Peak resident memory (MiB) added while running ``fn`` (see module docstring)."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    fn()
    return (_status("VmHWM") - before) / 2**20


def make_cost(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(n, 64, generator=g), dim=1)
    return 1.0 - z @ z.T  # cosine distance in [0, 2]


def row_error(P, a) -> float:
    P = torch.as_tensor(P, dtype=torch.float64)
    return float((P.sum(1) - a).abs().sum())


def time_solvers(n, iters, repeats, progress):
    C = make_cost(n)
    a = torch.full((n,), 1.0 / n)
    Cn, an = C.numpy(), a.numpy()
    rows = []
    for eps in (0.05, 0.5):
        solvers = {
            "gca sinkhorn (auto)": lambda: sinkhorn(C, a, a, epsilon=eps, max_iter=iters, tol=0).plan,
            "gca sinkhorn (log)": lambda: sinkhorn(C, a, a, epsilon=eps, max_iter=iters, tol=0, domain="log").plan,
            "POT sinkhorn_log (numpy)": lambda: pot.bregman.sinkhorn_log(an, an, Cn, eps, numItermax=iters, stopThr=0),
            "POT sinkhorn_log (torch)": lambda: pot.bregman.sinkhorn_log(a, a, C, eps, numItermax=iters, stopThr=0),
            "POT sinkhorn Knopp (numpy)": lambda: pot.sinkhorn(an, an, Cn, eps, numItermax=iters, stopThr=0),
            "POT sinkhorn Knopp (torch)": lambda: pot.sinkhorn(a, a, C, eps, numItermax=iters, stopThr=0),
        }
        times = {k: [] for k in solvers}
        errs = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k, fn in solvers.items():  # warm-up + correctness
                P = fn()
                errs[k] = row_error(P, a.double())
                finite = bool(np.isfinite(np.asarray(P)).all())
                errs[k] = errs[k] if finite else float("nan")
            for _ in range(repeats):  # interleaved repeats
                for k, fn in solvers.items():
                    time.sleep(PAUSE)  # let the previous solver's BLAS workers go idle (docstring)
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
                progress.update(1)
        dom = sinkhorn(C, a, a, epsilon=eps, max_iter=1, tol=0).domain
        base = statistics.median(times["POT sinkhorn_log (numpy)"])
        knopp = statistics.median(times["POT sinkhorn Knopp (numpy)"])
        for k in solvers:
            med = statistics.median(times[k])
            rows.append({"epsilon": eps, "solver": k + (f" [{dom}]" if k.endswith("(auto)") else ""),
                         "median_ms": 1e3 * med, "min_ms": 1e3 * min(times[k]),
                         "speedup_vs_pot_log_numpy": base / med, "speedup_vs_pot_knopp_numpy": knopp / med,
                         "row_marginal_L1_error": errs[k]})
    return rows


def naive_unrolled(C, a, b, eps, iters):
    """Plain autograd through a log-domain loop (what the lean backward avoids)."""
    g = torch.zeros_like(b)
    la, lb = a.log(), b.log()
    for _ in range(iters):
        f = eps * (la - torch.logsumexp((g[None, :] - C) / eps, 1))
        g = eps * (lb - torch.logsumexp((f[:, None] - C) / eps, 0))
    return f, g


def memory_table(n, progress):
    C0 = make_cost(n)
    a = torch.ones(n)
    w1 = torch.randn(n, generator=torch.Generator().manual_seed(1))
    w2 = torch.randn(n, generator=torch.Generator().manual_seed(2))
    rows = []
    for mode in ("unrolled", "implicit", "implicit (CG)", "detach", "naive autograd (log loop)"):
        for iters in (1, 10, 50):
            def run(C):
                if mode.startswith("naive"):
                    f, g = naive_unrolled(C, a, a, 0.5, iters)
                    loss = (f * w1).sum() + (g * w2).sum()
                elif mode == "detach":
                    r = sinkhorn(C, a, a, epsilon=0.5, max_iter=iters, tol=0, grad=mode)
                    lp = (r.f[:, None] + r.g[None, :] - C) / 0.5  # the explicit dependence only
                    loss = lp.logsumexp(1).sum()
                else:
                    dense_max = autodiff.IMPLICIT_DENSE_MAX
                    autodiff.IMPLICIT_DENSE_MAX = 0 if mode.endswith("(CG)") else dense_max
                    try:
                        r = sinkhorn(C, a, a, epsilon=0.5, max_iter=iters, tol=0, grad=mode.split()[0])
                        loss = (r.f * w1).sum() + (r.g * w2).sum()
                        loss.backward()
                    finally:
                        autodiff.IMPLICIT_DENSE_MAX = dense_max
                    return C.grad
                loss.backward()
                return C.grad

            run(C0.clone().requires_grad_())  # warm-up
            peaks = []
            for _ in range(3):
                C = C0.clone().requires_grad_()  # input allocated outside the measurement
                peaks.append(peak_memory(lambda: run(C)))
                del C
            rows.append({"grad": mode, "iterations": iters, "peak_MiB": statistics.median(peaks),
                         "nxn_matrices": statistics.median(peaks) / (n * n * 4 / 2**20)})
            progress.update(1)
    return rows


def render(meta: dict, timing: list, memory: list, backends: list) -> str:
    """The Markdown table (also re-rendered from ``ot.json`` by ``--render-only``)."""
    n, iters, threads = meta["n"], meta["iterations"], meta["threads"]
    lb, la = meta["loadavg_before"], meta["loadavg_after"]
    md = [f"# gca.ot benchmark (N = {n}, float32, CPU, {threads} threads)", "",
          f"Run {meta['date_utc']} UTC; torch {meta['torch']}, POT {meta['pot']}; load average before/after "
          f"{lb[0]:.1f} / {la[0]:.1f} on {meta['cpu_count']} cores, OMP_WAIT_POLICY={meta.get('omp_wait_policy')} "
          "(shared machine: absolute times are noisy; compare ratios within the table).", "",
          f"## Time for {iters} fixed iterations (median of {meta['repeats']} interleaved repeats)", "",
          "| ε | solver | median ms | min ms | speed-up vs POT log (numpy) | vs POT Knopp (numpy) | row L1 error |",
          "|---|---|---|---|---|---|---|"]
    for r in timing:
        md.append(f"| {r['epsilon']} | {r['solver']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
                  f"{r['speedup_vs_pot_log_numpy']:.1f}× | {r['speedup_vs_pot_knopp_numpy']:.2f}× | "
                  f"{r['row_marginal_L1_error']:.2e} |")
    md += ["", "Targets (issue 2), from the medians above:", ""]
    for eps in dict.fromkeys(r["epsilon"] for r in timing):
        t = {r["solver"].split(" [")[0]: r["median_ms"] for r in timing if r["epsilon"] == eps}
        ours, ours_log = t["gca sinkhorn (auto)"], t["gca sinkhorn (log)"]
        best_log = min(t["POT sinkhorn_log (numpy)"], t["POT sinkhorn_log (torch)"])
        best_knopp = min(t["POT sinkhorn Knopp (numpy)"], t["POT sinkhorn Knopp (torch)"])
        md.append(f"- ε = {eps}: ours (auto) vs the faster POT sinkhorn_log back end: {best_log / ours:.1f}× "
                  f"(target ≥ 3×); vs the faster POT Knopp back end: {best_knopp / ours:.2f}× (target ≥ 1×); "
                  f"our forced log domain vs the faster POT sinkhorn_log: {best_log / ours_log:.2f}×.")
    if backends:
        md += ["", "## Matrix–vector back ends of the kernel path (CPU)", "",
               "| measurement | variant | µs |", "|---|---|---|"]
        md += [f"| {r['what']} | {r['variant']} | {r['us']:.1f} |" for r in backends]
        md += ["", "`gca.ot` uses NumPy's OpenBLAS pinned to one thread for CPU kernels of at most "
               "`NUMPY_MATVEC_MAX` entries, `torch.matmul` otherwise (see `gca.ot.backends.matvecs`)."]
    md += ["", "## Peak memory of forward + backward (ε = 0.5, MiB above the inputs; "
           f"one N×N float32 matrix = {n * n * 4 / 2**20:.1f} MiB)", "",
           "| grad mode | 1 iteration | 10 iterations | 50 iterations | 50 / 1 |", "|---|---|---|---|---|"]
    for mode in dict.fromkeys(r["grad"] for r in memory):
        vals = [r["peak_MiB"] for r in memory if r["grad"] == mode]
        md.append(f"| {mode} | {vals[0]:.1f} | {vals[1]:.1f} | {vals[2]:.1f} | {vals[2] / max(vals[0], 1e-9):.2f} |")
    md += ["", "Target: lean (unrolled) and implicit modes ≤ 1.2× from 1 to 50 iterations.", "",
           "Method: see the docstring of `benchmarks/bench_ot.py` (peak RSS with per-buffer mmap)."]
    return "\n".join(md) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--render-only", action="store_true", help="re-render ot.md from ot.json")
    p.add_argument("--memory-only", action="store_true",
                   help="(internal) print the memory table as JSON; run in a child process")
    args = p.parse_args(argv)
    if args.memory_only:
        torch.set_num_threads(args.threads)
        with tqdm(total=15, desc="bench_ot memory", file=sys.stderr) as progress:
            print(json.dumps(memory_table(args.n, progress)))
        return
    if args.render_only:
        data = json.loads((args.out / "ot.json").read_text())
        text = render(data["meta"], data["timing"], data["memory"], data.get("backends", []))
        (args.out / "ot.md").write_text(text)
        print(text)
        return
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tqdm(total=2 * args.repeats + 3, desc="bench_ot timing") as progress:
        timing = time_solvers(args.n, args.iters, args.repeats, progress)
        backends = backend_table(args.n, args.iters, progress)
    child = subprocess.run([sys.executable, __file__, "--memory-only", "--n", str(args.n), "--threads",
                            str(args.threads)], stdout=subprocess.PIPE, text=True, check=True)
    memory = json.loads(child.stdout.strip().splitlines()[-1])
    meta = {"n": args.n, "iterations": args.iters, "repeats": args.repeats, "threads": args.threads,
            "dtype": "float32", "torch": torch.__version__, "pot": pot.__version__,
            "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ot.json").write_text(json.dumps({"meta": meta, "timing": timing, "backends": backends,
                                                  "memory": memory}, indent=1))
    text = render(meta, timing, memory, backends)
    (args.out / "ot.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
