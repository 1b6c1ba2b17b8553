"""Self-supervised pretraining for every method of ``gca.methods`` (the alignment losses, BYOL,
and the study's calibration rows).

One loop serves all methods: two augmented views per image → the method's network → its loss
(a loss of :func:`gca.losses.make_loss`, BYOL's normalised MSE against an EMA target, or — the
supervised calibration row — cross-entropy on the labels). The package, one concern per module:

==================================  ==========================================================
:mod:`gca.train.runtime`            device, distributed group, threads, determinism; the random
                                    streams (initial weights and every epoch's data order and
                                    augmentations depend only on ``train.seed``)
:mod:`gca.train.rundir`             the run directory: ``config.json``, ``provenance.json``,
                                    ``metrics.jsonl``, ``checkpoint.pt`` (atomic), ``summary.json``;
                                    resume rules; orphaned temporary files
:mod:`gca.train.batches`            training subset, batches, the two augmented views
:mod:`gca.train.objectives`         :class:`~gca.train.TrainingMethod` and its implementations (alignment,
                                    BYOL, supervised, untrained), chosen by the method's kind
:mod:`gca.train.step`               learning-rate schedule, optimiser, one step (mixed precision)
:mod:`gca.train.loop`               :func:`~gca.train.pretrain` and :func:`~gca.train.load_run`
==================================  ==========================================================

Features: per-iteration warm-up + cosine learning rate; mixed precision on CUDA with the loss in
float32; non-finite losses stop the run with an error naming the step; deterministic algorithms on
CPU; atomic checkpoints every ``train.checkpoint_every`` epochs and at the end, ``resume=True``
reaching the same weights and metrics as an uninterrupted run; distributed data parallel under
``torchrun`` with every process aligning the **global** batch (``official-code.md`` item 10).
"""

from gca.train.batches import Batch, TrainingBatches, ViewMaker
from gca.train.loop import PretrainResult, load_run, pretrain, resolve_for_data
from gca.train.objectives import (
    AlignmentMethod,
    BYOLMethod,
    SupervisedMethod,
    TrainingMethod,
    UntrainedMethod,
    batch_target,
    build_encoder,
    byol_loss,
    make_training_method,
    method_class,
)
from gca.train.rundir import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    PROVENANCE_NAME,
    SUMMARY_NAME,
    TrainingDataChangedError,
    load_checkpoint,
    read_json_file,
    read_metrics,
    remove_orphaned_temp_files,
    save_checkpoint_atomic,
)
from gca.train.runtime import epoch_generator_seed, init_seed, resolve_device
from gca.train.step import TrainStep, build_optimizer, build_training, learning_rate

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "METRICS_NAME",
    "PROVENANCE_NAME",
    "SUMMARY_NAME",
    "PretrainResult",
    "TrainingDataChangedError",
    "pretrain",
    "resolve_for_data",
    "learning_rate",
    "byol_loss",
    "build_optimizer",
    "resolve_device",
    "load_run",
    "remove_orphaned_temp_files",
    "read_json_file",
    "load_checkpoint",
    "save_checkpoint_atomic",
    "read_metrics",
    "epoch_generator_seed",
    "init_seed",
    "TrainStep",
    "build_training",
    "ViewMaker",
    "Batch",
    "TrainingBatches",
    "batch_target",
    "TrainingMethod",
    "AlignmentMethod",
    "BYOLMethod",
    "SupervisedMethod",
    "UntrainedMethod",
    "make_training_method",
    "method_class",
    "build_encoder",
]
