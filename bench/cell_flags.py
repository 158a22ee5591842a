"""The cell flags, declared once for ``bench run`` and ``bench sweep``, and their validation.

Every flag that shapes a cell (``--T``, sizes, ``--seed``/``--seeds``, ``--device``,
``--eval-ts`` ...) is added to both parsers by :func:`add_cell_flags`, validated by
:func:`check_cell_flags` and turned into :class:`~snnbench.cell.CellSpec` fields by
:func:`cell_fields`, so the two commands cannot drift apart. Where a flag means one value
in ``run`` and a list in ``sweep`` (``--set``, the seeds) the wording says so.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

Command = Literal["run", "sweep"]
VALID_DEVICES = "cpu, cuda, cuda:N or auto"


class UsageError(ValueError):
    """Bad command-line input: printed without a traceback, exit status 2."""


def add_cell_flags(p: argparse.ArgumentParser, command: Command) -> None:
    """Add the cell flags to the parser of ``command`` (``run``: one cell; ``sweep``: a grid)."""
    from snnbench.cell import EVAL_TS_HELP

    sweep = command == "sweep"
    p.add_argument("--T", type=int, default=None,
                   help="largest time-step of every cell" if sweep else "largest time-step simulated (default 32)")
    if sweep:
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=V1,V2",
                       help="vary a method setting (repeatable): --set coding=rate,differential --set n=4,8")
        p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    else:
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override a method setting (repeatable), e.g. --set n=4 --set coding=rate")
        p.add_argument("--seed", type=int, default=0, help="seed for the calibration subset and the method")
    p.add_argument("--calib-size", type=int, default=None, help="calibration images from the training split (1000)")
    p.add_argument("--calib-batch-size", type=int, default=None,
                   help="calibration batch size (percentile/max statistics depend on it; default 100)")
    p.add_argument("--calibrate-on-eval", action="store_true",
                   help="calibrate on the first --calib-size evaluation images (the DCGS paper's protocol; "
                        "the ledger and leaderboard mark the cell 'calibrated on eval')")
    p.add_argument("--energy-model", default=None, metavar="NAME",
                   help=("energy convention of the leaderboard rendered at the end" if sweep else
                         "energy convention of the printed energy ratio") +
                        " (default horowitz45nm-v1; every convention is in the record as energy_ratio@NAME)")
    p.add_argument("--eval-size", type=int, default=None, help="evaluation images (default: the whole split)")
    p.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (task default)")
    p.add_argument("--data-root", default=None, help="dataset location (task-specific; see bench list)")
    p.add_argument("--weights", default=None, help="ANN weights file (state dict) instead of the default source")
    p.add_argument("--device", default="cpu", help=VALID_DEVICES)
    p.add_argument("--threads", type=int, default=None,
                   help=("torch threads of each serial or pool cell" if sweep else "torch intra-op threads") +
                        " (default: the CPUs available to this process" + (", shared out among the pool's workers"
                                                                           if sweep else "") +
                        ", see bench/threads.py)")
    p.add_argument("--eval-ts", default="auto", help=EVAL_TS_HELP)


def check_device(device: str) -> None:
    """``--device`` must be cpu, cuda, cuda:N or auto (whether CUDA exists is checked where the cell runs)."""
    name, _, index = str(device).partition(":")
    ok = (device in ("cpu", "cuda", "auto") or (name == "cuda" and index.isdigit()))
    if not ok:
        raise UsageError(f"--device must be {VALID_DEVICES}, not {device!r}")


def check_cell_flags(args: argparse.Namespace) -> None:
    """The cell flags every command validates the same way: --T, sizes, --device, --energy-model.

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
    if getattr(args, "energy_model", None):
        from snnbench.energy import get_energy_model

        try:
            get_energy_model(args.energy_model)  # unknown names: an error listing the valid ones
        except ValueError as err:
            raise UsageError(str(err)) from None


def cell_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~snnbench.cell.CellSpec` fields the cell flags set directly (sizes, places, device)."""
    return {"eval_size": args.eval_size, "batch_size": args.batch_size, "data_root": args.data_root,
            "weights": args.weights, "device": args.device, "eval_ts": args.eval_ts,
            "calib_split": "eval" if getattr(args, "calibrate_on_eval", False) else "train",
            **({"calib_batch_size": args.calib_batch_size} if getattr(args, "calib_batch_size", None) else {})}


__all__ = ["UsageError", "add_cell_flags", "cell_fields", "check_cell_flags", "check_device"]
