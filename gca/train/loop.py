"""The pretraining loop: :func:`~gca.train.pretrain` and its inverse :func:`~gca.train.load_run`.

:func:`~gca.train.pretrain` puts the pieces together — set-up (:mod:`gca.train.runtime`), the run directory
(:mod:`gca.train.rundir`), the data (:mod:`gca.train.batches`), the method and its step
(:mod:`gca.train.objectives`, :mod:`gca.train.step`) — and runs the epochs: per-iteration learning
rate, one :class:`~gca.train.TrainStep` per batch, step and epoch records, atomic checkpoints
every ``train.checkpoint_every`` epochs and at the end, the summary.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from gca.config import RunConfig, config_from_dict, config_to_dict, run_config_hash, validate_config
from gca.provenance import collect_provenance
from gca.train.batches import TrainingBatches, load_training_data
from gca.train.objectives import method_class
from gca.train.rundir import CHECKPOINT_NAME, CONFIG_NAME, RunDirectory, load_checkpoint, read_json_file
from gca.train.runtime import DistInfo, all_reduce_mean, configure_runtime, setup_distributed, teardown_distributed
from gca.train.step import TrainStep, build_training, learning_rate

__all__ = ["PretrainResult", "pretrain", "load_run", "resolve_for_data"]


@dataclass
class PretrainResult:
    """What :func:`~gca.train.pretrain` returns: the run directory, the trained model (unwrapped, on the
    training device), the per-epoch records written to ``metrics.jsonl`` and the configuration
    as recorded in ``config.json`` (resolved against the data: ``model.in_channels`` set)."""

    run_dir: Path
    model: nn.Module
    epochs: list[dict]
    resumed_from_epoch: int | None = None
    config: RunConfig | None = None


def resolve_for_data(config: RunConfig, dataset) -> RunConfig:
    """A copy of ``config`` with what the data decides filled in (``model.in_channels``); the
    caller's object is left unchanged. Raises ValueError when the configuration contradicts the data."""
    channels = dataset.channels
    in_channels = config.model.in_channels or channels
    if in_channels != channels:
        raise ValueError(f"model.in_channels={in_channels} but dataset {dataset.name!r} has {channels} channels")
    if config.loss.target == "domain_prior" and getattr(dataset, "domains", None) is None:
        raise ValueError(f"loss.target=domain_prior needs domain labels, but dataset {dataset.name!r} has none; "
                         "use a multi-domain dataset (e.g. rotated-digits, pacs)")
    resolved = copy.deepcopy(config)
    resolved.model.in_channels = in_channels
    return resolved


def pretrain(
    config: RunConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    loss_factory: Callable[..., nn.Module] | None = None,
    stop_after_epochs: int | None = None,
) -> PretrainResult:
    """Pretrain an encoder as configured and write the run directory ``out_dir``.

    Parameters
    ----------
    config
        A resolved :class:`~gca.config.RunConfig` (see :func:`gca.config.resolve_config`); not modified.
    out_dir
        Run directory. Must not already hold a checkpoint unless ``resume``.
    resume
        Continue from ``out_dir/checkpoint.pt`` (its config must equal ``config`` except for
        device, threads and logging frequency); a finished run is returned as is.
    progress
        Show a tqdm progress bar (rank 0 only).
    loss_factory
        ``(name, **hparams) -> nn.Module``; default :func:`gca.losses.make_loss`.
    stop_after_epochs
        Stop once this many epochs (in total) are done, after writing a checkpoint, as a
        time-limited job would; the run continues later with ``resume=True`` on the unchanged
        schedule. ``None``: run to ``train.epochs``.

    Returns
    -------
    PretrainResult
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a gca.config.RunConfig, got {type(config).__name__}")
    validate_config(config, check_loss=loss_factory is None)
    if stop_after_epochs is not None and (isinstance(stop_after_epochs, bool) or not isinstance(stop_after_epochs, int)
                                          or stop_after_epochs < 1):
        raise ValueError(f"stop_after_epochs must be a positive int or None, got {stop_after_epochs!r}")
    info = setup_distributed(config.train.device)
    threads_before = torch.get_num_threads()
    try:
        return _pretrain(config, Path(out_dir), resume, progress, loss_factory, info, stop_after_epochs)
    finally:
        torch.set_num_threads(threads_before)
        teardown_distributed(info)


def _pretrain(config: RunConfig, out: Path, resume: bool, progress: bool, loss_factory, info: DistInfo,
              stop_after_epochs: int | None) -> PretrainResult:
    tcfg = config.train
    device = configure_runtime(tcfg, info)
    run = RunDirectory.open(out, resume=resume, is_main=info.is_main)

    dataset = load_training_data(config)
    config = resolve_for_data(config, dataset)
    batches = TrainingBatches(dataset, global_batch=tcfg.batch_size, seed=tcfg.seed, augment=config.data.augment,
                              size=config.data.image_size or dataset.image_size[0], device=device,
                              num_workers=tcfg.num_workers, rank=info.rank, world_size=info.world_size)
    total_steps = batches.steps_per_epoch * tcfg.epochs
    stepper = build_training(config, in_channels=config.model.in_channels, device=device, loss_factory=loss_factory,
                             distributed=info.enabled, total_steps=total_steps,
                             n_classes=len(getattr(dataset, "classes", ())) or None)
    config_dict = config_to_dict(config)
    checksum = getattr(dataset, "checksum", None)
    run.check_resumable(config_dict, checksum)
    if run.checkpoint is not None:
        stepper.load_state_dict(run.checkpoint)
    if info.enabled and stepper.method.trains:
        stepper.wrap_ddp()

    provenance = collect_provenance(
        seed=tcfg.seed, data_checksum=checksum, device=device, config_hash=run_config_hash(config),
        world_size=info.world_size, command=" ".join(sys.argv), dataset=dataset.name, n_train_images=len(dataset),
        dataset_description=getattr(dataset, "description", None), resumed_from_epoch=run.resumed_from,
    ) if info.is_main else {}
    epoch_records = run.start(config_dict, provenance)
    steps = total_steps if stepper.method.trains else 0

    def summary() -> dict:
        return {"method": config.loss.method, "epochs": tcfg.epochs if stepper.method.trains else 0,
                "final_loss": epoch_records[-1]["loss"] if epoch_records else None, "steps": steps,
                "resumed_from_epoch": run.resumed_from, "config_hash": run_config_hash(config)}

    def checkpoint(epoch_done: int, finished: bool) -> None:
        run.save_checkpoint({
            "epoch": epoch_done, "global_step": epoch_done * batches.steps_per_epoch, "finished": finished,
            **stepper.state_dict(), "config": config_dict, "method": config.loss.method,
            "feat_dim": stepper.model.backbone.feat_dim, "data_checksum": checksum,
        })

    if run.finished:
        if not run.has_summary():  # killed between the last checkpoint and the summary
            run.write_summary(summary())
    elif not stepper.method.trains:  # the untrained encoder: its initial weights are the result
        checkpoint(0, finished=True)
        run.write_summary(summary())
    else:
        finished = _train_epochs(stepper, batches, run, epoch_records, config, total_steps,
                                 progress=progress and info.is_main, info=info, device=device,
                                 stop_after_epochs=stop_after_epochs, checkpoint=checkpoint)
        if finished:
            run.write_summary(summary())
    return PretrainResult(out, stepper.model, epoch_records, run.resumed_from, config)


def _train_epochs(stepper: TrainStep, batches: TrainingBatches, run: RunDirectory, epoch_records: list[dict],
                  config: RunConfig, total_steps: int, *, progress: bool, info: DistInfo, device: torch.device,
                  stop_after_epochs: int | None, checkpoint: Callable[[int, bool], None]) -> bool:
    """Run the epochs from the run's start epoch; append to ``epoch_records``; True when the last is done."""
    tcfg, o = config.train, config.optim
    steps_per_epoch = batches.steps_per_epoch
    warmup_steps = min(int(round(o.warmup_epochs * steps_per_epoch)), total_steps)
    bar = tqdm(total=total_steps, initial=run.start_epoch * steps_per_epoch, desc=f"pretrain {config.loss.method}",
               disable=not progress, unit="step", dynamic_ncols=True)
    stepper.model.train()
    try:
        for epoch in range(run.start_epoch, tcfg.epochs):
            t_epoch, loss_sum = time.perf_counter(), 0.0
            for batch in batches.epoch(epoch):
                step = batch.step
                lr = learning_rate(step, total_steps=total_steps, warmup_steps=warmup_steps, base_lr=o.lr,
                                   schedule=o.schedule, final_lr_fraction=o.final_lr_fraction)
                for group in stepper.optimizer.param_groups:
                    group["lr"] = lr
                inputs = stepper.method.batch_inputs(batch, batches.dataset)
                try:
                    loss_value = stepper.step(batch.views, step, inputs)
                except FloatingPointError as exc:
                    raise FloatingPointError(f"non-finite loss at step {step} (epoch {epoch}, lr {lr:.4g}): lower "
                                             "optim.lr, check loss.hparams (e.g. a larger epsilon) or disable "
                                             f"train.amp [{exc}]") from None
                loss_value = all_reduce_mean(loss_value, info, device)
                loss_sum += loss_value
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss_value:.4f}", lr=f"{lr:.3g}")
                if step % tcfg.log_every == 0:
                    run.log({"type": "step", "epoch": epoch, "step": step, "loss": loss_value, "lr": lr})
            seconds = time.perf_counter() - t_epoch
            record = {
                "type": "epoch", "epoch": epoch, "loss": loss_sum / steps_per_epoch, "lr": lr,
                "steps": steps_per_epoch, "seconds": seconds,
                "images_per_s": steps_per_epoch * batches.global_batch / max(seconds, 1e-9),
            }
            run.log(record)
            epoch_records.append(record)
            done = epoch + 1
            stopping = stop_after_epochs is not None and done >= stop_after_epochs and done < tcfg.epochs
            if done == tcfg.epochs or done % tcfg.checkpoint_every == 0 or stopping:
                checkpoint(done, done == tcfg.epochs)
            if stopping:
                break
    finally:
        bar.close()
    return bool(epoch_records) and epoch_records[-1]["epoch"] + 1 == tcfg.epochs


def load_run(run_dir: str | os.PathLike, *, map_location: Any = "cpu", require_finished: bool = True):
    """Rebuild the model of a run directory from ``config.json`` + ``checkpoint.pt``.

    Returns ``(config, model)`` with the model in eval mode on ``map_location``.
    """
    run = Path(run_dir)
    cfg_path = run / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run} is not a run directory (no {CONFIG_NAME}); create one with 'gca pretrain'")
    config = config_from_dict(read_json_file(cfg_path, "the run's configuration"))
    ckpt = load_checkpoint(run / CHECKPOINT_NAME, map_location=map_location)
    if require_finished and not ckpt.get("finished"):
        raise RuntimeError(
            f"run {run} stopped after epoch {ckpt['epoch']} of {config.train.epochs}; finish it with "
            f"'gca pretrain --resume --out {run}', or evaluate it as it is with 'gca evaluate --allow-unfinished' "
            "(require_finished=False)"
        )
    state = ckpt["model"]
    if any(".module." in k for k in state):  # pragma: no cover - defensive, we save unwrapped models
        state = {k.replace(".module.", "."): v for k, v in state.items()}
    classifier = state.get("classifier.weight")  # the supervised row: its number of classes
    model = method_class(config.loss.method).build_model(
        config, in_channels=config.model.in_channels or 3,
        n_classes=None if classifier is None else int(classifier.shape[0]))
    model.load_state_dict(state)
    model.to(map_location).eval()
    return config, model
