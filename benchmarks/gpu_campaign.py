"""GPU campaign (issue 14): everything worth a short GPU loan, in one resumable command.

Run once when a GPU machine is lent (``make gpu-campaign``, or on the device tool with the offline
CIFAR-10 copy carried in ``.gpu_data/cifar10``)::

    python3 benchmarks/gpu_campaign.py --out $OUT --data-src .gpu_data/cifar10 --commit <sha>
    python3 benchmarks/gpu_campaign.py --dry-run --out /tmp/c      # CPU, toy sizes, < 1 min

Content, in priority order (each stage's result is written as soon as it finishes):

1. **cost** — loss forward+backward of INCE, GCA-INCE, GCA-UOT at N = 8192 rows (d = 128) and at
   batch 512 (N = 1024), medians of interleaved rounds, and a ``torch.profiler`` table of one
   GCA-INCE forward+backward at N = 8192 (kernels, launches, host synchronisations): the data
   the GPU fast path must be designed from.
2. **step** — ResNet-18 (CIFAR stem) pretraining step, batch 512, bf16 AMP, augmentation included
   (:mod:`benchmarks.bench_step`), per method and as a ratio to INCE.
3. **train** — full CIFAR-10 (JPEG copy) at 32 px, ResNet-18 CIFAR stem, batch 512, bf16: INCE,
   GCA-INCE and GCA-UOT for the same number of epochs (as many as the remaining budget allows,
   computed from the measured step times), then the frozen encoder's linear probe (weight decay
   chosen on a validation split) and kNN on the full training and test sets. One seed.

Budget (``--budget-s``, default 400 s of this script's wall time; the machine's start and the
transfers come on top, about 1–2 min, inside an 8-minute loan), sized from the committed H200
measurements (``benchmarks/results/gpu_check-cuda-nvidia-h200.md``: ResNet-18 batch-512 AMP step
62 ms INCE, 70 ms GCA-INCE, 74 ms GCA-UOT; loss fwd+bwd at N = 8192 3–14 ms):

============================  ==========  ==============================================
stage                          expected    from
============================  ==========  ==============================================
data (make_cifar10.py)         ~15 s       17 s measured on 2 CPU cores
cost + profiler                ~20 s       13 rounds × 3 losses × 2 sizes, + warm-up
step (cudnn autotune incl.)    ~25 s       10 rounds × 3 methods × ~70 ms, + autotune
train, per epoch and method    ~7 s        97 steps × 62–74 ms
probe + kNN, per method        ~20 s       60 000 forward passes + logistic regression
============================  ==========  ==============================================

so about 400 − 60 − 3 × 20 = 280 s of training: 12 epochs per method. The epoch count is chosen
at run time from the measured step times so that the deadline holds; a stage that would not fit
is skipped and listed under ``not_run``.

Resumable: stage results and run directories live in ``--work-dir`` (default
``/tmp/gca-campaign``); a rerun skips finished stages and resumes interrupted pretraining from
its last checkpoint. Output: ``campaign.json`` (everything, with provenance), ``campaign.md`` (the
tables) and ``campaign-profile.txt`` under ``--out`` — committed to ``results/gpu/`` and shown on the
book's "GPU scale" page.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # a bare checkout: gca importable without installation
sys.path.insert(0, str(HERE))

METHODS = ("ince", "gca-ince", "gca-uot")
VERSION = 1

#: Sizes of a real run and of the CPU dry run (the same code path at toy sizes).
SIZES = {
    "gpu": dict(cost_rows=(8192, 1024), dim=128, cost_rounds=10, profile_rows=8192, backbone="resnet18",
                width=None, batch=512, image_size=32, step_rounds=10, n_per_class=None, test_n_per_class=None,
                probe_weight_decays=(0.0, 1e-5, 1e-4, 1e-3), probe_max_iter=200, knn_k=200, min_epochs=1,
                max_epochs=100, eval_s=20.0, safety=1.25),
    "dry": dict(cost_rows=(64, 32), dim=8, cost_rounds=2, profile_rows=64, backbone="small", width=8,
                batch=32, image_size=16, step_rounds=1, n_per_class=8, test_n_per_class=4,
                probe_weight_decays=(1e-3,), probe_max_iter=20, knn_k=5, min_epochs=1, max_epochs=1,
                eval_s=1.0, safety=1.25),
}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Stage 1: loss cost and where the time goes
# --------------------------------------------------------------------------------------------
#: The loss variants timed: each method on the fast path (gca.losses.core.FAST_PATH "on", the default)
#: and the GCA losses also on the checked reference path ("off").
VARIANTS = (("ince", "on"), ("gca-ince", "on"), ("gca-uot", "on"), ("gca-ince/checked", "off"),
            ("gca-uot/checked", "off"))


def stage_cost(dev: torch.device, sz: dict) -> dict:
    import gpu_check

    from gca import losses as gl

    out = {"dim": sz["dim"], "rounds": sz["cost_rounds"], "sizes": {}}
    losses = {v: gl.make_loss(v.split("/")[0]).to(dev) for v, _ in VARIANTS}
    modes = dict(VARIANTS)
    for n_rows in sz["cost_rows"]:
        g = torch.Generator().manual_seed(1)
        z1 = torch.randn(n_rows // 2, sz["dim"], generator=g)
        z2 = (z1 + 0.5 * torch.randn(n_rows // 2, sz["dim"], generator=g)).to(dev)
        z1 = z1.to(dev)
        med, peak = gpu_check.time_losses(dev, losses, z1, z2, rounds=sz["cost_rounds"],
                                          before=lambda m: setattr(gl.core, "FAST_PATH", modes[m]))
        gl.core.FAST_PATH = "on"
        out["sizes"][str(n_rows)] = {
            "n_rows": n_rows, "fwd_bwd_ms": {m: 1e3 * v for m, v in med.items()},
            "ratio_to_ince": {m: med[m] / med["ince"] for m in losses},
            "extra_over_ince_ms": {m: 1e3 * (med[m] - med["ince"]) for m in losses},
            "peak_extra_mib": peak or None,
        }
    for key, mode in (("profile", "on"), ("profile_checked", "off")):
        gl.core.FAST_PATH = mode
        try:
            out[key] = _profile_one(dev, losses["gca-ince"], sz["profile_rows"], sz["dim"])
        except Exception as exc:  # noqa: BLE001 - the timings stand without the profile
            out[key] = {"n_rows": sz["profile_rows"], "error": f"{type(exc).__name__}: {exc}", "table": "",
                        "host_sync_like_calls": None, "kernel_launches": None}
    gl.core.FAST_PATH = "on"
    return out


def _profile_one(dev: torch.device, loss, n_rows: int, dim: int) -> dict:
    """``torch.profiler`` of one GCA-INCE forward+backward: top operators and host synchronisations."""
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(n_rows // 2, dim, generator=g).to(dev).requires_grad_(True)
    z2 = torch.randn(n_rows // 2, dim, generator=g).to(dev).requires_grad_(True)
    loss(z1, z2).backward()  # warm
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    _sync(dev)
    with profile(activities=acts) as prof:
        loss(z1, z2).backward()
        _sync(dev)
    events = prof.key_averages()
    sort = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    table = events.table(sort_by=sort, row_limit=25)
    syncs = sum(e.count for e in events if any(k in e.key for k in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                                                      "cudaMemcpyAsync", "aten::item",
                                                                      "aten::_local_scalar_dense")))
    launches = sum(e.count for e in events if "cudaLaunchKernel" in e.key or "cuLaunchKernel" in e.key)
    return {"n_rows": n_rows, "sorted_by": sort, "host_sync_like_calls": syncs, "kernel_launches": launches,
            "table": table}


# --------------------------------------------------------------------------------------------
# Stage 2: training step
# --------------------------------------------------------------------------------------------
def stage_step(dev: torch.device, sz: dict) -> dict:
    import bench_step

    return bench_step.run(methods=METHODS, backbone=sz["backbone"], width=sz["width"], batch=sz["batch"],
                          image_size=sz["image_size"], rounds=sz["step_rounds"], warmup=1, device=str(dev),
                          amp=dev.type == "cuda", progress=False)


# --------------------------------------------------------------------------------------------
# Stage 3: pretraining + frozen evaluation
# --------------------------------------------------------------------------------------------
def _config(method: str, sz: dict, data_dir: Path, epochs: int, dev: torch.device, dry: bool):
    from gca.config import resolve_config

    over = {
        "data.dataset": "cifar10", "data.data_dir": str(data_dir), "data.image_size": sz["image_size"],
        "model.backbone": sz["backbone"], "model.width": "none" if sz["width"] is None else sz["width"],
        "train.batch_size": sz["batch"], "train.epochs": epochs, "train.device": str(dev),
        "train.amp": dev.type == "cuda", "train.amp_dtype": "bfloat16", "train.checkpoint_every": 1,
        "optim.warmup_epochs": min(1.0, epochs / 5), "eval.probe_weight_decays": sz["probe_weight_decays"],
        "eval.probe_max_iter": sz["probe_max_iter"], "eval.knn_k": sz["knn_k"], "train.num_workers": 0,
    }
    if sz["n_per_class"] is not None:
        over["data.n_per_class"] = sz["n_per_class"]
        over["data.test_n_per_class"] = sz["test_n_per_class"]
    if dry:
        over["model.projector_hidden_dim"] = 32
        over["model.projector_out_dim"] = 16
    return resolve_config("paper", method=method, overrides=over)


def plan_epochs(remaining_s: float, step_s: dict, steps_per_epoch: int, sz: dict) -> int:
    """Epochs per method that fit ``remaining_s`` (every method trains the same number)."""
    per_epoch = sum(step_s[m] for m in METHODS) * steps_per_epoch * sz["safety"]
    budget = remaining_s - len(METHODS) * sz["eval_s"]
    return int(max(0, min(sz["max_epochs"], math.floor(budget / per_epoch)))) if per_epoch > 0 else 0


def stage_train(dev: torch.device, sz: dict, data_dir: Path, work: Path, epochs: int, dry: bool) -> dict:
    from gca.eval import evaluate_model
    from gca.train import pretrain

    out = {"epochs": epochs, "seed": 0, "methods": {}}
    for m in METHODS:
        cfg = _config(m, sz, data_dir, epochs, dev, dry)
        run_dir = work / "runs" / m
        t0 = time.perf_counter()
        res = pretrain(cfg, run_dir, resume=(run_dir / "config.json").is_file(), progress=False)
        t1 = time.perf_counter()
        metrics = evaluate_model(res.model, cfg, device=dev, progress=False)
        t2 = time.perf_counter()
        out["methods"][m] = {
            "linear_accuracy": metrics["linear_accuracy"], "knn_accuracy": metrics.get("knn_accuracy"),
            "n_train": metrics["n_train"], "n_test": metrics["n_test"], "dataset": metrics.get("dataset_description"),
            "train_checksum": metrics["train_checksum"], "test_checksum": metrics["test_checksum"],
            "loss_curve": [e["loss"] for e in res.epochs], "epoch_seconds": [e["seconds"] for e in res.epochs],
            "pretrain_s": t1 - t0, "eval_s": t2 - t1, "resumed_from_epoch": res.resumed_from_epoch,
        }
        print(f"[campaign] {m}: linear {metrics['linear_accuracy']:.4f} after {epochs} epochs "
              f"({t1 - t0:.0f} s + eval {t2 - t1:.0f} s)", flush=True)
    return out


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
def _prepare_data(args, work: Path, dry: bool) -> Path:
    if args.data_dir:
        return Path(args.data_dir)
    data = work / "data"
    if dry:  # synthetic images in the official layout: exercises the same loader in seconds
        _write_synthetic_cifar(data)
        return data
    from gca.data import prepare_offline_cifar10

    src = Path(args.data_src)
    return prepare_offline_cifar10(data, script=src / "make_cifar10.py")


def _write_synthetic_cifar(root: Path, per_batch: int = 40) -> None:
    import pickle

    import numpy as np

    base = root / "cifar-10-batches-py"
    if (base / "batches.meta").is_file():
        return
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(k % 10) for k in range(per_batch)]
        # class-dependent mean colour so that the probe has something to find
        data = np.clip(rng.normal(100, 40, (per_batch, 3072)) + 12 * np.asarray(labels)[:, None], 0, 255)
        data = data.astype(np.uint8)
        with open(base / name, "wb") as fh:
            pickle.dump({"data": data, "labels": labels}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{k}" for k in range(10)]}, fh)


def to_markdown(report: dict) -> str:
    lines = [f"# GPU campaign{' (dry run, toy sizes on CPU)' if report['dry_run'] else ''}", "",
             f"Device: {report['provenance'].get('device')} · torch {torch.__version__} · commit "
             f"`{str(report.get('commit'))[:12]}` · wall {report.get('wall_s', 0):.0f} s of a {report['budget_s']:.0f} s budget", ""]
    cost = report["stages"].get("cost")
    if cost:
        names = list(next(iter(cost["sizes"].values()))["fwd_bwd_ms"])
        lines += ["## Loss forward + backward (median of interleaved rounds; `/checked`: the reference path)", "",
                  "| loss | " + " | ".join(f"N = {s['n_rows']} ms | / INCE" for s in cost["sizes"].values()) + " |",
                  "|---" * (1 + 2 * len(cost["sizes"])) + "|"]
        for m in names:
            lines.append(f"| {m} | " + " | ".join(f"{s['fwd_bwd_ms'][m]:.2f} | {s['ratio_to_ince'][m]:.2f}"
                                                 for s in cost["sizes"].values()) + " |")
        p = cost["profile"]
        lines += ["", f"Profile of one GCA-INCE forward+backward at N = {p['n_rows']}: {p['kernel_launches']} kernel "
                      f"launches, {p['host_sync_like_calls']} host-synchronising calls (see the `-profile.txt` file)."]
        pc = cost.get("profile_checked")
        if pc:
            lines += [f"On the checked path: {pc['kernel_launches']} launches, {pc['host_sync_like_calls']} "
                      "host-synchronising calls.", ""]
    step = report["stages"].get("step")
    if step:
        import bench_step

        lines += ["## Training step", "", bench_step.to_markdown(step), ""]
    train = report["stages"].get("train")
    if train:
        lines += [f"## Pretraining, {train['epochs']} epochs, one seed", "",
                  "| method | linear probe | kNN | pretrain s | final loss |", "|---|---|---|---|---|"]
        for m, r in train["methods"].items():
            knn = "–" if r["knn_accuracy"] is None else f"{100 * r['knn_accuracy']:.2f}"
            lines.append(f"| {m} | {100 * r['linear_accuracy']:.2f} | {knn} | {r['pretrain_s']:.0f} | "
                         f"{r['loss_curve'][-1]:.4f} |")
    if report.get("errors"):
        lines += ["", "Failed stages: " + "; ".join(f"{k}: {v.splitlines()[0]}" for k, v in report["errors"].items())]
    if report.get("not_run"):
        lines += ["", "Not run: " + "; ".join(report["not_run"])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "results" / "gpu"),
                   help="where NAME.json, NAME.md, NAME-profile.txt go (default $OUT, else results/gpu)")
    p.add_argument("--work-dir", default="/tmp/gca-campaign", help="stage results and run directories (resume)")
    p.add_argument("--data-src", default=str(REPO / ".gpu_data" / "cifar10"),
                   help="folder with the offline CIFAR-10 copy (cifar10-jpeg.tar.gz + make_cifar10.py)")
    p.add_argument("--data-dir", default=None, help="an already prepared data root (holds cifar-10-batches-py)")
    p.add_argument("--budget-s", type=float, default=400.0, help="wall-clock budget of this script")
    p.add_argument("--commit", default=os.environ.get("GCA_COMMIT"), help="git commit of the code (no .git on the device)")
    p.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU, end to end (used by the tests)")
    p.add_argument("--stages", default="cost,step,train", help="comma-separated subset of cost,step,train")
    p.add_argument("--name", default="campaign", help="output file stem (campaign.json, campaign.md, ...)")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    dry = args.dry_run
    if args.budget_s <= 0 or not math.isfinite(args.budget_s):
        p.error(f"--budget-s must be a positive number of seconds, got {args.budget_s}")
    from gca.provenance import collect_provenance
    from gca.train import resolve_device

    dev = torch.device("cpu") if dry else resolve_device("auto")
    if dev.type != "cuda" and not dry:
        print("gpu_campaign: no CUDA device here; use --dry-run for the CPU self-test", file=sys.stderr)
        return 2
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the losses' float32 as on CPU; the backbone runs bf16 AMP
    sz = SIZES["dry" if dry else "gpu"]
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stages = [x.strip() for x in args.stages.split(",") if x.strip()]
    if not stages or set(stages) - {"cost", "step", "train"}:
        p.error(f"--stages must be a comma-separated subset of cost,step,train, got {args.stages!r}")
    state_path = work / f"{args.name}-state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if state.get("dry_run") != dry or state.get("version") != VERSION:
        state = {"version": VERSION, "dry_run": dry, "stages": {}, "not_run": []}
    state["budget_s"] = args.budget_s
    state["commit"] = args.commit
    state["sizes"] = {k: list(v) if isinstance(v, tuple) else v for k, v in sz.items()}
    state["provenance"] = collect_provenance(device=dev, seed=0)
    if args.commit:  # the device's copy of the repository may carry another checkout's .git
        state["provenance"]["checkout_git_commit"] = state["provenance"].get("git_commit")
        state["provenance"]["git_commit"] = args.commit

    def save():
        state["wall_s"] = time.perf_counter() - t_start
        _write_json(state_path, state)
        _write_json(out_dir / f"{args.name}.json", state)
        (out_dir / f"{args.name}.md").write_text(to_markdown(state))

    print(f"[campaign] {state['provenance'].get('device')} · budget {args.budget_s:.0f} s", flush=True)
    t = time.perf_counter()
    data_dir = _prepare_data(args, work, dry)
    state["data_prep_s"] = time.perf_counter() - t
    print(f"[campaign] data ready in {state['data_prep_s']:.0f} s: {data_dir}", flush=True)

    errors = state.setdefault("errors", {})

    def attempt(name, fn):
        """Run one stage; a failure is recorded (and shown) and the next stage still runs."""
        if name in state["stages"]:
            return
        try:
            state["stages"][name] = fn()
            errors.pop(name, None)
        except Exception as exc:  # noqa: BLE001 - reported in campaign.json, never hidden
            import traceback

            errors[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
            print(f"[campaign] stage {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
        save()
        print(f"[campaign] {name} done at {time.perf_counter() - t_start:.0f} s", flush=True)

    if "cost" in stages:
        attempt("cost", lambda: stage_cost(dev, sz))
    if "cost" in state["stages"]:
        prof = state["stages"]["cost"]
        (out_dir / f"{args.name}-profile.txt").write_text(
            "fast path\n" + prof["profile"]["table"] + "\nchecked path\n" + prof.get("profile_checked", {}).get("table", ""))
    if "step" in stages:
        attempt("step", lambda: stage_step(dev, sz))

    if "train" in stages and "train" not in state["stages"] and "step" in state["stages"]:
        steps_per_epoch = (50_000 if sz["n_per_class"] is None else 10 * sz["n_per_class"]) // sz["batch"]
        epochs = state.get("planned_epochs") or plan_epochs(deadline - time.perf_counter(),
                                                             state["stages"]["step"]["step_wall_s"],
                                                             max(1, steps_per_epoch), sz)
        state["planned_epochs"] = epochs
        save()
        if epochs < sz["min_epochs"]:
            state["not_run"].append(f"pretraining: {deadline - time.perf_counter():.0f} s left, not enough for one epoch "
                                    "of each method")
        else:
            print(f"[campaign] training {epochs} epochs per method", flush=True)
            attempt("train", lambda: stage_train(dev, sz, data_dir, work, epochs, dry))
    state["not_run"] = sorted(set(state["not_run"]) | {
        "several seeds (one seed fits the loan; no confidence interval)",
        "concurrent training processes on the one GPU (throughput not measured)",
    })
    save()
    print(to_markdown(state), flush=True)
    print(f"[campaign] wrote {out_dir / (args.name + '.json')} in {time.perf_counter() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
