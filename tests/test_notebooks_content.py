"""Content checks of notebooks 01 (InfoNCE to entropic OT) and 03 (the loss family).

The generic rules for every notebook of the book (a ``parameters`` cell with ``profile`` and
``seed``, no committed outputs, glue keys defined, no ``logsumexp`` / solver or loss functions)
are tested in ``tests/test_book.py``. Here, for notebooks 01 and 03 only:

- further signs of solver or loss code that the generic test does not look for (an ``nn.Module``
  defined in the notebook, a hand-written Sinkhorn scaling update, functions named after losses);
- their parameters cell exposes the sizes the text refers to, and the figure identifiers they
  save are valid and not used by any other notebook;
- (slow) executed at the smoke profile, they run without error, write the figures they announce
  with provenance sidecars, and glue results consistent with their parameters.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest

from gca.figures import FIGURE_ID_PATTERN

ROOT = Path(__file__).resolve().parent.parent
NB01 = ROOT / "notebooks" / "01_nce_as_ot.ipynb"
NB03 = ROOT / "notebooks" / "03_loss_family.ipynb"
MINE = [NB01, NB03]
ALL_NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.ipynb"))
SIZE_PARAMETERS = {
    NB01: {"batch_size", "epsilon", "n_steps", "n_batches"},
    NB03: {"batch_size", "epsilon", "n_iter", "rho", "n_grid", "domain_batch_size"},
}
EXPECTED_FIGURES = {
    NB01: {"nce-bregman-convergence", "nce-unbalanced-marginals", "nce-theory-inequality"},
    NB03: {"loss-family-plans", "loss-family-plan-ratio", "loss-family-epsilon",
           "loss-family-iterations-rho", "loss-family-domain-prior-targets"},
}

# Signs of solver or loss mathematics beyond those of tests/test_book.py.
FORBIDDEN = {
    "a function named after a loss": re.compile(
        r"^\s*def\s+\w*(nce|rince|uot|iot|nt_xent|ntxent)\w*\s*\(", re.IGNORECASE | re.MULTILINE
    ),
    "an nn.Module defined in the notebook": re.compile(r"^\s*class\s+\w+\s*\([^)]*Module[^)]*\)", re.MULTILINE),
    "a hand-written Sinkhorn scaling update (u = a / (K @ v) ...)": re.compile(
        r"\b[uv]\w*\s*=\s*[^\n]*/\s*\(?\s*\w*K\w*(\.T)?\s*@\s*[uv]\b"
    ),
}

_SAVE_FIGURE_ID = re.compile(r"save_figure\(\s*\w+\s*,\s*[\"']([^\"']+)[\"']")


def _ids(paths):
    return [p.name for p in paths]


def _code(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _parameters(path):
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", []))
    return {t.id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body for t in n.targets}


@pytest.mark.parametrize("path", MINE, ids=_ids(MINE))
def test_no_further_solver_or_loss_code(path):
    problems = [
        f"code cell {i}: {what}: {m.group(0).strip()!r}"
        for i, src in enumerate(_code(path))
        for what, pattern in FORBIDDEN.items()
        for m in pattern.finditer(src)
    ]
    assert not problems, f"{path.name} must stay thin over gca:\n" + "\n".join(problems)


def test_forbidden_patterns_catch_solver_code():
    # The check above can fail: each pattern recognises the code it is meant to reject ...
    for sample in ["def info_nce(z1, z2):\n    pass", "def my_rince(x):\n    pass",
                   "class MyLoss(nn.Module):\n    pass", "u = a / (K @ v)", "v = b / (K.T @ u)"]:
        assert any(p.search(sample) for p in FORBIDDEN.values()), sample
    # ... and lets calls into gca through.
    clean = "res = ot.sinkhorn(C, ones, ones, epsilon=eps)\nloss = losses.ince_loss(z1, z2)\nP = res.plan"
    assert not any(p.search(clean) for p in FORBIDDEN.values())


@pytest.mark.parametrize("path", MINE, ids=_ids(MINE))
def test_parameters_expose_the_sizes(path):
    params = _parameters(path)
    missing = SIZE_PARAMETERS[path] - set(params)
    assert not missing, f"{path.name}: parameters cell lacks {sorted(missing)}"
    assert all(params[k] is None for k in SIZE_PARAMETERS[path]), "sizes default to None (the profile's choice)"


def test_figure_ids_valid_and_unique_across_the_book():
    owner = {}
    for path in ALL_NOTEBOOKS:
        for src in _code(path):
            for fid in _SAVE_FIGURE_ID.findall(src):
                assert FIGURE_ID_PATTERN.match(fid), f"{path.name}: figure id {fid!r} is not a stable slug"
                assert owner.setdefault(fid, path.name) == path.name, f"figure id {fid!r}: {owner[fid]} and {path.name}"
    for path, expected in EXPECTED_FIGURES.items():
        saved = {fid for src in _code(path) for fid in _SAVE_FIGURE_ID.findall(src)}
        assert saved == expected, f"{path.name} saves {sorted(saved)}, the text announces {sorted(expected)}"


def _glued(executed):
    out = {}
    for cell in executed.cells:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            text = [v for k, v in o.get("data", {}).items() if k.endswith("text/plain")]
            if name and text:
                out[name] = text[0]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("path", MINE, ids=_ids(MINE))
def test_executes_at_smoke_profile(path, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    figures = tmp_path / "figures"
    monkeypatch.setenv("GCA_FIGURE_DIR", str(figures))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / path.name
    papermill.execute_notebook(str(path), str(out), parameters={"profile": "smoke", "seed": 0},
                               cwd=str(path.parent), progress_bar=False)
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    sidecars = {p.stem: json.loads(p.read_text()) for p in figures.glob("*.json")}
    assert set(sidecars) == EXPECTED_FIGURES[path]
    for rec in sidecars.values():
        assert rec["notebook"] == f"notebooks/{path.name}" and rec["parameters"]["profile"] == "smoke"
        assert rec["seed"] == 0 and rec["data_checksum"]
    glued = _glued(executed)
    if path == NB01:
        # the sizes of the smoke profile, as the notebook's own settings cell prints them
        settings = ast.literal_eval(re.search(r"settings=(\{.*\})", "".join(
            o.get("text", "") for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "stream"
        )).group(1))
        assert int(glued["nb01_n_batches"]) == settings["n_batches"]
        assert 0.0 <= float(glued["nb01_frac_kl"]) <= 1.0
        assert int(glued["nb01_n_viol_kl"]) == round((1 - float(glued["nb01_frac_kl"])) * settings["n_batches"])
        for key in ("nb01_err_softmax", "nb01_err_ince", "nb01_err_gca_ince", "nb01_err_rince"):
            assert float(glued[key]) < 1e-12, key  # the identities hold to rounding
    else:
        assert float(glued["nb03_spread_gca_min"]) < 1e-9  # GCA-INCE's columns are balanced
        assert float(glued["nb03_rate_lo"]) < float(glued["nb03_rate_0"]) < float(glued["nb03_rate_hi"])


_GLUE_FIGURE = re.compile(r"```\{glue:figure\}\s+fig-([a-z0-9-]+)\n(.*?)```", re.S)


def test_every_figure_is_captioned_with_its_id_and_how_to_cite_and_redraw_it():
    """Each ``glue:figure`` of the book has a caption that ends with its stable id, where its
    sidecar lists its inputs, and the command that redraws it (issue 13 item 1), and shows a
    figure some notebook saves under that id."""
    saved = {fid for path in ALL_NOTEBOOKS for src in _code(path) for fid in _SAVE_FIGURE_ID.findall(src)}
    shown = set()
    for path in ALL_NOTEBOOKS:
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
        for fid, body in _GLUE_FIGURE.findall(text):
            shown.add(fid)
            caption = " ".join(line for line in body.splitlines() if line and not line.startswith(":"))
            assert f"Figure `{fid}`" in caption and f"sidecar `build/figures/{fid}.json`" in caption \
                and f"`gca figure {fid}`" in caption, f"{path.name}: the caption of {fid} lacks its id or cite line"
    assert shown <= saved, f"glued but never saved: {sorted(shown - saved)}"
    assert shown, "no glue:figure found"
