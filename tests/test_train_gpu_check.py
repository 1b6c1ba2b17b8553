"""The GPU check script and the step benchmark stay runnable: tiny sizes on the CPU."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_tiny_on_cpu_writes_a_report(tmp_path, capsys):
    gpu_check = _load("gpu_check")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert gpu_check.main(["--tiny", "--device", "cpu", "--out-dir", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    (report_path,) = tmp_path.glob("gpu_check-tiny-*.json")
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["device_name"].startswith("cpu")
    from gca.losses import LOSS_NAMES

    assert set(report["losses_match_cpu_float64"]) == set(LOSS_NAMES) | {"byol"}
    assert all(v["value_rel_err"] == 0.0 for v in report["losses_match_cpu_float64"].values())  # CPU vs CPU
    assert {"ince/bfloat16", "gca-uot/float16", "byol/bfloat16"} <= set(report["amp_steps"])
    assert report["loss_cost"]["ratio_to_ince"]["ince"] == 1.0 and report["loss_cost"]["n_rows"] == 64
    assert set(report["step_cost"]["step_ratio"]) == {"ince", "gca-ince", "gca-uot"}
    assert (tmp_path / report_path.name.replace(".json", ".md")).is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_check_without_gpu_says_so(capsys):
    assert _load("gpu_check").main(["--device", "cpu"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_gpu_check_shell_wrapper_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")]).returncode == 0


def test_bench_step_quick(tmp_path):
    bench = _load("bench_step")
    assert bench.main(["--quick", "--threads", "1", "--out", str(tmp_path / "step")]) == 0
    res = json.loads((tmp_path / "step.json").read_text())
    assert res["step_ratio"]["ince"] == 1.0 and res["batch"] == 16
    assert "| gca-uot |" in (tmp_path / "step.md").read_text()


def test_gpu_campaign_dry_run_end_to_end_and_resumes(tmp_path):
    # what `make gpu-campaign` runs on a GPU, at toy sizes on the CPU: every stage, JSON under --out
    cmd = [sys.executable, str(BENCH / "gpu_campaign.py"), "--dry-run", "--out", str(tmp_path / "out"),
           "--work-dir", str(tmp_path / "work"), "--commit", "abc123"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=170)
    assert first.returncode == 0, first.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "campaign.json").read_text())
    assert report["dry_run"] and report["commit"] == "abc123" and not report.get("errors")
    assert set(report["stages"]) == {"cost", "step", "train"}
    for size in report["stages"]["cost"]["sizes"].values():
        assert set(size["fwd_bwd_ms"]) == {"ince", "gca-ince", "gca-uot", "gca-ince/checked", "gca-uot/checked"}
        assert all(v > 0 for v in size["fwd_bwd_ms"].values())
    train = report["stages"]["train"]
    assert train["epochs"] >= 1 and set(train["methods"]) == {"ince", "gca-ince", "gca-uot"}
    for r in train["methods"].values():
        assert 0.0 <= r["linear_accuracy"] <= 1.0 and len(r["loss_curve"]) == train["epochs"]
    assert report["not_run"] and (tmp_path / "out" / "campaign.md").read_text().startswith("# GPU campaign (dry run")
    # a rerun resumes: every stage is already done, nothing is recomputed
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=170)
    assert second.returncode == 0 and "[campaign] training" not in second.stdout
    assert json.loads((tmp_path / "out" / "campaign.json").read_text())["stages"] == report["stages"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_campaign_without_gpu_says_so(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH / "gpu_campaign.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no CUDA device" in out.stderr
