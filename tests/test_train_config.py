"""Run configuration (gca.config): profiles, overrides, validation, serialisation, the paper profile."""

import pickle

import numpy as np
import pytest

from gca.config import (
    METHODS,
    PROFILES,
    RunConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    resolve_config,
    run_config_hash,
    validate_config,
)


def test_paper_profile_is_the_papers_configuration():
    c = resolve_config("paper", method="gca-uot", dataset="cifar10")
    assert (c.model.backbone, c.model.stem) == ("resnet18", "cifar")
    assert (c.model.projector_hidden_dim, c.model.projector_out_dim, c.model.projector_bias) == (2048, 128, False)
    assert not c.model.projector_batch_norm
    assert (c.train.batch_size, c.train.epochs) == (512, 500)
    assert (c.optim.name, c.optim.momentum, c.optim.nesterov, c.optim.weight_decay, c.optim.schedule) == (
        "sgd", 0.9, True, 1e-6, "cosine")
    assert c.data.augment == "simclr" and c.loss.hparams == {}  # loss defaults = the paper's (in gca.losses)
    i = resolve_config("paper", method="ince", dataset="imagenet100")
    assert (i.model.backbone, i.model.stem, i.data.image_size, i.train.batch_size, i.train.epochs) == (
        "resnet50", "imagenet", 224, 128, 200)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_resolves_for_every_method(profile, method):
    c = resolve_config(profile, method=method)
    assert c.profile == profile and c.loss.method == method


def test_config_methods_are_the_registry():
    from gca.methods import METHOD_NAMES

    assert METHODS == METHOD_NAMES


def test_overrides_are_typed_and_win_over_profile():
    c = resolve_config("smoke", overrides=["train.epochs=3", "optim.lr=1e-2", "train.amp=false",
                                           "model.width=none", "eval.probe_weight_decays=0,1e-3",
                                           "loss.hparams.epsilon=0.3", "loss.hparams.rho=0.2,inf",
                                           "loss.hparams.layout=cross"])
    assert c.train.epochs == 3 and c.optim.lr == 0.01 and c.train.amp is False and c.model.width is None
    assert c.eval.probe_weight_decays == (0.0, 1e-3)
    assert c.loss.hparams == {"epsilon": 0.3, "rho": [0.2, float("inf")], "layout": "cross"}
    d = apply_overrides(c, {"train.epochs": 7, "optim.nesterov": "no"})
    assert d.train.epochs == 7 and d.optim.nesterov is False and c.train.epochs == 3  # copy, not in place


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.epoch=3", "unknown option 'train.epoch'.*epochs"),
        ("trian.epochs=3", "first part must be one of"),
        ("train.epochs=three", "expects an integer"),
        ("train.epochs=0", "train.epochs must be >= 1"),
        ("optim.name=lars", "must be one of"),
        ("optim.lr=-1", "optim.lr"),
        ("train.amp=maybe", "true/false"),
        ("model.backbone=vgg", "model.backbone"),
        ("data.dataset=imagenet1k", "unknown dataset"),
        ("data.augment=mixup", "data.augment"),
        ("loss.hparams.epsilon=-0.5", "epsilon"),
        ("loss.hparams.temperature=0.5", "does not take"),
        ("train.epochs", "KEY=VALUE|section.key=value"),
        ("train.epochs.x=1", "no sub-options"),
        ("train.device=tpu", "train.device"),
        ("eval.corruption_severities=6", "1..5"),
    ],
)
def test_bad_options_fail_with_a_message_naming_them(override, match):
    with pytest.raises(ValueError, match=match):
        resolve_config("smoke", method="gca-uot", overrides=[override])


def test_byol_takes_no_loss_hparams_and_unknown_profile():
    with pytest.raises(ValueError, match="byol"):
        resolve_config("smoke", method="byol", overrides=["loss.hparams.epsilon=0.5"])
    with pytest.raises(ValueError, match="unknown profile"):
        resolve_config("laptop")


def test_dict_round_trip_and_hash():
    c = resolve_config("cpu", method="gca-rince", overrides=["loss.hparams.q=0.5", "eval.corruptions=contrast"])
    d = config_to_dict(c)
    assert config_from_dict(d) == c
    assert run_config_hash(c) == run_config_hash(config_from_dict(d))
    assert run_config_hash(c) != run_config_hash(apply_overrides(c, ["train.seed=1"]))
    assert run_config_hash(c, code_version="a") != run_config_hash(c, code_version="b")
    with pytest.raises(ValueError, match="unknown config section"):
        config_from_dict({**d, "trainer": {}})
    with pytest.raises(ValueError, match="unknown option"):
        config_from_dict({**d, "train": {**d["train"], "epohcs": 3}})


def test_dataset_name_is_canonicalised():
    assert resolve_config("smoke", dataset="CIFAR-10").data.dataset == "cifar10"
    assert validate_config(RunConfig()) is not None


def _write_tiny_cifar10(root, n=4, seed=0):
    """The official python-pickle layout of CIFAR-10 with n images per file."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        obj = {"batch_label": name, "labels": [int(v) for v in rng.integers(0, 10, n)],
               "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}
        with open(base / name, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [str(i) for i in range(10)], "num_cases_per_batch": n, "num_vis": 3072}, fh)


def test_paper_profile_runs_one_step_on_cpu(tmp_path):
    """The paper configuration (ResNet-18, CIFAR stem, 2048-128 projector, SGD-Nesterov) at a tiny
    batch on a tiny CIFAR-10-format folder: one optimisation step, finite loss."""
    from gca.train import pretrain, read_metrics

    _write_tiny_cifar10(tmp_path / "data", n=1)  # 5 training images
    cfg = resolve_config("paper", method="gca-uot", dataset="cifar10", overrides={
        "data.data_dir": str(tmp_path / "data"), "train.batch_size": 4, "train.epochs": 1, "train.device": "cpu"})
    res = pretrain(cfg, tmp_path / "run", progress=False)
    steps = read_metrics(tmp_path / "run", "step")
    assert len(steps) == 1 and np.isfinite(steps[0]["loss"])
    assert res.model.backbone.feat_dim == 512
    assert sum(p.numel() for p in res.model.parameters()) == 11_168_832 + 512 * 2048 + 2048 * 128
