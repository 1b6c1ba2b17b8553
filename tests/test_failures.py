"""Failure behaviour (issue 10): kills, full disks, damaged files, divergence, typos, untrusted checkpoints.

Each test reproduces one way a run goes wrong and checks the promised outcome: nothing lost, the
problem named in one line with the fix, a non-zero exit, no traceback unless ``--debug``.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gca import train as gtrain
from gca.cli import main
from gca.config import resolve_config

TINY = ["--dataset", "digits", "--profile", "smoke", "--no-progress", "train.epochs=2", "data.n_per_class=6",
        "model.width=4", "model.projector_hidden_dim=16", "model.projector_out_dim=8",
        "model.predictor_hidden_dim=8", "train.batch_size=20", "train.checkpoint_every=1", "data.load_kwargs.size=8"]


def _tiny(method="ince", **over):
    base = {"data.n_per_class": 6, "model.width": 4, "model.projector_hidden_dim": 16, "model.projector_out_dim": 8,
            "model.predictor_hidden_dim": 8, "train.epochs": 2, "train.batch_size": 20, "train.checkpoint_every": 1,
            "train.log_every": 1, "train.device": "cpu", "data.load_kwargs.size": 8}
    base.update(over)
    return resolve_config("smoke", method=method, overrides=base)


def _one_line_error(capsys, status, code, *needles):
    err = capsys.readouterr().err.strip()
    assert status == code, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# ------------------------------------------------------------------------------------------------
# 4. a torn last line of metrics.jsonl
# ------------------------------------------------------------------------------------------------
def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
    run = tmp_path / "run"
    gtrain.pretrain(_tiny(), run, progress=False, stop_after_epochs=1)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"type": "epoch", "epoch": 1, "lo')  # a kill in the middle of a write
    with pytest.warns(RuntimeWarning, match="torn last line"):
        res = gtrain.pretrain(_tiny(), run, resume=True, progress=False)
    assert [r["epoch"] for r in res.epochs] == [0, 1]
    assert [r["epoch"] for r in gtrain.read_metrics(run, "epoch")] == [0, 1]


def test_damaged_metrics_line_is_named(tmp_path):
    run = tmp_path / "run"
    gtrain.pretrain(_tiny(), run, progress=False, stop_after_epochs=1)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines.insert(1, "{not json")
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2 is not valid JSON"):
        gtrain.pretrain(_tiny(), run, resume=True, progress=False)


# ------------------------------------------------------------------------------------------------
# 5. divergence: one message, exit 1, for every method
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gca-uot", "ince", "gca-ince", "byol"])
def test_divergence_is_a_runtime_failure_not_an_input_error(tmp_path, capsys, method):
    status = main(["pretrain", "--method", method, *TINY, "--lr", "1e30", "optim.warmup_epochs=0",
                   "--out", str(tmp_path / "x")])
    _one_line_error(capsys, status, 1, "non-finite loss at step", "(epoch 0, lr", "lower optim.lr")


# ------------------------------------------------------------------------------------------------
# 6. one-line errors naming the file or value
# ------------------------------------------------------------------------------------------------
def _cifar_dir(tmp_path) -> Path:
    base = tmp_path / "data" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(base / name, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                         "labels": [k % 10 for k in range(20)]}, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{k}" for k in range(10)]}, fh)
    return base


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_damaged_cifar_pickle_is_named(tmp_path, capsys, damage):
    base = _cifar_dir(tmp_path)
    bad = base / "data_batch_3"
    raw = bad.read_bytes()
    garbage = np.random.default_rng(5).integers(0, 256, 500, dtype=np.uint8).tobytes()  # seeded: the same bytes on every run
    bad.write_bytes({"truncated": raw[: len(raw) // 2], "empty": b"", "garbage": garbage,
                     "huge-length": b"\x80\x04\x8d" + b"\xff" * 8}[damage])
    status = main(["pretrain", "--method", "ince", "--profile", "smoke", "--dataset", "cifar10", "--data-dir",
                   str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--no-progress"])
    _one_line_error(capsys, status, 2, str(bad), "is damaged", "delete it")


@pytest.mark.xfail(strict=True, reason="known bug: a pickle opcode announcing an impossible length raises OverflowError, "
                   "which gca.data.loaders.cifar.unpickle does not yet turn into DatasetCorruptError (found by the "
                   "formerly unseeded garbage case); the fix changes a fingerprinted function and is scheduled with the "
                   "next recompute of the study")
def test_damaged_cifar_pickle_with_an_impossible_length_is_named(tmp_path, capsys):
    test_damaged_cifar_pickle_is_named(tmp_path, capsys, "huge-length")


def test_truncated_fashion_mnist_gz_is_named(tmp_path):
    from gca.data import DatasetCorruptError, read_idx

    path = tmp_path / "train-images-idx3-ubyte.gz"
    payload = gzip.compress(bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
                            + bytes(2 * 28 * 28))
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DatasetCorruptError, match="train-images-idx3-ubyte.gz is damaged"):
        read_idx(path)


def test_infinite_warmup_is_rejected_by_validation(tmp_path, capsys):
    status = main(["pretrain", "--method", "ince", *TINY, "optim.warmup_epochs=inf", "--out", str(tmp_path / "r")])
    _one_line_error(capsys, status, 2, "optim.warmup_epochs must be a finite number")
    assert not (tmp_path / "r").exists()


def test_truncated_config_json_is_named(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "ince", *TINY, "--stop-after-epochs", "1", "--out", str(run)]) == 0
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text[: len(text) // 2])
    capsys.readouterr()
    status = main(["pretrain", "--resume", "--out", str(run), "--no-progress"])
    _one_line_error(capsys, status, 2, "config.json", "is not valid JSON", "restore it")


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "ince", *TINY, "--stop-after-epochs", "1", "--out", str(run)]) == 0
    before = (run / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", full_disk)
    capsys.readouterr()
    status = main(["pretrain", "--resume", "--out", str(run), "--no-progress"])
    _one_line_error(capsys, status, 1, "could not write the checkpoint", "free disk space", "--resume")
    assert (run / "checkpoint.pt").read_bytes() == before
    assert not list(run.glob(".*.tmp-*"))  # no orphan keeps the disk full


def test_debug_shows_the_traceback(tmp_path):
    env = dict(os.environ, GCA_DEBUG="1")
    out = subprocess.run([sys.executable, "-m", "gca", "pretrain", "--resume", "--out", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0 and "Traceback" in out.stderr


# ------------------------------------------------------------------------------------------------
# 7. orphaned temporary files
# ------------------------------------------------------------------------------------------------
def test_orphaned_checkpoint_temp_files_are_removed_on_resume(tmp_path):
    run = tmp_path / "run"
    gtrain.pretrain(_tiny(), run, progress=False, stop_after_epochs=1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = run / f".checkpoint.pt.tmp-{int(dead.stdout)}"
    orphan.write_bytes(b"x" * 1000)
    live = run / f".checkpoint.pt.tmp-{os.getppid()}"  # a process that still runs: not ours to delete
    live.write_bytes(b"y")
    gtrain.pretrain(_tiny(), run, resume=True, progress=False)
    assert not orphan.exists() and live.exists()


# ------------------------------------------------------------------------------------------------
# 8. silent overwrites
# ------------------------------------------------------------------------------------------------
def test_resume_of_a_missing_run_fails(tmp_path, capsys):
    status = main(["pretrain", "--resume", "--out", str(tmp_path / "tpyo"), "--no-progress"])
    _one_line_error(capsys, status, 2, "holds no run", "check the path")
    assert not (tmp_path / "tpyo").exists()
    with pytest.raises(FileNotFoundError, match="holds no run"):
        gtrain.pretrain(_tiny(), tmp_path / "tpyo2", resume=True, progress=False)


def test_out_that_is_not_a_run_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    status = main(["pretrain", "--method", "ince", *TINY, "--out", str(out)])
    _one_line_error(capsys, status, 2, "is not empty")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    gtrain.pretrain(_tiny(), tmp_path / "empty", progress=False)  # an empty (or absent) directory is fine


# ------------------------------------------------------------------------------------------------
# 10. untrusted checkpoints
# ------------------------------------------------------------------------------------------------
class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('GCA_EVIL_MARKER', '/tmp/gca-evil-marker')}",))


def test_checkpoint_carrying_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "executed"
    monkeypatch.setenv("GCA_EVIL_MARKER", str(marker))
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1, "model": {}, "payload": _Evil()}, path)
    with pytest.raises(ValueError, match="not a plain gca checkpoint"):
        gtrain.load_checkpoint(path)
    assert not marker.exists()


def test_real_checkpoints_load_with_weights_only(tmp_path):
    run = tmp_path / "run"
    gtrain.pretrain(_tiny("byol"), run, progress=False)  # BYOL: the richest state (EMA target)
    state = gtrain.load_checkpoint(run / "checkpoint.pt")
    assert state["finished"] and state["epoch"] == 2
    gtrain.load_run(run)


# ------------------------------------------------------------------------------------------------
# 11. minor
# ------------------------------------------------------------------------------------------------
def test_resume_writes_a_missing_summary(tmp_path):
    run = tmp_path / "run"
    gtrain.pretrain(_tiny(), run, progress=False)
    (run / "summary.json").unlink()  # killed between the final checkpoint and the summary
    gtrain.pretrain(_tiny(), run, resume=True, progress=False)
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2


def test_stop_after_epochs_reports_the_epochs_run(tmp_path, capsys):
    assert main(["pretrain", "--method", "ince", *TINY, "train.epochs=3", "--stop-after-epochs", "1",
                 "--out", str(tmp_path / "r")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and summary["epochs_planned"] == 3


def test_bad_corruption_names_fail_before_the_probe(tmp_path, monkeypatch):
    from gca import eval as geval

    run = tmp_path / "run"
    gtrain.pretrain(_tiny(), run, progress=False)

    def not_reached(*a, **k):
        raise AssertionError("features were extracted before the corruption names were checked")

    monkeypatch.setattr(geval, "extract_features", not_reached)
    with pytest.raises(ValueError, match="unknown corruption"):
        geval.evaluate_run(run, device="cpu", overrides=["eval.corruptions=gaussian_noise,nope"], progress=False)


def test_evaluate_an_unfinished_run_with_the_offered_flag(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "ince", *TINY, "--stop-after-epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    status = main(["evaluate", str(run), "--no-progress"])
    _one_line_error(capsys, status, 1, "--allow-unfinished")
    assert main(["evaluate", str(run), "--no-progress", "--allow-unfinished"]) == 0
