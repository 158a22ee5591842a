"""Shared helpers of the benchmarks: timing, tables, JSON output, model fixtures."""

from __future__ import annotations

import argparse
import json
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
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    p.add_argument("--out", default=None, help="JSON output path (default benchmarks/out/<name>.json)")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs (CUDA-synchronised)."""
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


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    info = {"torch": torch.__version__, "device": str(device), "threads": threads, "machine": platform.machine(),
            "python": platform.python_version()}
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
