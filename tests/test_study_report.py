"""Summaries, verdicts and cost measurements of the study (gca.study.report, gca.study.cost)."""

from __future__ import annotations

import math

import pytest

from gca.study.cost import interleaved_rounds, parse_method, saved_tensor_bytes
from gca.study.paper import PAPER_NOISY, PAPER_STANDARD
from gca.study.plan import STUDY_METHODS
from gca.study.report import (METHOD_LABELS, ablation_verdicts, best_method_verdict, compare, cost_verdict,
                              domain_prior_verdict, mean_sd, panel_noise_sd, scale_description)


def test_mean_sd():
    m, sd, n = mean_sd([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and sd == pytest.approx(1.0)
    m, sd, n = mean_sd([0.5])
    assert m == 0.5 and math.isnan(sd) and n == 1
    assert mean_sd([])[2] == 0


def _st(values):
    m, sd, n = mean_sd(values)
    return {"mean": m, "sd": sd, "n": n, "values": values}


def test_compare_and_best_verdicts():
    stats = {"a": _st([0.50, 0.51, 0.52]), "b": _st([0.40, 0.41, 0.42]), "c": _st([0.505, 0.515, 0.525]),
             "one": _st([0.30])}
    assert compare(stats, "a", "b")["verdict"] == "reproduced"
    assert compare(stats, "b", "a")["verdict"] == "not reproduced at this scale"
    assert compare(stats, "a", "c")["verdict"] == "inconclusive"
    assert compare(stats, "a", "missing")["verdict"].startswith("missing")
    assert compare(stats, "one", "b")["verdict"].startswith("inconclusive (one seed")
    assert compare(stats, "one", "b", noise_sd=0.01)["verdict"] == "not reproduced at this scale"
    assert panel_noise_sd(stats) == pytest.approx(0.01)
    assert best_method_verdict(stats, "c")["verdict"] == "inconclusive"  # best, but within noise of "a"
    assert best_method_verdict(stats, "b")["verdict"] == "not reproduced at this scale"
    assert best_method_verdict({"a": stats["a"], "b": stats["b"]}, "a")["verdict"] == "reproduced"
    assert best_method_verdict(stats, "zzz")["verdict"].startswith("missing")


def test_paper_tables_cover_every_method():
    for table in (PAPER_STANDARD, PAPER_NOISY):
        assert set(table) == {"byol", "iot", "iot-uni", "simclr", "ince", "rince", "gca-ince", "gca-rince", "gca-uot"}
        assert all(len(v) == 3 for v in table.values())
    assert PAPER_STANDARD["gca-uot"][0] == 92.61 and PAPER_NOISY["gca-uot"][2] == 71.45
    assert METHOD_LABELS["gca-uot"] == "GCA-UOT" and set(STUDY_METHODS) <= set(METHOD_LABELS)


def test_scale_description_names_the_profile_settings():
    text = scale_description("default")
    assert text.startswith("Profile `cpu`") and "width 16" in text and "10 epochs" in text


def test_saved_tensor_bytes_orders_gradient_modes():
    unrolled = saved_tensor_bytes("gca-ince", n_pairs=64, grad="unrolled")
    detach = saved_tensor_bytes("gca-ince", n_pairs=64, grad="detach")
    assert unrolled > 0 and detach > 0 and detach <= unrolled
    # the unrolled solver keeps its kernel on the autograd context (not via save_for_backward):
    # counted, it is at least one N x N float32 matrix more than the detached plan
    n = 2 * 64
    assert unrolled - detach >= 4 * n * n


def test_interleaved_rounds_pairs_rounds_and_drops_warmup():
    calls = []

    def measure(name, r):
        calls.append((name, r))
        return {"t": float(r)}

    out = interleaved_rounds(["a", "b"], measure, rounds=2, warmup=1)
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]  # round-robin
    assert out == {"a": {"t": [1.0, 2.0]}, "b": {"t": [1.0, 2.0]}}
    with pytest.raises(ValueError, match="rounds"):
        interleaved_rounds(["a"], measure, rounds=0, warmup=0)
    assert parse_method("gca-ince@n_iter=5@epsilon=0.2") == ("gca-ince", {"n_iter": 5, "epsilon": 0.2})
    with pytest.raises(ValueError, match="key=value"):
        parse_method("gca-ince@n_iter")


def test_cost_verdict_uses_paired_rounds():
    fast = {"step_all": [1.0, 1.1, 0.9, 1.0, 1.05]}
    same = {"step_all": [1.01, 1.11, 0.91, 1.01, 1.06]}
    slow = {"step_all": [1.3, 1.4, 1.2, 1.3, 1.35]}
    noisy = {"step_all": [0.9, 1.3, 0.8, 1.2, 1.1]}
    assert cost_verdict({"m": same, "o": fast}, "m", "o")["verdict"] == "reproduced"
    assert cost_verdict({"m": slow, "o": fast}, "m", "o")["verdict"] == "not reproduced at this scale"
    assert cost_verdict({"m": noisy, "o": fast}, "m", "o")["verdict"] == "inconclusive"


def _domain_record(d, dom, cls):
    return {"spec": {"overrides": {"loss.target_alpha": max(d, 0.0), "loss.target_beta": max(-d, 0.0)}},
            "metrics": {"domain_accuracy": dom, "linear_accuracy": cls}}


def test_domain_prior_and_ablation_verdicts():
    rising = [_domain_record(d, 0.7 + 0.2 * d, 0.89 + 0.001 * i) for i, d in enumerate((-0.5, -0.1, 0.0, 0.1, 0.5))]
    v = domain_prior_verdict(rising)
    assert v["verdict"] == "reproduced" and v["verdict_class"] == "reproduced" and v["n"] == 5
    falling = [_domain_record(d, 0.9 - 0.2 * d, 0.5 + d) for d in (-0.5, 0.0, 0.5)]
    v = domain_prior_verdict(falling)
    assert v["verdict"] == "not reproduced at this scale" and v["verdict_class"] == "not reproduced at this scale"
    assert domain_prior_verdict([])["verdict"].startswith("missing")
    a = ablation_verdicts({1: 0.60, 5: 0.70, 9: 0.71}, {0.1: 0.5, 0.4: 0.7, 1.0: 0.6}, 0.01)
    assert a["iters"] == "reproduced" and a["eps"] == "reproduced" and a["best_eps"] == 0.4
    a = ablation_verdicts({1: 0.70, 5: 0.701}, {0.1: 0.70, 0.4: 0.705}, 0.01)
    assert a["iters"] == "inconclusive" and a["eps"] == "inconclusive"
    a = ablation_verdicts({}, {1.0: 0.8, 0.1: 0.5}, 0.01)
    assert a["iters"].startswith("missing") and a["eps"] == "not reproduced at this scale"
