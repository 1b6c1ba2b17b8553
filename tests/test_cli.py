"""The command line (gca.cli, python -m gca): smoke end to end, errors, config, profiles, data."""

import json
import os
import subprocess
import sys
import time

import pytest

from gca.cli import main


def test_smoke_end_to_end_is_well_above_chance(tmp_path, capsys):
    """`gca pretrain --method gca-uot --dataset digits --profile smoke --out DIR` then `gca evaluate DIR`."""
    run = tmp_path / "smoke"
    start = time.perf_counter()
    assert main(["pretrain", "--method", "gca-uot", "--dataset", "digits", "--profile", "smoke", "--out", str(run),
                 "--no-progress"]) == 0
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    seconds = time.perf_counter() - start
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    record = json.loads((run / "eval.json").read_text())
    metrics = record["metrics"]
    assert summary["linear_accuracy"] == metrics["linear_accuracy"]
    # 10 balanced classes: chance is 0.1
    assert metrics["linear_accuracy"] > 0.6 and metrics["knn_accuracy"] > 0.6, metrics
    from gca.data import load_dataset

    assert metrics["n_test"] == len(load_dataset("digits", "test")) and metrics["linear"]["weight_decay"] in record["eval_config"]["probe_weight_decays"]
    assert -4.5 < metrics["uniformity"] < 0 and 0 < metrics["alignment"] < 4
    assert record["provenance"]["data_checksum"] == metrics["test_checksum"]
    print(f"smoke pretrain+evaluate: {seconds:.1f} s, linear {metrics['linear_accuracy']:.3f}, "
          f"kNN {metrics['knn_accuracy']:.3f}")


def test_python_dash_m_and_console_script_help():
    out = subprocess.run([sys.executable, "-m", "gca", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "pretrain" in out.stdout and "evaluate" in out.stdout and "data" in out.stdout
    script = os.path.join(os.path.dirname(sys.executable), "gca")
    if os.path.exists(script):
        out = subprocess.run([script, "profiles"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "smoke:" in out.stdout and "paper:" in out.stdout


@pytest.mark.parametrize(
    "argv, match",
    [
        (["pretrain", "--out", "X", "train.epoch=3"], "unknown option 'train.epoch'"),
        (["pretrain", "--out", "X", "--set", "optim.lr=fast"], "optim.lr expects a number"),
        (["pretrain", "--out", "X", "--dataset", "imagenet1k"], "unknown dataset"),
        (["pretrain", "--out", "X", "loss.hparams.epsilon=0"], "epsilon"),
        (["pretrain", "--out", "X", "--epochs", "0"], "train.epochs must be >= 1"),
    ],
)
def test_invalid_options_exit_2_with_message(argv, match, capsys, tmp_path):
    argv = [a if a != "X" else str(tmp_path / "run") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err
    import re

    assert re.search(match, err), err
    assert not (tmp_path / "run").exists()  # nothing written for an invalid configuration


def test_argparse_errors_exit_2(capsys):
    for argv in (["pretrain", "--out", "x", "--profile", "laptop"], ["pretrain", "--out", "x", "--method", "moco"],
                 ["pretrain", "--out", "x", "notanoverride"], ["frobnicate"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


def test_config_and_profiles_commands(capsys):
    assert main(["config", "--profile", "paper", "--method", "gca-ince", "--set", "loss.hparams.n_iter=5"]) == 0
    out = json.loads(capsys.readouterr().out)
    loss = out["config"]["loss"]
    assert (loss["method"], loss["hparams"], loss["target"]) == ("gca-ince", {"n_iter": 5}, "positive")
    assert out["config"]["model"]["backbone"] == "resnet18" and len(out["config_hash"]) == 16
    assert main(["profiles"]) == 0
    text = capsys.readouterr().out
    assert "smoke:" in text and "data.dataset = digits" in text and "cpu:" in text


def test_evaluate_rejects_pretraining_overrides_and_missing_runs(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["pretrain", "--profile", "smoke", "--out", str(run), "--no-progress", "--epochs", "1",
                 "data.n_per_class=6", "data.load_kwargs.size=8", "model.width=4", "train.batch_size=20"]) == 0
    assert main(["evaluate", str(run), "--no-progress", "--set", "optim.lr=0.1"]) == 2
    assert "only eval.*" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --resume uses the run's own configuration
        main(["pretrain", "--resume", "--method", "ince", "--out", str(run)])
    assert main(["pretrain", "--out", str(run), "--no-progress", "--epochs", "1", "data.n_per_class=6",
                 "data.load_kwargs.size=8", "model.width=4", "train.batch_size=20"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_data_commands(tmp_path, capsys):
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("cifar10", "digits", "imagenet100", "rotated-digits"):
        assert name in out
    # no network here (or no such files yet): fetch fails fast, with a message, exit status 1
    start = time.perf_counter()
    code = main(["data", "fetch", "cifar10", "--data-dir", str(tmp_path), "--timeout", "2"])
    err = capsys.readouterr().err
    if code == 0:  # pragma: no cover - a machine with internet access
        assert (tmp_path / "cifar-10-batches-py").is_dir()
    else:
        assert code == 1 and "could not download" in err
        assert time.perf_counter() - start < 60
