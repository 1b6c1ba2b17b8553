"""The result cache (gca.study.cache) and computing runs (gca.study.run): keys, staleness (code and
data), claims under concurrency, failed runs, and the plans analysis."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gca.models import build_model
from gca.study import cache
from gca.study.cache import (Claim, RunClaimedError, check_result, config_key, in_progress, lock_path, result_key,
                             result_path, save_result)
from gca.study.fingerprint import FORMAT
from gca.study.plan import RunSpec, resolve_spec
from gca.study.run import _plans_analysis, get_results
from gca.study.runner import main

TINY = {"train.epochs": 1, "data.n_per_class": 12, "data.test_n_per_class": 6, "train.batch_size": 32,
        "eval.probe_weight_decays": (1e-2,), "eval.probe_max_iter": 20}


@pytest.mark.filterwarnings("ignore:linear probe:RuntimeWarning")
def test_cache_roundtrip_stale_and_force(tmp_path, monkeypatch):
    monkeypatch.setenv("GCA_RUNS_DIR", str(tmp_path / "runs"))
    root = tmp_path / "results"
    spec = RunSpec("standard", "gca-ince", 0, TINY)
    torch.set_num_threads(1)

    miss = get_results([spec], "smoke", mode="cached", root=root)
    assert not miss.records and miss.missing[0][1] == "not computed yet"

    res = get_results([spec], "smoke", mode="compute", root=root)
    assert res.computed == 1 and not res.missing
    rec = res.records[0]
    path = result_path(spec, "smoke", rec["key"], root=root)
    assert path.is_file()
    stored = json.loads(path.read_text())
    assert stored["key"] == result_key(spec, "smoke")
    assert stored["config"]["loss"]["method"] == "gca-ince" and stored["config"]["train"]["epochs"] == 1
    prov = stored["provenance"]
    assert {"git_commit", "packages", "device", "cpu", "blas", "seed", "data_checksum", "time"} <= set(prov)
    assert prov["cpu"] and "torch" in prov["blas"] and prov["blas"]["torch"]["num_threads"] == 1
    assert 0.0 <= stored["metrics"]["linear_accuracy"] <= 1.0
    names = set(stored["code"]["functions"].values())
    assert stored["code"]["format"] == FORMAT
    assert any(n.startswith("gca.losses.") for n in names) and any(n.startswith("gca.train.") for n in names)
    assert any(n.startswith("gca.ot.") for n in names)  # GCA-INCE runs Sinkhorn
    assert "gca.study.run:_run_one" in names and not any(n.startswith("gca.study.cache:") for n in names)
    assert check_result(path) == (stored, "done")

    again = get_results([spec], "smoke", mode="cached", root=root)
    assert again.reused == 1 and again.computed == 0

    # a result whose fingerprint no longer matches is stale: not shown in cached mode
    fake = dict(stored)
    fake["code"] = {**stored["code"], "functions": {**stored["code"]["functions"], "0" * 16: "gca.losses:alignment"}}
    path.write_text(json.dumps(fake))
    state = check_result(path)[1]
    assert state == "stale: code changed: gca.losses:alignment changed or removed"
    stale = get_results([spec], "smoke", mode="cached", root=root)
    assert not stale.records and "stale" in stale.missing[0][1]

    # a result whose stored config was edited no longer matches its key
    fake = dict(stored)
    fake["config"] = json.loads(json.dumps(stored["config"]))
    fake["config"]["train"]["epochs"] = 2
    path.write_text(json.dumps(fake))
    assert check_result(path)[1] == "stale: key does not match the stored configuration"

    # compute mode recomputes it; force recomputes a current one
    path.write_text(json.dumps(fake))
    res2 = get_results([spec], "smoke", mode="compute", root=root)
    assert res2.computed == 1 and check_result(path)[1] == "done"
    # the run directory was reused (pretraining not repeated) and the numbers agree
    assert res2.records[0]["metrics"]["linear_accuracy"] == stored["metrics"]["linear_accuracy"]
    forced = get_results([spec], "smoke", mode="force", root=root)
    assert forced.computed == 1


@pytest.mark.filterwarnings("ignore:linear probe:RuntimeWarning")
def test_failed_runs_are_reported_not_hidden(tmp_path, monkeypatch):
    monkeypatch.setenv("GCA_RUNS_DIR", str(tmp_path / "runs"))
    spec = RunSpec("standard", "ince", 0, {**TINY, "train.batch_size": 4096})  # batch larger than the data
    res = get_results([spec], "smoke", mode="compute", root=tmp_path / "results")
    assert not res.records
    assert res.missing[0][1].startswith("failed: ValueError") and "batch_size" in res.missing[0][1]
    assert "NOT shown" in res.missing_text()


_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"holder")
print("locked", flush=True)
time.sleep(60)
"""


def test_claim_is_exclusive_and_a_dead_holders_claim_is_recovered(tmp_path):
    result = tmp_path / "r.json"
    lock = lock_path(result)
    assert not in_progress(result)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert in_progress(result)
        with pytest.raises(RunClaimedError, match="another process"):
            with Claim(lock, blocking=False, what="r"):
                pass
    finally:
        holder.kill()  # a crash: no clean-up code runs in the holder
        holder.wait()
    assert not in_progress(result)  # the kernel released the dead holder's lock
    with Claim(lock, blocking=False, what="r"):
        assert in_progress(result)
        with pytest.raises(RunClaimedError):  # also exclusive against a second claim in-process
            with Claim(lock, blocking=False, what="r"):
                pass
    assert not in_progress(result) and lock.read_text() == ""


_PROBE = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_SH)  # what in_progress() does, held here for a while
print("probing", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.parametrize("grace_s, refused", [(0.0, True), (None, False)])
def test_a_status_probe_does_not_make_a_free_run_look_claimed(tmp_path, monkeypatch, grace_s, refused):
    """Another runner's status probe (a shared lock on the empty claim file) must not refuse a claim
    of a free run; with no grace period (the behaviour before) it did, about 7 % of claims made
    while another process probed in a loop."""
    if grace_s is not None:
        monkeypatch.setattr(cache, "PROBE_GRACE_S", grace_s)
    lock = lock_path(tmp_path / "r.json")
    lock.write_text("")
    probe = subprocess.Popen([sys.executable, "-c", _PROBE, str(lock), "0.3"], stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout.readline().strip() == "probing"
        if refused:
            with pytest.raises(RunClaimedError, match="pid [?]"):
                with Claim(lock, blocking=False, what="r"):
                    pass
        else:
            with Claim(lock, blocking=False, what="r"):
                assert lock.read_text().split()[0] == str(os.getpid())
    finally:
        probe.kill()
        probe.wait()


def test_run_one_refuses_a_claimed_run(tmp_path, monkeypatch):
    monkeypatch.setenv("GCA_RUNS_DIR", str(tmp_path / "runs"))
    spec = RunSpec("standard", "ince", 0, TINY)
    path = result_path(spec, "smoke", result_key(spec, "smoke"), root=tmp_path / "results")
    with Claim(lock_path(path), blocking=False, what="x"):
        res = get_results([spec], "smoke", mode="compute", root=tmp_path / "results")
    assert res.computed == 0 and "another process" in res.missing[0][1]
    assert not path.exists() and not (tmp_path / "runs").exists()


def _write_fake_cifar(root: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(k % 10) for k in range(40)]
        data = rng.integers(0, 256, size=(40, 3072), dtype=np.uint8)
        with open(base / name, "wb") as fh:
            pickle.dump({"data": data, "labels": labels}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{k}" for k in range(10)]}, fh)


def test_changed_data_makes_results_stale_and_force_recomputes(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    _write_fake_cifar(data, seed=0)
    monkeypatch.setenv("GCA_DATA_DIR", str(data))
    monkeypatch.setenv("GCA_RUNS_DIR", str(tmp_path / "runs"))
    root = tmp_path / "results"
    over = {**TINY, "data.dataset": "cifar10", "data.n_per_class": 8, "data.test_n_per_class": 4,
            "data.image_size": 8, "train.batch_size": 16}
    spec = RunSpec("standard", "ince", 0, over)
    res = get_results([spec], "smoke", mode="compute", root=root)
    assert res.computed == 1, res.missing
    path = result_path(spec, "smoke", res.records[0]["key"], root=root)
    assert check_result(path)[1] == "done"

    _write_fake_cifar(data, seed=1)  # same layout, other images
    state = check_result(path)[1]  # seen by this (long-lived) process too: no memo outlives a call
    assert state.startswith("stale: data changed: train checksum"), state
    assert not get_results([spec], "smoke", mode="cached", root=root).records
    # force (and compute) recompute it; the old run directory is retrained, not resumed
    again = get_results([spec], "smoke", mode="force", root=root)
    assert again.computed == 1, again.missing
    assert check_result(path)[1] == "done"
    assert again.records[0]["metrics"]["train_checksum"] != res.records[0]["metrics"]["train_checksum"]
    assert again.records[0]["train"]["resumed_from_epoch"] is None  # retrained on the new data

    # the command line says the same: one file, or every file of a profile
    monkeypatch.setenv("GCA_RESULTS_DIR", str(root))
    assert main(["check", str(path)]) == 0 and capsys.readouterr().out.strip() == "done"
    assert main(["check", "--profile", "smoke"]) == 0 and "{'done': 1}" in capsys.readouterr().out
    _write_fake_cifar(data, seed=2)
    assert main(["check", "--profile", "smoke"]) == 1
    assert capsys.readouterr().out.startswith("stale: data changed: train checksum")


def test_an_old_format_record_is_stale_with_its_reason_not_an_error(tmp_path):
    config = {"probe": 1}
    key = config_key(config, None)
    old = {"key": key, "config": config, "spec": {}, "metrics": {},
           "code": {"files": {"gca/ot.py": "0" * 16}, "functions": {"gca/ot.py::sinkhorn": "0" * 16}, "torch": "x"}}
    path = save_result(old, tmp_path / f"ince-s0-{key}.json")
    record, state = check_result(path)
    assert record is None and state.startswith("stale: code fingerprint in the old format")
    path.write_text("[1, 2]")
    assert check_result(path)[1] == "stale: not a result record (a JSON object)"


@pytest.mark.filterwarnings("ignore:linear probe:RuntimeWarning")
def test_plans_analysis_uses_the_runs_epsilon():
    spec = RunSpec("plans", "gca-uot", 0, {**TINY, "loss.hparams.epsilon": 0.3}, analysis="plans")
    config = resolve_spec(spec, "smoke")
    m = config.model
    torch.manual_seed(0)
    model = build_model(backbone=m.backbone, in_channels=1, width=m.width, projector_hidden_dim=m.projector_hidden_dim,
                        projector_out_dim=m.projector_out_dim).eval()
    out = _plans_analysis(model, config, batch=16, n_batches=1)
    assert out["epsilon"] == 0.3 and len(out["checks"]) == 1
    assert set(out["heatmaps"]) == {"ince", "gca-ince", "gca-uot", "kernel"}
    default = _plans_analysis(model, resolve_spec(RunSpec("plans", "gca-uot", 0, TINY, analysis="plans"), "smoke"),
                              batch=16, n_batches=1)
    assert default["epsilon"] == 0.5  # the loss's default (the authors' CIFAR-10 value)
