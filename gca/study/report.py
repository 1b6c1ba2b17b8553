"""What the experiment pages show: per-method summaries, tables, run status, scale, the ledger's verdicts.

The experiment pages (notebooks 04–09) *describe* their runs; they compute no verdict. Verdicts
come only from the claims ledger (``results/<profile>/claims.json``, :mod:`gca.study.claims`,
written by ``python -m gca.experiments claims``), which applies the pre-registered rule (paired
intervals, Holm within each family, collapsed and failed runs excluded). A page reads the ledger
entries of its claims with :func:`page_claims` and shows them with :func:`claims_frame`; without a
ledger it says so (:func:`claims_note`).

What a page shows of its runs:

- :func:`summarise` / :func:`fmt_mean_sd` — mean ± sd over seeds, with n;
- :func:`run_problem` — a run whose projections collapsed (:func:`gca.study.claims.is_collapsed`)
  or that did not beat the untrained encoder of its seed
  (:func:`gca.study.claims.failed_to_train`); collapsed runs are never averaged into a row;
- :func:`method_table` — one row per method, the calibration rows first (the untrained floor) and
  last (the supervised ceiling), SimCLR and IOT as rows that reuse the INCE and GCA-INCE runs
  (``same_as`` in :mod:`gca.methods`), the paper's numbers beside ours, missing runs said as such;
- :func:`runs_markdown` — which runs of the page are shown and which are not yet computed;
- :func:`scale_description` — the "scale of this page" paragraph, generated from the stored
  configurations and metrics of the runs the page shows (never from a profile's settings);
- :func:`paired_difference` — a descriptive paired interval (:mod:`gca.study.stats`), e.g. the gain
  of pretraining over the untrained encoder, for the text; not a verdict.

:func:`cost_verdict` summarises interleaved step-time ratios (the cost claim, spec §5.5).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional, Sequence

from gca.methods import METHODS, get_method
from gca.study.claims import failed_to_train, is_collapsed, read_claims
from gca.study.paths import results_root
from gca.study.plan import study_profile
from gca.study.stats import paired_comparison

__all__ = [
    "METHOD_LABELS",
    "CALIBRATION_ROLES",
    "NOT_COMPUTED",
    "mean_sd",
    "summarise",
    "fmt_mean_sd",
    "describe_accuracy",
    "describe_runs",
    "describe_difference",
    "group_runs",
    "floors_by_seed",
    "run_problem",
    "usable_records",
    "row_label",
    "panel_rows",
    "method_table",
    "corruption_table",
    "paired_difference",
    "loss_settings",
    "seed_ranges",
    "scale_description",
    "runs_markdown",
    "ledger_path",
    "page_claims",
    "claims_frame",
    "claims_note",
    "step_ratio_summary",
    "cost_verdict",
]

#: ``{method name: label}`` of every registered method (:func:`gca.methods.method_label`), for tables.
METHOD_LABELS: Mapping[str, str] = MappingProxyType({m.name: m.label for m in METHODS.values()})
#: The calibration rows of the study and what each marks.
CALIBRATION_ROLES: Mapping[str, str] = MappingProxyType({"untrained": "floor", "supervised": "ceiling"})
#: What a table cell says for a run the study plans but has not computed (yet).
NOT_COMPUTED = "running / not yet computed"


# --------------------------------------------------------------------------------------------
# per-method statistics
# --------------------------------------------------------------------------------------------
def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (``nan`` for one value) and count of the non-missing values."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(vals)
    if n == 0:
        return float("nan"), float("nan"), 0
    m = sum(vals) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1)) if n > 1 else float("nan")
    return m, sd, n


def _metric(record: Mapping, metric: str):
    """``record["metrics"][metric]`` (``"a/b"`` walks nested keys), ``None`` when absent."""
    node: Any = record.get("metrics", {})
    for part in metric.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def summarise(records: Sequence[Mapping], metric: str = "linear_accuracy", *,
              group: str = "method") -> dict[str, dict]:
    """``{group value: {"mean", "sd", "n", "values", "seeds"}}`` of ``metrics[metric]`` over ``records``
    (grouped by ``spec[group]``: ``"method"`` or ``"tag"``); values in the records' units."""
    groups: dict[str, list[Mapping]] = {}
    for r in records:
        groups.setdefault(r["spec"][group], []).append(r)
    out = {}
    for g, rs in groups.items():
        pairs = [(r["spec"]["seed"], _metric(r, metric)) for r in rs]
        pairs = [(s, v) for s, v in pairs if v is not None]
        m, sd, n = mean_sd([v for _, v in pairs])
        out[g] = {"mean": m, "sd": sd, "n": n, "values": [v for _, v in pairs], "seeds": [s for s, _ in pairs]}
    return out


def fmt_mean_sd(stats: Optional[Mapping[str, Any]], scale: float = 100.0, digits: int = 2, *,
                with_n: bool = True) -> str:
    """``"41.30 ± 0.80 (n=3)"`` from a :func:`summarise` entry (``"41.30 (n=1)"`` for one run, ``"—"`` for none)."""
    if not stats or stats.get("n", 0) == 0:
        return "—"
    m, sd, n = stats["mean"] * scale, stats["sd"] * scale, stats["n"]
    tail = f" (n={n})" if with_n else ""
    if n == 1 or math.isnan(sd):
        return f"{m:.{digits}f}{tail}"
    return f"{m:.{digits}f} ± {sd:.{digits}f}{tail}"


def describe_accuracy(stats: Optional[Mapping[str, Any]], *, scale: float = 100.0, digits: int = 1,
                      missing: str = NOT_COMPUTED) -> str:
    """``"41.2 ± 1.4 % (n = 8)"`` for the text of a page (``"41.2 % (n = 1)"`` for one run), ``missing``
    when there is no value."""
    if not stats or stats.get("n", 0) == 0:
        return missing
    m, sd, n = stats["mean"] * scale, stats["sd"] * scale, stats["n"]
    if n == 1 or math.isnan(sd):
        return f"{m:.{digits}f} % (n = 1)"
    return f"{m:.{digits}f} ± {sd:.{digits}f} % (n = {n})"


def describe_runs(records: Sequence[Mapping], metric: str = "linear_accuracy", *, scale: float = 100.0,
                  digits: int = 1) -> str:
    """The text for one method's (or setting's) runs: :func:`describe_accuracy` of those that did not
    collapse, with the collapsed ones counted; ``"every run collapsed (k of k; not used)"`` when none
    is left; :data:`NOT_COMPUTED` when there is no run."""
    records = list(records)
    if not records:
        return NOT_COMPUTED
    used = usable_records(records)
    n_coll = len(records) - len(used)
    if not used:
        return f"every run collapsed ({n_coll} of {len(records)}; not used)"
    vals = [_metric(r, metric) for r in used]
    m, sd, n = mean_sd([v for v in vals if v is not None])
    text = describe_accuracy({"mean": m, "sd": sd, "n": n}, scale=scale, digits=digits,
                             missing="— (not evaluated for these runs)")
    return text + (f", {n_coll} collapsed run(s) not used" if n_coll else "")


def describe_difference(diff: Mapping[str, Any], *, digits: int = 1, unit: str = "points",
                        missing: str = NOT_COMPUTED) -> str:
    """``"+8.6 points (95 % interval 6.3 to 10.9, 8 seeds)"`` from :func:`paired_difference`;
    ``missing`` without a common seed; no interval for one seed."""
    n = diff.get("n", 0)
    if not n:
        return diff.get("why") or missing
    eff = f"{diff['effect']:+.{digits}f}".replace("-", "−")
    if n == 1 or math.isnan(diff["ci_low"]):
        return f"{eff} {unit} (one seed, no interval)"
    lo, hi = (f"{diff[k]:.{digits}f}".replace("-", "−") for k in ("ci_low", "ci_high"))
    return f"{eff} {unit} (95 % interval {lo} to {hi}, {n} seeds)"


def group_runs(records: Iterable[Mapping], key, metrics: Sequence[str] = ("linear_accuracy",), *,
               floors: Optional[Mapping[int, float]] = None) -> dict[Any, dict[str, Any]]:
    """Runs grouped by ``key(record)`` (e.g. a sweep's setting), in first-seen order:
    ``{k: {"runs", "used", "collapsed", "failed", **{metric: summarise entry over the used runs}}}``.
    Collapsed runs are kept apart (:func:`run_problem`), never averaged."""
    out: dict[Any, dict[str, Any]] = {}
    for r in records:
        g = out.setdefault(key(r), {"runs": [], "used": [], "collapsed": [], "failed": []})
        g["runs"].append(r)
        problem = run_problem(r, floors)
        (g["collapsed"] if problem == "collapsed" else g["used"]).append(r)
        if problem == "failed to train":
            g["failed"].append(r)
    for g in out.values():
        for metric in metrics:
            vals = [(r["spec"]["seed"], _metric(r, metric)) for r in g["used"]]
            vals = [(s, v) for s, v in vals if v is not None]
            m, sd, n = mean_sd([v for _, v in vals])
            g[metric] = {"mean": m, "sd": sd, "n": n, "values": [v for _, v in vals], "seeds": [s for s, _ in vals]}
    return out


# --------------------------------------------------------------------------------------------
# runs that cannot count: collapsed, failed to train
# --------------------------------------------------------------------------------------------
def floors_by_seed(records: Iterable[Mapping]) -> dict[int, float]:
    """``{seed: linear accuracy}`` of the untrained encoder (the floor) among ``records``."""
    return {r["spec"]["seed"]: float(r["metrics"]["linear_accuracy"]) for r in records
            if r["spec"]["method"] == "untrained" and _metric(r, "linear_accuracy") is not None}


def run_problem(record: Mapping, floors: Optional[Mapping[int, float]] = None) -> Optional[str]:
    """``"collapsed"`` when the run's projections collapsed (:func:`gca.study.claims.is_collapsed`),
    ``"failed to train"`` when its linear accuracy is not above the untrained encoder of its seed
    (``floors``, :func:`floors_by_seed`; unknown floor: not checked), else ``None``. The calibration
    rows are references, never flagged."""
    method = record["spec"]["method"]
    if method in METHODS and METHODS[method].kind == "calibration":
        return None
    try:
        if is_collapsed(record):
            return "collapsed"
    except ValueError:  # no alignment/uniformity in this record: collapse cannot be judged
        pass
    floor = (floors or {}).get(record["spec"]["seed"])
    if floor is not None and _metric(record, "linear_accuracy") is not None and failed_to_train(record, floor):
        return "failed to train"
    return None


def usable_records(records: Iterable[Mapping]) -> list[Mapping]:
    """The records whose projections did not collapse (the ones a row may average)."""
    return [r for r in records if run_problem(r) != "collapsed"]


# --------------------------------------------------------------------------------------------
# the method table
# --------------------------------------------------------------------------------------------
def row_label(method: str) -> str:
    """A table row's label: the method's label, with ``(floor)`` / ``(ceiling)`` for the calibration
    rows and ``(= INCE by definition)`` for a method equal to another (:mod:`gca.methods`)."""
    m = get_method(method)
    if m.name in CALIBRATION_ROLES:
        return f"{m.label} ({CALIBRATION_ROLES[m.name]})"
    if m.same_as is not None:
        return f"{m.label} (= {METHOD_LABELS[m.same_as]} by definition)"
    return m.label


def panel_rows(methods: Iterable[str]) -> list[str]:
    """The rows of a panel that runs ``methods``: registry order, every method equal by definition to
    one of them added (SimCLR for INCE, IOT for GCA-INCE), the floor first and the ceiling last."""
    run = {get_method(m).name for m in methods}
    rows = [m.name for m in METHODS.values()
            if m.name not in CALIBRATION_ROLES and (m.name in run or (m.same_as is not None and m.same_as in run))]
    first = ["untrained"] if "untrained" in run else []
    last = ["supervised"] if "supervised" in run else []
    return first + rows + last


def method_table(results, experiment: str, *, planned: Sequence = (), paper: Optional[Mapping[str, Sequence]] = None,
                 paper_columns: Sequence[str] = (),
                 metrics: Sequence[tuple[str, str]] = (("linear_accuracy", "linear"), ("knn_accuracy", "kNN")),
                 floors: Optional[Mapping[int, float]] = None, calibration=None, calibration_note: str = "",
                 notes: Optional[Mapping[str, str]] = None, scale: float = 100.0, digits: int = 2):
    """One row per method of ``experiment`` (a pandas DataFrame indexed by row label).

    Rows (:func:`panel_rows`): the untrained floor first, the methods in the paper's order — SimCLR
    and IOT as rows that reuse the INCE and GCA-INCE runs —, the supervised ceiling last. Columns:
    the paper's numbers (``paper[method]`` under ``paper_columns``, ``—`` where the paper has none),
    ours per metric as mean ± sd over seeds (× ``scale``), ``n`` (runs averaged, of the runs planned)
    and a note. Collapsed runs are not averaged (the note counts them); a method whose every
    averaged run is at or below the untrained encoder of its seed (``floors``) is marked
    "failed to train (below the untrained encoder)". A method with no result says
    :data:`NOT_COMPUTED`.

    Parameters
    ----------
    results
        A :class:`gca.study.run.Results` holding the page's runs.
    experiment
        The panel (``"standard"``, ``"noisy"``, ...).
    planned
        The page's :class:`~gca.study.plan.RunSpec` list (its rows and the planned counts).
    calibration
        A ``Results`` supplying the calibration rows when the panel has none of its own (the noisy
        panel borrows the standard panel's untrained encoder); ``calibration_note`` is added to
        their notes.
    notes
        Extra notes per method (e.g. where the paper's numbers come from).
    """
    import pandas as pd  # deferred: pandas is a dependency of the book only

    paper = paper or {}
    notes = dict(notes or {})
    planned_count: dict[str, int] = {}
    for s in planned:
        if s.experiment == experiment:
            planned_count[s.method] = planned_count.get(s.method, 0) + 1
    methods = set(planned_count) | {r["spec"]["method"] for r in results.by(experiment)}
    cal = {}
    if calibration is not None:
        for r in calibration.records:
            if r["spec"]["method"] in CALIBRATION_ROLES and r["spec"]["method"] not in methods:
                cal.setdefault(r["spec"]["method"], []).append(r)
    rows = []
    for m in panel_rows(methods | set(cal)):
        canonical = get_method(m).same_as or m
        recs = cal[m] if m in cal else results.by(experiment, canonical)
        row: dict[str, Any] = {"row": row_label(m)}
        for col, v in zip(paper_columns, paper.get(m, ())):
            row[f"paper {col}"] = v
        for col in paper_columns:
            row.setdefault(f"paper {col}", "—")
        problems = [run_problem(r, floors) for r in recs]
        used = [r for r, p in zip(recs, problems) if p != "collapsed"]
        n_planned = len(recs) if m in cal else planned_count.get(canonical, 0)
        for metric, name in metrics:
            st = summarise(used, metric).get(canonical if m not in cal else m, {})
            if not recs:
                cell = NOT_COMPUTED if n_planned else "not run in this panel"
            elif used and not st:
                cell = "—"  # computed, but this metric is not evaluated for these runs
            else:
                cell = fmt_mean_sd(st, scale, digits, with_n=False) if st else "collapsed"
            row[f"ours {name} (%)"] = cell
        row["n"] = f"{len(used)} of {n_planned}" if n_planned else str(len(used))
        note = []
        if m in CALIBRATION_ROLES:
            note.append(f"calibration: the {CALIBRATION_ROLES[m]}")
            if m in cal and calibration_note:
                note.append(calibration_note)
        if canonical != m:
            note.append(f"reuses the {METHOD_LABELS[canonical]} runs")
        n_coll = problems.count("collapsed")
        n_fail = problems.count("failed to train")
        if used and n_fail == len(used):
            note.append("failed to train (below the untrained encoder)")
        elif n_fail:
            note.append(f"{n_fail} of {len(recs)} runs below the untrained encoder of their seed")
        if n_coll:
            note.append(f"{n_coll} of {len(recs)} runs collapsed (not averaged, never used for a verdict)")
        if recs and n_planned > len(recs):
            note.append(f"{n_planned - len(recs)} more {NOT_COMPUTED}")
        if m in notes:
            note.append(notes[m])
        row["note"] = "; ".join(note)
        rows.append(row)
    columns = ["row", *[f"paper {c}" for c in paper_columns], *[f"ours {n} (%)" for _, n in metrics], "n", "note"]
    return pd.DataFrame(rows, columns=columns).set_index("row")


def corruption_table(records: Iterable[Mapping], *, metric: str = "linear_accuracy", scale: float = 100.0,
                     digits: int = 1):
    """Accuracy per computed corruption (``metrics.corrupted[<name>-<severity>][metric]``): one row per
    method (:func:`panel_rows` order, no row repeated by definition), one column per corruption,
    mean ± sd over the runs that did not collapse (a pandas DataFrame; empty without runs)."""
    import pandas as pd

    used = usable_records(records)
    by_method: dict[str, list[Mapping]] = {}
    for r in used:
        by_method.setdefault(r["spec"]["method"], []).append(r)
    rows = {}
    for m in panel_rows(by_method):
        if m not in by_method:
            continue  # a row equal by definition to another: the same runs
        row = {}
        for key in sorted({k for r in by_method[m] for k in r["metrics"].get("corrupted", {})}):
            vals = [r["metrics"]["corrupted"][key].get(metric) for r in by_method[m]
                    if key in r["metrics"].get("corrupted", {})]
            mean, sd, n = mean_sd(vals)
            row[key] = fmt_mean_sd({"mean": mean, "sd": sd, "n": n}, scale, digits, with_n=False)
        rows[METHOD_LABELS.get(m, m)] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "method"
    return frame


def paired_difference(results, experiment: str, a: str, b: str, *, metric: str = "linear_accuracy",
                      b_results=None, b_experiment: Optional[str] = None, tag_a: Optional[str] = None,
                      tag_b: Optional[str] = None, floors: Optional[Mapping[int, float]] = None,
                      scale: float = 100.0) -> dict[str, Any]:
    """Descriptive paired difference ``a − b`` (points) over the seeds both have, collapsed runs left
    out: ``{"effect", "ci_low", "ci_high", "n", "seeds", "why"}`` (:func:`gca.study.stats.paired_comparison`,
    95 %; ``nan`` where it does not exist; ``why`` says why there is no pair, ``""`` otherwise). For the text of a page — not a verdict (those are the
    ledger's). ``b`` may come from another ``Results`` / experiment (e.g. the untrained floor)."""
    def values(res, exp, method, tag):
        runs = res.by(exp, method, tag)
        out = {}
        for r in runs:
            if run_problem(r, floors) != "collapsed" and _metric(r, metric) is not None:
                out[r["spec"]["seed"]] = scale * float(_metric(r, metric))
        return runs, out

    runs_a, va = values(results, experiment, a, tag_a)
    runs_b, vb = values(b_results if b_results is not None else results, b_experiment or experiment, b, tag_b)
    seeds = sorted(set(va) & set(vb))
    nan = float("nan")
    if not seeds:
        why = (NOT_COMPUTED if not runs_a or not runs_b else
               "no seed with a usable run in both (collapsed runs are not used)")
        return {"effect": nan, "ci_low": nan, "ci_high": nan, "n": 0, "seeds": [], "why": why}
    c = paired_comparison([va[s] for s in seeds], [vb[s] for s in seeds])
    return {"effect": c.effect, "ci_low": nan if c.ci_low is None else c.ci_low,
            "ci_high": nan if c.ci_high is None else c.ci_high, "n": c.n, "seeds": seeds, "why": ""}


# --------------------------------------------------------------------------------------------
# the scale of a page, from its runs
# --------------------------------------------------------------------------------------------
def loss_settings(record: Mapping) -> dict[str, Any]:
    """The loss hyper-parameters a run used: the registry's defaults (:mod:`gca.losses.registry`) with
    the run's ``loss.hparams`` applied; ``{}`` for a method without an alignment loss."""
    from gca.losses.registry import LOSSES

    cfg = record["config"]["loss"]
    spec = LOSSES.get(cfg["method"])
    if spec is None:
        return {}
    return {**dict(spec.defaults), **dict(cfg.get("hparams") or {})}


def seed_ranges(seeds: Iterable[int]) -> str:
    """``"0–7"``, ``"0–3, 5"``: sorted seeds with consecutive runs collapsed (``"none"`` when empty)."""
    s = sorted(set(int(x) for x in seeds))
    if not s:
        return "none"
    parts, start = [], s[0]
    for prev, cur in zip(s, s[1:] + [None]):
        if cur is None or cur != prev + 1:  # a run of consecutive seeds ends at prev
            parts.append(f"{start}" if start == prev else f"{start}–{prev}")
            start = cur
    return ", ".join(parts)


def _values(items: Iterable[Any], fmt=str) -> str:
    """Distinct values in first-seen order, joined with " / " (one value: itself)."""
    seen: list = []
    for v in items:
        if v not in seen:
            seen.append(v)
    return " / ".join(fmt(v) for v in seen)


def _count(n: int) -> str:
    return f"{n:,}"


def _plural(x: float, word: str) -> str:
    return f"{x:g} {word}" + ("" if x == 1 else "s")


#: How the scale paragraph names a run's ``data.augment`` (:data:`gca.augment.AUGMENTATIONS`).
_AUGMENT_NAMES = {"simclr": "the SimCLR recipe", "large_erase": "the SimCLR recipe + large erase",
                  "strong_crop": "the SimCLR recipe + strong crop", "brightness": "brightness + the SimCLR recipe",
                  "none": "no augmentation"}


def scale_description(records: Sequence[Mapping] | Any, *, planned: Optional[int] = None) -> str:
    """The "scale of this page" paragraph, generated from the runs a page shows.

    Everything is read from the runs' stored configurations and metrics: the dataset (its
    description), the pretraining images per class, the view size and augmentation, backbone,
    width, feature and projector dimensions, batch, epochs, optimiser, loss hyper-parameters, the
    linear probe's training set (``metrics.probe_train``, ``metrics.n_train``), the test images
    (``metrics.n_test``), the seeds present and the number of runs per method (and setting). Where
    runs differ, the distinct values are listed. ``records`` is a list of result records or a
    :class:`gca.study.run.Results`; ``planned`` is the number of runs the page plans (to say how
    many are not yet computed). A profile name (``"cpu"``, ``"default"``) stands for every current
    run of that study (read from the cache, nothing is computed).
    """
    if isinstance(records, str):  # a profile: every current run of its study (what a claims page shows)
        from gca.study.plan import study_plan
        from gca.study.run import get_results

        plan = study_plan(records)
        records, planned = get_results(plan, records, mode="cached"), len(plan)
    recs = list(getattr(records, "records", records))
    if not recs:
        text = "No run of this page has a current result yet"
        if planned:
            text += f" ({planned} planned: {NOT_COMPUTED})"
        return text + "; this paragraph describes the runs once they are computed."
    cfg = [r["config"] for r in recs]
    met = [r["metrics"] for r in recs]
    trained = [r for r in recs if get_method(r["spec"]["method"]).name != "untrained"]
    datasets = _values(f"`{c['data']['dataset']}` ({m.get('dataset_description', c['data']['dataset'])})"
                       for c, m in zip(cfg, met))
    per_class = _values(("all training images" if c["data"]["n_per_class"] is None
                         else f"{_count(c['data']['n_per_class'])} per class") for c in cfg)
    px = _values(("native size" if c["data"]["image_size"] is None else f"{c['data']['image_size']} px") for c in cfg)
    augment = (_values(_AUGMENT_NAMES.get(r["config"]["data"]["augment"], r["config"]["data"]["augment"])
                       for r in trained) if trained else "no pretraining")
    backbone = _values(f"`{c['model']['backbone']}`" + (f" of width {c['model']['width']}" if c["model"].get("width") else "")
                       for c in cfg)
    feat = _values(m.get("feat_dim") for m in met if m.get("feat_dim") is not None)
    proj = _values(f"{c['model']['projector_hidden_dim']} → {c['model']['projector_out_dim']}" for c in cfg)
    batch = _values(c["train"]["batch_size"] for c in cfg)
    epochs = _values(r["config"]["train"]["epochs"] for r in trained) if trained else "—"
    optim = _values(f"{c['optim']['name'].upper() if c['optim']['name'] == 'sgd' else c['optim']['name']} "
                    f"(lr {c['optim']['lr']:g}, {c['optim']['schedule']} schedule, "
                    f"{_plural(c['optim']['warmup_epochs'], 'warm-up epoch')})" for c in cfg)
    settings = [loss_settings(r) for r in recs]
    eps = sorted({s["epsilon"] for s in settings if "epsilon" in s})
    iters = sorted({s["n_iter"] for s in settings if "n_iter" in s})
    loss = []
    if eps:
        loss.append("ε = " + ", ".join(f"{e:g}" for e in eps))
    if iters:
        loss.append("Sinkhorn iterations T = " + ", ".join(str(t) for t in iters))
    probe = []
    for m in met:
        pt = m.get("probe_train") or {}
        n_train = m.get("n_train")
        if pt.get("source") == "training split, fixed for every run":
            probe.append(f"{_count(n_train)} training images ({_count(pt['per_class'])} per class, the same set "
                         "for every run)" if n_train else "a fixed training set")
        elif n_train is not None:
            probe.append(f"{_count(n_train)} training images (the run's pretraining subset)")
    n_test = _values(_count(m["n_test"]) for m in met if m.get("n_test") is not None)
    val = _values(f"{100 * c['eval']['val_fraction']:g} %" for c in cfg)
    knn = _values(c["eval"]["knn_k"] for c in cfg)
    seeds = seed_ranges(r["spec"]["seed"] for r in recs)
    counts: dict[str, int] = {}
    for r in recs:
        key = METHOD_LABELS.get(r["spec"]["method"], r["spec"]["method"])
        if r["spec"].get("tag"):
            key += f" [{r['spec']['tag']}]"
        counts[key] = counts.get(key, 0) + 1
    runs = ", ".join(f"{k} {v}" for k, v in counts.items())
    shown = f"{len(recs)}" + (f" of the {planned} planned" if planned else "")
    return (f"Runs shown: {shown}. Pretraining: dataset {datasets}, {per_class} (drawn by each run's seed), "
            f"views at {px} ({augment}), backbone {backbone}"
            + (f" ({feat}-d features)" if feat else "") +
            f", projector {proj}, batch {batch}, {epochs} epochs, optimiser {optim}"
            + (f"; loss hyper-parameters {'; '.join(loss)}" if loss else "") +
            f". Evaluation on the frozen backbone: a logistic-regression probe (L-BFGS, weight decay chosen on a "
            f"{val} validation split) and kNN (k = {knn}) fitted on {_values(probe) or 'the training set'}, "
            f"tested on {n_test} test images. Seeds present: {seeds}. Runs per method: {runs}.")


def runs_markdown(results, *, page: str = "this page") -> str:
    """A Markdown paragraph: how many runs of the page are shown, and which are not (grouped by
    experiment, method and setting, with their seeds and why: not yet computed, being computed by the
    running study, stale, failed)."""
    shown = len(results.records)
    total = shown + len(results.missing)
    if not results.missing:
        if total == 1:
            return f"**Runs.** The one run of {page} has a current result and is shown."
        return f"**Runs.** All {total} runs of {page} have a current result and are shown."
    groups: dict[tuple[str, str], list[int]] = {}
    for spec, why in results.missing:
        reason = (NOT_COMPUTED if why.startswith(("not computed", "being computed")) else why)
        label = f"{spec.experiment}/{METHOD_LABELS.get(spec.method, spec.method)}" + (f" [{spec.tag}]" if spec.tag else "")
        groups.setdefault((label, reason), []).append(spec.seed)
    items = [f"{label} (seeds {seed_ranges(seeds)}): {reason}" for (label, reason), seeds in groups.items()]
    return (f"**Runs.** {shown} of the {total} runs of {page} have a current result and are shown; "
            f"{len(results.missing)} are not — " + "; ".join(items) + ".")


# --------------------------------------------------------------------------------------------
# the verdicts: read from the claims ledger, never computed here
# --------------------------------------------------------------------------------------------
def ledger_path(profile: str) -> Path:
    """``results/<study profile>/claims.json`` (``profile``: a study or book profile)."""
    return results_root() / study_profile(profile) / "claims.json"


def page_claims(profile: str, prefixes: Sequence[str]) -> Optional[list[dict]]:
    """The ledger's claims whose id starts with one of ``prefixes`` (e.g. ``("standard.",)``), in
    ledger order; ``None`` when the profile has no ledger (or it cannot be read)."""
    path = ledger_path(profile)
    if not path.is_file():
        return None
    try:
        claims = read_claims(path)
    except ValueError:
        return None
    return [c for c in claims if any(c["id"].startswith(p) for p in prefixes)]


def _signed(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:+.2f}".replace("-", "−")


def claims_frame(claims: Sequence[Mapping]):
    """The ledger entries of a page as a pandas DataFrame: claim, family, paper's effect, our effect,
    95 % interval, n, p (Holm-adjusted), MDE, verdict and the runs excluded (all in points)."""
    import pandas as pd

    def pval(p):
        return "—" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")

    rows = []
    for c in claims:
        rows.append({
            "claim": c["statement"], "id": c["id"], "family": c["family"],
            "paper": _signed(c["paper_effect"]), "effect": _signed(c["effect"]),
            "95 % CI": "—" if c["ci_low"] is None else f"[{_signed(c['ci_low'])}, {_signed(c['ci_high'])}]",
            "n": c["n"], "p (Holm)": "—" if c["p"] is None else f"{pval(c['p'])} ({pval(c['p_holm'])})",
            "MDE": "—" if c["mde"] is None else f"{c['mde']:.2f}", "verdict": c["verdict"],
            "excluded runs": len(c["collapsed_excluded"]),
        })
    columns = ["claim", "id", "family", "paper", "effect", "95 % CI", "n", "p (Holm)", "MDE", "verdict", "excluded runs"]
    return pd.DataFrame(rows, columns=columns).set_index("claim")


def claims_note(profile: str, claims: Optional[Sequence[Mapping]]) -> str:
    """One sentence on where this page's verdicts are: the ledger's rows below, or — without a
    ledger — the claims page, once the study's ledger is written."""
    path = ledger_path(profile)
    try:
        shown = str(path.relative_to(results_root().parent))
    except ValueError:
        shown = str(path)
    if claims is None:
        return (f"No claims ledger yet (`{shown}`): the verdicts of this page's claims are not computed here — "
                "see the claims page, once the study's ledger is written.")
    if not claims:
        return f"The claims ledger (`{shown}`) holds no claim of this page; see the claims page."
    return (f"Verdicts from the claims ledger (`{shown}`: paired by seed, 95 % interval, Holm within each family, "
            "collapsed and failed runs excluded; the rule is on the claims page). Effects in points, "
            "arm 0 − arm 1 of each claim.")


# --------------------------------------------------------------------------------------------
# cost
# --------------------------------------------------------------------------------------------
def step_ratio_summary(times: Mapping[str, dict], multi: str, one: str) -> dict[str, Any]:
    """The per-round step-time ratios ``multi / one`` of :func:`gca.study.cost.measure_step_times`
    (interleaved rounds, so paired): ``{"ratio_median", "ratio_q25", "ratio_q75", "rounds"}``."""
    ratios = sorted(a / b for a, b in zip(times[multi]["step_all"], times[one]["step_all"]))
    if not ratios:
        raise ValueError(f"no step times for {multi!r} and {one!r}: measure at least one round")
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return {"ratio_median": statistics.median(ratios), "ratio_q25": q[0], "ratio_q75": q[2], "rounds": len(ratios)}


def cost_verdict(times: Mapping[str, dict], multi: str, one: str, *, threshold: float = 0.05) -> dict[str, Any]:
    """Is a multi-step loss's training step at most ``1 + threshold`` times its one-step counterpart's?
    Uses the per-round ratios of :func:`gca.study.cost.measure_step_times` (interleaved rounds, so
    paired): ``"reproduced"`` if their upper quartile is ≤ ``1 + threshold``, ``"not reproduced at this
    scale"`` if their lower quartile is above it, else ``"inconclusive"`` (load noise)."""
    s = step_ratio_summary(times, multi, one)
    limit = 1.0 + threshold
    verdict = ("reproduced" if s["ratio_q75"] <= limit else
               "not reproduced at this scale" if s["ratio_q25"] > limit else "inconclusive")
    return {**s, "verdict": verdict}
