"""Plugin registries for methods, tasks and models.

One generic :class:`Registry` (the lm-evaluation-harness pattern) fed by Python entry
points. The built-in plugins are declared in ``pyproject.toml`` under the groups
``snnbench.methods``, ``snnbench.tasks`` and ``snnbench.models``, exactly as a
third-party package would declare its own, so there is one registration path.

Entries are lazy: listing names imports nothing; an entry's object is imported the first
time it is asked for, checked against the registry's base class, and cached. A group whose
entry points each yield a *collection* (the model zoo's lists of ``ModelSpec``) names its
items with ``name_of``; those entry points are loaded when the group is discovered.
Registries are the only module-level mutable state of snnbench.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import logging
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Generic, Iterable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

METHODS_GROUP = "snnbench.methods"
TASKS_GROUP = "snnbench.tasks"
MODELS_GROUP = "snnbench.models"


class UnknownNameError(KeyError):
    """An unknown plugin name; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(ValueError):
    """Two plugins claim the same name."""


def unknown_name_message(kind: str, name: str, valid: Iterable[str]) -> str:
    """Build "unknown X 'y'. Did you mean ...? Valid: ..." (lm-eval style)."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(valid) if valid else "(none registered)"
    return f"unknown {kind} {name!r}.{hint} Valid {kind}s: {listing}"


@dataclass
class _Entry:
    name: str
    target: str | None = None  # "module:object" for lazy entries
    obj: Any = None
    distribution: str | None = None  # the package that declared it
    loaded: bool = False


@dataclass
class Registry(Generic[T]):
    """A named collection of plugins of one kind.

    Args:
        kind: singular noun used in messages ("method", "task").
        group: entry-point group the registry reads on first use.
        base_cls: every loaded object must be a subclass (classes) or instance of it.
        name_of: for groups whose entry points yield an object or a list/tuple of objects,
            each registered under ``name_of(obj)`` (``None``: one object per entry point,
            registered lazily under the entry point's name).
    """

    kind: str
    group: str | None = None
    base_cls: type | None = None
    name_of: Callable[[Any], str] | None = None
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _discovered: bool = False

    # -- registration -------------------------------------------------------------------
    def register(self, name: str, obj: Any = None, *, target: str | None = None,
                 distribution: str | None = None) -> None:
        """Add ``obj`` (or a lazy ``"module:object"`` target) under ``name``."""
        if name in self._entries:
            other = self._entries[name]
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered twice: by "
                f"{other.distribution or other.target or 'code'} and by "
                f"{distribution or target or 'code'}; rename one of them")
        self._entries[name] = _Entry(name=name, target=target, obj=obj, distribution=distribution,
                                     loaded=obj is not None)

    def discover(self, force: bool = False) -> None:
        """Read entry points of :attr:`group` (once, unless ``force``)."""
        if self.group is None or (self._discovered and not force):
            return
        if force:
            self._entries = {k: v for k, v in self._entries.items() if v.distribution is None}
        before = dict(self._entries)
        seen: set[tuple[str, str]] = set()
        try:
            for ep in metadata.entry_points(group=self.group):
                dist = getattr(ep, "dist", None)
                dist_name = dist.metadata["Name"] if dist is not None else "?"
                # the same distribution can be visible twice on sys.path (editable + build dir)
                if (ep.name, ep.value) in seen:
                    continue
                seen.add((ep.name, ep.value))
                if self.name_of is None:
                    self.register(ep.name, target=ep.value, distribution=dist_name)
                else:
                    self._register_collection(ep.name, ep.value, dist_name)
        except Exception:
            self._entries = before  # a failed discovery leaves nothing half-registered
            raise
        self._discovered = True

    def _register_collection(self, ep_name: str, target: str, distribution: str) -> None:
        """Load an entry point yielding one object or a list of them; register each by ``name_of``."""
        loaded = _load_target(target)
        for obj in loaded if isinstance(loaded, (list, tuple)) else [loaded]:
            if self.base_cls is not None and not isinstance(obj, self.base_cls):
                raise TypeError(f"{self.kind} entry point {ep_name} ({target}) yields {obj!r}, "
                                f"which is not a {self.base_cls.__name__}")
            self.register(self.name_of(obj), obj, target=target, distribution=distribution)  # type: ignore[misc]

    # -- lookup -------------------------------------------------------------------------
    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted registered names, optionally filtered by a shell-style pattern."""
        self.discover()
        names = sorted(self._entries)
        return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names

    def __contains__(self, name: str) -> bool:
        self.discover()
        return name in self._entries

    def get(self, name: str) -> T:
        """The plugin object for ``name``; unknown names raise :class:`UnknownNameError`."""
        self.discover()
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownNameError(unknown_name_message(self.kind, name, self._entries))
        if not entry.loaded:
            entry.obj = _load_target(entry.target)
            entry.loaded = True
            self._check_type(name, entry.obj)
        return entry.obj

    def origin(self, name: str) -> str:
        """Where ``name`` comes from: ``distribution (module:object)``."""
        self.get(name)
        entry = self._entries[name]
        where = entry.target
        if where is None:
            obj = entry.obj
            mod = inspect.getmodule(obj)
            where = f"{mod.__name__ if mod else '?'}:{getattr(obj, '__qualname__', type(obj).__name__)}"
        return f"{entry.distribution or 'code'} ({where})"

    def _check_type(self, name: str, obj: Any) -> None:
        if self.base_cls is None:
            return
        ok = (inspect.isclass(obj) and issubclass(obj, self.base_cls)) or isinstance(obj, self.base_cls)
        if not ok:
            raise TypeError(f"{self.kind} plugin {name!r} resolves to {obj!r}, "
                            f"which is not a {self.base_cls.__name__}")


def _load_target(target: str | None) -> Any:
    if not target or ":" not in target:
        raise ValueError(f"plugin target must look like 'module:object', got {target!r}")
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def first_doc_line(obj: Any) -> str:
    """The first line of an object's docstring, for one-line listings."""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def lazy_registry(factory: Callable[[], Registry]) -> Callable[[], Registry]:
    """Memoise a registry factory so base classes are imported only when needed."""
    cache: dict[str, Registry] = {}

    def get() -> Registry:
        if "r" not in cache:
            cache["r"] = factory()
        return cache["r"]

    get.cache = cache  # type: ignore[attr-defined]
    return get
