"""Fused (torch.compile'd) vs eager neuron steps on the embedded cells' architectures.

    python -m benchmarks.bench_fused [--T 4] [--repeats 3] [--workloads vgg_small,vit_mini,fcos]

Per workload (random weights, the embedded cells' input sizes and batch), method (dcgs,
rate) and path (``fuse=false`` / ``fuse=true``): the first simulation (compilation
included), the median of the next ``--repeats`` simulations of T steps with the op counter
on (as ``bench run`` simulates), and the warnings torch logged (the recompile-limit message
means a step fell back to eager). Targets (issue 21): fused never slower than eager;
dcgs's detection simulation within 2x of rate's; no recompile-limit warning.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

import torch

from benchmarks.common import environment, print_table, write_json


class WarningCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0])


def workloads(batch: int | None) -> dict[str, tuple[Any, torch.Tensor]]:
    from benchmarks.common import benchmark_models
    from snnbench.tasks.zoo import get_model_spec

    out = {}
    models = benchmark_models()
    for name in ("vgg_small", "vit_mini"):
        build, shape = models[name]
        torch.manual_seed(1)
        out[name] = (build(), torch.randn(batch or 64, *shape))
    from snnbench.tasks.detection import DetectorCore

    spec = get_model_spec("fcos_mobilenet_v2")
    torch.manual_seed(0)
    fcos = spec.build(spec, num_classes=11, pretrained_backbone=False).eval()
    size = spec.meta["image_size"]
    out["fcos"] = (DetectorCore(fcos).eval(), torch.rand(batch or 4, 3, size, size))
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=None, help="batch (default: 64 classification, 4 detection)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workloads", default="vgg_small,vit_mini,fcos")
    p.add_argument("--methods", default="dcgs,rate")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from snnbench.counting import OpCounter
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.snn.stats import collect_stats
    from snnbench.plugins import create_method

    warnings = WarningCounter()
    logging.getLogger("torch").addHandler(warnings)
    logging.getLogger("snnbench").addHandler(warnings)
    chosen = args.workloads.split(",")
    rows = []
    for name, (model, x) in workloads(args.batch).items():
        if name not in chosen:
            continue
        for method_name in args.methods.split(","):
            base = create_method(method_name, {"fuse": False})
            ctx = ConversionContext(T=args.T, example=x)
            stats = collect_stats(model, [x], base.stat_kinds(model, ctx))
            for fuse in (False, True):
                snn = create_method(method_name, {"fuse": fuse}).convert(model, stats, ctx).eval()

                def run() -> None:
                    with torch.inference_mode(), OpCounter(snn, args.T) as counter:
                        snn.reset()
                        for _ in snn.simulate(x, args.T):
                            pass
                        counter.add_samples(len(x))
                        counter.summary()

                before = len(warnings.messages)
                start = time.perf_counter()
                run()
                first = time.perf_counter() - start
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    run()
                    times.append(time.perf_counter() - start)
                new = warnings.messages[before:]
                rows.append({"workload": name, "method": method_name, "fuse": fuse, "first_s": first,
                             "median_s": statistics.median(times),
                             "recompile_limit_hits": sum("recompile_limit" in m for m in new),
                             "warnings": len(new)})
                print(rows[-1], flush=True)
    by_key = {(r["workload"], r["method"], r["fuse"]): r for r in rows}
    for r in rows:
        if r["fuse"] and (r["workload"], r["method"], False) in by_key:
            r["fused_vs_eager"] = r["median_s"] / by_key[(r["workload"], r["method"], False)]["median_s"]
        rate = by_key.get((r["workload"], "rate", r["fuse"]))
        if r["method"] == "dcgs" and rate:
            r["dcgs_vs_rate"] = r["median_s"] / rate["median_s"]
    print_table(rows, ["workload", "method", "fuse", "first_s", "median_s", "fused_vs_eager", "dcgs_vs_rate",
                       "recompile_limit_hits", "warnings"])
    payload = {"benchmark": "fused", "T": args.T, "rows": rows, "warning_messages": sorted(set(warnings.messages)),
               "environment": environment(torch.device("cpu"), args.threads)}
    write_json("fused", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
