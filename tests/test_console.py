"""Readable output: one line per cell off a terminal, third-party warnings captured into the
record, -q/-v. The sweep tests run the real ``bench`` command line in a subprocess."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from snnbench.console import CapturedWarnings, capture_warnings, summarize
from snnbench.report import format_cell_line

CELL_LINE = re.compile(r"^\[\s*(\d+)/(\d+)\] ")
NOISE = ("No CUDA runtime", "recompile_limit", "UserWarning", "third-party chatter", "W1126")

# The driver: emits a torch-style warning at import time (before any cell), and makes every
# digits cell emit what torch does in real runs (CUDA_HOME notice through torch's own stderr
# handler, a dynamo recompile message) plus a Python warning; then runs the real CLI.
DRIVER = textwrap.dedent("""
    import logging, sys, warnings
    import torch  # installs torch's own stderr log handler
    import snnbench.sweep
    from snnbench.cli import main
    from snnbench.tasks.classification import DigitsTask

    grid = snnbench.sweep.grid_from_args

    def grid_and_import_noise(args):  # the driver imports torch extensions while building the grid
        logging.getLogger("torch.utils.cpp_extension").warning(
            "No CUDA runtime is found, using CUDA_HOME='/usr/local'")
        return grid(args)

    snnbench.sweep.grid_from_args = grid_and_import_noise
    original = DigitsTask.build

    def noisy_build(self, *args, **kwargs):
        logging.getLogger("torch._dynamo.convert_frame").warning(
            "torch._dynamo hit config.recompile_limit (8) in function step")
        logging.getLogger("torch._dynamo.convert_frame").warning(
            "torch._dynamo hit config.recompile_limit (8) in function step")
        warnings.warn("third-party chatter", UserWarning)
        return original(self, *args, **kwargs)

    DigitsTask.build = noisy_build
    sys.exit(main(sys.argv[1:]))
""")


def _sweep(tmp_path: Path, *extra: str, methods: str = "dcgs,rate",
           results: str = "results") -> tuple[subprocess.CompletedProcess, str]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / f"stdout-{results}.log"
    with out.open("w") as stdout:  # a file, not a terminal: the non-interactive output
        proc = subprocess.run([sys.executable, str(driver), *extra, "sweep", "--methods", methods, "--tasks", "digits",
                               "--models", "vgg_small", "--T", "4", "--eval-size", "120", "--calib-size", "100",
                               "--results", str(tmp_path / results), "--no-mlflow", "--no-leaderboard"],
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=600)
    return proc, out.read_text()


def test_sweep_to_a_file_prints_one_line_per_cell_and_keeps_warnings_in_the_record(tmp_path, digits_vgg):
    proc, stdout = _sweep(tmp_path)
    assert proc.returncode == 0, proc.stderr
    cell_lines = [line for line in stdout.splitlines() if CELL_LINE.match(line)]
    assert [CELL_LINE.match(line).groups() for line in cell_lines] == [("1", "2"), ("2", "2")]
    for line, method in zip(cell_lines, ("dcgs", "rate")):
        assert f"{method}/vgg_small/digits" in line and "  ok  " in line
        assert re.search(r"top1@T4=[01]\.\d{4}  \(ANN [01]\.\d{4}\)  energy \d+\.\d{3}  \d+\.\d+s", line), line
    # one summary per cell: the dynamo message twice (counted once), the Python warning, and on the
    # first cell the CUDA_HOME notice raised before it started
    assert "4 warnings captured" in cell_lines[0] and "3 warnings captured" in cell_lines[1]
    for noise in NOISE:
        assert noise not in stdout and noise not in proc.stderr, noise
    assert proc.stderr.strip() == ""
    records = [json.loads(line) for line in (tmp_path / "results" / "ledger.jsonl").read_text().splitlines()]
    assert len(records) == 2
    first = {w["message"]: w for w in records[0]["warnings"]}
    dynamo = next(w for w in records[0]["warnings"] if "recompile_limit" in w["message"])
    assert dynamo["source"] == "torch._dynamo.convert_frame" and dynamo["count"] == 2
    assert any("third-party chatter" in m and "UserWarning" in m for m in first)
    assert any(m.startswith("No CUDA runtime") and "before the cell" in m for m in first)
    assert not any("No CUDA runtime" in w["message"] for w in records[1]["warnings"])


def test_quiet_prints_nothing_on_success_and_verbose_shows_warnings(tmp_path, digits_vgg):
    proc, stdout = _sweep(tmp_path, "-q", methods="rate")
    assert proc.returncode == 0, proc.stderr
    assert stdout == "" and proc.stderr == ""
    assert len((tmp_path / "results" / "ledger.jsonl").read_text().splitlines()) == 1
    # -v: the same warnings are shown as well as captured
    proc, stdout = _sweep(tmp_path, "-v", methods="rate", results="verbose")
    assert proc.returncode == 0, proc.stderr
    assert "recompile_limit" in proc.stderr and "No CUDA runtime" in proc.stderr
    assert len([line for line in stdout.splitlines() if CELL_LINE.match(line)]) == 1
    record = json.loads((tmp_path / "verbose" / "ledger.jsonl").read_text())
    assert any("recompile_limit" in w["message"] for w in record["warnings"])


# -- in-process units ------------------------------------------------------------------------
def test_capture_keeps_third_party_warnings_off_stderr(capfd, caplog):
    import torch  # noqa: F401 - torch's own handler must be routed too

    with capture_warnings() as captured:
        logging.getLogger("torch._dynamo").warning("recompile %s", "noise")
        logging.getLogger("torch._dynamo").warning("recompile %s", "noise")
        logging.getLogger("somelib").warning("lib says hi")
        warnings.warn("deprecated thing", FutureWarning)
        logging.getLogger("snnbench.sweep").warning("driver message stays visible")
    err = capfd.readouterr().err
    assert "recompile" not in err and "lib says hi" not in err and "deprecated thing" not in err
    assert "driver message stays visible" in caplog.text and "recompile" not in caplog.text
    entries = captured.to_list()
    assert [(e["source"], e["count"]) for e in entries] == [("torch._dynamo", 2), ("somelib", 1), ("warnings", 1)]
    assert "FutureWarning: deprecated thing" in entries[2]["message"]
    assert summarize(entries) == "4 warnings captured (torch._dynamo x2, somelib, warnings)"


def test_summary_of_nothing_is_empty():
    assert summarize([]) == "" and CapturedWarnings().to_list() == []


def test_cell_line_formats_ok_and_failed_results():
    ok = {"method": "dcgs", "model": "vgg_small", "task": "digits", "status": "ok", "T": 4, "metric": "top1",
          "ann": 0.97, "per_t": {"4": {"metric": 0.955, "energy_ratio": 0.4123}}, "wall_s": 12.34,
          "settings": {"n": 4, "coding": "differential"}, "provenance": {"spec": {"settings": {"n": "4"}}},
          "warnings": [{"source": "torch", "message": "x", "count": 3}]}
    assert format_cell_line(ok, 3, 12) == ("[ 3/12]  dcgs/vgg_small/digits [n=4]  ok  top1@T4=0.9550  (ANN 0.9700)  "
                                           "energy 0.412  12.3s  [3 warnings captured (torch x3); full text in the "
                                           "ledger]")
    failed = {"method": "rate", "model": "m", "task": "t", "status": "failed", "T": 8, "wall_s": 1.0,
              "error": "Traceback (most recent call last):\n  ...\nValueError: bad shape\n"}
    assert format_cell_line(failed, 1, 1) == "[1/1]  rate/m/t  FAILED  ValueError: bad shape  1.0s"


@pytest.mark.parametrize("argv", [["-q", "list", "--tasks"], ["list", "-q", "--tasks"]])
def test_quiet_flag_before_or_after_the_command(argv):
    from snnbench.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.quiet is True and args.verbose == 0
