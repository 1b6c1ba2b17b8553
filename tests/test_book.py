"""The book's structure: table of contents, notebooks (parameters, thin over gca), API pages,
configuration (execution off, offline MathJax), and the runner's helpers."""

import ast
import inspect
import json
import re
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import yaml

from gca import book

ROOT = Path(__file__).resolve().parent.parent
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC_FILES = book._toc_files(TOC)
NOTEBOOKS = book.toc_notebooks(ROOT)
# What a notebook must not contain: solver or loss code of its own (it must call gca).
# (Calling torch.softmax to *check* that gca's row projection is the softmax is allowed.)
FORBIDDEN = [r"\blogsumexp\b", r"\bdef\s+\w*sinkhorn\w*", r"\bdef\s+\w*(loss|projection|bregman)\w*\s*\("]


def _code_cells(path):
    return [c for c in nbformat.read(ROOT / path, as_version=4).cells if c.cell_type == "code"]


def test_toc_entries_exist():
    assert TOC["root"] in TOC_FILES
    for entry in TOC_FILES:
        if entry.startswith(book.EXECUTED_DIR + "/"):
            continue  # executed copies: their sources are checked by toc_notebooks
        matches = [ROOT / f"{entry}{ext}" for ext in (".md", ".ipynb")]
        assert any(p.is_file() for p in matches), f"_toc.yml entry {entry!r} has no .md/.ipynb file"


def test_toc_lists_the_notebooks_and_every_notebook_is_listed():
    assert "notebooks/02_sinkhorn_vs_pot.ipynb" in NOTEBOOKS
    assert "book/official_code_notes.ipynb" in NOTEBOOKS
    # Committed notebooks (a notebook still being written, untracked, is not yet part of the book).
    try:
        tracked = subprocess.run(["git", "ls-files", "notebooks", "book"], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    committed = {p for p in tracked if p.endswith(".ipynb")}
    assert committed <= set(NOTEBOOKS), f"notebooks missing from _toc.yml: {committed - set(NOTEBOOKS)}"


def test_toc_notebooks_rejects_missing_source(tmp_path):
    (tmp_path / "_config.yml").write_text("title: x\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: build/notebooks/nope\n")
    with pytest.raises(ValueError, match="nope.ipynb"):
        book.toc_notebooks(tmp_path)


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_notebook_has_parameters_cell_with_profile_and_seed(path):
    cells = _code_cells(path)
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path}: exactly one cell must be tagged 'parameters'"
    assigned = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert {"profile", "seed"} <= assigned, f"{path}: parameters cell must set profile and seed"
    assert cells.index(tagged[0]) == 0, f"{path}: the parameters cell must be the first code cell"


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_notebook_committed_without_outputs(path):
    for cell in _code_cells(path):
        assert cell.outputs == [] and cell.execution_count is None, f"{path}: outputs are build products (build/)"


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_notebook_is_thin_over_gca(path):
    source = "\n".join(c.source for c in _code_cells(path))
    assert re.search(r"^\s*(from gca|import gca)", source, re.M), f"{path} does not use gca"
    for pattern in FORBIDDEN:
        assert not re.search(pattern, source), f"{path}: solver/loss code ({pattern}) belongs in gca, not a notebook"
    for call in re.findall(r"save_figure\((.*?)\)", source, re.S):
        assert "notebook=NOTEBOOK" in call or f'notebook="{path}"' in call, f"{path}: save_figure without its own path"
    if "save_figure(" in source:
        assert re.search(rf'NOTEBOOK\s*=\s*"{re.escape(path)}"', source), f"{path}: NOTEBOOK must be {path!r}"


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_glue_references_are_defined(path):
    nb = nbformat.read(ROOT / path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    used = set(re.findall(r"\{glue:text\}`([A-Za-z0-9_.-]+)", text)) | set(re.findall(r"\{glue:figure\}\s+(\S+)", text))
    glued = set(re.findall(r"glue_value\(\s*\"([A-Za-z0-9_.-]+)\"", code))
    figures = {f"fig-{f}" for f in re.findall(r"save_figure\(\s*fig,\s*\"([a-z0-9-]+)\"", code)}
    # Keys built with f-strings, e.g. glue_value(f"gap_q{q:g}", ...): each {...} matches anything.
    patterns = [re.compile(re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(k)) + "$")
                for k in re.findall(r"glue_value\(\s*f\"([^\"]+)\"", code)]
    assert used, f"{path}: no glued number in the text"
    missing = {k for k in used - glued - figures if not any(p.match(k) for p in patterns)}
    assert not missing, f"{path}: glue keys used but never glued: {missing}"


def test_forbidden_patterns_catch_solver_code():
    sample = "def my_sinkhorn(C):\n    return torch.logsumexp(-C, 1)\n"
    assert any(re.search(p, sample) for p in FORBIDDEN)


def _gca_modules() -> list[str]:
    """Every public module of gca, recursively, as dotted names below ``gca`` (a package by its own name)."""
    names = []
    for path in sorted((ROOT / "gca").rglob("*.py")):
        parts = list(path.relative_to(ROOT / "gca").with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and not any(p.startswith("_") for p in parts):
            names.append(".".join(parts))
    return names


def test_api_pages_cover_every_module():
    """One page per top-level module or package of gca; a package's page documents each of its modules."""
    modules = _gca_modules()
    tops = {m.split(".")[0] for m in modules}
    pages = {f.split("/")[-1] for f in TOC_FILES if f.startswith("book/api/") and not f.endswith("index")}
    assert tops == pages, f"API pages out of sync with gca/: missing {tops - pages}, extra {pages - tops}"
    for name in modules:
        text = (ROOT / "book" / "api" / f"{name.split('.')[0]}.md").read_text()
        assert re.search(rf"^\.\. automodule:: gca\.{re.escape(name)}$", text, re.M), f"no automodule of gca.{name}"


def test_config_builds_offline_without_execution():
    assert CONFIG["execute"]["execute_notebooks"] == "off"
    sphinx = CONFIG["sphinx"]["config"]
    assert "://" not in sphinx["mathjax_path"] and sphinx["mathjax_path"].endswith("mathjax/es5/tex-svg.js")
    assert sphinx["html_extra_path"] == ["book/_vendor/html"]
    # wide tables scroll sideways with a cue instead of being clipped
    assert sphinx["html_static_path"] == ["book/_static"] and sphinx["html_css_files"] == ["gca.css"]
    css = (ROOT / "book" / "_static" / "gca.css").read_text()
    assert "overflow-x: auto" in css and "background-attachment: local, local, scroll, scroll" in css
    assert CONFIG["bibtex_bibfiles"] == ["book/references.bib"]
    assert "/book/_vendor/" in (ROOT / ".gitignore").read_text() and "/build/" in (ROOT / ".gitignore").read_text()


def test_citations_exist_in_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    cited = set()
    for p in list((ROOT / "book").rglob("*.md")) + [ROOT / n for n in NOTEBOOKS]:
        if "_vendor" in p.parts:
            continue
        for group in re.findall(r"\{cite\}`([^`]+)`", p.read_text()):
            cited |= {k.strip() for k in group.split(",")}
    assert "chen2024gca" in cited and cited <= keys, f"cited but not in references.bib: {cited - keys}"


def test_select_profile():
    table = {p: {"n": i, "eps": 0.5} for i, p in enumerate(book.BOOK_PROFILES)}
    assert book.select_profile("smoke", table, n=None) == {"n": 0, "eps": 0.5}
    assert book.select_profile("full", table, n=7) == {"n": 7, "eps": 0.5}
    with pytest.raises(ValueError, match="profile='paper'"):
        book.select_profile("paper", table)
    with pytest.raises(ValueError, match="sizez"):
        book.select_profile("smoke", table, sizez=[1])
    with pytest.raises(ValueError, match="lacks"):
        book.select_profile("smoke", {"smoke": {}})


def test_plain_values_for_glue():
    assert book._plain(np.float64(0.25)) == 0.25 and type(book._plain(np.float64(0.25))) is float
    assert type(book._plain(torch.tensor(3))) is int
    assert book._plain("text") == "text"
    with pytest.raises(ValueError, match="shape"):
        book._plain(torch.ones(2))


def test_check_offline_html(tmp_path):
    (tmp_path / "mathjax" / "es5").mkdir(parents=True)
    (tmp_path / "mathjax" / "es5" / "tex-svg.js").write_text("")
    page = tmp_path / "p.html"
    page.write_text('<script defer="defer" src="_static/../mathjax/es5/tex-svg.js"></script><a href="https://x">x</a>')
    assert book.check_offline_html(tmp_path) == []
    page.write_text('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>')
    assert len(book.check_offline_html(tmp_path)) == 1
    page.write_text('<span class="math notranslate">\\(x\\)</span>')  # math without the local MathJax
    assert len(book.check_offline_html(tmp_path)) == 1
    page.write_text('<link rel="stylesheet" href="//fonts.example.org/a.css" />')
    assert len(book.check_offline_html(tmp_path)) == 1
    page.write_text('<script>const THEBE_JS_URL = "https://unpkg.com/thebe@0.8.2/lib/index.js";</script>')
    assert len(book.check_offline_html(tmp_path)) == 1


def test_execute_validates_arguments():
    with pytest.raises(ValueError, match="profile"):
        book.execute_notebooks("paper", root=ROOT)
    with pytest.raises(TypeError, match="seed"):
        book.execute_notebooks("smoke", seed="0", root=ROOT)
    with pytest.raises(ValueError, match="not in _toc.yml"):
        book.execute_notebooks("smoke", notebooks=["notebooks/nope.ipynb"], root=ROOT)


def test_kernel_is_this_interpreter():
    book._check_kernel("python3")  # raises if papermill would run another Python
    with pytest.raises(ValueError, match="no Jupyter kernel"):
        book._check_kernel("no-such-kernel-gca")


def test_citation_cff_cites_the_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"].startswith("1.2") and cff["title"]
    refs = cff.get("references", []) + [cff.get("preferred-citation", {})]
    assert any("secretly a distribution alignment problem" in r.get("title", "") for r in refs)


def test_execution_report_markdown(tmp_path):
    (tmp_path / "_config.yml").write_text("title: x\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: build/nb/a\n  - file: build/nb/b\n")
    (tmp_path / "nb").mkdir()
    for name in "ab":
        nbformat.write(nbformat.v4.new_notebook(), tmp_path / "nb" / f"{name}.ipynb")
    assert "No execution report" in book.execution_report_markdown(tmp_path)
    (tmp_path / "build" / "reports").mkdir(parents=True)
    report = {"provenance": {"device": "cpu:test"}, "notebooks": {"nb/a.ipynb": {
        "parameters": {"profile": "smoke", "seed": 0}, "status": "error", "error": "ValueError: x | y",
        "seconds": 1.25, "git_commit": "abcdef0123456789", "git_dirty": True, "finished": "t0"}}}
    (tmp_path / "build" / "reports" / "execution.json").write_text(json.dumps(report))
    text = book.execution_report_markdown(tmp_path)
    assert "| `nb/a.ipynb` | smoke | 0 | error: ValueError: x \\| y | 1.2 | `abcdef012345+` | t0 |" in text
    assert "| `nb/b.ipynb` | — | — | not executed | — |" in text and "cpu:test" in text


def test_sphinx_extension_skips_dataclass_fields_documented_in_attributes():
    """book/_ext/gca_sphinx.py: fields named in a class's Attributes section are not listed twice."""
    import importlib.util

    from sphinx.util.docstrings import prepare_docstring

    from gca.ot import SinkhornResult

    spec = importlib.util.spec_from_file_location("gca_sphinx", ROOT / "book" / "_ext" / "gca_sphinx.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    lines = prepare_docstring(SinkhornResult.__doc__)
    ext._remember_attributes(None, "class", "gca.ot.SinkhornResult", SinkhornResult, {}, lines)
    assert {"f", "g", "g_prev", "a", "b", "row_lse"} <= ext._documented_attributes  # "f, g : ..." entries
    assert "Lazy" not in ext._documented_attributes and "plan" not in ext._documented_attributes
    sentinel = object()  # what autodoc passes for an annotation-only field
    assert ext._skip_documented_fields(None, "class", "row_lse", sentinel, False, {}) is True
    assert ext._skip_documented_fields(None, "class", "plan", SinkhornResult.plan, False, {}) is None
    assert ext._skip_documented_fields(None, "class", "unlisted", sentinel, False, {}) is None
    ext._remember_attributes(None, "class", "Other", object, {}, ["A class without the section."])
    assert ext._skip_documented_fields(None, "class", "row_lse", sentinel, False, {}) is None


def test_sphinx_extension_describes_a_reexported_object_once():
    """book/_ext/gca_sphinx.py: a package re-exports gca.ot.solvers.sinkhorn as gca.ot.sinkhorn: only the
    package's page describes it; what the package does not re-export stays on the module's section."""
    import importlib.util
    import types

    from gca.ot import sinkhorn, solvers

    spec = importlib.util.spec_from_file_location("gca_sphinx", ROOT / "book" / "_ext" / "gca_sphinx.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)

    def app(modname):
        return types.SimpleNamespace(env=types.SimpleNamespace(temp_data={"autodoc:module": modname}))

    assert ext._skip_reexported(app("gca.ot.solvers"), "module", "sinkhorn", sinkhorn, False, {}) is True
    assert ext._skip_reexported(app("gca.ot"), "module", "sinkhorn", sinkhorn, False, {}) is None
    assert ext._skip_reexported(app("gca.ot.solvers"), "module", "solve", solvers.solve, False, {}) is None
    assert ext._skip_reexported(app("gca.ot.solvers"), "class", "sinkhorn", sinkhorn, False, {}) is None


def test_mathjax_is_vendored_from_pypi_without_node(tmp_path, monkeypatch):
    # no npm on PATH: the pinned PyPI package alone provides MathJax's es5 build
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    (tmp_path / "_toc.yml").write_text("root: x\n")
    (tmp_path / "_config.yml").write_text("title: x\n")
    entry = book.vendor_mathjax(tmp_path)
    assert entry == tmp_path / "book" / "_vendor" / "html" / "mathjax" / "es5" / "tex-svg.js"
    assert entry.stat().st_size > 1_000_000 and b"MathJax" in entry.read_bytes()[:100_000]
    assert (entry.parent / "output" / "chtml").is_dir() or (entry.parent / "output" / "svg").is_dir()
    assert book.vendor_mathjax(tmp_path) == entry  # second call: already there, nothing copied
    assert "npm" not in inspect.getsource(book.vendor_mathjax)


def test_bibliography_labels_are_author_year():
    import sys

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import gca_sphinx
    from pybtex.database import parse_file
    from pybtex.plugin import find_plugin

    assert CONFIG["sphinx"]["config"]["bibtex_default_style"] == "authoryear"
    assert CONFIG["sphinx"]["config"]["bibtex_reference_style"] == "author_year"
    gca_sphinx._register_author_year_style()
    style = find_plugin("pybtex.style.formatting", "authoryear")()
    labels = {e.key: e.label for e in style.format_entries(parse_file(ROOT / "book" / "references.bib").entries.values())}
    assert labels["chen2024gca"] == "Chen et al., 2024" and labels["cuturi2013sinkhorn"] == "Cuturi, 2013"
    assert labels["peyre2019computational"] == "Peyré and Cuturi, 2019"  # LaTeX accents decoded
    assert len(set(labels.values())) == len(labels), "two entries share a label"
