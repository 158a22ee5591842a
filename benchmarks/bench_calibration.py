"""The passes around a conversion: SNN Calibration's corrections, the calibration
statistics, the traced graph, and a detection simulation's scoring and counting;
each as before / after in one process (issue 22, items 2-4).

    python -m benchmarks.bench_calibration [--threads 1] [--repeats 3] [--parts correction,stats,graph,detection]

* ``correction``: the bias-correction pass of ``calibration`` (mode light) on vgg_small and
  vit_mini (random weights): one whole-network T-step simulation per site
  (``calibrate_network_reference``, before) against one simulation in segments from the
  values cached at each cut (``calibrate_network``, after); the corrections are checked equal.
* ``stats``: the moments statistic (threshold iteration's input) over the same batches, with
  the per-batch float64 copy and two-pass formula (before) and the float32 ``var_mean``
  pooled in float64 (after); the results are checked within 1e-6 relative.
* ``graph``: graph builds in one ``calibration`` cell (digits) and the time of one build of
  the detector (what each avoided rebuild saves).
* ``counting``: vgg_small simulations, counting off / the counter reading every layer's
  input (before) / counts from the neurons' own pass (after); the cost of counting is the
  paired ratio to counting off.
* ``detection``: fcos_mobilenet_v2 on the fmnist_det canvases (random weights, classifier
  bias 0 so that every image keeps its 100 detections, as a trained detector's would:
  COCOeval costs what it costs on real output), dcgs to T: COCOeval at every t with the op
  counter reading every layer's input (before) against COCOeval at t = 1, 2, 4, ..., T with
  the counts taken from the neurons' own pass (after), and each change alone. With
  ``--trained`` the detector is the shipped reference checkpoint (what a real cell runs).

Candidates are warmed once, then timed in interleaved rounds; ratios are per round
(median, min-max).
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import torch

from benchmarks.common import (add_common_args, benchmark_models, environment, finish_environment, interleaved,
                               median, paired_ratio, print_table, ratio_text, resolve_device, write_json)


def _rounds(before: Callable[[], float], after: Callable[[], float], repeats: int) -> dict[str, list[float]]:
    """Like :func:`interleaved`, for callables that time their own measured part."""
    before(), after()  # warm-up
    times: dict[str, list[float]] = {"before": [], "after": []}
    for r in range(repeats):
        order = [("before", before), ("after", after)]
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            times[name].append(fn())
    return times


def _row(part: str, case: str, times: dict[str, list[float]], **extra: Any) -> dict[str, Any]:
    ratio = paired_ratio(times, "before", "after")
    return {"part": part, "case": case, "before_s": median(times["before"]), "after_s": median(times["after"]),
            "speedup": ratio["median"], "speedup_range": [ratio["min"], ratio["max"]], "ratio": ratio_text(ratio),
            **extra}


def correction_part(args, device) -> list[dict[str, Any]]:
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.calibration import SNNCalibration
    from snnbench.methods.snn import correction
    from snnbench.methods.snn.stats import collect_stats
    from snnbench.methods.snn.neurons import SpikingNeuron

    rows = []
    for name in ("vgg_small", "vit_mini"):
        build, shape = benchmark_models()[name]
        model = build().to(device)
        torch.manual_seed(1)
        x = torch.randn(args.correction_samples, *shape, device=device)
        method = SNNCalibration({"mode": "grid", "fuse": False})
        ctx = ConversionContext(T=args.T, example=x, device=device, calib_batches=lambda: iter([x]))
        stats = collect_stats(model, [x], method.stat_kinds(model, ctx))
        biases: dict[str, list] = {}

        def timed_pass(fn, label):
            snn, graph, paths = method.build(model, stats, ctx)
            start = time.perf_counter()
            fn(snn, graph, paths, x, args.T, "bias")
            elapsed = time.perf_counter() - start
            biases[label] = [m.input_bias for m in snn.modules() if isinstance(m, SpikingNeuron)]
            sites[0] = len(graph.sites)
            return elapsed

        sites = [0]
        times = _rounds(lambda: timed_pass(correction.calibrate_network_reference, "before"),
                        lambda: timed_pass(correction.calibrate_network, "after"), args.correction_repeats)
        same = all(torch.equal(a, b) for a, b in zip(biases["before"], biases["after"]))
        rows.append(_row("correction", f"{name}, {sites[0]} sites, T={args.T}, {x.shape[0]} samples", times,
                         identical=same))
    return rows


def _moments_float64_two_pass(x: torch.Tensor, axis: int | None):
    """The statistics pass before issue 22: a float64 copy of the rows and a two-pass formula."""
    from snnbench.methods.snn.stats import as_rows

    rows64 = as_rows(x.float(), axis).double()
    count = rows64.shape[1]
    mean_b = rows64.mean(dim=1)
    return mean_b, ((rows64 - mean_b[:, None]) ** 2).sum(dim=1), count


def stats_part(args, device) -> list[dict[str, Any]]:
    from snnbench.methods.snn import stats as stats_module
    from snnbench.methods.snn.graph import build_network_graph

    rows = []
    for name, batch in (("vgg_small", 100), ("resnet18", 32)):
        build, shape = benchmark_models()[name]
        model = build().to(device)
        torch.manual_seed(0)
        batches = [torch.randn(batch, *shape, device=device) for _ in range(args.stat_batches)]
        graph = build_network_graph(model, batches[0], "activations")
        kind = stats_module.StatKind("moments", granularity="channel")
        new_fn = stats_module.batch_moments
        results = {}

        def run(label: str, fn) -> float:
            stats_module.batch_moments = fn
            try:
                start = time.perf_counter()
                results[label] = stats_module.collect_stats(model, batches, [kind], graph=graph)
                return time.perf_counter() - start
            finally:
                stats_module.batch_moments = new_fn

        times = _rounds(lambda: run("before", _moments_float64_two_pass), lambda: run("after", new_fn),
                        args.repeats)
        worst = 0.0
        for site in graph.sites:
            a, b = results["before"].site(kind, site.name), results["after"].site(kind, site.name)
            for key in ("mean", "var"):
                ref = a[key].double()
                worst = max(worst, float(((b[key].double() - ref).abs() / ref.abs().clamp_min(1e-30)).max()))
        rows.append(_row("stats", f"{name}: moments over {args.stat_batches} x {batch}", times,
                         max_rel_diff=worst))
    return rows


def graph_part(args, device) -> list[dict[str, Any]]:
    from snnbench.cell import CellSpec
    from snnbench.methods.snn import graph as graph_module
    from snnbench.runner import run_cell

    before = graph_module.GRAPH_BUILDS["count"]
    result = run_cell(CellSpec(method="calibration", task="digits", model="vgg_small", T=4, calib_size=100,
                               eval_size=50))
    builds = graph_module.GRAPH_BUILDS["count"] - before
    detector, x = _detector_and_input(device)
    build_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        graph_module.build_network_graph(detector.core, x, "auto")
        build_times.append(time.perf_counter() - start)
    return [{"part": "graph", "case": "graph builds in one calibration cell (digits/vgg_small)",
             "before": 4, "after": builds, "status": result["status"]},
            {"part": "graph", "case": "one build of fcos_mobilenet_v2 (128 px)", "seconds": median(build_times),
             "saved_per_cell_s": 3 * median(build_times)}]


def _detector_and_input(device, trained: bool = False):
    from snnbench.tasks.detection import FashionMNISTDetectionTask, detection_bundle
    from snnbench.tasks.zoo import get_model_spec

    task = FashionMNISTDetectionTask()
    if trained:  # the shipped reference checkpoint (tasks/zoo/reference), as a real cell runs it
        bundle = task.build("fcos_mobilenet_v2", device=device, progress=False)
        x = next(iter(task.calib_batches(4, 4, 0, bundle)))
        return bundle, x.to(device)
    spec = get_model_spec("fcos_mobilenet_v2")
    detector = spec.build(spec, num_classes=task.num_classes())
    with torch.no_grad():  # every location scores sigmoid(0) = 0.5: 100 detections per image after NMS
        detector.head.classification_head.cls_logits.bias.zero_()
    bundle = detection_bundle(detector, {"model": spec.name}, device)
    x = next(iter(task.calib_batches(4, 4, 0, bundle)))
    return bundle, x.to(device)


def detection_part(args, device) -> list[dict[str, Any]]:
    from snnbench.cell import resolve_eval_ts
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.snn.stats import collect_stats
    from snnbench.plugins import create_method
    from snnbench.runner import simulate
    from snnbench.tasks.detection import FashionMNISTDetectionTask
    from snnbench import counting

    task = FashionMNISTDetectionTask()
    bundle, x = _detector_and_input(device, args.trained)
    calib = list(task.calib_batches(8, 4, 0, bundle))
    method = create_method("dcgs", {"fuse": args.fuse})
    ctx = ConversionContext(T=args.det_T, example=calib[0], device=device, calib_batches=lambda: iter(calib))
    snn = method.convert(bundle.core, collect_stats(bundle.core, calib, method.stat_kinds(bundle.core, ctx)),
                         ctx).to(device).eval()
    eval_batches = list(task.eval_batches(args.det_images, 4, bundle))
    pow2 = resolve_eval_ts("auto", args.det_T, task.default_eval_ts)
    original_enter = counting.OpCounter.__enter__

    def enter_reading_inputs(self):  # the counter before issue 22: every layer reads its input
        for layer in self.layers:
            layer.site.spikes_from = None
        return original_enter(self)

    outputs: dict[str, Any] = {}

    def run(label: str, eval_ts, old_counting: bool) -> Callable[[], None]:
        def go() -> None:
            if old_counting:
                counting.OpCounter.__enter__ = enter_reading_inputs
            try:
                outputs[label] = simulate(snn, task, bundle, iter(eval_batches), args.det_T, eval_ts=eval_ts)
            finally:
                counting.OpCounter.__enter__ = original_enter
        return go

    candidates = {"before (every t, counting reads inputs)": run("before", None, True),
                  "COCOeval at 1,2,4..T only": run("pow2", pow2, True),
                  "counts from the neurons only": run("neurons", None, False),
                  "after (both)": run("after", pow2, False)}
    times = interleaved(candidates, device, args.repeats)
    base = "before (every t, counting reads inputs)"
    rows = []
    for name in candidates:
        ratio = paired_ratio(times, base, name)
        rows.append({"part": "detection", "case": name, "seconds": median(times[name]),
                     "speedup": ratio["median"], "speedup_range": [ratio["min"], ratio["max"]],
                     "ratio": ratio_text(ratio)})
    metrics_all, summary_old = outputs["before"]
    metrics_new, summary_new = outputs["after"]
    same = (all(metrics_all[t] == metrics_new[t] for t in pow2) and summary_old.acs == summary_new.acs
            and summary_old.macs == summary_new.macs and summary_old.events == summary_new.events)
    rows.append({"part": "detection", "case": f"same scores at {pow2} and same counts", "identical": same,
                 "map_at_T": metrics_new[args.det_T]["map"], "images": len(eval_batches) * 4, "T": args.det_T})
    return rows


def counting_part(args, device) -> list[dict[str, Any]]:
    """vgg_small, T = 8, batch 64: the simulation without counting, with the counter reading
    every layer's input (before), and with counts from the neurons' pass (after)."""
    from snnbench import counting
    from benchmarks.common import convert

    build, shape = benchmark_models()["vgg_small"]
    model = build().to(device)
    torch.manual_seed(1)
    x = torch.randn(64, *shape, device=device)
    original_enter = counting.OpCounter.__enter__

    def enter_reading_inputs(self):
        for layer in self.layers:
            layer.site.spikes_from = None
        return original_enter(self)

    rows = []
    for method in ("dcgs", "rate"):
        snn = convert(model, x, method, 8, {"fuse": args.fuse}).to(device)

        def run(mode: str, snn=snn) -> Callable[[], None]:
            def go() -> None:
                with torch.inference_mode():
                    snn.reset()
                    if mode == "off":
                        for _ in snn.simulate(x, 8):
                            pass
                        return
                    if mode == "inputs":
                        counting.OpCounter.__enter__ = enter_reading_inputs
                    try:
                        with counting.OpCounter(snn, 8) as counter:
                            for _ in snn.simulate(x, 8):
                                pass
                            counter.add_samples(x.shape[0])
                            counter.summary()
                    finally:
                        counting.OpCounter.__enter__ = original_enter
            return go

        times = interleaved({"off": run("off"), "inputs": run("inputs"), "neurons": run("neurons")}, device,
                            args.repeats)
        before, after = paired_ratio(times, "inputs", "off"), paired_ratio(times, "neurons", "off")
        rows.append({"part": "counting", "case": f"vgg_small {method}, T=8, batch 64, fuse={args.fuse}",
                     "off_s": median(times["off"]), "before": ratio_text(before), "after": ratio_text(after),
                     "counting_cost_before": before["median"] - 1, "counting_cost_after": after["median"] - 1})
    return rows


PARTS = {"correction": correction_part, "stats": stats_part, "graph": graph_part, "detection": detection_part,
         "counting": counting_part}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--T", type=int, default=8, help="T of the correction pass")
    p.add_argument("--correction-samples", type=int, default=32)
    p.add_argument("--correction-repeats", type=int, default=2)
    p.add_argument("--stat-batches", type=int, default=5)
    p.add_argument("--det-T", type=int, default=16)
    p.add_argument("--det-images", type=int, default=8)
    p.add_argument("--fuse", type=lambda v: v.lower() in ("1", "true", "yes"), default=False,
                   help="counting and detection parts: compiled neuron steps (default false: no compilation)")
    p.add_argument("--trained", action="store_true",
                   help="detection part: the shipped fcos_mobilenet_v2 reference checkpoint instead of random weights")
    p.set_defaults(repeats=3, threads=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    env = environment(device, args.threads)
    rows: list[dict[str, Any]] = []
    for part in args.parts.split(","):
        if part not in PARTS:
            raise SystemExit(f"unknown part {part!r}; parts: {', '.join(PARTS)}")
        part_rows = PARTS[part](args, device)
        print_table(part_rows, list(dict.fromkeys(k for r in part_rows for k in r if not k.endswith("_range"))))
        print()
        rows.extend(part_rows)
    payload = {"benchmark": "calibration", "repeats": args.repeats, "T": args.T, "det_T": args.det_T,
               "environment": finish_environment(env), "rows": rows}
    print(f"load average: start {env['load_average_start']}, end {env['load_average_end']}; threads {args.threads}")
    write_json("calibration" + ("_cuda" if device.type == "cuda" else ""), payload, args.out)
    return payload


if __name__ == "__main__":
    main()
