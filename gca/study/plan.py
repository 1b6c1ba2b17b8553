"""The study: its profiles and its runs (spec §5), as data.

Profiles — three names, three meanings
--------------------------------------
This is the one place that relates them.

- A **configuration profile** (``gca.config.PROFILES``, listed by ``gca profiles``: ``smoke``,
  ``cpu``, ``paper``) sets the options of *one* training run (``gca pretrain --profile cpu``:
  width 32, 30 epochs, ...).
- A **study profile** (:data:`STUDY_PROFILES`, this module) is a whole set of runs. Each one
  starts from a configuration profile and overrides some options for *every* run of the study,
  so that the whole study fits its machine. The study profile ``cpu`` is therefore *smaller*
  than the configuration profile ``cpu``: it starts from it and sets width 16, 10 epochs,
  16 px views and a probe fitted on 20 000 training images (:class:`StudyProfile` ``overrides``), so
  that the whole study fits a two-core machine. ``smoke`` does the same for CI; ``paper`` changes nothing.
- A **book profile** (:data:`gca.book.BOOK_PROFILES`: ``smoke``, ``default``, ``full``) is how
  large the notebooks compute; each book profile shows one study profile
  (:class:`StudyProfile` ``book_profile``; :func:`study_profile` maps either name).

``smoke``: sklearn digits (40 images per class), tiny network, 2 epochs (CI: every notebook in
well under a minute). ``cpu``: the study shown in the book — CIFAR-10 (JPEG copy), a
class-balanced subset of 500 training images per class, views and evaluation at 16×16 px, the
small convolutional backbone (width 16, feature dimension 64), batch 256, 10 epochs, one CPU
thread per run, evaluated on all 10 000 test images; the domain-prior sweep on ``cifar10-styles``
(CIFAR-10 rendered in four styles, the offline stand-in for PACS). Its design and sample sizes are
``results/cpu/preregistration.yaml``. ``paper``: the paper's configuration (GPU).

Runs
----
The runs of a study are :data:`BLOCKS`, small declarative entries (:class:`Block`): an
experiment, its methods, which seeds, its overrides or sweep, and a priority (lower runs first).
:func:`study_plan` expands them for a profile. To add an experiment, add a block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

from gca.config import resolve_config
from gca.data import is_available
from gca.methods import METHOD_NAMES, get_method
from gca.study.paths import use_repo_data_dir

__all__ = [
    "StudyProfile",
    "STUDY_PROFILES",
    "STUDY_METHODS",
    "Block",
    "BLOCKS",
    "EXPERIMENTS",
    "EXTRA_NOISY",
    "RunSpec",
    "study_profile",
    "study_settings",
    "study_plan",
    "resolve_spec",
]


@dataclass(frozen=True)
class StudyProfile:
    """Settings of one study profile (see the module docstring).

    Attributes
    ----------
    name
        The study profile (``results/<name>/``).
    book_profile
        The book profile whose notebooks show this study.
    config_profile
        The configuration profile every run starts from (``gca.config.PROFILES``).
    overrides
        Options set for every run on top of ``config_profile`` (dotted, as on the command line).
    seeds
        The seeds of the study (shifted by :func:`study_plan`'s ``seed``).
    noisy_augment
        The noisy-view augmentation of the ``noisy`` panel (spec §5.2).
    corruptions
        The test-time corruptions evaluated in the noisy panels.
    domain_dataset
        The multi-domain dataset of the domain-prior sweep (spec §5.3).
    domain_overrides
        Options of the domain-prior runs on top of ``overrides``.
    ablation_iters
        The Sinkhorn iterations of the GCA-INCE ablation (spec §5.4).
    ablation_eps
        The ε values of the GCA-INCE ablation.
    alpha_minus_beta
        The α − β values of the domain-prior sweep.
    domain_forms
        The domain prior's parametrisations (``gca.losses.targets``).
    extra_seeds
        Run sets that get more seeds than their block's family, ``"experiment/method" → seeds``:
        the pre-registration's re-estimated sample sizes (``sample_sizes.<family>.re_estimated``).
    """

    name: str
    book_profile: str
    config_profile: str
    overrides: Mapping[str, Any]
    seeds: Mapping[str, int]
    noisy_augment: str
    corruptions: tuple[str, ...]
    domain_dataset: str
    domain_overrides: Mapping[str, Any]
    ablation_iters: tuple[int, ...]
    ablation_eps: tuple[float, ...]
    alpha_minus_beta: tuple[float, ...]
    domain_forms: tuple[str, ...] = ("per-entry", "row-mass")
    extra_seeds: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("overrides", "domain_overrides", "seeds", "extra_seeds"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        if set(self.seeds) != set(FAMILIES) or any(n < 1 for n in self.seeds.values()):
            raise ValueError(f"seeds={dict(self.seeds)!r} must give a count >= 1 for each of {FAMILIES}")
        for run_set, n in self.extra_seeds.items():
            if not isinstance(run_set, str) or run_set.count("/") != 1:
                raise ValueError(f"extra_seeds key {run_set!r} must be 'experiment/method'")
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"extra_seeds[{run_set!r}] = {n!r} must be a whole number >= 1")

    @property
    def max_seeds(self) -> int:
        """The most seeds any run set of this profile gets."""
        return max([*self.seeds.values(), *self.extra_seeds.values()])


#: The families of comparisons (pre-registration), each with its number of seeds.
FAMILIES = ("primary", "secondary", "exploratory")
#: One computed corruption per CIFAR-10-C family (noise, blur, weather, digital x2), severity 5.
_CORRUPTIONS_CPU = ("gaussian_noise", "defocus_blur", "brightness", "contrast", "jpeg_compression")
_CORRUPTIONS_ALL = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
                    "defocus_blur", "brightness", "contrast", "saturate", "pixelate", "jpeg_compression")
_AMB_ALL = (-0.5, -0.2, -0.1, -0.05, -0.02, 0.0, 0.02, 0.05, 0.1, 0.2, 0.5)

#: The study profiles (see the module docstring).
STUDY_PROFILES: Mapping[str, StudyProfile] = MappingProxyType({p.name: p for p in (
    StudyProfile(
        name="smoke", book_profile="smoke", config_profile="smoke",
        overrides={
            "data.n_per_class": 40, "data.test_n_per_class": 30,
            "train.epochs": 2, "train.batch_size": 128, "train.threads": 1, "train.device": "cpu",
            "optim.warmup_epochs": 0.5,
            "eval.probe_weight_decays": (1e-3, 1e-2), "eval.probe_max_iter": 100, "eval.knn_k": 10,
        },
        seeds={"primary": 2, "secondary": 1, "exploratory": 1},
        noisy_augment="large_erase", corruptions=("gaussian_noise", "contrast"),
        domain_dataset="rotated-digits", domain_overrides={},
        ablation_iters=(1, 5), ablation_eps=(0.2, 1.0), alpha_minus_beta=(-0.5, 0.0, 0.5),
    ),
    StudyProfile(
        name="cpu", book_profile="default", config_profile="cpu",
        # The pre-registered configuration (results/cpu/preregistration.yaml, pilot A): 500 training
        # images per class, 16 px, width 16, 10 epochs; the probe on a fixed 20 000-image training set,
        # the test on all 10 000 test images.
        overrides={
            "data.n_per_class": 500, "data.test_n_per_class": None, "data.image_size": 16,
            "model.width": 16, "model.projector_hidden_dim": 512, "model.projector_out_dim": 128,
            "train.epochs": 10, "train.batch_size": 256, "train.threads": 1, "train.device": "cpu",
            "train.checkpoint_every": 5, "optim.warmup_epochs": 1.0,
            "eval.knn_k": 50, "eval.probe_train_per_class": 2000,
        },
        seeds={"primary": 8, "secondary": 4, "exploratory": 3},
        # Pre-registration v4: the primary comparisons whose interim MDE missed 1.0 point get the
        # seeds re-estimated from their interim sd (sample_sizes.<family>.re_estimated); the
        # untrained floor covers every seed, as the failed-to-train rule compares per seed.
        # Version 5: the secondary family re-estimated by the same rule; the two pairs of
        # noisy RINCE/INCE excluded by the failed-to-train rule replaced once.
        extra_seeds={"standard/ince": 19, "standard/gca-ince": 19, "noisy/ince": 31, "noisy/rince": 31,
                     "standard/untrained": 31,
                     "standard/rince": 9, "standard/gca-rince": 9, "standard/byol": 6, "noisy/gca-ince": 5,
                     "noisy/gca-rince": 14, "noisy/gca-rince-authors": 6, "noisy/gca-uot": 7},
        noisy_augment="large_erase", corruptions=_CORRUPTIONS_CPU,
        domain_dataset="cifar10-styles", domain_overrides={},
        ablation_iters=(1, 3, 5), ablation_eps=(0.1, 0.2, 1.0),
        alpha_minus_beta=(-0.5, 0.0, 0.5),
    ),
    StudyProfile(
        name="paper", book_profile="full", config_profile="paper", overrides={},
        seeds={"primary": 3, "secondary": 3, "exploratory": 3},
        noisy_augment="large_erase", corruptions=_CORRUPTIONS_ALL,
        domain_dataset="pacs", domain_overrides={},
        ablation_iters=(1, 3, 5, 7, 9, 11), ablation_eps=(0.1, 0.2, 0.4, 0.6, 0.8, 1.0),
        alpha_minus_beta=_AMB_ALL,
    ),
)})



def study_profile(profile: str) -> str:
    """The study profile named by ``profile``: a study profile itself or a book profile (``default`` → ``cpu``)."""
    if profile in STUDY_PROFILES:
        return profile
    for p in STUDY_PROFILES.values():
        if p.book_profile == profile:
            return p.name
    raise ValueError(f"profile={profile!r} is unknown: choose a study profile {tuple(STUDY_PROFILES)} "
                     f"or a book profile {tuple(p.book_profile for p in STUDY_PROFILES.values())}")


def study_settings(profile: str) -> StudyProfile:
    """The settings of study profile ``profile`` (or of the one a book profile shows)."""
    return STUDY_PROFILES[study_profile(profile)]


# --------------------------------------------------------------------------------------------
# The runs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """A block of runs: every method × every seed of its family × every point of ``sweep``.

    Attributes
    ----------
    experiment : str
        The panel the runs belong to (``results/<profile>/<experiment>/``).
    methods : tuple of str
        The methods run.
    family : str
        Whose number of seeds the block gets (``StudyProfile.seeds``): ``"primary"``,
        ``"secondary"``, ``"exploratory"``, or ``"first"`` (seed 0 only).
    priority : int
        Lower runs first; the runs of one seed go together, seed by seed.
    overrides : callable, optional
        Options of every run, from the profile (``None``: none).
    sweep : callable, optional
        ``(tag, options)`` per point of a sweep, from the profile (``None``: one point, no tag).
    analysis : str, optional
        An analysis of the trained encoder (``"plans"``).
    """

    experiment: str
    methods: tuple[str, ...]
    family: str
    priority: int
    overrides: Callable[[StudyProfile], Mapping[str, Any]] | None = None
    sweep: Callable[[StudyProfile], Sequence[tuple[str, Mapping[str, Any]]]] | None = None
    analysis: str | None = None

    def __post_init__(self):
        if self.family not in FAMILIES + ("first",):
            raise ValueError(f"Block.family={self.family!r} must be one of {FAMILIES + ('first',)}")
        for m in self.methods:
            if get_method(m).same_as is not None:
                raise ValueError(f"Block method {m!r} equals {get_method(m).same_as!r} by definition: run that "
                                 "one (the study reports it under both labels)")


def _noisy(p: StudyProfile) -> dict[str, Any]:
    """The noisy-view panel: the noisy augmentation; clean and corrupted test sets (and the published
    CIFAR-10-C files when they are present)."""
    ov = {"data.augment": p.noisy_augment, "eval.corruptions": tuple(p.corruptions)}
    if is_available("cifar10-c"):
        ov["eval.cifar10c_corruptions"] = ("all",)
    return ov


def _augment(augment: str) -> Callable[[StudyProfile], dict[str, Any]]:
    return lambda p: {"data.augment": augment}


def _domain_data(p: StudyProfile) -> dict[str, Any]:
    return {"data.dataset": p.domain_dataset, **p.domain_overrides}


def _domain_sweep(p: StudyProfile) -> list[tuple[str, dict[str, Any]]]:
    """The domain prior (spec §5.3) in each form at each α − β: α = max(d, 0), β = max(−d, 0)."""
    return [(f"{form},a-b={d:g}", {"data.dataset": p.domain_dataset, **p.domain_overrides,
                                   "loss.target": "domain_prior", "loss.target_form": form,
                                   "loss.target_alpha": max(d, 0.0), "loss.target_beta": max(-d, 0.0)})
            for form in p.domain_forms for d in p.alpha_minus_beta]


def _iters_sweep(p: StudyProfile) -> list[tuple[str, dict[str, Any]]]:
    return [(f"T={t}", {"loss.hparams.n_iter": t}) for t in p.ablation_iters]


def _eps_sweep(p: StudyProfile) -> list[tuple[str, dict[str, Any]]]:
    return [(f"eps={e:g}", {"loss.hparams.epsilon": e}) for e in p.ablation_eps]


#: The paper's other two noisy-view augmentations (spec §5.2).
EXTRA_NOISY: Mapping[str, str] = MappingProxyType({"noisy_strong_crop": "strong_crop",
                                                   "noisy_brightness": "brightness"})

#: Every run of the study, most important first: the calibration floor, the primary comparisons
#: with all their seeds, the secondary ones, then the exploratory panels (the pre-registration's
#: families, results/cpu/preregistration.yaml). SimCLR ≡ INCE and IOT ≡ GCA-INCE are run once
#: (gca.methods ``same_as``) and reported under both labels.
BLOCKS: tuple[Block, ...] = (
    Block("standard", ("untrained",), "primary", 5),
    Block("standard", ("ince", "gca-ince", "gca-uot"), "primary", 10),
    Block("noisy", ("ince", "rince", "rince-authors"), "primary", 20, overrides=_noisy),
    Block("standard", ("supervised", "rince", "gca-rince", "iot-uni", "byol"), "secondary", 30),
    Block("noisy", ("gca-ince", "gca-rince", "gca-rince-authors", "gca-uot"), "secondary", 40, overrides=_noisy),
    *(Block(exp, ("ince", "rince", "gca-uot"), "exploratory", 50, overrides=_augment(aug))
      for exp, aug in EXTRA_NOISY.items()),
    Block("domain_prior", ("untrained",), "exploratory", 60, overrides=_domain_data),  # the floor on that data
    Block("domain_prior", ("gca-ince",), "exploratory", 60, sweep=_domain_sweep),
    Block("ablation_iters", ("gca-ince",), "exploratory", 70, sweep=_iters_sweep),
    Block("ablation_eps", ("gca-ince",), "exploratory", 70, sweep=_eps_sweep),
    Block("plans", ("gca-uot",), "first", 80, analysis="plans"),
)

#: The methods of the study (every method some block runs, in registry order).
STUDY_METHODS: tuple[str, ...] = tuple(m for m in METHOD_NAMES if any(m in b.methods for b in BLOCKS))

#: The experiments (panels) of the study.
EXPERIMENTS: tuple[str, ...] = tuple(dict.fromkeys(b.experiment for b in BLOCKS))
#: Analyses a run may add (:func:`gca.study.run.run_one`).
ANALYSES = (None, "plans")


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: ``experiment`` (a panel, e.g. ``"standard"``), ``method``, ``seed``,
    ``overrides`` on top of the study profile, an optional ``analysis`` of the trained encoder
    (``"plans"``), a ``tag`` naming the setting inside the panel (e.g. ``"T=5"``) and a ``priority``
    (lower runs first)."""

    experiment: str
    method: str
    seed: int = 0
    overrides: tuple = ()
    analysis: str | None = None
    tag: str = ""
    priority: int = 100

    def __post_init__(self):
        if self.experiment not in EXPERIMENTS:
            raise ValueError(f"experiment={self.experiment!r} is unknown; choose one of {EXPERIMENTS}")
        try:
            get_method(self.method)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"method={self.method!r}: {exc}") from None
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be a non-negative int")
        if isinstance(self.overrides, Mapping):
            object.__setattr__(self, "overrides", tuple(sorted(self.overrides.items())))
        if self.analysis not in ANALYSES:
            raise ValueError(f"analysis={self.analysis!r} must be one of {ANALYSES}")

    @property
    def label(self) -> str:
        """Readable name, e.g. ``"ablation_iters/gca-ince [T=5] seed 0"``."""
        tag = f" [{self.tag}]" if self.tag else ""
        return f"{self.experiment}/{self.method}{tag} seed {self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (inverse: :meth:`from_dict`)."""
        return {"experiment": self.experiment, "method": self.method, "seed": self.seed,
                "overrides": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.overrides},
                "analysis": self.analysis, "tag": self.tag, "priority": self.priority}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        """The spec of :meth:`to_dict`'s output."""
        ov = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(d.get("overrides", {})).items()}
        return cls(d["experiment"], d["method"], int(d.get("seed", 0)), tuple(sorted(ov.items())),
                   d.get("analysis"), d.get("tag", ""), int(d.get("priority", 100)))


def _n_seeds(block: Block, method: str, p: StudyProfile) -> int:
    """How many seeds ``method`` gets in ``block``: its family's, or more (``extra_seeds``)."""
    if block.family == "first":
        return 1
    return max(p.seeds[block.family], p.extra_seeds.get(f"{block.experiment}/{method}", 0))


def study_plan(profile: str, experiments: Iterable[str] | None = None, *, seed: int = 0) -> list[RunSpec]:
    """Every run of the study under ``profile`` (:data:`BLOCKS`), most important first.
    ``seed`` shifts the study's seeds (``seed, seed + 1, ...``; the committed results use 0)."""
    p = study_settings(profile)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative int")
    wanted = None
    if experiments is not None:
        wanted = set(experiments)
        unknown = wanted - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"unknown experiments {sorted(unknown)}; choose from {EXPERIMENTS}")
    use_repo_data_dir()  # where _noisy looks for the CIFAR-10-C files
    seeds = tuple(seed + k for k in range(p.max_seeds))
    order: list[tuple[tuple[int, int, int, int], RunSpec]] = []
    for b, block in enumerate(BLOCKS):
        if wanted is not None and block.experiment not in wanted:
            continue
        base = dict(block.overrides(p)) if block.overrides else {}
        points = block.sweep(p) if block.sweep else [("", {})]
        n_seeds = {m: _n_seeds(block, m, p) for m in block.methods}
        for k, s in enumerate(seeds[:max(n_seeds.values())]):
            priority = block.priority
            for tag, point in points:
                for m in (m for m in block.methods if k < n_seeds[m]):
                    spec = RunSpec(block.experiment, m, s, {**base, **point}, block.analysis, tag, priority)
                    # ties: the runs of one seed together, then block order
                    order.append(((priority, k, b, len(order)), spec))
    return [spec for _, spec in sorted(order, key=lambda item: item[0])]


def resolve_spec(spec: RunSpec, profile: str):
    """The full :class:`~gca.config.RunConfig` of ``spec`` under study ``profile``."""
    p = study_settings(profile)
    overrides = dict(p.overrides)
    overrides.update(dict(spec.overrides))
    overrides["train.seed"] = spec.seed
    overrides["eval.seed"] = spec.seed
    return resolve_config(p.config_profile, method=spec.method, overrides=overrides)
