"""Memory of a simulation at T = 4 vs T = 64: state lives in neurons, so nothing grows with T.

    python -m benchmarks.bench_memory [--model vgg_small] [--method dcgs] [--batch 64]

Each (T) runs in a fresh subprocess that measures the peak resident set size *during the
simulation* above the level just before it (sampled from /proc/self/statm by a thread),
and, on CUDA, ``torch.cuda.max_memory_allocated`` over the simulation.
Memory, not time: the two runs need fresh processes (a peak cannot be un-reached), so they
are not interleaved; threads and load average are recorded all the same.
Target (issue 10): T = 64 within 1.2x of T = 4.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import torch

from benchmarks.common import add_common_args, environment, finish_environment, print_table, resolve_device, write_json

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def child(args: argparse.Namespace) -> None:
    """Runs in the subprocess: convert, then simulate T steps while sampling RSS."""
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    from snnbench.counting import OpCounter
    from benchmarks.common import benchmark_models, convert

    build, shape = benchmark_models()[args.model]
    model = build().to(device)
    x = torch.randn(args.batch, *shape, device=device)
    snn = convert(model, x, args.method, args.T).to(device)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)

    with torch.inference_mode():
        snn.reset()
        list(zip(range(1), snn.simulate(x, 1)))  # warm-up allocations
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = rss_bytes()
        peak[0] = base
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        snn.reset()
        with OpCounter(snn, args.T) as counter:
            for _ in snn.simulate(x, args.T):
                pass
            counter.add_samples(x.shape[0])
        stop.set()
        thread.join()
    out = {"T": args.T, "rss_base_mb": base / 2**20, "rss_peak_mb": peak[0] / 2**20,
           "rss_growth_mb": (peak[0] - base) / 2**20}
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(out))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--model", default="vgg_small")
    p.add_argument("--method", default="dcgs")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--T", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return {}
    env = environment(resolve_device(args.device), args.threads)
    rows = []
    for T in (4, 64):
        cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--child", "--T", str(T), "--model", args.model,
               "--method", args.method, "--batch", str(args.batch), "--device", args.device,
               "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
        rows.append(json.loads(line[len("RESULT "):]))
    ratio = rows[1]["rss_peak_mb"] / rows[0]["rss_peak_mb"]
    for r in rows:
        r["peak_vs_T4"] = r["rss_peak_mb"] / rows[0]["rss_peak_mb"]
    columns = ["T", "rss_base_mb", "rss_peak_mb", "rss_growth_mb", "peak_vs_T4"]
    if "cuda_peak_mb" in rows[0]:
        for r in rows:
            r["cuda_vs_T4"] = r["cuda_peak_mb"] / rows[0]["cuda_peak_mb"]
        columns += ["cuda_peak_mb", "cuda_vs_T4"]
    print_table(rows, columns)
    device = resolve_device(args.device)
    payload = {"benchmark": "memory", "model": args.model, "method": args.method, "batch": args.batch,
               "environment": finish_environment(env), "rows": rows, "rss_ratio_T64_T4": ratio,
               "target": 1.2}
    write_json("memory" + ("_cuda" if device.type == "cuda" else ""), payload, args.out)
    return payload


if __name__ == "__main__":
    main()
