"""Typed method settings: frozen dataclasses built from CLI strings or dicts.

A method's settings are one frozen dataclass. ``settings_from_dict`` rejects unknown keys
(listing the valid ones), coerces strings such as ``"8"`` or ``"true"`` to the field type,
and checks ``Literal`` choices, so ``--set n=4`` and ``--set coding=rate`` are validated
before anything runs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Mapping, TypeVar, Union, get_args, get_origin

S = TypeVar("S")


class SettingsError(ValueError):
    """A setting name or value the method does not accept."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        for choice in choices:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise SettingsError(f"setting {name!r} must be one of {', '.join(map(str, choices))}; got {value!r}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.strip().lower() in {"none", "null", "", "auto"}):
            if type(None) in args:  # an optional setting: empty/none/auto mean "decide automatically"
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except SettingsError as err:
                errors.append(str(err))
        raise SettingsError("; ".join(errors) or f"bad value {value!r} for setting {name!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise SettingsError(f"setting {name!r} must be true or false; got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise SettingsError(f"setting {name!r} must be an integer; got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"setting {name!r} must be an integer; got {value!r}") from None
        if as_float != int(as_float):
            raise SettingsError(f"setting {name!r} must be an integer; got {value!r}")
        return int(as_float)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"setting {name!r} must be a number; got {value!r}") from None
    if tp is str:
        return str(value)
    return value


def settings_fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation for a settings dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def describe_field(cls: type, name: str) -> str:
    """Short human description of a field's accepted values."""
    tp = settings_fields(cls)[name]
    if get_origin(tp) is Literal:
        return "|".join(map(str, get_args(tp)))
    if get_origin(tp) in (Union, types.UnionType):
        return "|".join(getattr(a, "__name__", str(a)) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def settings_from_dict(cls: type[S], values: Mapping[str, Any] | None = None, *, owner: str = "method") -> S:
    """Build ``cls`` from ``values``; unknown keys raise :class:`SettingsError`."""
    values = dict(values or {})
    fields = settings_fields(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        valid = ", ".join(f"{k} ({describe_field(cls, k)})" for k in fields)
        raise SettingsError(f"{owner} has no setting {', '.join(map(repr, unknown))}. Its settings are: {valid}")
    coerced = {k: _coerce(k, v, fields[k]) for k, v in values.items()}
    obj = cls(**coerced)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def settings_to_dict(obj: Any) -> dict[str, Any]:
    """Plain dict of a settings dataclass (JSON-friendly)."""
    return dataclasses.asdict(obj)


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """Parse ``["k=v", ...]`` (from ``--set``) into a dict, rejecting malformed items."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise SettingsError(f"--set expects key=value, got {item!r}")
        key, _, value = item.partition("=")
        key = key.strip()
        if not key:
            raise SettingsError(f"--set expects key=value, got {item!r}")
        out[key] = value.strip()
    return out
