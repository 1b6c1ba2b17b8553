"""Set-up of a training process: device, distributed group, threads, determinism and random streams.

Every random number of a run comes from a stream derived from ``train.seed`` alone, never from
what ran before it (so every method of a seed is *paired*, issue 12 item 2):

- :func:`init_seed` seeds the construction of each part of the network (backbone, projector,
  method heads) on its own stream: the backbone's initial weights do not depend on which heads a
  method adds, nor in which order they are built;
- :func:`epoch_generator_seed` seeds, per epoch and process, the data order (stream 0), the
  augmentations (stream 1) and the global RNG (stream 2), so a resumed run needs no saved RNG state.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

__all__ = ["resolve_device", "DistInfo", "setup_distributed", "all_reduce_mean", "configure_runtime",
           "epoch_generator_seed", "INIT_STREAMS", "init_seed", "seeded"]

_MAX_SEED = 2**63 - 1

#: The parts of a network built from their own random stream (see :func:`init_seed`).
INIT_STREAMS = ("backbone", "projector", "predictor", "classifier")


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


# ---------------------------------------------------------------------------------------------
# Random streams
# ---------------------------------------------------------------------------------------------
def epoch_generator_seed(seed: int, epoch: int, rank: int = 0, stream: int = 0) -> int:
    """Seed of the random stream ``stream`` (0: data order, 1: augmentations, 2: global RNG) of
    ``epoch``/``rank``.

    Derived, not carried: a resumed run needs no saved RNG state to replay an epoch.
    """
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101 + stream) % _MAX_SEED


def init_seed(seed: int, part: str) -> int:
    """Seed of the initial weights of ``part`` (one of :data:`~gca.train.runtime.INIT_STREAMS`) for run seed ``seed``.

    Disjoint from the epoch streams of :func:`epoch_generator_seed` for any realistic seed and epoch.
    """
    if part not in INIT_STREAMS:
        raise ValueError(f"part must be one of {INIT_STREAMS}, got {part!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return (seed * 1_000_003 + 999_999_937 * (1 + INIT_STREAMS.index(part))) % _MAX_SEED


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the CPU generator seeded to ``seed``, then restore its previous state.

    Modules are built on the CPU (then moved), so their initial weights are the same on every device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


# ---------------------------------------------------------------------------------------------
# Distributed group
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """This process in the (possibly trivial) process group started by ``torchrun``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run directory."""
        return self.rank == 0


def setup_distributed(device_request: str) -> DistInfo:
    """Join the process group described by ``torchrun``'s environment (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_request != "cpu" and torch.cuda.is_available()
    if dist.is_initialized():
        return DistInfo(rank, world, local, False)
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, True)


def teardown_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if info.initialised_here:
        dist.destroy_process_group()


def all_reduce_mean(value: float, info: DistInfo, device: torch.device) -> float:
    """Mean of a Python float over the processes (the value itself without a group)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


# ---------------------------------------------------------------------------------------------
# Device, threads, determinism
# ---------------------------------------------------------------------------------------------
def configure_runtime(tcfg, info: DistInfo) -> torch.device:
    """Device of this process, CPU thread count and deterministic algorithms as ``tcfg``
    (a :class:`~gca.config.TrainConfig`) asks; returns the device.

    The caller restores the thread count afterwards (:func:`gca.train.pretrain` does).
    """
    if info.enabled and resolve_device(tcfg.device).type == "cuda":
        device = torch.device("cuda", info.local_rank)
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
    return device
