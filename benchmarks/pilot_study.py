"""Pilot of the CPU study (issue 12 items 3–4): which configuration makes pretraining matter, and
how many seeds a paired comparison needs.

For each candidate configuration (subset size, epochs, image size) it pretrains INCE and GCA-UOT
on the same pilot seeds (100, 101, ...; never used by the study), evaluates every encoder with the
study's protocol (linear probe fitted on a fixed, class-balanced 20 000-image subset of the
CIFAR-10 training split, weight decay chosen on a 10 % validation split of it, tested once on all
10 000 test images), and evaluates the untrained encoder of each seed the same way (the floor).
Writes one JSON record per run to ``--out`` (default ``results/cpu/pilot/pilot.jsonl``) as it goes,
so a killed pilot resumes; ``--summary`` prints gain over the floor, the sd of paired differences
and the CPU seconds per run for each configuration.

    python benchmarks/pilot_study.py --workers 2            # runs what is missing, then summarises
    python benchmarks/pilot_study.py --summary
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Candidate configurations: overrides on top of BASE. Cost ~ steps × pixels.
BASE = {
    "data.n_per_class": 500, "data.test_n_per_class": None, "data.image_size": 16,
    "model.width": 16, "model.projector_hidden_dim": 512, "model.projector_out_dim": 128,
    "train.epochs": 10, "train.batch_size": 256, "train.threads": 1, "train.device": "cpu",
    "train.checkpoint_every": 100, "optim.warmup_epochs": 1.0,
}
CONFIGS = {
    "A-5k-10ep-16px": {},
    "B-10k-10ep-16px": {"data.n_per_class": 1000},
    "C-5k-20ep-16px": {"train.epochs": 20},
    "D-5k-10ep-32px": {"data.image_size": 32},
}
METHODS = ("ince", "gca-uot")
SEEDS = {"A-5k-10ep-16px": (100, 101, 102), "B-10k-10ep-16px": (100, 101, 102),
         "C-5k-20ep-16px": (100, 101, 102), "D-5k-10ep-32px": (100,)}
PROBE_PER_CLASS = 2000
PROBE_SEED = 20261204
WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def _probe_data(image_size):
    import torch
    from gca.data import load_dataset

    train = load_dataset("cifar10", "train", data_dir=REPO / "data")
    test = load_dataset("cifar10", "test", data_dir=REPO / "data")
    g = torch.Generator().manual_seed(PROBE_SEED)
    idx = torch.cat([torch.nonzero(train.labels == c).flatten()[torch.randperm(int((train.labels == c).sum()), generator=g)[:PROBE_PER_CLASS]]
                     for c in range(10)]).sort().values
    return train, idx, test


def run_one(config_name: str, method: str, seed: int) -> dict:
    import torch
    torch.set_num_threads(1)
    from gca.config import resolve_config
    from gca.eval import extract_features, freeze, linear_probe
    from gca.train import build_training, pretrain

    overrides = {**BASE, **CONFIGS[config_name], "train.seed": seed}
    t0 = time.process_time()
    w0 = time.perf_counter()
    cfg = resolve_config("cpu", method="ince" if method == "untrained" else method, dataset="cifar10",
                         overrides=overrides)
    cfg.data.data_dir = str(REPO / "data")
    record = {"config": config_name, "method": method, "seed": seed, "overrides": overrides}
    if method == "untrained":
        model = build_training(cfg, in_channels=3, device=torch.device("cpu")).model
    else:
        with tempfile.TemporaryDirectory() as tmp:
            res = pretrain(cfg, Path(tmp) / "run", progress=False)
            model = res.model
            record["final_loss"] = res.epochs[-1].get("loss") if res.epochs else None
    t_train = time.process_time() - t0
    train, idx, test = _probe_data(cfg.data.image_size)
    freeze(model)
    kw = dict(mean=train.mean, std=train.std, batch_size=512, size=cfg.data.image_size)
    h_tr = extract_features(model.backbone, train.images[idx], **kw)
    h_te = extract_features(model.backbone, test.images, **kw)
    t1 = time.process_time()
    probe = linear_probe(h_tr, train.labels[idx], h_te, test.labels, weight_decays=WEIGHT_DECAYS, seed=0, n_classes=10)
    record.update(linear_accuracy=probe.test_accuracy, weight_decay=probe.weight_decay,
                  cpu_s_train=t_train, cpu_s_eval=time.process_time() - t0 - t_train, cpu_s_probe=time.process_time() - t1,
                  wall_s=time.perf_counter() - w0, n_probe=int(len(idx)), n_test=int(len(test.labels)))
    return record


def _done(out: Path) -> set:
    if not out.exists():
        return set()
    keys = set()
    for line in out.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        keys.add((r["config"], r["method"], r["seed"]))
    return keys


def _append(out: Path, record: dict) -> None:
    with open(out, "a") as f:  # one line per record, flushed: a kill loses at most the run in progress
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def summary(out: Path) -> dict:
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    table = {}
    for name in CONFIGS:
        rs = [r for r in recs if r["config"] == name]
        by = {(r["method"], r["seed"]): r for r in rs}
        floor = [r["linear_accuracy"] for r in rs if r["method"] == "untrained"]
        ince = {s: by[("ince", s)]["linear_accuracy"] for m, s in by if m == "ince"}
        uot = {s: by[("gca-uot", s)]["linear_accuracy"] for m, s in by if m == "gca-uot"}
        diffs = [100 * (uot[s] - ince[s]) for s in ince if s in uot]
        mean = lambda v: sum(v) / len(v) if v else float("nan")
        sd = lambda v: math.sqrt(sum((x - mean(v)) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else float("nan")
        cpu = [r["cpu_s_train"] + r["cpu_s_eval"] for r in rs if r["method"] != "untrained"]
        table[name] = {"floor": 100 * mean(floor), "ince": 100 * mean(list(ince.values())),
                       "gca_uot": 100 * mean(list(uot.values())),
                       "gain_over_floor": 100 * (mean(list(ince.values())) - mean(floor)),
                       "sd_ince": 100 * sd(list(ince.values())), "diffs": diffs, "sd_diff": sd(diffs),
                       "cpu_s_per_run": mean(cpu), "n_pairs": len(diffs)}
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "results/cpu/pilot/pilot.jsonl")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--summary", action="store_true", help="only print the summary")
    p.add_argument("--configs", nargs="*", default=list(CONFIGS))
    args = p.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.summary:
        done = _done(args.out)
        todo = [(c, m, s) for c in args.configs for s in SEEDS[c] for m in ("untrained",) + METHODS
                if (c, m, s) not in done and not (c.startswith("D") and m == "gca-uot")]
        print(f"pilot: {len(todo)} runs to do", flush=True)
        with ProcessPoolExecutor(args.workers) as pool:
            futs = {pool.submit(run_one, *job): job for job in todo}
            for fut in as_completed(futs):
                rec = fut.result()
                _append(args.out, rec)
                print(f"{time.strftime('%H:%M:%S')} {rec['config']} {rec['method']} s{rec['seed']}: "
                      f"{100 * rec['linear_accuracy']:.2f} % (cpu {rec['cpu_s_train']:.0f}+{rec['cpu_s_eval']:.0f} s)", flush=True)
    print(json.dumps(summary(args.out), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
