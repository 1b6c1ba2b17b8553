"""gca — Generalised Contrastive Alignment.

Executable companion to *Your contrastive learning problem is secretly a distribution alignment
problem* (Chen, Lin, Liu, Xiao, Dyer; NeurIPS 2024). Modules, one per concept:

- :mod:`gca.methods` — the one registry of method names.
- :mod:`gca.checks` — the input validators shared by the solvers and the losses.
- :mod:`gca.ot` — log-domain balanced / unbalanced Sinkhorn solvers and Bregman projections.
- :mod:`gca.losses` — the loss family (INCE, RINCE, ``GCA-*``, IOT, ...) as configurations of one
  alignment core, with target transport plans (:mod:`gca.losses.targets`) and the registry of
  losses (:mod:`gca.losses.registry`).
- :mod:`gca.data`, :mod:`gca.augment`, :mod:`gca.models` — datasets, batched augmentations, encoders.
- :mod:`gca.train`, :mod:`gca.eval` — pretraining, frozen linear probe, kNN, alignment/uniformity.
- :mod:`gca.study` — the paper's experiments as a study of cached runs (plan, cache, runner, report).
- :mod:`gca.provenance` — what produced a result or a figure.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
