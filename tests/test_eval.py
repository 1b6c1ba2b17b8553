"""Frozen-encoder evaluation (gca.eval): probe, kNN, alignment/uniformity, frozen checks."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from gca.eval import (
    alignment_metric,
    assert_frozen,
    extract_features,
    fit_logistic_regression,
    freeze,
    knn_accuracy,
    knn_predict,
    linear_probe,
    stratified_split_indices,
    uniformity,
)
from gca.models import build_model


def _blobs(n_per_class=40, n_classes=4, dim=8, spread=1.0, seed=0):
    centres = torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(n_per_class)
    x = centres[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return x, labels


def _encoder():
    return build_model(backbone="small", in_channels=1, width=4, projector_hidden_dim=8, projector_out_dim=4)


# --------------------------------------------------------------------------- frozen encoder
def test_assert_frozen_catches_trainable_parameters_and_train_mode():
    model = _encoder()
    with pytest.raises(RuntimeError, match="require grad"):
        assert_frozen(model)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(RuntimeError, match="eval mode"):
        assert_frozen(model)  # BatchNorm still in train mode
    model.eval()
    model.backbone.features[1].train()  # one BN layer back in train mode is enough to fail
    with pytest.raises(RuntimeError, match="eval mode"):
        assert_frozen(model)
    freeze(model)
    assert_frozen(model)


def test_extract_features_refuses_unfrozen_encoder_and_leaves_bn_stats_untouched():
    model = _encoder()
    images = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="not frozen"):
        extract_features(model.backbone, images, mean=(0.5,), std=(0.25,))
    freeze(model)
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    f1 = extract_features(model.backbone, images, mean=(0.5,), std=(0.25,), batch_size=3)
    f2 = extract_features(model.backbone, images, mean=(0.5,), std=(0.25,), batch_size=10)
    assert f1.shape == (10, model.backbone.feat_dim)
    torch.testing.assert_close(f1, f2, rtol=1e-5, atol=1e-6)  # eval mode: batch composition is irrelevant
    for k, v in model.state_dict().items():
        assert torch.equal(v, stats[k]), k
    # normalisation is applied: equal to calling the encoder on normalised floats
    x = (images.float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(f1, model.backbone(x), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- linear probe
def test_logistic_regression_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs(spread=3.0)
    x = x.double()  # sklearn fits float32 input in float32: compare both in float64
    n, wd = len(y), 1e-2
    clf = fit_logistic_regression(x, y, 4, weight_decay=wd, max_iter=500, tol=1e-9)
    ref = LogisticRegression(C=1.0 / (n * wd), tol=1e-12, max_iter=10000).fit(x.numpy(), y.numpy())
    ours = torch.softmax(clf(x), 1).detach().numpy()
    np.testing.assert_allclose(ours, ref.predict_proba(x.numpy()), atol=1e-5)


def test_stratified_split_is_seeded_and_per_class():
    y = torch.arange(5).repeat_interleave(20)
    fit, val = stratified_split_indices(y, 0.25, seed=3)
    assert len(val) == 25 and torch.bincount(y[val]).tolist() == [5] * 5
    assert set(fit.tolist()).isdisjoint(val.tolist()) and len(fit) + len(val) == 100
    fit2, val2 = stratified_split_indices(y, 0.25, seed=3)
    assert torch.equal(val, val2)


def test_linear_probe_selects_on_validation_never_on_test():
    x, y = _blobs(n_per_class=50, spread=2.5)
    xt, yt = _blobs(n_per_class=30, spread=2.5, seed=1)
    wds = (1e-3, 1e-2, 1e-1, 10.0)
    r = linear_probe(x, y, xt, yt, weight_decays=wds, val_fraction=0.2, seed=0, max_iter=100)
    assert set(r.val_accuracy) == set(wds)
    assert r.weight_decay == max(r.val_accuracy, key=lambda w: (r.val_accuracy[w], w))
    assert r.test_accuracy > 0.8
    # Scrambling the test labels changes the reported test accuracy but not the selection.
    scrambled = linear_probe(x, y, xt, yt[torch.randperm(len(yt))], weight_decays=wds, val_fraction=0.2, seed=0,
                             max_iter=100)
    assert scrambled.weight_decay == r.weight_decay and scrambled.val_accuracy == r.val_accuracy
    assert scrambled.test_accuracy < r.test_accuracy
    # the returned probe is the final refitted model: its accuracy method reproduces the test figure
    assert r.accuracy(xt, yt) == pytest.approx(r.test_accuracy)


def test_warm_start_reaches_the_cold_minimiser():
    x, y = _blobs(n_per_class=60, spread=2.5)
    x = x.double()
    cold = fit_logistic_regression(x, y, 4, weight_decay=0.1, max_iter=1000, tol=1e-10)
    near = fit_logistic_regression(x, y, 4, weight_decay=1.0, max_iter=1000, tol=1e-10)
    near_weight = near.weight.clone()
    warm = fit_logistic_regression(x, y, 4, weight_decay=0.1, max_iter=1000, tol=1e-10, init=near)
    # both stop at a gradient ~1e-7 (float64 loss resolution); the curvature is >= the weight decay
    torch.testing.assert_close(warm.weight, cold.weight, atol=1e-5, rtol=0)
    torch.testing.assert_close(warm.bias, cold.bias, atol=1e-5, rtol=0)
    assert (near.weight - cold.weight).abs().max() > 0.1  # a real start away from the minimiser ...
    assert torch.equal(near.weight, near_weight)  # ... copied, not mutated
    with pytest.raises(ValueError, match="init must be an nn.Linear"):
        fit_logistic_regression(x, y, 4, init=nn.Linear(3, 4))


def test_linear_probe_with_warm_starts_equals_independent_cold_fits():
    x, y = _blobs(n_per_class=50, spread=2.5)
    xt, yt = _blobs(n_per_class=30, spread=2.5, seed=1)
    x, xt = x.double(), xt.double()
    wds = (1e-2, 1e-3, 1.0, 0.1)  # any order: the record keeps it
    r = linear_probe(x, y, xt, yt, weight_decays=wds, val_fraction=0.2, seed=0, max_iter=1000)
    assert list(r.val_accuracy) == list(wds)
    fit_idx, val_idx = stratified_split_indices(y, 0.2, seed=0)
    mean, std = x[fit_idx].mean(0, keepdim=True), x[fit_idx].std(0, keepdim=True)
    for wd in wds:
        clf = fit_logistic_regression((x[fit_idx] - mean) / std, y[fit_idx], 4, weight_decay=wd, max_iter=1000)
        acc = float((clf((x[val_idx] - mean) / std).argmax(1) == y[val_idx]).float().mean())
        assert r.val_accuracy[wd] == pytest.approx(acc)
    final = fit_logistic_regression((x - r.feature_mean) / r.feature_std, y, 4, weight_decay=r.weight_decay,
                                    max_iter=1000)
    torch.testing.assert_close(r.classifier.weight, final.weight, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="weight_decays must be finite numbers >= 0"):
        linear_probe(x, y, xt, yt, weight_decays=(1e-3, -1.0))


# --------------------------------------------------------------------------- kNN
def _knn_loop(bank, bank_y, queries, k, tau, n_classes):
    preds = []
    for q in queries:
        sims = [float(torch.dot(q / q.norm(), b / b.norm())) for b in bank]
        top = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        scores = [0.0] * n_classes
        for j in top:
            scores[int(bank_y[j])] += math.exp(sims[j] / tau)
        preds.append(max(range(n_classes), key=lambda c: scores[c]))
    return torch.tensor(preds)


def test_knn_matches_formula_loop():
    x, y = _blobs(n_per_class=15, spread=4.0)
    q, _ = _blobs(n_per_class=5, spread=4.0, seed=2)
    for k, tau in [(1, 0.07), (7, 0.07), (20, 0.5)]:
        ours = knn_predict(x, y, q, k=k, temperature=tau, batch_size=7)
        assert torch.equal(ours, _knn_loop(x, y, q, k, tau, 4))


def test_knn_separable_and_k_capped():
    x, y = _blobs(n_per_class=10, spread=0.1)
    assert knn_accuracy(x, y, x, y, k=1000) == 1.0  # k capped at the bank size; weights keep it right
    with pytest.raises(ValueError, match="temperature"):
        knn_predict(x, y, x, temperature=0.0)


# --------------------------------------------------------------------------- alignment / uniformity
def test_alignment_metric_and_uniformity_formulas():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 6, generator=g)
    assert alignment_metric(z, 3.0 * z) == pytest.approx(0.0, abs=1e-12)  # scale-invariant (normalised)
    z2 = z + 0.3 * torch.randn(50, 6, generator=g)
    z, z2 = z.double(), z2.double()
    zn, z2n = z / z.norm(dim=1, keepdim=True), z2 / z2.norm(dim=1, keepdim=True)
    assert alignment_metric(z, z2) == pytest.approx(float(((zn - z2n).norm(dim=1) ** 2).mean()), rel=1e-6)
    naive = math.log(float(torch.exp(-2.0 * torch.pdist(zn.double()) ** 2).mean()))
    assert uniformity(z) == pytest.approx(naive, rel=1e-9)
    for block in (1, 7, 49, 50, 1000):  # band size is irrelevant (incl. a last band of one row)
        assert uniformity(z, block=block) == pytest.approx(naive, rel=1e-9)
    d2 = torch.pdist(zn) ** 2  # large t: the log-sum-exp keeps it finite where a plain mean of exp would not
    assert uniformity(z, t=300.0) == pytest.approx(float(torch.logsumexp(-300.0 * d2, 0) - math.log(len(d2))), rel=1e-9)
    assert uniformity(z[:2]) == pytest.approx(-2.0 * float(d2[0]), rel=1e-9)
    with pytest.raises(ValueError, match="t must be"):
        uniformity(z, t=0.0)
    collapsed = torch.ones(10, 6)
    assert uniformity(collapsed) == pytest.approx(0.0, abs=1e-9)  # all at one point: log 1
    assert uniformity(z) < -1.0


# --------------------------------------------------------------------------- whole-model evaluation
def _tiny_model(in_channels):
    torch.manual_seed(0)
    return build_model(backbone="small", in_channels=in_channels, width=4, projector_hidden_dim=8,
                       projector_out_dim=4)


def test_evaluate_model_domain_probe_and_test_time_corruptions():
    from gca.config import resolve_config
    from gca.eval import evaluate_model

    cfg = resolve_config("smoke", dataset="rotated-digits", overrides={
        "data.load_kwargs.size": 8, "data.n_per_class": 24, "data.test_n_per_class": 8,
        "eval.corruptions": "gaussian_noise,contrast", "eval.corruption_severities": "1,5",
        "eval.probe_weight_decays": "1e-3,1e-1"})
    res = evaluate_model(_tiny_model(1), cfg, progress=False)
    assert res["n_train"] == 240 and res["n_test"] == 80
    assert 0.0 <= res["domain_accuracy"] <= 1.0 and res["domain"]["weight_decay"] in (1e-3, 1e-1)
    assert set(res["corrupted"]) == {"gaussian_noise-1", "gaussian_noise-5", "contrast-1", "contrast-5"}
    for v in res["corrupted"].values():
        assert 0.0 <= v["linear_accuracy"] <= 1.0 and 0.0 <= v["knn_accuracy"] <= 1.0
    assert res["linear_accuracy"] > 0.2 and res["knn_accuracy"] > 0.2  # chance 0.1


def test_cifar10c_evaluation_reads_the_official_files(tmp_path):
    """With 'corrupted' files that hold the clean test images, CIFAR-10-C accuracy must equal the
    clean test accuracy of the same probe and kNN: the files are read and routed correctly."""
    import pickle

    from gca.config import resolve_config
    from gca.eval import evaluate_model
    from tests.test_train_config import _write_tiny_cifar10

    _write_tiny_cifar10(tmp_path, n=12)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as fh:
        test = pickle.load(fh, encoding="latin1")
    hwc = test["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    c_dir = tmp_path / "CIFAR-10-C"
    c_dir.mkdir()
    np.save(c_dir / "labels.npy", np.tile(np.asarray(test["labels"], dtype=np.uint8), 5))
    np.save(c_dir / "snow.npy", np.tile(hwc, (5, 1, 1, 1)))
    cfg = resolve_config("smoke", dataset="cifar10", overrides={
        "data.data_dir": str(tmp_path), "eval.cifar10c_corruptions": "snow", "eval.corruption_severities": "1,5",
        "eval.probe_weight_decays": "1e-2", "eval.knn_k": 5})
    res = evaluate_model(_tiny_model(3), cfg, progress=False)
    assert set(res["corrupted"]) == {"cifar10c/snow-1", "cifar10c/snow-5"}
    for v in res["corrupted"].values():
        assert v["linear_accuracy"] == pytest.approx(res["linear_accuracy"])
        assert v["knn_accuracy"] == pytest.approx(res["knn_accuracy"])


# --------------------------------------------------------------------------- evaluation data
def _digits_config(**over):
    from gca.config import resolve_config

    return resolve_config("smoke", dataset="digits", overrides={"data.load_kwargs.size": 8, "data.n_per_class": 20,
                                                                "data.test_n_per_class": 10, **over})


def test_probe_training_set_is_fixed_across_run_seeds_and_balanced():
    from gca.eval import load_eval_data

    fixed = {seed: load_eval_data(_digits_config(**{"train.seed": seed, "eval.probe_train_per_class": 60}), "train")
             for seed in (0, 1)}
    assert fixed[0].checksum == fixed[1].checksum  # the same probe set for every run seed
    assert len(fixed[0]) == 600 and torch.bincount(fixed[0].labels).tolist() == [60] * 10
    other = load_eval_data(_digits_config(**{"eval.probe_train_per_class": 60, "eval.probe_train_seed": 7}), "train")
    assert other.checksum != fixed[0].checksum  # drawn with probe_train_seed
    # default (None): today's behaviour, the pretraining subset, which follows the run's seed
    pre = {seed: load_eval_data(_digits_config(**{"train.seed": seed}), "train") for seed in (0, 1)}
    assert len(pre[0]) == 200 and pre[0].checksum != pre[1].checksum
    # the test set: data.test_n_per_class, all of the split when none
    assert len(load_eval_data(_digits_config(), "test")) == 100
    full = load_eval_data(_digits_config(**{"data.test_n_per_class": None}), "test")
    assert len(full) > 100 and len(full) == len(load_eval_data(_digits_config(**{"data.test_n_per_class": None,
                                                                                  "train.seed": 5}), "test"))
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_eval_data(_digits_config(), "val")
    with pytest.raises(ValueError, match="fewer than n_per_class"):
        load_eval_data(_digits_config(**{"eval.probe_train_per_class": 10_000}), "train")


def test_evaluate_model_fits_probe_and_knn_on_the_fixed_set():
    from gca.eval import evaluate_model

    cfg = _digits_config(**{"eval.probe_train_per_class": 40, "eval.probe_weight_decays": "1e-2", "eval.knn_k": 5})
    res = evaluate_model(_tiny_model(1), cfg, progress=False)
    assert res["n_train"] == 400 and res["n_test"] == 100
    assert res["probe_train"] == {"source": "training split, fixed for every run", "per_class": 40, "seed": 1000}
    assert res["knn"]["k"] == 5
    default = evaluate_model(_tiny_model(1), _digits_config(**{"eval.probe_weight_decays": "1e-2"}), progress=False)
    assert default["n_train"] == 200 and default["probe_train"]["source"] == "pretraining subset"


def test_eval_config_defaults_keep_todays_protocol_and_validate():
    from gca.config import PROFILES, resolve_config

    for profile in PROFILES:  # existing profiles: the probe trains on the pretraining subset
        assert resolve_config(profile, method="ince").eval.probe_train_per_class is None
    assert resolve_config("cpu", overrides=["eval.probe_train_per_class=2000"]).eval.probe_train_per_class == 2000
    assert resolve_config("cpu", overrides=["eval.probe_train_per_class=none"]).eval.probe_train_per_class is None
    for bad, match in (("eval.probe_train_per_class=1", "eval.probe_train_per_class must be >= 2"),
                       ("eval.probe_train_per_class=many", "expects an integer"),
                       ("eval.probe_train_seed=-1", "eval.probe_train_seed must be >= 0")):
        with pytest.raises(ValueError, match=match):
            resolve_config("smoke", overrides=[bad])
