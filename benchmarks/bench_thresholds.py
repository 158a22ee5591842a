"""Threshold rules on the same calibration batches: percentile, threshold iteration (official
and converged), grid search, as wall-time ratios; and threshold iteration for every channel
of ResNet-50.

    python -m benchmarks.bench_thresholds [--model vgg_small] [--batches 5] [--T 32]

Each rule is timed end to end: the statistics pass it needs over the same calibration
batches, plus solving for θ; the rules run in interleaved rounds after one warm-up run each,
and the ratios to the percentile rule are per-round (median, min-max). Target (issue 10): threshold iteration for every channel of
resnet50 under 1 s on CPU (the solve, given the channel statistics).
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import (add_common_args, environment, finish_environment, interleaved, median, paired_ratio,
                               print_table, ratio_text, resolve_device, write_json)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--model", default="vgg_small")
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--T", type=int, default=32)
    p.add_argument("--n", type=int, default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    env = environment(device, args.threads)
    import torchvision

    from benchmarks.common import benchmark_models
    from snnbench.methods.snn.graph import build_network_graph
    from snnbench.methods.snn.stats import StatKind, collect_stats
    from snnbench.methods.snn.thresholds import threshold_iteration

    build, shape = benchmark_models()[args.model]
    model = build().to(device)
    torch.manual_seed(0)
    batches = [torch.randn(args.batch, *shape, device=device) for _ in range(args.batches)]
    graph = build_network_graph(model, batches[0], "activations")
    N = args.T * 2**args.n
    rules = {
        "percentile (99.9%)": (StatKind("percentile", granularity="channel"), None),
        "max": (StatKind("max", granularity="channel"), None),
        "iteration official": (StatKind("moments", granularity="channel"), "official"),
        "iteration converged": (StatKind("moments", granularity="channel"), "converged"),
        "grid search (MSE)": (StatKind("mse_grid", granularity="channel", levels=N), None),
    }
    splits: dict[str, list[tuple[float, float]]] = {name: [] for name in rules}

    def rule_run(name: str) -> None:
        kind, mode = rules[name]
        start = time.perf_counter()
        stats = collect_stats(model, batches, [kind], graph=graph)
        collected = time.perf_counter()
        if mode:
            for site in graph.sites:
                values = stats.site(kind, site.name)
                threshold_iteration(values["mean"], values["var"], N, mode)
        splits[name].append((collected - start, time.perf_counter() - collected))

    times = interleaved({name: (lambda name=name: rule_run(name)) for name in rules}, device, args.repeats)
    base = next(iter(rules))
    rows = []
    for name in rules:
        timed_splits = splits[name][-args.repeats:]  # the timed rounds (not the warm-up)
        ratio = paired_ratio(times, name, base)
        rows.append({"rule": name, "statistics_s": median([a for a, _ in timed_splits]),
                     "solve_s": median([b for _, b in timed_splits]), "total_s": median(times[name]),
                     "vs_percentile": ratio["median"], "vs_percentile_range": [ratio["min"], ratio["max"]],
                     "ratio": ratio_text(ratio)})
    print_table(rows, ["rule", "statistics_s", "solve_s", "total_s", "ratio"])

    # threshold iteration for every channel of ResNet-50 (given its channel statistics)
    resnet = torchvision.models.resnet50().eval().to(device)
    x = torch.randn(8, 3, 64, 64, device=device)
    rgraph = build_network_graph(resnet, x, "activations")
    kind = StatKind("moments", granularity="channel")
    rstats = collect_stats(resnet, [x], [kind], graph=rgraph)
    means = torch.cat([rstats.site(kind, s.name)["mean"].flatten() for s in rgraph.sites])
    vars_ = torch.cat([rstats.site(kind, s.name)["var"].flatten() for s in rgraph.sites])
    resnet_times = interleaved({mode: (lambda mode=mode: threshold_iteration(means, vars_, N, mode))
                                for mode in ("official", "converged")}, device, args.repeats)
    resnet_rows = [{"resnet50 channels": int(means.numel()), "mode": mode, "N": N,
                    "seconds": median(resnet_times[mode])} for mode in ("official", "converged")]
    print()
    print_table(resnet_rows, ["resnet50 channels", "mode", "N", "seconds"])
    payload = {"benchmark": "thresholds", "model": args.model, "batches": args.batches, "batch": args.batch,
               "N": N, "repeats": args.repeats, "environment": finish_environment(env), "rows": rows, "resnet50": resnet_rows,
               "target_resnet50_s": 1.0}
    write_json("thresholds", payload, args.out)
    return payload


if __name__ == "__main__":
    main()
