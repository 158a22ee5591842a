"""Named campaigns: what ``bench sweep`` runs with no arguments.

The embedded-default campaign runs every built-in method on every embedded task (real
data that ships in packages, models the zoo trains itself), sized to finish in minutes on
a laptop CPU once the zoo is trained: T = 16, 500 calibration images and 1,000 evaluation
images per classification task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.cell import CellSpec

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

    def methods(self) -> list[str]:
        """Every method registered by snnbench itself (third-party plugins are opt-in)."""
        from bench.plugins import method_registry

        reg = method_registry()
        return [n for n in reg.names() if reg.origin(n).startswith(BUILTIN_DISTRIBUTION + " ")]

    def includes(self, cell: CellSpec) -> bool:
        allowed = self.models.get(cell.task)
        return allowed is None or cell.model in allowed


EMBEDDED_CAMPAIGN = Campaign(
    name="embedded",
    tasks=("fashion_mnist",),
    eval_sizes={"fashion_mnist": 1000},
    models={"fashion_mnist": ("vgg_small", "resnet_small", "vit_mini")},
)
