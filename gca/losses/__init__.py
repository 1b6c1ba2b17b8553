r"""The contrastive loss family as configurations of one alignment core (paper §2–§4).

.. code-block:: python

    from gca.losses import make_loss
    loss = make_loss("gca-uot")          # the authors' CIFAR-10 defaults
    value = loss(z1, z2)                 # z1, z2: (B, d) embeddings of two views

Layout of the package (one stage of the pipeline per module; lower stages never import higher ones):

- :mod:`gca.losses.core` — the alignment core :func:`alignment` and its result :class:`Alignment`
  (the table of configurations is in its docstring), the fast-path switch :data:`~gca.losses.core.FAST_PATH`;
- :mod:`gca.losses.cost` — similarity → layout → cost ``C/ε``;
- :mod:`gca.losses.constraints` — the constraint set: the plan's potentials through :mod:`gca.ot`;
- :mod:`gca.losses.fused` — the fast path of the iterated constraints on cosine kernels;
- :mod:`gca.losses.divergences` — the outer divergences (KL, RINCE-type, power of the mean, uniformity);
- :mod:`gca.losses.targets` — target plans (positive pairs, supervised, domain prior, custom);
- :mod:`gca.losses.named` — the named losses, functional API;
- :mod:`gca.losses.registry` — name → function, ``nn.Module`` class, hyper-parameters and defaults;
  :func:`make_loss`.
"""

from ..checks import GRAD_MODES
from .core import FAST_PATH, Alignment, alignment, fast_path_enabled
from .divergences import AlignmentOverflowError
from .named import (gca_ince_loss, gca_rince_authors_loss, gca_rince_loss, gca_uot_loss, ince_loss, iot_loss,
                    iot_uni_loss, rince_authors_loss, rince_loss, simclr_loss)
from .registry import (LOSS_NAMES, LOSSES, AlignmentLoss, GCAINCELoss, GCARINCEAuthorsLoss, GCARINCELoss, GCAUOTLoss,
                       INCELoss, IOTLoss, IOTUniLoss, LossSpec, RINCEAuthorsLoss, RINCELoss, SimCLRLoss, make_loss)

__all__ = [
    "LOSS_NAMES",
    "LOSSES",
    "LossSpec",
    "GRAD_MODES",
    "AlignmentOverflowError",
    "Alignment",
    "alignment",
    "FAST_PATH",
    "fast_path_enabled",
    "simclr_loss",
    "ince_loss",
    "rince_loss",
    "rince_authors_loss",
    "gca_ince_loss",
    "gca_rince_loss",
    "gca_rince_authors_loss",
    "gca_uot_loss",
    "iot_loss",
    "iot_uni_loss",
    "AlignmentLoss",
    "SimCLRLoss",
    "INCELoss",
    "RINCELoss",
    "RINCEAuthorsLoss",
    "GCAINCELoss",
    "GCARINCELoss",
    "GCARINCEAuthorsLoss",
    "GCAUOTLoss",
    "IOTLoss",
    "IOTUniLoss",
    "make_loss",
]
