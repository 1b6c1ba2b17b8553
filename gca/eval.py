"""Honest evaluation of a frozen encoder: linear probe, weighted kNN, alignment / uniformity,
domain probe and corrupted test sets.

Protocol (and how it differs from the authors' code, ``official-code.md`` item 7, whose CIFAR
"linear evaluation" fine-tunes the encoder with BatchNorm in train mode and reports the best test
epoch):

- The encoder is frozen: :func:`freeze` turns off every parameter's gradient and puts every module
  in eval mode, and :func:`assert_frozen` checks both before features are extracted. Features
  (the backbone output ``h``) are computed once and cached; the probe trains on the cache.
- Linear probe = multinomial logistic regression on standardised features, fitted to convergence
  by full-batch L-BFGS (a convex problem: no epochs, hence no "best epoch" to pick). Its L2 weight
  decay is chosen on a validation split carved (stratified, seeded) from the *probe's training*
  set; the probe is then refitted on the whole probe training set with that value and evaluated
  **once** on the test set. The weight-decay grid is fitted from the largest value down, each fit
  starting from the previous solution (a warm start: the same minimiser; over the grid of
  CIFAR-10 features about a third of the iterations of cold starts).
- Evaluation data (:func:`load_eval_data`): the probe and kNN are fitted either on the pretraining
  subset (``eval.probe_train_per_class = None``, the default) or on a *fixed* class-balanced set
  of ``eval.probe_train_per_class`` images per class drawn from the whole training split with
  ``eval.probe_train_seed`` — the same set for every run, whatever its seed. That set is chosen
  independently of the pretraining subset and may overlap it, as in standard linear evaluation,
  which fits the probe on the whole training set the encoder was pretrained on (pretraining never
  sees labels). The test set is ``data.test_n_per_class`` images per class (``None``: all).
- Weighted kNN (Wu et al. 2018): cosine similarity, the ``k`` nearest training features vote with
  weight ``exp(s / τ)``; ``k = 200`` and ``τ = 0.07`` by default (Wu et al.'s values), fixed, never
  tuned on test.
- Alignment and uniformity (Wang & Isola 2020) on the L2-normalised projections of two augmented
  views of the test images (and on the normalised backbone features):
  ``align = E‖ẑ₁ − ẑ₂‖^α``, ``uniform = log E_{i≠j} exp(−t‖ẑ_i − ẑ_j‖²)`` (α = 2, t = 2).
- Domain probe: the same linear-probe protocol with domain labels as targets (multi-domain data).
- Corrupted test sets: the probe and kNN trained on clean features, evaluated on features of
  corrupted test images (:func:`gca.augment.corrupt`, and the real CIFAR-10-C files when present).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from gca import augment as gaug
from gca import data as gdata
from gca.config import apply_overrides, config_to_dict, run_config_hash, validate_config
from gca.provenance import collect_provenance
from gca.train import load_run, resolve_device

__all__ = [
    "freeze",
    "assert_frozen",
    "extract_features",
    "fit_logistic_regression",
    "LinearProbeResult",
    "linear_probe",
    "knn_predict",
    "knn_accuracy",
    "alignment_metric",
    "uniformity",
    "stratified_split_indices",
    "load_eval_data",
    "evaluate_model",
    "evaluate_run",
    "load_eval_data",
    "EVAL_NAME",
]

EVAL_NAME = "eval.json"


# ---------------------------------------------------------------------------------------------
# Frozen encoder and cached features
# ---------------------------------------------------------------------------------------------
def freeze(module: nn.Module) -> nn.Module:
    """Disable gradients of every parameter and put every submodule in eval mode (in place)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def assert_frozen(module: nn.Module) -> None:
    """Raise RuntimeError unless no parameter requires gradients and no submodule is training.

    (Unlike an attribute set on the module, this checks what autograd and BatchNorm actually see.)
    """
    trainable = [name for name, p in module.named_parameters() if p.requires_grad]
    if trainable:
        raise RuntimeError(
            f"encoder is not frozen: {len(trainable)} parameters require grad (e.g. {trainable[:3]}); "
            "call gca.eval.freeze(encoder) first"
        )
    training = [name or type(module).__name__ for name, m in module.named_modules() if m.training]
    if training:
        raise RuntimeError(
            f"encoder is not in eval mode: {len(training)} submodules are training (e.g. {training[:3]}); "
            "BatchNorm would use batch statistics; call gca.eval.freeze(encoder) first"
        )


def _image_batch(source, start: int, stop: int) -> Tensor:
    """Rows ``start:stop`` of a uint8 image tensor or of a lazy dataset (decoded on demand)."""
    if isinstance(source, Tensor):
        return source[start:stop]
    return source.load(torch.arange(start, min(stop, len(source))))


def _images_of(ds):
    """The in-memory image tensor of ``ds``, or ``ds`` itself when it is lazy."""
    return ds.images if getattr(ds, "images", None) is not None else ds


def _prepare(x: Tensor, mean: Tensor, std: Tensor, size: int | None) -> Tensor:
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x - mean) / std


@torch.no_grad()
def extract_features(
    encoder: Callable[[Tensor], Tensor] | nn.Module,
    images: Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    size: int | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
    progress: bool = False,
    desc: str = "features",
) -> Tensor:
    """Features of ``images`` under a frozen ``encoder``, computed batch by batch.

    ``images``: uint8 ``(N, C, H, W)`` (or float in [0, 1]); optional ``transform`` maps a
    float batch in [0, 1] to another (e.g. an augmentation); then resize to ``size`` (if given) and
    normalise with ``mean``/``std``. Returns float32 ``(N, D)`` on the CPU. If ``encoder`` is an
    ``nn.Module`` it must be frozen (:func:`assert_frozen`).
    """
    if isinstance(encoder, nn.Module):
        assert_frozen(encoder)
    if not (isinstance(images, Tensor) and images.dim() == 4) and not hasattr(images, "load"):
        raise TypeError(f"images must be a (N, C, H, W) tensor or a lazy dataset with .load(indices), got "
                        f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    out = []
    n = images.shape[0] if isinstance(images, Tensor) else len(images)
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
        x = _image_batch(images, start, start + batch_size).to(device)
        if transform is not None:
            x = transform(x.float() / 255.0 if x.dtype == torch.uint8 else x)
        out.append(encoder(_prepare(x, mean_t, std_t, size)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


# ---------------------------------------------------------------------------------------------
# Linear probe
# ---------------------------------------------------------------------------------------------
def stratified_split_indices(labels: Tensor, fraction: float, *, seed: int) -> tuple[Tensor, Tensor]:
    """(fit, validation) indices: ``round(fraction · n_c)`` of each class held out, seeded, at least
    one per class on each side (:func:`gca.data.stratified_split` with ``nonempty=True``)."""
    return gdata.stratified_split(labels, fraction, seed=seed, nonempty=True)


def fit_logistic_regression(
    features: Tensor, labels: Tensor, n_classes: int, *, weight_decay: float = 0.0, max_iter: int = 300,
    tol: float = 1e-6, warn_tol: float = 1e-3, init: nn.Linear | None = None,
) -> nn.Linear:
    r"""Multinomial logistic regression by full-batch L-BFGS.

    .. math:: \min_{W, b}\ \frac1n\sum_i -\log\operatorname{softmax}(W x_i + b)_{y_i} + \frac{\lambda}{2}\|W\|_F^2

    (bias not penalised). ``features (n, D)`` float32/64 (kept), ``labels (n,)`` int64 in ``[0, n_classes)``.
    Deterministic. L-BFGS starts from zero weights, or from a copy of ``init`` (a fitted
    ``nn.Linear(D, n_classes)``: a warm start, e.g. the solution for a nearby weight decay; the
    problem is strictly convex for ``weight_decay > 0``, so the minimiser does not depend on the
    start; with ``weight_decay = 0`` on separable features there is no minimiser, and where L-BFGS
    stops does). L-BFGS stops when the gradient's largest entry is below ``tol``, the loss stops
    changing (``tol · 1e-3``) or after ``max_iter`` iterations; the returned layer carries ``n_iter``, ``grad_max`` and ``converged``
    (``grad_max <= warn_tol``), and a RuntimeWarning is issued when it did not converge (weakly
    regularised probes on separable features converge slowly: their weights keep growing).
    """
    if features.dim() != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"features must be (n, D) and labels (n,), got {tuple(features.shape)} and {tuple(labels.shape)}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got range [{int(labels.min())}, {int(labels.max())}]")
    if init is not None and (not isinstance(init, nn.Linear) or init.weight.shape != (n_classes, features.shape[1])
                             or init.bias is None):
        raise ValueError(f"init must be an nn.Linear({features.shape[1]}, {n_classes}) with a bias (a fitted probe), "
                         f"got {init!r}")
    x = features if features.dtype in (torch.float32, torch.float64) else features.float()
    y = labels.to(features.device)
    clf = nn.Linear(x.shape[1], n_classes).to(device=x.device, dtype=x.dtype)
    with torch.no_grad():
        if init is None:
            clf.weight.zero_()
            clf.bias.zero_()
        else:
            clf.weight.copy_(init.weight)
            clf.bias.copy_(init.bias)
    opt = torch.optim.LBFGS(clf.parameters(), lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                            tolerance_change=tol * 1e-3, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(clf(x), y) + 0.5 * weight_decay * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
        opt.zero_grad()
        closure()  # gradient at the returned point, for the convergence report
    grad_max = max(float(p.grad.abs().max()) for p in clf.parameters())
    clf.n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    clf.grad_max = grad_max
    clf.converged = grad_max <= warn_tol
    if not clf.converged:
        warnings.warn(f"linear probe (weight_decay={weight_decay}) stopped after {clf.n_iter} L-BFGS iterations "
                      f"with gradient max {grad_max:.2e} > {warn_tol:g}; increase eval.probe_max_iter or use a "
                      "larger weight decay", RuntimeWarning, stacklevel=2)
    return clf.requires_grad_(False)


def _standardise(fit: Tensor, *others: Tensor) -> list[Tensor]:
    mean = fit.mean(0, keepdim=True)
    std = fit.std(0, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (fit, *others)]


def _accuracy(clf: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((clf(x).argmax(1) == y).float().mean()) if len(y) else float("nan")


@dataclass
class LinearProbeResult:
    """Outcome of :func:`linear_probe`: the selected ``weight_decay`` with the validation accuracy
    of every candidate, and the final model's train and test accuracy (reported once)."""

    weight_decay: float
    val_accuracy: dict[float, float]
    converged: dict  # weight decay (and "final") -> did L-BFGS converge
    train_accuracy: float
    test_accuracy: float
    classifier: nn.Linear = field(repr=False)
    feature_mean: Tensor = field(repr=False)
    feature_std: Tensor = field(repr=False)

    def predict(self, features: Tensor) -> Tensor:
        """Class predictions of the final probe for raw (unstandardised) ``features``."""
        with torch.no_grad():
            return self.classifier((features - self.feature_mean) / self.feature_std).argmax(1)

    def accuracy(self, features: Tensor, labels: Tensor) -> float:
        return float((self.predict(features) == labels).float().mean())

    def to_dict(self) -> dict[str, Any]:
        return {"weight_decay": self.weight_decay, "val_accuracy": {str(k): v for k, v in self.val_accuracy.items()},
                "converged": {str(k): v for k, v in self.converged.items()},
                "train_accuracy": self.train_accuracy, "test_accuracy": self.test_accuracy}


def linear_probe(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor, *,
    weight_decays: Sequence[float] = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2), val_fraction: float = 0.1,
    seed: int = 0, max_iter: int = 300, n_classes: int | None = None, progress: bool = False,
) -> LinearProbeResult:
    """Frozen-feature linear probe with weight decay selected on a validation split of the
    training features; the refitted final probe is evaluated once on the test features.

    The grid is fitted from the largest weight decay down, each fit warm-started from the previous
    one, and the final refit from the selected validation fit (:func:`fit_logistic_regression`'s
    ``init``)."""
    if len(weight_decays) == 0:
        raise ValueError("weight_decays must hold at least one value")
    if any(not math.isfinite(float(wd)) or float(wd) < 0 for wd in weight_decays):
        raise ValueError(f"weight_decays must be finite numbers >= 0, got {tuple(weight_decays)}")
    n_classes = int(max(train_labels.max(), test_labels.max() if len(test_labels) else 0)) + 1 if n_classes is None else n_classes
    fit_idx, val_idx = stratified_split_indices(train_labels, val_fraction, seed=seed)
    grid = [float(wd) for wd in weight_decays]
    val_acc: dict[float, float] = {}
    converged: dict = {}
    start = None  # warm start of the final refit: the validation fit with the selected weight decay
    if len(grid) == 1:
        best = grid[0]
    else:
        x_fit, x_val = _standardise(train_features[fit_idx], train_features[val_idx])
        fits: dict[float, nn.Linear] = {}
        prev = None
        # Largest weight decay first (the best-conditioned fit), each next fit warm-started from the last.
        for wd in tqdm(sorted(set(grid), reverse=True), desc="linear probe: weight decay on validation",
                       disable=not progress, leave=False):
            prev = fits[wd] = fit_logistic_regression(x_fit, train_labels[fit_idx], n_classes, weight_decay=wd,
                                                      max_iter=max_iter, init=prev)
        for wd in grid:  # recorded in the grid's order
            val_acc[wd] = _accuracy(fits[wd], x_val, train_labels[val_idx])
            converged[wd] = fits[wd].converged
        best = max(val_acc, key=lambda w: (val_acc[w], w))  # ties: the stronger regularisation
        start = fits[best]
    mean = train_features.mean(0, keepdim=True)
    std = train_features.std(0, keepdim=True).clamp_min(1e-6)
    x_train, x_test = (train_features - mean) / std, (test_features - mean) / std
    clf = fit_logistic_regression(x_train, train_labels, n_classes, weight_decay=best, max_iter=max_iter, init=start)
    converged["final"] = clf.converged
    return LinearProbeResult(best, val_acc, converged, _accuracy(clf, x_train, train_labels),
                             _accuracy(clf, x_test, test_labels), clf, mean, std)


# ---------------------------------------------------------------------------------------------
# Weighted kNN
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def knn_predict(
    train_features: Tensor, train_labels: Tensor, query_features: Tensor, *, k: int = 200,
    temperature: float = 0.07, n_classes: int | None = None, batch_size: int = 1024,
) -> Tensor:
    r"""Weighted kNN of Wu et al. (2018): class score
    :math:`\sum_{j \in \mathcal N_k(q)} e^{\cos(q, x_j)/\tau}\,[y_j = c]`, prediction = argmax.

    ``k`` is capped at the number of training features. Returns int64 ``(n_query,)``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n_classes = int(train_labels.max()) + 1 if n_classes is None else n_classes
    bank = F.normalize(train_features.float(), dim=1)
    k = min(k, bank.shape[0])
    preds = []
    for start in range(0, query_features.shape[0], batch_size):
        q = F.normalize(query_features[start:start + batch_size].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        scores = torch.zeros(q.shape[0], n_classes, dtype=weights.dtype)
        scores.scatter_add_(1, train_labels[idx], weights)
        preds.append(scores.argmax(1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)


def knn_accuracy(train_features, train_labels, test_features, test_labels, **kw) -> float:
    """Accuracy of :func:`knn_predict` on ``test_features``."""
    return float((knn_predict(train_features, train_labels, test_features, **kw) == test_labels).float().mean())


# ---------------------------------------------------------------------------------------------
# Alignment and uniformity (Wang & Isola, 2020)
# ---------------------------------------------------------------------------------------------
def alignment_metric(z1: Tensor, z2: Tensor, *, alpha: float = 2.0) -> float:
    r"""Wang & Isola's alignment metric :math:`\mathbb E\,\|\hat z_1 - \hat z_2\|_2^{\alpha}` over
    positive pairs (rows of ``z1``, ``z2``: (N, d); lower is better). Not the loss core
    :func:`gca.losses.alignment`: this measures a trained encoder, that one defines the losses."""
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    return float((F.normalize(z1.double(), dim=1) - F.normalize(z2.double(), dim=1)).norm(dim=1).pow(alpha).mean())


def uniformity(z: Tensor, *, t: float = 2.0, block: int = 2048) -> float:
    r""":math:`\log \mathbb E_{i \ne j}\, e^{-t\|\hat z_i - \hat z_j\|^2}` over all distinct pairs of rows
    of ``z`` (N, d), computed exactly in float64, by row bands of the upper triangle (each unordered
    pair once, counted twice) with a log-sum-exp (no N² buffer)."""
    n = z.shape[0]
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 rows, got {n}")
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"t must be a finite number > 0, got {t}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    zn = F.normalize(z.double(), dim=1)
    parts = []
    for start in range(0, n, block):
        b = min(block, n - start)
        # pairs (i, j), i in this band, j >= start: -t‖ẑ_i − ẑ_j‖² = 2t(cos − 1) <= 0
        logits = (zn[start:start + b] @ zn[start:].T).sub_(1.0).clamp_(max=0.0).mul_(2.0 * t)
        logits[:, :b].diagonal().fill_(-math.inf)  # exclude i = j
        top = logits.max()
        if top == -math.inf:  # a last band of one row and nothing after it
            continue
        w = logits.sub_(top).exp_()
        # the band's own square holds both (i, j) and (j, i); the pairs right of it occur once: count twice
        parts.append(top + (w[:, :b].sum() + 2.0 * w[:, b:].sum()).log())
    return float(torch.logsumexp(torch.stack(parts), 0) - math.log(n * (n - 1)))


# ---------------------------------------------------------------------------------------------
# Whole-run evaluation
# ---------------------------------------------------------------------------------------------
def load_eval_data(config, split: str):
    """The evaluation data of a run of ``config``: ``split="train"`` the set the linear probe and kNN
    are fitted on, ``split="test"`` the test set (see the module docstring).

    train: ``eval.probe_train_per_class`` images per class of the whole training split drawn with
    ``eval.probe_train_seed`` (the same set for every run), or, when that is ``None``, the
    pretraining subset (``data.n_per_class`` drawn with ``train.seed``; all when ``None``).
    test: ``data.test_n_per_class`` images per class drawn with ``train.seed`` (all when ``None``).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    d, e = config.data, config.eval
    if split == "train" and e.probe_train_per_class is not None:
        ds = gdata.load_dataset(d.dataset, split=split, data_dir=d.data_dir, **d.load_kwargs)
        return gdata.balanced_subset(ds, e.probe_train_per_class, seed=e.probe_train_seed)
    return gdata.load_run_data(config, split)  # the run's own subset (data.n_per_class / test_n_per_class)


def _probe_train_description(config) -> dict[str, Any]:
    e = config.eval
    if e.probe_train_per_class is None:
        return {"source": "pretraining subset", "per_class": config.data.n_per_class, "seed": config.train.seed}
    return {"source": "training split, fixed for every run", "per_class": e.probe_train_per_class,
            "seed": e.probe_train_seed}


def _check_corruption_names(e) -> None:
    bad = [n for n in e.corruptions if n not in gaug.CORRUPTIONS]
    if bad:
        raise ValueError(f"eval.corruptions: unknown corruption(s) {bad}; choose from {gaug.CORRUPTIONS}")
    bad = [n for n in e.cifar10c_corruptions if n != "all" and n not in gdata.CIFAR10C_CORRUPTIONS]
    if bad:
        raise ValueError(f"eval.cifar10c_corruptions: unknown corruption(s) {bad}; choose 'all' or from "
                         f"{tuple(gdata.CIFAR10C_CORRUPTIONS)}")


def evaluate_model(
    model: nn.Module, config, *, device: str | torch.device = "cpu", progress: bool = True,
    train_data=None, test_data=None,
) -> dict[str, Any]:
    """Evaluate a pretrained :class:`~gca.models.ContrastiveModel` (or BYOL model) as configured
    by ``config.eval``; returns a JSON-serialisable dict of metrics (see module docstring).
    ``train_data`` / ``test_data`` replace :func:`load_eval_data`'s sets."""
    e = config.eval
    _check_corruption_names(e)  # before any feature is extracted or probe fitted
    device = torch.device(device)
    model = freeze(model.to(device))
    train_ds = train_data if train_data is not None else load_eval_data(config, "train")
    test_ds = test_data if test_data is not None else load_eval_data(config, "test")
    size = config.data.image_size
    mean, std = train_ds.mean, train_ds.std
    kw = dict(mean=mean, std=std, batch_size=e.batch_size, device=device, size=size, progress=progress)
    backbone = model.backbone
    assert_frozen(model)
    h_train = extract_features(backbone, _images_of(train_ds), desc="train features", **kw)
    h_test = extract_features(backbone, _images_of(test_ds), desc="test features", **kw)
    n_classes = len(train_ds.classes)
    results: dict[str, Any] = {
        "dataset": train_ds.name, "dataset_description": getattr(train_ds, "description", None),
        "n_train": len(train_ds), "n_test": len(test_ds), "feat_dim": h_train.shape[1],
        "train_checksum": train_ds.checksum, "test_checksum": test_ds.checksum,
    }
    if train_data is None:
        results["probe_train"] = _probe_train_description(config)
    probe = linear_probe(h_train, train_ds.labels, h_test, test_ds.labels, weight_decays=e.probe_weight_decays,
                         val_fraction=e.val_fraction, seed=e.seed, max_iter=e.probe_max_iter, n_classes=n_classes,
                         progress=progress)
    results["linear"] = probe.to_dict()
    results["linear_accuracy"] = probe.test_accuracy
    knn_kw = dict(k=e.knn_k, temperature=e.knn_temperature, n_classes=n_classes)
    results["knn_accuracy"] = knn_accuracy(h_train, train_ds.labels, h_test, test_ds.labels, **knn_kw)
    results["knn"] = {"k": min(e.knn_k, len(train_ds)), "temperature": e.knn_temperature}

    # Alignment / uniformity on two augmented views of the test set (fixed seed).
    aug = gaug.build_augment(config.data.augment, size or test_ds.image_size[0])
    gen = torch.Generator().manual_seed(e.seed)
    zs, hs = [], []
    for _ in range(2):
        z_parts, h_parts = [], []
        mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        with torch.no_grad():
            for start in range(0, len(test_ds), e.batch_size):
                x = aug(_image_batch(_images_of(test_ds), start, start + e.batch_size).to(device), generator=gen)
                x = (x - mean_t) / std_t
                h = backbone(x)
                h_parts.append(h.float().cpu())
                z_parts.append(model.projector(h).float().cpu())
        zs.append(torch.cat(z_parts))
        hs.append(torch.cat(h_parts))
    results["alignment"] = alignment_metric(zs[0], zs[1], alpha=e.align_alpha)
    results["uniformity"] = 0.5 * (uniformity(zs[0], t=e.uniform_t) + uniformity(zs[1], t=e.uniform_t))
    results["alignment_features"] = alignment_metric(hs[0], hs[1], alpha=e.align_alpha)
    results["uniformity_features"] = 0.5 * (uniformity(hs[0], t=e.uniform_t) + uniformity(hs[1], t=e.uniform_t))

    if getattr(train_ds, "domains", None) is not None and getattr(test_ds, "domains", None) is not None:
        dom = linear_probe(h_train, train_ds.domains, h_test, test_ds.domains, weight_decays=e.probe_weight_decays,
                           val_fraction=e.val_fraction, seed=e.seed, max_iter=e.probe_max_iter,
                           n_classes=int(max(train_ds.domains.max(), test_ds.domains.max())) + 1)
        results["domain"] = dom.to_dict()
        results["domain_accuracy"] = dom.test_accuracy

    corrupted: dict[str, dict[str, float]] = {}
    for name in e.corruptions:
        for severity in e.corruption_severities:
            g = torch.Generator().manual_seed(e.seed + severity)
            h_c = extract_features(backbone, _images_of(test_ds),
                                   transform=lambda x, n=name, s=severity, g=g: gaug.corrupt(x, n, s, generator=g),
                                   desc=f"{name}-{severity}", **kw)
            corrupted[f"{name}-{severity}"] = {
                "linear_accuracy": probe.accuracy(h_c, test_ds.labels),
                "knn_accuracy": knn_accuracy(h_train, train_ds.labels, h_c, test_ds.labels, **knn_kw),
            }
    for name in e.cifar10c_corruptions:
        names = list(gdata.CIFAR10C_CORRUPTIONS) if name == "all" else [name]
        for cname in names:
            ds_c = gdata.load_dataset("cifar10-c", "test", data_dir=config.data.data_dir, corruption=cname,
                                      severity=list(e.corruption_severities))
            h_c = extract_features(backbone, ds_c.images, desc=f"CIFAR-10-C {cname}", **kw)
            for d_index, d_name in enumerate(ds_c.domain_names):
                mask = ds_c.domains == d_index
                corrupted[f"cifar10c/{d_name}"] = {
                    "linear_accuracy": probe.accuracy(h_c[mask], ds_c.labels[mask]),
                    "knn_accuracy": knn_accuracy(h_train, train_ds.labels, h_c[mask], ds_c.labels[mask], **knn_kw),
                }
    if corrupted:
        results["corrupted"] = corrupted
        results["corrupted_linear_accuracy_mean"] = sum(v["linear_accuracy"] for v in corrupted.values()) / len(corrupted)
    return results


def evaluate_run(
    run_dir: str | os.PathLike, *, device: str | torch.device = "auto", overrides: Sequence[str] | dict = (),
    progress: bool = True, write: bool = True, require_finished: bool = True,
) -> dict[str, Any]:
    """Evaluate the pretrained model of ``run_dir`` (see :func:`gca.train.pretrain`) and write
    ``run_dir/eval.json`` (metrics, the evaluation config and provenance)."""
    dev = resolve_device(device)
    config, model = load_run(run_dir, map_location=dev, require_finished=require_finished)
    threads_before = torch.get_num_threads()
    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    try:
        return _evaluate_run(run_dir, config, model, dev, overrides, progress, write)
    finally:
        torch.set_num_threads(threads_before)


def _evaluate_run(run_dir, config, model, dev, overrides, progress, write) -> dict[str, Any]:
    if overrides:
        bad = [k for k in (overrides if isinstance(overrides, dict) else [o.split("=", 1)[0] for o in overrides])
               if not (k.startswith("eval.") or k == "data.data_dir")]
        if bad:
            raise ValueError(f"evaluate accepts only eval.* (and data.data_dir) overrides, got {bad}; "
                             "pretraining options are fixed by the run")
        config = apply_overrides(config, overrides)
        validate_config(config, check_loss=False)
    results = evaluate_model(model, config, device=dev, progress=progress)
    record = {
        "metrics": results,
        "eval_config": config_to_dict(config)["eval"],
        "config_hash": run_config_hash(config),
        "provenance": collect_provenance(seed=config.eval.seed, data_checksum=results["test_checksum"], device=dev,
                                         run_dir=str(run_dir)),
    }
    if write:
        path = Path(run_dir) / EVAL_NAME
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)
    return results
