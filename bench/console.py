"""What a person sees: logging set-up, per-cell warning capture and progress bars.

Used by the CLI, the sweep driver and the runner (cell lines: :mod:`snnbench.report`):

* :func:`configure_logging` (called once, by the CLI): ``-q`` shows errors only, the default
  shows warnings, ``-v`` information, ``-vv`` debug. Python warnings are routed through
  logging, and torch's own log handler (which prints ``W1126 ... No CUDA runtime is found``
  lines on stderr) is brought under the same rules.
* :func:`capture_warnings` (around every cell, in the driver or a Ray worker): warnings that
  the user cannot act on -- Python ``warnings``, and WARNING records of any logger but the
  driver's own (torch's CUDA_HOME notice, ``torch._dynamo`` recompile-limit messages, the
  engine's torch.compile fallback) -- are kept out of the console and stored with the cell
  (``result["warnings"]``). Third-party warnings raised outside any cell (at import time,
  say) are held back and attached to the next cell. With ``-v`` they are also printed.
* :func:`step_bar`: the per-cell inner bar over batches x t (terminal only; never in Ray
  workers, which run with ``progress=False``). :func:`summarize` is the phrase a cell line
  shows for the warnings captured in that cell.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

#: loggers of the driver itself: never captured (their warnings concern the sweep, not a cell)
DRIVER_LOGGERS = ("snnbench.sweep", "snnbench.executors", "snnbench.console", "snnbench.cli", "snnbench.ledger",
                  "snnbench.tracking", "snnbench.ui", "snnbench.process_groups", "bench")
QUIET, NORMAL = -1, 0


@dataclass
class _State:
    """Process-wide console state (set once by :func:`configure_logging`)."""

    verbosity: int = NORMAL
    configured: bool = False  # True once the command line has called configure_logging
    captures: list["CapturedWarnings"] = field(default_factory=list)
    pending: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_STATE = _State()


def verbosity() -> int:
    """-1 quiet, 0 normal, 1 verbose, 2 debug (as configured by the CLI)."""
    return _STATE.verbosity


def _is_driver(name: str) -> bool:
    return any(name == d or name.startswith(d + ".") for d in DRIVER_LOGGERS)


def _entry(record: logging.LogRecord) -> dict[str, str]:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed third-party record must not break the cell
        message = str(record.msg)
    source = record.name
    if source == "py.warnings":  # logging.captureWarnings: "file:line: Category: text"
        source = "warnings"
    return {"source": source, "level": record.levelname, "message": message.strip()}


class _Route(logging.Filter):
    """Handler filter: third-party warnings go to the active capture (or are held back)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or _is_driver(record.name) or record.levelno < logging.WARNING:
            return True
        if not getattr(record, "_snnbench_seen", False):
            record._snnbench_seen = True  # type: ignore[attr-defined]
            with _STATE.lock:
                if _STATE.captures:
                    _STATE.captures[-1].add(_entry(record))
                elif not _STATE.configured:  # library use, outside any cell: leave the record alone
                    return True
                elif _STATE.verbosity < 1:
                    _STATE.pending.append(_entry(record))
        return _STATE.verbosity >= 1


_ROUTE = _Route()


def _route_handlers() -> None:
    """Put :data:`_ROUTE` on the handlers of the root and of every non-propagating logger.

    torch gives dozens of its loggers (``torch``, ``torch._dynamo``, ``torch._inductor`` ...)
    their own stderr handler with ``propagate=False``; each is routed. Idempotent and cheap.
    """
    loggers = [logging.getLogger()]
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and not logger.propagate and logger.handlers:
            loggers.append(logger)
    for logger in loggers:
        for handler in list(logger.handlers):
            if _ROUTE not in handler.filters:
                handler.addFilter(_ROUTE)


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Set up logging once for the command line: ``quiet`` -> errors only; ``verbose`` 1/2 -> info/debug."""
    _STATE.verbosity = QUIET if quiet else min(max(verbose, 0), 2)
    _STATE.configured = True
    level = {QUIET: logging.ERROR, 0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}[_STATE.verbosity]
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_snnbench", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._snnbench = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("snnbench").setLevel(level)
    logging.captureWarnings(True)
    if _STATE.verbosity == QUIET:
        logging.getLogger("torch").setLevel(logging.ERROR)
    _route_handlers()


@dataclass
class CapturedWarnings:
    """Warnings captured during one cell, in order, duplicates counted once."""

    entries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, entry: dict[str, str]) -> None:
        for seen in self.entries:
            if seen["source"] == entry["source"] and seen["message"] == entry["message"]:
                seen["count"] += 1
                return
        self.entries.append({**entry, "count": 1})

    def to_list(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.entries]


def summarize(entries: list[dict[str, Any]]) -> str:
    """One short phrase for a cell line, e.g. ``3 warnings captured (torch x2, warnings)``; '' if none."""
    if not entries:
        return ""
    by_source: Counter[str] = Counter()
    for e in entries:
        by_source[e["source"]] += int(e.get("count", 1))
    total = sum(by_source.values())
    parts = [f"{s} x{n}" if n > 1 else s for s, n in by_source.most_common(3)]
    more = " ..." if len(by_source) > 3 else ""
    return f"{total} warning{'s' if total != 1 else ''} captured ({', '.join(parts)}{more})"


@contextmanager
def capture_warnings() -> Iterator[CapturedWarnings]:
    """Capture third-party warnings raised inside the block (see the module docstring).

    Works without :func:`configure_logging` too (in a Ray worker): a capturing handler is
    put on the root for the duration, and the handlers of the root and of every logger that
    does not propagate (torch's) are routed. Nested captures store into the innermost one.
    """
    captured = CapturedWarnings()
    with _STATE.lock:
        for entry in _STATE.pending:
            captured.add({**entry, "message": entry["message"] + " [raised before the cell started]"})
        _STATE.pending.clear()
        _STATE.captures.append(captured)
    catcher = _CatchHandler()  # for records that meet no routed handler (no logging configured)
    root = logging.getLogger()
    root.addHandler(catcher)
    _route_handlers()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                yield captured
            finally:
                for w in caught:
                    entry = {"source": "warnings", "level": "WARNING",
                             "message": f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"}
                    captured.add(entry)
                    if _STATE.verbosity >= 1:
                        logging.getLogger("snnbench.console").info("captured %s", entry["message"])
    finally:
        root.removeHandler(catcher)
        with _STATE.lock:
            if captured in _STATE.captures:
                _STATE.captures.remove(captured)


class _CatchHandler(logging.Handler):
    """Stores a record into the active capture when no routed handler saw it (no handlers at all)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or _is_driver(record.name):
            return
        if getattr(record, "_snnbench_seen", False):
            return
        record._snnbench_seen = True  # type: ignore[attr-defined]
        with _STATE.lock:
            if _STATE.captures:
                _STATE.captures[-1].add(_entry(record))

    def filter(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        return True


# -- progress -------------------------------------------------------------------------------
class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def step_bar(desc: str, batches: int | None, T: int, enabled: bool):
    """The inner bar of one simulation: ``batches x T`` steps (a no-op unless ``enabled``)."""
    if not enabled or _STATE.verbosity == QUIET:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=batches * T if batches else None, desc=desc, unit="step", leave=False, disable=None,
                dynamic_ncols=True)


__all__ = ["CapturedWarnings", "capture_warnings", "configure_logging", "step_bar", "summarize", "verbosity"]
