"""The study's profiles and runs (gca.study.plan): specs, profiles, the plan, the paper profile."""

from __future__ import annotations

import json

import pytest
import torch

from gca.book import BOOK_PROFILES
from gca.config import PROFILES as CONFIG_PROFILES
from gca.losses import make_loss
from gca.methods import METHOD_NAMES
from gca.models import build_model
from gca.study.cache import result_key
from gca.study.paper import PAPER_NOISY, PAPER_STANDARD
from gca.study.plan import (BLOCKS, EXPERIMENTS, STUDY_METHODS, STUDY_PROFILES, Block, RunSpec, resolve_spec,
                            study_plan, study_profile, study_settings)
from gca.train import build_optimizer


def test_runspec_validation_and_roundtrip():
    s = RunSpec("standard", "gca-uot", 2, {"loss.hparams.n_iter": 3}, tag="T=3")
    assert RunSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ValueError, match="experiment"):
        RunSpec("nope", "ince")
    with pytest.raises(ValueError, match="method"):
        RunSpec("standard", "infonce")
    with pytest.raises(ValueError, match="seed"):
        RunSpec("standard", "ince", -1)
    with pytest.raises(ValueError, match="analysis"):
        RunSpec("standard", "ince", analysis="heatmaps")


def test_profiles_map_book_profiles_and_start_from_config_profiles():
    assert study_profile("default") == "cpu" and study_profile("smoke") == "smoke"
    assert study_profile("full") == "paper" and study_profile("cpu") == "cpu"
    with pytest.raises(ValueError, match="profile"):
        study_profile("huge")
    assert sorted(p.book_profile for p in STUDY_PROFILES.values()) == sorted(BOOK_PROFILES)
    for p in STUDY_PROFILES.values():
        assert p.config_profile in CONFIG_PROFILES
    # the study profile "cpu" is smaller than the configuration profile "cpu" it starts from, explicitly
    cpu = study_settings("cpu")
    assert cpu.overrides["model.width"] < CONFIG_PROFILES["cpu"]["model.width"]
    assert cpu.overrides["eval.probe_train_per_class"] == 2000 and cpu.overrides["data.test_n_per_class"] is None
    assert cpu.overrides["train.epochs"] < CONFIG_PROFILES["cpu"]["train.epochs"]
    with pytest.raises(TypeError):
        cpu.overrides["train.epochs"] = 1  # settings are read-only


def test_study_methods_come_from_the_registry_and_cover_the_papers_tables():
    from gca.methods import get_method

    paper = {get_method(m).same_as or m for m in PAPER_STANDARD}  # SimCLR and IOT run as INCE / GCA-INCE
    assert paper <= set(STUDY_METHODS) and set(PAPER_STANDARD) == set(PAPER_NOISY)
    assert {"untrained", "supervised", "rince-authors", "gca-rince-authors"} <= set(STUDY_METHODS)
    assert list(STUDY_METHODS) == [m for m in METHOD_NAMES if m in STUDY_METHODS]  # registry order
    with pytest.raises(ValueError, match="unknown method"):
        Block("standard", ("infonce",), "primary", 10)
    with pytest.raises(ValueError, match="family"):
        Block("standard", ("ince",), "some", 10)
    with pytest.raises(ValueError, match="by definition"):
        Block("standard", ("simclr",), "primary", 10)  # SimCLR ≡ INCE: run once


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_study_plan_order_and_every_spec_resolves(profile):
    plan = study_plan(profile)
    n_floor = sum(1 for s in plan if s.method == "untrained" and s.experiment == "standard")
    n_main = sum(1 for s in plan if s.experiment == "standard" and s.method in ("ince", "gca-ince", "gca-uot"))
    first = plan[:n_floor]
    assert {(s.experiment, s.method) for s in first} == {("standard", "untrained")}  # the floor first (cheap)
    nxt = plan[n_floor: n_floor + n_main]
    assert {(s.experiment, s.method) for s in nxt} == {("standard", m) for m in ("ince", "gca-ince", "gca-uot")}
    assert [s.seed for s in nxt] == sorted(s.seed for s in nxt)  # seed by seed: pairs complete early
    assert {s.experiment for s in plan} == set(EXPERIMENTS) == {b.experiment for b in BLOCKS}
    assert {s.method for s in plan} == set(STUDY_METHODS)
    assert [s.priority for s in plan] == sorted(s.priority for s in plan)
    keys = set()
    for s in plan:
        cfg = resolve_spec(s, profile)  # validates the whole configuration
        assert cfg.train.seed == s.seed
        keys.add(result_key(s, profile))
    assert len(keys) == len(plan)  # every run has its own key
    shifted = study_plan(profile, seed=5)
    assert shifted[0].seed == 5 and len(shifted) == len(plan)
    assert [s.experiment for s in study_plan(profile, ["plans"])] == ["plans"]
    with pytest.raises(ValueError, match="unknown experiments"):
        study_plan(profile, ["nope"])


def test_the_cpu_study_is_the_preregistered_design():
    """Seeds per family are the pre-registration's sample sizes; every arm of every pre-registered
    claim is a run set of the plan with at least the family's number of seeds."""
    from pathlib import Path

    from gca.study.preregistration import load_preregistration

    prereg, _ = load_preregistration(Path(__file__).resolve().parent.parent / "results/cpu/preregistration.yaml")
    cpu = study_settings("cpu")
    assert dict(cpu.seeds) == {f: s["n"] for f, s in prereg["sample_sizes"].items()}
    plan = study_plan("cpu")
    for claim in prereg["claims"]:
        for arm in claim["arms"]:
            seeds = {s.seed for s in plan if s.experiment == arm["experiment"] and s.method == arm["method"]
                     and s.tag == arm.get("tag", "")}
            assert len(seeds) >= cpu.seeds[claim["family"]], (claim["id"], arm)
    # Re-estimated sizes (v4, v5) and replaced pairs (v5): both arms of each such claim get at least
    # its new size, and no run set gets more seeds than some claim asks of it.
    sizes = prereg["sample_sizes"].values()
    need = {r["claim"]: r["n"] for f in sizes for r in f.get("re_estimated", ())}
    need.update({r["claim"]: r["n"] for f in sizes for r in f.get("replacements", ())})
    assert need, "the committed pre-registration re-estimates sizes"
    asked = {}
    for claim in prereg["claims"]:
        for arm in claim["arms"]:
            run_set = f"{arm['experiment']}/{arm['method']}"
            n = need.get(claim["id"], cpu.seeds[claim["family"]])
            asked[run_set] = max(asked.get(run_set, 0), n)
            seeds = {s.seed for s in plan if s.experiment == arm["experiment"] and s.method == arm["method"]
                     and s.tag == arm.get("tag", "")}
            assert len(seeds) >= n, (claim["id"], run_set, len(seeds), n)
    for run_set, n in cpu.extra_seeds.items():
        if run_set != "standard/untrained":
            assert n == asked[run_set], (run_set, n, asked[run_set])
    floor = {s.seed for s in plan if s.method == "untrained" and s.experiment == "standard"}
    assert floor == set(range(cpu.max_seeds))  # the untrained floor covers every seed
    assert len(plan) == 269 and len(study_plan("smoke")) == 41  # changing the design is a new pre-registration


def test_keys_follow_the_resolved_config():
    s = RunSpec("standard", "ince", 0)
    assert result_key(s, "smoke") == result_key(RunSpec("standard", "ince", 0), "smoke")
    assert result_key(s, "smoke") != result_key(RunSpec("standard", "ince", 1), "smoke")
    assert result_key(s, "smoke") != result_key(RunSpec("standard", "ince", 0, {"train.epochs": 1}), "smoke")
    assert result_key(s, "smoke") != result_key(s, "cpu")


def test_paper_profile_resolves_and_runs_one_step():
    spec = next(s for s in study_plan("paper", ["standard"]) if s.method == "gca-uot")
    cfg = resolve_spec(spec, "paper")
    assert cfg.model.backbone == "resnet18" and cfg.model.stem == "cifar"
    assert cfg.train.batch_size == 512 and cfg.train.epochs == 500 and cfg.data.dataset == "cifar10"
    assert cfg.model.projector_hidden_dim == 2048 and cfg.model.projector_out_dim == 128
    assert cfg.optim.name == "sgd" and cfg.optim.nesterov and cfg.optim.weight_decay == 1e-6
    torch.manual_seed(0)
    m = cfg.model
    model = build_model(backbone=m.backbone, stem=m.stem, in_channels=3, width=m.width, norm=m.norm,
                        projector_hidden_dim=m.projector_hidden_dim, projector_out_dim=m.projector_out_dim,
                        projector_bias=m.projector_bias, projector_batch_norm=m.projector_batch_norm)
    loss_fn = make_loss(cfg.loss.method, **cfg.loss.hparams)
    opt = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    x = torch.randn(16, 3, 32, 32)  # 8 pairs: the paper's network, loss and optimiser on a small batch
    out = model(x)
    z = out[1] if isinstance(out, tuple) else out
    z1, z2 = z.float().chunk(2)
    loss = loss_fn(z1, z2)
    assert torch.isfinite(loss)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
