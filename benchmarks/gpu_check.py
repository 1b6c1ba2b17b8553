"""GPU check: CUDA correctness and the speed figures of the paper's cost claim, in one short run.

Run it whenever a GPU is available (``benchmarks/gpu_check.sh``; under 8 minutes on one GPU):

1. **Correctness**: every loss of :mod:`gca.losses` (and BYOL's) gives the same value and gradients
   on the GPU as on the CPU in float64; mixed-precision (bfloat16 and float16 + gradient scaler)
   pretraining steps of the paper's ResNet-18 stay finite for INCE, GCA-INCE, GCA-UOT and BYOL.
2. **Loss cost**: forward+backward time and peak memory of every loss at N = 8192 rows
   (joint layout: B = 4096 pairs, d = 128), as ratios to INCE, measured interleaved.
3. **Step cost**: ResNet-18 (CIFAR stem), batch 512, AMP: pretraining step time of INCE, GCA-INCE
   and GCA-UOT (:mod:`benchmarks.bench_step`).

Writes ``benchmarks/results/gpu_check-<device>.json`` (and ``.md``) with the device's name, and
exits non-zero if a correctness check fails. ``--tiny`` runs the same code at toy sizes on
whatever device is present (the CPU here), which is how the test suite keeps this script working.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a bare checkout: gca importable without installation
sys.path.insert(0, str(HERE))

RESULTS = HERE / "results"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def check_losses_match_cpu(dev: torch.device, *, batch: int, dim: int, seed: int = 0) -> dict:
    """Loss values and gradients on ``dev`` vs CPU, float64, for every loss of the family + BYOL."""
    from gca.losses import LOSS_NAMES, make_loss
    from gca.train import byol_loss

    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(batch, dim, generator=g, dtype=torch.float64)
    # BYOL targets: independent of the predictions (scaled copies of them would give cos = 1 and a
    # loss of exactly 0, where a relative error means nothing).
    t1 = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    t2 = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    out = {}
    for name in LOSS_NAMES + ("byol",):
        vals, grads = [], []
        for d in (torch.device("cpu"), dev):
            a = z1.to(d, copy=True).requires_grad_(True)
            b = z2.to(d, copy=True).requires_grad_(True)
            if name == "byol":
                loss = byol_loss(a, b, t1.to(d), t2.to(d))
            else:
                loss = make_loss(name).to(d)(a, b)
            loss.backward()
            vals.append(float(loss.detach()))
            grads.append(torch.cat([a.grad.flatten(), b.grad.flatten()]).cpu())
        value_err = abs(vals[0] - vals[1]) / max(abs(vals[0]), 1e-300)
        grad_err = float((grads[0] - grads[1]).abs().max() / grads[0].abs().max().clamp_min(1e-300))
        out[name] = {"value_cpu": vals[0], "value_device": vals[1], "value_rel_err": value_err,
                     "grad_rel_err": grad_err, "ok": value_err < 1e-10 and grad_err < 1e-8 and math.isfinite(vals[1])}
    return out


def check_amp_steps(dev: torch.device, *, backbone: str, batch: int, image_size: int, steps: int = 3,
                    methods=("ince", "gca-ince", "gca-uot", "byol")) -> dict:
    """A few AMP pretraining steps per method and dtype; every loss must be finite."""
    from gca.config import resolve_config
    from gca.train import ViewMaker, build_training

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, generator=g).to(dev)
    views = ViewMaker("simclr", image_size, torch.full((3,), 0.5), torch.full((3,), 0.25), dev)
    out = {}
    for amp_dtype in ("bfloat16", "float16"):
        for m in methods:
            cfg = resolve_config("paper", method=m, overrides={
                "model.backbone": backbone, "train.batch_size": batch, "train.amp": True,
                "train.amp_dtype": amp_dtype, "train.device": str(dev)})
            st = build_training(cfg, in_channels=3, device=dev, total_steps=steps)
            losses = []
            try:
                for k in range(steps):
                    losses.append(st.step(views(images, g), k))
                finite = all(math.isfinite(v) for v in losses) and all(
                    torch.isfinite(p).all().item() for p in st.model.parameters())
                err = None
            except FloatingPointError as exc:  # reported, not hidden
                finite, err = False, str(exc)
            out[f"{m}/{amp_dtype}"] = {"losses": losses, "amp_active": st.use_amp, "ok": finite, "error": err}
    return out


def time_losses(dev: torch.device, losses: dict, z1, z2, *, rounds: int, warmup: int = 2, before=None):
    """Median forward+backward seconds of each loss (interleaved rounds) and its peak extra memory (MiB, CUDA).

    ``before(name)``, if given, runs before each call (e.g. to switch a code path)."""
    times = {n: [] for n in losses}
    peak = {}
    for r in range(warmup + rounds):
        for n, fn in losses.items():
            if before is not None:
                before(n)
            a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
            _sync(dev)
            t0 = time.perf_counter()
            fn(a, b).backward()
            _sync(dev)
            if r >= warmup:
                times[n].append(time.perf_counter() - t0)
            if dev.type == "cuda":
                peak[n] = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    return {n: statistics.median(t) for n, t in times.items()}, peak


def loss_cost(dev: torch.device, *, n_rows: int, dim: int, rounds: int, warmup: int = 2) -> dict:
    """Forward+backward time and peak memory of each loss at ``n_rows`` rows (joint layout), vs INCE."""
    from gca.losses import LOSS_NAMES, make_loss

    batch = n_rows // 2
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(batch, dim, generator=g).to(dev)
    z2 = (z1.cpu() + 0.5 * torch.randn(batch, dim, generator=g)).to(dev)
    names = ("ince",) + tuple(n for n in LOSS_NAMES if n != "ince")
    med, peak = time_losses(dev, {n: make_loss(n).to(dev) for n in names}, z1, z2, rounds=rounds, warmup=warmup)
    return {"n_rows": n_rows, "dim": dim, "rounds": rounds, "fwd_bwd_s": med,
            "ratio_to_ince": {n: med[n] / med["ince"] for n in names},
            "peak_extra_memory_mib": peak or None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes on any device (seconds; used by the tests)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out-dir", default=str(RESULTS))
    a = p.parse_args(argv)
    from gca.provenance import collect_provenance
    from gca.train import resolve_device

    dev = resolve_device(a.device)
    if dev.type != "cuda" and not a.tiny:
        print("gpu_check: no CUDA device; run with --tiny for the CPU self-test", file=sys.stderr)
        return 2
    if a.tiny:
        sizes = dict(corr_batch=8, corr_dim=4, amp_backbone="small", amp_batch=8, amp_size=8, n_rows=64, dim=8,
                     loss_rounds=2, step_backbone="small", step_batch=8, step_size=8, step_rounds=1, step_width=4)
    else:
        sizes = dict(corr_batch=256, corr_dim=64, amp_backbone="resnet18", amp_batch=64, amp_size=32, n_rows=8192,
                     dim=128, loss_rounds=10, step_backbone="resnet18", step_batch=512, step_size=32,
                     step_rounds=10, step_width=None)
    t0 = time.perf_counter()
    report = {"device": str(dev), "tiny": a.tiny, "sizes": sizes}
    report["provenance"] = collect_provenance(device=dev, seed=0)
    report["device_name"] = report["provenance"]["device"]
    print(f"[gpu_check] {report['device_name']}: correctness ...", flush=True)
    report["losses_match_cpu_float64"] = check_losses_match_cpu(dev, batch=sizes["corr_batch"], dim=sizes["corr_dim"])
    print("[gpu_check] AMP steps ...", flush=True)
    report["amp_steps"] = check_amp_steps(dev, backbone=sizes["amp_backbone"], batch=sizes["amp_batch"],
                                          image_size=sizes["amp_size"])
    print("[gpu_check] loss cost ...", flush=True)
    report["loss_cost"] = loss_cost(dev, n_rows=sizes["n_rows"], dim=sizes["dim"], rounds=sizes["loss_rounds"])
    print("[gpu_check] step cost ...", flush=True)
    import bench_step

    report["step_cost"] = bench_step.run(backbone=sizes["step_backbone"], width=sizes["step_width"],
                                         batch=sizes["step_batch"], image_size=sizes["step_size"],
                                         rounds=sizes["step_rounds"], warmup=1, device=str(dev),
                                         amp=dev.type == "cuda", progress=False)
    report["wall_s"] = time.perf_counter() - t0
    ok = all(v["ok"] for v in report["losses_match_cpu_float64"].values()) and all(
        v["ok"] for v in report["amp_steps"].values())
    report["ok"] = ok

    slug = re.sub(r"[^A-Za-z0-9]+", "-", report["device_name"]).strip("-").lower()[:60]
    out = Path(a.out_dir) / f"gpu_check-{'tiny-' if a.tiny else ''}{slug}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    lc, sc = report["loss_cost"], report["step_cost"]
    md = [f"# GPU check on {report['device_name']}{' (tiny self-test)' if a.tiny else ''}", "",
          f"Correctness: {'all passed' if ok else 'FAILED (see JSON)'}; wall time {report['wall_s']:.0f} s.", "",
          f"Loss forward+backward at N = {lc['n_rows']} (d = {lc['dim']}), median of {lc['rounds']}:", "",
          "| loss | ms | / INCE | peak extra MiB |", "|---|---|---|---|"]
    for n, s in lc["fwd_bwd_s"].items():
        mem = lc["peak_extra_memory_mib"]
        md.append(f"| {n} | {1e3 * s:.2f} | {lc['ratio_to_ince'][n]:.2f} | {mem[n]:.0f} |" if mem else
                  f"| {n} | {1e3 * s:.2f} | {lc['ratio_to_ince'][n]:.2f} | – |")
    md += ["", bench_step.to_markdown(sc)]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    print(f"[gpu_check] wrote {out.with_suffix('.json')}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
