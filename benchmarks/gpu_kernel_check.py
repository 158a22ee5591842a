"""On a CUDA device: the Triton MT kernel and the torch.compile'd step equal the PyTorch
eager step bit for bit (spikes, states, counts), over the neuron variants the engine uses.

    python -m benchmarks.gpu_kernel_check [--steps 6]

The CPU test suite checks the kernel under Triton's interpreter (tests/test_triton_kernel.py);
this runs the compiled kernel on the GPU. Prints one line per case and exits non-zero on
any mismatch. Needs CUDA and Triton.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch


def run_case(coding: str, floor, ceiling, signed: bool, shape: tuple[int, ...], n: int, steps: int,
             kernel: str, fuse: bool, seed: int) -> list[str]:
    from snnbench.methods.snn.neurons import SpikingNeuron

    gen = torch.Generator(device="cuda").manual_seed(seed)
    theta = torch.rand((1, shape[1]) + (1,) * (len(shape) - 2), generator=gen, device="cuda") + 0.2
    theta.view(-1)[0] = 0.0  # a silent channel
    ref = SpikingNeuron(theta, rule="mt", n=n, coding=coding, signed=signed, floor=floor, ceiling=ceiling,
                        kernel="torch", fuse=False)
    other = SpikingNeuron(theta, rule="mt", n=n, coding=coding, signed=signed, floor=floor, ceiling=ceiling,
                          kernel=kernel, fuse=fuse)
    problems = []
    for nrn in (ref, other):
        nrn.count_spikes = True
    for step in range(steps):
        x = torch.randn(shape, generator=gen, device="cuda") * 1.3
        x.view(-1)[::7] = 0.75 * theta.expand(shape).reshape(-1)[::7] / 2.0 ** (step % n)  # exact ties
        s_ref, s_other = ref(x), other(x)
        if not torch.equal(s_ref, s_other):
            problems.append(f"step {step}: spikes differ at {int((s_ref != s_other).sum())} positions")
        if ref.last_counts is not None and other.last_counts is not None:
            if not torch.equal(ref.last_counts.cpu(), other.last_counts.cpu()):
                problems.append(f"step {step}: counts {ref.last_counts.tolist()} vs {other.last_counts.tolist()}")
    for name in ("v", "e_in", "e_out", "c_out"):
        a, b = getattr(ref, name), getattr(other, name)
        if (a is None) != (b is None) or (a is not None and not torch.equal(a, b.view(a.shape))):
            problems.append(f"state {name} differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    from snnbench.methods.snn import triton_mt

    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, triton available: "
          f"{triton_mt.available_on(torch.device('cuda'))}")
    variants = [("differential", 0.0, None, True), ("differential", 0.0, 6.0, True), ("differential", None, None, True),
                ("rate", 0.0, None, True), ("rate", 0.0, 6.0, False), ("rate", None, None, True)]
    shapes = [(8, 16, 32, 32), (4, 17, 96), (2, 32, 1, 1)]
    paths = [("triton", False), ("torch", True)]
    failures = 0
    with torch.inference_mode():
        for (coding, floor, ceiling, signed), shape, n, (kernel, fuse) in itertools.product(
                variants, shapes, (8, 3), paths):
            if fuse and n != 8:  # each compiled signature costs a compilation; n = 8 covers the code
                continue
            label = f"{kernel:<6} fuse={fuse!s:<5} {coding:<12} floor={floor} ceiling={ceiling} signed={signed} " \
                    f"n={n} shape={shape}"
            try:
                problems = run_case(coding, floor, ceiling, signed, shape, n, args.steps, kernel, fuse, seed=len(label))
            except Exception as err:  # noqa: BLE001 - report and go on with the other cases
                problems = [f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"]
            failures += bool(problems)
            print(("OK   " if not problems else "FAIL ") + label + ("" if not problems else "  " + "; ".join(problems)),
                  flush=True)
    print(f"{failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
