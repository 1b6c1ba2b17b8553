r"""One optimisation step: learning-rate schedule, optimiser, mixed precision, the step itself.

- SGD (momentum, Nesterov) or Adam; learning rate warmed up linearly then cosine-decayed, **stepped
  per iteration** (:func:`~gca.train.learning_rate`) — the authors' code steps a per-step schedule once per
  epoch, so it barely decays (``official-code.md`` item 8).
- Mixed precision on CUDA (bfloat16 by default, float16 with a gradient scaler); the loss itself is
  always evaluated in float32. A non-finite loss raises before any parameter changes.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from gca.train.objectives import TrainingMethod, make_training_method

__all__ = ["learning_rate", "build_optimizer", "TrainStep", "build_training"]


def learning_rate(step: int, *, total_steps: int, warmup_steps: int, base_lr: float,
                  schedule: str = "cosine", final_lr_fraction: float = 0.0) -> float:
    r"""Learning rate at iteration ``step`` (0-based).

    Linear warm-up ``lr = base · (step + 1) / W`` for ``step < W``, then either constant or
    cosine decay

    .. math:: \eta_k = \eta_{\min} + (\eta - \eta_{\min})\,\tfrac12\bigl(1 + \cos(\pi\,(k - W)/(K - W))\bigr)

    with ``η_min = final_lr_fraction · η`` and ``K = total_steps``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must lie in [0, total_steps={total_steps}], got {warmup_steps}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    low = final_lr_fraction * base_lr
    return low + (base_lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(params, config) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or Adam with weight decay, from ``config.optim``."""
    o = config.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                               weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.adam_betas), weight_decay=o.weight_decay)
    raise ValueError(f"optim.name must be 'sgd' or 'adam', got {o.name!r}")


class TrainStep:
    """One optimisation step of the pretraining loop, shared by :func:`gca.train.pretrain` and the benchmarks.

    ``step((v1, v2), k, inputs)``: forward both views in one batch (under autocast on CUDA when
    enabled), the method's loss in float32 (``inputs``: what the method needs besides the views,
    :meth:`~gca.train.TrainingMethod.batch_inputs` — a target plan, labels, or ``None``),
    backward (through the gradient scaler), optimiser step, then the method's
    :meth:`~gca.train.TrainingMethod.after_step` (BYOL: the EMA update of the target).
    Returns the loss value (a Python float); raises FloatingPointError on a non-finite loss, before
    any parameter changes.
    """

    def __init__(self, config, method: TrainingMethod, model: nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device, total_steps: int):
        self.config, self.method, self.model, self.optimizer = config, method, model, optimizer
        self.device, self.total_steps = device, total_steps
        self.use_amp = config.train.amp and device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if config.train.amp_dtype == "bfloat16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.forward_module: nn.Module = method.network(model)

    @property
    def loss_fn(self) -> nn.Module | None:
        """The alignment loss module (``None`` for BYOL and the calibration rows)."""
        return getattr(self.method, "loss_fn", None)

    def wrap_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.forward_module = DDP(self.forward_module, device_ids=ids)

    def loss(self, v1: Tensor, v2: Tensor, inputs: Any = None) -> Tensor:
        """Forward both views and return the (float32) loss tensor."""
        both = torch.cat([v1, v2])
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            out = self.forward_module(both)
        with torch.autocast(device_type=self.device.type, enabled=False):
            return self.method.loss(out, inputs)

    def step(self, views: tuple[Tensor, Tensor], step: int, inputs: Any = None) -> float:
        loss = self.loss(*views, inputs)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss of method {self.config.loss.method!r} is {value}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.after_step(self.model, step, self.total_steps)
        return value

    def state_dict(self) -> dict:
        """Model, optimiser, scaler and method state, as stored in a checkpoint."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "method_state": self.method.state_dict()}

    def load_state_dict(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.method.load_state_dict(checkpoint.get("method_state") or {})


def build_training(config, *, in_channels: int, device: torch.device,
                   loss_factory: Callable[..., nn.Module] | None = None, distributed: bool = False,
                   total_steps: int = 1, n_classes: int | None = None) -> TrainStep:
    """Method, model (initial weights from ``train.seed`` alone), optimiser and scaler as configured,
    as a :class:`~gca.train.TrainStep`. ``n_classes``: the number of classes (the supervised row needs it)."""
    method = make_training_method(config, device=device, distributed=distributed, loss_factory=loss_factory)
    model = method.build_model(config, in_channels=in_channels, n_classes=n_classes).to(device)
    if distributed and device.type == "cuda" and config.train.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], config)
    return TrainStep(config, method, model, optimizer, device, total_steps)
