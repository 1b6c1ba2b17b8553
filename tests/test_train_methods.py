"""The method protocol of gca.train: dispatch by kind, calibration rows, pairing of methods by seed."""

import json
import math

import pytest
import torch

from gca.config import config_to_dict, resolve_config
from gca.eval import evaluate_run
from gca.methods import get_method, method_names
from gca.models import SupervisedModel
from gca.train import (
    AlignmentMethod,
    BYOLMethod,
    CHECKPOINT_NAME,
    SupervisedMethod,
    TrainStep,
    UntrainedMethod,
    build_training,
    init_seed,
    load_checkpoint,
    load_run,
    method_class,
    pretrain,
    read_metrics,
)
from tests.test_train import tiny_config


def _backbone(model):
    return {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}


def test_every_registered_method_has_a_training_implementation_of_its_kind():
    expected = {"alignment": AlignmentMethod, "byol": BYOLMethod}
    for name in method_names():
        cls = method_class(name)
        kind = get_method(name).kind
        assert cls is expected[kind] if kind in expected else cls in (SupervisedMethod, UntrainedMethod), name
    assert {method_class(n) for n in method_names("calibration")} == {SupervisedMethod, UntrainedMethod}
    with pytest.raises(ValueError, match="unknown method"):
        method_class("nope")
    with pytest.raises(TypeError, match="RunConfig"):
        build_training({"loss": {"method": "ince"}}, in_channels=1, device=torch.device("cpu"))


def test_init_streams_are_distinct_and_validated():
    seeds = {init_seed(0, p) for p in ("backbone", "projector", "predictor", "classifier")}
    assert len(seeds) == 4 and init_seed(1, "backbone") != init_seed(0, "backbone")
    with pytest.raises(ValueError, match="part must be one of"):
        init_seed(0, "head")
    with pytest.raises(TypeError, match="seed must be an int"):
        init_seed(0.5, "backbone")


def test_pretrain_leaves_the_callers_config_unchanged(tmp_path):
    cfg = tiny_config("ince", **{"train.epochs": 1})
    before = config_to_dict(cfg)
    res = pretrain(cfg, tmp_path, progress=False)
    assert config_to_dict(cfg) == before and cfg.model.in_channels is None
    assert res.config.model.in_channels == 1  # the resolved copy, as recorded in config.json
    assert json.loads((tmp_path / "config.json").read_text()) == config_to_dict(res.config)


# --------------------------------------------------------------------------- pairing (issue 12 item 2)
def _first_step(method, monkeypatch, tmp_path, seed=0):
    """Initial backbone, views and batch rows of the first step that pretrain takes for ``method``."""
    seen = {}

    class Stop(Exception):
        pass

    def spy(self, views, step, inputs=None):
        seen.update(backbone=_backbone(self.model), views=[v.clone() for v in views], step=step)
        raise Stop

    monkeypatch.setattr(TrainStep, "step", spy)
    with pytest.raises(Stop):
        pretrain(tiny_config(method, **{"train.seed": seed}), tmp_path / f"{method}-{seed}", progress=False)
    return seen


def test_methods_of_a_seed_start_from_the_same_backbone_and_draw_the_same_views(monkeypatch, tmp_path):
    """Two alignment methods (and BYOL and the supervised row, whose extra heads must not shift the
    backbone's random stream) see the same initial backbone and the same first views."""
    runs = {m: _first_step(m, monkeypatch, tmp_path) for m in ("ince", "gca-uot", "byol", "supervised")}
    ref = runs["ince"]
    assert ref["step"] == 0
    for method, seen in runs.items():
        for k, v in ref["backbone"].items():
            assert torch.equal(seen["backbone"][k], v), (method, k)
        for a, b in zip(seen["views"], ref["views"]):
            assert torch.equal(a, b), method
    other = _first_step("ince", monkeypatch, tmp_path, seed=1)  # the streams do depend on the seed
    assert not torch.equal(other["views"][0], ref["views"][0])
    assert any(not torch.equal(other["backbone"][k], v) for k, v in ref["backbone"].items() if v.is_floating_point())


def test_initial_backbone_does_not_depend_on_the_global_rng():
    cfg = tiny_config("gca-ince")
    torch.manual_seed(123)
    a = build_training(cfg, in_channels=1, device=torch.device("cpu"))
    torch.rand(1000)  # anything drawn before must not matter
    b = build_training(tiny_config("byol"), in_channels=1, device=torch.device("cpu"))
    for k, v in _backbone(a.model).items():
        assert torch.equal(_backbone(b.model)[k], v), k
    linear = lambda m: [p for p in m.projector.parameters() if p.dim() == 2]  # noqa: E731  (BYOL's has BN too)
    assert len(linear(a.model)) == len(linear(b.model)) == 2
    assert all(torch.equal(p, q) for p, q in zip(linear(a.model), linear(b.model)))


def test_byol_projector_has_batch_norm_as_configured():
    has_bn = lambda m: any(isinstance(x, torch.nn.BatchNorm1d) for x in m.projector.modules())  # noqa: E731
    for profile in ("smoke", "cpu", "paper"):
        assert resolve_config(profile, method="byol", validate=False).model.byol_projector_batch_norm, profile
    assert has_bn(BYOLMethod.build_model(tiny_config("byol"), in_channels=1))
    assert not has_bn(BYOLMethod.build_model(tiny_config("byol", **{"model.byol_projector_batch_norm": False}),
                                             in_channels=1))
    assert not has_bn(AlignmentMethod.build_model(tiny_config("ince"), in_channels=1))  # BYOL's option only


# --------------------------------------------------------------------------- calibration rows
def test_untrained_row_saves_the_initial_weights_and_is_evaluated_like_any_run(tmp_path):
    res = pretrain(tiny_config("untrained"), tmp_path / "u", progress=False)
    assert res.epochs == [] and read_metrics(tmp_path / "u") == []
    ckpt = load_checkpoint(tmp_path / "u" / CHECKPOINT_NAME)
    assert ckpt["finished"] and ckpt["epoch"] == 0 and ckpt["method"] == "untrained"
    summary = json.loads((tmp_path / "u" / "summary.json").read_text())
    assert summary["steps"] == 0 and summary["final_loss"] is None
    initial = build_training(tiny_config("ince"), in_channels=1, device=torch.device("cpu")).model
    _, model = load_run(tmp_path / "u")
    for k, v in _backbone(initial).items():
        assert torch.equal(_backbone(model)[k], v), k
    metrics = evaluate_run(tmp_path / "u", device="cpu", progress=False)
    assert 0.0 <= metrics["linear_accuracy"] <= 1.0 and (tmp_path / "u" / "eval.json").is_file()
    again = pretrain(tiny_config("untrained"), tmp_path / "u", resume=True, progress=False)  # finished: as is
    assert again.resumed_from_epoch == 0


def test_supervised_row_trains_a_linear_head_with_cross_entropy(tmp_path):
    cfg = tiny_config("supervised", **{"train.epochs": 3})
    res = pretrain(cfg, tmp_path / "s", progress=False)
    assert isinstance(res.model, SupervisedModel) and res.model.classifier.out_features == 10
    losses = [r["loss"] for r in res.epochs]
    assert all(math.isfinite(v) for v in losses) and losses[0] < 2 * math.log(10)
    assert losses[-1] < losses[0]  # cross-entropy on the labels goes down
    initial = build_training(cfg, in_channels=1, device=torch.device("cpu"), n_classes=10).model
    # the projector is kept at its initial weights (evaluated, never trained); the backbone moved
    for k, v in initial.projector.state_dict().items():
        assert torch.equal(res.model.projector.state_dict()[k], v), k
    assert any(not torch.equal(_backbone(res.model)[k], v) for k, v in _backbone(initial).items()
               if v.is_floating_point())
    _, model = load_run(tmp_path / "s")
    assert isinstance(model, SupervisedModel)
    assert evaluate_run(tmp_path / "s", device="cpu", progress=False)["linear_accuracy"] >= 0.0
    with pytest.raises(ValueError, match="number of classes"):
        build_training(cfg, in_channels=1, device=torch.device("cpu"))


def test_calibration_rows_take_no_loss_settings_or_target_plans():
    with pytest.raises(ValueError, match="takes no loss.hparams"):
        tiny_config("supervised", **{"loss.hparams.epsilon": 0.5})
    with pytest.raises(ValueError, match="has no target plan"):
        tiny_config("untrained", **{"loss.target": "supervised"})
