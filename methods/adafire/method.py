"""``adafire``: Adaptive Calibration (Wang, Fang, Cao, Ren, Xu, "A Unified Conversion Framework
of Spiking Neural Networks", AAAI 2025, arXiv 2412.16219; code bic-L/burst-ann2snn;
docs/baseline-methods.md §4), training-free, on top of SNN Calibration's machinery.

Pipeline (each part a setting, so ``--set search=false,true --set ssc=false,true`` is the
ablation):

1. **AdaFire burst neurons** (methods/adafire/burst.py) at every ReLU, thresholds from the
   burst-aware MSE grid floor(clip(a/θ, 0, K)·T)·θ/T, channel-wise (the official ImageNet
   script; here the feature axis of every site, also of fully connected layers, where the
   release falls back to layer-wise).
2. ``search``: the Adaptive-Firing search of per-layer caps K_l ∈ [minspike, initialspike]
   (thresholds estimated at K = initialspike first), budget
   Σ spikes <= maxspike_ratio · Σ spikes at K = maxspike; thresholds re-estimated with the
   chosen caps (methods/adafire/search.py). Without it every layer has K = maxspike.
3. Light calibration (bias correction, ``mode=light``) on ``correction_samples`` samples.
4. ``ssc``: Sensitivity Spike Compression, θ_l ← r_l·θ_l with r ∈ {1, 1.5, ..., 10}
   minimising spikes subject to Σ sensitivity <= threshold_ratio · Σ sensitivity at r = 1,
   then bias correction again.
5. ``iat``: Input-aware Adaptive Timesteps, per-sample early exit on the confidence of the
   cumulative logits, thresholds fitted on the calibration set (methods/adafire/timesteps.py).
   Classification only.

Defaults are the release's ImageNet defaults (``convert_imagenet.py``: maxspike 8, minspike 2,
initialspike 16, both ratios 0.95, metric kl, light calibration), with the search batch of
256 kept (the embedded calibration sets hold 1000 samples). T is the harness's T (the
release's 32 is also the harness default). The searches run ``(sites × candidates)``
T-step simulations of that batch: by far the most expensive part of the conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from snnbench.methods.adafire.burst import BurstNetwork, BurstNeuron
from snnbench.methods.adafire.search import search_caps, search_threshold_ratios
from snnbench.methods.adafire.timesteps import AdaptiveTimestepNetwork, fit_exit_thresholds
from snnbench.methods.base import ConversionContext, SpikingModel
from snnbench.methods.calibration.correction import calibrate_network
from snnbench.methods.calibration.method import CalibrationSettings, SNNCalibration, first_samples
from snnbench.methods.settings import SettingsError
from snnbench.methods.snn.graph import Site
from snnbench.methods.snn.stats import StatKind, Stats, collect_stats


@dataclass(frozen=True)
class AdaFireSettings(CalibrationSettings):
    """Adaptive Calibration settings (defaults: the release's ImageNet defaults).

    Attributes:
        maxspike: burst cap of every layer without ``search``; the desired cap whose spike
            count sets the search's budget with it (release ``--maxspike`` 8).
        minspike: smallest cap the search may pick (``--minspike`` 2).
        initialspike: largest cap the search may pick, and the cap of the thresholds it
            starts from (``--initialspike`` 16).
        search: Adaptive-Firing per-layer cap search (``--search``).
        ssc: Sensitivity Spike Compression (``--search_threshold``).
        iat: Input-aware Adaptive Timesteps (per-sample early exit; classification only).
        maxspike_ratio: spike budget of the cap search, relative to all layers at ``maxspike``.
        threshold_ratio: sensitivity budget of SSC, relative to r = 1 everywhere.
        metric: SSC sensitivity, ``kl`` (symmetric KL to the ANN's softmax) or ``agreement``
            (drop in top-1 agreement with the ANN: the release's ``accuracy`` without labels).
        search_samples: calibration samples in the searches' batch (the release: one batch of 256).
    """

    granularity: Literal["auto", "layer", "channel", "token"] = "channel"
    maxspike: int = 8
    minspike: int = 2
    initialspike: int = 16
    search: bool = True
    ssc: bool = True
    iat: bool = True
    maxspike_ratio: float = 0.95
    threshold_ratio: float = 0.95
    metric: Literal["kl", "agreement"] = "kl"
    search_samples: int = 256

    def validate(self) -> None:
        super().validate()
        if self.neuron != "if" or self.n != 1 or self.coding != "rate":
            raise SettingsError("adafire uses its own burst neurons with rate coding: neuron, n and coding "
                                "cannot be changed (leave them at if, 1, rate)")
        if self.threshold != "grid":
            raise SettingsError("adafire's thresholds are the burst-aware MSE grid (threshold=grid)")
        if self.placement == "inputs":
            raise SettingsError("adafire places burst neurons at ReLU activations (placement=activations or auto)")
        if not 1 <= self.minspike <= self.maxspike <= self.initialspike <= 64:
            raise SettingsError("adafire needs 1 <= minspike <= maxspike <= initialspike <= 64, got "
                                f"{self.minspike}, {self.maxspike}, {self.initialspike}")
        if not 0 < self.maxspike_ratio <= 10 or not 0 < self.threshold_ratio <= 10:
            raise SettingsError("maxspike_ratio and threshold_ratio must be in (0, 10]")
        if self.search_samples < 1:
            raise SettingsError("search_samples must be positive")


class AdaFire(SNNCalibration):
    """Adaptive Calibration: AdaFire burst neurons, cap search, SSC and IAT."""

    name = "adafire"
    version = "1"
    settings_cls = AdaFireSettings

    def _initial_cap(self) -> int:
        s = self.settings
        return s.initialspike if s.search else s.maxspike

    def _grid_kind(self, base: StatKind, cap: int) -> StatKind:
        return StatKind("mse_grid", granularity=base.granularity, placement=base.placement, levels=base.levels,
                        grid_points=base.grid_points, grid_step=base.grid_step, maxspike=cap)

    def _stat_kind(self, graph, T: int) -> StatKind:
        return self._grid_kind(super()._stat_kind(graph, T), self._initial_cap())

    def make_neuron(self, site: Site, theta: torch.Tensor) -> BurstNeuron:
        if site.kind != "activation":  # pragma: no cover - placement=inputs is rejected by the settings
            raise SettingsError("adafire places burst neurons at activations only")
        return BurstNeuron(theta, maxspike=self._initial_cap(), sim_length=self._sim_length)

    def convert(self, model: nn.Module, stats: Stats, ctx: ConversionContext) -> SpikingModel:
        s, T = self.settings, ctx.T
        self._sim_length = T
        if s.iat or s.search or s.ssc:
            _require_classifier(model, ctx, s)
        plain, graph, unit_paths = self.build(model, stats, ctx)
        snn = BurstNetwork(plain.net, coding="rate", description=plain._description)
        neurons = [snn.net.get_submodule(unit_paths[site.name]) for site in graph.sites]
        notes: dict = {"burst_cap_start": self._initial_cap()}
        if (s.search or s.ssc or s.mode != "grid" or s.iat) and ctx.calib_batches is None:
            raise ValueError("adafire's searches, corrections and IAT need calibration batches")
        search_batch = ann_logits = None
        if s.search or s.ssc:
            search_batch = first_samples(ctx.calib_batches(), s.search_samples).to(ctx.device)
            with torch.inference_mode():
                ann_logits = model(search_batch)
            notes["search_samples"] = int(search_batch.shape[0])
        if s.search:
            report = search_caps(snn, neurons, search_batch, T, ann_logits, s.minspike, s.initialspike,
                                 desired=s.maxspike, ratio=s.maxspike_ratio)
            caps = [int(k) for k in report.choices]
            for neuron, cap in zip(neurons, caps):
                neuron.maxspike = cap
            self._reestimate_thresholds(model, stats, ctx, graph, neurons, caps)
            notes["cap_search"] = report.to_dict()
        if s.mode != "grid":
            self._correct(snn, graph, unit_paths, ctx, notes, "correction_after_caps")
        if s.ssc:
            report = search_threshold_ratios(snn, neurons, search_batch, T, ann_logits, s.threshold_ratio, s.metric)
            for neuron, ratio in zip(neurons, report.choices):
                neuron.theta.mul_(float(ratio))
            notes["ssc"] = report.to_dict()
            if s.mode != "grid":
                self._correct(snn, graph, unit_paths, ctx, notes, "correction_after_ssc")
        snn._description.update(notes)
        if not s.iat:
            return snn
        thresholds, entropies = fit_exit_thresholds(snn, model, ctx.calib_batches(), T)
        snn._description["iat_mean_entropy"] = [None if m is None else round(m, 6) for m in entropies]
        return AdaptiveTimestepNetwork(snn, thresholds)

    def _correct(self, snn, graph, unit_paths, ctx: ConversionContext, notes: dict, key: str) -> None:
        s = self.settings
        batch = first_samples(ctx.calib_batches(), s.correction_samples).to(ctx.device)
        report = calibrate_network(snn, graph, unit_paths, batch, ctx.T,
                                   mode="bias" if s.mode == "light" else "potential")
        notes[key] = {"samples": int(batch.shape[0]),
                      "mean_abs_error_before": sum(report.values()) / max(len(report), 1)}

    def _reestimate_thresholds(self, model: nn.Module, stats: Stats, ctx: ConversionContext, graph,
                               neurons: list[BurstNeuron], caps: list[int]) -> None:
        """The burst-aware grid again, each layer with its chosen cap (the release re-runs
        ``get_maximum_activation`` after the search)."""
        base = self._stat_kind(graph, ctx.T)
        kinds = {cap: self._grid_kind(base, cap) for cap in sorted(set(caps))}
        missing = [k for k in kinds.values() if not stats.has(k)]
        if missing:
            collected = collect_stats(model, ctx.calib_batches, missing, graph=graph)
            for kind in missing:
                stats.add(kind, collected.get_kind(kind))
        scale = self.resolved(graph)["threshold_scale"]
        for site, neuron, cap in zip(graph.sites, neurons, caps):
            theta = self.site_threshold(site, stats, kinds[cap], ctx.T, scale)
            neuron.theta = theta.to(neuron.theta.device).reshape(neuron.theta.shape)


def _require_classifier(model: nn.Module, ctx: ConversionContext, s: AdaFireSettings) -> None:
    """IAT and the searches score class distributions: refuse other outputs, naming why."""
    if ctx.example is None:
        return
    with torch.inference_mode():
        out = model(ctx.example[:2])
    if isinstance(out, torch.Tensor) and out.ndim == 2:
        return
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    parts = [name for name, on in (("iat", s.iat), ("search", s.search), ("ssc", s.ssc)) if on]
    raise ValueError(
        f"adafire's {', '.join(parts)} need a classifier's logits [batch, classes], but this model outputs {shape} "
        "(a detection or segmentation task): IAT exits a sample on the confidence 1 - H(softmax)/log C of its "
        "class distribution and freezes one prediction per sample, and the searches compare class "
        "distributions with the ANN's. Use --set iat=false --set search=false --set ssc=false there.")
