"""snnbench: benchmark and leaderboard suite for training-free ANN-to-SNN conversion.

The front doors: ``create_method``/``list_methods``, ``create_task``/``list_tasks`` and
``run_cell`` (one method x task x model cell, returning the JSON result contract).
"""

from bench.plugins import create_method, create_task, list_methods, list_tasks

__version__ = "0.1.0"

__all__ = ["create_method", "create_task", "list_methods", "list_tasks", "run_cell", "__version__"]


def __getattr__(name: str):
    if name == "run_cell":
        from bench.runner import run_cell

        return run_cell
    raise AttributeError(name)
