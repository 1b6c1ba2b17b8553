"""gca.study.ledger: the pre-registered claims computed from a study's cached results — arms found
by experiment / method / tag with SimCLR and IOT standing for INCE and GCA-INCE, pairs by seed,
per-seed untrained floors, Holm within families, the ledger verifiable from the files it lists."""
import json
from pathlib import Path

import numpy as np

from gca.study import ledger
from gca.study.claims import read_claims, verify_claims
from gca.study.preregistration import load_preregistration
from gca.study.run import Results

PREREG = Path(__file__).resolve().parent.parent / "results" / "cpu" / "preregistration.yaml"


def _record(root: Path, experiment, method, seed, acc, tag="", uniformity=-2.5, alignment=0.7):
    rec = {"spec": {"experiment": experiment, "method": method, "seed": seed, "tag": tag},
           "config": {"data": {"dataset": "cifar10"}},
           "metrics": {"linear_accuracy": acc, "uniformity": uniformity, "alignment": alignment,
                       "domain_accuracy": acc, "corrupted_linear_accuracy_mean": acc}}
    path = root / "results" / "fake" / experiment / f"{method}-{tag}-s{seed}.json".replace(",", "_")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return rec, path


def test_ledger_pairs_arms_by_seed_with_floors_and_aliases(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    res = Results("cpu")
    for s in range(5):
        for method, acc in (("untrained", 0.32), ("ince", 0.41), ("gca-uot", 0.42), ("gca-ince", 0.415)):
            rec, path = _record(tmp_path, "standard", method, s, acc + 0.003 * rng.standard_normal())
            res.records.append(rec)
            res.paths.append(path)
    # seed 4 of GCA-UOT did not beat its floor: excluded with its pair
    res.records[-2]["metrics"]["linear_accuracy"] = 0.30
    Path(res.paths[-2]).write_text(json.dumps(res.records[-2]))
    # seed 3 of INCE exists but GCA-INCE seed 3 does not: that claim uses seeds 0-2 and 4
    drop = [i for i, r in enumerate(res.records) if r["spec"]["method"] == "gca-ince" and r["spec"]["seed"] == 3][0]
    del res.records[drop], res.paths[drop]
    monkeypatch.setattr(ledger, "get_results", lambda *a, **k: res)
    monkeypatch.setattr(ledger, "REPO_ROOT", tmp_path)
    claims, info = ledger.build_ledger("cpu", preregistration=PREREG)
    by = {c["id"]: c for c in claims}
    _, sha = load_preregistration(PREREG)
    uot = by["standard.gca-uot-vs-ince"]
    assert uot["n"] == 4 and uot["preregistration_sha256"] == sha
    assert [p.rsplit("-s", 1)[1] for p in uot["arms"][0]["results"]] == ["0.json", "1.json", "2.json", "3.json", "4.json"]
    assert len(uot["collapsed_excluded"]) == 2 and all("s4" in p for p in uot["collapsed_excluded"])
    gi = by["standard.gca-ince-vs-ince"]
    assert gi["n"] == 4 and not any("s3" in p for p in gi["arms"][1]["results"])
    assert by["noisy.rince-vs-ince"]["verdict"] == "not tested" and by["noisy.rince-vs-ince"]["n"] == 0
    assert info["floors"] == {"cifar10": {r["spec"]["seed"]: r["metrics"]["linear_accuracy"] for r in res.records
                                          if r["spec"]["method"] == "untrained"}} and len(info["floors"]["cifar10"]) == 5
    assert all(c["p_holm"] is None or c["p_holm"] >= c["p"] for c in claims)
    # written, the ledger recomputes from the files it lists (with the same floors)
    out = tmp_path / "results" / "fake" / "claims.json"
    from gca.study.claims import write_claims

    write_claims(claims, out)
    (out.parent / "preregistration.yaml").write_bytes(PREREG.read_bytes())
    assert read_claims(out)[0]["id"] == claims[0]["id"]
    assert verify_claims(out, tmp_path, untrained_accuracy=info["floors"]["cifar10"]) == []
    assert verify_claims(out, tmp_path) == []  # recorded exclusions accepted, everything else recomputed


def test_simclr_and_iot_stand_for_ince_and_gca_ince():
    assert ledger._arm_key({"experiment": "standard", "method": "simclr"}) == ("standard", "ince", "")
    assert ledger._arm_key({"experiment": "ablation_iters", "method": "iot", "tag": "T=1"}) == \
        ("ablation_iters", "gca-ince", "T=1")


def test_claims_command_writes_and_verifies_a_ledger(tmp_path, monkeypatch, capsys):
    """`python -m gca.experiments claims` on a results folder without runs: every claim "not tested",
    the pre-registration copied beside the ledger, and `--verify` recomputes it without a mismatch."""
    from gca.study.runner import main

    monkeypatch.setenv("GCA_RESULTS_DIR", str(tmp_path / "results"))
    assert main(["claims", "--profile", "smoke"]) == 0
    ledger_path = tmp_path / "results" / "smoke" / "claims.json"
    claims = read_claims(ledger_path)
    assert claims and all(c["verdict"] == "not tested" and c["n"] == 0 for c in claims)
    assert (ledger_path.parent / "preregistration.yaml").read_bytes() == PREREG.read_bytes()
    assert "not computed yet" in capsys.readouterr().out
    assert main(["claims", "--profile", "smoke", "--verify"]) == 0
    assert "every number recomputes" in capsys.readouterr().out
    ledger_path.write_text(ledger_path.read_text().replace('"n": 0', '"n": 3', 1))  # a tampered number
    assert main(["claims", "--profile", "smoke", "--verify"]) == 1
