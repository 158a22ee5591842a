"""Run one cell here, in this process: what a serial executor, a Ray task and a timed
cell's child process (:mod:`snnbench.cell_process`) all end up doing."""

from __future__ import annotations

import dataclasses
from typing import Any

from snnbench.record import CellResult


def run_here(spec: dict[str, Any], cache_root: str | None, threads: float | None = None,
             progress: bool = False) -> CellResult:
    """Set the cell's threads, run it with the disk cache under ``cache_root`` (memory when None).

    ``threads``: the CPUs the cell was given (None: what the process may use); set before
    any torch work (bench/threads.py) and recorded in the result's ``threads``.
    """
    from snnbench.threads import apply_threads

    used = apply_threads(threads)
    from snnbench import runner
    from snnbench.common.cache import DiskCache, MemoryCache
    from snnbench.cell import CellSpec

    cell = CellSpec.from_dict(spec)
    cache = DiskCache(cache_root) if cache_root else MemoryCache()
    result = CellResult.from_dict(runner.run_cell(cell, cache=cache, progress=progress))
    return dataclasses.replace(result, threads=used)


__all__ = ["run_here"]
