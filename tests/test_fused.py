"""The fast path of the iterated losses (gca.losses.fused): values and gradients against a dense float64
loop written from the formulas (independent of gca.ot and gca.losses.fused), dispatch rules, no host
synchronisation inside the iterations, and agreement with the reference path in float32."""

import math

import pytest
import torch

from gca import losses
from gca.losses import fused, targets
from gca.losses import make_loss

D = torch.float64


def dense_loss(name, z1, z2, *, eps=0.5, T=10, lam=0.01, q=0.6, rho=0.2, r1=1.0, r2=0.2, layout="joint"):
    """Paper §2/§4 straight from the formulas: dense kernel, u = (μ/Kv)^τ₁, v = (ν/Kᵀu)^τ₂, autograd."""
    h1 = z1 / z1.norm(dim=1, keepdim=True)
    h2 = z2 / z2.norm(dim=1, keepdim=True)
    b = z1.shape[0]
    if layout == "joint":
        H = torch.cat([h1, h2])
        S = H @ H.T
        pi = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    else:
        S = h1 @ h2.T
        pi = torch.arange(b)
    n = S.shape[0]
    C = 1.0 - S if name == "gca-uot" else -S
    K = torch.exp(-C / eps)
    if layout == "joint":
        K = K * (1.0 - torch.eye(n, dtype=K.dtype))  # self-pairs excluded
    mass = 1.0 / n if name == "gca-uot" else 1.0
    tau = rho / (rho + eps) if name == "gca-uot" else 1.0
    v = torch.ones(n, dtype=K.dtype)
    for _ in range(T):
        v_prev = v
        u = (mass / (K @ v)) ** tau
        v = (mass / (K.T @ u)) ** tau
    P = u[:, None] * K * v[None, :]
    rows = torch.arange(n)
    if name in ("gca-ince", "iot"):
        return -torch.log(P[rows, pi]).mean()
    if name == "gca-rince":
        pos = K[rows, pi] * v_prev[pi]  # P^(2T−1)_iπ / u_i
        return (-pos ** q / q + (lam / u) ** q / q).mean()
    if name == "gca-uot":
        kl = -torch.log(P[rows, pi] / P.sum(1))
        pos = P[rows, pi] / u
        return r1 * kl.mean() + r2 * (-pos ** q / q + (lam / u) ** q / q).mean()
    raise KeyError(name)


def _views(b, d, seed, dtype=D):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(b, d, generator=g, dtype=dtype)
    z2 = z1 + 0.7 * torch.randn(b, d, generator=g, dtype=dtype)
    return z1, z2


def _value_and_grads(fn, z1, z2):
    a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    loss = fn(a, b)
    ga, gb = torch.autograd.grad(loss, (a, b))
    return loss.detach(), ga, gb


CASES = [("gca-ince", "joint"), ("gca-ince", "cross"), ("gca-uot", "joint"), ("gca-uot", "cross"),
         ("gca-rince", "joint"), ("gca-rince", "cross"), ("iot", "joint")]


@pytest.mark.parametrize("numpy_matvecs", [True, False], ids=["numpy-gemv", "torch-mv"])
@pytest.mark.parametrize("T", [1, 2, 10])
@pytest.mark.parametrize("name,layout", CASES)
def test_fast_path_equals_dense_formula_float64(name, layout, T, numpy_matvecs, monkeypatch):
    # torch.mv is the path of every non-CPU device; NumPy's gemv the CPU's where OpenBLAS is found
    monkeypatch.setattr(fused, "NUMPY_MATVECS", numpy_matvecs)
    z1, z2 = _views(6, 5, seed=T)
    kw = {} if name == "iot" else {"layout": layout}
    with fused.forced():
        got = _value_and_grads(make_loss(name, n_iter=T, **kw), z1, z2)
    ref = _value_and_grads(lambda a, b: dense_loss(name, a, b, T=T, layout=layout), z1, z2)
    assert torch.allclose(got[0], ref[0], rtol=1e-12, atol=1e-12), (got[0], ref[0])
    for g, r in zip(got[1:], ref[1:]):
        assert torch.allclose(g, r, rtol=1e-10, atol=1e-12), (g - r).abs().max()


def test_fast_path_used_and_reference_path_still_reachable():
    z1, z2 = _views(4, 3, seed=1)
    with fused.forced():
        res = losses.gca_uot_loss(z1, z2, return_details=True)
    assert isinstance(res.solver, fused._LazySolverResult)
    with fused.disabled():
        ref = losses.gca_uot_loss(z1, z2, return_details=True)
    assert not isinstance(ref.solver, fused._LazySolverResult)
    # lazy diagnostics and dense views are the reference solver's
    assert res.solver.n_iter == ref.solver.n_iter == 10
    assert torch.allclose(res.solver.marginal_error_a, ref.solver.marginal_error_a, rtol=1e-9)
    assert torch.allclose(res.plan, ref.plan, rtol=1e-10)
    assert torch.allclose(res.f, ref.f, rtol=1e-10, atol=1e-12) and torch.allclose(res.g, ref.g, rtol=1e-10)


@pytest.mark.parametrize("kwargs", [dict(grad="implicit"), dict(epsilon=0.05), dict(target="supervised")])
def test_reference_path_where_the_fast_path_does_not_apply(kwargs, monkeypatch):
    calls = []
    monkeypatch.setattr(fused, "_sinkhorn_potentials", lambda *a, **k: calls.append(1) or 1 / 0)
    z1, z2 = _views(4, 3, seed=2, dtype=torch.float32)
    kw = dict(kwargs)
    if kw.get("target") == "supervised":
        kw["target"] = targets.supervised_plan(torch.tensor([0, 1, 0, 1]), "joint")
    with fused.forced():
        loss = losses.gca_ince_loss(z1, z2, **kw)
    assert torch.isfinite(loss) and calls == []


def test_environment_switch(monkeypatch):
    monkeypatch.setenv("GCA_FUSED", "0")
    assert not fused.enabled()
    monkeypatch.setenv("GCA_FUSED", "1")
    assert fused.enabled()
    with fused.disabled():
        assert not fused.enabled()


def test_no_host_synchronisation_inside_the_iterations(monkeypatch):
    """Any .item()/bool()/float()/tolist() on a tensor inside the loop (forward or backward) fails."""
    def refuse(*a, **k):
        raise AssertionError("host synchronisation inside the fused iterations")

    z1, z2 = _views(8, 4, seed=3, dtype=torch.float32)
    h1 = (z1 / z1.norm(dim=1, keepdim=True)).requires_grad_(True)
    h2 = (z2 / z2.norm(dim=1, keepdim=True)).requires_grad_(True)
    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    phi, gam, gprev, rl = fused._sinkhorn_potentials(h1, h2, layout="joint", cost="cosine_distance", epsilon=0.5,
                                                    n_iter=10, tau=(0.2 / 0.7, 0.2 / 0.7), mass=1 / 16,
                                                    row_lse=True)
    (phi.sum() + gam.sum() + gprev.sum() + rl.sum()).backward()
    monkeypatch.undo()
    assert torch.isfinite(h1.grad).all() and torch.isfinite(h2.grad).all()


@pytest.mark.parametrize("name", ["gca-ince", "gca-uot", "gca-rince"])
def test_float32_fast_path_matches_reference_path(name):
    """At the benchmark's setting (B = 256 here, d = 128, ε = 0.5, T = 10): within float32 rounding."""
    z1, z2 = _views(256, 128, seed=4, dtype=torch.float32)
    with fused.forced():
        got = _value_and_grads(make_loss(name), z1, z2)
    with fused.disabled():
        ref = _value_and_grads(make_loss(name), z1, z2)
    assert abs(float(got[0] - ref[0])) <= 1e-5 * abs(float(ref[0]))
    for g, r in zip(got[1:], ref[1:]):
        assert float((g - r).abs().max()) <= 1e-4 * float(r.abs().max())


def test_static_range_bound():
    # the bound of gca.losses.fused.max_range: 3R + 2 log N below log(max) − 4
    r = fused.max_range(torch.float32, 1024)
    assert 3 * r + 2 * math.log(1024) == pytest.approx(math.log(torch.finfo(torch.float32).max) - 4)
    assert 2 / 0.1 <= r < 2 / 0.05  # ε = 0.1 on the fast path, ε = 0.05 on the reference path
    # and at the edge of the bound the fast path stays finite and exact (float32, N = 64, ε ≈ 0.1)
    eps = 2.0 / fused.max_range(torch.float32, 64) * 1.001
    z1, z2 = _views(32, 8, seed=5, dtype=torch.float32)
    for name in ("gca-ince", "gca-uot"):
        with fused.forced():
            got = _value_and_grads(make_loss(name, epsilon=eps), z1, z2)
        ref = _value_and_grads(lambda a, b: dense_loss(name, a, b, eps=eps), z1.double(), z2.double())
        assert torch.isfinite(got[0]) and abs(float(got[0]) - float(ref[0])) <= 1e-4 * abs(float(ref[0])), name
        for g, r in zip(got[1:], ref[1:]):
            assert torch.isfinite(g).all() and float((g.double() - r).abs().max()) <= 1e-3 * float(r.abs().max())


def test_public_helpers_validate_their_arguments():
    kw = dict(layout="joint", cost="neg_cosine", constraint="balanced", target=None, grad="unrolled",
              uniformity_weight=0.0, dtype=torch.float32, n=8)
    with pytest.raises(ValueError, match="epsilon"):
        fused.fast_path_supported(epsilon=0.0, **kw)
    with pytest.raises(ValueError, match="n=0"):
        fused.fast_path_supported(epsilon=0.5, **{**kw, "n": 0})
    with pytest.raises(TypeError, match="dtype"):
        fused.max_range(torch.int64, 8)
    assert fused.fast_path_supported(epsilon=0.5, **kw)
    assert not fused.fast_path_supported(epsilon=0.5, **{**kw, "constraint": "rows"})
