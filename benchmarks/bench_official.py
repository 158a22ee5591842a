"""snnbench vs the official DCGS code on the same network, thresholds and inputs.

    python -m benchmarks.bench_official --official-dcgs DIR [--model resnet18] [--size 224]
        [--batch 4] [--T 4,8,16,32,64] [--device cpu|cuda] [--threads 2] [--repeats 3]
        [--modes eager,fused,triton,official_m,official_s]

DIR is a checkout of https://github.com/h-z-h-cell/ANN-to-SNN-DCGS that *you* fetched
(nothing of it is vendored here); its ``neurons``, ``utils`` and ``forwards`` packages are
imported from DIR.

One network, two implementations:

1. snnbench traces and normalises the ANN (one ReLU module per call site, MaxPool moved
   in front of its ReLU as the official converter also does), collects statistics on the
   input batch and converts it with ``dcgs`` (differential coding, MT neurons, n = 8,
   threshold iteration, channel thresholds) -> per-site θ.
2. The official network is a copy of that same normalised graph in which every neuron
   site's ReLU is the official ``MTH_diff`` neuron with *the same θ*, run by the
   official forward functions: multi-step (``forward_snn_diff_rate_m``: T+1 frames on the
   batch axis, the default of every shipped config) and single-step
   (``forward_snn_diff_rate_s``), decoded by the official ``decodeoutput``.

snnbench runs as ``eager`` (PyTorch element-wise neuron steps), ``fused`` (the steps
under torch.compile) and, on CUDA, ``triton`` (the hand-written MT kernel); all three
equal each other bit for bit. Without ``--official-dcgs`` only these run.

For every T it checks that the decoded outputs at t = T agree (max |Δ| / max |y| within
``--tolerance``, or no larger than the official output's own distance from the ANN's: the
two track the ReLU mask's room with different float32 sums, so single spikes differ and
at small T the outputs differ as much as each differs from the ANN) and reports the wall
time per frame and image of a full simulation of T frames (snnbench eager, fused and
triton; official m and s) as a ratio to the ANN's time per image, paired round by round
with ANN runs interleaved with the implementations after every one is warmed (issue 22's
protocol: median and min-max over rounds), and the peak memory above the level before the simulation (CUDA: ``max_memory_allocated``; CPU:
resident set size sampled every 2 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.common import (environment, interleaved, median, paired_ratio, print_table, ratio_text, resolve_device,
                               synchronize, write_json)

OFFICIAL_PACKAGES = ("utils", "neurons", "forwards")


def load_official(root: str) -> dict[str, Any]:
    """Import the official ``neurons``, ``utils`` and ``forwards`` packages from ``root``."""
    path = Path(root).expanduser().resolve()
    missing = [p for p in OFFICIAL_PACKAGES if not (path / p / "__init__.py").is_file()]
    if missing:
        raise SystemExit(f"--official-dcgs {path}: not a checkout of h-z-h-cell/ANN-to-SNN-DCGS "
                         f"(missing packages: {', '.join(missing)}); git clone the repository and pass its folder")
    for name in list(sys.modules):  # any other module of the same names would shadow the checkout's
        if name.split(".")[0] in OFFICIAL_PACKAGES:
            del sys.modules[name]
    sys.path.insert(0, str(path))
    try:
        return {name: importlib.import_module(name) for name in OFFICIAL_PACKAGES}
    finally:
        sys.path.remove(str(path))


#: models built from torchvision (random weights, 1000 classes) and run at --size
TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50", "vgg16")


def build_model(name: str) -> torch.nn.Module:
    import torchvision

    from benchmarks.common import benchmark_models

    torch.manual_seed(0)
    if name in TORCHVISION_MODELS:
        return getattr(torchvision.models, name)(num_classes=1000).eval()
    return benchmark_models()[name][0]()


class OfficialNetwork(torch.nn.Module):
    """The official forward functions bound to a network (what ``forward_replace`` sets up)."""

    def __init__(self, net: torch.nn.Module, official: dict[str, Any], T: int, step_mode: str) -> None:
        super().__init__()
        utils, forwards = official["utils"], official["forwards"]
        self.net, self.T, self.step_mode, self._utils = net, T, step_mode, utils
        self.merge = utils.MergeTemporalDim()
        self.expand = utils.ExpandTemporalDim(T + 1)
        self._forward = forwards.forward_snn_diff_rate_m if step_mode == "m" else forwards.forward_snn_diff_rate_s

    def init_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded outputs [T, batch, ...] (estimates at t = 1..T)."""
        self._utils.reset(self.net)  # single-step neurons keep their clock in .T
        return self._forward(self, x.clone())  # add_dimention_diff edits its input in place


#: snnbench variants: PyTorch element-wise steps, torch.compile'd steps, the Triton MT kernel (CUDA)
SNNBENCH_VARIANTS = {"eager": {"fuse": False, "kernel": "torch"}, "fused": {"fuse": True, "kernel": "torch"},
                     "triton": {"fuse": False, "kernel": "triton"}}


def build_networks(model: torch.nn.Module, x: torch.Tensor, T: int, official: dict[str, Any] | None,
                   variants: list[str], n: int = 8) -> dict[str, Callable[[], torch.Tensor]]:
    """Runners (decoded output at t = T) of the snnbench ``variants`` and, with ``official``,
    of the official network in multi-step (``official_m``) and single-step (``official_s``) mode."""
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.dcgs import DCGS
    from snnbench.methods.snn.stats import collect_stats

    def method(variant: str) -> DCGS:
        return DCGS({"n": n, "granularity": "channel", **SNNBENCH_VARIANTS[variant]})

    ctx = ConversionContext(T=T, example=x, device=x.device, calib_batches=lambda: iter([x]))
    stats = collect_stats(model, [x], method("eager").stat_kinds(model, ctx))
    reference, graph, paths = method("eager").build(model, stats, ctx)
    runners: dict[str, Callable[[], torch.Tensor]] = {}
    for variant in variants:
        snn = reference if variant == "eager" else method(variant).convert(model, stats, ctx)
        snn = snn.to(x.device).eval()
        runners[variant] = lambda snn=snn: snnbench_outputs(snn, x, T)
    if official is None:
        return runners
    if graph.placement != "activations":
        raise SystemExit("bench_official compares CNNs (neurons at activations, MTH_diff); got a transformer")
    for mode in ("m", "s"):
        net = copy.deepcopy(graph.module)
        for site in graph.sites:
            theta = reference.net.get_submodule(paths[site.name]).theta.detach().clone()
            if site.ceiling is not None:
                raise SystemExit(f"site {site.name} is a clipped ReLU; the official MTH_diff models a plain ReLU")
            neuron = official["neurons"].MTH_diff(T=T, thresh=theta, step_mode=mode, num_thresholds=n)
            parent, _, leaf = site.name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, leaf, neuron)
        wrapped = OfficialNetwork(net.to(x.device).eval(), official, T, mode)
        runners[f"official_{mode}"] = lambda wrapped=wrapped: wrapped(x)[-1]
    return runners


def snnbench_outputs(snn, x: torch.Tensor, T: int) -> torch.Tensor:
    snn.reset()
    out = None
    for out in snn.simulate(x, T):
        pass
    return out


def _release_free_heap() -> None:
    """Give the allocator's free pages back to the OS (glibc ``malloc_trim``), so that the
    resident set measures what a run allocates, not what an earlier run left cached."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@contextlib.contextmanager
def peak_memory(device: torch.device):
    """Yields a dict whose ``"mb"`` is set to the peak memory above the starting level on exit."""
    from benchmarks.bench_memory import rss_bytes

    result: dict[str, float] = {}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        synchronize(device)
        result["mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    _release_free_heap()
    base = rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], rss_bytes())
        result["mb"] = (peak[0] - base) / 2**20


def measure(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: bool = True) -> tuple[float, float]:
    """(median seconds, peak MB of the first timed run) after one warm-up run (``warmup=False``:
    the caller has just run ``fn``)."""
    if warmup:
        fn()
        synchronize(device)
    times, mb = [], None
    for _ in range(repeats):
        with peak_memory(device) as mem:
            start = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
        mb = mem["mb"] if mb is None else mb
    times.sort()
    return times[len(times) // 2], mb


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official-dcgs", default=None, metavar="DIR",
                   help="a checkout of github.com/h-z-h-cell/ANN-to-SNN-DCGS (fetched by you; not vendored); "
                        "without it only the snnbench variants run")
    p.add_argument("--model", default="resnet18", help="resnet18, resnet34, resnet50, vgg16 or a benchmark model")
    p.add_argument("--size", type=int, default=None,
                   help="input height = width (default: 224 for torchvision models, a benchmark model's own size)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--T", default="4,8,16,32,64", help="comma-separated time-steps")
    p.add_argument("--n", type=int, default=8, help="MT levels per sign")
    p.add_argument("--modes", default="eager,fused,official_m,official_s",
                   help="implementations to time: eager, fused, triton (CUDA), official_m, official_s")
    p.add_argument("--tolerance", type=float, default=5e-2, help="largest accepted relative output gap at t = T")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    p.add_argument("--out", default=None, help="JSON output path (default benchmarks/out/bench_official.json)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(SNNBENCH_VARIANTS) - {"official_m", "official_s"})
    if unknown:
        raise SystemExit(f"unknown --modes {unknown}; valid: {sorted(SNNBENCH_VARIANTS)} + official_m, official_s")
    official = load_official(args.official_dcgs) if args.official_dcgs else None
    if official is None:
        modes = [m for m in modes if not m.startswith("official")]
    model = build_model(args.model).to(device)
    from benchmarks.common import benchmark_models

    if args.size is not None or args.model in TORCHVISION_MODELS:
        # torchvision models at --size (default 224; the 64 px resnet18 of benchmark_models is not meant)
        shape = (3, args.size or 224, args.size or 224)
    else:
        shape = benchmark_models()[args.model][1]
    torch.manual_seed(1)
    x = torch.randn(args.batch, *shape, device=device)
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        ann_s, ann_mb = measure(lambda: model(x), device, args.repeats)
        ann_ms = 1e3 * ann_s / args.batch
        print(f"ANN timed alone (first, fresh heap) {ann_ms:.3f} ms/image, peak +{ann_mb:.1f} MB; the x ANN "
              "columns pair each implementation with ANN runs interleaved with it", flush=True)
        for T in [int(t) for t in args.T.split(",")]:
            variants = ["eager"] + [m for m in modes if m in SNNBENCH_VARIANTS and m != "eager"]
            runners = build_networks(model, x, T, official, variants, args.n)
            reference = runners["eager"]()
            ann_out = model(x)
            official_err = (relative_gap(runners["official_m"](), ann_out) if "official_m" in runners else None)
            checked: dict[str, dict[str, Any]] = {}
            for mode in modes:
                try:
                    out = runners[mode]()
                    gap, err = relative_gap(out, reference), relative_gap(out, ann_out)
                    mb = measure(runners[mode], device, 1, warmup=False)[1]  # the run above warmed it
                except torch.cuda.OutOfMemoryError as err:  # official multi-step at large T and batch
                    rows.append({"T": T, "impl": mode, "error": f"out of memory: {str(err).splitlines()[0]}"})
                    print(f"T={T:<3} {mode:<11} out of memory", flush=True)
                    torch.cuda.empty_cache()
                    continue
                # agreement: within the tolerance, or no further apart than the official output is
                # from the ANN's (at small T both are coarse, and rounding-level differences in the
                # ReLU mask's room change individual spikes)
                agrees = gap <= args.tolerance or (official_err is not None and gap <= official_err)
                checked[mode] = {"gap_vs_snnbench": gap, "error_vs_ann": err, "agrees": agrees, "peak_mb": mb}
            # issue 22's protocol: the ANN and every implementation warmed, then timed in interleaved
            # rounds; x ANN is the per-round ratio (an ANN timed alone first, in a fresh heap, is slower)
            times = interleaved({"ann": lambda: model(x), **{m: runners[m] for m in checked}}, device, args.repeats)
            for mode, info in checked.items():
                ratio = paired_ratio(times, mode, "ann")
                per_frame = 1e3 * median(times[mode]) / (T * args.batch)
                x_ann = {k: ratio[k] / T for k in ("median", "min", "max")}
                rows.append({"T": T, "impl": mode, "ms_per_frame_image": per_frame, "x_ann": x_ann["median"],
                             "x_ann_range": [x_ann["min"], x_ann["max"]],
                             "ann_ms_per_image": 1e3 * median(times["ann"]) / args.batch, **info})
                print(f"T={T:<3} {mode:<11} {per_frame:8.3f} ms/frame/image  {ratio_text(x_ann)} x ANN  "
                      f"peak +{info['peak_mb']:7.1f} MB  gap {info['gap_vs_snnbench']:.2e}  "
                      f"vs ANN {info['error_vs_ann']:.2e}", flush=True)
            del runners
    print(f"\n{args.model} {shape} batch {args.batch} on {device}: ANN timed alone {ann_ms:.2f} ms/image "
          f"(peak +{ann_mb:.1f} MB)\n")
    print_table(rows, ["T", "impl", "ms_per_frame_image", "ann_ms_per_image", "x_ann", "peak_mb", "gap_vs_snnbench",
                       "error_vs_ann", "agrees", "error"])
    payload = {"benchmark": "official", "model": args.model, "input_shape": list(shape), "batch": args.batch,
               "ann_ms_per_image": ann_ms, "ann_peak_mb": ann_mb, "rows": rows,
               "official_dcgs": str(Path(args.official_dcgs).resolve()) if args.official_dcgs else None,
               "environment": environment(device, args.threads)}
    write_json("bench_official", payload, args.out)
    return 0 if all(r.get("agrees", True) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
