"""Encoders, projector, BYOL predictor and EMA target network (paper §5).

- :func:`resnet18` / :func:`resnet50` with the CIFAR stem (3×3 conv, stride 1, no max-pool; for
  32×32 images) or the standard ImageNet stem (7×7 conv, stride 2, 3×3 max-pool).
- :class:`SmallConvNet`: a small backbone for CPU-scale runs; global average pooling makes it work
  on any image size from 8×8 (1-channel sklearn digits) upwards.
- :class:`Projector`: ``Linear(feat→2048, no bias) → ReLU → Linear(2048→128, no bias)`` (paper §5),
  sizes configurable.
- :class:`Predictor` and :class:`BYOLModel`: BYOL's online predictor and the exponential-moving-average
  target network, with the cosine EMA schedule of Grill et al. (2020), :func:`ema_momentum`.
- :class:`SupervisedModel`: the study's supervised calibration row, the same encoder with a linear
  classifier on its features.

Every backbone exposes ``feat_dim`` (size of the pooled feature ``h``); :class:`ContrastiveModel`
maps images to ``(h, z)`` with ``z = g(h)`` the projection fed to the losses.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "BACKBONES",
    "STEMS",
    "NORMS",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet50",
    "SmallConvNet",
    "small_convnet",
    "build_backbone",
    "Projector",
    "Predictor",
    "ContrastiveModel",
    "BYOLModel",
    "SupervisedModel",
    "ema_momentum",
    "build_model",
]

STEMS = ("cifar", "imagenet")
NORMS = ("batch", "group", "none")


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        # 8 groups (or fewer for tiny widths): batch-size independent, so identical under DDP.
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _check_norm(norm) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


# --------------------------------------------------------------------------------------------
# ResNet (He et al. 2016), torchvision-compatible layout, written here because torchvision does
# not import beside the pinned torch.
# --------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, norm: str = "batch"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm_layer(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), _norm_layer(norm, planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 → 1×1 bottleneck with expansion 4 (ResNet-50), stride on the 3×3 (v1.5)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, norm: str = "batch"):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = _norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _norm_layer(norm, planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = _norm_layer(norm, out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                _norm_layer(norm, out_planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet trunk without the classification layer: images ``(B, C, H, W)`` → features ``(B, feat_dim)``.

    Parameters
    ----------
    block, layers
        Residual block class and number of blocks per stage (``[2, 2, 2, 2]`` for ResNet-18).
    stem
        ``"cifar"``: 3×3 conv, stride 1, no max-pool (for 32×32 inputs, paper §5);
        ``"imagenet"``: 7×7 conv, stride 2, then 3×3 max-pool with stride 2.
    in_channels
        Image channels (3 for RGB, 1 for grey-scale).
    width
        Channels of the first stage (64 in the standard network; stages double it).
    norm
        ``"batch"`` (standard), ``"group"`` or ``"none"``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        *,
        stem: str = "cifar",
        in_channels: int = 3,
        width: int = 64,
        norm: str = "batch",
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("width", width)
        _check_norm(norm)
        self.stem_name = stem
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
                _norm_layer(norm, width),
                nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                _norm_layer(norm, width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        planes, in_planes, stages = width, width, []
        for i, n_blocks in enumerate(layers):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(in_planes, planes, stride if j == 0 else 1, norm=norm))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
            planes *= 2
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feat_dim = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                last = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else (
                    getattr(m, "bn2", None) if isinstance(m, BasicBlock) else None)
                if last is not None and getattr(last, "weight", None) is not None:
                    nn.init.zeros_(last.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)


def resnet18(*, stem: str = "cifar", in_channels: int = 3, width: int = 64, norm: str = "batch") -> ResNet:
    """ResNet-18 trunk (feature size ``8 * width`` = 512)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], stem=stem, in_channels=in_channels, width=width, norm=norm)


def resnet50(*, stem: str = "imagenet", in_channels: int = 3, width: int = 64, norm: str = "batch") -> ResNet:
    """ResNet-50 trunk (feature size ``32 * width`` = 2048)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], stem=stem, in_channels=in_channels, width=width, norm=norm)


class SmallConvNet(nn.Module):
    """Small backbone for CPU-scale runs: ``stages`` blocks of [3×3 conv → norm → ReLU] ×2.

    The first convolution of every stage but the first has stride 2 (only while the map is larger
    than 2×2, so 8×8 digits work); channels double per stage from ``width``; a global average pool
    gives ``feat_dim = width * 2**(stages-1)`` (128 at the default ``width = 32``, about 0.29 M
    parameters).

    Shapes: ``(B, in_channels, H, W)`` with ``H, W ≥ 1`` → ``(B, feat_dim)``.
    """

    def __init__(self, *, in_channels: int = 3, width: int = 32, stages: int = 3, norm: str = "batch"):
        super().__init__()
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("width", width)
        _check_positive_int("stages", stages)
        _check_norm(norm)
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(stages):
            c_out = width * 2**i
            layers += [
                _Conv3x3(c_in, c_out, downsample=i > 0),
                _norm_layer(norm, c_out),
                nn.ReLU(inplace=True),
                _Conv3x3(c_out, c_out, downsample=False),
                _norm_layer(norm, c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feat_dim = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


class _Conv3x3(nn.Module):
    """3×3 convolution (no bias) with stride 2 when ``downsample`` and the map is larger than 2×2."""

    def __init__(self, c_in: int, c_out: int, downsample: bool):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        stride = 2 if self.downsample and min(x.shape[-2:]) > 2 else 1
        return nn.functional.conv2d(x, self.conv.weight, None, stride=stride, padding=1)


def small_convnet(*, stem: str = "cifar", in_channels: int = 3, width: int = 32, norm: str = "batch") -> SmallConvNet:
    """:class:`SmallConvNet` (``stem`` accepted for a uniform signature; it has a single stem)."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    return SmallConvNet(in_channels=in_channels, width=width, norm=norm)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "small": small_convnet,
}

_DEFAULT_WIDTH = {"resnet18": 64, "resnet50": 64, "small": 32}


def build_backbone(
    name: str, *, stem: str = "cifar", in_channels: int = 3, width: int | None = None, norm: str = "batch"
) -> nn.Module:
    """Backbone by name (``"resnet18"``, ``"resnet50"``, ``"small"``); ``width=None`` = its default."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    width = _DEFAULT_WIDTH[name] if width is None else width
    return BACKBONES[name](stem=stem, in_channels=in_channels, width=width, norm=norm)


class Projector(nn.Module):
    """Projection head ``g``: ``Linear(in→hidden, bias) → [BN] → ReLU → Linear(hidden→out, bias)``.

    The paper's head (§5) is ``Linear(512→2048, no bias) → ReLU → Linear(2048→128, no bias)``:
    the defaults here (``bias=False``, ``batch_norm=False``). ``hidden_dim=0`` gives a single
    linear layer ``Linear(in→out)``.

    Shapes: ``(B, in_dim)`` → ``(B, out_dim)``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, *, bias: bool = False,
                 batch_norm: bool = False):
        super().__init__()
        _check_positive_int("in_dim", in_dim)
        _check_positive_int("hidden_dim", hidden_dim, minimum=0)
        _check_positive_int("out_dim", out_dim)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        if hidden_dim == 0:
            self.net = nn.Linear(in_dim, out_dim, bias=bias)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=bias)]
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim, bias=bias)]
            self.net = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class Predictor(nn.Module):
    """BYOL predictor ``q``: ``Linear(d→hidden) → BN → ReLU → Linear(hidden→d)`` (Grill et al. 2020).

    Shapes: ``(B, dim)`` → ``(B, dim)``.
    """

    def __init__(self, dim: int = 128, hidden_dim: int = 512):
        super().__init__()
        _check_positive_int("dim", dim)
        _check_positive_int("hidden_dim", hidden_dim)
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, dim),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class ContrastiveModel(nn.Module):
    """Encoder ``f`` (backbone) followed by projector ``g``: ``x ↦ (h, z) = (f(x), g(f(x)))``.

    ``forward`` returns ``z`` (what the losses see); :meth:`features` returns ``h`` (what the
    linear probe and kNN see).
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.projector(self.backbone(x))


def ema_momentum(step: int, total_steps: int, base: float = 0.996) -> float:
    r"""BYOL's target decay rate at ``step`` of ``total_steps``.

    .. math:: \tau_k = 1 - (1 - \tau_{\text{base}})\,\bigl(\cos(\pi k / K) + 1\bigr) / 2

    rising from ``base`` at ``k = 0`` to 1 at ``k = K`` (Grill et al. 2020, §3.2).
    """
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"EMA base momentum must lie in [0, 1], got {base}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= step <= total_steps:
        raise ValueError(f"step must lie in [0, total_steps={total_steps}], got {step}")
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0


class BYOLModel(nn.Module):
    """BYOL: online network (backbone + projector + predictor) and an EMA target (backbone + projector).

    ``forward(x)`` returns the online projection ``z`` (so it can stand wherever a
    :class:`ContrastiveModel` is expected); :meth:`online_predictions` returns ``q(g(f(x)))`` and
    :meth:`target_projections` the target network's ``g'(f'(x))`` without gradient. The target's
    parameters never require gradients and are updated only by :meth:`update_target`:
    ``ξ ← τ ξ + (1 − τ) θ`` (buffers such as BatchNorm running statistics are copied).
    """

    def __init__(self, online: ContrastiveModel, predictor: nn.Module):
        super().__init__()
        self.online = online
        self.predictor = predictor
        self.target = copy.deepcopy(online)
        for p in self.target.parameters():
            p.requires_grad_(False)

    @property
    def backbone(self) -> nn.Module:
        return self.online.backbone

    @property
    def projector(self) -> nn.Module:
        return self.online.projector

    def features(self, x: Tensor) -> Tensor:
        return self.online.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.online(x)

    def online_predictions(self, x: Tensor) -> Tensor:
        return self.predictor(self.online(x))

    @torch.no_grad()
    def target_projections(self, x: Tensor) -> Tensor:
        return self.target(x)

    def train(self, mode: bool = True):
        super().train(mode)
        self.target.train(mode)  # target BN uses batch statistics like the online network
        return self

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"EMA momentum tau must lie in [0, 1], got {tau}")
        online = list(self.online.parameters())
        target = list(self.target.parameters())
        torch._foreach_mul_(target, tau)
        torch._foreach_add_(target, online, alpha=1.0 - tau)
        for b_t, b_o in zip(self.target.buffers(), self.online.buffers()):
            b_t.copy_(b_o)


class SupervisedModel(nn.Module):
    """The supervised calibration row: encoder ``f``, projector ``g`` and a linear classifier on ``h``.

    :meth:`logits` is ``W f(x) + b`` (trained with cross-entropy on the labels); ``forward`` returns
    the projection ``g(f(x))`` so that the model stands wherever a :class:`ContrastiveModel` is
    expected. The projector is not trained (its parameters are frozen at their initial values): it
    is kept so that the evaluation computes the same projection metrics for every run.
    """

    def __init__(self, encoder: ContrastiveModel, classifier: nn.Module):
        super().__init__()
        self.backbone = encoder.backbone
        self.projector = encoder.projector
        self.classifier = classifier
        for p in self.projector.parameters():
            p.requires_grad_(False)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.projector(self.backbone(x))

    def logits(self, x: Tensor) -> Tensor:
        return self.classifier(self.backbone(x))


def build_model(
    *,
    backbone: str = "resnet18",
    stem: str = "cifar",
    in_channels: int = 3,
    width: int | None = None,
    norm: str = "batch",
    projector_hidden_dim: int = 2048,
    projector_out_dim: int = 128,
    projector_bias: bool = False,
    projector_batch_norm: bool = False,
    byol: bool = False,
    predictor_hidden_dim: int = 512,
) -> ContrastiveModel | BYOLModel:
    """Backbone + projector (+ BYOL predictor and EMA target when ``byol``)."""
    trunk = build_backbone(backbone, stem=stem, in_channels=in_channels, width=width, norm=norm)
    head = Projector(trunk.feat_dim, projector_hidden_dim, projector_out_dim, bias=projector_bias,
                     batch_norm=projector_batch_norm)
    model = ContrastiveModel(trunk, head)
    if byol:
        return BYOLModel(model, Predictor(projector_out_dim, predictor_hidden_dim))
    return model
