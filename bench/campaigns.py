"""Named campaigns: what ``bench sweep`` runs with no arguments.

The embedded-default campaign runs the built-in methods on every embedded task (real data
that ships in packages, models the zoo trains itself), sized to finish in well under an
hour on a laptop CPU once the zoo is trained: T = 16, 500 calibration images, 1,000
evaluation images for Fashion-MNIST classification and 100 canvases each for the
detection (``fmnist_det``) and segmentation (``fmnist_seg``) defaults. The SNN Calibration
baseline runs on the classification rows only: its layer-by-layer grid search over an
FCOS or FCN graph (80+ layers at 128 px) would dominate the campaign's time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from snnbench.cell import CellSpec

BUILTIN_DISTRIBUTION = "snnbench"


@dataclass(frozen=True)
class Campaign:
    name: str
    tasks: tuple[str, ...]
    T: int = 16
    calib_size: int = 500
    eval_sizes: dict[str, int] = field(default_factory=dict)
    #: per task, the models to use (default: the task's sweep models)
    models: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: per task, the methods to run (default: every built-in method)
    task_methods: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: rough seconds per cell label (``method/model/task``), for the order of a parallel sweep only
    expected_s: dict[str, float] = field(default_factory=dict)

    def methods(self) -> list[str]:
        """Every method registered by snnbench itself (third-party plugins are opt-in)."""
        from snnbench.plugins import method_registry

        reg = method_registry()
        return [n for n in reg.names() if reg.origin(n).startswith(BUILTIN_DISTRIBUTION + " ")]

    def includes(self, cell: CellSpec) -> bool:
        models = self.models.get(cell.task)
        methods = self.task_methods.get(cell.task)
        return (models is None or cell.model in models) and (methods is None or cell.method in methods)


def longest_first(cells: list[CellSpec], campaign: Campaign | None = None) -> list[CellSpec]:
    """``cells`` ordered by the campaign's expected seconds, longest first (stable; unknown cells
    keep their order, after the known ones). A pool of workers that starts the long cells first
    does not end with one worker still on a long cell while the others are idle."""
    expected = (campaign or EMBEDDED_CAMPAIGN).expected_s
    return sorted(cells, key=lambda c: -expected.get(c.label(), -1.0))


#: seconds of the embedded campaign's cells in a serial run on 2 cores (BENCHMARKS.md section 4),
#: rounded: only their order matters
_EMBEDDED_EXPECTED_S = {
    "dcgs/fcos_mobilenet_v2/fmnist_det": 68, "rate/fcos_mobilenet_v2/fmnist_det": 57,
    "ann/fcos_mobilenet_v2/fmnist_det": 7,
    "rate/fcn_mobilenet_v2/fmnist_seg": 45, "dcgs/fcn_mobilenet_v2/fmnist_seg": 40,
    "ann/fcn_mobilenet_v2/fmnist_seg": 2,
    "calibration/vit_mini/fashion_mnist": 25, "dcgs/vit_mini/fashion_mnist": 14, "rate/vit_mini/fashion_mnist": 13,
    "calibration/resnet_small/fashion_mnist": 18, "dcgs/resnet_small/fashion_mnist": 10,
    "rate/resnet_small/fashion_mnist": 6, "calibration/vgg_small/fashion_mnist": 10,
    "dcgs/vgg_small/fashion_mnist": 5, "rate/vgg_small/fashion_mnist": 4,
    "ann/vit_mini/fashion_mnist": 1.5, "ann/resnet_small/fashion_mnist": 1, "ann/vgg_small/fashion_mnist": 0.7,
}

EMBEDDED_CAMPAIGN = Campaign(
    name="embedded",
    tasks=("fashion_mnist", "fmnist_det", "fmnist_seg"),
    eval_sizes={"fashion_mnist": 1000, "fmnist_det": 100, "fmnist_seg": 100},
    models={"fashion_mnist": ("vgg_small", "resnet_small", "vit_mini"), "fmnist_det": ("fcos_mobilenet_v2",),
            "fmnist_seg": ("fcn_mobilenet_v2",)},
    # the original four on classification (adafire's searches, hmt, srp would triple the demo's
    # time: run them with --methods); detection and segmentation without SNN Calibration
    task_methods={"fashion_mnist": ("ann", "dcgs", "rate", "calibration"),
                  "fmnist_det": ("ann", "dcgs", "rate"), "fmnist_seg": ("ann", "dcgs", "rate")},
    expected_s=_EMBEDDED_EXPECTED_S,
)
