"""Distributed data parallel with 2 CPU processes (torchrun, gloo) equals one process on the global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from gca.train import CHECKPOINT_NAME, load_checkpoint, pretrain, read_metrics
from tests.test_train import tiny_config

# Group norm and no augmentation: then the 2-process run must reproduce the 1-process run on the
# same global batch (BatchNorm statistics and per-rank augmentation streams would differ by design).
OVERRIDES = {"model.norm": "group", "data.augment": "none", "train.epochs": 2, "train.threads": 1}


def _run_ddp(method, out):
    args = [f"{k}={v}" for k, v in {
        "data.n_per_class": 6, "data.load_kwargs.size": 8, "model.width": 4, "model.projector_hidden_dim": 16,
        "model.projector_out_dim": 8, "model.predictor_hidden_dim": 8, "train.batch_size": 20,
        "train.checkpoint_every": 1, "train.log_every": 1, **OVERRIDES}.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gca",
           "pretrain", "--method", method, "--dataset", "digits", "--profile", "smoke", "--device", "cpu",
           "--no-progress", "--out", str(out), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["world_size"] == 2


@pytest.mark.slow  # three Python processes (torchrun + 2 ranks): ~10 s of CPU
def test_two_process_ddp_matches_single_process(tmp_path):
    """Global-batch loss (gather with gradients) + DDP gradient averaging = the 1-process gradient."""
    method, out = "gca-uot", tmp_path / "ddp"
    _run_ddp(method, out)
    ddp_state = load_checkpoint(out / CHECKPOINT_NAME)["model"]

    single = pretrain(tiny_config(method, **OVERRIDES), tmp_path / "single", progress=False)
    ref = single.model.state_dict()
    for k, v in ref.items():
        torch.testing.assert_close(ddp_state[k], v, rtol=1e-4, atol=1e-5, msg=k)
    ddp_losses = [r["loss"] for r in read_metrics(out, "step")]
    ref_losses = [r["loss"] for r in read_metrics(tmp_path / "single", "step")]
    assert len(ddp_losses) == len(ref_losses) == 6
    assert ddp_losses == pytest.approx(ref_losses, rel=1e-5)


@pytest.mark.slow
def test_two_process_ddp_byol_runs(tmp_path):
    # BYOL's predictor has BatchNorm1d (per-process statistics on CPU, where SyncBatchNorm is
    # unavailable), so only completion and finite losses are checked here.
    _run_ddp("byol", tmp_path / "ddp")
    losses = [r["loss"] for r in read_metrics(tmp_path / "ddp", "step")]
    assert len(losses) == 6 and all(l == l and abs(l) < 1e6 for l in losses)
