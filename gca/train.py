"""Self-supervised pretraining for every method of the paper (losses by name, and BYOL).

One loop serves all methods: two augmented views per image → encoder + projector → a loss from
:func:`gca.losses.make_loss` (or BYOL's symmetric normalised-MSE against an EMA target). Features:

- SGD (momentum, Nesterov) or Adam; learning rate warmed up linearly then cosine-decayed, **stepped
  per iteration** (:func:`learning_rate`) — the authors' code steps a per-step schedule once per
  epoch, so it barely decays (``official-code.md`` item 8).
- Mixed precision on CUDA (bfloat16 by default, float16 with a gradient scaler); the loss itself is
  always evaluated in float32. Non-finite losses stop the run with an error naming the step.
- Seeds and deterministic algorithms on CPU; data order and augmentation randomness are derived
  from ``(seed, epoch, rank)``, so a run resumed from a checkpoint replays exactly the same batches.
- Atomic checkpoints (write to a temporary file, then ``os.replace``) every
  ``train.checkpoint_every`` epochs and at the end; ``resume=True`` continues a killed run and
  reaches the same weights and metrics as an uninterrupted one.
- Distributed data parallel under ``torchrun`` (NCCL on GPUs, gloo on CPU). Contrastive losses are
  built with ``gather=True`` so that every rank aligns the **global** batch (the authors' code
  aligns only the local batch, ``official-code.md`` item 10).
- A run directory: ``config.json`` (the resolved :class:`~gca.config.RunConfig`),
  ``provenance.json`` (:func:`gca.provenance.collect_provenance`), ``metrics.jsonl`` (one JSON
  object per line: step and epoch records), ``checkpoint.pt`` and ``summary.json``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from gca.config import RunConfig, config_from_dict, config_to_dict, run_config_hash, validate_config
from gca.models import BYOLModel, build_model, ema_momentum

__all__ = [
    "CHECKPOINT_NAME",
    "PretrainResult",
    "TrainingDataChangedError",
    "pretrain",
    "learning_rate",
    "byol_loss",
    "build_optimizer",
    "resolve_device",
    "load_run",
    "remove_orphaned_temp_files",
    "read_json_file",
    "load_checkpoint",
    "save_checkpoint_atomic",
    "read_metrics",
    "epoch_generator_seed",
    "TrainStep",
    "build_training",
    "ViewMaker",
    "batch_target",
]

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
PROVENANCE_NAME = "provenance.json"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"

# Config fields that may differ between a killed run and its resumption (they do not change results).
_RESUME_FREE_KEYS = {("train", "device"), ("train", "threads"), ("train", "log_every"), ("train", "num_workers"),
                     ("data", "data_dir")}  # the data itself is checked by its checksum


# ---------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------

class TrainingDataChangedError(ValueError):
    """Resuming a run whose checkpoint was trained on other data (its checksum differs)."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA if available else CPU; ``"cuda"`` without a GPU raises ValueError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    return torch.device(device)


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


def epoch_generator_seed(seed: int, epoch: int, rank: int = 0, stream: int = 0) -> int:
    """Seed of the random stream ``stream`` (0: data order, 1: augmentations) of ``epoch``/``rank``.

    Derived, not carried: a resumed run needs no saved RNG state to replay an epoch.
    """
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101 + stream) % (2**63 - 1)


def build_optimizer(params, config: RunConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or Adam with weight decay, from ``config.optim``."""
    o = config.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                               weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.adam_betas), weight_decay=o.weight_decay)
    raise ValueError(f"optim.name must be 'sgd' or 'adam', got {o.name!r}")


def save_checkpoint_atomic(state: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then ``os.replace``.

    A failed write (disk full, a kill) never replaces the previous checkpoint; the temporary file
    is removed on failure (and an orphan left by a killed process by :func:`remove_orphaned_temp_files`).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) or "enforce fail" in str(exc) or "file write failed" in str(exc):
            why = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc).splitlines()[0]
            raise OSError(getattr(exc, "errno", None) or errno.EIO,
                          f"could not write the checkpoint {path} ({why}); the previous checkpoint is intact: "
                          "free disk space, then continue with --resume") from None
        raise


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load ``checkpoint.pt`` with ``torch.load(weights_only=True)``: tensors and plain Python values only.

    A checkpoint that carries other objects (code that unpickling would run) is refused with a
    ValueError: only load checkpoints written by ``gca pretrain`` (or that you trust and convert).
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; run 'gca pretrain --out {path.parent}' first")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "global" in str(exc).lower():
            raise ValueError(f"{path} is not a plain gca checkpoint: it carries Python objects that loading would "
                             f"execute ({first}); refusing to load it. Only load checkpoints written by "
                             "'gca pretrain' or from a source you trust") from None
        raise ValueError(f"{path} is damaged ({first}); restore it or retrain the run") from None
    except (EOFError, RuntimeError) as exc:
        raise ValueError(f"{path} is damaged or truncated ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                         "restore it, or delete it and retrain the run") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a gca checkpoint (it holds a {type(state).__name__}, not a dict); point at "
                         "a run directory written by 'gca pretrain'")
    return state


def remove_orphaned_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.tmp-<pid>`` files a killed process left in ``run_dir`` (its pid no longer runs).

    A kill or a full disk during a save leaves such a file (hundreds of MB for a checkpoint);
    :func:`pretrain` calls this on start and on resume. Returns the files removed.
    """
    removed = []
    for tmp in Path(run_dir).glob(".*.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_json_file(path: str | os.PathLike, what: str) -> Any:
    """JSON of ``path``; a damaged file raises ValueError naming it and the fix."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} ({what}) is not valid JSON ({exc.msg} at line {exc.lineno}); the file is damaged: "
                         "restore it, or start a new run directory") from None


def read_metrics(run_dir: str | os.PathLike, kind: str | None = None) -> list[dict]:
    """Records of ``metrics.jsonl`` (optionally only ``type == kind``).

    A torn last line (a kill during its write: no final newline) is dropped; any other unreadable
    line raises ValueError naming the file and the line.
    """
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    records = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if k == len(lines) - 1:  # no newline after it: the write was cut off
                warnings.warn(f"{path}: dropped a torn last line ({len(line)} characters, written when the run "
                              "was killed)", RuntimeWarning, stacklevel=2)
                continue
            raise ValueError(f"{path} line {k + 1} is not valid JSON ({exc.msg}); the file is damaged: delete that "
                             "line (records after the last checkpoint are rewritten on --resume) or start a new "
                             "run") from None
    return [r for r in records if kind is None or r.get("type") == kind]


def _json_dump(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"could not write {path} ({exc.strerror or exc}): free disk space, then continue "
                                 "with --resume") from None


# ---------------------------------------------------------------------------------------------
# Distributed helpers
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _setup_distributed(device_request: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_request != "cpu" and torch.cuda.is_available()
    if dist.is_initialized():
        return _Dist(rank, world, local, False)
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(rank, world, local, True)


def _all_reduce_mean(value: float, dist_info: _Dist, device: torch.device) -> float:
    if not dist_info.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist_info.world_size


# ---------------------------------------------------------------------------------------------
# Data pipeline (in-memory uint8 images → two augmented, normalised views on the device)
# ---------------------------------------------------------------------------------------------
def _load_training_data(config: RunConfig):
    from gca import data as gdata

    d = config.data
    ds = gdata.load_dataset(d.dataset, split="train", data_dir=d.data_dir, **d.load_kwargs)
    if d.n_per_class is not None:
        ds = gdata.balanced_subset(ds, d.n_per_class, seed=config.train.seed)
    return ds


def _dataset_stats(ds) -> tuple[Tensor, Tensor]:
    """Per-channel normalisation of ``ds`` (published values where known, see :mod:`gca.data`)."""
    return torch.as_tensor(ds.mean, dtype=torch.float32), torch.as_tensor(ds.std, dtype=torch.float32)


class _LazyBatches(torch.utils.data.Dataset):
    def __init__(self, dataset, batches: list[Tensor]):
        self.dataset, self.batches = dataset, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Tensor:
        return self.dataset.load(self.batches[i])


class _BatchSource:
    """uint8 image batches on the device: indexed from device memory for in-memory datasets, or
    decoded by ``num_workers`` background processes for lazy folder datasets (ImageNet-100)."""

    def __init__(self, dataset, device: torch.device, num_workers: int):
        self.dataset, self.device, self.num_workers = dataset, device, num_workers
        images = getattr(dataset, "images", None)
        self.images = None
        if images is not None:
            if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
                raise TypeError(f"dataset {dataset.name!r} must hold uint8 images (N, C, H, W)")
            self.images = images.to(device)
        elif not hasattr(dataset, "load"):
            raise TypeError(f"dataset {getattr(dataset, 'name', dataset)!r} has neither .images nor .load(indices)")

    def iterate(self, batches: list[Tensor]):
        if self.images is not None:
            for idx in batches:
                yield self.images.index_select(0, idx.to(self.device))
            return
        loader = torch.utils.data.DataLoader(
            _LazyBatches(self.dataset, batches), batch_size=None, shuffle=False, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
        )
        for x in loader:
            yield x.to(self.device, non_blocking=True)


class ViewMaker:
    """Augment a uint8 batch twice (independent per-sample randomness) and normalise."""

    def __init__(self, augment_name: str, size: int, mean: Tensor, std: Tensor, device: torch.device):
        from gca import augment as gaug

        self.augment = gaug.build_augment(augment_name, size)
        self.mean = mean.to(device).view(1, -1, 1, 1)
        self.std = std.to(device).view(1, -1, 1, 1)

    def __call__(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        v1 = self.augment(x, generator=generator)
        v2 = self.augment(x, generator=generator)
        return (v1 - self.mean) / self.std, (v2 - self.mean) / self.std


class _BYOLForward(nn.Module):
    """DDP-wrappable BYOL step: ``x`` (2B images: both views) → (online predictions, target projections)."""

    def __init__(self, model: BYOLModel):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = self.model.online_predictions(x)
        with torch.no_grad():
            zt = self.model.target_projections(x)
        return p, zt


def batch_target(config: RunConfig, dataset, global_indices: Tensor, device: torch.device) -> Tensor | None:
    """The target plan of one (global) batch as configured by ``loss.target`` (None = positives Π).

    Built from the labels / domains of the *global* batch (every process holds the whole index
    permutation), so it matches the gathered embeddings under DDP.
    """
    kind = config.loss.target
    if kind == "positive":
        return None
    from gca.losses import targets

    layout = config.loss.hparams.get("layout", "joint")
    if kind == "domain_prior":
        domains = getattr(dataset, "domains", None)
        if domains is None:
            raise ValueError(f"loss.target=domain_prior needs domain labels, but dataset {dataset.name!r} has none; "
                             "use a multi-domain dataset (e.g. rotated-digits, pacs)")
        plan = targets.domain_prior_plan(domains[global_indices], alpha=config.loss.target_alpha,
                                        beta=config.loss.target_beta, layout=layout)
    else:
        plan = targets.supervised_plan(dataset.labels[global_indices], layout)
    return plan.to(device)


class TrainStep:
    """One optimisation step of the pretraining loop, shared by :func:`pretrain` and the benchmarks.

    ``step((v1, v2), k)``: forward both views in one batch (under autocast on CUDA when enabled),
    the loss in float32 — :func:`gca.losses.make_loss` or :func:`byol_loss` — backward (through
    the gradient scaler), optimiser step and, for BYOL, the EMA update of the target with
    :func:`gca.models.ema_momentum` at ``k + 1``. Returns the loss value (a Python float);
    raises FloatingPointError on a non-finite loss, before any parameter changes.
    """

    def __init__(self, config: RunConfig, model: nn.Module, loss_fn: nn.Module | None,
                 optimizer: torch.optim.Optimizer, device: torch.device, total_steps: int):
        self.config, self.model, self.loss_fn, self.optimizer = config, model, loss_fn, optimizer
        self.device, self.total_steps = device, total_steps
        self.is_byol = config.loss.method == "byol"
        self.use_amp = config.train.amp and device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if config.train.amp_dtype == "bfloat16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.forward_module: nn.Module = _BYOLForward(model) if self.is_byol else model

    def wrap_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.forward_module = DDP(self.forward_module, device_ids=ids)

    def loss(self, v1: Tensor, v2: Tensor, target: Tensor | None = None) -> Tensor:
        """Forward both views and return the (float32) loss tensor (``target``: a plan for this batch)."""
        both = torch.cat([v1, v2])
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            out = self.forward_module(both)
        with torch.autocast(device_type=self.device.type, enabled=False):
            if self.is_byol:
                p, zt = out
                p1, p2 = p.float().chunk(2)
                t1, t2 = zt.float().chunk(2)
                return byol_loss(p1, p2, t1, t2)
            z1, z2 = out.float().chunk(2)
            finite = torch.isfinite(out).all()  # read only if the loss rejects its input (no extra sync)
            try:
                return self.loss_fn(z1, z2) if target is None else self.loss_fn(z1, z2, target=target)
            except ValueError:
                if not bool(finite):  # a diverged encoder, not a user input error
                    raise FloatingPointError(f"the encoder's output holds NaN or inf (method "
                                             f"{self.config.loss.method!r})") from None
                raise

    def step(self, views: tuple[Tensor, Tensor], step: int, target: Tensor | None = None) -> float:
        loss = self.loss(*views, target=target)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss of method {self.config.loss.method!r} is {value}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.is_byol:
            self.model.update_target(ema_momentum(min(step + 1, self.total_steps), self.total_steps,
                                                  self.config.loss.ema_base))
        return value


def build_training(config: RunConfig, *, in_channels: int, device: torch.device,
                   loss_factory: Callable[..., nn.Module] | None = None, distributed: bool = False,
                   total_steps: int = 1) -> TrainStep:
    """Model (seeded with ``train.seed``), loss, optimiser and scaler as configured, as a :class:`TrainStep`."""
    tcfg, m = config.train, config.model
    torch.manual_seed(tcfg.seed)  # model initialisation
    is_byol = config.loss.method == "byol"
    model = build_model(
        backbone=m.backbone, stem=m.stem, in_channels=in_channels, width=m.width, norm=m.norm,
        projector_hidden_dim=m.projector_hidden_dim, projector_out_dim=m.projector_out_dim,
        projector_bias=m.projector_bias, projector_batch_norm=m.projector_batch_norm,
        byol=is_byol, predictor_hidden_dim=m.predictor_hidden_dim,
    ).to(device)
    if distributed and device.type == "cuda" and tcfg.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    loss_fn = None
    if not is_byol:
        factory = loss_factory
        if factory is None:
            from gca.losses import make_loss as factory
        hparams = dict(config.loss.hparams)
        if distributed:
            hparams["gather"] = True  # every process aligns the global batch
        loss_fn = factory(config.loss.method, **hparams).to(device)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], config)
    return TrainStep(config, model, loss_fn, optimizer, device, total_steps)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
@dataclass
class PretrainResult:
    """What :func:`pretrain` returns: the run directory, the trained model (unwrapped, on the
    training device) and the per-epoch records written to ``metrics.jsonl``."""

    run_dir: Path
    model: nn.Module
    epochs: list[dict]
    resumed_from_epoch: int | None = None


def _check_resume_config(saved: dict, current: dict) -> None:
    diffs = []
    for section, values in current.items():
        if not isinstance(values, dict):
            if saved.get(section) != values:
                diffs.append(f"{section}: {saved.get(section)!r} -> {values!r}")
            continue
        for key, value in values.items():
            if (section, key) in _RESUME_FREE_KEYS:
                continue
            old = saved.get(section, {}).get(key)
            if old != value:
                diffs.append(f"{section}.{key}: {old!r} -> {value!r}")
    if diffs:
        raise ValueError(
            "cannot resume: the configuration differs from the checkpoint's ("
            + "; ".join(diffs) + "). Resume with the run's own config (gca pretrain --resume --out DIR) "
            "or start a new run directory."
        )


def pretrain(
    config: RunConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    loss_factory: Callable[..., nn.Module] | None = None,
    stop_after_epochs: int | None = None,
) -> PretrainResult:
    """Pretrain an encoder as configured and write the run directory ``out_dir``.

    Parameters
    ----------
    config
        A resolved :class:`~gca.config.RunConfig` (see :func:`gca.config.resolve_config`).
    out_dir
        Run directory. Must not already hold a checkpoint unless ``resume``.
    resume
        Continue from ``out_dir/checkpoint.pt`` (its config must equal ``config`` except for
        device, threads and logging frequency); a finished run is returned as is.
    progress
        Show a tqdm progress bar (rank 0 only).
    loss_factory
        ``(name, **hparams) -> nn.Module``; default :func:`gca.losses.make_loss`.
    stop_after_epochs
        Stop once this many epochs (in total) are done, after writing a checkpoint, as a
        time-limited job would; the run continues later with ``resume=True`` on the unchanged
        schedule. ``None``: run to ``train.epochs``.

    Returns
    -------
    PretrainResult
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a gca.config.RunConfig, got {type(config).__name__}")
    validate_config(config, check_loss=loss_factory is None)
    if stop_after_epochs is not None and (isinstance(stop_after_epochs, bool) or not isinstance(stop_after_epochs, int)
                                          or stop_after_epochs < 1):
        raise ValueError(f"stop_after_epochs must be a positive int or None, got {stop_after_epochs!r}")
    out = Path(out_dir)
    tcfg = config.train
    dist_info = _setup_distributed(tcfg.device)
    threads_before = torch.get_num_threads()
    try:
        return _pretrain(config, out, resume, progress, loss_factory, dist_info, stop_after_epochs)
    finally:
        torch.set_num_threads(threads_before)
        if dist_info.initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def _pretrain(config, out, resume, progress, loss_factory, dist_info: _Dist, stop_after_epochs) -> PretrainResult:
    tcfg = config.train
    is_main = dist_info.rank == 0
    if dist_info.enabled and resolve_device(tcfg.device).type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    else:
        device = resolve_device(tcfg.device)
    if tcfg.threads is not None:
        torch.set_num_threads(tcfg.threads)
    if tcfg.deterministic:
        # Bit-reproducible on CPU; on CUDA some kernels have no deterministic variant (warn only).
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    ckpt_path = out / CHECKPOINT_NAME
    checkpoint = None
    if ckpt_path.exists():
        if not resume:
            raise FileExistsError(
                f"{out} already holds a run ({CHECKPOINT_NAME}); pass resume=True (--resume) to continue it "
                "or choose another output directory"
            )
        checkpoint = load_checkpoint(ckpt_path, map_location="cpu")
    elif resume and not (out / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"cannot resume: {out} holds no run (no {CONFIG_NAME}); check the path, or drop "
                                "--resume (resume=False) to start a new run there")
    elif not resume and out.is_dir() and any(out.iterdir()):
        what = (f"a run killed before its first checkpoint ({CONFIG_NAME}); pass --resume to restart it"
                if (out / CONFIG_NAME).is_file() else "files that are not a run; choose a new or empty directory")
        raise FileExistsError(f"{out} is not empty: it holds {what} (pretraining never overwrites files it did "
                              "not write)")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        for orphan in remove_orphaned_temp_files(out):
            print(f"[gca] removed {orphan.name}, left by a killed process", file=sys.stderr)

    # ---- data -------------------------------------------------------------------------------
    dataset = _load_training_data(config)
    n_images = len(dataset)
    channels, height = dataset.channels, dataset.image_size[0]
    in_channels = config.model.in_channels or channels
    if in_channels != channels:
        raise ValueError(f"model.in_channels={in_channels} but dataset {dataset.name!r} has {channels} channels")
    config.model.in_channels = in_channels  # resolved value recorded in config.json
    size = config.data.image_size or height
    global_batch = tcfg.batch_size
    if global_batch % dist_info.world_size:
        raise ValueError(
            f"train.batch_size={global_batch} must be divisible by the number of processes ({dist_info.world_size})"
        )
    local_batch = global_batch // dist_info.world_size
    steps_per_epoch = n_images // global_batch  # drop the last incomplete batch
    if steps_per_epoch < 1:
        raise ValueError(
            f"train.batch_size={global_batch} exceeds the {n_images} training images of {dataset.name!r}; "
            "lower train.batch_size or use more data"
        )
    total_steps = steps_per_epoch * tcfg.epochs
    warmup_steps = min(int(round(config.optim.warmup_epochs * steps_per_epoch)), total_steps)
    if config.loss.target == "domain_prior" and getattr(dataset, "domains", None) is None:
        raise ValueError(f"loss.target=domain_prior needs domain labels, but dataset {dataset.name!r} has none; "
                         "use a multi-domain dataset (e.g. rotated-digits, pacs)")
    source = _BatchSource(dataset, device, tcfg.num_workers)
    mean, std = _dataset_stats(dataset)
    views = ViewMaker(config.data.augment, size, mean, std, device)

    # ---- model, loss, optimiser -------------------------------------------------------------
    stepper = build_training(config, in_channels=in_channels, device=device, loss_factory=loss_factory,
                             distributed=dist_info.enabled, total_steps=total_steps)
    model, optimizer, scaler = stepper.model, stepper.optimizer, stepper.scaler

    start_epoch, resumed_from = 0, None
    if checkpoint is not None:
        _check_resume_config(checkpoint["config"], config_to_dict(config))
        saved_sum, data_sum = checkpoint.get("data_checksum"), getattr(dataset, "checksum", None)
        if saved_sum is not None and data_sum is not None and saved_sum != data_sum:
            raise TrainingDataChangedError(f"cannot resume: the training data changed (checksum {data_sum}, the checkpoint was "
                             f"trained on {saved_sum}); point --data-dir at the run's data or start a new run")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start_epoch = resumed_from = int(checkpoint["epoch"])

    if dist_info.enabled:
        stepper.wrap_ddp()

    # ---- run directory ----------------------------------------------------------------------
    config_dict = config_to_dict(config)
    if is_main:
        _json_dump(config_dict, out / CONFIG_NAME)
        from gca.provenance import collect_provenance

        prov = collect_provenance(
            seed=tcfg.seed, data_checksum=getattr(dataset, "checksum", None), device=device,
            config_hash=run_config_hash(config), world_size=dist_info.world_size,
            command=" ".join(sys.argv), dataset=dataset.name, n_train_images=int(n_images),
            dataset_description=getattr(dataset, "description", None), resumed_from_epoch=resumed_from,
        )
        # the original record is kept; a resumption adds its own
        name = PROVENANCE_NAME if checkpoint is None else f"provenance-resumed-at-epoch-{start_epoch}.json"
        _json_dump(prov, out / name)
        metrics_path = out / METRICS_NAME
        if checkpoint is not None and metrics_path.exists():
            # Drop records written after the checkpoint (the killed part is replayed).
            kept = [r for r in read_metrics(out) if r.get("epoch", 0) < start_epoch]
            metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif checkpoint is None:
            metrics_path.write_text("")
    epoch_records = [r for r in read_metrics(out, "epoch")] if (is_main and checkpoint is not None) else []

    def write_summary() -> None:
        _json_dump(
            {"method": config.loss.method, "epochs": tcfg.epochs, "final_loss": epoch_records[-1]["loss"]
             if epoch_records else None, "steps": total_steps, "resumed_from_epoch": resumed_from,
             "config_hash": run_config_hash(config)},
            out / SUMMARY_NAME,
        )

    if checkpoint is not None and checkpoint.get("finished"):
        if is_main and not (out / SUMMARY_NAME).is_file():  # killed between the last checkpoint and the summary
            write_summary()
        return PretrainResult(out, model, epoch_records, resumed_from)

    def log(record: dict) -> None:
        if is_main:
            with open(out / METRICS_NAME, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def make_checkpoint(epoch_done: int, finished: bool) -> None:
        if not is_main:
            return
        save_checkpoint_atomic(
            {
                "epoch": epoch_done, "global_step": epoch_done * steps_per_epoch, "finished": finished,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "config": config_dict, "method": config.loss.method, "feat_dim": model.backbone.feat_dim,
                "data_checksum": getattr(dataset, "checksum", None),
            },
            out / CHECKPOINT_NAME,
        )

    # ---- loop -------------------------------------------------------------------------------
    bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, desc=f"pretrain {config.loss.method}",
               disable=not (progress and is_main), unit="step", dynamic_ncols=True)
    model.train()
    try:
        for epoch in range(start_epoch, tcfg.epochs):
            order_gen = torch.Generator().manual_seed(epoch_generator_seed(tcfg.seed, epoch, 0, 0))
            perm = torch.randperm(n_images, generator=order_gen)
            offset = dist_info.rank * local_batch  # rank r holds rows [r·b, (r+1)·b) of each global batch
            batches = [perm[k * global_batch + offset:k * global_batch + offset + local_batch]
                       for k in range(steps_per_epoch)]
            # CPU generator: the same views on CPU and CUDA (gca.augment draws parameters on it).
            aug_gen = torch.Generator().manual_seed(epoch_generator_seed(tcfg.seed, epoch, dist_info.rank, 1))
            torch.manual_seed(epoch_generator_seed(tcfg.seed, epoch, dist_info.rank, 2))
            t_epoch, loss_sum = time.perf_counter(), 0.0
            for step_in_epoch, x in enumerate(source.iterate(batches)):
                step = epoch * steps_per_epoch + step_in_epoch
                lr = learning_rate(step, total_steps=total_steps, warmup_steps=warmup_steps,
                                   base_lr=config.optim.lr, schedule=config.optim.schedule,
                                   final_lr_fraction=config.optim.final_lr_fraction)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                target = None
                if config.loss.target != "positive":
                    target = batch_target(config, dataset, perm[step_in_epoch * global_batch:
                                                                (step_in_epoch + 1) * global_batch], device)
                try:
                    loss_value = stepper.step(views(x, aug_gen), step, target)
                except FloatingPointError as exc:
                    raise FloatingPointError(f"non-finite loss at step {step} (epoch {epoch}, lr {lr:.4g}): lower "
                                             "optim.lr, check loss.hparams (e.g. a larger epsilon) or disable "
                                             f"train.amp [{exc}]") from None
                loss_value = _all_reduce_mean(loss_value, dist_info, device)
                loss_sum += loss_value
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss_value:.4f}", lr=f"{lr:.3g}")
                if step % tcfg.log_every == 0:
                    log({"type": "step", "epoch": epoch, "step": step, "loss": loss_value, "lr": lr})
            seconds = time.perf_counter() - t_epoch
            record = {
                "type": "epoch", "epoch": epoch, "loss": loss_sum / steps_per_epoch, "lr": lr,
                "steps": steps_per_epoch, "seconds": seconds,
                "images_per_s": steps_per_epoch * global_batch / max(seconds, 1e-9),
            }
            log(record)
            epoch_records.append(record)
            done = epoch + 1
            stopping = stop_after_epochs is not None and done >= stop_after_epochs and done < tcfg.epochs
            if done == tcfg.epochs or done % tcfg.checkpoint_every == 0 or stopping:
                make_checkpoint(done, finished=done == tcfg.epochs)
            if stopping:
                break
    finally:
        bar.close()

    finished = bool(epoch_records) and epoch_records[-1]["epoch"] + 1 == tcfg.epochs
    if is_main and finished:
        write_summary()
    return PretrainResult(out, model, epoch_records, resumed_from)


def load_run(run_dir: str | os.PathLike, *, map_location: Any = "cpu", require_finished: bool = True):
    """Rebuild the model of a run directory from ``config.json`` + ``checkpoint.pt``.

    Returns ``(config, model)`` with the model in eval mode on ``map_location``.
    """
    run = Path(run_dir)
    cfg_path = run / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run} is not a run directory (no {CONFIG_NAME}); create one with 'gca pretrain'")
    config = config_from_dict(read_json_file(cfg_path, "the run's configuration"))
    ckpt = load_checkpoint(run / CHECKPOINT_NAME, map_location=map_location)
    if require_finished and not ckpt.get("finished"):
        raise RuntimeError(
            f"run {run} stopped after epoch {ckpt['epoch']} of {config.train.epochs}; finish it with "
            f"'gca pretrain --resume --out {run}', or evaluate it as it is with 'gca evaluate --allow-unfinished' "
            "(require_finished=False)"
        )
    m = config.model
    model = build_model(
        backbone=m.backbone, stem=m.stem, in_channels=m.in_channels or 3, width=m.width, norm=m.norm,
        projector_hidden_dim=m.projector_hidden_dim, projector_out_dim=m.projector_out_dim,
        projector_bias=m.projector_bias, projector_batch_norm=m.projector_batch_norm,
        byol=config.loss.method == "byol", predictor_hidden_dim=m.predictor_hidden_dim,
    )
    state = ckpt["model"]
    if any(".module." in k for k in state):  # pragma: no cover - defensive, we save unwrapped models
        state = {k.replace(".module.", "."): v for k, v in state.items()}
    model.load_state_dict(state)
    model.to(map_location).eval()
    return config, model
