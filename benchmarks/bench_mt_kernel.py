"""MT neuron step time: fused Triton kernel vs the PyTorch path vs a conv on the same frames.

    python -m benchmarks.bench_mt_kernel [--device auto] [--shape 32,64,16,16] [--n 8]

The frames are the DESIGN.md reference case (32x64x16x16; the official DCGS neuron took
5.5x a 64->64 3x3 convolution there). Paths: ``torch`` (eager element-wise ops),
``fused`` (torch.compile of the same step), ``triton`` (the hand-written kernel; CUDA only,
skipped on CPU), and the conv. Differential ReLU-masked variant, counting included for
the kernel (it counts in its own pass). All paths are warmed (compiled) first, then timed in
interleaved rounds; "vs conv" is the per-round ratio (median, min-max).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import (add_common_args, environment, finish_environment, interleaved, median, paired_ratio,
                               print_table, ratio_text, resolve_device, write_json)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--shape", default="32,64,16,16")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--steps", type=int, default=8, help="neuron steps per timing")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    env = environment(device, args.threads)
    from snnbench.methods.snn import triton_mt
    from snnbench.methods.snn.neurons import SpikingNeuron

    shape = tuple(int(s) for s in args.shape.split(","))
    torch.manual_seed(0)
    x = torch.randn(shape, device=device)
    theta = (torch.rand(1, shape[1], *([1] * (len(shape) - 2)), device=device) + 0.5)
    zero = torch.zeros_like(x)

    def neuron_run(**kw):
        neuron = SpikingNeuron(theta, rule="mt", n=args.n, coding="differential", signed=True, floor=0.0, **kw)

        def run():
            neuron.reset()
            for t in range(args.steps + 1):
                neuron(x if t == 1 else zero)
        return run

    conv = torch.nn.Conv2d(shape[1], shape[1], 3, padding=1).to(device)
    candidates = {"conv3x3 (same frames)": lambda: [conv(x) for _ in range(args.steps + 1)],
                  "neuron torch (eager)": neuron_run(kernel="torch"),
                  "neuron fused (torch.compile)": neuron_run(kernel="torch", fuse=True)}
    has_triton = triton_mt.available_on(device) and device.type == "cuda"
    if has_triton:
        candidates["neuron triton kernel (+counts)"] = neuron_run(kernel="triton")
    with torch.inference_mode():
        times = interleaved(candidates, device, args.repeats, warmup=2)
    rows = []
    for name in candidates:
        ratio = paired_ratio(times, name, "conv3x3 (same frames)")
        rows.append({"path": name, "seconds": median(times[name]), "vs_conv": ratio["median"],
                     "vs_conv_range": [ratio["min"], ratio["max"]], "ratio": ratio_text(ratio)})
    if not has_triton:
        rows.append({"path": "neuron triton kernel", "seconds": float("nan"), "vs_conv": float("nan"),
                     "ratio": "-", "note": "no CUDA device: skipped"})
    print_table(rows, ["path", "seconds", "ratio"])
    payload = {"benchmark": "mt_kernel", "shape": shape, "n": args.n, "steps": args.steps + 1,
               "repeats": args.repeats, "environment": finish_environment(env), "rows": rows}
    write_json("mt_kernel" + ("_cuda" if device.type == "cuda" else ""), payload, args.out)
    return payload


if __name__ == "__main__":
    main()
