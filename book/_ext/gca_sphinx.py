"""Keep the HTML free of network URLs in scripts.

Jupyter Book always loads ``sphinx_thebe``, which writes the address of the thebe bundle on a CDN
into an inline script of every page, even with thebe disabled (``launch_buttons.thebe: false``,
so nothing would fetch it). This book is read offline and has no live kernels: drop that handler.
"""

from __future__ import annotations


def _drop_thebe(app, config) -> None:
    listeners = app.events.listeners.get("env-before-read-docs", [])
    for listener in list(listeners):
        if getattr(listener.handler, "__module__", "") == "sphinx_thebe" and listener.handler.__name__ == "init_thebe_core":
            app.disconnect(listener.id)


def setup(app):
    app.connect("config-inited", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
