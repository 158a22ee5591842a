"""Named, versioned energy models computed from raw op counts.

``horowitz45nm-v1`` (Horowitz, ISSCC 2014, 45 nm, FP32): a multiply-accumulate costs
E_MAC = 3.7 + 0.9 = 4.6 pJ and an accumulate E_AC = 0.9 pJ; memory and neuron updates
are not charged (the convention of the ANN-to-SNN literature, stated beside every ratio).

* ANN energy: dense MACs x E_MAC (every connection layer, padding excluded).
* SNN energy up to step t: ACs of spike-fed layers x E_AC + MACs of layers fed by real
  values x E_MAC, summed over frames 1..t. First-layer policy: the first layer sees the
  analog image, so its ops are MACs, charged on every frame whose input is non-zero
  (rate coding: every step; differential coding: only t = 1). Frame 0 of differential
  coding (the bias pass) is free.
* energy ratio(t) = E_SNN(t) / E_ANN.

``hmt-aaai26-eq31`` (H-MT, Zhang et al., AAAI-26, Eqs. 31-32, as its released ``sop.py``
computes them): the same 45 nm prices, but every SNN op is charged as an accumulate,
including the analog first layer's non-zero inputs x fan-out (the paper neglects SNN MACs);
H-MT's ops count each binary sub-spike x its fan-out (Eq. 32), which snnbench's counter does
for ``hmt`` rows. It equals the runner's ``energy_ratio_all_ac``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EnergyModel:
    name: str
    e_mac_pj: float
    e_ac_pj: float
    reference: str
    #: price of an SNN multiply-accumulate (None: ``e_mac_pj``); the H-MT convention prices them as ACs
    snn_mac_pj: float | None = None

    def snn_pj(self, acs: float, macs: float) -> float:
        return acs * self.e_ac_pj + macs * (self.e_mac_pj if self.snn_mac_pj is None else self.snn_mac_pj)

    def ann_pj(self, dense_macs: float) -> float:
        return dense_macs * self.e_mac_pj

    def ratio(self, acs: float, macs: float, dense_macs: float) -> float | None:
        """E_SNN / E_ANN, or None when the ANN cost is unknown or zero."""
        ann = self.ann_pj(dense_macs)
        return self.snn_pj(acs, macs) / ann if ann > 0 else None

    def to_dict(self) -> dict:
        return asdict(self)


HOROWITZ_45NM = EnergyModel(name="horowitz45nm-v1", e_mac_pj=4.6, e_ac_pj=0.9,
                            reference="Horowitz, ISSCC 2014, 45 nm FP32: MAC 3.7+0.9 pJ, AC 0.9 pJ")
HMT_AAAI26_EQ31 = EnergyModel(name="hmt-aaai26-eq31", e_mac_pj=4.6, e_ac_pj=0.9, snn_mac_pj=0.9,
                              reference="Zhang et al., AAAI-26 (H-MT), Eqs. 31-32 as the released sop.py computes "
                                        "them: every SNN op (sub-spike x fan-out; first-layer non-zero inputs x "
                                        "fan-out) at E_AC = 0.9 pJ over the ANN's dense MACs at 4.6 pJ")
ENERGY_MODELS = {m.name: m for m in (HOROWITZ_45NM, HMT_AAAI26_EQ31)}
DEFAULT_ENERGY_MODEL = HOROWITZ_45NM
