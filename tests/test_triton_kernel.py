"""The fused Triton MT kernel equals the PyTorch path bit for bit (spikes, state, counts),
checked on CPU with Triton's interpreter; dispatch follows the ``kernel`` setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")


@pytest.mark.triton
@pytest.mark.slow
def test_kernel_equals_torch_path_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    script = Path(__file__).with_name("triton_cases.py")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "0 mismatches" in proc.stdout


def test_kernel_setting_dispatch_on_cpu():
    from snnbench.methods.settings import SettingsError
    from snnbench.methods.dcgs import DCGS
    from snnbench.methods.snn.neurons import SpikingNeuron

    with pytest.raises(SettingsError, match="neuron=mt"):
        DCGS({"neuron": "if", "kernel": "triton"})
    auto = SpikingNeuron(torch.tensor(1.0), rule="mt", n=4, coding="rate", kernel="auto")
    auto(torch.ones(2, 3))
    assert auto.last_counts is None  # CPU tensors take the PyTorch path
    if os.environ.get("TRITON_INTERPRET") != "1":
        forced = SpikingNeuron(torch.tensor(1.0), rule="mt", n=4, coding="rate", kernel="triton")
        with pytest.raises(RuntimeError, match="CUDA device"):
            forced(torch.ones(2, 3))
