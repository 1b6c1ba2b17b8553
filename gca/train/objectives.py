r"""What a method adds to the shared training loop: :class:`~gca.train.TrainingMethod` and its implementations.

The loop (:mod:`gca.train.loop`) is the same for every method: two augmented views per image,
one forward of both views, a float32 loss, backward, optimiser step. A method says

- which network it trains (:meth:`~gca.train.TrainingMethod.build_model`; the encoder — backbone and
  projector — is shared and built from the seed alone, see :func:`~gca.train.build_encoder`),
- what one forward of the ``2B`` views returns (:meth:`~gca.train.TrainingMethod.network`),
- what else a batch needs (:meth:`~gca.train.TrainingMethod.batch_inputs`: a target plan, labels),
- the loss (:meth:`~gca.train.TrainingMethod.loss`) and what follows an optimiser step
  (:meth:`~gca.train.TrainingMethod.after_step`),
- its own state beyond the model's, for checkpoints (:meth:`~gca.train.TrainingMethod.state_dict`).

The implementation is chosen by the kind of the method in ``gca.methods``:
:class:`~gca.train.AlignmentMethod` (every loss of :func:`gca.losses.make_loss`),
:class:`~gca.train.BYOLMethod`, and the
two calibration rows of the study, :class:`~gca.train.SupervisedMethod` (the ceiling) and
:class:`~gca.train.UntrainedMethod` (the floor).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gca.losses import targets
from gca.config import RunConfig
from gca.losses import make_loss
from gca.methods import get_method, method_names
from gca.models import (
    BYOLModel,
    ContrastiveModel,
    Predictor,
    Projector,
    SupervisedModel,
    build_backbone,
    ema_momentum,
)
from gca.train.batches import Batch
from gca.train.runtime import init_seed, seeded

__all__ = ["TrainingMethod", "AlignmentMethod", "BYOLMethod", "SupervisedMethod", "UntrainedMethod",
           "method_class", "make_training_method", "build_encoder", "byol_loss", "batch_target"]


def build_encoder(config, in_channels: int, *, projector_batch_norm: bool | None = None) -> ContrastiveModel:
    """Backbone and projector of ``config.model``, each initialised from its own stream of ``train.seed``
    (:func:`gca.train.runtime.init_seed`), on the CPU: the same initial encoder for every method.

    ``projector_batch_norm`` overrides ``model.projector_batch_norm`` (BatchNorm draws no random
    numbers, so the projector's weights are the same either way).
    """
    m, seed = config.model, config.train.seed
    bn = m.projector_batch_norm if projector_batch_norm is None else projector_batch_norm
    with seeded(init_seed(seed, "backbone")):
        trunk = build_backbone(m.backbone, stem=m.stem, in_channels=in_channels, width=m.width, norm=m.norm)
    with seeded(init_seed(seed, "projector")):
        head = Projector(trunk.feat_dim, m.projector_hidden_dim, m.projector_out_dim, bias=m.projector_bias,
                         batch_norm=bn)
    return ContrastiveModel(trunk, head)


class TrainingMethod:
    """A method as the training loop sees it (see the module docstring). Subclasses override what differs.

    ``trains``: ``False`` for a method that takes no optimisation step (the untrained encoder).
    """

    trains: ClassVar[bool] = True

    def __init__(self, config, *, device: torch.device = torch.device("cpu"), distributed: bool = False,
                 loss_factory: Callable[..., nn.Module] | None = None):
        self.config, self.device, self.distributed = config, torch.device(device), distributed
        self.name = config.loss.method

    @classmethod
    def build_model(cls, config, *, in_channels: int, n_classes: int | None = None) -> nn.Module:
        """The network of this method, on the CPU (its encoder from :func:`~gca.train.build_encoder`)."""
        return build_encoder(config, in_channels)

    def network(self, model: nn.Module) -> nn.Module:
        """The module that maps the ``2B`` views to what :meth:`loss` takes (DDP wraps this one)."""
        return model

    def batch_inputs(self, batch: Batch, dataset) -> Any:
        """What :meth:`loss` needs besides the network's output (``None``: nothing)."""
        return None

    def loss(self, out, inputs: Any = None) -> Tensor:
        """Scalar float32 loss from the network's output on both views (``[v1; v2]``)."""
        raise NotImplementedError

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Called after every optimiser step ``step`` (0-based)."""

    def state_dict(self) -> dict:
        """State of the method outside the model (saved in the checkpoint as ``method_state``)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"method {self.name!r} keeps no state, but the checkpoint holds {sorted(state)}")


# ---------------------------------------------------------------------------------------------
# Alignment losses (spec §3)
# ---------------------------------------------------------------------------------------------
def batch_target(config, dataset, global_indices: Tensor, device: torch.device) -> Tensor | None:
    """The target plan of one (global) batch as configured by ``loss.target`` (None = positives Π).

    Built from the labels / domains of the *global* batch (every process holds the whole index
    permutation), so it matches the gathered embeddings under DDP.
    """
    kind = config.loss.target
    if kind == "positive":
        return None
    layout = config.loss.hparams.get("layout", "joint")
    if kind == "domain_prior":
        domains = getattr(dataset, "domains", None)
        if domains is None:
            raise ValueError(f"loss.target=domain_prior needs domain labels, but dataset {dataset.name!r} has none; "
                             "use a multi-domain dataset (e.g. rotated-digits, pacs)")
        plan = targets.domain_prior_plan(domains[global_indices], alpha=config.loss.target_alpha,
                                         beta=config.loss.target_beta, layout=layout,
                                         form=config.loss.target_form, mass=config.loss.target_mass)
    else:
        plan = targets.supervised_plan(dataset.labels[global_indices], layout)
    return plan.to(device)


class AlignmentMethod(TrainingMethod):
    """A loss of the alignment family, :func:`gca.losses.make_loss` ``(method, **loss.hparams)``.

    Under DDP the loss is built with ``gather=True``: every process aligns the global batch (the
    authors' code aligns only the local batch, ``official-code.md`` item 10).
    """

    def __init__(self, config, *, device: torch.device = torch.device("cpu"), distributed: bool = False,
                 loss_factory: Callable[..., nn.Module] | None = None):
        super().__init__(config, device=device, distributed=distributed)
        hparams = dict(config.loss.hparams)
        if distributed:
            hparams["gather"] = True  # every process aligns the global batch
        self.loss_fn = (loss_factory or make_loss)(self.name, **hparams).to(self.device)

    def batch_inputs(self, batch: Batch, dataset) -> Tensor | None:
        return batch_target(self.config, dataset, batch.global_indices, self.device)

    def loss(self, out: Tensor, inputs: Tensor | None = None) -> Tensor:
        z1, z2 = out.float().chunk(2)
        finite = torch.isfinite(out).all()  # read only if the loss rejects its input (no extra sync)
        try:
            return self.loss_fn(z1, z2) if inputs is None else self.loss_fn(z1, z2, target=inputs)
        except ValueError:
            if not bool(finite):  # a diverged encoder, not a user input error
                raise FloatingPointError(f"the encoder's output holds NaN or inf (method {self.name!r})") from None
            raise

    def state_dict(self) -> dict:
        return dict(self.loss_fn.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.loss_fn.load_state_dict(state)


# ---------------------------------------------------------------------------------------------
# BYOL (Grill et al. 2020)
# ---------------------------------------------------------------------------------------------
def byol_loss(p1: Tensor, p2: Tensor, z1_target: Tensor, z2_target: Tensor) -> Tensor:
    r"""BYOL's symmetric normalised-MSE loss (Grill et al. 2020, eq. 2):

    .. math:: \mathcal L = \bigl\|\bar q(z_1) - \bar z'_2\bigr\|^2 + \bigl\|\bar q(z_2) - \bar z'_1\bigr\|^2,
       \qquad \|\bar a - \bar b\|^2 = 2 - 2\cos(a, b),

    averaged over the batch; the target projections get no gradient.
    Shapes: all ``(B, d)``; returns a scalar.
    """
    def one(p: Tensor, z: Tensor) -> Tensor:
        return (2.0 - 2.0 * F.cosine_similarity(p, z.detach(), dim=-1, eps=1e-8)).mean()

    return one(p1, z2_target) + one(p2, z1_target)


class _BYOLForward(nn.Module):
    """DDP-wrappable BYOL forward: ``x`` (2B images: both views) → (online predictions, target projections)."""

    def __init__(self, model: BYOLModel):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = self.model.online_predictions(x)
        with torch.no_grad():
            zt = self.model.target_projections(x)
        return p, zt


class BYOLMethod(TrainingMethod):
    """BYOL: online encoder + predictor regress the EMA target's projection of the other view
    (:func:`~gca.train.byol_loss`); after each step the target moves by ``1 − τ_k`` of
    :func:`gca.models.ema_momentum` (base ``loss.ema_base``, cosine schedule to 1 over the run).
    The projector has BatchNorm after its hidden layer when ``model.byol_projector_batch_norm``
    (Grill et al. 2020; every profile sets it).

    Diagnostic at the study's CPU scale (CIFAR-10 JPEG copy, 500 images/class, 16 px, small
    backbone of width 16, projector 512→128, predictor hidden 256, 10 epochs × 19 steps of 256,
    SGD lr 0.3 with 1 warm-up epoch; seed 0, one thread; linear probe on the 5 000 test images):

    ===============================================  ============  =======================
    variant                                          linear probe  projection uniformity
    ===============================================  ============  =======================
    untrained encoder (the floor)                    30.4 %        −0.34
    projector without BatchNorm, τ_base 0.996        25.2 %        −0.05 (collapsed)
    projector without BatchNorm, τ_base 0.99         25.6 % *      −0.01 (collapsed)
    projector with BatchNorm, τ_base 0.996           34.4 %        −1.49
    projector with BatchNorm, τ_base 0.99            33.5 % *      −1.43
    ===============================================  ============  =======================

    (* a screening probe — one weight decay, 100 iterations — under which the untrained encoder
    scores 30.1 % and BatchNorm with τ_base 0.996 33.3 %.) Without BatchNorm the loss falls to
    0.10 and the projections collapse to nearly one point; the EMA schedule is not the cause
    (over 190 steps τ_base = 0.996 moves the target about 1 − exp(−0.38) ≈ 32 % of the way to the
    online weights, yet a faster target, τ_base = 0.99, collapses as well). The predictor's
    learning rate and the warm-up were not varied. BYOL then learns, but stays well below the
    contrastive losses at this scale.
    """

    @classmethod
    def build_model(cls, config, *, in_channels: int, n_classes: int | None = None) -> BYOLModel:
        m = config.model
        online = build_encoder(config, in_channels,
                               projector_batch_norm=m.projector_batch_norm or m.byol_projector_batch_norm)
        with seeded(init_seed(config.train.seed, "predictor")):
            predictor = Predictor(m.projector_out_dim, m.predictor_hidden_dim)
        return BYOLModel(online, predictor)

    def network(self, model: nn.Module) -> nn.Module:
        return _BYOLForward(model)

    def loss(self, out: tuple[Tensor, Tensor], inputs: Any = None) -> Tensor:
        p, zt = out
        p1, p2 = p.float().chunk(2)
        t1, t2 = zt.float().chunk(2)
        return byol_loss(p1, p2, t1, t2)

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        model.update_target(ema_momentum(min(step + 1, total_steps), total_steps, self.config.loss.ema_base))


# ---------------------------------------------------------------------------------------------
# Calibration rows of the study (issue 12 item 2)
# ---------------------------------------------------------------------------------------------
class _SupervisedForward(nn.Module):
    def __init__(self, model: SupervisedModel):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.logits(x)


class SupervisedMethod(TrainingMethod):
    """The ceiling: the same backbone with a linear classifier on its features, trained with
    cross-entropy on the class labels of both views — same augmentation, optimiser, schedule and
    number of steps as every other method. The encoder is then evaluated like any other."""

    registry_name: ClassVar[str] = "supervised"

    @classmethod
    def build_model(cls, config, *, in_channels: int, n_classes: int | None = None) -> SupervisedModel:
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"method 'supervised' needs the number of classes (an int >= 2), got {n_classes!r}")
        encoder = build_encoder(config, in_channels)
        with seeded(init_seed(config.train.seed, "classifier")):
            classifier = nn.Linear(encoder.backbone.feat_dim, n_classes)
        return SupervisedModel(encoder, classifier)

    def network(self, model: nn.Module) -> nn.Module:
        return _SupervisedForward(model)

    def batch_inputs(self, batch: Batch, dataset) -> Tensor:
        labels = getattr(dataset, "labels", None)
        if labels is None:
            raise ValueError(f"method 'supervised' needs class labels, but dataset {dataset.name!r} has none")
        return labels[batch.indices].to(self.device)

    def loss(self, out: Tensor, inputs: Tensor | None = None) -> Tensor:
        if inputs is None:
            raise ValueError("method 'supervised' needs the labels of the batch (TrainStep.step(views, k, labels))")
        return F.cross_entropy(out.float(), torch.cat([inputs, inputs]).long())


class UntrainedMethod(TrainingMethod):
    """The floor: the initial encoder (the same weights every method of the seed starts from), saved
    without any optimisation step so that it is evaluated through the same run directory and
    ``gca evaluate`` path. BatchNorm keeps its initial running statistics."""

    registry_name: ClassVar[str] = "untrained"
    trains: ClassVar[bool] = False

    def loss(self, out, inputs: Any = None) -> Tensor:
        raise RuntimeError("method 'untrained' takes no optimisation step")


# ---------------------------------------------------------------------------------------------
# Dispatch on the registry's kind
# ---------------------------------------------------------------------------------------------
_CALIBRATION = {cls.registry_name: cls for cls in (SupervisedMethod, UntrainedMethod)}
if set(_CALIBRATION) != set(method_names("calibration")):  # registry and implementations must agree
    raise ImportError(f"calibration methods of gca.methods {method_names('calibration')} have no training "
                      f"implementation here ({sorted(_CALIBRATION)})")


def method_class(name: str) -> type[TrainingMethod]:
    """The :class:`~gca.train.TrainingMethod` subclass of method ``name`` (by its kind in ``gca.methods``)."""
    entry = get_method(name)
    if entry.kind == "alignment":
        return AlignmentMethod
    if entry.kind == "byol":
        return BYOLMethod
    return _CALIBRATION[entry.name]


def make_training_method(config, *, device: torch.device = torch.device("cpu"), distributed: bool = False,
                         loss_factory: Callable[..., nn.Module] | None = None) -> TrainingMethod:
    """The :class:`~gca.train.TrainingMethod` of ``config.loss.method``; ``loss_factory`` (default
    :func:`gca.losses.make_loss`) builds an alignment method's loss from its name and hyperparameters."""
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a gca.config.RunConfig, got {type(config).__name__}")
    cls = method_class(config.loss.method)
    return cls(config, device=device, distributed=distributed, loss_factory=loss_factory)
