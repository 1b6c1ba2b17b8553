"""The cost of a loss: step times measured side by side, and the memory its backward keeps.

Every timing here is **interleaved** (:func:`interleaved_rounds`): the methods are measured in
turn, round after round (INCE, GCA-INCE, GCA-UOT, INCE, ...), so that a change of load on a shared
machine hits all of them alike and the per-round ratios are paired. Two measurements use it:

- :func:`measure_step_times` — encoder + projector forward on random images, the loss, backward
  (no optimiser, no augmentation): the cost page of the book (spec §5, "GCA costs little more
  than INCE").
- :func:`measure_train_steps` — exactly the step :func:`gca.train.pretrain` runs
  (:class:`gca.train.TrainStep`: two augmented views made on the device, forward, loss, backward,
  optimiser step): ``benchmarks/bench_step.py`` and the GPU campaign.

:func:`saved_tensor_bytes` counts the bytes autograd keeps for one loss's backward pass (the
memory cost of a gradient mode, device-free).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import torch

from gca.config import resolve_config
from gca.losses import make_loss
from gca.models import build_model
from gca.provenance import device_description
from gca.train import ViewMaker, build_training, resolve_device

__all__ = ["interleaved_rounds", "parse_method", "measure_step_times", "measure_train_steps", "saved_tensor_bytes"]


def interleaved_rounds(names: Sequence[str], measure: Callable[[str, int], Mapping[str, float]], *,
                       rounds: int, warmup: int, progress: bool = False) -> dict[str, dict[str, list[float]]]:
    """Call ``measure(name, round)`` for every name in turn, ``warmup + rounds`` rounds; returns
    ``{name: {quantity: [value per kept round]}}`` of the last ``rounds`` rounds (``measure``
    returns ``{quantity: seconds}``). Round ``k`` of every name is measured under the same load."""
    for label, value, low in (("rounds", rounds, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label}={value!r} must be an integer >= {low}")
    if not names:
        raise ValueError("names is empty: give at least one method to time")
    out: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    total, done = (warmup + rounds) * len(names), 0
    for r in range(warmup + rounds):
        for n in names:
            values = measure(n, r)
            if r >= warmup:
                for k, v in values.items():
                    out[n].setdefault(k, []).append(v)
            done += 1
            if progress:
                print(f"\r{done}/{total} steps", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return out


def parse_method(text: str) -> tuple[str, dict[str, Any]]:
    """``"gca-ince@n_iter=5@epsilon=0.2"`` → ``("gca-ince", {"n_iter": 5, "epsilon": 0.2})``."""
    name, *settings = text.split("@")
    kw: dict[str, Any] = {}
    for s in settings:
        key, sep, value = s.partition("=")
        if not sep or not key:
            raise ValueError(f"method {text!r}: {s!r} is not key=value (e.g. 'gca-ince@n_iter=5')")
        kw[key] = int(value) if value.isdigit() else float(value)
    return name, kw


def measure_step_times(methods: Sequence[str], *, batch_size: int = 256, image_size: int = 16, width: int = 16,
                       in_channels: int = 3, repeats: int = 5, warmup: int = 1, seed: int = 0,
                       threads: int | None = 1) -> dict[str, dict[str, Any]]:
    """Wall-clock seconds of one training step (random images → encoder + projector → loss →
    backward) per method (a name, or ``name@key=value...``: :func:`parse_method`), measured
    interleaved over ``repeats`` rounds; also the loss alone (forward + backward on fixed
    embeddings). Returns ``{method: {"step_median", "step_min", "loss_median", "loss_min",
    "step_all", "loss_all"}}`` (``*_all``: one value per round, paired across methods)."""
    if threads is not None:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * batch_size, in_channels, image_size, image_size, generator=g)
    z_fixed = torch.randn(2 * batch_size, 128, generator=g)
    torch.manual_seed(seed)
    models = {m: build_model(backbone="small", in_channels=in_channels, width=width, projector_hidden_dim=512,
                             projector_out_dim=128) for m in methods}
    loss_fns = {}
    for m in methods:
        name, kw = parse_method(m)
        loss_fns[m] = make_loss(name, **kw)

    def measure(m: str, _round: int) -> dict[str, float]:
        model = models[m]
        t0 = time.perf_counter()
        out = model(x)
        z = out[1] if isinstance(out, tuple) else out
        z1, z2 = z.float().chunk(2)
        loss_fns[m](z1, z2).backward()
        t1 = time.perf_counter()
        a, b = z_fixed.clone().requires_grad_(True).chunk(2)
        loss_fns[m](a, b).backward()
        t2 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        return {"step": t1 - t0, "loss": t2 - t1}

    times = interleaved_rounds(list(methods), measure, rounds=repeats, warmup=warmup)
    return {m: {"step_median": statistics.median(t["step"]), "step_min": min(t["step"]),
                "loss_median": statistics.median(t["loss"]), "loss_min": min(t["loss"]),
                "step_all": t["step"], "loss_all": t["loss"]} for m, t in times.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_train_steps(*, methods: Sequence[str] = ("ince", "gca-ince", "gca-uot"), backbone: str = "small",
                        width: int | None = None, batch: int = 256, image_size: int = 32, channels: int = 3,
                        rounds: int = 8, warmup: int = 2, device: str = "cpu", threads: int | None = None,
                        amp: bool = False, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Time the training step of :func:`gca.train.pretrain` per method (the first is the reference),
    interleaved; returns a JSON-serialisable dict of medians (seconds) and ratios to the reference.

    On the CPU the step times (and ratios) are process CPU time (``time.process_time``), which a busy
    shared machine does not inflate the way it inflates wall-clock time; wall-clock medians are
    reported beside them. On CUDA they are wall-clock time with synchronisation. Also reported: the
    time to make the two views and the loss's own forward + backward on the step's embeddings.
    """
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    base = {"model.backbone": backbone, "model.width": "none" if width is None else width,
            "train.batch_size": batch, "train.amp": amp, "train.device": str(dev), "train.seed": seed}
    profile = "cpu" if backbone == "small" else "paper"
    steppers = {m: build_training(resolve_config(profile, method=m, overrides=base), in_channels=channels,
                                  device=dev, total_steps=10**6) for m in methods}
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, channels, image_size, image_size), dtype=torch.uint8, generator=g).to(dev)
    views = ViewMaker("simclr", image_size, torch.full((channels,), 0.5), torch.full((channels,), 0.25), dev)
    cpu_clock = dev.type == "cpu"
    clock = time.process_time if cpu_clock else time.perf_counter

    def measure(m: str, r: int) -> dict[str, float]:
        st = steppers[m]
        _sync(dev)
        w0, t0 = time.perf_counter(), clock()
        v = views(images, g)
        _sync(dev)
        t1 = clock()
        st.step(v, r)
        _sync(dev)
        w2, t2 = time.perf_counter(), clock()
        with torch.no_grad():  # the loss alone on this step's embeddings (forward + backward)
            z1, z2 = st.model(torch.cat(v)).float().chunk(2)
        z1.requires_grad_(True)
        z2.requires_grad_(True)
        _sync(dev)
        t3 = clock()
        st.loss_fn(z1, z2).backward()
        _sync(dev)
        t4 = clock()
        return {"step": t2 - t0, "wall": w2 - w0, "augment": t1 - t0, "loss": t4 - t3}

    times = interleaved_rounds(list(methods), measure, rounds=rounds, warmup=warmup, progress=progress)
    med = {m: statistics.median(t["step"]) for m, t in times.items()}
    loss_med = {m: statistics.median(t["loss"]) for m, t in times.items()}
    aug = statistics.median([v for t in times.values() for v in t["augment"]])
    ref = methods[0]
    return {
        "device": str(dev), "device_name": device_description(dev), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "backbone": backbone, "feat_dim": steppers[ref].model.backbone.feat_dim,
        "batch": batch, "image_size": image_size, "rounds": rounds, "amp": amp,
        "clock": "process CPU time" if cpu_clock else "wall clock",
        "step_s": med, "step_ratio": {m: med[m] / med[ref] for m in methods},
        "step_wall_s": {m: statistics.median(t["wall"]) for m, t in times.items()},
        "loss_fwd_bwd_s": loss_med, "loss_ratio": {m: loss_med[m] / loss_med[ref] for m in methods},
        "augment_two_views_s": aug, "augment_fraction_of_step": aug / med[ref],
        "reference": ref,
    }


def saved_tensor_bytes(method: str, *, n_pairs: int = 256, dim: int = 128, seed: int = 0, **hparams) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one loss evaluation
    (``torch.autograd.graph.saved_tensors_hooks``): the memory cost of a gradient mode, device-free."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2 * n_pairs, dim, generator=g, requires_grad=True)
    total = 0
    seen: set[int] = set()

    def pack(t):
        nonlocal total
        key = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        a, b = z.chunk(2)
        loss = make_loss(method, **hparams)(a, b)
    # A custom autograd.Function may also keep tensors as attributes of its context (the unrolled
    # solver keeps its kernel and per-step records there), which the hooks above do not see.
    for held in _tensors_held_by_contexts(loss.grad_fn):
        pack(held)
    loss.backward()
    return total


def _tensors_held_by_contexts(root) -> list:
    """Tensors reachable from the Python attributes of the custom-Function nodes of an autograd graph."""
    out, stack, visited = [], [root], set()

    def collect(obj, depth):
        if isinstance(obj, torch.Tensor):
            out.append(obj)
        elif depth < 4 and isinstance(obj, (list, tuple)):
            for x in obj:
                collect(x, depth + 1)
        elif depth < 4 and isinstance(obj, dict):
            for x in obj.values():
                collect(x, depth + 1)
        elif depth < 4 and hasattr(obj, "__dict__") and not isinstance(obj, type) and type(obj).__module__.startswith("gca"):
            for x in vars(obj).values():
                collect(x, depth + 1)

    while stack:
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            for name, value in vars(node).items():
                if not name.startswith("_"):
                    collect(value, 0)
        stack.extend(fn for fn, _ in node.next_functions)
    return out
