"""The ``gca`` command line (console script and ``python -m gca``).

::

    gca pretrain --method gca-uot --dataset digits --profile smoke --out runs/smoke
    gca pretrain --resume --out runs/smoke             # continue a killed run
    gca evaluate runs/smoke                            # linear probe, kNN, alignment/uniformity
    gca config --profile paper --method gca-ince       # print the resolved configuration
    gca profiles                                       # what each profile sets
    gca data list | gca data fetch cifar10 | gca data prepare cifar10
    gca figure --list | gca figure standard-accuracy-by-method   # redraw one figure, check it byte for byte

Options of the run configuration (:mod:`gca.config`) are set with dotted overrides, either as
``--set train.epochs=5`` or as bare ``train.epochs=5`` arguments; the common ones also have flags
(``--epochs``, ``--batch-size``, ``--lr``, ``--seed``, ``--data-dir``, ``--device``). Unknown options
and invalid values exit with status 2 and a message naming them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]


class _UsageError(Exception):
    pass


def _add_config_options(p: argparse.ArgumentParser, *, with_out: bool) -> None:
    from gca.config import METHODS, PROFILES

    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="configuration profile (default: smoke; with --resume: the run's own config)")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="method of gca.methods (a loss name, byol, or a calibration row)")
    p.add_argument("--dataset", default=None, help="dataset name (see 'gca data list')")
    p.add_argument("--data-dir", default=None, help="data root (default: $GCA_DATA_DIR, else ./data)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--epochs", type=int, default=None, help="= train.epochs")
    p.add_argument("--batch-size", type=int, default=None, help="= train.batch_size (global batch)")
    p.add_argument("--lr", type=float, default=None, help="= optim.lr")
    p.add_argument("--seed", type=int, default=None, help="= train.seed")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any option, e.g. --set loss.hparams.epsilon=0.3 (repeatable)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more overrides, e.g. train.epochs=5")
    if with_out:
        p.add_argument("--out", required=True, help="run directory to create (or to resume)")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
        p.add_argument("--stop-after-epochs", type=int, default=None, metavar="N",
                       help="stop after N epochs (checkpoint written); continue later with --resume")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gca", description="Generalised Contrastive Alignment: pretraining, "
                                     "evaluation and data (see 'gca COMMAND --help').")
    from gca import __version__

    parser.add_argument("--version", action="version", version=f"gca {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also: GCA_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pretrain", help="pretrain an encoder; writes a run directory")
    _add_config_options(p, with_out=True)

    p = sub.add_parser("evaluate", help="frozen linear probe, kNN, alignment/uniformity of a run")
    p.add_argument("run_dir", help="a run directory written by 'gca pretrain'")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--data-dir", default=None, help="data root (default: the run's, else $GCA_DATA_DIR, ./data)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="eval.* overrides, e.g. --set eval.knn_k=20 --set eval.corruptions=gaussian_noise,contrast")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more eval.* overrides")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="evaluate a run that stopped before its last epoch (its latest checkpoint)")

    p = sub.add_parser("config", help="print the resolved configuration as JSON")
    _add_config_options(p, with_out=False)

    sub.add_parser("profiles", help="list the profiles and what they change")

    p = sub.add_parser("figure", help="list the book's figures, or redraw one and check it byte for byte")
    p.add_argument("figure_id", nargs="?", help="a figure id (see --list)")
    p.add_argument("--list", action="store_true", help="list the figure ids with their notebooks and titles")
    p.add_argument("--out", default=None, help="folder for the redrawn files (default: a new temporary folder)")

    p = sub.add_parser("data", help="list, fetch or prepare datasets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = dsub.add_parser("list", help="datasets, their files and whether they are present")
    q.add_argument("--data-dir", default=None)
    q = dsub.add_parser("fetch", help="download the official files and verify their checksums")
    q.add_argument("name")
    q.add_argument("--data-dir", default=None)
    q.add_argument("--timeout", type=float, default=10.0, help="seconds before a connection attempt fails")
    q = dsub.add_parser("prepare", help="write cifar10 from the offline JPEG copy (shared/data/cifar10)")
    q.add_argument("name", choices=["cifar10"])
    q.add_argument("--data-dir", default=None)
    q.add_argument("--force", action="store_true")
    return parser


def _overrides(args) -> list[str]:
    items = list(args.sets) + list(args.overrides)
    for item in items:
        if "=" not in item:
            raise _UsageError(f"override {item!r} must look like KEY=VALUE (e.g. train.epochs=5)")
    flags = {
        "data.data_dir": getattr(args, "data_dir", None), "train.device": getattr(args, "device", None),
        "train.epochs": getattr(args, "epochs", None), "train.batch_size": getattr(args, "batch_size", None),
        "optim.lr": getattr(args, "lr", None), "train.seed": getattr(args, "seed", None),
    }
    return [f"{k}={v}" for k, v in flags.items() if v is not None] + items


def _resolve(args):
    from gca.config import resolve_config

    return resolve_config(args.profile or "smoke", method=args.method, dataset=args.dataset,
                          overrides=_overrides(args))


def _cmd_pretrain(args) -> int:
    from gca.config import apply_overrides, config_from_dict, validate_config
    from gca.train import CONFIG_NAME, pretrain, read_json_file

    out = Path(args.out)
    if args.resume and not (out / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"--resume: {out} holds no run (no {CONFIG_NAME}); check the path, or drop --resume "
                                "to start a new run")
    if args.resume:
        config = config_from_dict(read_json_file(out / CONFIG_NAME, "the run's configuration"))
        given = [n for n in ("profile", "method", "dataset") if getattr(args, n) is not None]
        if given:
            raise _UsageError(f"--resume continues the run's own configuration; drop {', '.join('--' + g for g in given)} "
                              "(only --device and train.threads / train.log_every may change)")
        config = apply_overrides(config, _overrides(args))
        validate_config(config)
    else:
        config = _resolve(args)
    start = time.perf_counter()
    result = pretrain(config, out, resume=args.resume, progress=not args.no_progress,
                      stop_after_epochs=args.stop_after_epochs)
    last = result.epochs[-1] if result.epochs else {}
    done = last["epoch"] + 1 if last else 0
    print(json.dumps({"run_dir": str(result.run_dir), "method": config.loss.method, "epochs": done,
                      "epochs_planned": config.train.epochs,
                      "final_loss": last.get("loss"), "seconds": round(time.perf_counter() - start, 2),
                      "resumed_from_epoch": result.resumed_from_epoch}))
    return 0


def _cmd_evaluate(args) -> int:
    from gca.eval import evaluate_run

    overrides = list(args.sets) + list(args.overrides)
    for item in overrides:
        if "=" not in item:
            raise _UsageError(f"override {item!r} must look like KEY=VALUE (e.g. eval.knn_k=20)")
    if args.data_dir is not None:
        overrides.append(f"data.data_dir={args.data_dir}")
    start = time.perf_counter()
    metrics = evaluate_run(args.run_dir, device=args.device, overrides=overrides, progress=not args.no_progress,
                           require_finished=not args.allow_unfinished)
    keys = ("linear_accuracy", "knn_accuracy", "alignment", "uniformity", "domain_accuracy",
            "corrupted_linear_accuracy_mean")
    summary = {k: metrics[k] for k in keys if k in metrics}
    summary["seconds"] = round(time.perf_counter() - start, 2)
    summary["written"] = str(Path(args.run_dir) / "eval.json")
    print(json.dumps(summary))
    return 0


def _cmd_config(args) -> int:
    from gca.config import config_to_dict, run_config_hash

    config = _resolve(args)
    print(json.dumps({"config": config_to_dict(config), "config_hash": run_config_hash(config)}, indent=2))
    return 0


def _cmd_profiles(args) -> int:
    from gca.config import PROFILES

    for name, values in PROFILES.items():
        print(f"{name}:")
        if name == "paper":
            print("  (the dataclass defaults are the paper's configuration; see 'gca config --profile paper')")
        for k, v in values.items():
            print(f"  {k} = {v}")
    return 0


def _cmd_data(args) -> int:
    from gca import data as gdata

    if args.data_command == "list":
        root = gdata.resolve_data_dir(args.data_dir)
        available = getattr(gdata, "is_available", None)
        print(f"data root: {root}")
        for name, info in gdata.DATASETS.items():
            how = ("embedded" if info.embedded else "fetchable" if info.resources
                   else "manual download" if info.manual else "derived")
            status = ""
            if available is not None:
                status = "present" if available(name, data_dir=root) else "absent"
            print(f"  {name:<22} {status:<8} {how:<16} {info.location}")
        return 0
    if args.data_command == "fetch":
        root = gdata.fetch(args.name, data_dir=args.data_dir, timeout=args.timeout)
        print(f"{args.name}: ready under {root}")
        return 0
    if args.data_command == "prepare":
        root = gdata.prepare_offline_cifar10(args.data_dir, force=args.force)
        print(f"cifar10 (JPEG copy): ready under {root / 'cifar-10-batches-py'}")
        return 0
    raise _UsageError(f"unknown data action {args.data_command!r}")  # pragma: no cover


def _cmd_figure(args) -> int:
    from gca.book import list_figures, regenerate_figure

    if args.list or args.figure_id is None:
        if not args.list:
            raise _UsageError("give a figure id, or --list to see them")
        for rec in list_figures():
            inputs = len(rec.get("inputs") or [])
            print(f"{rec['figure_id']:<36} {rec['notebook']:<40} {rec.get('title') or ''}"
                  + (f" [{inputs} input files]" if inputs else ""))
        return 0
    result = regenerate_figure(args.figure_id, out_dir=args.out)
    print(json.dumps(result, indent=1))
    if not result["identical"]:
        raise RuntimeError(f"figure {args.figure_id!r} redrawn in {result['out_dir']} differs from the book's copy "
                           "(changed code or inputs since the book was built?)")
    return 0


_COMMANDS = {"pretrain": _cmd_pretrain, "evaluate": _cmd_evaluate, "config": _cmd_config,
             "profiles": _cmd_profiles, "data": _cmd_data, "figure": _cmd_figure}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 runtime failure, 2 usage / input error)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides placed after an option (argparse stops filling the positional list there)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    debug = args.debug or os.environ.get("GCA_DEBUG", "").strip() not in ("", "0")
    try:
        return _COMMANDS[args.command](args)
    except _UsageError as exc:
        parser.error(str(exc))
    except Exception as exc:  # one line naming the file or value and the fix; the traceback only on request
        if debug:
            raise
        status, kind = _classify(exc)
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"gca {args.command}: {kind}: {text} (--debug for the traceback)", file=sys.stderr)
        return status
    return 0  # pragma: no cover


def _classify(exc: BaseException) -> tuple[int, str]:
    """Exit status and word for an error: 2 for bad input (a value, a file), 1 for a failed run."""
    if isinstance(exc, (FloatingPointError, RuntimeError)):
        return 1, "failed"
    if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, FileExistsError, IsADirectoryError,
                                                           NotADirectoryError, PermissionError)):
        return 1, "failed"  # disk full, I/O error
    if isinstance(exc, (ValueError, TypeError, KeyError, OSError)):
        return 2, "error"
    return 1, f"failed ({type(exc).__name__})"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
