r"""The global batch in data-parallel training: all-gather with gradients.

An alignment loss couples every anchor with every other sample through the plan (Sinkhorn mixes
all rows and columns), so under ``torch.nn.parallel.DistributedDataParallel`` (DDP) each process
must see the *global* batch: ``z_global = [z_rank0; z_rank1; ...]``. The authors' code aligns
only the local batch (``official-code.md`` item 10); here the losses gather first
(``make_loss(..., gather=True)``).

Gradient convention
-------------------
Every process computes the same global loss :math:`L` from the gathered batch. The backward of
:func:`gather_with_grad` *sums* the incoming gradients over processes and returns the local slice,
so each process receives :math:`W\,\partial L / \partial z_r` (``W`` = world size) for its own
embeddings; DDP then *averages* parameter gradients over processes, which gives exactly
:math:`\partial L / \partial \theta` — the gradient of the single-process loss on the concatenated
batch. (Without DDP's averaging, divide by ``W``.)

Processes may hold different numbers of rows (e.g. a short last batch): sizes are exchanged first
and the tensors padded for the collective.

Outside an initialised process group every function is the identity, so single-process code pays
nothing.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["is_distributed", "world_size", "rank", "gather", "gather_with_grad"]


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """Index of this process (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _sizes(x: Tensor) -> list[int]:
    local = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def _all_gather_rows(x: Tensor, sizes: list[int]) -> Tensor:
    """Concatenate every process's ``x`` along dim 0 (rows may differ in number)."""
    x = x.contiguous()
    largest = max(sizes)
    if x.shape[0] < largest:  # pad for the collective, trim afterwards
        pad = x.new_zeros((largest - x.shape[0],) + tuple(x.shape[1:]))
        x = torch.cat([x, pad])
    buffers = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(buffers, x)
    return torch.cat([b[:s] for b, s in zip(buffers, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D401
        sizes = _sizes(x)
        ctx.sizes = sizes
        ctx.rank = dist.get_rank()
        return _all_gather_rows(x, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every process's loss depends on our rows
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]]


def _check_tensor(x, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x)!r}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have a batch dimension (dim 0), got a 0-d tensor")


def gather_with_grad(x: Tensor) -> Tensor:
    r"""All-gather ``x`` along dim 0 across processes, differentiably.

    .. math:: x_{\mathrm{global}} = [x_0; x_1; \dots; x_{W-1}]

    Parameters
    ----------
    x : Tensor, shape ``(B_r, ...)``
        This process's rows (``B_r`` may differ between processes; other dims must agree).

    Returns
    -------
    Tensor, shape ``(sum_r B_r, ...)``
        Rows of process 0 first. Gradients flow back to ``x`` with the convention of the module
        docstring (summed over processes, so that DDP's averaging yields the exact gradient).
        The identity outside a multi-process group.
    """
    _check_tensor(x, "x")
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


def gather(x: Tensor) -> Tensor:
    """All-gather ``x`` along dim 0 without gradients (labels, domain ids, indices).

    Parameters
    ----------
    x : Tensor, shape ``(B_r, ...)``

    Returns
    -------
    Tensor, shape ``(sum_r B_r, ...)``, rows of process 0 first; ``x`` itself outside a group.
    """
    _check_tensor(x, "x")
    if not is_distributed():
        return x
    with torch.no_grad():
        return _all_gather_rows(x.detach(), _sizes(x))
