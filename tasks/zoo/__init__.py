"""The model zoo: a registry of buildable models and the cache of weights the project trains.

``list_models()`` / ``get_model_spec(name)`` read :func:`model_registry`, the project's one
:class:`~snnbench.common.registry.Registry` over the ``snnbench.models`` entry-point group
(each entry resolves to a :class:`ModelSpec` or a list of them). Names of the form
``torchvision/NAME`` and ``timm/NAME`` build any classifier those libraries know, with
weights from ``--weights`` or the local caches; ``qcfs/NAME`` (``qcfs/NAME_L<levels>``) builds a
torchvision architecture with QCFS activations for a user's QCFS checkpoint (QCFS track).
Trained weights are cached in :func:`zoo_dir` as verified entries of :mod:`snnbench.common.cache`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from snnbench.common.registry import MODELS_GROUP, Registry, UnknownNameError, lazy_registry, unknown_name_message
from snnbench.tasks.zoo.spec import ModelSpec, TrainRecipe

__all__ = ["ModelSpec", "TrainRecipe", "get_model_spec", "list_models", "model_origin", "model_registry",
           "model_track", "reset_model_registry", "zoo_dir"]

#: environment variable naming the zoo's cache directory
ZOO_DIR_ENV_VAR = "SNNBENCH_ZOO_DIR"


def zoo_dir(override: str | os.PathLike | None = None) -> Path:
    """The zoo's cache directory: ``override``, else ``$SNNBENCH_ZOO_DIR``, else ``~/.cache/snnbench/zoo``."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(ZOO_DIR_ENV_VAR):
        return Path(os.environ[ZOO_DIR_ENV_VAR]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "snnbench" / "zoo"


def _spec_name(spec: ModelSpec) -> str:
    return spec.name


@lazy_registry
def model_registry() -> Registry[ModelSpec]:
    """The registry of model specs: every ``snnbench.models`` entry point yields a spec or a list of them."""
    return Registry(kind="model", group=MODELS_GROUP, base_cls=ModelSpec, name_of=_spec_name)


def reset_model_registry() -> None:
    """Forget discovered models (tests that add entry points call this)."""
    model_registry.cache.clear()  # type: ignore[attr-defined]


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by shell pattern and task."""
    registry = model_registry()
    return [n for n in registry.names(pattern) if task is None or task in registry.get(n).tasks]


def dynamic_spec(name: str) -> ModelSpec | None:
    """A spec for ``torchvision/NAME``, ``timm/NAME`` (ImageNet classifiers) or ``qcfs/NAME``, else None."""
    from snnbench.tasks.zoo.catalog import IMAGENET_TASKS, build_timm, build_torchvision

    lib, _, arch = name.partition("/")
    if lib == "qcfs" and arch:
        return _qcfs_torchvision_spec(name, arch)
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


_LEVELS_SUFFIX = re.compile(r"^(?P<arch>.+)_L(?P<levels>[0-9]+)$")


def _qcfs_torchvision_spec(name: str, arch_text: str) -> ModelSpec:
    """``qcfs/ARCH`` or ``qcfs/ARCH_L<levels>``: a torchvision ARCH with QCFS activations (no default weights)."""
    import torchvision

    from snnbench.tasks.zoo.catalog import TORCHVISION_QCFS_LEVELS, build_torchvision_qcfs

    match = _LEVELS_SUFFIX.match(arch_text)
    arch, levels = (match["arch"], int(match["levels"])) if match else (arch_text, TORCHVISION_QCFS_LEVELS)
    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        raise UnknownNameError(unknown_name_message("torchvision classifier (for qcfs/NAME)", arch, known))
    if levels < 1:
        raise UnknownNameError(f"{name}: the QCFS level count after _L must be at least 1")
    return ModelSpec(name=name, description=f"torchvision {arch} with QCFS activations (L={levels}) and average "
                     "pools; pass your QCFS checkpoint with --weights", family="classification",
                     tasks=("imagenet", "cifar10", "cifar100"), build=build_torchvision_qcfs, source="none",
                     meta={"arch": arch, "qcfs_levels": levels, "activation": "QCFS (Bu et al., ICLR 2022)",
                           "pooling": "max-pool replaced by average pool (as the QCFS code does)"},
                     track="qcfs")


def model_track(name: str) -> str:
    """The track (``plain`` / ``qcfs``) of model ``name``; ``plain`` when it is not a known spec."""
    try:
        return get_model_spec(name).track
    except Exception:  # noqa: BLE001 - detection/segmentation names or user models: the plain track
        return "plain"


def get_model_spec(name: str) -> ModelSpec:
    """The spec of ``name``; unknown names raise an error listing the valid ones."""
    registry = model_registry()
    if name in registry:
        return registry.get(name)
    dyn = dynamic_spec(name) if "/" in name else None
    if dyn is not None:
        return dyn
    raise UnknownNameError(unknown_name_message("model", name, registry.names()) +
                           " (or torchvision/NAME, timm/NAME for any classifier of those libraries, "
                           "qcfs/NAME for a torchvision architecture with QCFS activations)")


def model_origin(name: str) -> str:
    """``distribution (module:object)`` of a registered model; ``dynamic`` for ``torchvision/NAME`` etc."""
    registry = model_registry()
    return registry.origin(name) if name in registry else "dynamic"
