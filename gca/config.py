"""Run configuration: dataclasses, profiles (``smoke``, ``cpu``, ``paper``) and overrides.

A :class:`RunConfig` has six sections — ``data``, ``model``, ``loss``, ``optim``, ``train``,
``eval`` — each a dataclass with documented defaults. :func:`resolve_config` builds one from a
profile, then applies ``method`` / ``dataset`` and dotted overrides such as ``"train.epochs=5"``,
``"optim.lr=0.1"`` or ``"loss.hparams.epsilon=0.3"`` (any keyword of
:func:`gca.losses.make_loss`). Unknown keys and invalid values raise :class:`ValueError` naming the
bad key or value and what is allowed.

Profiles
--------
``smoke``
    sklearn digits (8×8, 1 channel), the small backbone, a few epochs: seconds to a minute on a
    CPU; what CI runs.
``cpu``
    The CPU-scale study: a class-balanced CIFAR-10 subset, the small backbone, tens of epochs.
``paper``
    The paper's configuration (§5): ResNet-18 with the CIFAR stem, projector 512→2048→128 without
    bias, batch 512, 500 epochs, SGD (Nesterov, momentum 0.9, weight decay 1e-6), cosine schedule
    stepped per iteration; ImageNet-100 switches to ResNet-50 with the standard stem, 224 px,
    batch 128, 200 epochs. The base learning rate is not recoverable from the paper; 0.2 is the
    rate hard-wired in the authors' code (see ``official-code.md`` item 8). Meant for a GPU.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from gca.methods import get_method, method_names

__all__ = [
    "METHODS",
    "PROFILES",
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "OptimConfig",
    "TrainConfig",
    "EvalConfig",
    "RunConfig",
    "resolve_config",
    "apply_overrides",
    "parse_override",
    "config_to_dict",
    "config_from_dict",
    "validate_config",
    "run_config_hash",
]

#: The methods a run can be configured with: every name of :mod:`gca.methods` (the losses of
#: :func:`gca.losses.make_loss`, ``"byol"`` and the study's calibration rows).
METHODS = method_names("alignment", "byol", "calibration")


@dataclass
class DataConfig:
    """What to train on.

    dataset: a name of ``gca.data.DATASETS``. data_dir: data root (``None``: ``$GCA_DATA_DIR``
    else ``./data``). n_per_class: class-balanced training subset size per class (``None``: all).
    test_n_per_class: same for the test split. augment: pretraining augmentation
    (:func:`gca.augment.build_augment`). image_size: side of the augmented views (``None``:
    the dataset's own size). load_kwargs: extra keywords for :func:`gca.data.load_dataset`.
    """

    dataset: str = "cifar10"
    data_dir: str | None = None
    n_per_class: int | None = None
    test_n_per_class: int | None = None
    augment: str = "simclr"
    image_size: int | None = None
    load_kwargs: dict = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Encoder and heads (:func:`gca.models.build_model`). width ``None``: the backbone's default;
    in_channels ``None``: taken from the dataset (the run's ``config.json`` records the value used).

    BYOL only: ``predictor_hidden_dim``, and ``byol_projector_batch_norm`` — BYOL's projector gets
    BatchNorm after its hidden layer, as in Grill et al. (2020), whatever ``projector_batch_norm``
    says. Every profile sets it: without it BYOL collapsed at the study's CPU scale (linear probe
    25.2 % against 30.4 % for the untrained encoder, projection uniformity −0.05); with it, 34.4 %
    (see :class:`gca.train.objectives.BYOLMethod`). The dataclass default ``False`` is what runs
    written before this option were trained with, so their directories still load.
    """

    backbone: str = "resnet18"
    stem: str = "cifar"
    width: int | None = None
    norm: str = "batch"
    in_channels: int | None = None
    projector_hidden_dim: int = 2048
    projector_out_dim: int = 128
    projector_bias: bool = False
    projector_batch_norm: bool = False
    predictor_hidden_dim: int = 512
    byol_projector_batch_norm: bool = False


@dataclass
class LossConfig:
    """Pretraining objective: ``method`` in :data:`METHODS`; ``hparams`` are passed verbatim to
    :func:`gca.losses.make_loss` (its defaults are the paper's: ε = 0.5, 10 iterations, ...).
    BYOL: ``ema_base`` is the target decay τ_base of the cosine EMA schedule.

    ``target`` is the target plan of every batch (paper §4, "Custom targets"): ``"positive"``
    (the permutation Π of positive pairs), ``"domain_prior"``
    (:func:`gca.losses.targets.domain_prior_plan` of the batch's domain labels with ``target_alpha``,
    ``target_beta``, in the form ``target_form`` — ``"per-entry"`` (the spec's) or ``"row-mass"``
    (the prior's share of each row fixed at ``target_mass``); needs a multi-domain dataset) or ``"supervised"``
    (:func:`gca.losses.targets.supervised_plan` of the batch's class labels)."""

    method: str = "gca-uot"
    hparams: dict = field(default_factory=dict)
    ema_base: float = 0.996
    target: str = "positive"
    target_alpha: float = 0.0
    target_beta: float = 0.0
    target_form: str = "per-entry"
    target_mass: float = 0.2


@dataclass
class OptimConfig:
    """Optimiser: ``name`` ``"sgd"`` (momentum, Nesterov) or ``"adam"``; learning rate ``lr`` at
    the end of a linear warm-up of ``warmup_epochs`` (fractional allowed), then ``schedule``
    ``"cosine"`` down to ``final_lr_fraction * lr`` or ``"constant"``; all stepped per iteration."""

    name: str = "sgd"
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-6
    adam_betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"
    warmup_epochs: float = 10.0
    final_lr_fraction: float = 0.0


@dataclass
class TrainConfig:
    """Loop settings. amp: mixed precision on CUDA (ignored on CPU) with ``amp_dtype``;
    deterministic: ``torch.use_deterministic_algorithms`` (CPU runs are then bit-reproducible);
    checkpoint_every: epochs between atomic checkpoints (one is always written at the end);
    log_every: steps between streamed step metrics; device: ``auto`` (CUDA if present), ``cpu``,
    ``cuda`` or ``cuda:N``; threads: CPU threads (``None``: torch's default); sync_batchnorm:
    SyncBatchNorm across GPUs under DDP; num_workers: decoding processes for lazy (folder) datasets."""

    epochs: int = 500
    batch_size: int = 512
    seed: int = 0
    deterministic: bool = True
    amp: bool = True
    amp_dtype: str = "bfloat16"
    checkpoint_every: int = 10
    log_every: int = 50
    device: str = "auto"
    threads: int | None = None
    sync_batchnorm: bool = True
    num_workers: int = 4


@dataclass
class EvalConfig:
    """Frozen-encoder evaluation (:mod:`gca.eval`). The linear probe's weight decay is chosen from
    ``probe_weight_decays`` on a validation split (``val_fraction`` of the probe's training set),
    then refitted on the whole probe training set and reported once on test. kNN: Wu et al. (2018)
    weighted vote with ``knn_k`` neighbours and temperature ``knn_temperature``. corruptions: names
    for :func:`gca.augment.corrupt` evaluated at ``corruption_severities``; cifar10c_corruptions:
    names of the real CIFAR-10-C files (or ``all``) evaluated at the same severities, when present.

    probe_train_per_class: the probe and kNN are fitted on this many images per class of the whole
    training split, drawn with ``probe_train_seed`` — one fixed set for every run, independent of
    ``train.seed`` and of the pretraining subset, which it may overlap (as standard linear
    evaluation fits on the whole training set) — or, when ``None``, on the pretraining subset
    (``data.n_per_class``). The test set is ``data.test_n_per_class`` (``None``: the whole split).
    seed: validation split of the probe and the augmentations of the alignment/uniformity views."""

    batch_size: int = 512
    val_fraction: float = 0.1
    probe_train_per_class: int | None = None
    probe_train_seed: int = 1000
    probe_weight_decays: tuple[float, ...] = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    probe_max_iter: int = 300
    knn_k: int = 200
    knn_temperature: float = 0.07
    align_alpha: float = 2.0
    uniform_t: float = 2.0
    corruptions: tuple[str, ...] = ()
    corruption_severities: tuple[int, ...] = (5,)
    cifar10c_corruptions: tuple[str, ...] = ()
    seed: int = 0


@dataclass
class RunConfig:
    """Everything that defines a pretraining + evaluation run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    profile: str = "paper"


_SECTIONS = ("data", "model", "loss", "optim", "train", "eval")

# Profiles are override dictionaries applied on top of the dataclass defaults (= the paper's setup).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "data.dataset": "digits",
        "data.augment": "simclr",
        "model.backbone": "small",
        "model.width": 8,
        "model.projector_hidden_dim": 256,
        "model.projector_out_dim": 64,
        "model.predictor_hidden_dim": 128,
        "model.byol_projector_batch_norm": True,  # BYOL learns only with it at CPU scale (ModelConfig)
        "optim.name": "adam",
        "optim.lr": 2e-3,
        "optim.weight_decay": 1e-6,
        "optim.warmup_epochs": 1.0,
        "train.epochs": 30,
        "train.batch_size": 256,
        "train.checkpoint_every": 10,
        "train.log_every": 10,
        "train.threads": 1,  # tiny convolutions: one thread is fastest, and immune to busy cores
        "eval.probe_max_iter": 200,
        "eval.knn_k": 20,
    },
    "cpu": {
        "data.dataset": "cifar10",
        "data.n_per_class": 500,
        "data.test_n_per_class": 200,
        "model.backbone": "small",
        "model.width": 32,
        "model.projector_hidden_dim": 512,
        "model.projector_out_dim": 128,
        "model.predictor_hidden_dim": 256,
        "model.byol_projector_batch_norm": True,  # BYOL learns only with it at CPU scale (ModelConfig)
        "optim.name": "sgd",
        "optim.lr": 0.3,
        "optim.warmup_epochs": 2.0,
        "train.epochs": 30,
        "train.batch_size": 256,
        "train.checkpoint_every": 5,
        "eval.knn_k": 50,
    },
    "paper": {
        # GPU speed: cuDNN autotuning instead of deterministic kernels (CPU runs of the other
        # profiles stay bit-reproducible).
        "train.deterministic": False,
        "model.byol_projector_batch_norm": True,  # Grill et al. (2020)'s projector
    },
}

# Dataset-specific changes of the paper profile (paper §5).
_PAPER_DATASET_OVERRIDES: dict[str, dict[str, Any]] = {
    "imagenet100": {
        "model.backbone": "resnet50",
        "model.stem": "imagenet",
        "data.image_size": 224,
        "train.batch_size": 128,
        "train.epochs": 200,
    },
}

_ALLOWED = {
    "model.backbone": ("resnet18", "resnet50", "small"),
    "model.stem": ("cifar", "imagenet"),
    "model.norm": ("batch", "group", "none"),
    "loss.method": METHODS,
    "loss.target": ("positive", "domain_prior", "supervised"),
    "optim.name": ("sgd", "adam"),
    "optim.schedule": ("cosine", "constant"),
    "train.amp_dtype": ("bfloat16", "float16"),
    "profile": tuple(PROFILES),
}


# ---------------------------------------------------------------------------------------------
# Override parsing
# ---------------------------------------------------------------------------------------------
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NONE = {"none", "null"}


def _parse_scalar(text: str) -> Any:
    """Best-effort typed value for free-form keys (``loss.hparams.*``, ``data.load_kwargs.*``)."""
    low = text.strip().lower()
    if low in _NONE:
        return None
    if low in ("true", "false"):
        return low == "true"
    if "," in text:
        return [_parse_scalar(part) for part in text.split(",") if part.strip()]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)  # accepts inf, nan, 1e-3
    except ValueError:
        return text.strip()


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert ``value`` (a string from the command line, or a Python value) to ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"{key} expects true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ValueError(f"{key} expects an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"{key} expects an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError(f"{key} expects a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ValueError(f"{key} expects a number, got {value!r}")
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} expects a string, got {value!r}")
        return value.strip()
    if origin is tuple:
        items = value
        if isinstance(value, str):
            items = [p for p in value.split(",") if p.strip()] if value.strip() not in ("", "()") else []
        if not isinstance(items, (list, tuple)):
            items = [items]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(key, v, args[0]) for v in items)
        if len(items) != len(args):
            raise ValueError(f"{key} expects {len(args)} comma-separated values, got {value!r}")
        return tuple(_coerce(key, v, a) for v, a in zip(items, args))
    if annotation is dict or origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{key} expects a JSON object, got {value!r}") from exc
        if not isinstance(value, Mapping):
            raise ValueError(f"{key} expects a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")  # pragma: no cover


def parse_override(text: str) -> tuple[str, str]:
    """Split ``"section.key=value"`` into ``(key, value)``; raises ValueError if malformed."""
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"override {text!r} must look like 'section.key=value', e.g. 'train.epochs=5'")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ValueError(f"override {text!r} has an empty key")
    return key, value


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _set(config: RunConfig, key: str, value: Any) -> None:
    parts = key.split(".")
    if parts == ["profile"]:
        if value not in PROFILES:
            raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {value!r}")
        config.profile = value
        return
    if parts[0] not in _SECTIONS:
        raise ValueError(
            f"unknown option {key!r}: the first part must be one of {list(_SECTIONS)} (e.g. 'train.epochs=5')"
        )
    section = getattr(config, parts[0])
    types = _field_types(type(section))
    if len(parts) < 2 or parts[1] not in types:
        raise ValueError(
            f"unknown option {key!r}; the options of '{parts[0]}' are: {', '.join(sorted(types))}"
        )
    name = parts[1]
    if len(parts) > 2:  # free-form dictionaries: loss.hparams.<kw>, data.load_kwargs.<kw>
        if types[name] is not dict and typing.get_origin(types[name]) is not dict:
            raise ValueError(f"unknown option {key!r}: '{parts[0]}.{name}' has no sub-options")
        target = getattr(section, name)
        sub = ".".join(parts[2:])
        target[sub] = _parse_scalar(value) if isinstance(value, str) else value
        return
    coerced = _coerce(key, value, types[name])
    allowed = _ALLOWED.get(key)
    if allowed is not None and coerced not in allowed:
        raise ValueError(f"{key} must be one of {list(allowed)}, got {coerced!r}")
    setattr(section, name, coerced)


def apply_overrides(config: RunConfig, overrides: Mapping[str, Any] | Iterable[str]) -> RunConfig:
    """Return a copy of ``config`` with overrides applied (``{"train.epochs": 5}`` or
    ``["train.epochs=5", ...]``); values may be strings (command line) or typed Python values."""
    new = copy.deepcopy(config)
    items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
    for key, value in items:
        _set(new, key, value)
    return new


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def validate_config(config: RunConfig, *, check_loss: bool = True) -> RunConfig:
    """Check ranges and consistency; with ``check_loss`` build the loss once so that unknown or
    invalid ``loss.hparams`` fail now rather than mid-run. Returns ``config``."""
    d, m, lo, o, t, e = config.data, config.model, config.loss, config.optim, config.train, config.eval
    for key, allowed in _ALLOWED.items():
        value = config.profile if key == "profile" else getattr(getattr(config, key.split(".")[0]), key.split(".")[1])
        _need(value in allowed, f"{key} must be one of {list(allowed)}, got {value!r}")
    _need(d.n_per_class is None or d.n_per_class >= 1, f"data.n_per_class must be >= 1 or none, got {d.n_per_class}")
    _need(d.test_n_per_class is None or d.test_n_per_class >= 1,
          f"data.test_n_per_class must be >= 1 or none, got {d.test_n_per_class}")
    _need(d.image_size is None or d.image_size >= 1, f"data.image_size must be >= 1 or none, got {d.image_size}")
    _need(m.width is None or m.width >= 1, f"model.width must be >= 1 or none, got {m.width}")
    _need(m.in_channels is None or m.in_channels >= 1, f"model.in_channels must be >= 1, got {m.in_channels}")
    _need(m.projector_hidden_dim >= 0, f"model.projector_hidden_dim must be >= 0, got {m.projector_hidden_dim}")
    _need(m.projector_out_dim >= 1, f"model.projector_out_dim must be >= 1, got {m.projector_out_dim}")
    _need(m.predictor_hidden_dim >= 1, f"model.predictor_hidden_dim must be >= 1, got {m.predictor_hidden_dim}")
    _need(0.0 <= lo.ema_base <= 1.0, f"loss.ema_base must lie in [0, 1], got {lo.ema_base}")
    _need(math.isfinite(lo.target_alpha) and lo.target_alpha >= 0,
          f"loss.target_alpha must be finite and >= 0, got {lo.target_alpha}")
    _need(math.isfinite(lo.target_beta) and lo.target_beta >= 0,
          f"loss.target_beta must be finite and >= 0, got {lo.target_beta}")
    kind = get_method(lo.method).kind
    if lo.target != "positive":
        _need(kind == "alignment",
              f"method {lo.method!r} has no target plan; loss.target must be 'positive', got {lo.target!r}")
        from gca.losses.registry import LOSSES  # deferred: torch is imported only when a loss is configured

        _need(LOSSES[lo.method].custom_target,
              f"method {lo.method!r} is defined for the positive-pair target only; use loss.target=positive")
    _need(lo.target_form in ("per-entry", "row-mass"),
          f"loss.target_form must be 'per-entry' or 'row-mass', got {lo.target_form!r}")
    _need(math.isfinite(lo.target_mass) and 0.0 <= lo.target_mass < 1.0,
          f"loss.target_mass must lie in [0, 1) (the prior's share of a row), got {lo.target_mass}")
    if lo.target_form == "row-mass":
        _need(-1.0 <= lo.target_alpha - lo.target_beta <= 1.0,
              f"loss.target_alpha - loss.target_beta must lie in [-1, 1] with target_form=row-mass, "
              f"got {lo.target_alpha - lo.target_beta:g}")
    if lo.target == "positive" and (lo.target_alpha or lo.target_beta):
        raise ValueError("loss.target_alpha / loss.target_beta are used only with loss.target=domain_prior; "
                         f"got target={lo.target!r}")
    _need(math.isfinite(o.lr) and o.lr > 0, f"optim.lr must be a finite number > 0, got {o.lr}")
    _need(0.0 <= o.momentum < 1.0, f"optim.momentum must lie in [0, 1), got {o.momentum}")
    _need(not (o.nesterov and o.name == "sgd" and o.momentum == 0),
          "optim.nesterov=true needs optim.momentum > 0 (set optim.nesterov=false or a momentum)")
    _need(math.isfinite(o.weight_decay) and o.weight_decay >= 0,
          f"optim.weight_decay must be a finite number >= 0, got {o.weight_decay}")
    _need(all(0.0 <= b < 1.0 for b in o.adam_betas), f"optim.adam_betas must lie in [0, 1), got {o.adam_betas}")
    _need(math.isfinite(o.warmup_epochs) and o.warmup_epochs >= 0,
          f"optim.warmup_epochs must be a finite number of epochs >= 0, got {o.warmup_epochs}")
    _need(0.0 <= o.final_lr_fraction <= 1.0, f"optim.final_lr_fraction must lie in [0, 1], got {o.final_lr_fraction}")
    _need(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    _need(t.batch_size >= 2, f"train.batch_size must be >= 2 (contrastive losses need negatives), got {t.batch_size}")
    _need(t.checkpoint_every >= 1, f"train.checkpoint_every must be >= 1 epoch, got {t.checkpoint_every}")
    _need(t.log_every >= 1, f"train.log_every must be >= 1 step, got {t.log_every}")
    _need(t.threads is None or t.threads >= 1, f"train.threads must be >= 1 or none, got {t.threads}")
    _need(t.device == "auto" or t.device == "cpu" or t.device == "cuda" or t.device.startswith("cuda:"),
          f"train.device must be auto, cpu, cuda or cuda:N, got {t.device!r}")
    _need(t.num_workers >= 0, f"train.num_workers must be >= 0, got {t.num_workers}")
    _need(e.batch_size >= 1, f"eval.batch_size must be >= 1, got {e.batch_size}")
    _need(0.0 < e.val_fraction < 1.0, f"eval.val_fraction must lie in (0, 1), got {e.val_fraction}")
    _need(e.probe_train_per_class is None or e.probe_train_per_class >= 2,
          f"eval.probe_train_per_class must be >= 2 (the probe's validation split takes one per class) or none, "
          f"got {e.probe_train_per_class}")
    _need(e.probe_train_seed >= 0, f"eval.probe_train_seed must be >= 0, got {e.probe_train_seed}")
    _need(e.seed >= 0, f"eval.seed must be >= 0, got {e.seed}")
    _need(len(e.probe_weight_decays) >= 1 and all(math.isfinite(w) and w >= 0 for w in e.probe_weight_decays),
          f"eval.probe_weight_decays must be non-negative numbers, got {e.probe_weight_decays}")
    _need(e.probe_max_iter >= 1, f"eval.probe_max_iter must be >= 1, got {e.probe_max_iter}")
    _need(e.knn_k >= 1, f"eval.knn_k must be >= 1, got {e.knn_k}")
    _need(e.knn_temperature > 0, f"eval.knn_temperature must be > 0, got {e.knn_temperature}")
    _need(e.align_alpha > 0, f"eval.align_alpha must be > 0, got {e.align_alpha}")
    _need(e.uniform_t > 0, f"eval.uniform_t must be > 0, got {e.uniform_t}")
    _need(all(1 <= s <= 5 for s in e.corruption_severities),
          f"eval.corruption_severities must lie in 1..5, got {e.corruption_severities}")
    from gca import augment as gaug
    from gca import data as gdata

    try:
        d.dataset = gdata.canonical_name(d.dataset)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data.dataset: {exc}") from exc
    _need(d.augment.strip().lower().replace("-", "_") in gaug.AUGMENTATIONS,
          f"data.augment must be one of {list(gaug.AUGMENTATIONS)}, got {d.augment!r}")
    if check_loss and kind == "alignment":
        from gca.losses import make_loss

        try:
            make_loss(lo.method, **lo.hparams)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid loss.hparams {lo.hparams!r} for method {lo.method!r}: {exc}") from exc
    elif kind != "alignment" and lo.hparams:
        hint = "; use loss.ema_base" if kind == "byol" else ""
        raise ValueError(f"method {lo.method!r} takes no loss.hparams (got {lo.hparams!r}){hint}")
    return config


# ---------------------------------------------------------------------------------------------
# Resolution and (de)serialisation
# ---------------------------------------------------------------------------------------------
def resolve_config(
    profile: str = "paper",
    *,
    method: str | None = None,
    dataset: str | None = None,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    validate: bool = True,
) -> RunConfig:
    """Defaults → ``profile`` → (paper profile: dataset-specific changes) → ``method``/``dataset``
    → ``overrides``; then :func:`validate_config`."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    config = apply_overrides(RunConfig(profile=profile), PROFILES[profile])
    first: dict[str, Any] = {}
    if method is not None:
        first["loss.method"] = method
    if dataset is not None:
        first["data.dataset"] = dataset
    config = apply_overrides(config, first)
    if profile == "paper" and config.data.dataset in _PAPER_DATASET_OVERRIDES:
        config = apply_overrides(config, _PAPER_DATASET_OVERRIDES[config.data.dataset])
    config = apply_overrides(config, overrides)
    if validate:
        validate_config(config)
    return config


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """JSON-serialisable nested dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """Inverse of :func:`config_to_dict`; unknown keys raise ValueError."""
    if not isinstance(data, Mapping):
        raise TypeError(f"config must be a mapping, got {type(data).__name__}")
    config = RunConfig()
    for key, value in data.items():
        if key == "profile":
            _set(config, "profile", value)
            continue
        if key not in _SECTIONS or not isinstance(value, Mapping):
            raise ValueError(f"unknown config section {key!r}; expected {list(_SECTIONS)} and 'profile'")
        for name, v in value.items():
            if isinstance(v, list):
                v = tuple(v)
            _set(config, f"{key}.{name}", v)
    return config


def run_config_hash(config: RunConfig, *, code_version: str | None = None) -> str:
    """Stable hash of the whole resolved config (and a code version) for result caching."""
    from gca.provenance import config_hash

    return config_hash(config_to_dict(config), code_version=code_version)
