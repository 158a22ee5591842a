"""The model zoo: a registry of buildable models and the cache of weights the project trains.

``list_models()`` / ``get_model_spec(name)`` read the ``snnbench.models`` entry-point group
(each entry resolves to a :class:`ModelSpec` or a list of them). Names of the form
``torchvision/NAME`` and ``timm/NAME`` build any classifier those libraries know, with
weights from ``--weights`` or the local caches.
"""

from __future__ import annotations

import fnmatch
from importlib import metadata

from snnbench.registry import MODELS_GROUP, DuplicateNameError, UnknownNameError, unknown_name_message
from snnbench.tasks.zoo.spec import ModelSpec, TrainRecipe

__all__ = ["ModelSpec", "TrainRecipe", "get_model_spec", "list_models", "model_origin", "reset_model_registry"]

_SPECS: dict[str, tuple[ModelSpec, str]] = {}


def _discover() -> dict[str, tuple[ModelSpec, str]]:
    if _SPECS:
        return _SPECS
    seen: set[tuple[str, str]] = set()
    for ep in metadata.entry_points(group=MODELS_GROUP):
        if (ep.name, ep.value) in seen:
            continue
        seen.add((ep.name, ep.value))
        obj = ep.load()
        specs = obj if isinstance(obj, (list, tuple)) else [obj]
        dist = ep.dist.metadata["Name"] if getattr(ep, "dist", None) is not None else "?"
        for spec in specs:
            if not isinstance(spec, ModelSpec):
                raise TypeError(f"model entry point {ep.name} ({ep.value}) yields {spec!r}, not a ModelSpec")
            if spec.name in _SPECS:
                raise DuplicateNameError(f"model {spec.name!r} is registered twice ({_SPECS[spec.name][1]} and {dist})")
            _SPECS[spec.name] = (spec, f"{dist} ({ep.value})")
    return _SPECS


def reset_model_registry() -> None:
    """Forget discovered models (tests that add entry points call this)."""
    _SPECS.clear()


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by shell pattern and task."""
    specs = _discover()
    names = sorted(n for n, (s, _) in specs.items() if task is None or task in s.tasks)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def dynamic_spec(name: str) -> ModelSpec | None:
    """A spec for ``torchvision/NAME`` or ``timm/NAME`` (ImageNet classifiers), else None."""
    from snnbench.tasks.zoo.catalog import IMAGENET_TASKS, build_timm, build_torchvision

    lib, _, arch = name.partition("/")
    if lib == "torchvision" and arch:
        import torchvision

        if arch not in torchvision.models.list_models(module=torchvision.models):
            raise UnknownNameError(unknown_name_message(
                "torchvision classifier", arch, torchvision.models.list_models(module=torchvision.models)))
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        return ModelSpec(name=name, description=f"torchvision {arch}", family="classification", tasks=IMAGENET_TASKS,
                         build=build_torchvision, source="torchvision",
                         weights=f"{type(weights).__name__}.{weights.name}", meta={"arch": arch})
    if lib == "timm" and arch:
        import timm

        base, _, tag = arch.partition(".")
        if not timm.is_model(base):
            raise UnknownNameError(unknown_name_message("timm model", base, timm.list_models()))
        return ModelSpec(name=name, description=f"timm {arch}", family="classification", tasks=IMAGENET_TASKS,
                         build=build_timm, source="timm", weights=tag or None, meta={"arch": base})
    return None


def get_model_spec(name: str) -> ModelSpec:
    """The spec of ``name``; unknown names raise an error listing the valid ones."""
    specs = _discover()
    if name in specs:
        return specs[name][0]
    dyn = dynamic_spec(name) if "/" in name else None
    if dyn is not None:
        return dyn
    raise UnknownNameError(unknown_name_message("model", name, specs) +
                           " (or torchvision/NAME, timm/NAME for any classifier of those libraries)")


def model_origin(name: str) -> str:
    specs = _discover()
    return specs[name][1] if name in specs else "dynamic"
