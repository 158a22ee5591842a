"""The ``bench`` command line.

    bench list                      methods, tasks and models, one line each
    bench run --method M --task K --model X [--T N] [--json] ...
    bench sweep [--methods ...] [--tasks ...] [--set k=v1,v2] [--executor serial|ray] ...
    bench leaderboard [--results DIR] [--out DIR]
    bench ui [--results DIR] [--port N]
    bench zoo list | bench zoo train NAME [--task K]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("bench")


class UsageError(ValueError):
    """Bad command-line input: printed without a traceback, exit status 2."""


# --------------------------------------------------------------------------------------
def setup_logging(verbosity: int, quiet: bool = False) -> None:
    """Configure logging once for the whole command (see :mod:`snnbench.console`)."""
    from snnbench.console import configure_logging

    configure_logging(verbose=verbosity, quiet=quiet)


def _verbosity_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """-q/-v on the top-level parser and on every sub-command (``bench sweep -q`` and ``bench -q sweep``)."""
    default = 0 if top else argparse.SUPPRESS
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="more output: -v shows information and third-party warnings, -vv debug")
    parser.add_argument("-q", "--quiet", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="print nothing but errors")


def _add_cell_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--T", type=int, default=None, help="largest time-step simulated (default 32)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a method setting (repeatable), e.g. --set n=4 --set coding=rate")
    p.add_argument("--calib-size", type=int, default=None, help="calibration images from the training split (1000)")
    p.add_argument("--calib-batch-size", type=int, default=None,
                   help="calibration batch size (percentile/max statistics depend on it; default 100)")
    p.add_argument("--calibrate-on-eval", action="store_true",
                   help="calibrate on the first --calib-size evaluation images (the DCGS paper's protocol; "
                        "the ledger and leaderboard mark the cell 'calibrated on eval')")
    p.add_argument("--energy-model", default=None, metavar="NAME",
                   help="energy convention of the printed energy ratio (default horowitz45nm-v1; every "
                        "convention is in the JSON as energy_ratio@NAME)")
    p.add_argument("--eval-size", type=int, default=None, help="evaluation images (default: the whole split)")
    p.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (task default)")
    p.add_argument("--seed", type=int, default=0, help="seed for the calibration subset and the method")
    p.add_argument("--data-root", default=None, help="dataset location (task-specific; see bench list)")
    p.add_argument("--weights", default=None, help="ANN weights file (state dict) instead of the default source")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: the CPUs available to this process, see bench/threads.py)")
    from snnbench.cell import EVAL_TS_HELP

    p.add_argument("--eval-ts", default="auto", help=EVAL_TS_HELP)


# -- bench list ------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from snnbench.plugins import describe, method_registry, task_registry
    from snnbench.tasks.zoo import get_model_spec, list_models, model_origin

    show_all = not (args.methods or args.tasks or args.models)
    if show_all or args.methods:
        reg = method_registry()
        print("methods:")
        for name in reg.names():
            cls = reg.get(name)
            origin = f"  [{reg.origin(name)}]" if args.verbose else ""
            print(f"  {name:<14} v{cls.version:<3} {describe(cls)}{origin}")
    if show_all or args.tasks:
        reg = task_registry()
        print("tasks:")
        for name in reg.names():
            cls = reg.get(name)
            origin = f"  [{reg.origin(name)}]" if args.verbose else ""
            print(f"  {name:<14} {cls.metric:<6} {describe(cls)}{origin}")
    if show_all or args.models:
        print("models:")
        for name in list_models():
            spec = get_model_spec(name)
            origin = f"  [{model_origin(name)}]" if args.verbose else ""
            print(f"  {name:<24} {','.join(spec.tasks):<34} {spec.description}{origin}")
        print("  (plus torchvision/NAME and timm/NAME for any classifier of those libraries)")
    return 0


# -- flag validation shared by bench run and bench sweep ----------------------------------
VALID_DEVICES = "cpu, cuda, cuda:N or auto"


def check_device(device: str) -> None:
    """``--device`` must be cpu, cuda, cuda:N or auto (whether CUDA exists is checked where the cell runs)."""
    name, _, index = str(device).partition(":")
    ok = (device in ("cpu", "cuda", "auto") or (name == "cuda" and index.isdigit()))
    if not ok:
        raise UsageError(f"--device must be {VALID_DEVICES}, not {device!r}")


def check_cell_flags(args: argparse.Namespace) -> None:
    """The cell flags every command validates the same way: --T, sizes, --device.

    Raises:
        UsageError: naming the flag (exit status 2).
    """
    if args.T is not None and args.T < 1:
        raise UsageError("--T must be at least 1")
    for flag in ("calib_size", "eval_size", "batch_size", "calib_batch_size"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be positive, not {value}")
    check_device(args.device)


# -- bench run -------------------------------------------------------------------------
def build_cell(args: argparse.Namespace):
    """Validate names and settings up front and build the :class:`CellSpec`."""
    from snnbench.cell import DEFAULT_CALIB_SIZE, DEFAULT_T, CellSpec
    from snnbench.plugins import create_method, create_task
    from snnbench.methods.settings import parse_assignments

    settings = parse_assignments(args.sets)
    method = create_method(args.method, settings)  # raises on unknown method or setting
    task = create_task(args.task, data_root=args.data_root)
    model = args.model or task.default_model()
    from snnbench.tasks.zoo import get_model_spec

    spec = get_model_spec(model)
    if args.task not in spec.tasks:
        raise UsageError(f"model {model!r} does not fit task {args.task!r}; models for {args.task}: "
                         f"{', '.join(task.models())}")
    check_cell_flags(args)
    T = args.T if args.T is not None else DEFAULT_T
    if getattr(args, "energy_model", None):
        from snnbench.energy import get_energy_model

        try:
            get_energy_model(args.energy_model)
        except ValueError as err:
            raise UsageError(str(err)) from None
    del method
    from snnbench.cell import resolve_eval_ts

    try:
        resolve_eval_ts(args.eval_ts, T)
    except ValueError as err:
        raise UsageError(str(err)) from None
    task.check_data()
    return CellSpec(method=args.method, task=args.task, model=model, settings=settings, T=T, seed=args.seed,
                    calib_size=args.calib_size if args.calib_size is not None else DEFAULT_CALIB_SIZE,
                    eval_size=args.eval_size,
                    calib_split="eval" if getattr(args, "calibrate_on_eval", False) else "train",
                    **({"calib_batch_size": args.calib_batch_size} if getattr(args, "calib_batch_size", None) else {}),
                    batch_size=args.batch_size, data_root=args.data_root, weights=args.weights, device=args.device,
                    eval_ts=args.eval_ts)


def format_result_table(result: dict[str, Any], steps: list[int] | None = None,
                        energy_model: str | None = None) -> str:
    """A small human-readable table of a cell result (energy ratio under ``energy_model``)."""
    from snnbench.energy import DEFAULT_ENERGY_MODEL, ratio_key

    energy_key = ratio_key(energy_model) if energy_model else "energy_ratio"
    lines = [f"{result['method']}/{result['model']}/{result['task']}  status={result['status']}  "
             f"wall={result['wall_s']:.1f}s"]
    if result["status"] != "ok":
        lines.append(result.get("error") or "")
        return "\n".join(lines)
    metric = result["metric"]
    lines.append(f"ANN {metric}: {result['ann']:.4f}")
    per_t = result["per_t"]
    T = result["T"]
    steps = steps or sorted({t for t in (1, 2, 4, 8, 16, 32, 64, 128, 256) if t <= T} | {T})
    lines.append(f"{'T':>5} {metric:>8} {'spikes/sample':>14} {'synops/sample':>14} {'energy ratio':>12}"
                 f"  [{energy_model or DEFAULT_ENERGY_MODEL.name}]")
    for t in steps:
        row = per_t[str(t)]
        er = row.get(energy_key)
        score = "-" if row["metric"] is None else format(row["metric"], ".4f")  # t outside --eval-ts
        lines.append(f"{t:>5} {score:>8} {row['spikes_per_sample']:>14.4g} "
                     f"{row['synops_per_sample']:>14.4g} {er if er is None else format(er, '12.4f'):>12}")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from snnbench.threads import apply_threads

    threads = apply_threads(args.threads)  # before any torch work
    from snnbench.runner import run_cell

    spec = build_cell(args)
    result = run_cell(spec, progress=not args.json and sys.stderr.isatty())
    result["threads"] = threads
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(format_result_table(result, energy_model=getattr(args, "energy_model", None)))
    return 0 if result["status"] == "ok" else 1


# -- bench zoo -------------------------------------------------------------------------
def cmd_zoo(args: argparse.Namespace) -> int:
    from snnbench.common import cache
    from snnbench.tasks.zoo import zoo_dir
    directory = zoo_dir(args.zoo_dir)
    if args.zoo_command == "list":
        from snnbench.tasks.zoo import reference

        shipped = reference.manifest()
        state = "used by default" if reference.enabled() else f"off (${reference.ENV_VAR})"
        print(f"reference checkpoints: {reference.reference_dir()} ({state})")
        for stem, entry in shipped.items():
            print(f"  {stem:<60} sha256 {entry['sha256'][:12]}  {entry['size_bytes'] / 2**20:>6.2f} MB")
        entries = cache.list_entries(directory)
        print(f"zoo cache: {directory}")
        if not entries:
            print("  (empty: models are trained on first use, or with 'bench zoo train NAME')")
        for e in entries:
            acc = e.get("test_top1")
            acc_s = f"top1={acc:.4f}" if isinstance(acc, (int, float)) else ""
            print(f"  {e['stem']:<60} {e['status']:<8} {e.get('size_mb', 0):>6.2f} MB  {acc_s}")
        return 0
    if args.zoo_command == "train":
        return _zoo_train(args)
    raise UsageError("bench zoo needs a sub-command: list or train")


def _zoo_train(args: argparse.Namespace) -> int:
    """``bench zoo train NAME``: load (reference, cache) or train a zoo model on its task.

    ``--force`` trains again into the user's zoo cache even when a reference checkpoint
    ships; ``--reference`` (maintainers) then publishes the result as the shipped,
    sha256-pinned reference checkpoint.
    """
    from snnbench.plugins import create_task
    from snnbench.tasks.zoo import get_model_spec, reference

    spec = get_model_spec(args.name)
    if spec.source != "zoo":
        raise UsageError(f"{args.name} is not trained by the zoo (its weights come from {spec.source}); "
                         "zoo models: " + ", ".join(n for n in _zoo_model_names()))
    task_name = args.task or next(iter(spec.recipes))
    if task_name not in spec.recipes:
        raise UsageError(f"the zoo trains {args.name} on {', '.join(spec.recipes)}, not {task_name}")
    if args.reference and not args.retrain:
        raise UsageError("--reference publishes a freshly trained checkpoint: pass --force with it")
    if args.device:
        import os

        from snnbench.runner import resolve_device
        from snnbench.tasks.zoo.training import TRAIN_DEVICE_ENV

        os.environ[TRAIN_DEVICE_ENV] = str(resolve_device(args.device))
    task = create_task(task_name, data_root=args.data_root, zoo_dir=args.zoo_dir)
    bundle = task.build(args.name, progress=sys.stderr.isatty(), retrain=args.retrain)
    record = bundle.info["zoo"]
    score = {k: v for k, v in record.items() if k.startswith(("test_", "val_"))
             and isinstance(v, (int, float))}
    shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(score.items())[:3])
    print(f"{args.name} on {task_name}: {shown} ({record['cache']}) -> {record['path']} "
          f"sha256 {record.get('sha256', '?')[:12]}")
    if args.reference:
        target = reference.publish(Path(record["path"]).stem, Path(record["path"]), record)
        print(f"published as the reference checkpoint {target}")
    elif args.retrain and reference.manifest().get(Path(record["path"]).stem):
        print(f"note: a reference checkpoint ships for this entry and is used by default; evaluate yours with "
              f"--weights {record['path']} or {reference.ENV_VAR}=off")
    return 0


def _zoo_model_names() -> list[str]:
    from snnbench.tasks.zoo import get_model_spec, list_models

    return [n for n in list_models() if get_model_spec(n).source == "zoo"]


# --------------------------------------------------------------------------------------
def cmd_sweep(args: argparse.Namespace) -> int:
    from snnbench.sweep import cmd_sweep as run

    return run(args)


def cmd_ui(args: argparse.Namespace) -> int:
    from snnbench.ui import cmd_ui as run

    return run(args)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from snnbench.leaderboard.cli import cmd_leaderboard as run

    return run(args)


def _add_leaderboard(sub) -> None:
    from snnbench.leaderboard.cli import add_leaderboard_parser

    add_leaderboard_parser(sub)


def _add_sweep(sub) -> None:
    from snnbench.sweep import add_sweep_parser

    add_sweep_parser(sub)


def _add_compare(sub) -> None:
    from snnbench.compare import add_compare_parser

    add_compare_parser(sub)


def cmd_compare(args: argparse.Namespace) -> int:
    from snnbench.compare import cmd_compare as run_compare

    return run_compare(args)


def _add_ui(sub) -> None:
    from snnbench.ui import add_ui_parser

    add_ui_parser(sub)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"list": cmd_list, "run": cmd_run, "zoo": cmd_zoo,
                                                            "sweep": cmd_sweep, "ui": cmd_ui,
                                                            "leaderboard": cmd_leaderboard,
                                                            "compare": cmd_compare}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="snnbench: benchmark training-free ANN-to-SNN "
                                     "conversion methods across tasks, models and time-steps.")
    _verbosity_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list methods, tasks and models")
    p.add_argument("--methods", action="store_true", help="only methods")
    p.add_argument("--tasks", action="store_true", help="only tasks")
    p.add_argument("--models", action="store_true", help="only models")

    p = sub.add_parser("run", help="run one method x task x model cell in-process",
                       description="Convert one ANN with one method, simulate it to T and report the metric, "
                                   "spikes and energy ratio at every t.")
    p.add_argument("--method", required=True, help="conversion method (see bench list)")
    p.add_argument("--task", default="fashion_mnist", help="task (default fashion_mnist)")
    p.add_argument("--model", default=None, help="model (default: the task's default model)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object (the result contract)")
    _add_cell_options(p)

    p = sub.add_parser("zoo", help="the cache of models the project trains itself")
    zoo = p.add_subparsers(dest="zoo_command", metavar="SUBCOMMAND")
    zl = zoo.add_parser("list", help="show cached models")
    zl.add_argument("--zoo-dir", default=None, help="cache directory (default ~/.cache/snnbench/zoo or $SNNBENCH_ZOO_DIR)")
    zt = zoo.add_parser("train", help="train (or load) a zoo model and cache it")
    zt.add_argument("name", help="zoo model, e.g. vgg_small")
    zt.add_argument("--task", default=None, help="dataset to train on (default: the model's first, fashion_mnist)")
    zt.add_argument("--data-root", default=None)
    zt.add_argument("--force", "--retrain", dest="retrain", action="store_true",
                    help="train again even if a reference checkpoint or a cached copy exists")
    zt.add_argument("--reference", action="store_true",
                    help="with --force: publish the result as the shipped reference checkpoint (maintainers)")

    zt.add_argument("--zoo-dir", default=None)
    zt.add_argument("--device", default=None,
                    help="train on cpu (default), cuda or cuda:N; the checkpoint is evaluated and saved on the CPU")
    for extra in _EXTRA_PARSERS:
        extra(sub)
    for name, subparser in sub.choices.items():
        _verbosity_options(subparser, top=False)
        if name == "zoo":
            for zoo_parser in zoo.choices.values():
                _verbosity_options(zoo_parser, top=False)
    return parser


_EXTRA_PARSERS: list[Callable[[Any], None]] = [_add_sweep, _add_ui, _add_leaderboard, _add_compare]


def main(argv: list[str] | None = None) -> int:
    from snnbench.threads import prepare_openmp

    prepare_openmp()  # before anything imports torch (bench/threads.py)
    from snnbench.grid import GridError
    from snnbench.common.registry import UnknownNameError
    from snnbench.methods.settings import SettingsError
    from snnbench.tasks.base import DataNotFoundError

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, quiet=args.quiet)
    if not args.command:
        parser.print_help()
        return 2
    if args.command == "zoo" and not getattr(args, "zoo_command", None):
        parser.parse_args(["zoo", "--help"])
    try:
        return COMMANDS[args.command](args)
    except (UsageError, UnknownNameError, SettingsError, DataNotFoundError, ValueError, GridError) as err:
        print(f"bench {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
