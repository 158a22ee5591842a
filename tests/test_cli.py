"""The ``bench`` CLI and the JSON result contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from snnbench.cli import main

RESULT_SCHEMA = {
    "type": "object",
    "required": ["method", "task", "model", "settings", "T", "metric", "ann", "per_t", "status", "error", "wall_s"],
    "properties": {
        "method": {"type": "string"}, "task": {"type": "string"}, "model": {"type": "string"},
        "settings": {"type": "object"}, "T": {"type": "integer", "minimum": 1},
        "metric": {"type": "string"}, "ann": {"type": "number"},
        "status": {"enum": ["ok", "failed"]}, "error": {"type": ["string", "null"]},
        "wall_s": {"type": "number"},
        "per_t": {
            "type": "object",
            "patternProperties": {"^[0-9]+$": {
                "type": "object",
                "required": ["metric", "spikes_per_sample", "synops_per_sample", "energy_ratio"],
                "properties": {"metric": {"type": "number"}, "spikes_per_sample": {"type": "number"},
                               "synops_per_sample": {"type": "number"}, "energy_ratio": {"type": "number"}},
            }},
            "additionalProperties": False,
        },
    },
}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snnbench.cli", *args], capture_output=True, text=True)


def test_bench_list_prints_one_line_per_plugin():
    proc = run_cli("list")
    assert proc.returncode == 0
    out = proc.stdout
    for section in ("methods:", "tasks:", "models:"):
        assert section in out
    lines = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert {"ann", "fashion_mnist", "digits", "imagenet", "vgg_small", "mobilenet_v2"} <= lines


def test_run_json_prints_exactly_one_contract_object(digits_vgg):
    jsonschema = pytest.importorskip("jsonschema")
    proc = run_cli("run", "--method", "ann", "--task", "digits", "--model", "vgg_small", "--T", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    jsonschema.validate(result, RESULT_SCHEMA)
    assert result["status"] == "ok" and result["error"] is None and result["metric"] == "top1"
    assert set(result["per_t"]) == {"1", "2", "3"}
    assert result["ann"] > 0.95
    assert all(row["metric"] == result["ann"] and row["energy_ratio"] == 1.0 for row in result["per_t"].values())
    assert result["ann_macs_per_sample"] > 0 and len(result["cell_key"]) == 16


@pytest.mark.parametrize("args,needle", [
    (["--method", "dcgx"], "Valid methods:"),
    (["--method", "ann", "--task", "mnist"], "Valid tasks:"),
    (["--method", "ann", "--task", "digits", "--model", "vgg_smal"], "Valid models:"),
    (["--method", "ann", "--task", "digits", "--model", "resnet18"], "models for digits"),
    (["--method", "ann", "--set", "gain=2"], "has no setting 'gain'"),
    (["--method", "ann", "--task", "digits", "--T", "0"], "--T must be at least 1"),
])
def test_bad_input_is_a_clear_error(args, needle, capsys):
    code = main(["run", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    code = main(["run", "--method", "ann", "--task", "fashion_mnist", "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "t10k-images-idx3-ubyte" in err and str(tmp_path) in err


def test_failed_cell_is_reported_as_failed_not_a_number(capsys, monkeypatch, digits_vgg):
    def boom(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr("snnbench.runner.evaluate_ann", boom)
    code = main(["run", "--method", "ann", "--task", "digits", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1 and result["status"] == "failed" and "simulated failure" in result["error"]
    assert result["per_t"] == {} and result["ann"] is None


def test_zoo_list_and_train(capsys, digits_vgg):
    assert main(["zoo", "list"]) == 0
    assert "vgg_small__digits" in capsys.readouterr().out
    assert main(["zoo", "train", "vgg_small", "--task", "digits"]) == 0
    assert "(hit)" in capsys.readouterr().out
    assert main(["zoo", "train", "resnet18"]) == 2
