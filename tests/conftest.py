"""Shared fixtures: an isolated zoo cache shared by the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# fuse=auto would torch.compile every neuron step (10-30 s per variant on 2 cores); the
# suite runs the eager path, and the fused path where a test asks for it (fuse=true)
os.environ.setdefault("SNNBENCH_FUSE", "0")


@pytest.fixture(scope="session", autouse=True)
def session_zoo_dir(tmp_path_factory):
    """Every test trains zoo models into one temporary cache, never the user's."""
    path = tmp_path_factory.mktemp("zoo")
    old = os.environ.get("SNNBENCH_ZOO_DIR")
    os.environ["SNNBENCH_ZOO_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SNNBENCH_ZOO_DIR", None)
    else:
        os.environ["SNNBENCH_ZOO_DIR"] = old


@pytest.fixture(scope="session")
def digits_task():
    from snnbench.tasks.classification import DigitsTask

    return DigitsTask()


@pytest.fixture(scope="session")
def digits_vgg(digits_task):
    """vgg_small trained by the zoo on sklearn digits (seconds), shared by the session."""
    return digits_task.build("vgg_small", progress=False)


@pytest.fixture(scope="session")
def digits_resnet(digits_task):
    return digits_task.build("resnet_small", progress=False)


@pytest.fixture(autouse=True)
def _restore_logging():
    """Tests that run a command in-process configure logging the CLI way (levels, a stderr
    handler, routing filters on every handler); undo it so later tests' caplog sees records."""
    import logging

    root = logging.getLogger()
    watched = ("snnbench", "torch")
    saved_levels = {name: logging.getLogger(name).level for name in watched}
    saved = (root.level, list(root.handlers), {h: list(h.filters) for h in root.handlers})
    yield
    root.setLevel(saved[0])
    for handler in list(root.handlers):
        if handler not in saved[1]:
            root.removeHandler(handler)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)
    for logger in [root, *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            handler.filters[:] = saved[2].get(handler, [f for f in handler.filters
                                                         if type(f).__module__ != "snnbench.console"])
    logging.captureWarnings(False)
    import sys

    console = sys.modules.get("snnbench.console")
    if console is not None:
        console._STATE = console._State()


@pytest.fixture
def native_loops(tmp_path_factory, monkeypatch):
    """One torch thread (the native C loops run only there), the loops built into a per-session
    directory, and every loaded or failed loop forgotten before and after the test."""
    from snnbench.methods.snn import native_graded, native_layout, native_pool, native_steps

    modules = (native_steps, native_graded, native_layout, native_pool)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv(native_steps.DIR_ENV, str(tmp_path_factory.getbasetemp() / "native"))
    monkeypatch.delenv(native_steps.NATIVE_ENV, raising=False)
    for module in modules:
        module.clear()
    yield
    for module in modules:
        module.clear()
    torch.set_num_threads(threads)


@pytest.fixture
def folded_norms(native_loops):
    """:func:`native_loops` with input_norm's checked batch-norm terms forgotten before and after."""
    from snnbench.methods.snn import input_norm

    input_norm.clear()
    yield
    input_norm.clear()


@pytest.fixture
def plugin_site(tmp_path_factory, monkeypatch):
    """The faulty test methods (tests/plugins/faulty_methods.py: broken, sleepy, dies_once,
    swallower) registered through an entry-point dist-info, as a third party would; the site
    directory is returned so that worker processes can be given it on PYTHONPATH."""
    site = tmp_path_factory.mktemp("faulty_site")
    dist = site / "faulty_methods-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: faulty-methods\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[snnbench.methods]\n" + "".join(f"{name} = plugins.faulty_methods:{cls}\n" for name, cls in
                                          (("broken", "Broken"), ("sleepy", "Sleepy"), ("dies_once", "DiesOnce"),
                                           ("swallower", "Swallower"))))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from snnbench.plugins import method_registry

    method_registry.cache.clear()
    yield site
    method_registry.cache.clear()
