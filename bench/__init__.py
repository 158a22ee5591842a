"""snnbench: benchmark and leaderboard suite for training-free ANN-to-SNN conversion.

The front doors: ``create_method``/``list_methods``, ``create_task``/``list_tasks`` and
``run_cell`` (one method x task x model cell, returning its :class:`~snnbench.record.CellResult`).

Importing ``snnbench`` itself is cheap and imports no subpackage: the front doors are
resolved lazily, so the leaf package that ``snnbench.methods`` and ``snnbench.tasks`` share
(:mod:`snnbench.common`: the registry, the cache, the file lock, the sha256 helper) never
pulls in the harness.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["create_method", "create_task", "list_methods", "list_tasks", "run_cell", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "run_cell":
        from snnbench.runner import run_cell

        return run_cell
    if name in {"create_method", "create_task", "list_methods", "list_tasks"}:
        from snnbench import plugins

        return getattr(plugins, name)
    raise AttributeError(f"module 'snnbench' has no attribute {name!r}")
