"""Named, versioned energy models, every one computed from the same raw op counts.

One simulation records, per connection layer and frame, the raw counts of
:mod:`snnbench.counting` (effective ops, ops of the layer's own non-zero inputs, those of
calls fed only by values in {-1, 0, 1}, non-zero input elements, dense ops) and per spiking
module the neuron updates. Each model below is a pure function of those counts, so results
under every convention sit side by side in the result (``per_t[t]["energy_ratio@NAME"]``)
and no convention needs a re-simulation (docs/baseline-methods.md §9.4). Frame 0 of differential coding (the
bias pass) is free under every model, as in the official DCGS code.

Conventions (ratio = E_SNN(t) / E_ANN, Horowitz 45 nm FP32: E_MAC = 4.6 pJ, E_AC = 0.9 pJ):

* ``horowitz45nm-v1`` (default): ACs of spike-fed layers x E_AC + MACs of layers fed by
  real values x E_MAC (so the first layer, fed the analog image, is priced as MACs on every
  frame whose input is non-zero); behind an average pool one AC per spike in the pooled
  cell. E_ANN = dense MACs x E_MAC.
* ``dcgs-official``: the released DCGS counter (docs/dcgs-official-code.md §5.2-5.3): every op at E_AC,
  including the analog-fed first layer; a layer behind an average pool is charged per
  non-zero pooled cell, not per spike; product units by their three-term count.
* ``neurobench``: NeuroBench 2.3's labels as-is (docs/baseline-methods.md §9.3): a layer call's ops are
  ACs only if every input value is in {-1, 0, 1}, else MACs (so θ-amplitude and multi-level
  spikes are MACs); ops = fan-out of the non-zero inputs the layer sees; product units are
  not hooked by NeuroBench and are left out of both sides.
* ``adafire-official``: AdaFire's released ``Energy`` (docs/baseline-methods.md §4): the first layer at
  E_MAC x MACs every step; every later conv/linear at E_AC x MACs x density, density =
  non-zero inputs / input elements per step (a burst counts once); MACs = C_in·C_out·k·H·W
  (groups ignored). E_ANN = E_MAC x Σ those MACs.
* ``loihi-published`` / ``spinnaker2-prototype-published``: published per-operation
  constants (a *published-constant estimate*, never a measurement): every effective op is a
  synaptic op, every neuron update is charged; E_ANN stays the Horowitz dense-MAC cost.
* ``hmt-aaai26-eq31`` (H-MT, Zhang et al., AAAI-26, Eqs. 31-32, as its released ``sop.py``
  computes them): every SNN op at E_AC, the analog first layer's non-zero inputs x fan-out
  included (the paper neglects SNN MACs); H-MT's ops count each binary sub-spike x its
  fan-out (Eq. 32), which snnbench's counter does for ``hmt`` rows. It equals the runner's
  ``energy_ratio_all_ac``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

#: Horowitz, ISSCC 2014, 45 nm FP32
E_MAC_PJ = 4.6
E_AC_PJ = 0.9
HOROWITZ_REFERENCE = "Horowitz, ISSCC 2014, 45 nm FP32: MAC 3.7+0.9 pJ, AC 0.9 pJ"


@dataclass(frozen=True)
class EnergyInputs:
    """What every model reads: the per-layer raw counts (``CountSummary.layers`` records,
    cumulative per sample over frames 1..t), neuron updates per t, the ANN's dense MACs."""

    layers: Sequence[dict[str, Any]]
    neuron_updates: Sequence[float]
    ann_dense_macs: float
    T: int

    def connections(self, products: bool = True) -> list[dict[str, Any]]:
        return [r for r in self.layers if r.get("type") != "neuron" and (products or r.get("type") != "product")]


@dataclass(frozen=True)
class EnergyModel:
    """A named, versioned energy convention. ``kind`` is ``"convention"`` (a per-op model of
    the literature) or ``"published-constant estimate"`` (chip figures from a paper)."""

    name: str
    e_mac_pj: float
    e_ac_pj: float
    reference: str
    description: str = ""
    kind: str = "convention"
    e_synop_pj: float | None = None
    e_neuron_update_pj: float | None = None
    compute: Callable[["EnergyModel", EnergyInputs, int], float | None] | None = field(
        default=None, compare=False, repr=False)
    #: price of an SNN multiply-accumulate (None: ``e_mac_pj``); the H-MT convention prices them as ACs
    snn_mac_pj: float | None = None

    # -- the default model's helpers (kept for callers of the single-model API) -----------
    def snn_pj(self, acs: float, macs: float) -> float:
        return acs * self.e_ac_pj + macs * (self.e_mac_pj if self.snn_mac_pj is None else self.snn_mac_pj)

    def ann_pj(self, dense_macs: float) -> float:
        return dense_macs * self.e_mac_pj

    def ratio(self, acs: float, macs: float, dense_macs: float) -> float | None:
        """E_SNN / E_ANN under the Horowitz pricing, or None when the ANN cost is zero."""
        ann = self.ann_pj(dense_macs)
        return self.snn_pj(acs, macs) / ann if ann > 0 else None

    def ratio_at(self, inputs: EnergyInputs, t: int) -> float | None:
        """E_SNN(frames 1..t) / E_ANN from the raw counts (None when undefined)."""
        assert self.compute is not None
        return self.compute(self, inputs, t)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "e_mac_pj": self.e_mac_pj, "e_ac_pj": self.e_ac_pj,
               "reference": self.reference, "kind": self.kind, "description": self.description}
        if self.e_synop_pj is not None:
            out.update(e_synop_pj=self.e_synop_pj, e_neuron_update_pj=self.e_neuron_update_pj)
        return out


def _at(values: Sequence[float], t: int) -> float:
    return float(values[t - 1]) if values else 0.0


def _safe(numer: float, denom: float) -> float | None:
    return numer / denom if denom > 0 else None


def _horowitz(m: EnergyModel, x: EnergyInputs, t: int) -> float | None:
    acs = sum(_at(r["ops"], t) for r in x.connections() if r["input"] == "spike")
    macs = sum(_at(r["ops"], t) for r in x.connections() if r["input"] != "spike")
    return _safe(acs * m.e_ac_pj + macs * m.e_mac_pj, x.ann_dense_macs * m.e_mac_pj)


def _dcgs_official(m: EnergyModel, x: EnergyInputs, t: int) -> float | None:
    sop = sum(_at(r["input_ops"], t) for r in x.connections())
    dense = sum(r["dense_ops"] for r in x.connections())
    return _safe(sop * m.e_ac_pj, dense * m.e_mac_pj)


def _neurobench(m: EnergyModel, x: EnergyInputs, t: int) -> float | None:
    layers = x.connections(products=False)
    acs = sum(_at(r["unit_input_ops"], t) for r in layers)
    macs = sum(_at(r["input_ops"], t) for r in layers) - acs
    dense = sum(r["dense_ops"] for r in layers)
    return _safe(acs * m.e_ac_pj + macs * m.e_mac_pj, dense * m.e_mac_pj)


def _adafire_official(m: EnergyModel, x: EnergyInputs, t: int) -> float | None:
    layers = x.connections(products=False)
    if not layers:
        return None
    first, later = layers[0], layers[1:]
    energy = m.e_mac_pj * first["dense_ungrouped"] * t
    for r in later:
        if r["input_numel"] > 0:
            energy += m.e_ac_pj * r["dense_ungrouped"] * _at(r["input_nonzero"], t) / r["input_numel"]
    return _safe(energy, m.e_mac_pj * sum(r["dense_ungrouped"] for r in layers))


def _all_ops_as_ac(m: EnergyModel, x: EnergyInputs, t: int) -> float | None:
    ops = sum(_at(r["ops"], t) for r in x.connections())
    return _safe(ops * m.e_ac_pj, x.ann_dense_macs * m.e_mac_pj)


def _hardware(m: EnergyModel, x: EnergyInputs, t: int) -> float | None:
    synops = sum(_at(r["ops"], t) for r in x.connections())
    assert m.e_synop_pj is not None and m.e_neuron_update_pj is not None
    energy = synops * m.e_synop_pj + _at(x.neuron_updates, t) * m.e_neuron_update_pj
    return _safe(energy, x.ann_dense_macs * E_MAC_PJ)


HOROWITZ_45NM = EnergyModel(
    name="horowitz45nm-v1", e_mac_pj=E_MAC_PJ, e_ac_pj=E_AC_PJ, reference=HOROWITZ_REFERENCE,
    description="spike-fed ops x E_AC + real-valued-input ops (first layer) x E_MAC; one AC per spike "
                "through an average pool; E_ANN = dense MACs x E_MAC", compute=_horowitz)
DCGS_OFFICIAL = EnergyModel(
    name="dcgs-official", e_mac_pj=E_MAC_PJ, e_ac_pj=E_AC_PJ,
    reference="DCGS official code, statics/sop.py and val_functions.py:84-92 (docs/dcgs-official-code.md "
              "§5.2-5.3); " + HOROWITZ_REFERENCE,
    description="every op (first layer included) at E_AC; behind an average pool one op per non-zero pooled "
                "cell; E_ANN = dense MACs x E_MAC", compute=_dcgs_official)
NEUROBENCH = EnergyModel(
    name="neurobench", e_mac_pj=E_MAC_PJ, e_ac_pj=E_AC_PJ,
    reference="NeuroBench 2.3.0 (e521c28) synaptic_operations: Effective_ACs / Effective_MACs / Dense; "
              + HOROWITZ_REFERENCE,
    description="a layer call's ops are ACs only if all its inputs are in {-1,0,1}, else MACs; conv/linear "
                "only; E_ANN = Dense x E_MAC", compute=_neurobench)
ADAFIRE_OFFICIAL = EnergyModel(
    name="adafire-official", e_mac_pj=E_MAC_PJ, e_ac_pj=E_AC_PJ,
    reference="AdaFire released code (bic-L/burst-ann2snn@f69f670b, Energy :521-591); " + HOROWITZ_REFERENCE,
    description="first layer E_MAC x MACs every step; later layers E_AC x MACs x input density; a burst "
                "counts once; MACs = C_in*C_out*k*H*W (groups ignored)", compute=_adafire_official)
LOIHI = EnergyModel(
    name="loihi-published", e_mac_pj=E_MAC_PJ, e_ac_pj=E_AC_PJ, kind="published-constant estimate",
    e_synop_pj=23.6 + 3.5, e_neuron_update_pj=81.0,
    reference="Davies et al., 'Loihi', IEEE Micro 38(1), 2018, Table 1: 23.6 pJ per synaptic spike op + "
              "3.5 pJ per spike hop, 81 pJ per active neuron update",
    description="published-constant estimate, not a measurement: every effective op at 27.1 pJ, every neuron "
                "update at 81 pJ; E_ANN = Horowitz dense MACs x 4.6 pJ", compute=_hardware)
SPINNAKER2 = EnergyModel(
    name="spinnaker2-prototype-published", e_mac_pj=E_MAC_PJ, e_ac_pj=E_AC_PJ, kind="published-constant estimate",
    e_synop_pj=450.0, e_neuron_update_pj=2190.0,
    reference="SpiNNaker 2 prototype chip, published per-operation figures: 450 pJ per synaptic event, "
              "2.19 nJ per neuron update (check the chip paper before citing)",
    description="published-constant estimate, not a measurement: every effective op at 450 pJ, every neuron "
                "update at 2.19 nJ; E_ANN = Horowitz dense MACs x 4.6 pJ", compute=_hardware)

HMT_AAAI26_EQ31 = EnergyModel(
    name="hmt-aaai26-eq31", e_mac_pj=E_MAC_PJ, e_ac_pj=E_AC_PJ, snn_mac_pj=E_AC_PJ,
    reference="Zhang et al., AAAI-26 (H-MT), Eqs. 31-32 as the released sop.py computes them; " + HOROWITZ_REFERENCE,
    description="every SNN op (sub-spike x fan-out; first-layer non-zero inputs x fan-out) at E_AC = 0.9 pJ over "
                "the ANN's dense MACs at 4.6 pJ", compute=_all_ops_as_ac)

ENERGY_MODELS: dict[str, EnergyModel] = {m.name: m for m in (
    HOROWITZ_45NM, DCGS_OFFICIAL, NEUROBENCH, ADAFIRE_OFFICIAL, LOIHI, SPINNAKER2, HMT_AAAI26_EQ31)}
DEFAULT_ENERGY_MODEL = HOROWITZ_45NM
#: per-t key of a model's ratio (the default's is also ``energy_ratio``)
RATIO_KEY = "energy_ratio@{}"


def ratio_key(name: str) -> str:
    return RATIO_KEY.format(name)


def get_energy_model(name: str) -> EnergyModel:
    """The model called ``name``; unknown names are an error listing the valid ones."""
    try:
        return ENERGY_MODELS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, ENERGY_MODELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown energy model {name!r}{hint}; valid: {', '.join(ENERGY_MODELS)}") from None


def all_ratios(inputs: EnergyInputs, t: int) -> dict[str, float | None]:
    """``{"energy_ratio@NAME": ratio}`` for every registered model at step t."""
    return {ratio_key(name): model.ratio_at(inputs, t) for name, model in ENERGY_MODELS.items()}
