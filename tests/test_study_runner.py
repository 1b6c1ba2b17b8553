"""The study's runner and command line (gca.study.runner, ``python -m gca.experiments``): status,
concurrent runners, one-line errors, reuse of results written meanwhile, verification."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gca.study.cache import check_result, result_path
from gca.study.paths import REPO_ROOT
from gca.study.plan import RunSpec, resolve_spec, study_plan
from gca.study.run import get_results, run_or_reuse
from gca.study.runner import main, verify

TINY = {"train.epochs": 1, "data.n_per_class": 12, "data.test_n_per_class": 6, "train.batch_size": 32,
        "eval.probe_weight_decays": (1e-2,), "eval.probe_max_iter": 20}


def test_command_line_status(capsys):
    assert main(["status", "--profile", "smoke", "--only", "plans"]) == 0
    out = capsys.readouterr().out
    assert "plans/gca-uot seed 0" in out


@pytest.mark.parametrize("experiment, workers", [
    ("plans", 1),  # one run that both runners want at once: about 30 s on 2 busy cores
    pytest.param("ablation_eps", 2, marks=pytest.mark.slow),  # two runs: 50-75 s on 2 busy cores
])
def test_two_concurrent_runners_compute_each_run_once(experiment, workers, tmp_path):
    env = dict(os.environ, GCA_RESULTS_DIR=str(tmp_path / "r"), GCA_RUNS_DIR=str(tmp_path / "rr"),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "gca.experiments", "run", "--profile", "smoke", "--only", experiment,
           "--workers", str(workers), "--poll", "1"]
    procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    plan = study_plan("smoke", [experiment])
    done = [line for log in logs for line in log.splitlines() if " done  " in line]
    assert len(done) == len(plan), logs  # each run computed by exactly one runner
    results = sorted((tmp_path / "r" / "smoke").rglob("*.json"))
    assert len(results) == len(plan)
    for path in results:
        assert check_result(path)[1] == "done"
    epochs = resolve_spec(plan[0], "smoke").train.epochs
    run_dirs = [d for d in (tmp_path / "rr" / "smoke").iterdir() if d.is_dir()]
    assert len(run_dirs) == len(plan)
    for d in run_dirs:  # no run directory written by two processes
        records = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in records if r["type"] == "epoch"] == list(range(epochs))


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
    env = {k: v for k, v in os.environ.items() if k != "GCA_DEBUG"}
    out = subprocess.run([sys.executable, "-m", "gca.experiments", *argv], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in out.stderr, out.stderr


def test_command_line_debug_shows_the_traceback():
    out = subprocess.run([sys.executable, "-m", "gca.experiments", "one", "--profile", "smoke", "--spec", "{bad"],
                         cwd=REPO_ROOT, env=dict(os.environ, GCA_DEBUG="1"), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "Traceback" in out.stderr


@pytest.mark.filterwarnings("ignore:linear probe:RuntimeWarning")
def test_a_result_written_meanwhile_is_reused_not_recomputed(tmp_path, monkeypatch):
    """Between a runner's plan and its subprocess's claim another runner may finish the run: the
    subprocess then reuses it and says so (the study log counts it as ``skip``, not ``done``)."""
    monkeypatch.setenv("GCA_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("GCA_RESULTS_DIR", str(tmp_path / "results"))
    spec = RunSpec("standard", "ince", 0, TINY)
    first = get_results([spec], "smoke", mode="compute")
    assert first.computed == 1, first.missing
    path = result_path(spec, "smoke", first.records[0]["key"])
    stamp = path.stat().st_mtime_ns
    record, computed = run_or_reuse(spec, "smoke")
    assert computed is False and record == first.records[0]
    out = subprocess.run([sys.executable, "-m", "gca.experiments", "one", "--profile", "smoke",
                          "--spec", json.dumps(spec.to_dict())], cwd=REPO_ROOT,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("done elsewhere"), out
    assert path.stat().st_mtime_ns == stamp  # not written again


@pytest.mark.filterwarnings("ignore:linear probe:RuntimeWarning")
def test_verify_recomputes_a_sample_elsewhere_and_reports_differences(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GCA_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("GCA_RESULTS_DIR", str(tmp_path / "results"))
    spec = RunSpec("standard", "ince", 0, TINY)
    res = get_results([spec], "smoke", mode="compute")
    assert res.computed == 1, res.missing
    cached = res.paths[0]
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "results").rglob("*")}

    assert main(["verify", "--profile", "smoke", "--sample", "2", "--seed", "3", "--out", str(tmp_path / "v")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["run", "metric", "cached", "recomputed", "difference"]
    rows = {line.split("  ")[0].strip(): line for line in out[1:-1]}
    assert {r for r in rows} == {"standard/ince seed 0"} and len(out) == 1 + 3 + 1  # one run, three metrics
    assert out[-1] == f"report: {tmp_path / 'v' / 'verify.json'}"
    report = json.loads((tmp_path / "v" / "verify.json").read_text())
    (run,) = report["runs"]
    assert run["status"] == "recomputed" and run["cached"] == str(cached)
    # the same code on the same machine with one thread: the same numbers, bit for bit
    for dotted in ("metrics.linear_accuracy", "metrics.knn_accuracy", "train.final_loss"):
        assert run["metrics"][dotted]["difference"] == 0.0, run["metrics"]
    assert report["machine"]["cpu"] and run["machine"]["cpu"] == run["cached_machine"]["cpu"]
    # the cache was not touched; the recomputation lives under --out
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "results").rglob("*")} == before
    assert check_result(run["recomputed"])[1] == "done"
    with pytest.raises(ValueError, match="sample"):
        verify("smoke", 0)
    monkeypatch.setenv("GCA_RESULTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="no current result"):
        verify("smoke", 1)


def test_the_package_imports_nothing_from_benchmarks_or_notebooks():
    code = ("import sys, gca.cli, gca.experiments, gca.study.cost, gca.study.report, gca.study.runner; "
            "bad = sorted(m for m in sys.modules if m.startswith(('bench', 'benchmarks', 'notebooks', 'gpu_'))); "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out
