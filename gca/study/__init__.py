"""The paper's experiments (spec §5) as a study of cached runs.

One module per concern, lower layers first (none imports a later one):

- :mod:`gca.study.paths` — where results, run directories and data live.
- :mod:`gca.study.paper` — the paper's reported numbers.
- :mod:`gca.study.plan` — study profiles (and how they relate to configuration and book
  profiles), :class:`~gca.study.plan.RunSpec`, the runs of the study as declarative blocks.
- :mod:`gca.study.fingerprint` — the code a result was computed with, as a set of code hashes
  that survives moving and renaming code; which modules count (declared once).
- :mod:`gca.study.cache` — result keys, files, claims; whether a result is current (code and data).
- :mod:`gca.study.run` — computing one run and a notebook page's runs
  (:func:`~gca.study.run.get_results`).
- :mod:`gca.study.runner` — the study runner and the command line (``python -m gca.experiments``),
  including ``verify`` (recompute a sample elsewhere).
- :mod:`gca.study.report` — the experiment pages' summaries (verdicts come from the ledger).
- :mod:`gca.study.cost` — step times measured side by side, and saved-tensor memory.
- :mod:`gca.study.stats` — paired and Welch comparisons, Holm, the exact minimum detectable effect,
  the pre-registered verdict rule.
- :mod:`gca.study.claims` — the pre-registration, collapse / failed-to-train exclusions and the
  claims ledger ``results/<profile>/claims.json``.
"""
