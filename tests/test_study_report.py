"""What the experiment pages show (gca.study.report) and the cost measurements (gca.study.cost)."""

from __future__ import annotations

import json
import math

import pytest

from gca.config import config_to_dict
from gca.study.cost import interleaved_rounds, parse_method, saved_tensor_bytes
from gca.study.paper import PAPER_NOISY, PAPER_STANDARD, PAPER_STANDARD_COLUMNS
from gca.study.plan import STUDY_METHODS, RunSpec, resolve_spec, study_plan
from gca.study.report import (METHOD_LABELS, NOT_COMPUTED, claims_frame, claims_note, cost_verdict, describe_difference,
                              describe_runs,
                              floors_by_seed, mean_sd, method_table, page_claims, paired_difference, panel_rows,
                              row_label, run_problem, runs_markdown, scale_description, seed_ranges)
from gca.study.run import Results


def test_mean_sd():
    m, sd, n = mean_sd([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and sd == pytest.approx(1.0)
    m, sd, n = mean_sd([0.5])
    assert m == 0.5 and math.isnan(sd) and n == 1
    assert mean_sd([])[2] == 0


def test_paper_tables_cover_every_method():
    for table in (PAPER_STANDARD, PAPER_NOISY):
        assert set(table) == {"byol", "iot", "iot-uni", "simclr", "ince", "rince", "gca-ince", "gca-rince", "gca-uot"}
        assert all(len(v) == 3 for v in table.values())
    assert PAPER_STANDARD["gca-uot"][0] == 92.61 and PAPER_NOISY["gca-uot"][2] == 71.45
    assert METHOD_LABELS["gca-uot"] == "GCA-UOT" and set(STUDY_METHODS) <= set(METHOD_LABELS)


def _record(method, seed, acc, *, experiment="standard", tag="", profile="cpu", overrides=None,
            uniformity=-2.5, alignment=0.6, n_train=20000, n_test=10000):
    """A result record as gca.study.run writes it (the configuration resolved for the cpu study)."""
    spec = RunSpec(experiment, method, seed, dict(overrides or {}), tag=tag)
    config = config_to_dict(resolve_spec(spec, profile))
    return {"spec": spec.to_dict(), "config": config,
            "metrics": {"linear_accuracy": acc, "knn_accuracy": acc - 0.02, "uniformity": uniformity,
                        "alignment": alignment, "n_train": n_train, "n_test": n_test, "feat_dim": 64,
                        "dataset": config["data"]["dataset"], "dataset_description": "CIFAR-10 (JPEG copy)",
                        "probe_train": {"source": "training split, fixed for every run", "per_class": 2000,
                                        "seed": 1000}}}


def _results(records, missing=()):
    return Results("cpu", records=list(records), missing=list(missing))


def test_seed_ranges():
    assert seed_ranges([3, 0, 1, 2, 5, 7, 8]) == "0–3, 5, 7–8"
    assert seed_ranges([4]) == "4" and seed_ranges([]) == "none"


def test_scale_description_is_generated_from_the_runs_shown():
    recs = [_record("untrained", s, 0.32) for s in range(3)] + [_record("ince", s, 0.41) for s in (0, 1)]
    text = scale_description(recs, planned=9)
    assert text.startswith("Runs shown: 5 of the 9 planned.")
    for part in ("`cifar10` (CIFAR-10 (JPEG copy))", "500 per class", "16 px", "width 16", "64-d features",
                 "10 epochs", "20,000 training images (2,000 per class", "10,000 test images", "Seeds present: 0–2",
                 "untrained encoder 3, INCE 2", "ε = 0.5"):
        assert part in text, part
    # from the runs, not from the profile: a run at another scale shows up in the paragraph
    other = _record("ince", 4, 0.5, overrides={"train.epochs": 3, "data.image_size": 32}, n_test=500)
    text = scale_description(recs + [other])
    assert "10 / 3 epochs" in text and "16 px / 32 px" in text and "10,000 / 500 test images" in text
    assert "Seeds present: 0–2, 4" in text
    # the sweep's settings, per tag
    sweep = [_record("gca-ince", 0, 0.4, experiment="ablation_iters", tag=f"T={t}",
                     overrides={"loss.hparams.n_iter": t}) for t in (1, 5)]
    text = scale_description(sweep)
    assert "T = 1, 5" in text and "GCA-INCE [T=1] 1, GCA-INCE [T=5] 1" in text
    assert "not yet computed" in scale_description([], planned=4)


def test_run_problem_flags_collapse_and_failure_but_never_calibration():
    floors = floors_by_seed([_record("untrained", 0, 0.30, uniformity=-0.3, alignment=0.1)])
    assert floors == {0: 0.30}
    assert run_problem(_record("untrained", 0, 0.30, uniformity=-0.3, alignment=0.1), floors) is None
    assert run_problem(_record("byol", 0, 0.40, uniformity=-0.1, alignment=0.01), floors) == "collapsed"
    assert run_problem(_record("byol", 0, 0.29), floors) == "failed to train"
    assert run_problem(_record("byol", 0, 0.29)) is None  # no floor known: not judged
    assert run_problem(_record("ince", 0, 0.41), floors) is None


def test_panel_rows_put_calibration_first_and_last_and_add_equal_methods():
    rows = panel_rows(["supervised", "gca-uot", "ince", "untrained", "gca-ince", "byol"])
    assert rows[0] == "untrained" and rows[-1] == "supervised"
    assert rows.index("simclr") < rows.index("ince") and "iot" in rows and "iot-uni" not in rows
    assert row_label("simclr") == "SimCLR (= INCE by definition)"
    assert row_label("iot") == "IOT (= GCA-INCE by definition)"
    assert row_label("untrained") == "untrained encoder (floor)" and row_label("supervised") == "supervised (ceiling)"


def test_method_table():
    planned = [s for s in study_plan("cpu", ["standard"]) if s.seed < 2]
    recs = ([_record("untrained", s, 0.30 + 0.01 * s) for s in (0, 1)]
            + [_record("ince", s, 0.40 + 0.01 * s) for s in (0, 1)]
            + [_record("byol", 0, 0.25), _record("byol", 1, 0.27)]
            + [_record("gca-uot", 0, 0.42), _record("gca-uot", 1, 0.50, uniformity=-0.1, alignment=0.01)])
    missing = [(s, "not computed yet") for s in planned if s.method in ("gca-ince", "supervised")]
    res = _results(recs, missing)
    table = method_table(res, "standard", planned=planned, paper=PAPER_STANDARD,
                         paper_columns=PAPER_STANDARD_COLUMNS, floors=floors_by_seed(recs))
    rows = list(table.index)
    assert rows[0] == "untrained encoder (floor)" and rows[-1] == "supervised (ceiling)"
    assert table.loc["SimCLR (= INCE by definition)", "ours linear (%)"] == table.loc["INCE", "ours linear (%)"] \
        == "40.50 ± 0.71"
    assert table.loc["SimCLR (= INCE by definition)", "paper CIFAR-10"] == PAPER_STANDARD["simclr"][0]
    assert "reuses the INCE runs" in table.loc["SimCLR (= INCE by definition)", "note"]
    assert table.loc["INCE", "n"] == "2 of 2"
    assert "failed to train (below the untrained encoder)" in table.loc["BYOL", "note"]
    # the collapsed GCA-UOT run is not averaged and is said
    assert table.loc["GCA-UOT", "ours linear (%)"] == "42.00" and table.loc["GCA-UOT", "n"] == "1 of 2"
    assert "1 of 2 runs collapsed" in table.loc["GCA-UOT", "note"]
    assert table.loc["GCA-INCE", "ours linear (%)"] == NOT_COMPUTED
    assert table.loc["supervised (ceiling)", "paper CIFAR-10"] == "—"
    assert "calibration: the ceiling" in table.loc["supervised (ceiling)", "note"]
    # a panel without its own floor borrows one (the noisy panel: the standard panel's untrained encoder)
    noisy = _results([_record("ince", 0, 0.38, experiment="noisy")])
    t2 = method_table(noisy, "noisy", planned=[], calibration=res, calibration_note="the standard panel's runs")
    assert list(t2.index)[0] == "untrained encoder (floor)" and "standard panel" in t2.iloc[0]["note"]
    assert "supervised (ceiling)" not in t2.index  # not computed in the calibration results: no row


def test_paired_difference_is_descriptive_and_paired():
    recs = [_record("untrained", s, 0.30 + 0.01 * s) for s in range(3)] + [_record("ince", s, 0.40 + 0.02 * s)
                                                                           for s in (0, 1, 2, 5)]
    d = paired_difference(_results(recs), "standard", "ince", "untrained")
    assert d["n"] == 3 and d["seeds"] == [0, 1, 2]
    assert d["effect"] == pytest.approx(11.0) and d["ci_low"] < 11.0 < d["ci_high"]
    none = paired_difference(_results(recs), "standard", "gca-uot", "untrained")
    assert none["n"] == 0 and math.isnan(none["effect"]) and none["why"] == NOT_COMPUTED
    assert describe_difference(none) == NOT_COMPUTED
    assert describe_difference(d).startswith("+11.0 points (95 % interval")
    collapsed = recs + [_record("gca-uot", 0, 0.5, uniformity=-0.1, alignment=0.01)]
    assert "collapsed" in describe_difference(paired_difference(_results(collapsed), "standard", "gca-uot", "untrained"))


def test_describe_runs_says_collapsed_and_missing():
    ok = [_record("ince", s, 0.40 + 0.01 * s) for s in range(3)]
    bad = [_record("ince", 3, 0.9, uniformity=-0.1, alignment=0.01)]
    assert describe_runs(ok) == "41.0 ± 1.0 % (n = 3)"
    assert describe_runs(ok + bad) == "41.0 ± 1.0 % (n = 3), 1 collapsed run(s) not used"
    assert describe_runs(bad) == "every run collapsed (1 of 1; not used)"
    assert describe_runs([]) == NOT_COMPUTED


def test_runs_markdown_groups_the_missing_runs():
    planned = study_plan("cpu", ["standard"])
    done = [_record("untrained", s.seed, 0.3) for s in planned if s.method == "untrained"]
    missing = [(s, "not computed yet") for s in planned if s.method != "untrained"]
    missing[0] = (missing[0][0], "being computed by another process (see the study log)")
    text = runs_markdown(_results(done, missing))
    assert text.startswith(f"**Runs.** {len(done)} of the {len(planned)} runs")
    last_ince = max(s.seed for s in planned if s.method == "ince")
    assert f"standard/INCE (seeds 0–{last_ince}): running / not yet computed" in text
    assert runs_markdown(_results(done)).startswith(f"**Runs.** All {len(done)} runs")


def test_page_claims_read_from_the_ledger_only(tmp_path, monkeypatch):
    monkeypatch.setenv("GCA_RESULTS_DIR", str(tmp_path))
    assert page_claims("default", ["standard."]) is None
    assert "No claims ledger yet" in claims_note("default", None)
    claim = {"id": "standard.gca-uot-vs-ince", "statement": "GCA-UOT beats INCE", "family": "primary",
             "kind": "paper-claim", "metric": "metrics.linear_accuracy", "scale": 100,
             "arms": [{"label": "GCA-UOT", "results": []}, {"label": "INCE", "results": []}], "pairing": "seed",
             "paper_effect": 0.6, "effect": 0.5, "ci_low": -0.1, "ci_high": 1.1, "p": 0.09, "p_holm": 0.18,
             "n": 8, "mde": 0.8, "verdict": "not detected", "collapsed_excluded": [],
             "preregistration_sha256": "0" * 64}
    other = dict(claim, id="noisy.rince-vs-ince", statement="RINCE beats INCE")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "claims.json").write_text(json.dumps([claim, other]))
    got = page_claims("default", ["standard."])
    assert [c["id"] for c in got] == ["standard.gca-uot-vs-ince"]
    frame = claims_frame(got)
    row = frame.loc["GCA-UOT beats INCE"]
    assert row["verdict"] == "not detected" and row["95 % CI"] == "[−0.10, +1.10]" and row["p (Holm)"] == "0.090 (0.180)"
    assert "Verdicts from the claims ledger" in claims_note("default", got)
    assert page_claims("default", ["domain."]) == []


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


def test_scale_description_of_a_whole_study_reads_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GCA_RESULTS_DIR", str(tmp_path))  # an empty cache: nothing is computed
    n = len(study_plan("smoke"))
    assert scale_description("smoke") == (f"No run of this page has a current result yet ({n} planned: "
                                          f"{NOT_COMPUTED}); this paragraph describes the runs once they are computed.")
