"""The loss family against slow loops written straight from paper.md §2/§4 (float64), the paper's
identities, invariances and gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from gca import losses
from gca.losses import targets
from gca.reference import reference_generalised_kl as ref_generalised_kl
from gca.reference import reference_loss as ref_loss
from gca.reference import reference_problem as ref_problem
from gca.reference import reference_sinkhorn as ref_sinkhorn
from gca.losses import (gca_ince_loss, gca_rince_authors_loss, gca_rince_loss, gca_uot_loss, ince_loss, iot_loss,
                         rince_authors_loss,
                        iot_uni_loss, make_loss, rince_loss, simclr_loss)

D = torch.float64


# slow references: explicit loops over entries, kernel domain, float64 (gca.reference, paper.md §2, §4)
def views(b=4, d=5, seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=dtype), torch.randn(b, d, generator=g, dtype=dtype)


FUNCS = {"simclr": simclr_loss, "ince": ince_loss, "rince": rince_loss, "rince-authors": rince_authors_loss,
         "gca-ince": gca_ince_loss, "gca-rince": gca_rince_loss, "gca-rince-authors": gca_rince_authors_loss,
         "gca-uot": gca_uot_loss, "iot": iot_loss, "iot-uni": iot_uni_loss}
ROW_ONLY = ["simclr", "ince", "rince", "rince-authors"]
ITERATED = ["gca-ince", "gca-rince", "gca-rince-authors", "gca-uot", "iot", "iot-uni"]


def _kw(name, **kw):
    """Restrict keyword arguments to those the loss accepts."""
    accepted = FUNCS[name].__kwdefaults__
    return {k: v for k, v in kw.items() if k in accepted}


# ---------------------------------------------------------------------------------------------
# each loss equals its slow loop (1e-10)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ROW_ONLY + ITERATED)
@pytest.mark.parametrize("layout", ["joint", "cross"])
def test_loss_equals_slow_loop(name, layout):
    if layout == "cross" and name in ("simclr", "iot", "iot-uni"):
        pytest.skip("joint layout by definition")
    z1, z2 = views(4, 5, seed=1)
    kw = dict(epsilon=0.4, n_iter=7, lam=0.3, q=0.6, rho=0.7, r1=1.0, r2=0.5, lambda_p=0.3,
              layout=layout)
    got = FUNCS[name](z1, z2, **_kw(name, **kw))
    want = ref_loss(name, z1, z2, eps=0.4, T=7, lam=0.3, q=0.6, rho=0.7, r1=1.0, r2=0.5,
                    lambda_p=0.3, layout=layout)
    assert got.dtype == D
    assert abs(float(got) - want) <= 1e-10 * max(1.0, abs(want)), (float(got), want)


def test_paper_defaults_match_slow_loop():
    z1, z2 = views(3, 4, seed=2)
    for name in ROW_ONLY + ITERATED:
        got = float(make_loss(name)(z1, z2))
        q = {"q": 0.98} if name.endswith("-authors") else {}  # the authors' configuration's q (their "RINCE")
        want = ref_loss(name, z1, z2, **q)  # ref defaults are the spec's CIFAR-10 values
        assert abs(got - want) <= 1e-10 * max(1.0, abs(want)), name


def test_gca_uot_with_a_pair_of_penalties_equals_slow_loop():
    z1, z2 = views(4, 5, seed=18)
    got = float(gca_uot_loss(z1, z2, epsilon=0.3, n_iter=6, rho=(0.3, 2.0), lam=0.5, q=0.3, r2=0.7))
    want = ref_loss("gca-uot", z1, z2, eps=0.3, T=6, rho=(0.3, 2.0), lam=0.5, q=0.3, r2=0.7)
    assert abs(got - want) <= 1e-10 * max(1.0, abs(want))
    got = float(gca_uot_loss(z1, z2, epsilon=0.3, n_iter=6, rho=(math.inf, 0.5), layout="cross"))
    want = ref_loss("gca-uot", z1, z2, eps=0.3, T=6, rho=(math.inf, 0.5), layout="cross")
    assert abs(got - want) <= 1e-10 * max(1.0, abs(want))


def test_core_kl_on_an_unbalanced_plan_is_the_generalised_kl():
    """alignment() beyond the named losses: KL(Π ‖ P_unbalanced)/N including the mass terms."""
    z1, z2 = views(4, 5, seed=20)
    got = float(losses.alignment(z1, z2, epsilon=0.4, constraint="unbalanced", n_iter=5, rho=0.6).loss)
    S, K, pi = ref_problem(z1, z2, "joint", "neg", 0.4)
    n = K.shape[0]
    tau = 0.6 / (0.6 + 0.4)
    u, v, _ = ref_sinkhorn(K, [1.0] * n, [1.0] * n, 5, tau, tau)
    P = [[u[i] * float(K[i, j]) * v[j] for j in range(n)] for i in range(n)]
    want = ref_generalised_kl(targets.positive_pairs(4, "joint", dtype=D), P) / n
    assert abs(got - want) <= 1e-10 * max(1.0, abs(want))
    # balanced plan with probability marginals (total mass 1, not N): mass terms included
    got = float(losses.alignment(z1, z2, epsilon=0.4, constraint="balanced", n_iter=5,
                                 mass="probability").loss)
    u, v, _ = ref_sinkhorn(K, [1.0 / n] * n, [1.0 / n] * n, 5)
    P = [[u[i] * float(K[i, j]) * v[j] for j in range(n)] for i in range(n)]
    want = ref_generalised_kl(targets.positive_pairs(4, "joint", dtype=D), P) / n
    assert abs(got - want) <= 1e-10 * max(1.0, abs(want))


def test_module_target_buffer_and_per_call_override():
    z1, z2 = views(3, 4, seed=19)
    target = targets.supervised_plan(torch.tensor([0, 1, 0]), "joint", dtype=D)
    loss = make_loss("gca-ince", target=target, n_iter=4)
    assert "target" in dict(loss.named_buffers())  # follows .to(device)
    torch.testing.assert_close(loss(z1, z2), gca_ince_loss(z1, z2, n_iter=4, target=target))
    other = targets.positive_pairs(3, "joint", dtype=D)
    torch.testing.assert_close(loss(z1, z2, target=other), gca_ince_loss(z1, z2, n_iter=4))


@pytest.mark.parametrize("name", ["ince", "gca-ince", "gca-uot", "rince-authors", "gca-rince-authors"])
def test_custom_target_equals_generalised_kl(name):
    z1, z2 = views(3, 4, seed=3)
    domains = torch.tensor([0, 1, 0])
    target = targets.domain_prior_plan(domains, alpha=0.4, beta=0.1, layout="joint", dtype=D)
    got = float(FUNCS[name](z1, z2, epsilon=0.6, target=target, **_kw(name, n_iter=5, q=0.6)))
    want = ref_loss(name, z1, z2, eps=0.6, T=5, target=target)
    assert abs(got - want) <= 1e-10 * max(1.0, abs(want))
    # the positive-pair target given densely equals the default
    dense = targets.positive_pairs(3, "joint", dtype=D)
    torch.testing.assert_close(FUNCS[name](z1, z2, target=dense), FUNCS[name](z1, z2),
                               rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# the paper's identities
# ---------------------------------------------------------------------------------------------

def test_ince_joint_equals_nt_xent_and_kl_to_one_row_projection():
    from gca import ot

    z1, z2 = views(6, 8, seed=4)
    eps, b = 0.3, 6
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / eps).fill_diagonal_(-math.inf)
    labels = torch.cat([torch.arange(b) + b, torch.arange(b)])
    nt_xent = F.cross_entropy(logits, labels)
    ince = ince_loss(z1, z2, epsilon=eps)
    torch.testing.assert_close(ince, nt_xent, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(simclr_loss(z1, z2, epsilon=eps), nt_xent, rtol=1e-12, atol=1e-12)
    # KL(Π ‖ P⁽¹⁾)/N with P⁽¹⁾ the OT core's single row projection of K (μ = 1_N)
    cost = (-(z @ z.T)).fill_diagonal_(math.inf)
    p1 = ot.row_projection(-cost / eps, torch.ones(2 * b, dtype=D)).exp()
    pi_mat = targets.positive_pairs(b, "joint", dtype=D)
    kl = torch.special.xlogy(pi_mat, pi_mat) - pi_mat * torch.log(p1.clamp_min(1e-300)) - pi_mat + p1
    torch.testing.assert_close(ince, kl.sum() / (2 * b), rtol=1e-12, atol=1e-12)


def test_ince_cross_equals_cross_entropy_and_kl_to_one_row_projection():
    from gca import ot

    z1, z2 = views(6, 8, seed=5)
    eps = 0.7
    logits = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / eps
    ince = ince_loss(z1, z2, epsilon=eps, layout="cross")
    torch.testing.assert_close(ince, F.cross_entropy(logits, torch.arange(6)), rtol=1e-12, atol=1e-12)
    p1 = ot.row_projection(logits, torch.ones(6, dtype=D)).exp()
    eye = torch.eye(6, dtype=D)
    kl = torch.special.xlogy(eye, eye) - eye * torch.log(p1) - eye + p1
    torch.testing.assert_close(ince, kl.sum() / 6, rtol=1e-12, atol=1e-12)


def test_gradient_modes():
    z1, z2 = views(4, 5, seed=17)
    grads = {}
    for mode in ("unrolled", "implicit", "detach"):
        a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        gca_ince_loss(a, b, n_iter=300, grad=mode).backward()
        grads[mode] = torch.cat([a.grad, b.grad])
    # at convergence the implicit-function gradient equals the unrolled one
    torch.testing.assert_close(grads["implicit"], grads["unrolled"], rtol=1e-6, atol=1e-8)
    # the unbalanced fixed point has no shift freedom: implicit == unrolled for GCA-UOT too
    uot = {}
    for mode in ("unrolled", "implicit"):
        a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        gca_uot_loss(a, b, n_iter=300, grad=mode).backward()
        uot[mode] = torch.cat([a.grad, b.grad])
    torch.testing.assert_close(uot["implicit"], uot["unrolled"], rtol=1e-6, atol=1e-8)
    # GCA-RINCE reads the potentials themselves (not shift-invariant): implicit is refused
    with pytest.raises(ValueError, match="implicit"):
        gca_rince_loss(z1, z2, grad="implicit")
    # detached potentials: only the explicit cost term −C_iπ/ε carries gradient
    assert not torch.allclose(grads["detach"], grads["unrolled"])
    a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    pos = -(F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1) / 0.5
    (-(-pos).mean()).backward()  # loss = mean(−f−g_π)/ε + mean(C_iπ)/ε; only the last term remains
    torch.testing.assert_close(grads["detach"], torch.cat([a.grad, b.grad]))


@pytest.mark.parametrize("layout", ["joint", "cross"])
def test_gca_rince_one_iteration_is_rince(layout):
    z1, z2 = views(5, 6, seed=6)
    kw = dict(epsilon=0.3, lam=0.2, q=0.4, layout=layout)
    torch.testing.assert_close(gca_rince_loss(z1, z2, n_iter=1, **kw), rince_loss(z1, z2, **kw),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["joint", "cross"])
def test_authors_variants_are_a_power_of_the_mean_cross_entropy(layout):
    """official-code.md note 5: the authors' CIFAR "RINCE" is (mean INCE cross-entropy)^q / q, and their
    "GCA-RINCE" the same on the row-renormalised plan of T Sinkhorn iterations (GCA-INCE's plan)."""
    z1, z2 = views(4, 5, seed=21)
    ce = ince_loss(z1, z2, epsilon=0.4, layout=layout)
    for q in (0.98, 0.5, 1.0):
        res = rince_authors_loss(z1, z2, epsilon=0.4, q=q, layout=layout, return_details=True)
        torch.testing.assert_close(res.loss, ce ** q / q, rtol=1e-13, atol=0)
        torch.testing.assert_close(res.terms["kl"], ce, rtol=1e-13, atol=0)
        torch.testing.assert_close(res.per_anchor.mean(), res.loss, rtol=1e-13, atol=0)  # anchors' shares
    assert float(rince_authors_loss(z1, z2, epsilon=0.4, q=1.0, layout=layout)) == pytest.approx(float(ce), rel=1e-14)
    plan = gca_ince_loss(z1, z2, epsilon=0.4, n_iter=5, layout=layout, return_details=True)
    rows = torch.arange(plan.positives.numel())
    ce_gca = -torch.log(plan.plan[rows, plan.positives] / plan.plan.sum(1)).mean()
    got = gca_rince_authors_loss(z1, z2, epsilon=0.4, n_iter=5, q=0.98, layout=layout)
    torch.testing.assert_close(got, ce_gca ** 0.98 / 0.98, rtol=1e-12, atol=0)


@pytest.mark.parametrize("fast_path", ["on", "off"])
@pytest.mark.parametrize("name", ["rince-authors", "gca-rince-authors"])
def test_gradcheck_authors_variants_on_both_paths(name, fast_path, monkeypatch):
    """float64 gradcheck of the new losses at their default q = 0.98, on the fast (fused) and checked paths."""
    monkeypatch.setattr(losses.core, "FAST_PATH", fast_path)
    z1, z2 = views(3, 4, seed=22)
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    loss = make_loss(name, **({"n_iter": 4} if name.startswith("gca") else {}))
    assert torch.autograd.gradcheck(loss, (z1, z2), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_rince_tends_to_ince_and_depends_on_lambda():
    z1, z2 = views(5, 6, seed=7)
    ince = float(ince_loss(z1, z2, epsilon=0.5))
    gaps = [abs(float(rince_loss(z1, z2, epsilon=0.5, lam=1.0, q=q)) - ince) for q in (1e-2, 1e-4, 1e-6)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-5  # O(q) convergence
    assert gaps[0] / gaps[1] == pytest.approx(100, rel=0.05)
    a = rince_loss(z1, z2, epsilon=0.5, lam=0.01, q=0.5)
    b = rince_loss(z1, z2, epsilon=0.5, lam=0.5, q=0.5)
    assert abs(float(a) - float(b)) > 1e-2  # λ is not silently ignored (official-code.md item 5)


def test_gca_uot_reduces_to_gca_ince():
    z1, z2 = views(5, 6, seed=8)
    eps, T = 0.5, 6
    uot = gca_uot_loss(z1, z2, epsilon=eps, n_iter=T, rho=math.inf, r2=0.0, return_details=True)
    ince = gca_ince_loss(z1, z2, epsilon=eps, n_iter=T, return_details=True)
    # exact at finite T: GCA-INCE(T) = GCA-UOT(r2=0, ρ=∞) − mean_i log Σ_j P⁽²ᵀ⁾_ij
    row_mass = ince.plan.sum(1)
    torch.testing.assert_close(ince.loss, uot.loss - torch.log(row_mass).mean(), rtol=1e-12, atol=1e-12)
    # and equal once Sinkhorn has converged
    a = gca_uot_loss(z1, z2, epsilon=eps, n_iter=300, rho=math.inf, r2=0.0)
    b = gca_ince_loss(z1, z2, epsilon=eps, n_iter=300)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # a large finite ρ approaches ρ = ∞
    c = gca_uot_loss(z1, z2, epsilon=eps, n_iter=T, rho=1e8, r2=0.0)
    torch.testing.assert_close(c, uot.loss, rtol=1e-6, atol=1e-6)


def test_gca_ince_invariant_to_cost_shift():
    # the cost 1 − S (GCA-UOT's convention) and −S give the same balanced plan
    z1, z2 = views(5, 6, seed=9)
    a = gca_ince_loss(z1, z2, epsilon=0.4, n_iter=50, return_details=True)
    from gca import ot

    shifted = ot.sinkhorn(a.cost + 3.0, torch.ones(10, dtype=D), torch.ones(10, dtype=D),
                          epsilon=0.4, max_iter=50, tol=0.0)
    torch.testing.assert_close(shifted.plan, a.plan, rtol=1e-10, atol=1e-12)
    alt = losses.alignment(z1, z2, epsilon=0.4, cost="cosine_distance", constraint="balanced",
                           n_iter=50)
    torch.testing.assert_close(alt.loss, a.loss, rtol=1e-10, atol=1e-10)


def test_full_sinkhorn_improves_on_one_half_step():
    """paper §4 theory claim KL(Π‖P⁽∞⁾) ≤ KL(Π‖P⁽¹⁾), on random batches."""
    for seed in range(5):
        z1, z2 = views(6, 4, seed=100 + seed)
        assert float(gca_ince_loss(z1, z2, n_iter=200)) <= float(ince_loss(z1, z2)) + 1e-12


def test_iot_is_gca_ince_on_the_joint_layout():
    z1, z2 = views(4, 5, seed=10)
    torch.testing.assert_close(iot_loss(z1, z2, n_iter=4), gca_ince_loss(z1, z2, n_iter=4))
    assert float(iot_uni_loss(z1, z2, n_iter=4)) > float(iot_loss(z1, z2, n_iter=4))


def test_closed_form_identical_orthogonal_pairs():
    b, eps = 4, 0.5
    z = F.one_hot(torch.arange(b), 8).to(D)
    # joint: row i sees its positive (s = 1/ε) and 2B−2 orthogonal samples (s = 0)
    want = math.log(math.exp(1 / eps) + 2 * b - 2) - 1 / eps
    assert float(ince_loss(z, z, epsilon=eps)) == pytest.approx(want, abs=1e-12)
    assert float(simclr_loss(z, z, epsilon=eps)) == pytest.approx(want, abs=1e-12)
    # cross: B − 1 orthogonal columns
    assert float(ince_loss(z, z, epsilon=eps, layout="cross")) == pytest.approx(
        math.log(math.exp(1 / eps) + b - 1) - 1 / eps, abs=1e-12)
    # the kernel is symmetric with equal row sums, so it is already balanced up to scale:
    # GCA-INCE equals INCE for every T
    assert float(gca_ince_loss(z, z, epsilon=eps, n_iter=3)) == pytest.approx(want, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# invariances and gradients
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ROW_ONLY + ITERATED)
def test_swap_views_and_permute_batch(name):
    z1, z2 = views(5, 6, seed=11)
    loss = make_loss(name, epsilon=0.4)
    base = loss(z1, z2)
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss(z1[perm], z2[perm]), base, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss(z2, z1), base, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ROW_ONLY + ITERATED)
def test_gradcheck(name):
    z1, z2 = views(3, 4, seed=12)
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    kw = _kw(name, epsilon=0.5, n_iter=3, lam=0.3, q=0.5, rho=0.5, r2=0.5)
    assert torch.autograd.gradcheck(lambda a, b: FUNCS[name](a, b, **kw), (z1, z2), eps=1e-6,
                                    atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["ince", "gca-ince", "gca-uot", "rince-authors", "gca-rince-authors"])
def test_gradcheck_cross_layout_and_custom_target(name):
    z1, z2 = views(3, 4, seed=13)
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    target = targets.supervised_plan(torch.tensor([0, 1, 0]), "cross", dtype=D)
    kw = _kw(name, epsilon=0.5, n_iter=3, layout="cross", target=target)
    assert torch.autograd.gradcheck(lambda a, b: FUNCS[name](a, b, **kw), (z1, z2), eps=1e-6,
                                    atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# details for the book's heatmaps
# ---------------------------------------------------------------------------------------------

def test_details_expose_plan_kernel_target():
    z1, z2 = views(4, 5, seed=14)
    det = make_loss("gca-ince", n_iter=30)(z1, z2, return_details=True)
    assert isinstance(det, losses.Alignment)
    n = 8
    assert det.plan.shape == det.kernel.shape == det.target_plan.shape == (n, n)
    assert torch.all(det.plan.diagonal() == 0) and torch.all(det.kernel.diagonal() == 0)
    torch.testing.assert_close(det.plan.sum(0), torch.ones(n, dtype=D))  # after a column step
    torch.testing.assert_close(det.plan_before_column_step.sum(1), torch.ones(n, dtype=D))
    torch.testing.assert_close(det.per_anchor.mean(), det.loss)
    torch.testing.assert_close(det.loss, -torch.log(det.plan[torch.arange(n), det.positives]).mean())
    ince = ince_loss(z1, z2, return_details=True)
    torch.testing.assert_close(ince.plan.sum(1), torch.ones(n, dtype=D))
    uot = gca_uot_loss(z1, z2, return_details=True)
    assert set(uot.terms) == {"kl", "rince"}
    torch.testing.assert_close(uot.loss, uot.terms["kl"] + 0.2 * uot.terms["rince"])
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    torch.testing.assert_close(uot.cost, (1 - z @ z.T).fill_diagonal_(math.inf))
    torch.testing.assert_close(det.cost, (-(z @ z.T)).fill_diagonal_(math.inf))


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ROW_ONLY + ITERATED)
def test_bad_embeddings_raise(name):
    loss = make_loss(name)
    z1, z2 = views(4, 5, seed=15)
    bad = z1.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="z1 contains NaN or inf"):
        loss(bad, z2)
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(bad, z2)
    with pytest.raises(ValueError, match="same shape"):
        loss(z1, z2[:3])
    with pytest.raises(ValueError, match="B=1"):
        loss(z1[:1], z2[:1])
    with pytest.raises(ValueError, match=r"shape \(B, d\)"):
        loss(z1[0], z2[0])
    with pytest.raises(TypeError, match="floating point"):
        loss(z1.long(), z2.long())
    with pytest.raises(TypeError, match="different dtypes"):
        loss(z1, z2.float())
    zero = z1.clone()
    zero[1] = 0
    with pytest.raises(ValueError, match="zero vector"):
        loss(z1, zero)


def test_bad_hyperparameters_raise():
    cases = [
        ("ince", dict(epsilon=0.0), ValueError, "epsilon=0.0"),
        ("gca-ince", dict(epsilon=-1), ValueError, "epsilon=-1"),
        ("rince", dict(q=0.0), ValueError, r"q=0.0 must lie in \(0, 1\]"),
        ("rince", dict(q=1.5), ValueError, "q=1.5"),
        ("gca-rince", dict(lam=-0.1), ValueError, "lam=-0.1"),
        ("gca-ince", dict(n_iter=0), ValueError, "n_iter=0"),
        ("gca-ince", dict(n_iter=2.5), TypeError, "n_iter=2.5"),
        ("gca-uot", dict(rho=0.0), ValueError, "rho=0.0"),
        ("gca-uot", dict(rho=(1.0, 2.0, 3.0)), ValueError, "pair"),
        ("gca-uot", dict(r1=0.0, r2=0.0), ValueError, "r1 = r2 = 0"),
        ("ince", dict(layout="diag"), ValueError, "layout='diag'"),
        ("gca-ince", dict(grad="magic"), ValueError, "grad='magic'"),
        ("gca-rince", dict(grad="implicit"), ValueError, "shift"),
        ("ince", dict(rho=0.3), TypeError, r"does not take \['rho'\]"),
        ("simclr", dict(layout="cross"), ValueError, "joint layout"),
        ("iot", dict(layout="cross"), ValueError, "joint layout"),
        ("iot-uni", dict(layout="diag"), ValueError, "layout='diag'"),
        ("iot-uni", dict(lambda_p=-1.0), ValueError, "lambda_p=-1.0"),
        ("rince-authors", dict(lam=0.01), TypeError, r"does not take \['lam'\]"),  # λ has no effect there
        ("gca-rince-authors", dict(q=0.0), ValueError, r"q=0.0 must lie in \(0, 1\]"),
    ]
    for name, kw, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            make_loss(name, **kw)
    with pytest.raises(ValueError, match="unknown loss 'infonce'"):
        make_loss("infonce")
    with pytest.raises(ValueError, match="gca.train"):
        make_loss("byol")
    assert type(make_loss("GCA_UOT")).__name__ == "GCAUOTLoss"


def test_bad_targets_raise():
    z1, z2 = views(3, 4, seed=16)
    with pytest.raises(ValueError, match=r"needs \(6, 6\)"):
        ince_loss(z1, z2, target=torch.ones(3, 3))
    neg = torch.ones(6, 6, dtype=D).fill_diagonal_(0)
    neg[0, 1] = -1
    with pytest.raises(ValueError, match="negative"):
        gca_ince_loss(z1, z2, target=neg)
    with pytest.raises(TypeError, match="target must be"):
        ince_loss(z1, z2, target="labels")
    with pytest.raises(ValueError, match="positive-pair target only"):
        make_loss("iot-uni")(z1, z2, target=targets.positive_pairs(3, dtype=D))
    # a builder is called with the (global) batch size and the layout
    builder = lambda b, layout: targets.supervised_plan(torch.arange(b) % 2, layout, dtype=D)  # noqa: E731
    torch.testing.assert_close(make_loss("ince", target=builder)(z1, z2),
                               ince_loss(z1, z2, target=builder(3, "joint")))
