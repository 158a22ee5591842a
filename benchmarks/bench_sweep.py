"""Sweep throughput: cells per minute, serial vs Ray (local, 2 workers), and the per-cell
overhead of the harness.

    python -m benchmarks.bench_sweep [--eval-size 200] [--T 8]

Cells: ``--methods`` (default ann, calibration, dcgs, rate) on Fashion-MNIST (vgg_small, resnet_small) with small
evaluation and calibration sizes; each executor starts from an empty results directory
(the zoo models are trained once beforehand). The overhead is measured with cells whose
method does nothing (``ann`` on 1 image, distinct seeds): their wall time is the harness:
building the task and model, the cache lookups, the ledger and MLflow writes. With
``--repeats N`` the executors run N rounds, alternating which goes first (each from an
empty results directory); Ray's speed-up is the per-round ratio serial / Ray.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import (add_common_args, environment, finish_environment, median, paired_ratio, print_table,
                               ratio_text, resolve_device, write_json)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--eval-size", type=int, default=200)
    p.add_argument("--calib-size", type=int, default=200)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--models", default="vgg_small,resnet_small")
    p.add_argument("--methods", default="ann,calibration,dcgs,rate",
                   help="methods of the grid (default: the embedded campaign's classification four; "
                        "adafire's searches alone take minutes per cell)")
    p.add_argument("--overhead-cells", type=int, default=6)
    p.add_argument("--skip-ray", action="store_true")
    p.set_defaults(repeats=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment(resolve_device("cpu"), args.threads)
    from snnbench.executors import RayExecutor, SerialExecutor
    from snnbench.grid import GridOptions, expand_grid
    from snnbench.plugins import create_task
    from snnbench.sweep import run_sweep

    models = args.models.split(",")
    task = create_task("fashion_mnist")
    for m in models:  # train (or load) the zoo models outside the timings
        task.build(m, progress=False)
    options = GridOptions(T=args.T, calib_size=args.calib_size, eval_size=args.eval_size)
    cells = expand_grid(args.methods.split(","), ["fashion_mnist"], models, {}, [0], options)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="snnbench-sweep-bench-"))
    try:
        executors = [("serial", lambda d: SerialExecutor(str(d / "cache")))]
        if not args.skip_ray:
            executors.append(("ray (local, 2 workers)",
                              lambda d: RayExecutor(str(d / "cache"), address="local", num_cpus=2)))
        walls: dict[str, list[float]] = {name: [] for name, _ in executors}
        fails: dict[str, int] = {name: 0 for name, _ in executors}
        for r in range(args.repeats):  # rounds; the executor order alternates between rounds
            for name, make in executors[r % len(executors):] + executors[:r % len(executors)]:
                directory = work / f"{name.split()[0]}-{r}"
                start = time.perf_counter()
                outcome = run_sweep(cells, directory, make(directory), experiment="bench")
                walls[name].append(time.perf_counter() - start)
                fails[name] += len(outcome.failed)
        for name, _ in executors:
            wall = median(walls[name])
            row = {"executor": name, "cells": len(cells), "failed": fails[name], "wall_s": wall,
                   "cells_per_min": 60 * len(cells) / wall}
            if name != "serial":
                ratio = paired_ratio(walls, "serial", name)  # serial wall / ray wall = ray's speed-up
                row.update(speedup_vs_serial=ratio["median"], speedup=ratio_text(ratio))
            rows.append(row)
        try:
            import ray

            ray.shutdown()
        except ImportError:
            pass
        noop = expand_grid(["ann"], ["fashion_mnist"], ["vgg_small"], {}, list(range(args.overhead_cells)),
                           GridOptions(T=1, calib_size=1, eval_size=1))
        directory = work / "overhead"
        run_sweep(noop[:1], directory, SerialExecutor(str(directory / "cache")), experiment="bench")  # warm
        start = time.perf_counter()
        run_sweep(noop[1:], directory, SerialExecutor(str(directory / "cache")), experiment="bench")
        per_cell = (time.perf_counter() - start) / (len(noop) - 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, ["executor", "cells", "failed", "wall_s", "cells_per_min", "speedup"])
    print(f"\nharness overhead per cell (method doing nothing, serial, MLflow on): {per_cell:.2f} s")
    payload = {"benchmark": "sweep", "eval_size": args.eval_size, "T": args.T, "models": models,
               "repeats": args.repeats, "environment": finish_environment(env), "rows": rows, "overhead_per_cell_s": per_cell}
    write_json("sweep", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
