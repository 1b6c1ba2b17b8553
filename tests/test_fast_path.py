"""The synchronisation-free fast path of the iterated losses (gca.losses.core.FAST_PATH; issue 14).

By default (on CPU and CUDA) the losses run their Sinkhorn iterations without host synchronisation: no validation
sync, the kernel-domain rule decided from the analytic bound of the cosine cost, every check
folded into one flag read at the end, and the checked reference path redone only when that flag
fails. The tests compare it with the reference path (values, gradients,
errors), and count the host reads of a forward + backward.
"""

from __future__ import annotations

import pytest
import torch

from gca import losses as L
from gca.losses import constraints, core

ITERATED = ["gca-ince", "gca-rince", "gca-rince-authors", "gca-uot", "iot", "iot-uni"]


def _views(b=24, d=12, seed=0, dtype=torch.float32, noise=0.5):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(b, d, generator=g, dtype=torch.float64)
    z2 = z1 + noise * torch.randn(b, d, generator=g, dtype=torch.float64)
    return z1.to(dtype), z2.to(dtype)


def _run(mode, monkeypatch, name, z1, z2, **kw):
    monkeypatch.setattr(core, "FAST_PATH", mode)
    a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    loss = L.make_loss(name, **kw)(a, b)
    loss.backward()
    return loss.detach(), a.grad, b.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ITERATED)
def test_fast_path_equals_the_checked_path(monkeypatch, name, dtype):
    z1, z2 = _views(dtype=dtype)
    ref = _run("off", monkeypatch, name, z1, z2)

    def checked_solver_called(*a, **k):
        raise AssertionError("the fast path fell back to the checked solver")

    monkeypatch.setattr(constraints, "solve", checked_solver_called)
    fast = _run("on", monkeypatch, name, z1, z2)
    # the fused solver (gca.losses.fused) orders its floating-point operations differently: equal to rounding
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    for x, y in zip(fast, ref):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol * float(y.abs().max()))


@pytest.mark.parametrize("kw", [dict(layout="cross"), dict(grad="implicit"), dict(grad="detach"),
                                dict(epsilon=0.02), dict(n_iter=3)])
def test_fast_path_options(monkeypatch, kw):
    # cross layout, the other gradient modes, and a small ε (the kernel rule then picks the log domain)
    z1, z2 = _views(dtype=torch.float64)
    for x, y in zip(_run("on", monkeypatch, "gca-ince", z1, z2, **kw), _run("off", monkeypatch, "gca-ince", z1, z2, **kw)):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-11 * float(y.abs().max()))


@pytest.mark.parametrize("bad,match", [("zero", "exactly the zero vector"), ("nan", "NaN or inf")])
def test_fast_path_failures_are_reported_like_the_checked_path(monkeypatch, bad, match):
    z1, z2 = _views()
    z1[3] = 0.0 if bad == "zero" else float("nan")
    monkeypatch.setattr(core, "FAST_PATH", "on")
    with pytest.raises(ValueError, match=match):
        L.make_loss("gca-uot")(z1, z2)


def test_fast_path_reads_the_device_once(monkeypatch):
    """A GCA-INCE forward + backward reads a value from the device once (the folded check); the
    checked path reads many (validation, ranges, a-posteriori checks)."""
    reads = []
    for attr in ("__bool__", "item", "tolist", "__float__", "__int__"):
        real = getattr(torch.Tensor, attr)

        def counting(self, *a, _real=real, _attr=attr, **k):
            reads.append(_attr)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, attr, counting)
    z1, z2 = _views()
    counts = {}
    for mode in ("on", "off"):
        reads.clear()
        _run(mode, monkeypatch, "gca-ince", z1, z2)
        counts[mode] = len(reads)
    assert counts["on"] == 1, counts
    assert counts["off"] > 5, counts


def test_fast_path_setting_is_validated(monkeypatch):
    monkeypatch.setenv("GCA_FAST_PATH", "sometimes")
    with pytest.raises(ValueError, match="GCA_FAST_PATH"):
        L.fast_path_enabled(torch.device("cpu"))
    monkeypatch.setenv("GCA_FAST_PATH", "off")
    assert not L.fast_path_enabled(torch.device("cuda"))
    monkeypatch.setenv("GCA_FAST_PATH", "cuda")
    assert L.fast_path_enabled(torch.device("cuda")) and not L.fast_path_enabled(torch.device("cpu"))
    monkeypatch.delenv("GCA_FAST_PATH")
    assert L.fast_path_enabled(torch.device("cpu"))  # the default: on everywhere
