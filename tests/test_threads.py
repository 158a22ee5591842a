"""bench/threads.py: a cell's threads follow the CPUs it was given, capped by affinity and
the cgroup quota, set before torch work and recorded in the result."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from snnbench import threads


def _cgroup_v2(tmp_path, limits: dict[str, str]):
    """A fake cgroup v2 tree: {relative dir: cpu.max text}."""
    for rel, text in limits.items():
        d = tmp_path / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(text)
    return tmp_path


def test_cgroup_v2_quota_is_the_tightest_along_the_path(tmp_path):
    root = _cgroup_v2(tmp_path, {"": "max 100000", "user.slice": "300000 100000",
                                 "user.slice/job": "150000 100000"})
    assert threads.cgroup_cpu_limit(root, "0::/user.slice/job\n") == pytest.approx(1.5)
    assert threads.cgroup_cpu_limit(root, "0::/user.slice\n") == pytest.approx(3.0)
    assert threads.cgroup_cpu_limit(_cgroup_v2(tmp_path / "free", {"a": "max 100000"}), "0::/a\n") is None


def test_cgroup_v1_quota(tmp_path):
    d = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("200000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu,cpuacct" / "docker" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu,cpuacct" / "docker" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_limit(tmp_path, "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n") == 2.0


def test_available_cpus_honours_affinity_and_quota(monkeypatch):
    monkeypatch.setattr(threads, "affinity_cpus", lambda: 8)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.available_cpus() == 8
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1.5)
    assert threads.available_cpus() == 2  # 1.5 CPUs of quota: two threads may run part of the time
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 0.5)
    assert threads.available_cpus() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 16.0)
    assert threads.available_cpus() == 8  # the quota never raises the count above the affinity


def test_requests_are_capped_to_what_is_available(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    assert threads.resolve_threads(None) == 2
    assert threads.resolve_threads(1) == 1
    assert threads.resolve_threads(0.5) == 1  # fractional Ray CPUs: one thread
    assert threads.resolve_threads(8) == 2  # never more than the process can use


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_default_threads_follow_the_affinity_in_a_fresh_process():
    """A process pinned to one CPU runs one torch thread by default and records it."""
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]});"
            "from snnbench.threads import apply_threads; n = apply_threads(None);"
            "import torch; print(n, torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "1"]


def test_serial_cells_record_their_threads(monkeypatch):
    """run_cell_in_process sets the threads before the cell and writes them into the result."""
    import torch

    from snnbench import executors

    seen = {}

    def fake_run_cell(cell, cache=None, progress=False):
        seen["threads"] = torch.get_num_threads()
        return {"status": "ok"}

    monkeypatch.setattr("snnbench.runner.run_cell", fake_run_cell)
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    before = torch.get_num_threads()
    try:
        spec = {"method": "ann", "task": "digits", "model": "mlp_digits", "T": 1}
        result = executors.run_cell_in_process(spec, None, threads=1)
        assert seen["threads"] == 1 and result["threads"] == 1
        result = executors.run_cell_in_process(spec, None, threads=None)
        assert seen["threads"] == 2 and result["threads"] == 2
    finally:
        torch.set_num_threads(before)


def test_openmp_threads_sleep_by_default_and_a_user_setting_wins():
    code = ("import os, sys; from snnbench.threads import apply_threads; apply_threads(1);"
            "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["PASSIVE", "True"]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**env, "OMP_WAIT_POLICY": "ACTIVE"})
    assert out.stdout.split() == ["ACTIVE", "True"]


_FAULTS_SCRIPT = """
import resource, torch
from snnbench.heap import retain_freed_memory
print(retain_freed_memory())
from snnbench.methods.base import ConversionContext
from snnbench.methods.snn.stats import collect_stats
from snnbench.plugins import create_method
from snnbench.tasks.zoo import get_model_spec
torch.set_num_threads(1)
torch.manual_seed(0)
spec = get_model_spec("vgg_small")
model = spec.build(spec, in_shape=(1, 28, 28), num_classes=10).eval()
x = torch.randn(32, 1, 28, 28)
method = create_method("dcgs", {"fuse": False})
ctx = ConversionContext(T=4, example=x, device=x.device, calib_batches=lambda: iter([x]))
snn = method.convert(model, collect_stats(model, [x], method.stat_kinds(model, ctx)), ctx)
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.inference_mode():
        snn.reset()
        for _ in snn.simulate(x, 4):
            pass
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))  # the runs after the first (which grows the heap)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and /proc page-fault counts")
def test_simulation_reuses_freed_memory_without_page_faults():
    """Real processes simulating vgg_small (batch 32, T = 4) four times: with the retention on, the
    later runs reuse the heap's pages (a couple of thousand page faults over three runs); with
    SNNBENCH_MALLOC_RETAIN=0 glibc hands the freed activations back and every run faults thousands
    of pages in again (tens of thousands)."""
    def run(env_value: str) -> tuple[str, int]:
        env = dict(os.environ, SNNBENCH_MALLOC_RETAIN=env_value)
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
        env.pop("MALLOC_TRIM_THRESHOLD_", None)
        out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], env=env, capture_output=True, text=True,
                             timeout=300, check=True).stdout.split()
        return out[0], int(out[-1])

    applied, retained = run("1")
    if applied != "True":
        pytest.skip("this C library has no mallopt")
    off, faulted = run("0")
    assert off == "False"
    # seen: 0-2 000 retained against 30 000-48 000 handed back
    assert faulted > 5000 and retained * 5 < faulted, (retained, faulted)
