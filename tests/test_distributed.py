"""Global batch across processes: 2 gloo processes on CPU give the single-process loss and gradients."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gca import distributed
from gca.losses import LOSS_NAMES, make_loss
from gca.losses.targets import supervised_plan

D = torch.float64
SIZES = (3, 2)  # unequal slices: the gather pads and trims


def _data():
    g = torch.Generator().manual_seed(0)
    n = sum(SIZES)
    return (torch.randn(n, 6, generator=g, dtype=D), torch.randn(n, 6, generator=g, dtype=D),
            torch.randn(2 * n, 5, generator=g, dtype=D))


def _labels():
    return torch.tensor([0, 1, 0, 2, 1])


def _model():
    g = torch.Generator().manual_seed(1)
    model = torch.nn.Linear(5, 4).to(D)
    with torch.no_grad():
        model.weight.copy_(torch.randn(4, 5, generator=g, dtype=D))
        model.bias.copy_(torch.randn(4, generator=g, dtype=D))
    return model


def _ddp_step(model, x, n):
    out = model(x)  # one forward on both views: [view 1; view 2]
    return make_loss("gca-uot", gather=True)(out[:n], out[n:])


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        z1, z2, x = _data()
        n = sum(SIZES)
        lo, hi = sum(SIZES[:rank]), sum(SIZES[: rank + 1])
        results = {"world": distributed.world_size(), "rank": distributed.rank()}
        for name in LOSS_NAMES:
            a = z1[lo:hi].clone().requires_grad_(True)
            b = z2[lo:hi].clone().requires_grad_(True)
            loss = make_loss(name, gather=True, epsilon=0.4)(a, b)
            loss.backward()
            results[name] = (loss.detach(), a.grad, b.grad)
        # DDP on a tiny encoder: parameter gradients after DDP's averaging
        ddp = torch.nn.parallel.DistributedDataParallel(_model())
        xs = torch.cat([x[lo:hi], x[n + lo:n + hi]])
        loss = _ddp_step(ddp, xs, hi - lo)
        loss.backward()
        results["ddp"] = (loss.detach(), ddp.module.weight.grad, ddp.module.bias.grad)
        results["labels"] = distributed.gather(torch.arange(lo, hi))
        # a supervised target built from the gathered (global) labels
        labels = distributed.gather(_labels()[lo:hi])
        a = z1[lo:hi].clone().requires_grad_(True)
        b = z2[lo:hi].clone().requires_grad_(True)
        loss = make_loss("gca-ince", gather=True, target=lambda n_pairs, layout: supervised_plan(
            labels, layout, dtype=D))(a, b)
        loss.backward()
        results["supervised"] = (loss.detach(), a.grad, b.grad)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_gather_is_identity_outside_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather_with_grad(x) is x
    assert distributed.gather(x) is x
    assert distributed.world_size() == 1 and distributed.rank() == 0
    with pytest.raises(TypeError, match="torch.Tensor"):
        distributed.gather_with_grad([1, 2])


def test_two_gloo_processes_match_the_concatenated_batch(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    z1, z2, x = _data()
    n = sum(SIZES)
    for r in range(world):
        assert res[r]["world"] == world and res[r]["rank"] == r
        assert torch.equal(res[r]["labels"], torch.arange(n))
    checks = {name: (make_loss(name, epsilon=0.4), None) for name in LOSS_NAMES}
    checks["supervised"] = (make_loss("gca-ince"), supervised_plan(_labels(), "joint", dtype=D))
    for name, (loss_fn, target) in checks.items():
        a = z1.clone().requires_grad_(True)
        b = z2.clone().requires_grad_(True)
        loss = loss_fn(a, b, target=target)
        loss.backward()
        for r in range(world):
            lo, hi = sum(SIZES[:r]), sum(SIZES[: r + 1])
            got_loss, ga, gb = res[r][name]
            torch.testing.assert_close(got_loss, loss.detach(), rtol=0, atol=1e-6)
            # each process receives world × ∂L/∂z_r (DDP then averages over processes)
            torch.testing.assert_close(ga / world, a.grad[lo:hi], rtol=0, atol=1e-6)
            torch.testing.assert_close(gb / world, b.grad[lo:hi], rtol=0, atol=1e-6)
    model = _model()
    loss = _ddp_step(model, x, n)  # gather=True is the identity in a single process
    loss.backward()
    for r in range(world):
        got_loss, gw, gbias = res[r]["ddp"]
        torch.testing.assert_close(got_loss, loss.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(gw, model.weight.grad, rtol=0, atol=1e-6)
        torch.testing.assert_close(gbias, model.bias.grad, rtol=0, atol=1e-6)
