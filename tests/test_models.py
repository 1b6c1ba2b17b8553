"""Encoders, projector, BYOL predictor / EMA target (gca.models)."""

import math

import pytest
import torch
from torch import nn

from gca.models import (
    BYOLModel,
    ContrastiveModel,
    Predictor,
    Projector,
    build_backbone,
    build_model,
    ema_momentum,
    resnet18,
    resnet50,
    small_convnet,
)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_resnet18_parameter_counts_match_torchvision():
    # torchvision resnet18 has 11,689,512 parameters, 513,000 of them in the 1000-way fc layer.
    assert n_params(resnet18(stem="imagenet")) == 11_689_512 - 513_000
    # CIFAR stem: the 7x7x3x64 stem conv (9,408) becomes 3x3x3x64 (1,728).
    assert n_params(resnet18(stem="cifar")) == 11_689_512 - 513_000 - 9_408 + 1_728


def test_resnet50_parameter_count_matches_torchvision():
    # torchvision resnet50: 25,557,032 parameters, fc = 2048*1000 + 1000.
    assert n_params(resnet50(stem="imagenet")) == 25_557_032 - 2_049_000


def test_cifar_stem_keeps_resolution_and_imagenet_stem_downsamples():
    net = resnet18(stem="cifar").eval()
    stem = net.stem
    conv = stem[0]
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in stem.modules())
    x = torch.randn(2, 3, 32, 32)
    assert stem(x).shape[-2:] == (32, 32)
    net_in = resnet18(stem="imagenet").eval()
    assert net_in.stem[0].kernel_size == (7, 7) and net_in.stem[0].stride == (2, 2)
    assert any(isinstance(m, nn.MaxPool2d) for m in net_in.stem.modules())
    assert net_in.stem(torch.randn(1, 3, 64, 64)).shape[-2:] == (16, 16)
    with torch.no_grad():
        assert net(x).shape == (2, 512)
        assert net_in(torch.randn(1, 3, 64, 64)).shape == (1, 512)


def test_resnet50_feature_size():
    net = resnet50(stem="cifar", width=8).eval()  # narrow copy: same topology, cheap
    assert net.feat_dim == 8 * 32
    with torch.no_grad():
        assert net(torch.randn(2, 3, 16, 16)).shape == (2, 256)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 16, 16), (3, 32, 32), (3, 5, 7)])
def test_small_backbone_any_size(shape):
    net = small_convnet(in_channels=shape[0], width=8)
    out = net(torch.randn(4, *shape))
    assert out.shape == (4, net.feat_dim) == (4, 32)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_norm_options(norm):
    net = build_backbone("small", in_channels=1, width=8, norm=norm)
    kinds = {type(m) for m in net.modules()}
    assert (nn.BatchNorm2d in kinds) == (norm == "batch")
    assert (nn.GroupNorm in kinds) == (norm == "group")
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 32)


def test_group_norm_is_batch_independent():
    net = build_backbone("small", in_channels=1, width=8, norm="group").train()
    x = torch.randn(6, 1, 8, 8)
    torch.testing.assert_close(net(x)[:3], net(x[:3]), rtol=1e-5, atol=1e-6)


def test_projector_matches_paper_architecture():
    head = Projector(512)
    layers = list(head.net)
    assert [type(m) for m in layers] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (layers[0].in_features, layers[0].out_features, layers[0].bias) == (512, 2048, None)
    assert (layers[2].in_features, layers[2].out_features, layers[2].bias) == (2048, 128, None)
    assert n_params(head) == 512 * 2048 + 2048 * 128
    # configurable sizes, optional BN / bias, single linear layer
    h2 = Projector(64, 32, 16, bias=True, batch_norm=True)
    assert [type(m) for m in h2.net] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert isinstance(Projector(64, 0, 16).net, nn.Linear)
    assert h2(torch.randn(3, 64)).shape == (3, 16)


def test_build_model_contrastive_and_byol():
    m = build_model(backbone="small", in_channels=1, width=8, projector_hidden_dim=32, projector_out_dim=16)
    assert isinstance(m, ContrastiveModel)
    x = torch.randn(4, 1, 8, 8)
    assert m(x).shape == (4, 16) and m.features(x).shape == (4, 32)
    b = build_model(backbone="small", in_channels=1, width=8, projector_hidden_dim=32, projector_out_dim=16,
                    byol=True, predictor_hidden_dim=24)
    assert isinstance(b, BYOLModel)
    assert b.online_predictions(x).shape == (4, 16)
    assert b.target_projections(x).shape == (4, 16)
    assert not b.target_projections(x).requires_grad


def _byol():
    torch.manual_seed(0)
    return build_model(backbone="small", in_channels=1, width=8, projector_hidden_dim=32, projector_out_dim=16,
                       byol=True, predictor_hidden_dim=24)


def test_byol_target_is_frozen_copy_and_ema_update():
    b = _byol()
    assert all(not p.requires_grad for p in b.target.parameters())
    online0 = [p.detach().clone() for p in b.online.parameters()]
    for p_t, p_o in zip(b.target.parameters(), b.online.parameters()):
        assert torch.equal(p_t, p_o) and p_t.data_ptr() != p_o.data_ptr()
    with torch.no_grad():
        for p in b.online.parameters():
            p.add_(1.0)
    b.update_target(1.0)  # τ = 1: target unchanged
    for p_t, p0 in zip(b.target.parameters(), online0):
        torch.testing.assert_close(p_t, p0)
    b.update_target(0.25)  # ξ ← 0.25 ξ + 0.75 θ
    for p_t, p0, p_o in zip(b.target.parameters(), online0, b.online.parameters()):
        torch.testing.assert_close(p_t, 0.25 * p0 + 0.75 * p_o)
    b.update_target(0.0)  # τ = 0: exact copy
    for p_t, p_o in zip(b.target.parameters(), b.online.parameters()):
        torch.testing.assert_close(p_t, p_o)
    with pytest.raises(ValueError, match="tau"):
        b.update_target(1.5)


def test_byol_gradients_reach_online_and_predictor_only():
    b = _byol().train()
    x = torch.randn(4, 1, 8, 8)
    (b.online_predictions(x) * b.target_projections(x)).sum().backward()
    assert all(p.grad is not None for p in b.online.parameters())
    assert all(p.grad is not None for p in b.predictor.parameters())
    assert all(p.grad is None for p in b.target.parameters())


def test_ema_momentum_schedule():
    assert ema_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert ema_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert ema_momentum(50, 100, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 2) + 1) / 2)
    taus = [ema_momentum(k, 10) for k in range(11)]
    assert all(a <= b for a, b in zip(taus, taus[1:]))
    for bad in [dict(step=11, total_steps=10), dict(step=0, total_steps=0), dict(step=0, total_steps=5, base=1.2)]:
        with pytest.raises(ValueError):
            ema_momentum(**bad)


def test_predictor_shape():
    assert Predictor(16, 8)(torch.randn(3, 16)).shape == (3, 16)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: build_backbone("vgg"), ValueError, "unknown backbone"),
        (lambda: resnet18(stem="tiny"), ValueError, "stem"),
        (lambda: small_convnet(norm="layer"), ValueError, "norm"),
        (lambda: small_convnet(in_channels=0), ValueError, "in_channels"),
        (lambda: small_convnet(in_channels=1.5), TypeError, "in_channels"),
        (lambda: Projector(0), ValueError, "in_dim"),
        (lambda: Projector(8, -1), ValueError, "hidden_dim"),
    ],
)
def test_invalid_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
