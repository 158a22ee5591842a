"""Two cells at once on the same cores: each one's slowdown against running alone.

    python -m benchmarks.bench_contention [--model vgg_small] [--batch 32] [--T 8] [--repeats 5] [--ray]

A "cell" here is a fixed piece of simulation work in its own process (dcgs and rate on
the same batch, eager steps, random weights). Scenarios, all in one run:

* ``alone``: one process, threads = the CPUs available to it, idle OpenMP threads
  sleeping (the bench/threads.py default);
* ``alone, 1 thread``; ``alone, torch default`` (one spinning thread per core: before issue 21);
* ``2 concurrent, torch default threads``: what two serial runs (or a Ray worker that
  does not set its threads) did before issue 21;
* ``2 concurrent, default policy``: two serial runs without ``--threads`` now;
* ``2 concurrent, --threads 1``: two serial runs each given one of the two cores;
* ``ray 2 workers x num_cpus=1`` (``--ray``): two Ray tasks, threads set from num_cpus.

Slowdown = a process's median time in the scenario / the median time ``alone``.
Target (issue 21): <= 2.2x with both cells busy on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import print_table, write_json


def workload(model_name: str, batch: int, T: int, repeats: int) -> list[float]:
    """Seconds per repetition of: dcgs + rate simulation of ``T`` steps on one batch."""
    import torch

    from benchmarks.common import benchmark_models, convert

    build, shape = benchmark_models()[model_name]
    model = build()
    torch.manual_seed(1)
    x = torch.randn(batch, *shape)
    snns = [convert(model, x, method, T, {"fuse": False}) for method in ("dcgs", "rate")]

    def once() -> None:
        with torch.inference_mode():
            for snn in snns:
                snn.reset()
                for _ in snn.simulate(x, T):
                    pass

    once()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return times


def worker_main(args: argparse.Namespace) -> None:
    """In the child: set threads by the policy under test (bench/threads.py, which also makes
    idle OpenMP threads sleep), then time the workload."""
    if args.threads >= 0:  # -1: leave torch's default (one thread per core of the machine)
        from snnbench.threads import apply_threads

        apply_threads(args.threads or None)
    import torch

    times = workload(args.model, args.batch, args.T, args.repeats)
    print(json.dumps({"threads": torch.get_num_threads(), "times": times}))


def spawn(args: argparse.Namespace, threads: int, copies: int) -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "benchmarks.bench_contention", "--worker", "--threads", str(threads),
           "--model", args.model, "--batch", str(args.batch), "--T", str(args.T), "--repeats", str(args.repeats)]
    # the OpenMP wait policy is read when torch loads, i.e. before this module's imports: the
    # policy scenarios get what snnbench's CLI and executors set up (bench/threads.py)
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if threads >= 0:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(copies)]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"worker failed ({p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def ray_tasks(args: argparse.Namespace, copies: int) -> list[dict[str, Any]]:
    import ray

    from snnbench.executors import RayExecutor

    RayExecutor(None, num_cpus=2)._init()

    def task(model: str, batch: int, T: int, repeats: int, cpus: float) -> dict[str, Any]:
        from snnbench.threads import apply_threads

        threads = apply_threads(cpus)  # what run_cell_in_process does with the task's num_cpus
        return {"threads": threads, "times": workload(model, batch, T, repeats)}

    remote = ray.remote(num_cpus=1)(task)
    return ray.get([remote.remote(args.model, args.batch, args.T, args.repeats, 1.0) for _ in range(copies)])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg_small")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ray", action="store_true", help="also run two Ray tasks with num_cpus=1")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args)
        return {}
    from snnbench.threads import available_cpus

    scenarios = [("alone", 0, 1), ("alone, 1 thread", 1, 1), ("alone, torch default", -1, 1),
                 ("2 concurrent, torch default threads", -1, 2), ("2 concurrent, default policy", 0, 2),
                 ("2 concurrent, --threads 1", 1, 2)]
    results: dict[str, list[dict[str, Any]]] = {}
    for name, threads, copies in scenarios:
        results[name] = spawn(args, threads, copies)
        print(name, [round(statistics.median(r["times"]), 3) for r in results[name]], flush=True)
    if args.ray:
        results["ray 2 workers x num_cpus=1"] = ray_tasks(args, 2)
    base = statistics.median(results["alone"][0]["times"])
    rows = []
    for name, runs in results.items():
        for i, r in enumerate(runs):
            med = statistics.median(r["times"])
            rows.append({"scenario": name, "process": i + 1, "threads": r["threads"], "median_s": med,
                         "slowdown_vs_alone": med / base})
    print_table(rows, ["scenario", "process", "threads", "median_s", "slowdown_vs_alone"])
    payload = {"benchmark": "contention", "model": args.model, "batch": args.batch, "T": args.T,
               "available_cpus": available_cpus(), "cpu_count": os.cpu_count(),
               "loadavg_at_end": os.getloadavg(), "rows": rows, "target_slowdown": 2.2}
    write_json("contention", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
