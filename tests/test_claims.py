"""gca.study.claims: exclusion rules, the pre-registration, building, writing and verifying the ledger."""
import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from gca.methods import get_method
from gca.study import claims as cl
from gca.study.claims import (
    CLAIM_KEYS,
    apply_holm,
    build_claim,
    claims_table_markdown,
    failed_to_train,
    is_collapsed,
    read_claims,
    verify_claims,
    write_claims,
)
from gca.study.preregistration import load_preregistration, validate_preregistration
from gca.study.stats import (NOT_TESTED, REPRODUCED, holm, minimum_detectable_effect, paired_comparison, verdict,
                             welch_comparison)

DATA = Path(__file__).parent / "data"
PREREG = DATA / "prereg_example.yaml"


def _record(uniformity=-2.5, alignment=0.7, acc=0.40, **spec):
    return {"spec": spec, "metrics": {"uniformity": uniformity, "alignment": alignment, "linear_accuracy": acc}}


# --- collapse and failure to train -------------------------------------------------------------

@pytest.mark.parametrize("u,a,expected", [
    (-2.5, 0.7, False),   # healthy
    (-0.05, 0.02, True),  # every projection near one point
    (-0.1, 0.9, False),   # both must be near 0
    (-0.6, 0.05, False),
    (-0.5, 0.1, False),   # strict: uniformity must exceed −0.5
    (-0.49, 0.19, True),
])
def test_is_collapsed_synthetic(u, a, expected):
    assert is_collapsed(_record(u, a)) is expected


def test_is_collapsed_thresholds_and_missing_metrics():
    assert is_collapsed(_record(-0.8, 0.1), uniformity_max=-1.0)
    assert not is_collapsed(_record(-0.1, 0.1), alignment_max=0.05)
    with pytest.raises(ValueError, match="metrics.uniformity"):
        is_collapsed({"metrics": {"alignment": 0.1}}, source="r.json")
    with pytest.raises(ValueError, match="r.json: metrics.alignment = 'x'"):
        is_collapsed({"metrics": {"uniformity": -1.0, "alignment": "x"}}, source="r.json")
    with pytest.raises(TypeError, match="mapping"):
        is_collapsed([1, 2])


def test_collapse_rule_on_real_records():
    """Runs of results/cpu: the domain-prior runs with α − β ≠ 0 that collapsed, BYOL, and healthy ones."""
    records = json.loads((DATA / "collapse_records.json").read_text())["records"]
    assert {r["collapsed"] for r in records} == {True, False}
    for r in records:
        assert is_collapsed(r, source=r["source"]) is r["collapsed"], r["source"]


def test_failed_to_train():
    untrained = 0.306  # the untrained small network with the same probe (issue 12)
    records = {r["spec"]["method"] + str(r["spec"]["seed"]): r
               for r in json.loads((DATA / "collapse_records.json").read_text())["records"]
               if r["spec"]["experiment"] == "standard"}
    assert failed_to_train(records["byol0"], untrained)      # BYOL 25.3 %
    assert not failed_to_train(records["ince0"], untrained)  # INCE 39.9 %
    assert failed_to_train(_record(acc=0.306), untrained)    # not above the floor
    with pytest.raises(ValueError, match="untrained_accuracy = None"):
        failed_to_train(_record(), None)


# --- pre-registration -------------------------------------------------------------------------

def _prereg_data():
    return yaml.safe_load(PREREG.read_text())


def test_load_example_preregistration():
    prereg, sha = load_preregistration(PREREG)
    assert sha == hashlib.sha256(PREREG.read_bytes()).hexdigest()
    specs = {c["id"]: c for c in prereg["claims"]}
    assert list(specs) == ["gca-uot-vs-ince", "gca-ince-vs-ince", "simclr-equals-ince", "byol-vs-ince-unpaired"]
    uot = specs["gca-uot-vs-ince"]
    assert (uot["scale"], uot["alpha"], uot["power"], uot["equivalence_margin"]) == (100, 0.05, 0.8, None)
    assert [a["label"] for a in uot["arms"]] == ["GCA-UOT", "INCE"]
    assert specs["simclr-equals-ince"]["equivalence_margin"] == 1.0  # from verdict_rule
    assert uot["collapse"] == {"uniformity_max": -0.5, "alignment_max": 0.2}


def test_hypotheses_is_a_synonym_of_claims():
    data = _prereg_data()
    data["hypotheses"] = data.pop("claims")
    assert [c["id"] for c in validate_preregistration(data)["claims"]][0] == "gca-uot-vs-ince"


def _mutate(path, value):
    """Set (or, with value ``...``, delete) ``path`` (a tuple of keys/indices) in the example."""
    data = _prereg_data()
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize("path,value,match", [
    (("alpha",), ..., "missing required key.*alpha"),
    (("claims",), ..., r"claims \(or hypotheses\)"),
    (("version",), 3, "last history entry is version 2 but version = 3"),
    (("history", 1, "reason"), "", r"history\[1\]"),
    (("power",), 0.01, "power = 0.01"),
    (("claims", 0, "family"), "tertiary", "family = 'tertiary'"),
    (("claims", 0, "kind"), "claim", "kind = 'claim'"),
    (("claims", 0, "arms", 1, "method"), "infonce", "unknown method 'infonce'"),
    (("claims", 0, "arms"), [{"experiment": "standard", "method": "ince"}], "exactly two arms"),
    (("claims", 1, "id"), "gca-uot-vs-ince", "appears twice"),
    (("claims", 0, "pairing"), "pair", "pairing = 'pair'"),
    (("claims", 0, "metric"), "metrics linear", "metric = 'metrics linear'"),
    (("claims", 0, "paper_efect"), 1.0, "unknown key.*paper_efect"),
    (("verdict_rule", "equivalence_margin"), ..., "no-difference claim"),
    (("sample_sizes", "primary", "n"), 4, r"n = 4 gives MDE .* > mde_target 1.0 .* 10 seeds reach it"),
    (("sample_sizes", "secondary"), ..., "no entry for family 'secondary'"),
    (("sample_sizes", "primary", "pilot"), ..., "pilot must say"),
    (("collapse_rule",), {"uniformity_max": -0.5}, "collapse_rule"),
])
def test_preregistration_validation_names_the_problem(path, value, match):
    with pytest.raises(ValueError, match=match):
        validate_preregistration(_mutate(path, value), source="x.yaml")


def test_load_preregistration_file_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_preregistration(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [1\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_preregistration(bad)


# --- a synthetic study ---------------------------------------------------------------------------

def _write_run(root, experiment, method, seed, acc, uniformity=-2.5, alignment=0.7):
    rel = f"results/cpu/{experiment}/{method}-s{seed}.json"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_record(uniformity, alignment, acc, experiment=experiment, method=method, seed=seed)))
    return rel


@pytest.fixture()
def study(tmp_path):
    """Ten seeds of INCE, GCA-UOT (+1.2 points), GCA-INCE (+0.3, seed 3 collapsed), BYOL (collapsed
    at seed 0, failed to train everywhere) in a temporary repository; returns (root, paths, specs, sha)."""
    rng = np.random.default_rng(0)
    base = 0.40 + 0.012 * rng.standard_normal(10)
    paths = {"ince": [], "gca-uot": [], "gca-ince": [], "byol": []}
    collapsed = dict(uniformity=-0.05, alignment=0.02)
    for s in range(10):
        noise = 0.004 * rng.standard_normal(2)
        paths["ince"].append(_write_run(tmp_path, "standard", "ince", s, base[s]))
        paths["gca-uot"].append(_write_run(tmp_path, "standard", "gca-uot", s, base[s] + 0.012 + noise[0]))
        paths["gca-ince"].append(_write_run(tmp_path, "standard", "gca-ince", s, base[s] + 0.003 + noise[1],
                                            **(collapsed if s == 3 else {})))
        paths["byol"].append(_write_run(tmp_path, "standard", "byol", s, 0.27 + 0.01 * rng.standard_normal(),
                                        **(collapsed if s == 0 else {})))
    prereg, sha = load_preregistration(PREREG)
    specs = {c["id"]: c for c in prereg["claims"]}
    return tmp_path, paths, specs, sha


def _arms(paths, spec):
    """The runs that stand for each arm (SimCLR's are INCE's: gca.methods same_as)."""
    return [paths[get_method(a["method"]).same_as or a["method"]] for a in spec["arms"]]


def _ledger(study, **kw):
    root, paths, specs, sha = study
    return apply_holm([build_claim(s, _arms(paths, s), sha, root, **kw) for s in specs.values()])


def _values(root, rels):
    return [100 * json.loads((root / r).read_text())["metrics"]["linear_accuracy"] for r in rels]


def test_build_claim_paired(study):
    root, paths, specs, sha = study
    c = build_claim(specs["gca-uot-vs-ince"], [paths["gca-uot"][::-1], paths["ince"]], sha, root)
    assert tuple(c) == CLAIM_KEYS
    assert c["arms"][0] == {"label": "GCA-UOT", "results": paths["gca-uot"]}  # back in seed order
    ref = paired_comparison(_values(root, paths["gca-uot"]), _values(root, paths["ince"]))
    assert (c["effect"], c["ci_low"], c["ci_high"], c["p"], c["n"]) == pytest.approx(
        (ref.effect, ref.ci_low, ref.ci_high, ref.p, 10), rel=1e-12)
    assert c["verdict"] == verdict(ref.ci_low, ref.ci_high, 1.15) and c["verdict"].startswith(REPRODUCED)
    assert c["mde"] == pytest.approx(minimum_detectable_effect(ref.sd, 10), rel=1e-9)
    assert c["p_holm"] is None and c["collapsed_excluded"] == [] and c["preregistration_sha256"] == sha
    assert (c["scale"], c["pairing"], c["paper_effect"]) == (100, "seed", 1.15)


def test_a_collapsed_run_drops_its_pair(study):
    root, paths, specs, sha = study
    c = build_claim(specs["gca-ince-vs-ince"], [paths["gca-ince"], paths["ince"]], sha, root)
    assert c["collapsed_excluded"] == [paths["gca-ince"][3], paths["ince"][3]]
    keep = [i for i in range(10) if i != 3]
    ref = paired_comparison(*[[v for i, v in enumerate(_values(root, paths[m])) if i in keep]
                              for m in ("gca-ince", "ince")])
    assert c["n"] == 9 and c["effect"] == pytest.approx(ref.effect) and c["ci_low"] == pytest.approx(ref.ci_low)


def test_welch_claim_and_failed_to_train(study):
    root, paths, specs, sha = study
    spec = specs["byol-vs-ince-unpaired"]
    c = build_claim(spec, [paths["byol"], paths["ince"]], sha, root)
    assert c["collapsed_excluded"] == [paths["byol"][0]] and c["n"] == 9  # unpaired: only the run goes
    ref = welch_comparison(_values(root, paths["byol"][1:]), _values(root, paths["ince"]))
    assert (c["effect"], c["ci_high"], c["p"]) == pytest.approx((ref.effect, ref.ci_high, ref.p))
    # With the untrained floor every BYOL run fails to train: nothing left to test.
    c = build_claim(spec, [paths["byol"], paths["ince"]], sha, root, untrained_accuracy=0.306)
    assert c["collapsed_excluded"] == paths["byol"] and c["verdict"] == NOT_TESTED
    assert c["effect"] is None and c["n"] == 0 and c["mde"] is None


def test_no_difference_claim_on_identical_runs(study):
    root, paths, specs, sha = study
    c = build_claim(specs["simclr-equals-ince"], [paths["ince"], paths["ince"]], sha, root)  # SimCLR ≡ INCE
    assert (c["effect"], c["ci_low"], c["ci_high"], c["p"], c["mde"]) == (0.0, 0.0, 0.0, 1.0, 0.0)
    assert c["verdict"] == REPRODUCED and c["arms"][0]["label"] == "SimCLR"


def test_build_claim_refuses_mismatched_runs(study):
    root, paths, specs, sha = study
    spec = specs["gca-uot-vs-ince"]
    with pytest.raises(ValueError, match="a 'byol' run cannot stand for arm 'gca-uot'"):
        build_claim(spec, [paths["byol"], paths["ince"]], sha, root)
    with pytest.raises(ValueError, match="as many runs"):
        build_claim(spec, [paths["gca-uot"][:9], paths["ince"]], sha, root)
    with pytest.raises(ValueError, match="different seeds"):
        build_claim(spec, [paths["gca-uot"][1:], paths["ince"][:9]], sha, root)
    with pytest.raises(ValueError, match="seed.*twice"):
        build_claim(spec, [paths["gca-uot"][:9] + paths["gca-uot"][:1], paths["ince"]], sha, root)
    with pytest.raises(ValueError, match="result file not found"):
        build_claim(spec, [["results/cpu/none.json"] * 10, paths["ince"]], sha, root)
    with pytest.raises(ValueError, match="inside the repository"):
        build_claim(spec, [["/etc/hostname"], paths["ince"]], sha, root)
    with pytest.raises(ValueError, match="prereg_sha256 = 'abc'"):
        build_claim(spec, [paths["gca-uot"], paths["ince"]], "abc", root)
    other = copy.deepcopy(spec)
    other["arms"][0]["experiment"] = "noisy"
    with pytest.raises(ValueError, match="experiment 'standard' is not arm experiment 'noisy'"):
        build_claim(other, [paths["gca-uot"], paths["ince"]], sha, root)


def test_apply_holm_within_families(study):
    ledger = _ledger(study)
    prim = [c for c in ledger if c["family"] == "primary"]
    assert [c["p_holm"] for c in prim] == pytest.approx(holm([c["p"] for c in prim]))
    # One claim per other family: m = 1 there.
    for c in ledger:
        if c["family"] != "primary":
            assert c["p_holm"] == pytest.approx(c["p"])
    untested = dict(prim[1], p=None)
    out = apply_holm([prim[0], untested])
    assert out[0]["p_holm"] == pytest.approx(min(1.0, 2 * prim[0]["p"])) and out[1]["p_holm"] is None


# --- the ledger file and its verification ----------------------------------------------------

def test_write_and_read_claims(study, tmp_path):
    ledger = _ledger(study)
    path = write_claims(ledger, tmp_path / "out" / "claims.json")
    assert read_claims(path) == ledger
    assert list(json.loads(path.read_text())[0]) == list(CLAIM_KEYS)
    assert [p.name for p in path.parent.iterdir()] == ["claims.json"]  # no temporary file left
    with pytest.raises(ValueError, match="unexpected \\['extra'\\]"):
        write_claims([dict(ledger[0], extra=1)], path)
    with pytest.raises(ValueError, match="non-finite"):
        write_claims([dict(ledger[0], effect=float("nan"))], path)
    with pytest.raises(ValueError, match="appear twice"):
        write_claims([ledger[0], ledger[0]], path)
    assert read_claims(path) == ledger  # failed writes left the file alone


def test_write_claims_is_atomic(study, tmp_path, monkeypatch):
    ledger = _ledger(study)
    path = write_claims(ledger, tmp_path / "claims.json")
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cl.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_claims(ledger[:1], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claims.json", "results"]


def _ledger_file(study):
    root = study[0]
    path = write_claims(_ledger(study), root / "results" / "cpu" / "claims.json")
    shutil.copy(PREREG, path.parent / "preregistration.yaml")  # found beside the ledger
    return root, path


def test_verify_a_correct_ledger(study):
    root, path = _ledger_file(study)
    assert verify_claims(path, root) == []
    assert verify_claims(path, root, preregistration=PREREG) == []
    os.remove(path.parent / "preregistration.yaml")
    # Without the pre-registration the no-difference claim's margin is unknown.
    problems = verify_claims(path, root)
    assert len(problems) == 1 and "margin" in problems[0]
    assert problems[0].startswith("simclr-equals-ince: cannot recompute")


def _tamper(path, cid, **changes):
    ledger = read_claims(path)
    for c in ledger:
        if c["id"] == cid:
            c.update(changes)
    write_claims(ledger, path)


@pytest.mark.parametrize("field,value", [("effect", 2.0), ("ci_high", 9.0), ("n", 7), ("mde", 0.1),
                                         ("verdict", "contradicted"), ("p_holm", 0.5)])
def test_verify_finds_a_changed_number(study, field, value):
    root, path = _ledger_file(study)
    _tamper(path, "gca-uot-vs-ince", **{field: value})
    problems = verify_claims(path, root)
    assert len(problems) == 1 and problems[0].startswith(f"gca-uot-vs-ince: {field}: recorded {value!r}")


def test_verify_finds_order_exclusion_and_provenance_problems(study):
    root, path = _ledger_file(study)
    ledger = read_claims(path)
    uot = ledger[0]
    swapped = [dict(uot["arms"][0], results=uot["arms"][0]["results"][::-1]), uot["arms"][1]]
    _tamper(path, "gca-uot-vs-ince", arms=swapped)
    assert any("arms[0].results are not in seed order" in p for p in verify_claims(path, root))

    root, path = _ledger_file(study)
    _tamper(path, "gca-ince-vs-ince", collapsed_excluded=[])  # a collapsed run kept: everything moves
    problems = verify_claims(path, root)
    assert any(p.startswith("gca-ince-vs-ince: collapsed_excluded: recorded []") for p in problems)

    root, path = _ledger_file(study)
    _tamper(path, "gca-uot-vs-ince", preregistration_sha256="0" * 64, paper_effect=0.5)
    problems = verify_claims(path, root)
    assert any("preregistration_sha256: recorded 000" in p for p in problems)
    assert any("paper_effect: recorded 0.5, pre-registered 1.15" in p for p in problems)

    root, path = _ledger_file(study)
    write_claims(read_claims(path)[1:], path)
    assert verify_claims(path, root) == ["gca-uot-vs-ince: pre-registered but missing from the ledger"]


def test_verify_rechecks_failure_to_train_only_with_the_floor(study):
    root, path = _ledger_file(study)
    ledger = read_claims(path)
    # A healthy INCE run excluded by hand: accepted without the floor, caught with it.
    c = ledger[0]
    c["collapsed_excluded"] = [c["arms"][0]["results"][5], c["arms"][1]["results"][5]]
    _, _, specs, sha = study
    # build_claim cannot drop a run by hand (on purpose); the private builder can, to forge the ledger.
    c.update({k: v for k, v in cl._build(specs[c["id"]], [a["results"] for a in c["arms"]], sha, root, None,
                                           c["collapsed_excluded"]).items() if k != "p_holm"})
    write_claims(apply_holm(ledger), path)
    assert verify_claims(path, root) == []
    problems = verify_claims(path, root, untrained_accuracy=0.306)
    assert any(p.startswith("gca-uot-vs-ince: collapsed_excluded") for p in problems)
    # The correct ledger built with the floor verifies with it.
    path = write_claims(_ledger(study, untrained_accuracy=0.306), path)
    assert verify_claims(path, root, untrained_accuracy=0.306) == []


# --- the book's table ------------------------------------------------------------------------

def test_claims_table_markdown(study):
    ledger = _ledger(study, untrained_accuracy=0.306)
    ledger[0]["statement"] = "a | b"
    text = claims_table_markdown(ledger)
    lines = text.splitlines()
    assert lines[0] == "| claim | kind | family | effect | 95 % CI | n | p (Holm) | MDE | verdict |"
    assert len(lines) == 2 + len(ledger)
    uot = lines[2]
    assert uot.startswith("| a \\| b (`gca-uot-vs-ince`) | paper-claim | primary | +1.")
    assert f"| {ledger[0]['n']} |" in uot and ledger[0]["verdict"] in uot
    byol = lines[5]  # every BYOL run failed to train: no test
    assert "| — | — | 0 | — | — | not tested |" in byol
    simclr = lines[4]
    assert "[+0.00, +0.00]" in simclr and "1.000 (1.000)" in simclr


# --- re-estimated sample sizes (internal pilot) ------------------------------------------------

def _with_re_estimate(**entry):
    data = _prereg_data()
    r = {"claim": "gca-ince-vs-ince", "interim_n": 8, "interim_sd": 1.313, "target": 0.9, "n": 19,
         "reason": "interim MDE above the target"}
    r.update(entry)
    data["sample_sizes"]["primary"]["re_estimated"] = [r]
    return data


def test_re_estimated_size_is_the_fewest_seeds_reaching_the_target():
    """n = 19 at sd 1.313 and target 0.9: the paired-t MDE (t_{n−1,0.975} + t_{n−1,0.8}) · sd / √n,
    computed here from scipy's t quantiles, is ≤ 0.9 at 19 seeds and not at 18."""
    from scipy import stats as st

    def mde(sd, n):
        return (st.t.ppf(0.975, n - 1) + st.t.ppf(0.8, n - 1)) * sd / n ** 0.5

    assert mde(1.313, 19) <= 0.9 < mde(1.313, 18)
    validate_preregistration(_with_re_estimate(), source="x.yaml")  # accepted
    with pytest.raises(ValueError, match=r"n = 18 but 19 seeds"):
        validate_preregistration(_with_re_estimate(n=18), source="x.yaml")
    with pytest.raises(ValueError, match=r"n = 20 but 19 seeds"):
        validate_preregistration(_with_re_estimate(n=20), source="x.yaml")


@pytest.mark.parametrize("entry,match", [
    ({"claim": "no-such-claim"}, "not a claim of family 'primary'"),
    ({"target": 1.5}, r"target = 1.5 must be .* ≤ the family's mde_target"),
    ({"interim_sd": -1.0}, "interim_sd = -1.0"),
    ({"n": 2}, r"n = 2 must be an integer ≥ the family's n"),
    ({"reason": ""}, "reason must say"),
])
def test_re_estimate_validation_names_the_problem(entry, match):
    with pytest.raises(ValueError, match=match):
        validate_preregistration(_with_re_estimate(**entry), source="x.yaml")


def _with_replacement(**entry):
    data = _with_re_estimate()
    r = {"claim": "gca-ince-vs-ince", "planned_n": 19, "excluded_pairs": 2, "n": 21, "reason": "two runs failed"}
    r.update(entry)
    data["sample_sizes"]["primary"]["replacements"] = [r]
    return data


def test_replaced_pairs_add_one_seed_per_excluded_pair_to_the_claims_size():
    validate_preregistration(_with_replacement(), source="x.yaml")  # 19 re-estimated + 2 replaced
    with pytest.raises(ValueError, match=r"n = 22 must be planned_n \+ excluded_pairs = 21"):
        validate_preregistration(_with_replacement(n=22), source="x.yaml")
    with pytest.raises(ValueError, match="planned_n = 10 but the claim's size is 19"):
        validate_preregistration(_with_replacement(planned_n=10, n=12), source="x.yaml")
    with pytest.raises(ValueError, match="excluded_pairs = 0"):
        validate_preregistration(_with_replacement(excluded_pairs=0, n=19), source="x.yaml")
