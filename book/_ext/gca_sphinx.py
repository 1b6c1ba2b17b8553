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
"""

from __future__ import annotations


def _drop_thebe(app, config) -> None:
    listeners = app.events.listeners.get("env-before-read-docs", [])
    for listener in list(listeners):
        handler = listener.handler
        if getattr(handler, "__module__", "") == "sphinx_thebe" and handler.__name__ == "init_thebe_core":
            app.disconnect(listener.id)


def _prose_attribute_docstrings(app, what, name, obj, options, lines) -> None:
    if what in ("data", "attribute", "property") and any(line.strip() for line in lines):
        lines[:0] = ["..", ""]


def setup(app):
    app.connect("config-inited", _drop_thebe, priority=900)
    # Before napoleon's handler (default priority 500).
    app.connect("autodoc-process-docstring", _prose_attribute_docstrings, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
