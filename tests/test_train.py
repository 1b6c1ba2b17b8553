"""Pretraining loop (gca.train): schedule, every method, BYOL, determinism, checkpoints, errors."""

import json
import math
import os

import pytest
import torch
from torch import nn

from gca.config import METHODS, config_to_dict, resolve_config
from gca.methods import get_method, method_names
from gca.train import (
    CHECKPOINT_NAME,
    TrainStep,
    build_training,
    byol_loss,
    learning_rate,
    load_checkpoint,
    load_run,
    method_class,
    pretrain,
    read_metrics,
    save_checkpoint_atomic,
)


def tiny_config(method="gca-uot", **over):
    base = {
        "data.n_per_class": 6, "model.width": 4, "model.projector_hidden_dim": 16, "model.projector_out_dim": 8,
        "model.predictor_hidden_dim": 8, "train.epochs": 2, "train.batch_size": 20, "train.checkpoint_every": 1,
        "train.log_every": 1, "train.device": "cpu", "data.load_kwargs.size": 8,
    }
    base.update(over)
    return resolve_config("smoke", method=method, overrides=base)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


TRAINED = [m for m in METHODS if method_class(m).trains]


# --------------------------------------------------------------------------- schedule
def test_learning_rate_warmup_then_cosine_per_iteration():
    kw = dict(total_steps=110, warmup_steps=10, base_lr=0.4)
    assert learning_rate(0, **kw) == pytest.approx(0.04)
    assert learning_rate(9, **kw) == pytest.approx(0.4)
    assert learning_rate(10, **kw) == pytest.approx(0.4)
    assert learning_rate(60, **kw) == pytest.approx(0.2)  # half-way through the cosine
    assert learning_rate(109, **kw) == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    lrs = [learning_rate(k, **kw) for k in range(10, 110)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # decays at every iteration, not once per epoch
    assert learning_rate(109, **kw, final_lr_fraction=0.5) > 0.2
    assert learning_rate(50, **kw, schedule="constant") == 0.4
    for bad in [dict(total_steps=0), dict(warmup_steps=200), dict(schedule="step")]:
        with pytest.raises(ValueError):
            learning_rate(0, **{**kw, **bad})


def test_byol_loss_is_symmetric_normalised_mse():
    g = torch.Generator().manual_seed(0)
    p1, p2, t1, t2 = (torch.randn(5, 4, generator=g) for _ in range(4))
    n = lambda v: v / v.norm(dim=1, keepdim=True)  # noqa: E731
    expected = ((n(p1) - n(t2)).pow(2).sum(1).mean() + (n(p2) - n(t1)).pow(2).sum(1).mean())
    assert float(byol_loss(p1, p2, t1, t2)) == pytest.approx(float(expected), rel=1e-5)
    assert float(byol_loss(p1, p2, 3 * p2, 2 * p1)) == pytest.approx(0.0, abs=1e-6)
    t1.requires_grad_(True)
    byol_loss(p1.requires_grad_(True), p2, t1, t2).backward()
    assert t1.grad is None and p1.grad is not None  # no gradient into the target


# --------------------------------------------------------------------------- every method runs
@pytest.mark.parametrize("method", TRAINED)
def test_every_method_trains_and_writes_a_run_directory(method, tmp_path):
    cfg = tiny_config(method, **{"train.epochs": 1})
    res = pretrain(cfg, tmp_path, progress=False)
    assert len(res.epochs) == 1 and math.isfinite(res.epochs[0]["loss"])
    for name in ("config.json", "provenance.json", "metrics.jsonl", CHECKPOINT_NAME, "summary.json"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["loss"]["method"] == method and saved["model"]["in_channels"] == 1
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["seed"] == 0 and prov["data_checksum"] and prov["device"].startswith("cpu")
    steps = read_metrics(tmp_path, "step")
    assert [r["step"] for r in steps] == [0, 1, 2]  # 60 images / batch 20
    assert all(math.isfinite(r["loss"]) and r["lr"] > 0 for r in steps)
    _, model = load_run(tmp_path)
    assert not model.training


def test_training_changes_weights_and_byol_target_follows_ema(tmp_path):
    cfg = tiny_config("byol", **{"train.epochs": 1})
    torch.manual_seed(cfg.train.seed)
    res = pretrain(cfg, tmp_path, progress=False)
    model = res.model
    online = dict(model.online.named_parameters())
    target = dict(model.target.named_parameters())
    moved = [k for k in online if not torch.equal(online[k], target[k])]
    assert moved  # the target lags the online network
    assert all(not p.requires_grad for p in model.target.parameters())


def test_runs_are_deterministic(tmp_path):
    cfg = tiny_config("gca-ince")
    a = weights(pretrain(cfg, tmp_path / "a", progress=False).model)
    b = weights(pretrain(cfg, tmp_path / "b", progress=False).model)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    c = weights(pretrain(tiny_config("gca-ince", **{"train.seed": 1}), tmp_path / "c", progress=False).model)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


# --------------------------------------------------------------------------- checkpoints
def test_resume_after_stop_matches_uninterrupted(tmp_path):
    """A run stopped after epoch 1 (checkpoint written, process state lost) and resumed ends with
    the same weights and metrics as an uninterrupted run. The kill -9 test is in
    test_train_resume.py."""
    cfg = tiny_config("gca-uot", **{"train.epochs": 3, "train.checkpoint_every": 2})
    full = pretrain(cfg, tmp_path / "full", progress=False)
    part = pretrain(cfg, tmp_path / "part", progress=False, stop_after_epochs=1)
    assert len(part.epochs) == 1 and not load_checkpoint(tmp_path / "part" / CHECKPOINT_NAME)["finished"]
    assert not (tmp_path / "part" / "summary.json").exists()
    # torn metrics: a record of the lost epoch written after the checkpoint must be dropped
    with open(tmp_path / "part" / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"type": "step", "epoch": 1, "step": 3, "loss": 123.0, "lr": 0.1}) + "\n")
    resumed = pretrain(cfg, tmp_path / "part", resume=True, progress=False)
    assert resumed.resumed_from_epoch == 1
    assert json.loads((tmp_path / "part" / "provenance-resumed-at-epoch-1.json").read_text())["resumed_from_epoch"] == 1
    assert json.loads((tmp_path / "part" / "provenance.json").read_text())["resumed_from_epoch"] is None
    wa, wb = weights(full.model), weights(resumed.model)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rs]  # noqa: E731
    assert strip(read_metrics(tmp_path / "part")) == strip(read_metrics(tmp_path / "full"))
    assert [r["epoch"] for r in resumed.epochs] == [0, 1, 2]


def test_existing_run_needs_resume_and_same_config(tmp_path):
    cfg = tiny_config("ince", **{"train.epochs": 1})
    pretrain(cfg, tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="resume"):
        pretrain(cfg, tmp_path, progress=False)
    with pytest.raises(ValueError, match="optim.lr"):
        pretrain(tiny_config("ince", **{"train.epochs": 1, "optim.lr": 0.5}), tmp_path, resume=True, progress=False)
    again = pretrain(cfg, tmp_path, resume=True, progress=False)  # finished: returned as is
    assert again.resumed_from_epoch == 1


def test_atomic_checkpoint_survives_a_failed_write(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint_atomic({"epoch": 1, "w": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint_atomic({"epoch": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["epoch"] == 1
    with pytest.raises(FileNotFoundError, match="gca pretrain"):
        load_checkpoint(tmp_path / "missing.pt")


def test_unfinished_run_is_not_evaluated_silently(tmp_path):
    cfg = tiny_config("ince", **{"train.epochs": 1})
    pretrain(cfg, tmp_path, progress=False)
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    state["finished"] = False
    save_checkpoint_atomic(state, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(RuntimeError, match="--resume"):
        load_run(tmp_path)
    load_run(tmp_path, require_finished=False)


# --------------------------------------------------------------------------- failures are reported
class _NaNLoss(nn.Module):
    def forward(self, z1, z2):
        return (z1 * z2).sum() * float("nan")


def test_non_finite_loss_stops_the_run(tmp_path):
    cfg = tiny_config("ince", **{"train.epochs": 1})
    with pytest.raises(FloatingPointError, match="non-finite loss .* step 0"):
        pretrain(cfg, tmp_path, progress=False, loss_factory=lambda name, **kw: _NaNLoss())


def test_batch_larger_than_dataset_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        pretrain(tiny_config("ince", **{"train.batch_size": 1000}), tmp_path, progress=False)


def test_pretrain_rejects_non_config(tmp_path):
    with pytest.raises(TypeError, match="RunConfig"):
        pretrain({"train": {}}, tmp_path)


# --------------------------------------------------------------------------- target plans per batch
def _rot(method="gca-ince", **over):
    return tiny_config(method, **{"data.dataset": "rotated-digits", "train.epochs": 1, **over})


def test_domain_prior_target_changes_training_and_reduces_to_positives(tmp_path):
    base = pretrain(_rot(), tmp_path / "pos", progress=False)
    zero = pretrain(_rot(**{"loss.target": "domain_prior"}), tmp_path / "zero", progress=False)  # α = β = 0: Π
    prior = pretrain(_rot(**{"loss.target": "domain_prior", "loss.target_alpha": 0.5}), tmp_path / "prior",
                     progress=False)
    sup = pretrain(_rot(**{"loss.target": "supervised"}), tmp_path / "sup", progress=False)
    losses = {name: [r["loss"] for r in read_metrics(tmp_path / name, "step")] for name in ("pos", "zero", "prior", "sup")}
    assert losses["zero"] == pytest.approx(losses["pos"], rel=1e-5)
    assert losses["prior"][1:] != pytest.approx(losses["pos"][1:], rel=1e-3)
    assert all(math.isfinite(v) for v in losses["prior"] + losses["sup"])
    w0, w1 = weights(base.model), weights(prior.model)
    assert any(not torch.allclose(w0[k], w1[k]) for k in w0 if w0[k].is_floating_point())
    assert sup.epochs and zero.epochs


def test_target_plan_errors(tmp_path):
    with pytest.raises(ValueError, match="domain labels"):
        pretrain(tiny_config("gca-ince", **{"loss.target": "domain_prior"}), tmp_path, progress=False)  # digits
    with pytest.raises(ValueError, match="byol"):
        tiny_config("byol", **{"loss.target": "supervised"})
    with pytest.raises(ValueError, match="positive-pair target only"):
        tiny_config("iot-uni", **{"loss.target": "supervised"})
    with pytest.raises(ValueError, match="only with loss.target=domain_prior"):
        tiny_config("gca-ince", **{"loss.target_alpha": 0.1})
    with pytest.raises(ValueError, match="target_beta"):
        tiny_config("gca-ince", **{"loss.target": "domain_prior", "loss.target_beta": -1})


def test_lazy_dataset_batches_come_from_background_decoding():
    """Folder datasets (ImageNet-100) are decoded per batch by DataLoader workers, in order."""
    from gca.train.batches import BatchSource as _BatchSource

    class Lazy:
        name = "fake-lazy"

        def __len__(self):
            return 10

        def load(self, idx):
            idx = torch.as_tensor(idx)
            return idx.view(-1, 1, 1, 1).expand(-1, 3, 2, 2).to(torch.uint8).contiguous()

    batches = [torch.tensor([3, 1]), torch.tensor([9, 0]), torch.tensor([5, 5])]
    for workers in (0, 2):
        got = list(_BatchSource(Lazy(), torch.device("cpu"), workers).iterate(batches))
        assert [b[:, 0, 0, 0].tolist() for b in got] == [[3, 1], [9, 0], [5, 5]]
    with pytest.raises(TypeError, match="neither"):
        _BatchSource(object(), torch.device("cpu"), 0)
