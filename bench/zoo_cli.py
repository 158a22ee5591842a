"""``bench zoo list`` and ``bench zoo train NAME``: the models the project trains itself."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from snnbench.cell_flags import UsageError


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


__all__ = ["cmd_zoo"]
