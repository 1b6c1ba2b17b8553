"""Target-plan builders (gca.losses.targets): supports, marginals, the paper's domain prior, validation."""

import pytest
import torch

from gca.losses import targets as plans


@pytest.mark.parametrize("layout,n", [("joint", 10), ("cross", 5)])
def test_positive_pairs_is_the_permutation_of_pi(layout, n):
    pi = plans.positive_index(5, layout)
    p = plans.positive_pairs(5, layout)
    assert p.shape == (n, n)
    assert torch.equal(p.sum(0), torch.ones(n)) and torch.equal(p.sum(1), torch.ones(n))
    assert torch.equal(p.argmax(1), pi)
    assert torch.equal(pi[pi], torch.arange(n))  # π is an involution (i <-> i ± B, or identity)
    if layout == "joint":
        assert torch.equal(pi, torch.tensor([5, 6, 7, 8, 9, 0, 1, 2, 3, 4]))
        assert p.diagonal().sum() == 0


def test_supervised_plan_same_label_is_positive():
    labels = torch.tensor([0, 1, 0, 2])
    p = plans.supervised_plan(labels, "joint")
    assert p.shape == (8, 8)
    torch.testing.assert_close(p.sum(1), torch.ones(8))
    assert p.diagonal().sum() == 0
    # anchor 0 (label 0): positives are 2 (view 1 of sample 2), 4 (own view 2), 6 (view 2 of sample 2)
    assert torch.equal(torch.nonzero(p[0]).flatten(), torch.tensor([2, 4, 6]))
    torch.testing.assert_close(p[0, [2, 4, 6]], torch.full((3,), 1 / 3))
    # a unique label: only its own other view
    assert torch.equal(torch.nonzero(p[1]).flatten(), torch.tensor([5]))
    c = plans.supervised_plan(labels, "cross")
    assert torch.equal(torch.nonzero(c[0]).flatten(), torch.tensor([0, 2]))


def test_domain_prior_matches_the_formula_entrywise():
    domains = torch.tensor([0, 0, 1])
    alpha, beta = 0.3, 0.05
    p = plans.domain_prior_plan(domains, alpha=alpha, beta=beta, layout="joint")
    d = torch.cat([domains, domains])
    pi = plans.positive_index(3, "joint")
    expected = torch.zeros(6, 6)
    for i in range(6):
        for j in range(6):
            if i == j:
                continue
            expected[i, j] = (1.0 if j == pi[i] else 0.0) + alpha * float(d[i] == d[j] and j != pi[i]) \
                + beta * float(d[i] != d[j])
        expected[i] /= expected[i].sum()
    torch.testing.assert_close(p, expected)
    # alpha = beta = 0 is the positive-pair target
    torch.testing.assert_close(plans.domain_prior_plan(domains, alpha=0.0, beta=0.0),
                               plans.positive_pairs(3, "joint"))


def test_custom_plan_renormalises_rows_and_validates():
    m = torch.rand(4, 4)
    out = plans.custom_plan(m, "cross")
    torch.testing.assert_close(out.sum(1), torch.ones(4))
    torch.testing.assert_close(out * m.sum(1, keepdim=True), m)
    with pytest.raises(ValueError, match="negative"):
        plans.custom_plan(m - 2, "cross")
    with pytest.raises(ValueError, match="square"):
        plans.custom_plan(torch.rand(4, 3), "cross")
    with pytest.raises(ValueError, match="diagonal"):
        plans.custom_plan(torch.rand(4, 4), "joint")
    with pytest.raises(ValueError, match="NaN or inf"):
        plans.custom_plan(torch.full((4, 4), float("nan")), "cross")
    with pytest.raises(ValueError, match="row 1 has no mass"):
        plans.custom_plan(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "cross")
    with pytest.raises(ValueError, match=r"needs \(6, 6\)"):
        plans.custom_plan(torch.ones(4, 4).fill_diagonal_(0), "joint", batch_size=3)
    with pytest.raises(ValueError, match="layout='diag'"):
        plans.custom_plan(m, "diag")


def test_builders_reject_bad_ids_and_weights():
    with pytest.raises(TypeError, match="integer ids"):
        plans.supervised_plan(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        plans.supervised_plan(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        plans.supervised_plan(torch.tensor([1]))
    with pytest.raises(ValueError, match="alpha=-0.1"):
        plans.domain_prior_plan(torch.tensor([0, 1]), alpha=-0.1, beta=0.0)
    with pytest.raises(TypeError, match="beta"):
        plans.domain_prior_plan(torch.tensor([0, 1]), alpha=0.1, beta="x")
    with pytest.raises(TypeError, match="batch_size"):
        plans.positive_index(2.0, "joint")


@pytest.mark.parametrize("layout", ["joint", "cross"])
@pytest.mark.parametrize("delta", [-1.0, -0.5, 0.0, 0.3, 1.0])
def test_domain_prior_row_mass_against_a_loop(layout, delta):
    """Row-mass form: the positive keeps 1 − m; same-domain entries share m(1 + δ)/2 and
    cross-domain ones m(1 − δ)/2, evenly — written out entry by entry."""
    g = torch.Generator().manual_seed(3)
    dom = torch.randint(0, 3, (7,), generator=g)
    m = 0.2
    alpha, beta = max(delta, 0.0), max(-delta, 0.0)
    p = plans.domain_prior_plan(dom, alpha=alpha, beta=beta, layout=layout, form="row-mass", mass=m,
                                dtype=torch.float64)
    d = dom.repeat(2) if layout == "joint" else dom
    n, pi = d.numel(), plans.positive_index(7, layout)
    ref = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        same = [j for j in range(n) if j != pi[i] and not (layout == "joint" and j == i) and d[j] == d[i]]
        cross = [j for j in range(n) if j != pi[i] and not (layout == "joint" and j == i) and d[j] != d[i]]
        w_same, w_cross = (1 + delta) / 2, (1 - delta) / 2
        if not cross:
            w_same = 1.0
        if not same:
            w_cross = 1.0
        ref[i, pi[i]] = 1 - m
        for j in same:
            ref[i, j] = m * w_same / len(same)
        for j in cross:
            ref[i, j] = m * w_cross / len(cross)
    torch.testing.assert_close(p, ref, rtol=0, atol=1e-15)


def test_domain_prior_row_mass_keeps_the_positive_share_at_any_batch_size():
    for b in (8, 64, 256):
        dom = torch.arange(b) % 4
        p = plans.domain_prior_plan(dom, alpha=0.5, beta=0.0, form="row-mass", mass=0.2)
        pi = plans.positive_index(b, "joint")
        torch.testing.assert_close(p[torch.arange(2 * b), pi], torch.full((2 * b,), 0.8))
        # per-entry at the same α − β: the positive's share shrinks with the batch
        q = plans.domain_prior_plan(dom, alpha=0.5, beta=0.0)
        assert q[0, pi[0]] < 0.8


def test_domain_prior_form_is_validated():
    dom = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="form"):
        plans.domain_prior_plan(dom, alpha=0.1, beta=0.0, form="rows")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        plans.domain_prior_plan(dom, alpha=1.5, beta=0.0, form="row-mass")
    with pytest.raises(ValueError, match="mass"):
        plans.domain_prior_plan(dom, alpha=0.5, beta=0.0, form="row-mass", mass=1.0)
