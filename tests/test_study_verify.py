"""Cross-machine verification (gca.study.verify): recomputing the results a family of claims lists,
several at a time, and the claims' verdicts recomputed from those numbers alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as st

from gca.study.claims import write_claims
from gca.study.plan import RunSpec
from gca.study.run import get_results
from gca.study.runner import main
from gca.study.verify import claims_on_recomputed, verify

TINY = {"train.epochs": 1, "data.n_per_class": 12, "data.test_n_per_class": 6, "train.batch_size": 32,
        "eval.probe_weight_decays": (1e-2,), "eval.probe_max_iter": 20}


def _claim(cid, files0, files1, effect=None, verdict="not detected", paper_effect=0.6, excluded=()):
    return {"id": cid, "statement": "arm 0 beats arm 1", "family": "primary", "kind": "paper-claim",
            "metric": "metrics.linear_accuracy", "scale": 100,
            "arms": [{"label": "A", "results": list(files0)}, {"label": "B", "results": list(files1)}],
            "pairing": "seed", "paper_effect": paper_effect, "effect": effect, "ci_low": None, "ci_high": None,
            "p": None, "p_holm": None, "n": len(files0), "mde": None, "verdict": verdict,
            "collapsed_excluded": list(excluded), "preregistration_sha256": "0" * 64}


def _report(cached, recomputed=None):
    recomputed = cached if recomputed is None else recomputed
    return {"runs": [{"run": f, "status": "recomputed", "cached": "/elsewhere/" + f, "result": f,
                      "metrics": {"metrics.linear_accuracy": {"cached": v, "recomputed": recomputed[f],
                                                              "difference": recomputed[f] - v}}}
                     for f, v in cached.items()]}


def _interval(d):
    d = np.asarray(d)
    half = st.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def test_claims_on_recomputed_is_the_paired_t_interval_of_each_sides_numbers():
    rng = np.random.default_rng(0)
    a, b = 0.40 + 0.01 * rng.standard_normal(6), 0.39 + 0.01 * rng.standard_normal(6)
    a2, b2 = a + 0.01 * rng.standard_normal(6), b + 0.01 * rng.standard_normal(6)  # "another machine"
    fa = [f"results/cpu/standard/a-s{i}.json" for i in range(6)]
    fb = [f"results/cpu/standard/b-s{i}.json" for i in range(6)]
    cached = {**dict(zip(fa, a)), **dict(zip(fb, b))}
    again = {**dict(zip(fa, a2)), **dict(zip(fb, b2))}
    extra = ["results/cpu/standard/a-s9.json"], ["results/cpu/standard/b-s9.json"]
    claims = [_claim("c1", fa, fb),
              _claim("c2", fa, fb, excluded=(fa[0], fb[0])),  # the ledger's exclusions stay excluded
              _claim("c3", fa + extra[0], fb + extra[1]),  # a pair not recomputed: the others are used
              dict(_claim("c4", fa, fb), metric="metrics.domain_accuracy")]  # not a verified metric
    rows = {r["id"]: r for r in claims_on_recomputed(claims, _report(cached, again))}
    assert set(rows) == {"c1", "c2", "c3"}
    for cid, keep in (("c1", slice(0, 6)), ("c2", slice(1, 6)), ("c3", slice(0, 6))):
        r = rows[cid]
        assert r["n"] == len(a[keep])
        for side, (x, y) in (("here", (a, b)), ("there", (a2, b2))):
            mean, lo, hi = _interval(100 * (x[keep] - y[keep]))
            assert (r[side]["effect"], r[side]["ci_low"], r[side]["ci_high"]) == pytest.approx((mean, lo, hi), abs=1e-9)
            expected = "reproduced" if lo > 0 else "contradicted" if hi < 0 else "not detected"
            assert r[side]["verdict"].split(",")[0] == expected
        assert r["same_verdict"] is (r["here"]["verdict"] == r["there"]["verdict"])


def test_verify_argument_errors():
    with pytest.raises(ValueError, match="either sample=K .* or claims=FAMILY"):
        verify("smoke")
    with pytest.raises(ValueError, match="not both"):
        verify("smoke", 2, claims="primary")
    with pytest.raises(ValueError, match="workers=0"):
        verify("smoke", 1, workers=0)


@pytest.mark.filterwarnings("ignore:linear probe:RuntimeWarning")
def test_verify_recomputes_every_result_of_the_primary_claims_two_at_a_time(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GCA_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("GCA_RESULTS_DIR", str(tmp_path / "results"))
    specs = [RunSpec("standard", m, s, TINY) for s in (0, 1) for m in ("ince", "gca-uot")]
    res = get_results(specs, "smoke", mode="compute")
    assert res.computed == 4, res.missing
    files = {(r["spec"]["method"], r["spec"]["seed"]): "/".join(("results",) + p.parts[-3:])
             for r, p in zip(res.records, res.paths)}
    claim = _claim("gca-uot-vs-ince", [files["gca-uot", 0], files["gca-uot", 1]], [files["ince", 0], files["ince", 1]])
    secondary = dict(_claim("other", [files["gca-uot", 0]], [files["ince", 0]]), family="secondary")
    write_claims([claim, secondary], tmp_path / "results" / "smoke" / "claims.json")
    with pytest.raises(SystemExit):  # an unknown family is a one-line usage error
        main(["verify", "--profile", "smoke", "--claims", "primry"])
    assert main(["verify", "--profile", "smoke", "--claims", "primary", "--workers", "2",
                 "--out", str(tmp_path / "v")]) == 0
    report = json.loads((tmp_path / "v" / "verify.json").read_text())
    assert report["claims"] == "primary" and report["workers"] == 2 and report["complete"] is True
    assert report["n_done"] == 4
    assert sorted(r["result"] for r in report["runs"]) == sorted(files.values())
    for r in report["runs"]:  # same code, same machine, one thread each: bit for bit
        assert r["status"] == "recomputed" and r["metrics"]["metrics.linear_accuracy"]["difference"] == 0.0
        assert r["machine"]["data_checksum"] == r["cached_machine"]["data_checksum"]
    (row,) = claims_on_recomputed([claim], report)
    cached = {f: json.loads((tmp_path / f).read_text())["metrics"]["linear_accuracy"] for f in files.values()}
    d = [100 * (cached[x] - cached[y]) for x, y in zip(*[arm["results"] for arm in claim["arms"]])]
    assert row["here"]["effect"] == pytest.approx(np.mean(d), abs=1e-9) and row["n"] == 2
    assert row["there"] == row["here"] and row["same_verdict"]  # bit-identical recomputation
    # Another machine's torch: every cached result is stale there; --other-machine still recomputes
    # them (same code), and says why each was stale.
    import gca.study.fingerprint as fingerprint

    monkeypatch.setattr(fingerprint, "torch_version", lambda: "9.9.9")
    with pytest.raises(ValueError, match="no current result"):
        verify("smoke", claims="primary", out=tmp_path / "v2")
    again = verify("smoke", 1, other_machine=True, out=tmp_path / "v3")
    (r,) = again["runs"]
    assert r["status"] == "recomputed" and r["cached_state_here"].startswith("stale: code changed: torch")
