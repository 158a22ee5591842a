"""Leaf helpers shared by the harness, ``snnbench.methods`` and ``snnbench.tasks``.

Nothing here imports a harness module, a method or a task, so every layer may import it
without creating a cycle: the plugin registry, the inter-process file lock, the sha256
helper and neural-network building blocks that both trained ANNs and conversion methods use
(the QCFS activation).
"""
