"""Computing the study's runs: one run (pretraining, frozen evaluation, analysis) and a page's runs.

:func:`run_one` claims a run, pretrains and evaluates it while :class:`~gca.study.fingerprint.CodeTracker`
records the code that runs, and writes its result (:mod:`gca.study.cache`). :func:`get_results`
is what a notebook calls: it reuses current results, computes missing or stale ones (or lists them
as missing, mode ``cached``), and never hides a failed run.

Modes (:func:`experiment_mode`; environment variable ``GCA_EXPERIMENTS``, or a notebook's ``mode``
parameter): ``compute`` (default: reuse matching results, compute missing or stale ones),
``cached`` (never compute: missing/stale runs are listed as missing), ``force`` (recompute
everything; ``GCA_RECOMPUTE=1`` is a synonym).

This module's functions that compute numbers (``_run_one``, ``_plans_analysis``) are part
of every result's code fingerprint (:data:`gca.study.fingerprint.TRACKED`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from gca import augment as gaug
from gca.config import RunConfig, config_to_dict, run_config_hash
from gca.eval import evaluate_model, load_eval_data
from gca.losses import make_loss
from gca.provenance import collect_provenance
from gca.study.cache import (Claim, RunClaimedError, check_result, config_key, in_progress, lock_path,
                             result_key, result_path, save_result)
from gca.study.fingerprint import CodeTracker, fingerprint_changes, fingerprint_id
from gca.study.paths import REPO_ROOT, runs_root, use_repo_data_dir
from gca.study.plan import RunSpec, resolve_spec, study_profile
from gca.train import TrainingDataChangedError, pretrain, resolve_device

__all__ = ["MODES", "experiment_mode", "run_one", "Results", "get_results"]

#: Modes of :func:`get_results`.
MODES = ("compute", "cached", "force")
#: Sinkhorn iterations at which the plans analysis evaluates GCA-INCE, and GCA-RINCE (q = 1).
PLANS_ITERS = (1, 2, 5, 10, 50, 200)
PLANS_RINCE_ITERS = (1, 10, 200)


def experiment_mode(mode: str | None = None) -> str:
    """``mode`` if given, else ``$GCA_EXPERIMENTS`` (``GCA_RECOMPUTE=1`` means ``force``), else ``compute``."""
    if mode is None:
        if os.environ.get("GCA_RECOMPUTE", "").strip() not in ("", "0"):
            mode = "force"
        else:
            mode = os.environ.get("GCA_EXPERIMENTS", "").strip() or "compute"
    if mode not in MODES:
        raise ValueError(f"experiment mode {mode!r} is unknown: choose one of {MODES} "
                         "(environment variable GCA_EXPERIMENTS)")
    return mode


def _run_dir(spec: RunSpec, profile: str, train_hash: str, runs: str | os.PathLike | None = None) -> Path:
    return runs_root(runs) / study_profile(profile) / f"{spec.method}-s{spec.seed}-{train_hash}"


def _plans_analysis(model, config: RunConfig, *, batch: int, n_batches: int) -> dict[str, Any]:
    """Plans of the trained encoder on test batches: heatmaps for one batch, theory inequalities on
    all. Every loss is evaluated at the ε of the run's own loss (its configured value or default)."""
    ds = load_eval_data(config, "test")
    size = config.data.image_size or ds.image_size[0]
    aug = gaug.build_augment(config.data.augment, size)
    mean = torch.as_tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.as_tensor(ds.std).view(1, -1, 1, 1)
    gen = torch.Generator().manual_seed(config.eval.seed + 12345)
    perm = torch.randperm(len(ds), generator=gen)
    run_loss = make_loss(config.loss.method, **config.loss.hparams)
    n_batches = max(1, min(n_batches, len(ds) // batch))
    out: dict[str, Any] = {"batch": batch, "n_batches": n_batches, "checks": []}
    with torch.no_grad():
        for b in range(n_batches):
            idx = perm[b * batch:(b + 1) * batch].sort().values
            x = ds.images[idx]
            v1 = (aug(x, generator=gen) - mean) / std
            v2 = (aug(x, generator=gen) - mean) / std
            z = model.projector(model.backbone(torch.cat([v1, v2]))).double()
            z1, z2 = z.chunk(2)
            if b == 0:
                eps = float(run_loss(z1, z2, return_details=True).epsilon)
                out["epsilon"] = eps
            rec: dict[str, Any] = {"ince": float(make_loss("ince", epsilon=eps)(z1, z2))}
            for T in PLANS_ITERS:
                rec[f"gca_ince_T{T}"] = float(make_loss("gca-ince", epsilon=eps, n_iter=T)(z1, z2))
            for T in PLANS_RINCE_ITERS:
                rec[f"gca_rince_q1_T{T}"] = float(make_loss("gca-rince", epsilon=eps, n_iter=T, q=1.0, lam=0.01)(z1, z2))
            rec["rince_q1"] = float(make_loss("rince", epsilon=eps, q=1.0, lam=0.01)(z1, z2))
            out["checks"].append(rec)
            if b == 0:
                k = min(batch, 16)
                z1s, z2s = z1[:k], z2[:k]
                heat = {}
                for name in ("ince", "gca-ince", "gca-uot"):
                    det = make_loss(name, epsilon=eps)(z1s, z2s, return_details=True)
                    heat[name] = det.plan.double().tolist()
                    if name == "ince":
                        heat["kernel"] = det.kernel.double().tolist()
                out["heatmaps"] = heat
                out["heatmap_pairs"] = k
                out["heatmap_labels"] = ds.labels[idx[:k]].tolist()
    return out


def run_one(spec: RunSpec, profile: str, *, root: str | os.PathLike | None = None, progress: bool = False,
            tracker: CodeTracker | None = None, reuse_after: float | None = None) -> dict[str, Any]:
    """Pretrain + evaluate ``spec`` under ``profile`` now, write and return its result record.

    The run is first *claimed* (an exclusive ``flock`` on its lock file): if another live process
    holds the claim, :class:`~gca.study.cache.RunClaimedError` is raised and nothing is computed.
    Once claimed, a current result (written at or after ``reuse_after``, a POSIX time; ``None``:
    any) is returned as it is — a concurrent runner may have finished it meanwhile — so each run
    is computed once. The code executed is recorded (pass a running ``tracker`` to include what
    ran before, e.g. imports) and stored as the result's code fingerprint."""
    return run_or_reuse(spec, profile, root=root, progress=progress, tracker=tracker, reuse_after=reuse_after)[0]


def run_or_reuse(spec: RunSpec, profile: str, *, root=None, progress: bool = False,
                 tracker: CodeTracker | None = None, reuse_after: float | None = None,
                 data_memo: dict | None = None, config: RunConfig | None = None,
                 runs: str | os.PathLike | None = None) -> tuple[dict[str, Any], bool]:
    """:func:`run_one`, also saying whether it computed the run (``True``) or, once it held the
    claim, found a current result that another process had just written (``False``). ``config``:
    the resolved configuration to run (default: ``spec`` resolved under ``profile``); ``runs``:
    where run directories go (:func:`gca.study.paths.runs_root`)."""
    use_repo_data_dir()
    config = resolve_spec(spec, profile) if config is None else config
    path = result_path(spec, profile, config_key(config_to_dict(config), spec.analysis), root=root)
    with Claim(lock_path(path), blocking=False, what=spec.label):
        record, _ = check_result(path, data_memo=data_memo)
        if record is not None and (reuse_after is None or path.stat().st_mtime >= reuse_after):
            return record, False
        if tracker is not None:
            return _run_one(spec, profile, config, path, progress=progress, tracker=tracker, runs=runs), True
        with CodeTracker() as own:
            return _run_one(spec, profile, config, path, progress=progress, tracker=own, runs=runs), True


def _run_one(spec: RunSpec, profile: str, config: RunConfig, path: Path, *, progress: bool,
             tracker: CodeTracker, runs) -> dict[str, Any]:
    """Compute the run (the caller holds the claim of ``path``) and write its record there."""
    config_dict = config_to_dict(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    run_dir = _run_dir(spec, profile, run_config_hash(config), runs)
    t0 = time.perf_counter()
    # A finished run directory is reused only if the code it ran is unchanged.
    stamp = run_dir / "experiments_fingerprint.json"
    # one process at a time per run directory (two specs that differ only in their analysis share it)
    with Claim(lock_path(run_dir), blocking=True, what=str(run_dir)):
        if (run_dir / "checkpoint.pt").exists():
            old = json.loads(stamp.read_text()) if stamp.is_file() else {}
            if fingerprint_changes(old):
                shutil.rmtree(run_dir)
        try:
            result = pretrain(config, run_dir, resume=(run_dir / "config.json").is_file(), progress=progress)
        except TrainingDataChangedError:  # the data changed since this run directory was trained
            shutil.rmtree(run_dir)
            result = pretrain(config, run_dir, resume=False, progress=progress)
        if not stamp.is_file():
            save_result(tracker.fingerprint(), stamp)
    t1 = time.perf_counter()
    device = resolve_device(config.train.device)
    metrics = evaluate_model(result.model, config, device=device, progress=progress)
    t2 = time.perf_counter()
    epochs = result.epochs
    record: dict[str, Any] = {
        "key": config_key(config_dict, spec.analysis),
        "profile": study_profile(profile),
        "spec": spec.to_dict(),
        "config": config_dict,
        "config_hash": run_config_hash(config),
        "metrics": metrics,
        "train": {
            "epochs": len(epochs), "final_loss": epochs[-1]["loss"] if epochs else None,
            "loss_curve": [e["loss"] for e in epochs],
            "epoch_seconds": [e["seconds"] for e in epochs],
            "resumed_from_epoch": result.resumed_from_epoch,
            "run_dir": os.path.relpath(run_dir, REPO_ROOT),
        },
        "timing": {"pretrain_s": t1 - t0, "eval_s": t2 - t1},
    }
    if spec.analysis == "plans":
        result.model.eval()
        record["plans"] = _plans_analysis(result.model.cpu(), config, batch=64, n_batches=8)
        record["timing"]["analysis_s"] = time.perf_counter() - t2
    record["timing"]["total_s"] = time.perf_counter() - t0
    record["code"] = tracker.fingerprint()
    record["code_id"] = fingerprint_id(record["code"])
    record["provenance"] = collect_provenance(
        seed=spec.seed, data_checksum=metrics.get("train_checksum"), device=device,
        command=" ".join(sys.argv), threads=torch.get_num_threads())
    save_result(record, path)
    return record


@dataclass
class Results:
    """What :func:`get_results` returns: ``records`` (one per finished run, in plan order) and
    ``missing`` (specs with no current result, with the reason: ``missing``, ``stale``,
    ``running``, or the error of a failed computation)."""

    profile: str
    records: list[dict] = field(default_factory=list)
    missing: list[tuple[RunSpec, str]] = field(default_factory=list)
    computed: int = 0
    reused: int = 0
    paths: list[Path] = field(default_factory=list)  # the result file of each record (a figure's inputs)

    def by(self, experiment: str | None = None, method: str | None = None, tag: str | None = None) -> list[dict]:
        """Records of one experiment / method / tag (``None``: any)."""
        return [r for r in self.records if (experiment is None or r["spec"]["experiment"] == experiment)
                and (method is None or r["spec"]["method"] == method) and (tag is None or r["spec"]["tag"] == tag)]

    def missing_text(self) -> str:
        """Plain-text list of the runs not shown and why (or a sentence saying none is missing)."""
        if not self.missing:
            return "All runs of this page are computed with the current code."
        lines = [f"{len(self.missing)} run(s) have no current result and are NOT shown:"]
        lines += [f"- {s.label}: {why}" for s, why in self.missing]
        return "\n".join(lines)


def get_results(specs: Sequence[RunSpec], profile: str, *, mode: str | None = None,
                root: str | os.PathLike | None = None, progress: bool = False) -> Results:
    """Results of ``specs``: reused when current, else computed (mode ``compute``/``force``) or
    listed as missing (mode ``cached``; also while another process is computing a run)."""
    mode = experiment_mode(mode)
    out = Results(study_profile(profile))
    started = time.time()
    memo: dict = {}  # data checksums, loaded once for this call
    for spec in specs:
        path = result_path(spec, profile, result_key(spec, profile), root=root)
        record, state = check_result(path, data_memo=memo)
        if mode == "force":
            record = None
        if record is not None:
            out.records.append(record)
            out.paths.append(path)
            out.reused += 1
            continue
        if in_progress(path):
            out.missing.append((spec, "being computed by another process (see the study log)"))
            continue
        if mode == "cached":
            why = "not computed yet" if state == "missing" else state + " — not shown"
            out.missing.append((spec, why))
            continue
        try:
            record, computed = run_or_reuse(spec, profile, root=root, progress=progress, data_memo=memo,
                                            reuse_after=started if mode == "force" else None)
            out.records.append(record)
            out.paths.append(path)
            if computed:
                out.computed += 1
            else:  # another process finished it between our check and our claim
                out.reused += 1
        except RunClaimedError:
            out.missing.append((spec, "being computed by another process (see the study log)"))
        except Exception as exc:  # a failed run is reported on the page, never hidden
            out.missing.append((spec, f"failed: {type(exc).__name__}: {exc}"))
    return out
