"""One import namespace: everything under ``snnbench``, no generic top-level names installed.

Run from a directory that holds its own ``tasks.py``, ``methods/`` and ``bench/`` (as many
research repositories do): the CLI and plugin imports must still resolve to snnbench.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HOSTILE = "raise ImportError('the local {name} shadowed snnbench')\n"


@pytest.fixture()
def hostile_dir(tmp_path: Path) -> Path:
    """A working directory whose local modules would break an import of the old names."""
    (tmp_path / "tasks.py").write_text(HOSTILE.format(name="tasks.py"))
    for pkg in ("methods", "bench", "leaderboard"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(HOSTILE.format(name=f"{pkg}/"))
    return tmp_path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def test_bench_list_works_from_a_directory_with_colliding_names(hostile_dir):
    # the console script installed with *this* interpreter, not whatever `bench` is first on PATH
    exe = Path(sys.executable).parent / "bench"
    args = [str(exe), "list"] if exe.exists() else [sys.executable, "-m", "snnbench.cli", "list"]
    out = _run(args, hostile_dir)
    assert out.returncode == 0, out.stderr
    assert "dcgs" in out.stdout and "fashion_mnist" in out.stdout and "shadowed" not in out.stderr


def test_plugin_imports_resolve_inside_snnbench(hostile_dir):
    code = textwrap.dedent("""
        import importlib.util, sys
        sys.path.insert(0, '')  # as `python -c` / notebooks do: the working directory first
        from snnbench.plugins import create_method, create_task
        from snnbench.methods.dcgs import DCGS
        from snnbench.tasks.detection import COCOTask
        import snnbench.leaderboard
        assert type(create_method('dcgs')).__module__ == 'snnbench.methods.dcgs'
        assert type(create_task('digits')).__module__ == 'snnbench.tasks.classification'
        # the local folders still win for their own names: snnbench did not install them
        for name in ('tasks', 'methods', 'bench', 'leaderboard'):
            origin = importlib.util.find_spec(name).origin
            assert origin.startswith(sys.argv[1]), (name, origin)
        print('ok')
    """)
    out = _run([sys.executable, "-c", code, str(hostile_dir)], hostile_dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_no_generic_top_level_package_is_installed(tmp_path):
    code = textwrap.dedent("""
        import importlib.util, sys
        sys.path = [p for p in sys.path if p not in ('', '.')]
        found = {n: importlib.util.find_spec(n) for n in ('bench', 'methods', 'tasks', 'leaderboard')}
        print(sorted(n for n, spec in found.items() if spec is not None))
        print(importlib.util.find_spec('snnbench.methods.snn.units') is not None)
    """)
    out = _run([sys.executable, "-c", code], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "True"]


def test_every_entry_point_lives_under_snnbench():
    from importlib import metadata

    groups = ("snnbench.methods", "snnbench.tasks", "snnbench.models", "console_scripts")
    dist = metadata.distribution("snnbench")
    targets = [ep.value for ep in dist.entry_points if ep.group in groups]
    assert targets and all(v.startswith("snnbench.") for v in targets), targets


def test_importing_the_root_package_imports_no_subpackage():
    code = ("import sys, snnbench; "
            "print(sorted(m for m in sys.modules if m.startswith('snnbench.') ))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
