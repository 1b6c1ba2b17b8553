"""Numerical range of the loss family in float32: small/large ε, huge and tiny norms, batch sizes,
RINCE-type overflow reported (never a silent inf/NaN), mixed precision."""

import math

import pytest
import torch

from gca.losses import AlignmentOverflowError, make_loss

STABLE = ["simclr", "ince", "gca-ince", "iot", "iot-uni", "gca-uot"]
RINCE_TYPE = ["rince", "gca-rince", "gca-uot"]
EPSILONS = [1e-3, 1e-2, 0.1, 0.5, 10.0]


def _views(b, d=16, scale=1.0, noise=0.3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(b, d, generator=g, dtype=dtype)
    z2 = z1 + noise * torch.randn(b, d, generator=g, dtype=dtype)
    return (z1 * scale).requires_grad_(True), (z2 * scale).requires_grad_(True)


def _finite_value_and_grads(loss_fn, z1, z2):
    loss = loss_fn(z1, z2)
    g1, g2 = torch.autograd.grad(loss, (z1, z2))
    return bool(torch.isfinite(loss)) and bool(torch.isfinite(g1).all()) and bool(torch.isfinite(g2).all())


@pytest.mark.parametrize("epsilon", EPSILONS)
@pytest.mark.parametrize("name", STABLE)
def test_finite_loss_and_grads_float32(name, epsilon):
    # gca-uot's RINCE-type part is switched off here (r2 = 0); it is tested below
    kw = {"r2": 0.0} if name == "gca-uot" else {}
    loss_fn = make_loss(name, epsilon=epsilon, **kw)
    for b in (2, 32):
        for scale in (1e-3, 1.0, 1e4):
            z1, z2 = _views(b, scale=scale, seed=b)
            assert _finite_value_and_grads(loss_fn, z1, z2), (name, epsilon, b, scale)


@pytest.mark.parametrize("name", ["gca-ince", "gca-uot"])
def test_small_epsilon_at_a_large_batch(name):
    # N = 512, ε = 1e-3: far outside the kernel-domain range, the log-domain path must hold
    z1, z2 = _views(256, d=32, seed=3)
    loss_fn = make_loss(name, epsilon=1e-3, **({"r2": 0.0} if name == "gca-uot" else {}))
    assert _finite_value_and_grads(loss_fn, z1, z2)


@pytest.mark.parametrize("name", RINCE_TYPE)
def test_rince_type_finite_or_clear_error_never_inf(name):
    """Values grow like e^{q/ε}: finite where they fit float32, else an error naming ε, q, dtype."""
    finite, raised = 0, 0
    for epsilon in [1e-3, 3e-3, 5e-3, 7e-3, 1e-2, 2e-2, 5e-2, 0.1, 1.0, 10.0]:
        loss_fn = make_loss(name, epsilon=epsilon, q=0.6)
        z1, z2 = _views(32, seed=4)
        try:
            ok = _finite_value_and_grads(loss_fn, z1, z2)
        except AlignmentOverflowError as err:
            msg = str(err)
            assert f"epsilon={epsilon:g}" in msg and "q=0.6" in msg and "float32" in msg
            assert 0.6 / epsilon > 80  # only where e^{q/ε} really exceeds float32 (max ≈ e^88.7)
            raised += 1
        else:
            assert ok, (name, epsilon)
            finite += 1
    assert finite >= 6 and (raised >= 2 or name == "gca-uot")


def test_rince_float64_holds_where_float32_cannot():
    z1, z2 = _views(16, seed=5, dtype=torch.float64)
    loss_fn = make_loss("rince", epsilon=1e-3, q=0.6)
    loss = loss_fn(z1, z2)
    assert torch.isfinite(loss) and abs(float(loss.detach())) > 1e200  # ≈ e^{600}: no float32 could hold it
    with pytest.raises(AlignmentOverflowError, match="float32"):
        loss_fn(z1.float(), z2.float())


def test_rince_value_is_exact_when_terms_nearly_cancel():
    # λ = 1, small q: (e^{qa} − e^{qb})/q ≈ a − b must not lose digits to cancellation
    z1, z2 = (z.detach() for z in _views(8, seed=6, dtype=torch.float64))
    ince = float(make_loss("ince")(z1, z2))
    r32 = float(make_loss("rince", lam=1.0, q=1e-6)(z1.float(), z2.float()))
    assert r32 == pytest.approx(ince, rel=1e-5)


@pytest.mark.parametrize("name", ["ince", "gca-ince", "gca-rince", "gca-uot", "iot-uni"])
def test_float32_agrees_with_float64(name):
    z1, z2 = (z.detach() for z in _views(64, seed=7, dtype=torch.float64))
    loss_fn = make_loss(name, epsilon=0.1)
    ref = float(loss_fn(z1, z2))
    got = float(loss_fn(z1.float(), z2.float()))
    assert got == pytest.approx(ref, rel=2e-4, abs=2e-4)


@pytest.mark.parametrize("name", ["gca-ince", "gca-uot", "rince"])
def test_cpu_autocast_runs_the_alignment_in_float32(name):
    z1, z2 = _views(32, seed=8)
    lin = torch.nn.Linear(16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h1, h2 = lin(z1), lin(z2)
        assert h1.dtype == torch.bfloat16
        loss = make_loss(name)(h1, h2)
    assert loss.dtype == torch.float32
    ref = make_loss(name)(h1.float(), h2.float())  # same bf16-rounded inputs, float32 throughout
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    loss.backward()
    assert torch.isfinite(lin.weight.grad).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["ince", "gca-ince", "gca-uot", "gca-rince", "iot-uni"])
def test_cuda_autocast_matches_cpu(name):
    z1, z2 = _views(256, seed=9)
    ref = make_loss(name)(z1.detach(), z2.detach())
    a, b = z1.detach().cuda().requires_grad_(True), z2.detach().cuda().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.float16):
        loss = make_loss(name)(a.half(), b.half())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(a.grad).all()
    assert float(loss) == pytest.approx(float(ref), rel=1e-2)
    torch.testing.assert_close(make_loss(name)(a.detach(), b.detach()).cpu(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gca-ince", "gca-uot"])
def test_small_epsilon_at_training_batch_size(name):
    z1, z2 = _views(512, d=32, seed=3)  # N = 1024 as in the paper's CIFAR runs
    loss_fn = make_loss(name, epsilon=1e-3, **({"r2": 0.0} if name == "gca-uot" else {}))
    assert _finite_value_and_grads(loss_fn, z1, z2)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ince", "gca-ince", "iot", "gca-uot"])
def test_batch_4096_float32(name):
    z1, z2 = _views(4096, d=64, seed=10)
    for epsilon in (1e-3, 0.5):
        loss_fn = make_loss(name, epsilon=epsilon, **({"r2": 0.0} if name == "gca-uot" else {}))
        assert _finite_value_and_grads(loss_fn, z1, z2)


@pytest.mark.slow
def test_batch_4096_rince_type():
    z1, z2 = _views(4096, d=64, seed=11)
    for name in RINCE_TYPE:
        assert _finite_value_and_grads(make_loss(name, epsilon=0.5), z1, z2)
    with pytest.raises(AlignmentOverflowError, match="epsilon=0.001"):
        make_loss("rince", epsilon=1e-3)(z1, z2)
