"""Plugin registries: built-ins via entry points, third-party plugins, error messages."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from snnbench.plugins import create_method, create_task, list_methods, list_tasks
from snnbench.common.registry import DuplicateNameError, Registry, UnknownNameError
from snnbench.methods.base import ConversionMethod
from snnbench.tasks.zoo import get_model_spec, list_models


def test_builtins_are_registered_through_entry_points():
    from importlib import metadata

    eps = {ep.name for ep in metadata.entry_points(group="snnbench.methods")}
    assert "ann" in eps and "ann" in list_methods()
    assert {"fashion_mnist", "digits", "imagenet", "cifar10", "cifar100"} <= set(list_tasks())
    assert {"vgg_small", "resnet_small", "mobilenet_v2", "resnet18"} <= set(list_models())


def test_unknown_method_lists_valid_names_and_suggests():
    with pytest.raises(UnknownNameError) as err:
        create_method("an")
    msg = str(err.value)
    assert "unknown method 'an'" in msg and "Did you mean 'ann'" in msg and "Valid methods: " in msg


def test_unknown_task_and_model_list_valid_names():
    with pytest.raises(UnknownNameError, match="fashion_mnist"):
        create_task("fashion_mnst")
    with pytest.raises(UnknownNameError, match="vgg_small"):
        get_model_spec("vgg_smal")


def test_duplicate_names_raise():
    reg = Registry(kind="thing")
    reg.register("a", object())
    with pytest.raises(DuplicateNameError, match="registered twice"):
        reg.register("a", object())


def test_type_check_rejects_wrong_base():
    reg = Registry(kind="method", base_cls=ConversionMethod)
    reg.register("bad", target="collections:OrderedDict")
    with pytest.raises(TypeError, match="not a ConversionMethod"):
        reg.get("bad")


def test_pattern_filter():
    assert list_tasks("cifar*") == ["cifar10", "cifar100"]


PLUGIN_SRC = textwrap.dedent('''
    from dataclasses import dataclass
    from snnbench.methods.ann import StaticModel
    from snnbench.methods.base import ConversionMethod

    @dataclass(frozen=True)
    class FancySettings:
        gain: float = 1.0

    class Fancy(ConversionMethod):
        """A third-party method that scales nothing."""
        name = "fancy"
        settings_cls = FancySettings
        def convert(self, model, stats, ctx):
            return StaticModel(model)
''')


@pytest.fixture
def plugin_site(tmp_path):
    """A fake installed distribution declaring a method under snnbench.methods."""
    site = tmp_path / "site"
    pkg = site / "thirdparty_snn"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN_SRC)
    dist = site / "thirdparty_snn-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-snn\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[snnbench.methods]\nfancy = thirdparty_snn:Fancy\n")
    return site


def test_third_party_plugin_is_discovered(plugin_site, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_site))
    reg = Registry(kind="method", group="snnbench.methods", base_cls=ConversionMethod)
    assert "fancy" in reg.names() and "ann" in reg.names()
    cls = reg.get("fancy")
    assert cls.__name__ == "Fancy"
    assert "thirdparty-snn" in reg.origin("fancy")
    assert cls({"gain": "2.5"}).settings.gain == 2.5


def test_third_party_plugin_shows_in_bench_list(plugin_site):
    import os

    env = dict(os.environ, PYTHONPATH=str(plugin_site))
    out = subprocess.run([sys.executable, "-m", "snnbench.cli", "list", "--methods"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "fancy" in out and "third-party method" in out
