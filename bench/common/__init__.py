"""Leaf helpers shared by the harness, ``snnbench.methods`` and ``snnbench.tasks``.

Nothing here imports a harness module, a method or a task, so every layer may import it
without creating a cycle:

* :mod:`~snnbench.common.registry`: the one plugin ``Registry`` (methods, tasks, models);
* :mod:`~snnbench.common.cache`: the one on-disk cache (atomic entries, plain or
  sha256-verified);
* :mod:`~snnbench.common.filelock`: the one inter-process file lock;
* :mod:`~snnbench.common.hashing`: the one sha256 helper (text, canonical JSON, files);
* :mod:`~snnbench.common.outcomes`: per-sample outcomes for resampling a cell's metric;

and neural-network building blocks that both trained ANNs and conversion methods use
(the QCFS activation).
"""
