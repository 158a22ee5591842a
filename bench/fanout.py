"""Fan-out maps and pooled event counts: the geometry the op counter (bench/counting.py) prices
spikes with.

* :func:`conv_fanout_map`: per input position, the number of output positions of a
  convolution whose window covers it (stride, padding and dilation exact), so that the
  effective ops of a spike map are Σ_positions hits·fan-out (NeuroBench's ``Effective_ACs``;
  docs/harness-notes.md §1.2);
* :func:`pooled_event_counts`: spikes per average-pooling window (the layer after the pool
  sees each spike through its pooled cell);
* :func:`ungrouped_macs`: AdaFire's MAC formula C_in·C_out·k·H_out·W_out (docs/baseline-methods.md §4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_CONV_INPUT_GRAD = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}


def conv_fanout_map(module: nn.Module, spatial: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Per input position, the number of output positions whose window covers it.

    Computed as the adjoint of the convolution (all-ones kernel, one channel) applied to
    an all-ones output, so stride, padding and dilation are exact. Shape ``spatial``.
    """
    dims = len(spatial)
    ones_w = torch.ones((1, 1) + tuple(module.kernel_size), device=device, dtype=torch.float64)
    padding = module.padding
    if isinstance(padding, str):
        padding = _string_padding(padding, module.kernel_size, module.dilation)
    out_spatial = [
        (spatial[i] + 2 * padding[i] - module.dilation[i] * (module.kernel_size[i] - 1) - 1) // module.stride[i] + 1
        for i in range(dims)
    ]
    grad_out = torch.ones([1, 1] + out_spatial, device=device, dtype=torch.float64)
    fan = _CONV_INPUT_GRAD[dims]((1, 1) + tuple(spatial), ones_w, grad_out, stride=module.stride,
                                 padding=padding, dilation=module.dilation)
    return fan[0, 0].round().to(torch.int64)


def _adaptive_window_sizes(size: int, out: int, device: torch.device) -> torch.Tensor:
    """Window lengths of adaptive pooling along one axis (start=floor(i*size/out), end=ceil)."""
    i = torch.arange(out, device=device)
    start = torch.div(i * size, out, rounding_mode="floor")
    end = torch.div((i + 1) * size + out - 1, out, rounding_mode="floor")
    return (end - start).to(torch.int64)


def pooled_event_counts(pool: nn.Module, events: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Number of events in each pooling window (sum-pooling of a 0/1 event mask, or of per-element
    event counts), int64. The pooling runs in ``dtype``: float32 is exact for window sums below
    2^24, float64 (for maps of counts over a batch) below 2^53."""
    mask = events.to(dtype)
    if isinstance(pool, (nn.AvgPool2d, nn.AvgPool3d)):
        fn = F.avg_pool2d if isinstance(pool, nn.AvgPool2d) else F.avg_pool3d
        sums = fn(mask, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, True, 1)
    elif isinstance(pool, nn.AvgPool1d):
        k = pool.kernel_size[0]
        sums = F.avg_pool1d(mask, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, True) * k
    else:  # adaptive average pooling: mean over windows of varying size
        dims = mask.ndim - 2 if mask.ndim > 2 else 1
        fn = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[dims]
        out_size = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size,) * dims
        out_size = tuple(mask.shape[-dims + i] if o is None else o for i, o in enumerate(out_size))
        means = fn(mask, out_size)
        area = torch.ones((), dtype=torch.int64, device=mask.device)
        for i, (size, out) in enumerate(zip(mask.shape[-dims:], out_size)):
            shape = [1] * dims
            shape[i] = out
            area = area * _adaptive_window_sizes(size, out, mask.device).reshape(shape)
        sums = means * area
    return sums.round().to(torch.int64)


def _string_padding(mode: str, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, ...]:
    if mode == "valid":
        return tuple(0 for _ in kernel)
    # "same" (stride 1): symmetric when the total padding is even, which nn.Conv requires here
    return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))


def ungrouped_macs(module: nn.Module, output: torch.Tensor) -> int:
    """AdaFire's MAC formula for one call: C_in·C_out·k·H_out·W_out (groups ignored,
    padding included) for conv, in·out per position for linear, summed over the batch."""
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, nn.modules.conv._ConvNd):
        k = 1
        for size in module.kernel_size:
            k *= size
        return output.numel() * module.in_channels * k
    return 0
