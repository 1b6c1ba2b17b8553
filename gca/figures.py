"""Citable figures: image files with a stable identifier and a provenance sidecar.

Every figure of the book goes through :func:`save_figure`, which writes

- ``<directory>/<figure_id>.png`` (and ``.svg`` / ``.pdf`` when asked), and
- ``<directory>/<figure_id>.json``, the *sidecar*: the figure's identifier, title, caption,
  the notebook and parameters that produced it, the seed, the data checksum, and everything
  :func:`gca.provenance.collect_provenance` records (commit, dirty flag, package versions,
  device, time), plus the SHA-256 of each written file.

The directory is ``$GCA_FIGURE_DIR`` when set (the book runner :mod:`gca.book` sets it to
``build/figures``), else ``./figures``. :func:`read_sidecars` and :func:`figure_index_markdown`
turn a folder of sidecars into the book's figure index.

A figure identifier is a lower-case slug (``sinkhorn-error-vs-epsilon``): it names the files,
the sidecar and the figure's label in the book (``fig-<figure_id>``), and does not change when
notebooks are renumbered. Re-running a notebook overwrites its figures with fresh provenance.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from gca.provenance import collect_provenance, file_checksum

__all__ = [
    "FIGURE_ID_PATTERN",
    "FigureRecord",
    "default_figure_dir",
    "save_figure",
    "describe_input",
    "OKABE_ITO",
    "MARKERS",
    "book_style",
    "use_book_style",
    "plot_points_by_method",
    "read_sidecars",
    "figure_index_markdown",
    "write_figure_index",
]

#: The allowed figure identifiers, lower-case words of letters and digits joined by hyphens.
FIGURE_ID_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_FORMATS = ("png", "svg", "pdf")
SIDECAR_VERSION = 1


@dataclass(frozen=True)
class FigureRecord:
    """What :func:`save_figure` wrote.

    Attributes
    ----------
    figure_id : str
        The stable identifier.
    files : dict[str, pathlib.Path]
        Image files by format (``"png"``, ``"svg"``, ``"pdf"``).
    sidecar : pathlib.Path
        The JSON provenance sidecar.
    provenance : dict
        The sidecar's content.
    """

    figure_id: str
    files: dict
    sidecar: Path
    provenance: dict

    @property
    def label(self) -> str:
        """Cross-reference label of the figure in the book (``fig-<figure_id>``)."""
        return f"fig-{self.figure_id}"


def default_figure_dir() -> Path:
    """``$GCA_FIGURE_DIR`` if set, else ``./figures`` (relative to the working directory)."""
    return Path(os.environ.get("GCA_FIGURE_DIR") or "figures")


def _check_json(value: Any, name: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be JSON-serialisable (plain str/int/float/bool/None, lists, dicts; "
            f"finite floats), got {value!r}: convert tensors/arrays with .tolist() ({exc})"
        ) from None


def save_figure(
    fig: Any,
    figure_id: str,
    *,
    notebook: str,
    parameters: Mapping[str, Any],
    seed: int | None,
    data_checksum: str | None = None,
    title: str | None = None,
    caption: str | None = None,
    formats: Iterable[str] = ("png", "svg"),
    directory: str | os.PathLike | None = None,
    dpi: int = 150,
    device: Any = None,
    inputs: Iterable[str | os.PathLike] = (),
    **extra: Any,
) -> FigureRecord:
    """Save ``fig`` under a stable identifier with a provenance sidecar.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to save (it is not closed, so a notebook still displays it).
    figure_id : str
        Stable identifier matching :data:`FIGURE_ID_PATTERN`, e.g. ``"sinkhorn-error-vs-epsilon"``.
    notebook : str
        Path of the notebook that made the figure, relative to the repository root
        (e.g. ``"notebooks/02_sinkhorn_vs_pot.ipynb"``).
    parameters : mapping
        The notebook's parameters (its ``parameters`` cell after papermill's injection), JSON-
        serialisable.
    seed : int or None
        The seed of every random draw behind the figure.
    data_checksum : str, optional
        :func:`gca.provenance.array_checksum` (or ``file_checksum``) of the data shown.
    title, caption : str, optional
        Short title and one-paragraph caption, shown on the figure index.
    formats : iterable of {"png", "svg", "pdf"}
        Files to write; PNG is always written (the book shows it).
    directory : path, optional
        Output folder (default :func:`default_figure_dir`); created if missing.
    dpi : int
        Resolution of the PNG.
    device : optional
        Device the numbers were computed on (recorded; default: CUDA if available, else CPU).
    inputs : iterable of paths
        The files the figure plots (e.g. the cached result JSONs of :mod:`gca.study`): the
        sidecar lists each with its sha256 and, for a result file, the commit (and dirty flag)
        of the code that computed it, read from its provenance.
    **extra
        Further JSON-serialisable fields for the sidecar (e.g. ``profile="smoke"``).

    Returns
    -------
    FigureRecord

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt, tempfile
    >>> fig, ax = plt.subplots(); _ = ax.plot([0, 1], [1, 0])
    >>> rec = save_figure(fig, "demo-line", notebook="notebooks/demo.ipynb",
    ...                   parameters={"profile": "smoke"}, seed=0, directory=tempfile.mkdtemp())
    >>> rec.sidecar.name, sorted(rec.files)
    ('demo-line.json', ['png', 'svg'])
    """
    if not hasattr(fig, "savefig"):
        raise TypeError(f"fig must be a matplotlib Figure (with .savefig), got {type(fig).__name__}")
    if not isinstance(figure_id, str) or not FIGURE_ID_PATTERN.match(figure_id):
        raise ValueError(
            f"figure_id={figure_id!r} is not a stable identifier: use lower-case letters, digits "
            "and single hyphens, e.g. 'sinkhorn-error-vs-epsilon'"
        )
    if not isinstance(notebook, str) or not notebook.endswith(".ipynb"):
        raise ValueError(
            f"notebook={notebook!r} must be the producing notebook's path relative to the "
            "repository root, e.g. 'notebooks/02_sinkhorn_vs_pot.ipynb'"
        )
    if not isinstance(parameters, Mapping):
        raise TypeError(f"parameters must be a mapping of the notebook's parameters, got {type(parameters).__name__}")
    parameters = dict(parameters)
    _check_json(parameters, "parameters")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    if data_checksum is not None and not isinstance(data_checksum, str):
        raise TypeError(f"data_checksum must be a str (e.g. gca.provenance.array_checksum(x)) or None, got {data_checksum!r}")
    formats = tuple(dict.fromkeys(("png", *formats)))
    bad = [f for f in formats if f not in _FORMATS]
    if bad:
        raise ValueError(f"formats={bad!r} not supported: choose from {_FORMATS}")
    if not isinstance(dpi, int) or dpi <= 0:
        raise ValueError(f"dpi={dpi!r} must be a positive int, e.g. 150")
    _check_json(extra, "extra sidecar fields")

    out = Path(directory) if directory is not None else default_figure_dir()
    out.mkdir(parents=True, exist_ok=True)
    sidecar = out / f"{figure_id}.json"
    if sidecar.exists():
        try:
            previous = json.loads(sidecar.read_text()).get("notebook")
        except json.JSONDecodeError:
            previous = None
        if previous is not None and previous != notebook:
            raise ValueError(
                f"figure_id={figure_id!r} is already used by {previous!r}: identifiers are unique "
                f"across the book; choose another id (or delete the stale {sidecar})"
            )
    from matplotlib import rc_context

    files: dict[str, Path] = {}
    for fmt in formats:
        path = out / f"{figure_id}.{fmt}"
        # Fixed metadata so that identical figures give identical files (no creation date).
        metadata = {"Software": None} if fmt == "png" else ({"Date": None} if fmt == "svg" else {"CreationDate": None})
        # A fixed salt for the SVG element ids (random per process otherwise): the same figure, the same bytes.
        with rc_context({"svg.hashsalt": f"gca-{figure_id}"}):
            fig.savefig(path, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
        files[fmt] = path

    record = collect_provenance(
        seed=seed,
        data_checksum=data_checksum,
        device=device,
        notebook=notebook,
        parameters=parameters,
    )
    record = {
        "sidecar_version": SIDECAR_VERSION,
        "figure_id": figure_id,
        "label": f"fig-{figure_id}",
        "title": title,
        "caption": caption,
        **record,
        "files": {fmt: {"name": p.name, "sha256": file_checksum(p)} for fmt, p in files.items()},
        "inputs": [describe_input(p) for p in inputs],
        **extra,
    }
    sidecar.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return FigureRecord(figure_id=figure_id, files=files, sidecar=sidecar, provenance=record)


#: Okabe and Ito's colour-blind-safe palette (orange, sky blue, bluish green, blue, vermillion,
#: reddish purple, yellow, black); every series also gets its own marker from :data:`MARKERS`.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#000000")
#: The marker paired with each colour of :data:`OKABE_ITO` (series stay apart in grey print).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def book_style() -> dict[str, Any]:
    """matplotlib settings of the book's figures: the :data:`OKABE_ITO` colours paired with
    :data:`MARKERS` in the property cycle (colour and marker tell series apart, in colour and in
    grey), and text no smaller than 9 pt."""
    from cycler import cycler

    n = len(OKABE_ITO)
    return {"axes.prop_cycle": cycler(color=list(OKABE_ITO)) + cycler(marker=list(MARKERS[:n])),
            "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9,
            "ytick.labelsize": 9, "legend.fontsize": 9, "lines.markersize": 5}


def use_book_style() -> None:
    """Apply :func:`book_style` to matplotlib's defaults (a notebook calls it once, at the top)."""
    import matplotlib

    matplotlib.rcParams.update(book_style())


def plot_points_by_method(ax: Any, stats: Mapping[str, Mapping[str, Any]], methods: Iterable[str], *,
                          names: Mapping[str, str], group: Any, ylabel: str, title: str,
                          scale: float = 100.0) -> None:
    """Each method's mean ± sd over seeds (a point with an error bar) and every seed (small dots).

    ``stats[m]["values"]``: the per-seed values; ``group(m)`` names the method's group, which sets
    colour and marker (:data:`OKABE_ITO`, :data:`MARKERS`; listed in the legend). Points, not bars:
    the axis need not start at zero to stay honest.
    """
    methods = [m for m in methods if m in stats]
    groups: list[str] = []
    for m in methods:
        if group(m) not in groups:
            groups.append(group(m))
    for i, m in enumerate(methods):
        vals = [scale * v for v in stats[m]["values"] if v is not None]
        if not vals:
            continue
        k = groups.index(group(m))
        mean = sum(vals) / len(vals)
        sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
        label = group(m) if all(group(x) != group(m) for x in methods[:i]) else None
        ax.errorbar(i, mean, yerr=sd, fmt=MARKERS[k % len(MARKERS)], color=OKABE_ITO[k % len(OKABE_ITO)],
                    capsize=3, ms=6, label=label, zorder=3)
        ax.scatter([i + 0.18] * len(vals), vals, s=9, color=OKABE_ITO[k % len(OKABE_ITO)], alpha=0.6,
                   marker=MARKERS[k % len(MARKERS)], zorder=2, linewidths=0)
    ax.set_xticks(range(len(methods)), [names.get(m, m) for m in methods], rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if groups:
        ax.legend(loc="best")


def describe_input(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "sha256", "git_commit", "git_dirty"}`` of one input file of a figure (path relative
    to the repository root where possible; commit and dirty flag from a result file's provenance)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"figure input {str(path)!r} is not a file; pass the result files the figure plots")
    root = Path(__file__).resolve().parent.parent
    try:
        shown = str(path.resolve().relative_to(root))
    except ValueError:
        shown = str(path)
    out: dict[str, Any] = {"path": shown, "sha256": file_checksum(path), "git_commit": None, "git_dirty": None}
    if path.suffix == ".json":
        try:
            prov = json.loads(path.read_text()).get("provenance", {})
        except (json.JSONDecodeError, AttributeError):
            prov = {}
        if isinstance(prov, dict):
            out["git_commit"], out["git_dirty"] = prov.get("git_commit"), prov.get("git_dirty")
    return out


def read_sidecars(directory: str | os.PathLike) -> list[dict]:
    """All figure sidecars in ``directory``, sorted by notebook then identifier.

    Raises
    ------
    ValueError
        If a sidecar is malformed, its identifier does not match its file name, or an image it
        lists is missing or has changed since it was written.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"figure directory {str(directory)!r} does not exist: execute the notebooks first (python -m gca.book execute)")
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"figure sidecar {path} is not valid JSON ({exc}); re-run its notebook") from None
        missing = [k for k in ("figure_id", "notebook", "parameters", "seed", "git_commit", "files", "time") if k not in rec]
        if missing:
            raise ValueError(f"figure sidecar {path} lacks {missing}; it was not written by gca.figures.save_figure")
        if rec["figure_id"] != path.stem:
            raise ValueError(f"figure sidecar {path} names figure {rec['figure_id']!r}; file and identifier must agree")
        for fmt, info in rec["files"].items():
            image = directory / info["name"]
            if not image.exists():
                raise ValueError(f"figure {rec['figure_id']!r}: {image} listed in its sidecar is missing; re-run {rec['notebook']}")
            if file_checksum(image) != info["sha256"]:
                raise ValueError(
                    f"figure {rec['figure_id']!r}: {image} changed after its sidecar was written; re-run {rec['notebook']}"
                )
        records.append(rec)
    records.sort(key=lambda r: (r["notebook"], r["figure_id"]))
    return records


def _notebook_docname(notebook: str, executed_root: str) -> str:
    """Book document of a notebook: its executed copy under ``executed_root`` without suffix."""
    stem = notebook[: -len(".ipynb")] if notebook.endswith(".ipynb") else notebook
    return f"/{executed_root.strip('/')}/{stem}" if executed_root else f"/{stem}"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def figure_index_markdown(
    records: list[dict], *, image_prefix: str, executed_root: str = "build", labels: Iterable[str] | None = None
) -> str:
    """MyST Markdown listing every figure: image, identifier, caption, provenance, how to cite.

    Parameters
    ----------
    records : list of dict
        Sidecars from :func:`read_sidecars`.
    image_prefix : str
        Path from the including page to the figure folder (e.g. ``"../build/figures"``).
    executed_root : str
        Folder (relative to the book root) holding the executed notebooks, for links.
    labels : iterable of str, optional
        Figure labels (``fig-<id>``) that exist in the book. A figure whose label is absent (shown
        inline, without a ``{glue:figure}`` named after it) is linked by its page only. Default: all.
    """
    labels = None if labels is None else set(labels)
    if not records:
        return "No figure has been produced yet: execute the notebooks (`python -m gca.book execute`).\n"
    lines: list[str] = []
    for rec in records:
        fid = rec["figure_id"]
        label = rec.get("label", f"fig-{fid}")
        short = str(rec.get("git_commit", "unknown"))[:12]
        dirty = " (uncommitted changes)" if rec.get("git_dirty") else ""
        title = rec.get("title") or fid
        params = ", ".join(f"`{k}={v!r}`" for k, v in rec["parameters"].items())
        files = " · ".join(
            f"{{download}}`{fmt.upper()} <{image_prefix}/{info['name']}>`" for fmt, info in rec["files"].items()
        )
        lines += [
            f"## `{fid}`: {_md_escape(title)}",
            "",
            f"```{{image}} {image_prefix}/{rec['files']['png']['name']}",
            f":alt: {_md_escape(title)}",
            ":width: 480px",
            "```",
            "",
        ]
        if rec.get("caption"):
            lines += [_md_escape(rec["caption"]), ""]
        lines += [
            f"- **Shown in:** "
            + (f"{{numref}}`Fig. {{number}} <{label}>` of " if labels is None or label in labels else "")
            + f"{{doc}}`{_notebook_docname(rec['notebook'], executed_root)}`",
            f"- **Notebook:** `{rec['notebook']}` with {params or 'no parameters'}; seed `{rec['seed']}`",
            f"- **Code:** gca {rec.get('gca_version', '?')}, commit `{short}`{dirty}; Python {rec.get('python', '?')}",
            f"- **Packages:** " + ", ".join(f"{k} {v}" for k, v in sorted(rec.get("packages", {}).items())),
            f"- **Data checksum:** `{rec.get('data_checksum')}`" if rec.get("data_checksum") else "- **Data:** synthetic (drawn from the seed)",
            f"- **Device:** {rec.get('device', '?')}; **made:** {rec['time']}",
            f"- **Files:** {files} · {{download}}`provenance JSON <{image_prefix}/{fid}.json>`",
            f"- **Cite as:** *gca figure `{fid}`* (gca {rec.get('gca_version', '?')}, commit `{short}`, "
            f"`{rec['notebook']}`, seed {rec['seed']}); see `CITATION.cff` for the project reference.",
            "",
        ]
    return "\n".join(lines)


def write_figure_index(
    directory: str | os.PathLike,
    output: str | os.PathLike,
    *,
    image_prefix: str,
    executed_root: str = "build",
    notebooks: Iterable[str] | None = None,
    labels: Iterable[str] | None = None,
) -> list[dict]:
    """Read the sidecars in ``directory`` (:func:`read_sidecars`) and write
    :func:`figure_index_markdown` to ``output``; returns the sidecars listed.

    ``notebooks``, if given, restricts the index to figures of those notebooks (the book's), so
    that figures left by a notebook outside the book are not published; ``labels`` as in
    :func:`figure_index_markdown`.
    """
    records = read_sidecars(directory)
    if notebooks is not None:
        keep = set(notebooks)
        records = [r for r in records if r["notebook"] in keep]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(figure_index_markdown(records, image_prefix=image_prefix, executed_root=executed_root,
                                            labels=labels))
    return records
