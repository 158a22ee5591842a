"""``dcgs``: Differential Coding for training-free ANN-to-SNN conversion (Huang et al., ICML 2025,
arXiv 2503.00301).

Multi-threshold neurons (n = 8 levels ±θ/2^k), differential coding (bias pass, 1/t-weighted
decoding, the differential neuron of Theorem 4.4), channel-wise thresholds from threshold
iteration (Algorithm 1, in the released code's ``official`` truncation by default). On
transformers the official recipe applies: signed MT neurons in front of every linear
layer and on both operands of the attention products, graded units for GELU, LayerNorm and
softmax, per-token 99.9 % thresholds scaled by c = 8 (``threshold=auto`` picks the recipe).
"""

from __future__ import annotations

from dataclasses import dataclass

from snnbench.methods.snn.engine import EngineMethod, EngineSettings


@dataclass(frozen=True)
class DCGSSettings(EngineSettings):
    """DCGS defaults: MT n=8, differential coding, threshold iteration (official), channel-wise."""


class DCGS(EngineMethod):
    """DCGS (ICML 2025): multi-threshold neurons, differential coding, threshold iteration."""

    name = "dcgs"
    version = "1"
    settings_cls = DCGSSettings
