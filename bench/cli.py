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
import dataclasses
import json
import logging
import sys
from typing import Any, Callable

from snnbench.cell_flags import UsageError, add_cell_flags, cell_fields, check_cell_flags

log = logging.getLogger("bench")


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
    del method
    from snnbench.cell import resolve_eval_ts

    try:
        resolve_eval_ts(args.eval_ts, T)
    except ValueError as err:
        raise UsageError(str(err)) from None
    task.check_data()
    return CellSpec(method=args.method, task=args.task, model=model, settings=settings, T=T, seed=args.seed,
                    calib_size=args.calib_size if args.calib_size is not None else DEFAULT_CALIB_SIZE,
                    **cell_fields(args))


def cmd_run(args: argparse.Namespace) -> int:
    from snnbench.threads import apply_threads

    threads = apply_threads(args.threads)  # before any torch work
    from snnbench.report import format_result_table
    from snnbench.runner import run_cell

    spec = build_cell(args)
    result = dataclasses.replace(run_cell(spec, progress=not args.json and sys.stderr.isatty()), threads=threads)
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        print(format_result_table(result, energy_model=getattr(args, "energy_model", None)))
    return 0 if result.ok else 1


# --------------------------------------------------------------------------------------
def cmd_sweep(args: argparse.Namespace) -> int:
    from snnbench.sweep import cmd_sweep as run

    return run(args)


def cmd_zoo(args: argparse.Namespace) -> int:
    from snnbench.zoo_cli import cmd_zoo as run

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
    add_cell_flags(p, "run")

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
