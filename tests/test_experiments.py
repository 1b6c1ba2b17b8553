"""Tests of gca.experiments: code fingerprints, the result cache, the study plan, verdicts, the paper profile."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gca import experiments as ex

MODULE_SRC = '''
"""A module."""
SCALE = 2


def used(x):
    """Doc."""
    return helper(x) * SCALE


def helper(x):
    return x + 1


def unused(x):
    return x - 1


class Thing:
    field = 3

    def method(self):
        return self.field
'''


def _write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


# ------------------------------------------------------------------------------------------------
# module_index: what counts as a code change
# ------------------------------------------------------------------------------------------------
def test_module_index_ignores_docstrings_comments_and_formatting(tmp_path):
    p = tmp_path / "m.py"
    _write(p, MODULE_SRC)
    skel, funcs = ex.module_index(p)
    assert set(funcs) == {"used", "helper", "unused", "Thing.method"}
    _write(p, MODULE_SRC.replace('"""Doc."""', '"""Another doc, longer."""').replace(
        "return helper(x) * SCALE", "return helper(x)  *  SCALE  # a comment"))
    assert ex.module_index(p) == (skel, funcs)


def test_module_index_localises_code_changes(tmp_path):
    p = tmp_path / "m.py"
    _write(p, MODULE_SRC)
    skel, funcs = ex.module_index(p)
    _write(p, MODULE_SRC.replace("return x + 1", "return x + 2"))
    skel2, funcs2 = ex.module_index(p)
    assert skel2 == skel
    assert funcs2["helper"] != funcs["helper"]
    assert {k: v for k, v in funcs2.items() if k != "helper"} == {k: v for k, v in funcs.items() if k != "helper"}
    _write(p, MODULE_SRC.replace("SCALE = 2", "SCALE = 3"))
    assert ex.module_index(p)[0] != skel  # a module-level constant is part of the skeleton
    _write(p, MODULE_SRC.replace("field = 3", "field = 4"))
    assert ex.module_index(p)[0] != skel  # so is a class field


def _import_from(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_code_tracker_records_executed_functions_and_detects_changes(tmp_path, monkeypatch):
    pkg = tmp_path / "gca"
    pkg.mkdir()
    p = pkg / "fake_mod.py"
    _write(p, MODULE_SRC)
    monkeypatch.setattr(ex, "_GCA_DIR", str(pkg) + "/")
    monkeypatch.setattr(ex, "_REPO_ROOT", tmp_path)
    mod = _import_from(p, "gca_fake_mod_for_test")
    with ex.CodeTracker() as tracker:
        assert mod.used(1) == 4
        assert mod.Thing().method() == 3
    fp = tracker.fingerprint()
    assert set(fp["functions"]) == {"gca/fake_mod.py::used", "gca/fake_mod.py::helper", "gca/fake_mod.py::Thing.method"}
    assert ex.fingerprint_changes(fp) == []
    # a function the run did not execute may change freely
    _write(p, MODULE_SRC.replace("return x - 1", "return x - 100"))
    assert ex.fingerprint_changes(fp) == []
    # so may a docstring
    _write(p, MODULE_SRC.replace('"""Doc."""', '"""Changed."""'))
    assert ex.fingerprint_changes(fp) == []
    # an executed function may not
    _write(p, MODULE_SRC.replace("return x + 1", "return x + 2"))
    assert ex.fingerprint_changes(fp) == ["gca/fake_mod.py: helper"]
    # nor module-level code
    _write(p, MODULE_SRC.replace("SCALE = 2", "SCALE = 5"))
    assert any("module-level" in c for c in ex.fingerprint_changes(fp))
    p.unlink()
    assert "gca/fake_mod.py removed" in ex.fingerprint_changes(fp)
    # the torch version is part of it
    assert ex.fingerprint_changes({**fp, "torch": "0.0"})[0].startswith("torch 0.0 ->")
    assert ex.fingerprint_changes({}) == ["no code fingerprint recorded"]


def test_code_tracker_ignores_untracked_modules():
    from gca import provenance

    with ex.CodeTracker() as tracker:
        provenance.config_hash({"a": 1})
        from gca.losses.targets import positive_index

        positive_index(3, "joint")
    fp = tracker.fingerprint()
    assert "gca/losses/targets.py::positive_index" in fp["functions"]
    assert not any(k.startswith("gca/provenance.py") for k in fp["functions"])
    assert "gca/provenance.py" not in fp["files"]


# ------------------------------------------------------------------------------------------------
# Specs, profiles, plan
# ------------------------------------------------------------------------------------------------
def test_runspec_validation_and_roundtrip():
    s = ex.RunSpec("standard", "gca-uot", 2, {"loss.hparams.n_iter": 3}, tag="T=3")
    assert ex.RunSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ValueError, match="experiment"):
        ex.RunSpec("nope", "ince")
    with pytest.raises(ValueError, match="method"):
        ex.RunSpec("standard", "infonce")
    with pytest.raises(ValueError, match="seed"):
        ex.RunSpec("standard", "ince", -1)
    with pytest.raises(ValueError, match="analysis"):
        ex.RunSpec("standard", "ince", analysis="heatmaps")


def test_profiles_map_book_profiles():
    assert ex.study_profile("default") == "cpu" and ex.study_profile("smoke") == "smoke"
    assert ex.study_profile("full") == "paper" and ex.study_profile("cpu") == "cpu"
    with pytest.raises(ValueError, match="profile"):
        ex.study_profile("huge")


def test_mode_from_environment(monkeypatch):
    monkeypatch.delenv("GCA_EXPERIMENTS", raising=False)
    monkeypatch.delenv("GCA_RECOMPUTE", raising=False)
    assert ex.experiment_mode() == "compute"
    monkeypatch.setenv("GCA_EXPERIMENTS", "cached")
    assert ex.experiment_mode() == "cached"
    monkeypatch.setenv("GCA_RECOMPUTE", "1")
    assert ex.experiment_mode() == "force"
    assert ex.experiment_mode("cached") == "cached"
    with pytest.raises(ValueError, match="mode"):
        ex.experiment_mode("sometimes")


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_study_plan_order_and_every_spec_resolves(profile):
    plan = ex.study_plan(profile)
    st = ex.study_settings(profile)
    n_seeds = len(st["seeds"])
    first = plan[: 3 * n_seeds]
    assert {(s.experiment, s.method) for s in first} == {("standard", m) for m in ("ince", "gca-ince", "gca-uot")}
    nxt = plan[3 * n_seeds: 5 * n_seeds]
    assert {(s.experiment, s.method) for s in nxt} == {("noisy", "rince"), ("noisy", "gca-rince")}
    assert {s.experiment for s in plan} == set(ex.EXPERIMENTS)
    assert {s.method for s in plan if s.experiment == "standard"} == set(ex.METHODS_ORDER)
    keys = set()
    for s in plan:
        cfg = ex.resolve_spec(s, profile)  # validates the whole configuration
        assert cfg.train.seed == s.seed
        keys.add(ex.result_key(s, profile))
    assert len(keys) == len(plan)  # every run has its own key
    assert ex.study_plan(profile, seed=5)[0].seed == 5


def test_keys_follow_the_resolved_config():
    s = ex.RunSpec("standard", "ince", 0)
    assert ex.result_key(s, "smoke") == ex.result_key(ex.RunSpec("standard", "ince", 0), "smoke")
    assert ex.result_key(s, "smoke") != ex.result_key(ex.RunSpec("standard", "ince", 1), "smoke")
    assert ex.result_key(s, "smoke") != ex.result_key(ex.RunSpec("standard", "ince", 0, {"train.epochs": 1}), "smoke")
    assert ex.result_key(s, "smoke") != ex.result_key(s, "cpu")


# ------------------------------------------------------------------------------------------------
# The cache end to end (one tiny run)
# ------------------------------------------------------------------------------------------------
TINY = {"train.epochs": 1, "data.n_per_class": 12, "data.test_n_per_class": 6, "train.batch_size": 32,
        "eval.probe_weight_decays": (1e-2,), "eval.probe_max_iter": 20}


@pytest.mark.filterwarnings("ignore:linear probe:RuntimeWarning")
def test_cache_roundtrip_stale_and_force(tmp_path, monkeypatch):
    monkeypatch.setenv("GCA_RUNS_DIR", str(tmp_path / "runs"))
    root = tmp_path / "results"
    spec = ex.RunSpec("standard", "gca-ince", 0, TINY)
    torch.set_num_threads(1)

    miss = ex.get_results([spec], "smoke", mode="cached", root=root)
    assert not miss.records and miss.missing[0][1] == "not computed yet"

    res = ex.get_results([spec], "smoke", mode="compute", root=root)
    assert res.computed == 1 and not res.missing
    rec = res.records[0]
    path = ex.result_path(spec, "smoke", rec["key"], root=root)
    assert path.is_file()
    stored = json.loads(path.read_text())
    assert stored["key"] == ex.result_key(spec, "smoke")
    assert stored["config"]["loss"]["method"] == "gca-ince" and stored["config"]["train"]["epochs"] == 1
    prov = stored["provenance"]
    assert {"git_commit", "packages", "device", "seed", "data_checksum", "time"} <= set(prov)
    assert 0.0 <= stored["metrics"]["linear_accuracy"] <= 1.0
    assert "gca/losses/core.py" in stored["code"]["files"] and "gca/train/loop.py" in stored["code"]["files"]
    assert any(k.startswith("gca/ot/") for k in stored["code"]["functions"])  # GCA-INCE runs Sinkhorn
    assert ex.check_result(path) == (stored, "done")

    again = ex.get_results([spec], "smoke", mode="cached", root=root)
    assert again.reused == 1 and again.computed == 0

    # a result whose fingerprint no longer matches is stale: not shown in cached mode
    fake = dict(stored)
    fake["code"] = {**stored["code"], "functions": {**stored["code"]["functions"], "gca/losses/core.py::alignment": "0" * 16}}
    path.write_text(json.dumps(fake))
    state = ex.check_result(path)[1]
    assert state.startswith("stale: code changed") and "alignment" in state
    stale = ex.get_results([spec], "smoke", mode="cached", root=root)
    assert not stale.records and "stale" in stale.missing[0][1]

    # a result whose stored config was edited no longer matches its key
    fake = dict(stored)
    fake["config"] = json.loads(json.dumps(stored["config"]))
    fake["config"]["train"]["epochs"] = 2
    path.write_text(json.dumps(fake))
    assert ex.check_result(path)[1] == "stale: key does not match the stored configuration"

    # compute mode recomputes it; force recomputes a current one
    path.write_text(json.dumps(fake))
    res2 = ex.get_results([spec], "smoke", mode="compute", root=root)
    assert res2.computed == 1 and ex.check_result(path)[1] == "done"
    # the run directory was reused (pretraining not repeated) and the numbers agree
    assert res2.records[0]["metrics"]["linear_accuracy"] == stored["metrics"]["linear_accuracy"]
    forced = ex.get_results([spec], "smoke", mode="force", root=root)
    assert forced.computed == 1


@pytest.mark.filterwarnings("ignore:linear probe:RuntimeWarning")
def test_failed_runs_are_reported_not_hidden(tmp_path, monkeypatch):
    monkeypatch.setenv("GCA_RUNS_DIR", str(tmp_path / "runs"))
    spec = ex.RunSpec("standard", "ince", 0, {**TINY, "train.batch_size": 4096})  # batch larger than the data
    res = ex.get_results([spec], "smoke", mode="compute", root=tmp_path / "results")
    assert not res.records
    assert res.missing[0][1].startswith("failed: ValueError") and "batch_size" in res.missing[0][1]
    assert "NOT shown" in res.missing_text()


# ------------------------------------------------------------------------------------------------
# Statistics and verdicts
# ------------------------------------------------------------------------------------------------
def test_mean_sd():
    m, sd, n = ex.mean_sd([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and sd == pytest.approx(1.0)
    m, sd, n = ex.mean_sd([0.5])
    assert m == 0.5 and math.isnan(sd) and n == 1
    assert ex.mean_sd([])[2] == 0


def _st(values):
    m, sd, n = ex.mean_sd(values)
    return {"mean": m, "sd": sd, "n": n, "values": values}


def test_compare_and_best_verdicts():
    stats = {"a": _st([0.50, 0.51, 0.52]), "b": _st([0.40, 0.41, 0.42]), "c": _st([0.505, 0.515, 0.525]),
             "one": _st([0.30])}
    assert ex.compare(stats, "a", "b")["verdict"] == "reproduced"
    assert ex.compare(stats, "b", "a")["verdict"] == "not reproduced at this scale"
    assert ex.compare(stats, "a", "c")["verdict"] == "inconclusive"
    assert ex.compare(stats, "a", "missing")["verdict"].startswith("missing")
    assert ex.compare(stats, "one", "b")["verdict"].startswith("inconclusive (one seed")
    assert ex.compare(stats, "one", "b", noise_sd=0.01)["verdict"] == "not reproduced at this scale"
    assert ex.panel_noise_sd(stats) == pytest.approx(0.01)
    assert ex.best_method_verdict(stats, "c")["verdict"] == "inconclusive"  # best, but within noise of "a"
    assert ex.best_method_verdict(stats, "b")["verdict"] == "not reproduced at this scale"
    assert ex.best_method_verdict({"a": stats["a"], "b": stats["b"]}, "a")["verdict"] == "reproduced"
    assert ex.best_method_verdict(stats, "zzz")["verdict"].startswith("missing")


def test_paper_tables_cover_every_method():
    for table in (ex.PAPER_STANDARD, ex.PAPER_NOISY):
        assert set(table) == set(ex.METHODS_ORDER) and all(len(v) == 3 for v in table.values())
    assert ex.PAPER_STANDARD["gca-uot"][0] == 92.61 and ex.PAPER_NOISY["gca-uot"][2] == 71.45


def test_saved_tensor_bytes_orders_gradient_modes():
    unrolled = ex.saved_tensor_bytes("gca-ince", n_pairs=64, grad="unrolled")
    detach = ex.saved_tensor_bytes("gca-ince", n_pairs=64, grad="detach")
    assert unrolled > 0 and detach > 0 and detach <= unrolled
    # the unrolled solver keeps its kernel on the autograd context (not via save_for_backward):
    # counted, it is at least one N x N float32 matrix more than the detached plan
    n = 2 * 64
    assert unrolled - detach >= 4 * n * n


# ------------------------------------------------------------------------------------------------
# The paper profile: resolves and runs one step on CPU
# ------------------------------------------------------------------------------------------------
def test_paper_profile_resolves_and_runs_one_step():
    from gca.losses import make_loss
    from gca.models import build_model
    from gca.train import build_optimizer

    spec = ex.study_plan("paper", ["standard"])[0]
    cfg = ex.resolve_spec(spec, "paper")
    assert cfg.model.backbone == "resnet18" and cfg.model.stem == "cifar"
    assert cfg.train.batch_size == 512 and cfg.train.epochs == 500 and cfg.data.dataset == "cifar10"
    assert cfg.model.projector_hidden_dim == 2048 and cfg.model.projector_out_dim == 128
    assert cfg.optim.name == "sgd" and cfg.optim.nesterov and cfg.optim.weight_decay == 1e-6
    torch.manual_seed(0)
    m = cfg.model
    model = build_model(backbone=m.backbone, stem=m.stem, in_channels=3, width=m.width, norm=m.norm,
                        projector_hidden_dim=m.projector_hidden_dim, projector_out_dim=m.projector_out_dim,
                        projector_bias=m.projector_bias, projector_batch_norm=m.projector_batch_norm)
    loss_fn = make_loss(cfg.loss.method, **cfg.loss.hparams)
    opt = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    x = torch.randn(16, 3, 32, 32)  # 8 pairs: the paper's network, loss and optimiser on a small batch
    out = model(x)
    z = out[1] if isinstance(out, tuple) else out
    z1, z2 = z.float().chunk(2)
    loss = loss_fn(z1, z2)
    assert torch.isfinite(loss)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_command_line_status(capsys):
    assert ex.main(["status", "--profile", "smoke", "--only", "plans"]) == 0
    out = capsys.readouterr().out
    assert "plans/gca-uot seed 0" in out


def test_cost_verdict_uses_paired_rounds():
    fast = {"step_all": [1.0, 1.1, 0.9, 1.0, 1.05]}
    same = {"step_all": [1.01, 1.11, 0.91, 1.01, 1.06]}
    slow = {"step_all": [1.3, 1.4, 1.2, 1.3, 1.35]}
    noisy = {"step_all": [0.9, 1.3, 0.8, 1.2, 1.1]}
    assert ex.cost_verdict({"m": same, "o": fast}, "m", "o")["verdict"] == "reproduced"
    assert ex.cost_verdict({"m": slow, "o": fast}, "m", "o")["verdict"] == "not reproduced at this scale"
    assert ex.cost_verdict({"m": noisy, "o": fast}, "m", "o")["verdict"] == "inconclusive"


def _domain_record(d, dom, cls):
    return {"spec": {"overrides": {"loss.target_alpha": max(d, 0.0), "loss.target_beta": max(-d, 0.0)}},
            "metrics": {"domain_accuracy": dom, "linear_accuracy": cls}}


def test_domain_prior_and_ablation_verdicts():
    rising = [_domain_record(d, 0.7 + 0.2 * d, 0.89 + 0.001 * i) for i, d in enumerate((-0.5, -0.1, 0.0, 0.1, 0.5))]
    v = ex.domain_prior_verdict(rising)
    assert v["verdict"] == "reproduced" and v["verdict_class"] == "reproduced" and v["n"] == 5
    falling = [_domain_record(d, 0.9 - 0.2 * d, 0.5 + d) for d in (-0.5, 0.0, 0.5)]
    v = ex.domain_prior_verdict(falling)
    assert v["verdict"] == "not reproduced at this scale" and v["verdict_class"] == "not reproduced at this scale"
    assert ex.domain_prior_verdict([])["verdict"].startswith("missing")
    a = ex.ablation_verdicts({1: 0.60, 5: 0.70, 9: 0.71}, {0.1: 0.5, 0.4: 0.7, 1.0: 0.6}, 0.01)
    assert a["iters"] == "reproduced" and a["eps"] == "reproduced" and a["best_eps"] == 0.4
    a = ex.ablation_verdicts({1: 0.70, 5: 0.701}, {0.1: 0.70, 0.4: 0.705}, 0.01)
    assert a["iters"] == "inconclusive" and a["eps"] == "inconclusive"
    a = ex.ablation_verdicts({}, {1.0: 0.8, 0.1: 0.5}, 0.01)
    assert a["iters"].startswith("missing") and a["eps"] == "not reproduced at this scale"


# ------------------------------------------------------------------------------------------------
# Concurrency: atomic claims, stale claims, two runners
# ------------------------------------------------------------------------------------------------
_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"holder")
print("locked", flush=True)
time.sleep(60)
"""


def test_claim_is_exclusive_and_a_dead_holders_claim_is_recovered(tmp_path):
    import subprocess

    result = tmp_path / "r.json"
    lock = ex._lock_path(result)
    assert not ex.in_progress(result)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert ex.in_progress(result)
        with pytest.raises(ex.RunClaimedError, match="another process"):
            with ex._Claim(lock, blocking=False, what="r"):
                pass
    finally:
        holder.kill()  # a crash: no clean-up code runs in the holder
        holder.wait()
    assert not ex.in_progress(result)  # the kernel released the dead holder's lock
    with ex._Claim(lock, blocking=False, what="r"):
        assert ex.in_progress(result)
        with pytest.raises(ex.RunClaimedError):  # also exclusive against a second claim in-process
            with ex._Claim(lock, blocking=False, what="r"):
                pass
    assert not ex.in_progress(result) and lock.read_text() == ""


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
    import os
    import subprocess

    if grace_s is not None:
        monkeypatch.setattr(ex, "_PROBE_GRACE_S", grace_s)
    lock = ex._lock_path(tmp_path / "r.json")
    lock.write_text("")
    probe = subprocess.Popen([sys.executable, "-c", _PROBE, str(lock), "0.3"], stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout.readline().strip() == "probing"
        if refused:
            with pytest.raises(ex.RunClaimedError, match="pid [?]"):
                with ex._Claim(lock, blocking=False, what="r"):
                    pass
        else:
            with ex._Claim(lock, blocking=False, what="r"):
                assert lock.read_text().split()[0] == str(os.getpid())
    finally:
        probe.kill()
        probe.wait()


def test_run_one_refuses_a_claimed_run(tmp_path, monkeypatch):
    monkeypatch.setenv("GCA_RUNS_DIR", str(tmp_path / "runs"))
    spec = ex.RunSpec("standard", "ince", 0, TINY)
    path = ex.result_path(spec, "smoke", ex.result_key(spec, "smoke"), root=tmp_path / "results")
    with ex._Claim(ex._lock_path(path), blocking=False, what="x"):
        res = ex.get_results([spec], "smoke", mode="compute", root=tmp_path / "results")
    assert res.computed == 0 and "another process" in res.missing[0][1]
    assert not path.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("experiment, workers", [
    ("plans", 1),  # one run that both runners want at once: about 30 s on 2 busy cores
    pytest.param("ablation_eps", 2, marks=pytest.mark.slow),  # two runs: 50-75 s on 2 busy cores
])
def test_two_concurrent_runners_compute_each_run_once(experiment, workers, tmp_path):
    import os
    import subprocess

    env = dict(os.environ, GCA_RESULTS_DIR=str(tmp_path / "r"), GCA_RUNS_DIR=str(tmp_path / "rr"),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "gca.experiments", "run", "--profile", "smoke", "--only", experiment,
           "--workers", str(workers), "--poll", "1"]
    procs = [subprocess.Popen(cmd, cwd=ex._REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    plan = ex.study_plan("smoke", [experiment])
    done = [line for log in logs for line in log.splitlines() if " done  " in line]
    assert len(done) == len(plan), logs  # each run computed by exactly one runner
    results = sorted((tmp_path / "r" / "smoke").rglob("*.json"))
    assert len(results) == len(plan)
    for path in results:
        assert ex.check_result(path)[1] == "done"
    epochs = ex.resolve_spec(plan[0], "smoke").train.epochs
    run_dirs = [d for d in (tmp_path / "rr" / "smoke").iterdir() if d.is_dir()]
    assert len(run_dirs) == len(plan)
    for d in run_dirs:  # no run directory written by two processes
        records = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in records if r["type"] == "epoch"] == list(range(epochs))


# ------------------------------------------------------------------------------------------------
# Data changes make results stale; force recomputes without manual clean-up
# ------------------------------------------------------------------------------------------------
def _write_fake_cifar(root: Path, seed: int) -> None:
    import pickle

    import numpy as np

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
    spec = ex.RunSpec("standard", "ince", 0, over)
    res = ex.get_results([spec], "smoke", mode="compute", root=root)
    assert res.computed == 1, res.missing
    path = ex.result_path(spec, "smoke", res.records[0]["key"], root=root)
    assert ex.check_result(path)[1] == "done"

    _write_fake_cifar(data, seed=1)  # same layout, other images
    state = ex.check_result(path)[1]  # seen by this (long-lived) process too: no memo outlives a call
    assert state.startswith("stale: data changed: train checksum"), state
    assert not ex.get_results([spec], "smoke", mode="cached", root=root).records
    # force (and compute) recompute it; the old run directory is retrained, not resumed
    again = ex.get_results([spec], "smoke", mode="force", root=root)
    assert again.computed == 1, again.missing
    assert ex.check_result(path)[1] == "done"
    assert again.records[0]["metrics"]["train_checksum"] != res.records[0]["metrics"]["train_checksum"]
    assert again.records[0]["train"]["resumed_from_epoch"] is None  # retrained on the new data

    # the command line says the same: one file, or every file of a profile
    monkeypatch.setenv("GCA_RESULTS_DIR", str(root))
    assert ex.main(["check", str(path)]) == 0 and capsys.readouterr().out.strip() == "done"
    assert ex.main(["check", "--profile", "smoke"]) == 0 and "{'done': 1}" in capsys.readouterr().out
    _write_fake_cifar(data, seed=2)
    assert ex.main(["check", "--profile", "smoke"]) == 1
    assert capsys.readouterr().out.startswith("stale: data changed: train checksum")


# ------------------------------------------------------------------------------------------------
# Command line errors: one line, exit 2, no traceback unless asked
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,needle", [
    (["run", "--profile", "bogus"], "profile='bogus' is unknown"),
    (["run", "--workers", "0"], "must be >= 1"),
    (["run", "--workers", "two"], "'two' is not an integer"),
    (["one", "--profile", "smoke", "--spec", "{bad json"], "--spec is not valid JSON"),
    (["one", "--profile", "smoke", "--spec", '{"experiment": "standard", "method": "nope"}'], "method='nope'"),
    (["one", "--profile", "smoke", "--spec", "[1]"], "must be a JSON object"),
    (["one", "--profile", "smoke", "--spec",
      '{"experiment": "standard", "method": "ince", "overrides": {"train.epochs": 0}}'], "train.epochs must be >= 1"),
    (["run", "--poll", "soon"], "'soon' is not a number of seconds"),
    (["check"], "--profile"),
])
def test_command_line_errors_are_one_line(argv, needle):
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "GCA_DEBUG"}
    out = subprocess.run([sys.executable, "-m", "gca.experiments", *argv], cwd=ex._REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in out.stderr, out.stderr


def test_command_line_debug_shows_the_traceback():
    import os
    import subprocess

    out = subprocess.run([sys.executable, "-m", "gca.experiments", "one", "--profile", "smoke", "--spec", "{bad"],
                         cwd=ex._REPO_ROOT, env=dict(os.environ, GCA_DEBUG="1"), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "Traceback" in out.stderr


@pytest.mark.filterwarnings("ignore:linear probe:RuntimeWarning")
def test_a_result_written_meanwhile_is_reused_not_recomputed(tmp_path, monkeypatch):
    """Between a runner's plan and its subprocess's claim another runner may finish the run: the
    subprocess then reuses it and says so (the study log counts it as ``skip``, not ``done``)."""
    import os
    import subprocess

    monkeypatch.setenv("GCA_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("GCA_RESULTS_DIR", str(tmp_path / "results"))
    spec = ex.RunSpec("standard", "ince", 0, TINY)
    first = ex.get_results([spec], "smoke", mode="compute")
    assert first.computed == 1, first.missing
    path = ex.result_path(spec, "smoke", first.records[0]["key"])
    stamp = path.stat().st_mtime_ns
    record, computed = ex._run_or_reuse(spec, "smoke")
    assert computed is False and record == first.records[0]
    out = subprocess.run([sys.executable, "-m", "gca.experiments", "one", "--profile", "smoke",
                          "--spec", json.dumps(spec.to_dict())], cwd=ex._REPO_ROOT,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("done elsewhere"), out
    assert path.stat().st_mtime_ns == stamp  # not written again
