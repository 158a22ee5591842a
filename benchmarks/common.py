"""Shared helpers of the benchmarks: timing, tables, JSON output, model fixtures.

How every benchmark times (so that its ratios hold up on a shared, noisy machine):

* :func:`interleaved` warms **every** candidate first (compilation, allocator and page
  faults of a fresh heap belong to no candidate), then runs ``repeats`` rounds, each round
  timing every candidate once, the order rotating from round to round;
* :func:`paired_ratio` divides the two candidates' times **within each round** and reports
  the median with the min-max range of those paired ratios;
* :func:`environment` records the torch threads and the load average (at the start and,
  via :func:`finish_environment`, at the end), so a reader can judge the noise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

OUT_DIR = Path(__file__).parent / "out"


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when present)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=5,
                   help="interleaved rounds (paired ratios: median and min-max reported)")
    p.add_argument("--out", default=None, help="JSON output path (default benchmarks/out/<name>.json)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time; cpu: CPU time of this process (CPU devices only; on a shared "
                        "machine it does not count the time other processes hold the cores)")


def clock(name: str, device: torch.device) -> Callable[[], float]:
    """The timer of ``--clock``: ``time.perf_counter`` (wall) or ``time.process_time`` (CPU time of
    this process: with one torch thread, the work of the candidate even while other processes
    share the cores; memory-bandwidth and cache contention still show)."""
    if name == "cpu":
        if device.type != "cpu":
            raise SystemExit("--clock cpu times CPU work; on a CUDA device use --clock wall")
        return time.process_time
    return time.perf_counter


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs (CUDA-synchronised).

    For a single quantity only: to compare candidates use :func:`interleaved` and
    :func:`paired_ratio`."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(candidates: dict[str, Callable[[], Any]], device: torch.device, repeats: int,
                warmup: int = 1, timer: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Times (``timer``: wall by default) of every candidate over ``repeats`` rounds (one run of
    each per round).

    Every candidate runs ``warmup`` times before any timing; the order within a round
    rotates, so no candidate always runs first (in a fresh heap) or last.
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = timer()
            candidates[name]()
            synchronize(device)
            times[name].append(timer() - start)
    return times


def paired_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> dict[str, float]:
    """``numerator / denominator`` per round: median, min and max of the paired ratios."""
    ratios = [a / b for a, b in zip(times[numerator], times[denominator])]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "rounds": len(ratios)}


def ratio_text(r: dict[str, float]) -> str:
    """``1.28 (1.20-1.35)``: the median paired ratio and its range."""
    return f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"


def median(values: list[float]) -> float:
    return statistics.median(values)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (empty where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - not on POSIX
        return []


def finish_environment(info: dict[str, Any]) -> dict[str, Any]:
    """Add the load average at the end of the run to :func:`environment`'s record."""
    info["load_average_end"] = load_average()
    return info


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    """Versions, device, torch threads, CPU count and the load average at the start; the process
    keeps freed memory as ``bench`` processes do (snnbench.heap; ``malloc_retain`` records it)."""
    from snnbench.heap import retain_freed_memory

    info = {"malloc_retain": retain_freed_memory(), "torch": torch.__version__, "device": str(device), "threads": threads, "machine": platform.machine(),
            "python": platform.python_version(), "cpus": os.cpu_count(), "load_average_start": load_average(),
            "date": time.strftime("%Y-%m-%d %H:%M")}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)))


def write_json(name: str, payload: dict[str, Any], path: str | None) -> Path:
    target = Path(path) if path else OUT_DIR / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {target}")
    return target


def benchmark_models() -> dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, ...]]]:
    """Architectures of the simulation benchmark (random weights: speed does not depend on them)."""
    import torchvision

    from snnbench.tasks.zoo import get_model_spec

    def zoo(name: str, shape: tuple[int, int, int]) -> Callable[[], torch.nn.Module]:
        def build() -> torch.nn.Module:
            spec = get_model_spec(name)
            torch.manual_seed(0)
            return spec.build(spec, in_shape=shape, num_classes=10).eval()
        return build

    def resnet18() -> torch.nn.Module:
        torch.manual_seed(0)
        return torchvision.models.resnet18(num_classes=10).eval()

    return {
        "vgg_small": (zoo("vgg_small", (1, 28, 28)), (1, 28, 28)),
        "resnet18": (resnet18, (3, 64, 64)),
        "vit_mini": (zoo("vit_mini", (1, 28, 28)), (1, 28, 28)),
        "resnet_small": (zoo("resnet_small", (1, 28, 28)), (1, 28, 28)),
        "vgg_small_qcfs": (zoo("vgg_small_qcfs", (1, 28, 28)), (1, 28, 28)),
    }


def convert(model: torch.nn.Module, x: torch.Tensor, method_name: str, T: int, settings: dict | None = None):
    """Calibrate on ``x`` and convert with a registered method."""
    from snnbench.plugins import create_method
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.snn.stats import collect_stats

    method = create_method(method_name, settings or {})
    ctx = ConversionContext(T=T, example=x, device=x.device, calib_batches=lambda: iter([x]))
    stats = collect_stats(model, [x], method.stat_kinds(model, ctx))
    return method.convert(model, stats, ctx)
