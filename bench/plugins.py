"""The registries' front doors: create and list methods and tasks (models: snnbench.tasks.zoo)."""

from __future__ import annotations

from typing import Any, Mapping

from snnbench.common.registry import (METHODS_GROUP, TASKS_GROUP, Registry, UnknownNameError, first_doc_line,
                                      lazy_registry)


@lazy_registry
def method_registry() -> Registry:
    from snnbench.methods.base import ConversionMethod

    return Registry(kind="method", group=METHODS_GROUP, base_cls=ConversionMethod)


@lazy_registry
def task_registry() -> Registry:
    from snnbench.tasks.base import Task

    return Registry(kind="task", group=TASKS_GROUP, base_cls=Task)


def list_methods(pattern: str | None = None) -> list[str]:
    return method_registry().names(pattern)


def list_tasks(pattern: str | None = None) -> list[str]:
    return task_registry().names(pattern)


def method_class(name: str) -> type:
    return method_registry().get(name)


def create_method(name: str, settings: Mapping[str, Any] | None = None):
    """Instantiate method ``name`` with ``settings`` (validated; unknown keys listed)."""
    cls = method_class(name)
    obj = cls(settings)
    return obj


def create_task(name: str, **options: Any):
    """Instantiate task ``name``; options the task does not take are dropped with care."""
    import inspect

    cls = task_registry().get(name)
    params = inspect.signature(cls.__init__).parameters
    accepted = {k: v for k, v in options.items() if k in params}
    return cls(**accepted)


def describe(obj: Any) -> str:
    return getattr(obj, "description", "") or first_doc_line(obj)


__all__ = ["UnknownNameError", "create_method", "create_task", "list_methods", "list_tasks", "method_class",
           "method_registry", "task_registry", "describe"]
