"""How many intra-op threads a cell may use, and setting them before any torch work.

A torch process uses by default one intra-op thread per *core of the machine*, whatever
share of it the process was given. Two cells side by side on two cores then run four
threads that spin-wait for each other (OpenMP barriers), and a cell runs 10-50x slower
than alone (BENCHMARKS.md §7, "Threads under contention"). The rule here:

* a cell runs as many threads as the CPUs it was *given*: Ray's ``num_cpus`` of its task,
  ``--threads`` of a serial run;
* by default (nothing given), the CPUs actually available to this process: its CPU
  affinity (``os.sched_getaffinity``: taskset, cpusets, Slurm, Ray's worker pinning) and
  its cgroup CPU quota (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us`` in v1: containers,
  Kubernetes limits), never more;
* a request larger than what is available is capped to it.

Inductor bakes the thread count into the C++ kernels it compiles, so the count must be
set before the first compilation in the process (``apply_threads`` is the first thing a
worker does).

Waiting threads sleep: OpenMP's default is to *spin* at every barrier, which is fastest on
an idle machine and a collapse on a shared one (a spinning thread burns the time slice
its partner needs: 2 threads took 42 s beside other jobs where 1 thread took 2.3 s, and
2.1 s with ``OMP_WAIT_POLICY=PASSIVE``; BENCHMARKS.md). So ``OMP_WAIT_POLICY`` defaults to
``PASSIVE`` (a value set by the user wins). libgomp reads it when torch is first imported,
hence :func:`prepare_openmp` runs at the start of the CLI and of every worker, before torch.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

#: where cgroup v2 / v1 are mounted on Linux
CGROUP_ROOT = Path("/sys/fs/cgroup")


def affinity_cpus() -> int:
    """CPUs this process may be scheduled on (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _cgroup_paths(proc_cgroup: str) -> list[tuple[str, str]]:
    """(controller list, path) pairs of ``/proc/self/cgroup``."""
    out = []
    for line in proc_cgroup.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) == 3:
            out.append((parts[1], parts[2]))
    return out


def _quota_v2(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` (``"quota period"`` or ``"max period"``)."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    quota, period = float(fields[0]), float(fields[1])
    return quota / period if quota > 0 and period > 0 else None


def _quota_v1(quota_text: str, period_text: str) -> float | None:
    quota, period = float(quota_text.strip()), float(period_text.strip())
    return quota / period if quota > 0 and period > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), the tightest along its
    path to the root; None without a limit (or off Linux).

    Args:
        root: the cgroup mount (a parameter for tests).
        proc_cgroup: the text of ``/proc/self/cgroup`` (read when None).
    """
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup"))
        if proc_cgroup is None:
            return None
    limits: list[float] = []
    for controllers, path in _cgroup_paths(proc_cgroup):
        rel = Path(path.lstrip("/"))
        if controllers == "":  # cgroup v2 (unified): cpu.max in every directory up to the root
            dirs = [root / rel, *[root / p for p in rel.parents]]
            for d in dirs:
                text = _read(d / "cpu.max")
                limit = _quota_v2(text) if text else None
                if limit is not None:
                    limits.append(limit)
        elif "cpu" in controllers.split(","):  # cgroup v1: cpu controller mounted at cpu or cpu,cpuacct
            for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                base = root / mount
                if not base.is_dir():
                    continue
                for d in [base / rel, *[base / p for p in rel.parents]]:
                    quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
                    limit = _quota_v1(quota, period) if quota and period else None
                    if limit is not None:
                        limits.append(limit)
                break
    return min(limits) if limits else None


def available_cpus() -> int:
    """CPUs this process can actually use: its affinity, capped by its cgroup quota
    (rounded up: a quota of 1.5 CPUs lets 2 threads run, each part of the time)."""
    cpus = affinity_cpus()
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit - 1e-9)))
    return cpus


def resolve_threads(requested: float | int | None) -> int:
    """Intra-op threads for a cell given ``requested`` CPUs (Ray ``num_cpus``, ``--threads``;
    None = whatever is available); never more than :func:`available_cpus`, at least 1."""
    available = available_cpus()
    if requested is None or requested <= 0:
        return available
    return max(1, min(int(requested), available))


def prepare_openmp() -> bool:
    """Default ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep instead of spinning)
    unless already set; returns whether it still takes effect (torch not imported yet). Also
    keeps freed tensor memory in this process and its children (:mod:`snnbench.heap`)."""
    from snnbench.heap import retain_freed_memory

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    retain_freed_memory()
    return "torch" not in sys.modules


def apply_threads(requested: float | int | None) -> int:
    """Set torch's intra-op threads (and OpenMP's default for libraries started later) for
    ``requested`` CPUs; returns the count set. Call before any torch work in the process."""
    prepare_openmp()
    import torch

    threads = resolve_threads(requested)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


__all__ = ["prepare_openmp", "affinity_cpus", "cgroup_cpu_limit", "available_cpus", "resolve_threads", "apply_threads"]
