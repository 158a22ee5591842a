"""Simulation overhead: wall time of T SNN steps / T ANN forwards on the same batch.

    python -m benchmarks.bench_simulation [--T 8] [--batch 64] [--device auto] [--threads 1]

For vgg_small and resnet_small (28x28, the zoo's), resnet18 (64x64) and the embedded ViT, with dcgs and rate, counting
on and off (``--frame`` adds the compiled network frame, compile_frame=true, counting off,
as a column). Differential coding runs T + 1 frames (the bias pass included in its time).
Per model, the ANN and every SNN variant are warmed first (fused steps compiled, heap
grown), then timed in interleaved rounds; the overheads are the per-round ratios SNN / ANN
(median, min-max). Targets (BENCHMARKS.md §1): <= 1.3 with counting off, <= 1.5 with counting on.

The SNN's average pools run the native loop of methods/snn/native_pool.py (bit-identical to
torch's kernel, faster on one CPU thread); the ANN runs the model as given. For a model with
average pools, ``off_pooled_ann`` also gives the counting-off ratio against the ANN with the
same native pools (an equal-footing figure: how much of the gain is the pool alone).
"""

from __future__ import annotations

import argparse
import copy

import torch

from benchmarks.common import (add_common_args, benchmark_models, clock, convert, environment, finish_environment,
                               interleaved, median, paired_ratio, print_table, ratio_text, resolve_device,
                               write_json)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--models", default="vgg_small,resnet_small,resnet18,vit_mini")
    p.add_argument("--methods", default="dcgs,rate")
    p.add_argument("--frame", action="store_true",
                   help="also time each method with compile_frame=true (the compiled network frame), counting off")
    p.add_argument("--set", dest="sets", action="append", default=[], help="extra method settings key=value")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    env = environment(device, args.threads)
    from snnbench.counting import OpCounter
    from snnbench.methods.snn import native_pool
    from snnbench.methods.settings import parse_assignments

    settings = parse_assignments(args.sets)
    rows = []
    models = benchmark_models()
    for name in args.models.split(","):
        build, shape = models[name]
        model = build().to(device)
        torch.manual_seed(1)
        x = torch.randn(args.batch, *shape, device=device)

        def ann() -> None:
            with torch.inference_mode():
                for _ in range(args.T):
                    model(x)

        candidates = {"ann": ann}
        pooled_model = copy.deepcopy(model)
        if native_pool.install(pooled_model):
            def pooled_ann() -> None:
                with torch.inference_mode():
                    for _ in range(args.T):
                        pooled_model(x)

            candidates["ann+native_pool"] = pooled_ann
        for method in args.methods.split(","):
            snn = convert(model, x, method, args.T, settings).to(device)

            def run(count: bool, snn=snn) -> None:
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

            candidates[f"{method}"] = lambda run=run: run(False)
            candidates[f"{method}+count"] = lambda run=run: run(True)
            if args.frame:
                framed = convert(model, x, method, args.T, {**settings, "compile_frame": True}).to(device)
                candidates[f"{method}+frame"] = lambda run=run, framed=framed: run(False, framed)
        times = interleaved(candidates, device, args.repeats, warmup=2, timer=clock(args.clock, device))
        for method in args.methods.split(","):
            off = paired_ratio(times, method, "ann")
            on = paired_ratio(times, f"{method}+count", "ann")
            framed = paired_ratio(times, f"{method}+frame", "ann") if args.frame else None
            pooled = paired_ratio(times, method, "ann+native_pool") if "ann+native_pool" in times else None
            rows.append({"model": name, "method": method, "ann_s": median(times["ann"]),
                         "snn_s": median(times[method]), "snn_count_s": median(times[f"{method}+count"]),
                         "overhead": off["median"], "overhead_range": [off["min"], off["max"]],
                         "overhead_counting": on["median"], "overhead_counting_range": [on["min"], on["max"]],
                         "off": ratio_text(off), "on": ratio_text(on),
                         "frame_off": ratio_text(framed) if framed else "",
                         "overhead_frame": framed["median"] if framed else None,
                         "off_pooled_ann": ratio_text(pooled) if pooled else "",
                         "overhead_vs_pooled_ann": pooled["median"] if pooled else None})
    print_table(rows, ["model", "method", "ann_s", "snn_s", "snn_count_s", "off", "on", "off_pooled_ann"]
                + (["frame_off"] if args.frame else []))
    payload = {"benchmark": "simulation", "T": args.T, "batch": args.batch, "settings": settings, "clock": args.clock,
               "repeats": args.repeats, "environment": finish_environment(env), "rows": rows,
               "targets": {"overhead": 1.3, "overhead_counting": 1.5}}
    print(f"load average: start {env['load_average_start']}, end {env['load_average_end']}; "
          f"threads {args.threads}")
    write_json("simulation" + ("_cuda" if device.type == "cuda" else ""), payload, args.out)
    return payload


if __name__ == "__main__":
    main()
