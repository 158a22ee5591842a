"""The QCFS track (Bu et al., ICLR 2022; docs/baseline-methods.md §5): conversion of
QCFS-trained ANNs with IF neurons at θ = λ, and SRP on top of it (Hao et al., AAAI 2023;
docs/baseline-methods.md §3). The QCFS activation itself is in :mod:`snnbench.common.activations`
(the zoo's QCFS architectures use it too)."""

from snnbench.methods.qcfs.method import NotQCFSModelError, QCFSConversion, QCFSSettings
from snnbench.methods.qcfs.srp import SRP, SRPSettings

__all__ = ["NotQCFSModelError", "QCFSConversion", "QCFSSettings", "SRP", "SRPSettings"]
