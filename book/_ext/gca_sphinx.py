"""Two adjustments of the Sphinx build for this book (registered in ``_config.yml``).

1. Keep the HTML free of network URLs in scripts. Jupyter Book always loads ``sphinx_thebe``,
   which writes the address of the thebe bundle on a CDN into an inline script of every page, even
   with thebe disabled (``launch_buttons.thebe: false``, so nothing would fetch it). This book is
   read offline and has no live kernels: that handler is dropped. (``gca.book`` checks the HTML.)
2. Attribute docstrings are prose. Napoleon reads the text before the first colon of a data,
   attribute or property docstring as its *type* (Google style: ``"int: The count."``), which turns
   "Per-channel mean in [0, 1]: the published value ..." into a type that cannot be resolved. In
   this project types come from annotations, so napoleon's inline-type parsing is switched off for
   those docstrings by starting them with an empty reST comment (``..``), a first line without a
   colon: napoleon then finds no type, and the comment renders as nothing.
3. No field listed twice. With ``undoc-members`` autodoc lists every annotated field of a
   dataclass as a member, although the class docstring's ``Attributes`` section already documents
   it (``SinkhornResult``, ``LinearProbeResult``, ...). The names in a class's ``Attributes``
   section are remembered when its docstring is processed, and those members are skipped.
4. One description per object. A package's page documents its public API (its ``__all__``) and
   then each of its modules; a module's function or class that an enclosing package re-exports
   (the same object, its name in the package's ``__all__``) is skipped there, so that it is
   described once, under the name users import (``gca.ot.sinkhorn``, not ``gca.ot.solvers.sinkhorn``).
   Constants stay with their module: autodoc documents a module-level value only where its ``#:``
   comment is, and a constant that is read at run time is set there (``gca.losses.core.FAST_PATH``).
"""

from __future__ import annotations

import sys

from sphinx.util.nodes import make_refnode


def _drop_thebe(app, config) -> None:
    listeners = app.events.listeners.get("env-before-read-docs", [])
    for listener in list(listeners):
        handler = listener.handler
        if getattr(handler, "__module__", "") == "sphinx_thebe" and handler.__name__ == "init_thebe_core":
            app.disconnect(listener.id)


def _prose_attribute_docstrings(app, what, name, obj, options, lines) -> None:
    if what in ("data", "attribute", "property") and any(line.strip() for line in lines):
        lines[:0] = ["..", ""]


_documented_attributes: set[str] = set()  # names in the Attributes section of the class being documented


def _remember_attributes(app, what, name, obj, options, lines) -> None:
    if what != "class":
        return
    _documented_attributes.clear()
    for i, line in enumerate(lines):
        if line.strip() == "Attributes" and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            for entry in lines[i + 2:]:
                if entry.strip() and not entry.startswith(" "):
                    if set(entry.strip()) == {"-"}:  # the next section's underline: stop
                        break
                    names = [f.strip() for f in entry.split(":")[0].split(",")]  # "f, g : Tensor"
                    if all(f.isidentifier() for f in names):
                        _documented_attributes.update(names)
                    else:
                        break  # prose after the section ("Lazy properties: ...")
            break


def _skip_documented_fields(app, what, name, obj, skip, options):
    if what == "class" and name in _documented_attributes and not callable(obj) and not isinstance(obj, property):
        return True
    return None


def _skip_reexported(app, what, name, obj, skip, options):
    if what != "module" or not callable(obj):
        return None
    modname = app.env.temp_data.get("autodoc:module") or ""
    parts = modname.split(".")
    for k in range(len(parts) - 1, 0, -1):  # the enclosing packages, innermost first
        package = sys.modules.get(".".join(parts[:k]))
        if package is not None and name in getattr(package, "__all__", ()) and getattr(package, name, None) is obj:
            return True
    return None


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            break
        n += 1
    return n


def _resolve_reexported(app, env, node, contnode):
    """Resolve a short Python reference the domain cannot: an object documented once under the
    package that re-exports it (``gca.data.render_style``) but named from its defining module
    (``render_style``, ``gca.data.loaders.styles.render_style``, ``ImageDataset.mean``). The unique
    documented object with that dotted tail wins, ties broken by the longest shared module prefix;
    anything else stays unresolved (and fails the ``-n`` build)."""
    if node.get("refdomain") != "py" or not node.get("reftarget"):
        return None
    objects = env.get_domain("py").objects
    target = node["reftarget"].lstrip("~.")
    here = node.get("py:module") or ""
    parts = target.split(".")
    candidates = []
    for k in range(len(parts)):  # the target itself, then shorter tails (a moved module path)
        tail = ".".join(parts[k:])
        candidates = [name for name in objects if name == tail or name.endswith("." + tail)]
        if candidates:
            break
    if not candidates:
        return None
    best = max(_common_prefix(name, here) for name in candidates)
    candidates = [name for name in candidates if _common_prefix(name, here) == best]
    if len(candidates) != 1:
        return None
    entry = objects[candidates[0]]
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, candidates[0])


def _person_last_name(person) -> str:
    """A bibliography person's last name as plain text (LaTeX accents decoded, braces dropped)."""
    import latexcodec  # noqa: F401 - registers the "latex" codec

    raw = " ".join(person.prelast_names + person.last_names)
    try:
        raw = raw.encode("utf-8").decode("latex")
    except (UnicodeError, ValueError):
        pass
    return raw.replace("{", "").replace("}", "")


def author_year_label(entry) -> str:
    """``Cuturi, 2013`` / ``Peyré and Cuturi, 2019`` / ``Chen et al., 2024``: the label of ``entry``
    in the bibliography, as the text cites it (``bibtex_reference_style: author_year``)."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_person_last_name(p) for p in persons]
    if not names:
        who = entry.fields.get("organization") or entry.key
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


def _register_author_year_style() -> None:
    """pybtex style ``authoryear``: the plain style with author–year labels (not [1], [2], ...)."""
    from pybtex.plugin import register_plugin
    from pybtex.style.formatting.plain import Style as PlainStyle
    from pybtex.style.labels import BaseLabelStyle

    class AuthorYearLabels(BaseLabelStyle):
        def format_labels(self, sorted_entries):
            for entry in sorted_entries:
                yield author_year_label(entry)

    class AuthorYearStyle(PlainStyle):
        default_label_style = "authoryear"
        default_sorting_style = "author_year_title"

    register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabels, force=True)
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle, force=True)


def setup(app):
    _register_author_year_style()
    app.connect("config-inited", _drop_thebe, priority=900)
    # Before napoleon's handler (default priority 500).
    app.connect("autodoc-process-docstring", _prose_attribute_docstrings, priority=400)
    app.connect("autodoc-process-docstring", _remember_attributes, priority=300)  # raw numpy-style lines
    app.connect("autodoc-skip-member", _skip_documented_fields)
    app.connect("autodoc-skip-member", _skip_reexported)
    app.connect("missing-reference", _resolve_reexported)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
