"""Sweep grids: methods x tasks x models (compatible with the task) x --set combinations x seeds.

T is a step inside a cell (one simulation to T yields every t), not a grid axis.
``--set key=v1,v2`` varies a method setting for an ablation; a setting a method does not
have is an error naming the ones it has. Methods without any settings (``ann``, the
reference row) take part once per (task, model, seed), untouched by ``--set``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable

from snnbench.cell import CellSpec
from snnbench.plugins import create_task, method_class
from snnbench.methods.settings import SettingsError, describe_field, settings_fields, settings_from_dict


class GridError(ValueError):
    """An invalid sweep grid (unknown names, settings, incompatible models)."""


def parse_list(text: str | None) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def parse_sets(items: Iterable[str] | None) -> dict[str, list[str]]:
    """``["coding=rate,differential", "n=4"]`` -> ``{"coding": ["rate", "differential"], "n": ["4"]}``."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        if "=" not in item:
            raise GridError(f"--set expects key=value[,value...], got {item!r}")
        key, _, values = item.partition("=")
        key = key.strip()
        vals = parse_list(values)
        if not key or not vals:
            raise GridError(f"--set expects key=value[,value...], got {item!r}")
        if key in out:
            raise GridError(f"--set {key} given twice; list its values once, comma-separated")
        out[key] = vals
    return out


def setting_combinations(sets: dict[str, list[str]]) -> list[dict[str, str]]:
    """Cartesian product of the --set values (one empty combination when there are none)."""
    if not sets:
        return [{}]
    keys = list(sets)
    return [dict(zip(keys, values)) for values in itertools.product(*(sets[k] for k in keys))]


@dataclass(frozen=True)
class GridOptions:
    """Everything besides the axes that every cell of a sweep shares."""

    T: int = 32
    calib_size: int = 1000
    eval_size: int | None = None
    batch_size: int | None = None
    data_root: str | None = None
    weights: str | None = None
    device: str = "cpu"
    task_eval_sizes: tuple[tuple[str, int | None], ...] = ()
    eval_ts: str = "auto"


def validate_sets_for_method(method: str, sets: dict[str, list[str]]) -> bool:
    """True if the method takes these --set keys; False for a method with no settings at all.

    Raises:
        GridError: the method lacks one of the keys (the message names its settings), or a
            value is invalid.
    """
    cls = method_class(method)
    fields = settings_fields(cls.settings_cls)
    if not fields:
        return False
    missing = [k for k in sets if k not in fields]
    if missing:
        valid = ", ".join(f"{k} ({describe_field(cls.settings_cls, k)})" for k in fields)
        raise GridError(f"method {method!r} has no setting {', '.join(map(repr, missing))}; its settings are: {valid}")
    for combo in setting_combinations(sets):
        try:
            settings_from_dict(cls.settings_cls, combo, owner=f"method {method!r}")
        except SettingsError as err:
            raise GridError(str(err)) from None
    return True


def expand_grid(methods: list[str], tasks: list[str], models: list[str] | None, sets: dict[str, list[str]],
                seeds: list[int], options: GridOptions) -> list[CellSpec]:
    """All cells of a sweep, in a stable order (task, model, method, settings, seed)."""
    if not methods:
        raise GridError("no methods given")
    if not tasks:
        raise GridError("no tasks given")
    takes_sets = {m: validate_sets_for_method(m, sets) for m in methods}
    combos = setting_combinations(sets)
    eval_sizes = dict(options.task_eval_sizes)
    cells: list[CellSpec] = []
    used_models: set[str] = set()
    for task_name in tasks:
        task = create_task(task_name, data_root=options.data_root)
        compatible = task.models()
        chosen = [m for m in models if m in compatible] if models else task.sweep_models()
        used_models.update(chosen)
        for model in chosen:
            for method in methods:
                for combo in (combos if takes_sets[method] else [{}]):
                    for seed in seeds:
                        cells.append(CellSpec(
                            method=method, task=task_name, model=model, settings=dict(combo), T=options.T,
                            seed=seed, calib_size=options.calib_size,
                            eval_size=eval_sizes.get(task_name, options.eval_size),
                            batch_size=options.batch_size, data_root=options.data_root, weights=options.weights,
                            device=options.device, eval_ts=options.eval_ts))
    if models:
        unused = [m for m in models if m not in used_models]
        if unused:
            from snnbench.tasks.zoo import get_model_spec

            for m in unused:
                get_model_spec(m)  # unknown names raise with the valid list
            raise GridError(f"model(s) {', '.join(unused)} fit none of the tasks {', '.join(tasks)}")
    return cells


def describe_cell(cell: CellSpec) -> str:
    """One line for --dry-run and progress: label, settings, seed."""
    settings = ",".join(f"{k}={v}" for k, v in cell.settings.items())
    extra = f" [{settings}]" if settings else ""
    return f"{cell.label()}{extra} seed={cell.seed} T={cell.T}"


def cells_to_dicts(cells: list[CellSpec]) -> list[dict[str, Any]]:
    return [c.to_dict() for c in cells]
