"""AdaFire / Adaptive Calibration (Wang et al., AAAI 2025, arXiv 2412.16219; docs/baseline-methods.md
§4): the plugin, its burst neurons, its two layer-wise searches and input-aware adaptive timesteps."""

from snnbench.methods.adafire.method import AdaFire, AdaFireSettings

__all__ = ["AdaFire", "AdaFireSettings"]
