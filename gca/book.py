"""Build the executable book: execute the notebooks with papermill, then build the HTML.

Design (see ``book/reproducibility.md``):

1. **Execute.** Every notebook listed in ``_toc.yml`` is executed by papermill, in the kernel of
   the Python running this module (the venv), with the parameters ``profile`` and ``seed``
   injected into its ``parameters`` cell. Sources (``notebooks/*.ipynb``, ``book/*.ipynb``) are
   committed *without outputs*; executed copies go to ``build/`` with the same relative path
   (``build/notebooks/02_sinkhorn_vs_pot.ipynb``), and figures with their provenance sidecars to
   ``build/figures/``. ``build/`` is git-ignored: outputs are never committed noise, and every
   build regenerates them from the sources, so the book is reproducible from a commit.
   A report per run goes to ``build/reports/execution.json`` (profile, seed, parameters,
   seconds, status and error of each notebook, provenance of the run).
2. **Build.** The figure index is generated from the sidecars (``build/figure_index.md``,
   included by ``book/figures.md``), MathJax 3 is copied from the pinned PyPI package
   ``sphinx-mathjax-offline`` (no Node needed) into the git-ignored ``book/_vendor/html/``
   (copied into the HTML root by ``html_extra_path``), and
   ``jupyter-book build . -W -n --keep-going`` runs with execution off (``_config.yml``): any
   warning fails the build. The log is kept in ``build/reports/jupyter-book.log``, and the HTML
   is checked to load no script or stylesheet from a CDN.

Command line (from the repository root)::

    python -m gca.book all --profile smoke     # CI: execute at the smoke profile + build
    python -m gca.book all --profile default   # make book
    python -m gca.book execute --profile smoke --notebooks notebooks/02_sinkhorn_vs_pot.ipynb
    python -m gca.book build                   # rebuild the HTML from the executed notebooks

Notebook helpers: :func:`select_profile` (a notebook's sizes by profile, with overrides),
:func:`glue_value` / :func:`glue_values` (myst-nb glue with plain Python numbers, so that
``{glue:text}`key:.3g``` formats them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = [
    "BOOK_PROFILES",
    "EXECUTED_DIR",
    "MATHJAX_VERSION",
    "MATHJAX_DISTRIBUTION",
    "select_profile",
    "glue_value",
    "glue_values",
    "glue_figure",
    "toc_notebooks",
    "execute_notebooks",
    "hide_injected_parameters",
    "list_figures",
    "write_include",
    "citation_markdown",
    "regenerate_figure",
    "vendor_mathjax",
    "check_offline_html",
    "execution_report_markdown",
    "build_html",
    "main",
]

#: The execution profiles of every notebook. ``smoke`` is for CI (seconds per notebook),
#: ``default`` for ``make book`` (minutes on a 2-core CPU), ``full`` for the largest sizes. The
#: experiment pages show the study profile of each (:mod:`gca.study.plan`: ``default`` → ``cpu``).
BOOK_PROFILES = ("smoke", "default", "full")
#: Folder (relative to the repository root) holding executed notebooks, figures and reports.
EXECUTED_DIR = "build"
#: MathJax release vendored for offline math, as shipped by the pinned PyPI package below.
MATHJAX_VERSION = "3.2.2"
#: PyPI distribution that ships MathJax 3's ``es5`` build (Apache-2.0) — pinned in requirements.txt.
MATHJAX_DISTRIBUTION = "sphinx-mathjax-offline"
_VENDOR_DIR = Path("book") / "_vendor"
_CDN_PATTERN = re.compile(
    r"""<(?:script|link)\b[^>]*\b(?:src|href)=["'](?:https?:)?//[^"']*"""
    r"""|<script\b[^>]*>[^<]*?["'](?:https?:)?//[^"']*""",  # an address inside an inline script
    re.IGNORECASE,
)


# --------------------------------------------------------------------------------------------
# Helpers used inside notebooks
# --------------------------------------------------------------------------------------------
def select_profile(profile: str, table: Mapping[str, Mapping[str, Any]], **overrides: Any) -> dict[str, Any]:
    """Settings of ``profile`` from a notebook's ``table``, with non-``None`` overrides applied.

    Parameters
    ----------
    profile : {"smoke", "default", "full"}
        The execution profile (a papermill parameter).
    table : mapping
        ``{profile: {setting: value}}``; every profile of :data:`BOOK_PROFILES` must be present.
    **overrides
        Parameters of the notebook; those not ``None`` replace the profile's value. An override
        naming no setting of the table is an error (a misspelt parameter is never ignored).

    Examples
    --------
    >>> table = {p: {"n": n} for p, n in zip(BOOK_PROFILES, (8, 64, 512))}
    >>> select_profile("smoke", table, n=None)
    {'n': 8}
    >>> select_profile("default", table, n=100)
    {'n': 100}
    """
    missing = [p for p in BOOK_PROFILES if p not in table]
    if missing:
        raise ValueError(f"profile table lacks {missing}: give settings for every profile in {BOOK_PROFILES}")
    if profile not in table:
        raise ValueError(f"profile={profile!r} is unknown: choose one of {tuple(table)}")
    settings = dict(table[profile])
    unknown = [k for k in overrides if k not in settings]
    if unknown:
        raise ValueError(f"overrides {unknown} name no setting of the profile (settings: {sorted(settings)})")
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings


def _plain(value: Any) -> Any:
    """Python scalars from numpy / torch scalars (so that glue stores a literal, e.g. ``0.5``)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.numel() != 1:
            raise ValueError(f"glue a scalar tensor or a Python value, got a tensor of shape {tuple(value.shape)}")
        return value.item()
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def glue_value(name: str, value: Any, *, display: bool = False) -> None:
    """``myst_nb.glue(name, value)`` with numpy/torch scalars turned into Python numbers.

    In the text write ``{glue:text}`name:.3g``` (a format spec applies to numbers only when the
    stored value is a plain literal, hence the conversion). Returns nothing, so that a cell
    ending with it shows no output.
    """
    from myst_nb import glue

    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_.-]+$", name):
        raise ValueError(f"glue name {name!r} must be letters, digits, '_', '-' or '.'")
    glue(name, _plain(value), display=display)


def glue_values(values: Mapping[str, Any], *, prefix: str = "") -> None:
    """Glue every ``prefix + key`` of ``values`` (see :func:`glue_value`)."""
    for key, value in values.items():
        glue_value(prefix + key, value)


def glue_figure(fig: Any, record: Any) -> None:
    """Glue ``fig`` under the label of its :class:`gca.figures.FigureRecord` and close it.

    The page then shows it once, where a ``{glue:figure}`` directive names the label
    (``fig-<figure_id>``), and can refer to it with ``{numref}`` / ``{ref}``.
    """
    from myst_nb import glue

    label = getattr(record, "label", None)
    if not isinstance(label, str):
        raise TypeError(f"record must be the FigureRecord returned by gca.figures.save_figure, got {record!r}")
    glue(label, fig, display=False)
    import matplotlib.pyplot as plt

    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------
def _find_root(root: str | os.PathLike | None) -> Path:
    candidates = [Path(root)] if root is not None else [Path.cwd(), Path(__file__).resolve().parent.parent]
    for c in candidates:
        if (c / "_toc.yml").is_file() and (c / "_config.yml").is_file():
            return c.resolve()
    raise ValueError(
        f"no book found in {[str(c) for c in candidates]}: run from the repository root (the folder "
        "holding _config.yml and _toc.yml) or pass --root"
    )


def _toc_files(node: Any) -> list[str]:
    files: list[str] = []
    if isinstance(node, dict):
        if "file" in node:
            files.append(str(node["file"]))
        if "root" in node:
            files.append(str(node["root"]))
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                files += _toc_files(child)
    elif isinstance(node, list):
        for child in node:
            files += _toc_files(child)
    return files


def toc_notebooks(root: str | os.PathLike | None = None) -> list[str]:
    """Source notebooks of the book, in reading order (paths relative to the root).

    A ``_toc.yml`` entry ``build/<path>`` is the executed copy of the source ``<path>.ipynb``.
    """
    import yaml

    root = _find_root(root)
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    prefix = EXECUTED_DIR + "/"
    sources = []
    for entry in _toc_files(toc):
        if entry.startswith(prefix):
            src = entry[len(prefix):]
            src = src if src.endswith(".ipynb") else src + ".ipynb"
            if not (root / src).is_file():
                raise ValueError(f"_toc.yml lists {entry!r} but its source notebook {src!r} does not exist")
            sources.append(src)
    return sources


def _check_kernel(kernel_name: str) -> None:
    """Make sure papermill's kernel runs this interpreter (the venv), not another Python."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise ValueError(
            f"no Jupyter kernel {kernel_name!r}: install one for this Python with "
            f"`{sys.executable} -m ipykernel install --sys-prefix`"
        ) from None
    exe = spec.argv[0]
    # jupyter_client substitutes the running interpreter for a bare "python"/"python3".
    if exe not in {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}:
        if Path(exe).resolve() != Path(sys.executable).resolve():
            raise ValueError(
                f"kernel {kernel_name!r} runs {exe}, not this interpreter {sys.executable}: notebooks "
                f"would not see this environment; fix with `{sys.executable} -m ipykernel install --sys-prefix`"
            )


def _clear_figures(figure_dir: Path, notebook: str) -> None:
    """Remove the figures a previous run of ``notebook`` left (so removed figures disappear)."""
    if not figure_dir.is_dir():
        return
    for sidecar in figure_dir.glob("*.json"):
        try:
            rec = json.loads(sidecar.read_text())
        except json.JSONDecodeError:
            continue
        if rec.get("notebook") == notebook:
            for info in rec.get("files", {}).values():
                (figure_dir / info["name"]).unlink(missing_ok=True)
            sidecar.unlink()


def _kernel_environment(figure_dir: Path) -> None:
    """The environment the notebook kernels inherit (the book's executions and :func:`regenerate_figure`)."""
    os.environ["GCA_FIGURE_DIR"] = str(figure_dir)
    # Kernels must render figures inline (glue stores their PNG), even where the shell exports
    # MPLBACKEND=Agg (as CI does): a non-inline backend would glue "<Figure ...>" text instead.
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ["TQDM_DISABLE"] = "1"  # progress bars would only clutter the pages
    # tqdm.auto warns at import in a kernel without ipywidgets ("IProgress not found"): noise on
    # every page, unrelated to the results; every other warning stays visible.
    quiet_tqdm = "ignore:IProgress not found:Warning"
    if quiet_tqdm not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(w for w in (os.environ.get("PYTHONWARNINGS"), quiet_tqdm) if w)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    # Idle OpenMP threads sleep instead of spinning: on a shared or small machine spinning threads
    # make small torch ops many times slower (and the speed tables meaningless).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


#: Folder (under :data:`EXECUTED_DIR`) of the markdown snippets that pages include (``{include}``).
INCLUDES_DIR = "includes"


def write_include(name: str, markdown: str, root: str | os.PathLike | None = None) -> Path:
    """Write ``build/includes/<name>.md`` (atomically) for a page to ``{include}`` — e.g. the claims
    table of notebook 10 shown on the landing page. Returns the path."""
    if not re.match(r"^[a-z0-9_-]+$", name or ""):
        raise ValueError(f"include name {name!r} must be lower-case letters, digits, '_' or '-'")
    root = _find_root(root)
    path = root / EXECUTED_DIR / INCLUDES_DIR / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(markdown.rstrip() + "\n")
    os.replace(tmp, path)
    return path


def citation_markdown(root: str | os.PathLike | None = None) -> str:
    """BibTeX of the book (from ``CITATION.cff``) and of the paper (from ``book/references.bib``)."""
    import yaml

    root = _find_root(root)
    cff = yaml.safe_load((root / "CITATION.cff").read_text())
    authors = " and ".join(a.get("name") or f"{a.get('family-names')}, {a.get('given-names')}" for a in cff["authors"])
    from gca.provenance import collect_provenance

    commit = collect_provenance().get("git_commit") or "unknown"
    book = (f"@software{{gca_book,\n  title   = {{{cff['title']}}},\n  author  = {{{authors}}},\n"
            f"  version = {{{cff['version']}}},\n  note    = {{commit {commit}}}\n}}")
    bib = (root / "book" / "references.bib").read_text()
    match = re.search(r"@\w+\{chen2024gca,.*?\n\}", bib, re.S)
    paper = match.group(0) if match else "(entry chen2024gca missing from book/references.bib)"
    return ("The paper:\n\n```bibtex\n" + paper + "\n```\n\nThis book and software (`CITATION.cff`):\n\n"
            "```bibtex\n" + book + "\n```\n")


def list_figures(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The book's figures (sidecars under ``build/figures``): id, notebook, title, files and inputs."""
    from gca.figures import read_sidecars

    root = _find_root(root)
    folder = root / EXECUTED_DIR / "figures"
    if not folder.is_dir():
        raise FileNotFoundError(f"no figures in {folder}: build the book first (make book, or make smoke-book)")
    return read_sidecars(folder)


def regenerate_figure(figure_id: str, *, root: str | os.PathLike | None = None,
                      out_dir: str | os.PathLike | None = None, kernel_name: str = "python3") -> dict[str, Any]:
    """Redraw one figure of the book and compare it, byte for byte, with the published files.

    Re-executes the notebook that made ``figure_id`` with the parameters its sidecar records
    (experiment notebooks in ``cached`` mode: from the cached results, nothing is retrained) into
    ``out_dir`` (default: a new temporary folder), and returns ``{"figure_id", "notebook",
    "out_dir", "seconds", "files": {fmt: {"published", "regenerated", "identical"}}, "identical"}``.
    """
    import tempfile

    import papermill as pm

    records = {r["figure_id"]: r for r in list_figures(root)}
    if figure_id not in records:
        raise ValueError(f"no figure {figure_id!r} in the built book; `gca figure --list` shows the ids")
    root = _find_root(root)
    rec = records[figure_id]
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix=f"gca-figure-{figure_id}-"))
    out.mkdir(parents=True, exist_ok=True)
    declared = set(pm.inspect_notebook(str(root / rec["notebook"])))  # the notebook's parameters cell
    parameters = {k: v for k, v in dict(rec.get("parameters") or {}).items() if k in declared}
    if "mode" in parameters:
        parameters["mode"] = "cached"  # redraw from the cached results, never retrain
    _check_kernel(kernel_name)
    saved_env = dict(os.environ)
    t0 = time.perf_counter()
    try:
        _kernel_environment(out)
        src = root / rec["notebook"]
        pm.execute_notebook(str(src), str(out / Path(rec["notebook"]).name), parameters=parameters,
                            kernel_name=kernel_name, cwd=str(src.parent), progress_bar=False, log_output=False)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    from gca.provenance import file_checksum

    files = {}
    for fmt, info in rec["files"].items():
        new = out / info["name"]
        digest = file_checksum(new) if new.is_file() else None
        files[fmt] = {"published": info["sha256"], "regenerated": digest, "identical": digest == info["sha256"]}
    return {"figure_id": figure_id, "notebook": rec["notebook"], "out_dir": str(out),
            "seconds": round(time.perf_counter() - t0, 2), "files": files,
            "identical": all(f["identical"] for f in files.values())}


def hide_injected_parameters(path: str | os.PathLike) -> int:
    """Tag papermill's injected ``# Parameters`` cell of an executed notebook ``remove-cell``.

    The page then shows the notebook's own parameters cell once (the values a run used are in
    the execution report). Returns the number of cells tagged.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    count = 0
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
            count += 1
    if count:
        nbformat.write(nb, str(path))
    return count


def execute_notebooks(
    profile: str,
    *,
    seed: int = 0,
    notebooks: Sequence[str] | None = None,
    root: str | os.PathLike | None = None,
    kernel_name: str = "python3",
    cell_timeout: int | None = 3600,
) -> list[dict[str, Any]]:
    """Execute notebooks with papermill into ``build/``; returns one report per notebook.

    Every notebook runs even if an earlier one fails; the caller decides the exit status (see
    :func:`main`). Reports are also written to ``build/reports/execution.json``.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from gca.provenance import collect_provenance

    if profile not in BOOK_PROFILES:
        raise ValueError(f"profile={profile!r} is unknown: choose one of {BOOK_PROFILES}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    root = _find_root(root)
    listed = toc_notebooks(root)
    if notebooks is None:
        notebooks = listed
    else:
        notebooks = [str(Path(nb).resolve().relative_to(root)) if Path(nb).is_absolute() else str(Path(nb)) for nb in notebooks]
        unknown = [nb for nb in notebooks if nb not in listed]
        if unknown:
            raise ValueError(f"{unknown} are not in _toc.yml; the book's notebooks are {listed}")
    _check_kernel(kernel_name)

    build = root / EXECUTED_DIR
    figure_dir = build / "figures"
    reports_dir = build / "reports"
    figure_dir.mkdir(parents=True, exist_ok=True)
    reports_dir.mkdir(parents=True, exist_ok=True)
    _kernel_environment(figure_dir)

    reports = []
    for nb in notebooks:
        src = root / nb
        out = build / nb
        out.parent.mkdir(parents=True, exist_ok=True)
        _clear_figures(figure_dir, nb)
        parameters = {"profile": profile, "seed": seed}
        print(f"[gca.book] executing {nb} (profile={profile}, seed={seed}) ...", flush=True)
        t0 = time.perf_counter()
        status, error = "ok", None
        try:
            pm.execute_notebook(
                str(src),
                str(out),
                parameters=parameters,
                kernel_name=kernel_name,
                cwd=str(src.parent),
                progress_bar=False,
                log_output=False,
                execution_timeout=cell_timeout,
            )
        except PapermillExecutionError as exc:
            status, error = "error", f"{exc.ename}: {exc.evalue} (cell {exc.exec_count})"
        except Exception as exc:  # kernel died, timeout, bad notebook: report, keep going
            status, error = "error", f"{type(exc).__name__}: {exc}"
        seconds = round(time.perf_counter() - t0, 2)
        if out.is_file():
            hide_injected_parameters(out)
        print(f"[gca.book]   {status} in {seconds:.1f} s" + (f": {error}" if error else ""), flush=True)
        prov = collect_provenance(seed=seed)
        reports.append({"notebook": nb, "executed": str(out.relative_to(root)), "parameters": parameters,
                        "status": status, "error": error, "seconds": seconds, "finished": prov["time"],
                        "git_commit": prov["git_commit"], "git_dirty": prov["git_dirty"]})

    path = reports_dir / "execution.json"
    previous = json.loads(path.read_text()).get("notebooks", {}) if path.exists() else {}
    previous.update({r["notebook"]: r for r in reports})
    path.write_text(json.dumps({"provenance": collect_provenance(seed=seed, profile=profile),
                                "notebooks": previous}, indent=2) + "\n")
    return reports


# --------------------------------------------------------------------------------------------
# HTML build
# --------------------------------------------------------------------------------------------
def _mathjax_source() -> Path:
    """The ``es5`` MathJax folder inside the installed :data:`MATHJAX_DISTRIBUTION`."""
    from importlib import metadata

    try:
        dist = metadata.distribution(MATHJAX_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise RuntimeError(f"{MATHJAX_DISTRIBUTION} is not installed: it ships MathJax for offline math; "
                           "run `make venv` (or pip install -r requirements.txt)") from None
    return Path(str(dist.locate_file(f"{MATHJAX_DISTRIBUTION}/static/mathjax")))


def vendor_mathjax(root: str | os.PathLike | None = None, *, version: str = MATHJAX_VERSION) -> Path:
    """Copy MathJax ``version`` into ``book/_vendor/html/mathjax/es5`` (once; no Node, no network).

    The files come from the pinned PyPI package :data:`MATHJAX_DISTRIBUTION` (MathJax's ``es5``
    build, Apache-2.0). ``_config.yml`` copies ``book/_vendor/html`` into the HTML root
    (``html_extra_path``) and points ``mathjax_path`` at ``mathjax/es5/tex-svg.js`` there, so math
    renders offline. Returns the entry point.
    """
    root = _find_root(root)
    dest = root / _VENDOR_DIR / "html" / "mathjax" / "es5"
    entry = dest / "tex-svg.js"
    stamp = dest / ".mathjax-version"
    if entry.is_file() and stamp.is_file() and stamp.read_text().strip() == version:
        return entry
    src = _mathjax_source()
    shipped = re.search(r'VERSION="([0-9.]+)"', (src / "core.js").read_text(errors="replace"))
    if shipped is None or shipped.group(1) != version:
        raise RuntimeError(f"{MATHJAX_DISTRIBUTION} at {src} ships MathJax "
                           f"{shipped.group(1) if shipped else '?'}, expected {version}; reinstall the pinned "
                           "requirements (make venv)")
    tmp = dest.with_name(f".es5.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    (tmp / ".mathjax-version").write_text(version + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)  # a killed copy never leaves a half-filled es5/ that looks complete
    print(f"[gca.book] MathJax {version} from {MATHJAX_DISTRIBUTION} into {dest.relative_to(root)}", flush=True)
    return entry


def check_offline_html(html_dir: str | os.PathLike) -> list[str]:
    """Scripts and stylesheets the HTML would fetch from the network (should be none).

    Returns ``["page.html: <tag ...>", ...]``; also fails if MathJax is not loaded locally on a
    page with math.
    """
    html_dir = Path(html_dir)
    problems = []
    pages = sorted(html_dir.rglob("*.html"))
    if not pages:
        return [f"{html_dir}: no HTML page"]
    for page in pages:
        text = page.read_text(errors="replace")
        for m in _CDN_PATTERN.finditer(text):
            problems.append(f"{page.relative_to(html_dir)}: {m.group(0)}")
        if 'class="math' in text and "mathjax/es5/tex-svg.js" not in text:
            problems.append(f"{page.relative_to(html_dir)}: has math but does not load the vendored MathJax")
    if not (html_dir / "mathjax" / "es5" / "tex-svg.js").is_file():
        problems.append(f"{html_dir}/mathjax/es5/tex-svg.js missing: vendored MathJax was not copied")
    return problems


def execution_report_markdown(root: str | os.PathLike | None = None) -> str:
    """Markdown table of ``build/reports/execution.json``: how this build's notebooks were run."""
    root = _find_root(root)
    path = root / EXECUTED_DIR / "reports" / "execution.json"
    if not path.is_file():
        return "No execution report: the notebooks were not executed by `python -m gca.book`.\n"
    report = json.loads(path.read_text())
    prov = report.get("provenance", {})
    lines = [
        f"Machine of the last execution: {prov.get('device', '?')}; Python {prov.get('python', '?')}.",
        "",
        "| notebook | profile | seed | status | seconds | commit | finished (UTC) |",
        "|---|---|---|---|---|---|---|",
    ]
    for nb in toc_notebooks(root):
        r = report.get("notebooks", {}).get(nb)
        if r is None:
            lines.append(f"| `{nb}` | — | — | not executed | — |")
            continue
        status = r["status"] if r["error"] is None else f"{r['status']}: {r['error']}".replace("|", "\\|")
        commit = str(r.get("git_commit", "?"))[:12] + ("+" if r.get("git_dirty") else "")
        lines.append(f"| `{nb}` | {r['parameters']['profile']} | {r['parameters']['seed']} | {status} | "
                     f"{r['seconds']:.1f} | `{commit}` | {r.get('finished', '?')} |")
    return "\n".join(lines) + "\n"


def _figure_labels(build: Path, notebooks: Sequence[str]) -> set[str]:
    """Names of the ``{glue:figure}`` directives (``:name: fig-...``) in the executed notebooks."""
    import nbformat

    labels: set[str] = set()
    for nb in notebooks:
        cells = nbformat.read(build / nb, as_version=4).cells
        for cell in cells:
            if cell.cell_type == "markdown":
                labels.update(re.findall(r":name:\s*(fig-[a-z0-9-]+)", cell.source))
    return labels


def build_html(root: str | os.PathLike | None = None) -> Path:
    """Figure index + vendored MathJax + ``jupyter-book build . -W -n --keep-going``."""
    from gca.figures import write_figure_index

    root = _find_root(root)
    build = root / EXECUTED_DIR
    missing = [nb for nb in toc_notebooks(root) if not (build / nb).is_file()]
    if missing:
        raise RuntimeError(f"not executed yet: {missing}; run `python -m gca.book execute --profile smoke` first")
    notebooks = toc_notebooks(root)
    records = write_figure_index(build / "figures", build / "figure_index.md", image_prefix="../build/figures",
                                 notebooks=notebooks, labels=_figure_labels(build, notebooks))
    print(f"[gca.book] figure index: {len(records)} figures", flush=True)
    (build / "execution_report.md").write_text(execution_report_markdown(root))
    write_include("cite", citation_markdown(root), root)
    if not (build / INCLUDES_DIR / "claims_short.md").is_file():
        raise RuntimeError("build/includes/claims_short.md is missing: execute notebooks/10_claims.ipynb first")
    vendor_mathjax(root)

    html = root / "_build" / "html"
    # Start from an empty HTML folder: Sphinx never deletes pages of documents that left the book,
    # and a stale page must not be published (the doctree cache keeps rebuilds fast).
    shutil.rmtree(html, ignore_errors=True)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(root), "-W", "-n", "--keep-going"]
    print("[gca.book] " + " ".join(cmd), flush=True)
    log_path = build / "reports" / "jupyter-book.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        rc = proc.wait()
    print(f"[gca.book] jupyter-book finished in {time.perf_counter() - t0:.1f} s (log: {log_path.relative_to(root)})")
    if rc != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {rc}); see {log_path}")
    problems = check_offline_html(html)
    if problems:
        raise RuntimeError("the HTML fetches resources from the network:\n  " + "\n  ".join(problems[:20]))
    return html


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gca.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("execute", "build", "all"),
                        help="execute notebooks, build the HTML, or both")
    parser.add_argument("--profile", default="default", choices=BOOK_PROFILES,
                        help="notebook profile (smoke: CI, default: make book, full: large sizes)")
    parser.add_argument("--seed", type=int, default=0, help="seed injected into every notebook")
    parser.add_argument("--notebooks", nargs="+", default=None, help="only these source notebooks")
    parser.add_argument("--root", default=None, help="repository root (default: the current folder)")
    parser.add_argument("--cell-timeout", type=int, default=3600, help="seconds per cell before failing")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    failed = []
    if args.command in ("execute", "all"):
        reports = execute_notebooks(args.profile, seed=args.seed, notebooks=args.notebooks,
                                    root=args.root, cell_timeout=args.cell_timeout)
        failed = [r for r in reports if r["status"] != "ok"]
    if args.command in ("build", "all"):
        try:
            html = build_html(args.root)
            print(f"[gca.book] HTML: {html / 'index.html'}")
        except RuntimeError as exc:
            print(f"[gca.book] BUILD FAILED: {exc}", file=sys.stderr)
            return 1
    for r in failed:
        print(f"[gca.book] NOTEBOOK FAILED: {r['notebook']}: {r['error']} (see {r['executed']})", file=sys.stderr)
    print(f"[gca.book] total {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
