"""Simulation overhead: wall time of T SNN steps / T ANN forwards on the same batch.

    python -m benchmarks.bench_simulation [--T 8] [--batch 64] [--device auto] [--threads 2]

For vgg_small (28x28), resnet18 (64x64) and the embedded ViT, with dcgs and rate, counting
on and off. Differential coding runs T + 1 frames (the bias pass included in its time).
Targets (issue 10): <= 1.3 with counting off, <= 1.6 with counting on.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import (add_common_args, benchmark_models, convert, environment, print_table, resolve_device,
                               timed, write_json)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--models", default="vgg_small,resnet18,vit_mini")
    p.add_argument("--methods", default="dcgs,rate")
    p.add_argument("--set", dest="sets", action="append", default=[], help="extra method settings key=value")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    from snnbench.counting import OpCounter
    from snnbench.methods.settings import parse_assignments

    settings = parse_assignments(args.sets)
    rows = []
    models = benchmark_models()
    for name in args.models.split(","):
        build, shape = models[name]
        model = build().to(device)
        torch.manual_seed(1)
        x = torch.randn(args.batch, *shape, device=device)
        with torch.inference_mode():
            ann = timed(lambda: [model(x) for _ in range(args.T)], device, args.repeats)
        for method in args.methods.split(","):
            snn = convert(model, x, method, args.T, settings).to(device)

            def run(count: bool) -> None:
                with torch.inference_mode():
                    snn.reset()
                    if count:
                        with OpCounter(snn, args.T) as counter:
                            for _ in snn.simulate(x, args.T):
                                pass
                            counter.add_samples(x.shape[0])
                            counter.summary()
                    else:
                        for _ in snn.simulate(x, args.T):
                            pass

            off = timed(lambda: run(False), device, args.repeats)
            on = timed(lambda: run(True), device, args.repeats)
            rows.append({"model": name, "method": method, "ann_s": ann, "snn_s": off, "snn_count_s": on,
                         "overhead": off / ann, "overhead_counting": on / ann})
    print_table(rows, ["model", "method", "ann_s", "snn_s", "snn_count_s", "overhead", "overhead_counting"])
    payload = {"benchmark": "simulation", "T": args.T, "batch": args.batch, "settings": settings,
               "environment": environment(device, args.threads), "rows": rows,
               "targets": {"overhead": 1.3, "overhead_counting": 1.6}}
    write_json("simulation" + ("_cuda" if device.type == "cuda" else ""), payload, args.out)
    return payload


if __name__ == "__main__":
    main()
