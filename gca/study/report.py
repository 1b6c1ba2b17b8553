"""Summaries and verdicts over the study's results, and the helpers its notebooks share.

Statistics are per method over seeds (:func:`summarise`, :func:`mean_sd`); a verdict compares two
methods, a method with the rest of a panel, a sweep with the paper's trend, or two step times
(:func:`compare`, :func:`best_method_verdict`, :func:`domain_prior_verdict`,
:func:`ablation_verdicts`, :func:`cost_verdict`). Verdicts are ``"reproduced"``,
``"not reproduced at this scale"``, ``"inconclusive"`` or ``"missing (not computed)"``. The
paper's numbers are in :mod:`gca.study.paper`.
"""

from __future__ import annotations

import math
import statistics
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from scipy.stats import spearmanr

from gca.config import resolve_config
from gca.methods import METHODS
from gca.study.plan import STUDY_METHODS, study_settings
from gca.study.run import Results

__all__ = [
    "METHOD_LABELS",
    "mean_sd",
    "summarise",
    "scale_description",
    "fmt_mean_sd",
    "comparison_table",
    "metric_stats",
    "compare",
    "panel_noise_sd",
    "best_method_verdict",
    "domain_prior_verdict",
    "ablation_verdicts",
    "cost_verdict",
]

#: ``{method name: label}`` of every registered method (:func:`gca.methods.method_label`), for tables.
METHOD_LABELS: Mapping[str, str] = MappingProxyType({m.name: m.label for m in METHODS.values()})


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (``nan`` for one value) and count."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(vals)
    if n == 0:
        return float("nan"), float("nan"), 0
    m = sum(vals) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1)) if n > 1 else float("nan")
    return m, sd, n


def summarise(records: Sequence[dict], metric: str = "linear_accuracy", *, group: str = "method") -> dict[str, dict]:
    """``{group value: {"mean", "sd", "n", "values", "seeds"}}`` of ``metrics[metric]`` (×100 for
    accuracies is left to the caller)."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        g = r["spec"][group] if group in r["spec"] else r[group]
        groups.setdefault(g, []).append(r)
    out = {}
    for g, rs in groups.items():
        vals = [_metric(r, metric) for r in rs]
        m, sd, n = mean_sd(vals)
        out[g] = {"mean": m, "sd": sd, "n": n, "values": vals, "seeds": [r["spec"]["seed"] for r in rs]}
    return out


def _metric(record: dict, metric: str):
    node: Any = record["metrics"]
    for part in metric.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def scale_description(profile: str) -> str:
    """One paragraph saying what a study profile trains on (shown on every experiment page)."""
    st = study_settings(profile)
    c = resolve_config(st.config_profile, method="gca-ince", overrides=dict(st.overrides))
    n_train = "all" if c.data.n_per_class is None else f"{c.data.n_per_class} per class"
    n_test = "all" if c.data.test_n_per_class is None else f"{c.data.test_n_per_class} per class"
    size = c.data.image_size or "native"
    width = f", width {c.model.width}" if c.model.width else ""
    return (f"Profile `{st.name}`: dataset `{c.data.dataset}` (training images: {n_train}; test images: {n_test}), "
            f"views at {size} px, backbone `{c.model.backbone}`{width}, projector {c.model.projector_hidden_dim}→"
            f"{c.model.projector_out_dim}, batch {c.train.batch_size}, {c.train.epochs} epochs, optimiser "
            f"{c.optim.name} (lr {c.optim.lr:g}, {c.optim.schedule} schedule, {c.optim.warmup_epochs:g} warm-up epochs), "
            f"loss hyperparameters at the authors' CIFAR-10 values (ε = 0.5, 10 iterations), seeds {list(st.seeds)}. "
            f"Linear probe: L-BFGS logistic regression on frozen features, weight decay chosen on a validation split "
            f"of the training set ({c.eval.val_fraction:g}), reported once on test; kNN: k = {c.eval.knn_k}, "
            f"τ = {c.eval.knn_temperature:g}.")


def fmt_mean_sd(stats: Mapping[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """``"41.3 ± 0.8 (n=3)"`` from a :func:`summarise` entry (``"41.3 (n=1)"`` for one run)."""
    if not stats or stats.get("n", 0) == 0:
        return "—"
    m, sd, n = stats["mean"] * scale, stats["sd"] * scale, stats["n"]
    if n == 1 or math.isnan(sd):
        return f"{m:.{digits}f} (n={n})"
    return f"{m:.{digits}f} ± {sd:.{digits}f} (n={n})"


def comparison_table(results: Results, experiment: str, *, paper: Mapping[str, Sequence[float]],
                     paper_columns: Sequence[str], metrics: Sequence[tuple[str, str]] = (
                         ("linear_accuracy", "linear"), ("knn_accuracy", "kNN"))):
    """A pandas DataFrame, one row per method (paper order): the paper's numbers beside ours
    (mean ± sd over seeds, %) for each metric."""
    import pandas as pd  # deferred: pandas is a dependency of the book only

    rows = []
    for m in STUDY_METHODS:
        row = {"method": METHOD_LABELS[m]}
        for col, v in zip(paper_columns, paper[m]):
            row[f"paper {col}"] = v
        recs = results.by(experiment, m)
        for metric, name in metrics:
            st = summarise(recs, metric).get(m, {})
            row[f"ours {name} (%)"] = fmt_mean_sd(st)
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def metric_stats(results: Results, experiment: str, metric: str = "linear_accuracy") -> dict[str, dict]:
    """:func:`summarise` of ``metric`` for every method of ``experiment`` that has results."""
    return summarise(results.by(experiment), metric)


def compare(stats: Mapping[str, dict], a: str, b: str, *, noise_sd: float | None = None) -> dict[str, Any]:
    """Is method ``a`` better than ``b``? Difference of means ``d`` and its standard error
    ``se = sqrt(sd_a²/n_a + sd_b²/n_b)`` (a method with one run borrows ``noise_sd``, the seed-to-seed
    sd of the panel). Verdict: ``"reproduced"`` if ``d > 2 se``, ``"not reproduced at this scale"``
    if ``d < -2 se``, else ``"inconclusive"``; ``"missing"`` when a side has no result."""
    sa, sb = stats.get(a), stats.get(b)
    if not sa or not sb or sa["n"] == 0 or sb["n"] == 0:
        return {"a": a, "b": b, "verdict": "missing (not computed)", "d": float("nan"), "se": float("nan")}
    def var(st):
        sd = st["sd"] if st["n"] > 1 and not math.isnan(st["sd"]) else noise_sd
        return float("nan") if sd is None else sd ** 2 / st["n"]
    d = sa["mean"] - sb["mean"]
    se = math.sqrt(var(sa) + var(sb))
    if math.isnan(se):
        verdict = "inconclusive (one seed, no noise estimate)"
    elif d > 2 * se:
        verdict = "reproduced"
    elif d < -2 * se:
        verdict = "not reproduced at this scale"
    else:
        verdict = "inconclusive"
    return {"a": a, "b": b, "d": d, "se": se, "verdict": verdict, "n_a": sa["n"], "n_b": sb["n"]}


def panel_noise_sd(stats: Mapping[str, dict]) -> float | None:
    """Pooled seed-to-seed sd of the methods of a panel that have several seeds (``None`` if none)."""
    num, den = 0.0, 0
    for st in stats.values():
        if st["n"] > 1 and not math.isnan(st["sd"]):
            num += st["sd"] ** 2 * (st["n"] - 1)
            den += st["n"] - 1
    return math.sqrt(num / den) if den else None


def best_method_verdict(stats: Mapping[str, dict], claimed: str = "gca-uot") -> dict[str, Any]:
    """Is ``claimed`` the best method of a panel? ``"reproduced"`` if it has the highest mean and beats
    the runner-up by more than 2 se (:func:`compare`), ``"not reproduced at this scale"`` if some method
    beats it by more than 2 se, else ``"inconclusive"``."""
    if claimed not in stats:
        return {"verdict": "missing (not computed)", "best": None}
    noise = panel_noise_sd(stats)
    ranked = sorted(stats, key=lambda m: stats[m]["mean"], reverse=True)
    best = ranked[0]
    if best == claimed:
        runner = ranked[1] if len(ranked) > 1 else None
        if runner is None:
            return {"verdict": "inconclusive (one method)", "best": best}
        c = compare(stats, claimed, runner, noise_sd=noise)
        v = "reproduced" if c["verdict"] == "reproduced" else "inconclusive"
        return {"verdict": v, "best": best, "runner_up": runner, "margin": c["d"], "se": c["se"]}
    c = compare(stats, best, claimed, noise_sd=noise)
    v = "not reproduced at this scale" if c["verdict"] == "reproduced" else "inconclusive"
    return {"verdict": v, "best": best, "margin": -c["d"], "se": c["se"], "rank": ranked.index(claimed) + 1}


def domain_prior_verdict(records: Sequence[dict]) -> dict[str, Any]:
    """Does the domain probe's accuracy rise with α − β (paper §5.3)? ``"reproduced"`` when the
    Spearman correlation of domain accuracy with α − β exceeds 0.5 and the last point lies above the
    first, ``"not reproduced at this scale"`` when the correlation is negative, else
    ``"inconclusive"``. ``verdict_class`` — is class accuracy flat (paper: 0.89–0.90)? —
    ``"reproduced"`` when its range over the sweep is at most 0.05, else ``"not reproduced at this
    scale"``."""
    pts = []
    for r in records:
        ov = r["spec"]["overrides"]
        d = float(ov.get("loss.target_alpha", 0.0)) - float(ov.get("loss.target_beta", 0.0))
        dom = r["metrics"].get("domain_accuracy")
        if dom is not None:
            pts.append((d, dom, r["metrics"]["linear_accuracy"]))
    pts.sort()
    out: dict[str, Any] = {"n": len(pts)}
    if len(pts) < 3:
        out.update(verdict="missing (not computed)" if not pts else "inconclusive (fewer than 3 points)",
                   verdict_class="missing (not computed)" if not pts else "inconclusive (fewer than 3 points)",
                   rho_domain=float("nan"), rho_class=float("nan"), domain_lo=float("nan"),
                   domain_hi=float("nan"), class_range=float("nan"))
        return out
    d, dom, cls = zip(*pts)
    rho_dom = float(spearmanr(d, dom).statistic)
    rho_cls = float(spearmanr(d, cls).statistic)
    rises = rho_dom > 0.5 and dom[-1] > dom[0]
    out.update(rho_domain=rho_dom, rho_class=rho_cls, domain_lo=dom[0], domain_hi=dom[-1],
               class_range=max(cls) - min(cls),
               verdict="reproduced" if rises else ("not reproduced at this scale" if rho_dom < 0 else "inconclusive"),
               verdict_class="reproduced" if max(cls) - min(cls) <= 0.05 else "not reproduced at this scale")
    return out


def ablation_verdicts(iters: Mapping[int, float], eps: Mapping[float, float], noise_sd: float | None) -> dict[str, Any]:
    """Verdicts of the GCA-INCE ablations (paper §5.4) from ``{T: accuracy}`` and ``{ε: accuracy}``:
    iterations — mean accuracy at ``T ≥ 5`` above ``T = 1`` by more than 2 ``noise_sd`` (the
    seed-to-seed sd of single runs) is ``"reproduced"``, below by as much ``"not reproduced at this
    scale"``, else ``"inconclusive"``; ε — ``"reproduced"`` if the best ε lies in [0.2, 0.6] and beats
    the smallest ε by more than 2 ``noise_sd``, ``"inconclusive"`` if the best lies there but within
    that margin (or without a noise estimate), else ``"not reproduced at this scale"``."""
    out: dict[str, Any] = {}
    t1 = iters.get(1)
    t5 = [v for t, v in iters.items() if t >= 5]
    out["t1"] = float("nan") if t1 is None else t1
    out["t5plus"] = float(sum(t5) / len(t5)) if t5 else float("nan")
    if t1 is None or not t5:
        out["iters"] = "missing (not computed)"
    elif noise_sd is None:
        out["iters"] = "inconclusive (no noise estimate)"
    else:
        diff = out["t5plus"] - t1
        out["iters"] = ("reproduced" if diff > 2 * noise_sd else
                        "not reproduced at this scale" if diff < -2 * noise_sd else "inconclusive")
    if len(eps) < 2:
        out["eps"] = "missing (not computed)"
        out["best_eps"] = float("nan")
    else:
        best = max(eps, key=eps.get)
        smallest = min(eps)
        out["best_eps"] = best
        margin = eps[best] - eps[smallest]
        out["eps_margin"] = margin
        if not 0.2 <= best <= 0.6:
            out["eps"] = "not reproduced at this scale"
        elif noise_sd is None or margin <= 2 * noise_sd:
            out["eps"] = "inconclusive"
        else:
            out["eps"] = "reproduced"
    return out



def cost_verdict(times: Mapping[str, dict], multi: str, one: str, *, threshold: float = 0.05) -> dict[str, Any]:
    """Is a multi-step loss's training step at most ``1 + threshold`` times its one-step counterpart's?
    Uses the per-round ratios of :func:`gca.study.cost.measure_step_times` (interleaved rounds, so
    paired): ``"reproduced"`` if their upper quartile is ≤ ``1 + threshold``, ``"not reproduced at this
    scale"`` if their lower quartile is above it, else ``"inconclusive"`` (load noise)."""
    ratios = sorted(a / b for a, b in zip(times[multi]["step_all"], times[one]["step_all"]))
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    lo, med, hi = q[0], statistics.median(ratios), q[2]
    limit = 1.0 + threshold
    verdict = "reproduced" if hi <= limit else ("not reproduced at this scale" if lo > limit else "inconclusive")
    return {"ratio_median": med, "ratio_q25": lo, "ratio_q75": hi, "verdict": verdict, "rounds": len(ratios)}
