"""The method protocol: calibrate statistics, convert an ANN into a model stepped in time.

A method knows nothing of tasks. The harness gives it the ANN (``nn.Module``, tensor in ->
tensor or dict of tensors out), the calibration statistics it asked for through
:meth:`ConversionMethod.stat_kinds` (cached and shared between methods), and a
:class:`ConversionContext`. It returns a :class:`SpikingModel`, which

* is stepped in time by :meth:`SpikingModel.simulate`, yielding the decoded estimate of
  the ANN output at every t = 1..T from one simulation;
* declares, in its :class:`CountPlan`, which connection layers are fed by spikes and which
  by real values, and which modules emit spikes, so the op counter never guesses from
  values (the NeuroBench pitfall);
* may stop some samples early (per-sample adaptive timesteps): before computing a frame it
  sets :attr:`SpikingModel.active` to a bool mask ``[batch]`` of the samples that compute
  it (``None``: all). The op counter counts spikes and ops of active samples only, the
  runner reports the steps each sample used, and the model yields, for a sample that has
  stopped, the output it stopped with, so the metric at t is that of the policy at t.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, Iterable, Iterator, Literal, Mapping, TypeVar

import torch
from torch import nn

from snnbench.methods.settings import settings_from_dict, settings_to_dict

if TYPE_CHECKING:  # pragma: no cover
    from snnbench.methods.snn.stats import StatKind, Stats

S = TypeVar("S")


@dataclass
class ConversionContext:
    """What the harness tells a method about the run.

    Attributes:
        T: the largest time-step simulated (threshold iteration's N = T * 2^n uses it).
        device: where the SNN runs.
        example: one calibration batch (shape reference for tracing).
        calib_batches: returns a fresh iterator over the calibration batches, for methods
            that need more than cached statistics (e.g. SNN Calibration's bias correction).
    """

    T: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    example: torch.Tensor | None = None
    calib_batches: Callable[[], Iterable[torch.Tensor]] | None = None


@dataclass
class ConnectionSite:
    """A synaptic layer (conv, linear, product) and what feeds it.

    ``input_kind`` is ``"spike"`` when every input comes from spiking neurons through data
    movement only, or through one average pool (``events_from``): a pooled spike map feeds
    the layer as (sum of spikes)/area, which hardware realises by accumulating each spike
    into the pooled cell's fan-out with pre-scaled weights. Ops then count as accumulates
    (AC); otherwise (``"analog"``) as MACs.
    For product units, ``operand_kinds`` gives the kind of each operand.
    """

    name: str
    module: nn.Module
    input_kind: Literal["spike", "analog"]
    op: Literal["conv", "linear", "product"] = "conv"
    operand_kinds: tuple[str, ...] = ()
    #: an average pool between the neurons and this layer (then ``flatten``/``reshape``
    #: only): its input spikes are the events, each reaching the layer through the pooled
    #: cell that holds it, so the layer's ops are ACs counted per spike, not per pooled value
    events_from: nn.Module | None = None
    #: events carried by each input element (by default one per non-zero element): a neuron that
    #: sends several binary sub-spikes per step on separate threshold channels (H-MT, AAAI-26 Eq. 32)
    #: returns its per-element sub-spike counts for the tensor it is given (the layer's input, or
    #: the pool's input when ``events_from`` is set); each sub-spike reaches the whole fan-out
    input_events: Callable[[torch.Tensor], torch.Tensor] | None = None
    #: the one spiking module whose output reaches this layer unchanged (``conv``: through
    #: identity/dropout only; ``linear``: also through reshapes): the op counter then takes
    #: the spike counts from that module's own counting pass instead of reading the input
    spikes_from: nn.Module | None = None


@dataclass
class NeuronSite:
    """A module whose output is spikes. ``unit`` is the amplitude of one unit spike
    (θ/2^(n-1) for an MT neuron with n levels, θ for IF), per element-broadcastable."""

    name: str
    module: nn.Module
    unit: Callable[[], torch.Tensor] | None = None


@dataclass
class CountPlan:
    """Everything the op counter needs, declared by the method."""

    connections: list[ConnectionSite] = field(default_factory=list)
    neurons: list[NeuronSite] = field(default_factory=list)
    #: the first frame that costs energy (1 for differential coding: frame 0 is the bias pass)
    first_counted_frame: int = 1
    #: frames simulated (and counted) before readout step 1 among frames 1, 2, ... (SRP's
    #: pre-simulation tau): readout step t is frame t + readout_offset, and the counts of step
    #: t are cumulative over frames first_counted_frame .. t + readout_offset
    readout_offset: int = 0


@dataclass(frozen=True)
class Fairness:
    """What one time-step of a converted network can carry, for honest per-T comparisons.

    A row "at T = 4" of a 1-bit IF network and one of a signed 8-level MT network are not the
    same budget; these figures travel with every result and leaderboard row.

    Attributes:
        frames_before_readout: frames simulated before readout step t = 1 (1 for the bias
            pass of differential coding, tau for SRP's pre-simulation, 0 otherwise), so the
            latency of readout step t is ``t + frames_before_readout`` frames.
        levels_per_step: log2 of the number of distinct values one neuron can emit in one
            step (1 bit for IF: {0, theta}; log2(2n + 1) for a signed n-level MT neuron).
        max_spikes_per_step: the most unit spikes one neuron can emit in one step (1 for IF,
            2^(n-1) units for the top level of an n-level MT neuron, the cap of a burst neuron).
    """

    frames_before_readout: int = 0
    levels_per_step: float = 1.0
    max_spikes_per_step: int = 1

    def latency(self, t: int) -> int:
        """Frames actually simulated up to and including readout step ``t``."""
        return t + self.frames_before_readout

    def to_dict(self) -> dict[str, Any]:
        return {"frames_before_readout": self.frames_before_readout,
                "levels_per_step": round(float(self.levels_per_step), 4),
                "max_spikes_per_step": int(self.max_spikes_per_step)}


class SpikingModel(nn.Module, abc.ABC):
    """A converted network, stepped in time with its state kept inside its modules."""

    #: True when the output is the same at every t (the ANN reference)
    static: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        #: index of the frame being computed (0 is the bias pass of differential coding)
        self.frame = 0
        #: bool ``[batch]`` mask of the samples computing the current frame (None: all of them);
        #: set by models with per-sample early exit, read by the op counter and the runner
        self.active: torch.Tensor | None = None

    @abc.abstractmethod
    def reset(self) -> None:
        """Reset every stateful module (between batches)."""

    @abc.abstractmethod
    def simulate(self, x: torch.Tensor, T: int) -> Iterator[Any]:
        """Yield the decoded output estimate at t = 1, ..., T for input batch ``x``."""

    @abc.abstractmethod
    def count_plan(self) -> CountPlan:
        """Connection layers and spiking modules, for op counting."""

    def describe(self) -> dict[str, Any]:
        """Provenance of the conversion (neuron counts, coding ...), JSON-friendly."""
        return {}

    def fairness(self) -> Fairness:
        """Latency offset, levels and spikes per step (see :class:`Fairness`); methods override."""
        return Fairness()


class ConversionMethod(abc.ABC, Generic[S]):
    """Base of every method plugin (registered under ``snnbench.methods``).

    Subclasses set :attr:`settings_cls` (a frozen dataclass) and implement
    :meth:`convert`; :meth:`stat_kinds` declares the calibration statistics needed.
    """

    #: registry name (informational; the entry-point name is authoritative)
    name: ClassVar[str] = ""
    #: bump when results of the same settings change; part of every cell key
    version: ClassVar[str] = "1"
    settings_cls: ClassVar[type]
    #: False for methods whose conversion reads no calibration data (QCFS: thresholds are
    #: the learned λ); the harness still passes one batch as the tracing example
    uses_calibration_data: ClassVar[bool] = True
    #: model tracks the method converts (``plain``: ordinary ANNs, ``qcfs``: QCFS-trained);
    #: a sweep grid skips the models of other tracks
    tracks: ClassVar[tuple[str, ...]] = ("plain", "qcfs")
    #: True for the static model (the ANN itself, :mod:`snnbench.methods.ann`): its output is
    #: the same at every t, with no spikes, so the harness reports the ANN evaluation it has
    #: already made (cached per task x model) at every t instead of converting and simulating
    #: again, and the row is the leaderboard's unranked reference
    reference: ClassVar[bool] = False

    def __init__(self, settings: S | Mapping[str, Any] | None = None) -> None:
        if settings is None or isinstance(settings, Mapping):
            settings = settings_from_dict(self.settings_cls, settings or {}, owner=f"method {self.name!r}")
        elif not isinstance(settings, self.settings_cls):
            raise TypeError(f"{type(self).__name__} takes {self.settings_cls.__name__}, got {type(settings).__name__}")
        self.settings: S = settings  # type: ignore[assignment]

    @classmethod
    def setting_names(cls) -> list[str]:
        from snnbench.methods.settings import settings_fields

        return list(settings_fields(cls.settings_cls))

    def config(self) -> dict[str, Any]:
        """Canonical, JSON-friendly description: feeds the cell key."""
        return {"method": self.name, "version": self.version, "settings": settings_to_dict(self.settings)}

    def stat_kinds(self, model: nn.Module, ctx: ConversionContext) -> tuple["StatKind", ...]:
        """Calibration statistics this method needs (the harness collects and caches them)."""
        return ()

    @abc.abstractmethod
    def convert(self, model: nn.Module, stats: "Stats", ctx: ConversionContext) -> SpikingModel:
        """Turn the ANN into a :class:`SpikingModel` (the ANN is not modified)."""
