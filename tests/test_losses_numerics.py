"""Numerical range of the loss family in float32: small/large ε, huge and tiny norms, batch sizes,
RINCE-type overflow reported (never a silent inf/NaN), mixed precision."""

import math
import warnings

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


# ------------------------------------------------------------------------------------------------
# grad="implicit" at small ε (the balanced fixed point's gauge; numerically disconnected plans)
# ------------------------------------------------------------------------------------------------
def _implicit_vs_unrolled(dtype, epsilon, z1, z2, n_iter):
    from gca.losses import gca_ince_loss

    grads = {}
    for mode in ("unrolled", "implicit"):
        a = z1.to(dtype).requires_grad_(True)
        gca_ince_loss(a, z2.to(dtype), epsilon=epsilon, n_iter=n_iter, grad=mode).backward()
        grads[mode] = a.grad.double()
    return grads["implicit"], grads["unrolled"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("epsilon", [0.01, 0.05, 0.5])
def test_implicit_equals_unrolled_at_convergence_small_epsilon(dtype, epsilon):
    # views clustered around one direction: the plan stays connected at ε = 0.01 and 1000
    # unrolled iterations converge (checked: the unrolled gradient at 500 iterations is the same)
    g = torch.Generator().manual_seed(0)
    base = 2 * torch.randn(1, 8, generator=g, dtype=torch.float64)
    z1 = base + 0.3 * torch.randn(16, 8, generator=g, dtype=torch.float64)
    z2 = z1 + 0.15 * torch.randn(16, 8, generator=g, dtype=torch.float64)
    implicit, unrolled = _implicit_vs_unrolled(dtype, epsilon, z1, z2, 1000)
    _, unrolled_half = _implicit_vs_unrolled(dtype, epsilon, z1, z2, 500)
    rtol = 1e-10 if dtype == torch.float64 else 2e-5
    assert float((unrolled_half - unrolled).norm()) <= rtol * float(unrolled.norm())  # converged
    assert float((implicit - unrolled).norm()) <= rtol * float(unrolled.norm())


@pytest.mark.parametrize("dtype,epsilon,d,independent", [
    (torch.float64, 0.01, 128, False),  # singular adjoint system in float64 before the fix
    (torch.float64, 0.01, 32, True),
    (torch.float32, 0.01, 32, False),   # raised torch._C._LinAlgError before the fix
    (torch.float32, 0.02, 32, False),
])
def test_implicit_on_numerically_disconnected_plans_is_finite_and_close(dtype, epsilon, d, independent):
    # B = 64 views at small ε: the plan is block-diagonal to the dtype's precision, each block with
    # its own gauge shift; the implicit gradient must stay the converged loss's gradient (within
    # the unrolled reference's own convergence error) — a warning may say it dropped a component
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(64, d, generator=g, dtype=torch.float64)
    z2 = torch.randn(64, d, generator=g, dtype=torch.float64) if independent else \
        z1 + torch.randn(64, d, generator=g, dtype=torch.float64)
    from gca.ot import SinkhornConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornConvergenceWarning)
        implicit, unrolled = _implicit_vs_unrolled(dtype, epsilon, z1, z2, 3000)
    assert bool(torch.isfinite(implicit).all())
    assert float((implicit - unrolled).norm()) <= 1e-4 * max(1.0, float(unrolled.norm()))


# ------------------------------------------------------------------------------------------------
# Messages that name the real cause (ε too small for the dtype; unnormalised embeddings are fine)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["simclr", "ince", "gca-ince", "gca-uot"])
def test_epsilon_too_small_for_dtype_is_named(name):
    z1, z2 = _views(8)
    with pytest.raises(ValueError, match="too small for torch.float32"):
        make_loss(name, epsilon=1e-39)(z1, z2)
    # the same ε is representable in float64
    loss = make_loss(name, epsilon=1e-39)(z1.double(), z2.double())
    assert bool(torch.isfinite(loss))


@pytest.mark.parametrize("scale", [1e-30, 1e19])
@pytest.mark.parametrize("name", ["ince", "gca-ince", "gca-uot"])
def test_huge_and_tiny_embeddings_are_normalised_in_their_dtype(name, scale):
    # cosine similarity is scale-invariant: rows of size ~1e19 or ~1e-30 in float32 (whose squared
    # norms overflow / underflow) give the loss and gradient direction of the unit-scale rows
    z1, z2 = _views(8)
    fn = make_loss(name, epsilon=0.5)
    ref = fn(z1, z2)
    g_ref = torch.autograd.grad(ref, z1)[0]
    w1 = (z1.detach() * scale).requires_grad_(True)
    val = fn(w1, z2.detach() * scale)
    g = torch.autograd.grad(val, w1)[0]
    torch.testing.assert_close(val, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g * scale, g_ref, rtol=1e-4, atol=1e-6)


def test_zero_row_is_named_exactly():
    z1, z2 = _views(4)
    z1 = z1.detach().clone()
    z1[2] = 0.0
    with pytest.raises(ValueError, match="z1 row 2 is exactly the zero vector"):
        make_loss("gca-ince")(z1, z2)
