"""Kill a real pretraining process after a checkpoint, resume it, compare with an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import torch

from gca.train import CHECKPOINT_NAME, load_checkpoint, pretrain, read_metrics
from tests.test_train import tiny_config

ARGS = ["--method", "gca-uot", "--dataset", "digits", "--profile", "smoke", "--device", "cpu", "--no-progress",
        "data.n_per_class=6", "data.load_kwargs.size=8", "model.width=4", "model.projector_hidden_dim=16",
        "model.projector_out_dim=8", "train.batch_size=20", "train.checkpoint_every=1", "train.log_every=1",
        "train.threads=1"]  # bitwise equality needs the same thread count (float reduction order)
EPOCHS = 12


def test_kill_after_checkpoint_then_resume_reaches_uninterrupted_result(tmp_path):
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gca", "pretrain", "--out", str(run), *ARGS,
                             f"train.epochs={EPOCHS}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt_path = run / CHECKPOINT_NAME
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if ckpt_path.exists() and load_checkpoint(ckpt_path)["epoch"] >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)  # no clean-up, mid-epoch
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = load_checkpoint(ckpt_path)
    assert not killed_at["finished"] and 2 <= killed_at["epoch"] < EPOCHS

    from gca.cli import main

    assert main(["pretrain", "--resume", "--out", str(run), "--no-progress"]) == 0
    final = load_checkpoint(ckpt_path)
    assert final["finished"] and final["epoch"] == EPOCHS

    cfg = tiny_config("gca-uot", **{"train.epochs": EPOCHS, "train.threads": 1})
    ref = pretrain(cfg, tmp_path / "uninterrupted", progress=False)
    ref_state = ref.model.state_dict()
    for k, v in final["model"].items():
        assert torch.equal(v, ref_state[k]), k
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rs]  # noqa: E731
    assert strip(read_metrics(run)) == strip(read_metrics(tmp_path / "uninterrupted"))
