"""H-MT (Harmony Multi-Threshold neurons; Zhang et al., AAAI-26): the plugin and its Pos/Neg
harmony neurons. The generalized threshold iteration it solves (Eq. 29) is shared with the
engine's ``hmt_iteration`` rule and lives in :mod:`snnbench.methods.snn.generalized_thresholds`."""

from snnbench.methods.hmt.method import HMT, HMTSettings

__all__ = ["HMT", "HMTSettings"]
