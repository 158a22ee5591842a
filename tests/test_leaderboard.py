"""The leaderboard: numbers, marks, ablations, paper rows, MLflow, and the page in a browser.

The fixture ``fixtures/leaderboard/ledger.jsonl`` is a trimmed real sweep on digits
(see ``fixtures/leaderboard/trim_ledger.py``): vgg_small with ann, dcgs n=4 (seeds 0
and 1), dcgs n=8, rate n=4, rate n=8; resnet_small with ann and dcgs (n=8 by default);
a failed rate cell (timeout); and a failed first attempt of dcgs n=8 superseded by its
successful retry. Hand-computed values below quote the fixture's per-t numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from snnbench.leaderboard.data import LeaderboardError, results_from_records
from snnbench.tracebacks import error_line
from snnbench.leaderboard.paper import load_paper
from snnbench.leaderboard.render import render_after_sweep, render_leaderboard
from snnbench.leaderboard.rows import build_rows
from snnbench.leaderboard.tables import ablation_tables, pareto_mask, task_table

FIXTURE = Path(__file__).parent / "fixtures" / "leaderboard" / "ledger.jsonl"
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
ENERGY_HEADER = "energy ratio @T=8 (horowitz45nm-v1: E_MAC 4.6 pJ, E_AC 0.9 pJ)"


def fixture_records() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    shutil.copy(FIXTURE, tmp_path / "ledger.jsonl")
    return tmp_path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """The fixture rendered once with the defaults (chosen T = 8, seeds averaged)."""
    root = tmp_path_factory.mktemp("lb")
    shutil.copy(FIXTURE, root / "ledger.jsonl")
    return render_leaderboard(root)


@pytest.fixture(scope="module")
def board(rendered) -> pd.DataFrame:
    return pd.read_csv(rendered["csv"], keep_default_na=False, na_values=[""]).set_index(["model", "row"])


class TableParser(HTMLParser):
    """Collects every ``<table>`` of a page: id, classes, headers, cell texts and cell classes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict] = {}
        self._table: dict | None = None
        self._cell: list | None = None
        self._row: list | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = {"class": attrs.get("class", ""), "headers": [], "rows": []}
            self.tables[attrs.get("id", f"t{len(self.tables)}")] = self._table
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = [tag, attrs.get("class", ""), ""]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row and self._row[0][0] == "th":
                self._table["headers"] = [c[2] for c in self._row]
            else:
                self._table["rows"].append([(c[2], c[1]) for c in self._row])
            self._row = None
        elif tag == "table":
            self._table = None


def html_tables(path: Path) -> dict[str, dict]:
    parser = TableParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tables


def md_table(text: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """The Markdown table whose header row starts with ``first_header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    split = lambda line: [c.strip() for c in line.strip()[1:-1].split(" | ")]  # noqa: E731
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(split(line))
    return split(lines[start]), rows


# -- the measured table ----------------------------------------------------------------
def test_rows_labels_seeds_and_failed_cells_are_excluded(board):
    assert set(board.index) == {("resnet_small", "ann (reference)"), ("resnet_small", "dcgs n=8"),
                                ("vgg_small", "ann (reference)"), ("vgg_small", "dcgs n=4"), ("vgg_small", "dcgs n=8"),
                                ("vgg_small", "rate n=4"), ("vgg_small", "rate n=8")}
    dcgs4 = board.loc[("vgg_small", "dcgs n=4")]
    assert dcgs4["seeds"] == "0, 1" and dcgs4["n_seeds"] == 2
    assert set(dcgs4["cell_keys"].split(";")) == {"8fd76a14fbb5dc54", "3d09ca4923520a05"}
    keys = ";".join(board["cell_keys"])
    assert "bd0e3b0c32fa54ac" not in keys          # the failed rate/resnet_small cell has no row
    assert "f433f50aa2f6ea6f" in keys              # its earlier failure was superseded by the retry
    # paper rows never enter the measured CSV
    assert not set(board.reset_index()["model"]) & set(load_paper()["model"])


def test_numbers_match_hand_computed_values(board):
    dcgs4 = board.loc[("vgg_small", "dcgs n=4")]
    # seeds 0 and 1: top1 at t=1 is 0.99 and 1.0 -> mean 99.5 %, sample sd 0.7071 %
    assert dcgs4["metric_pct_T1"] == pytest.approx(99.5)
    assert dcgs4["metric_pct_T1_sd"] == pytest.approx(0.70710678, rel=1e-6)
    assert dcgs4["ann_metric_pct"] == pytest.approx(100.0)
    # at the chosen T = 8 (the largest T common to all rows): means over the two seeds
    assert dcgs4["chosen_T"] == 8
    assert dcgs4["energy_ratio"] == pytest.approx((0.3982072530463719 + 0.39915864429560255) / 2)
    assert dcgs4["spikes_per_sample"] == pytest.approx((3748.18 + 3761.77) / 2)
    assert dcgs4["synops_per_sample"] == pytest.approx((576930.75 + 578403.71) / 2)
    rate4 = board.loc[("vgg_small", "rate n=4")]
    assert [rate4[f"metric_pct_T{t}"] for t in (1, 2, 4, 8)] == pytest.approx([64.5, 77.5, 95.5, 99.5])
    assert rate4["energy_ratio"] == pytest.approx(0.5369653189561726)
    # smallest t reaching 99 % of the ANN: rate reaches 0.99 >= 0.99 x 1.0 at t=6;
    # resnet dcgs: 0.975 < 0.99 x 0.99 = 0.9801 at t=1, 0.99 at t=2; references blank
    assert rate4["t_to_99pct_ann"] == 6
    assert dcgs4["t_to_99pct_ann"] == 1
    assert board.loc[("resnet_small", "dcgs n=8"), "t_to_99pct_ann"] == 2
    assert pd.isna(board.loc[("vgg_small", "ann (reference)"), "t_to_99pct_ann"])
    ref = board.loc[("vgg_small", "ann (reference)")]
    assert (ref["energy_ratio"], ref["spikes_per_sample"]) == (1.0, 0.0)
    assert ref["energy_model"] == "horowitz45nm-v1" and (ref["e_mac_pj"], ref["e_ac_pj"]) == (4.6, 0.9)


def test_best_marks_and_pareto_front(board):
    best = board["best"].fillna("").map(lambda s: set(s.split(";")) - {""})
    # vgg_small SNN rows: dcgs n=8 is alone best at t=1; both dcgs rows tie at 100 % from t=2
    # and at t=1 to 99 %; dcgs n=4 has the lowest energy; rate fires the fewest spikes/SynOps
    assert best[("vgg_small", "dcgs n=4")] == {"metric_pct_T2", "metric_pct_T4", "metric_pct_T8", "t_to_99pct_ann",
                                               "energy_ratio"}
    assert best[("vgg_small", "dcgs n=8")] == {"metric_pct_T1", "metric_pct_T2", "metric_pct_T4", "metric_pct_T8",
                                               "t_to_99pct_ann"}
    assert best[("vgg_small", "rate n=4")] == best[("vgg_small", "rate n=8")] == {"spikes_per_sample",
                                                                                  "synops_per_sample"}
    # references are never ranked; a model with one SNN row gets no marks
    assert best[("vgg_small", "ann (reference)")] == best[("resnet_small", "dcgs n=8")] == set()
    # at T=8, dcgs n=4 on vgg_small (100 %, 0.399) dominates every other SNN row of the task
    assert board.index[board["pareto"]].tolist() == [("vgg_small", "dcgs n=4")]


def test_markdown_html_and_csv_show_the_same_numbers(rendered, board):
    md = rendered["md"].read_text()
    headers, md_rows = md_table(md, "model")
    assert headers == ["model", "method + settings", "seeds", "ANN top1 (%)", "top1 T=1", "top1 T=2", "top1 T=4",
                       "top1 T=8", "T to 99% ANN", "latency @T=8 (frames)", "levels/step (bits)",
                       "max spikes/step", "spikes/sample @T=8", "SynOps/sample @T=8", ENERGY_HEADER,
                       "Pareto front"]
    assert ["vgg_small", "dcgs n=4", "0, 1", "100.00", "99.50 ± 0.71", "**100.00 ± 0.00**", "**100.00 ± 0.00**",
            "**100.00 ± 0.00**", "**1**", "", "", "", "3.75k", "578k", "**0.399**", "yes"] in md_rows
    assert ["vgg_small", "rate n=4", "0", "100.00", "64.50", "77.50", "95.50", "99.50", "6", "", "", "",
            "**3.32k**", "**515k**", "0.537", ""] in md_rows  # fairness blank: records from before the contract
    table = html_tables(rendered["html"])["lb-digits"]
    assert "sortable" in table["class"] and table["headers"] == headers
    html_rows = [["**" + text + "**" if "best" in css.split() else text for text, css in row] for row in table["rows"]]
    assert html_rows == md_rows
    # the CSV holds the same values (unrounded)
    for row in md_rows:
        rec = board.loc[(row[0], row[1])]
        assert row[7].strip("*").split(" ")[0] == f"{rec['metric_pct_T8']:.2f}"
        assert row[14].strip("*") == f"{rec['energy_ratio']:.3f}"


def test_failed_cells_are_listed_apart_with_their_exception(rendered):
    failed = pd.read_csv(rendered["failed"])
    assert failed[["task", "model", "cell", "cell_key"]].values.tolist() == [
        ["digits", "resnet_small", "rate", "bd0e3b0c32fa54ac"]]
    assert failed["error"][0] == "bench.executors.CellTimeout: cell exceeded the per-cell timeout of 0.5 s"
    tables = html_tables(rendered["html"])
    assert [row[2][0] for row in tables["failed-cells"]["rows"]] == ["rate"]
    assert all("bd0e3b0c32fa54ac" not in text for row in tables["lb-digits"]["rows"] for text, _ in row)


def test_chosen_T_moves_the_cost_columns(results_dir):
    paths = render_leaderboard(results_dir, chosen_T=4)
    board = pd.read_csv(paths["csv"]).set_index(["model", "row"])
    dcgs8 = board.loc[("vgg_small", "dcgs n=8")]
    assert (dcgs8["chosen_T"], dcgs8["energy_ratio"], dcgs8["spikes_per_sample"]) == (4, pytest.approx(
        0.5681802470684556), pytest.approx(5490.535))
    assert "energy ratio @T=4 (horowitz45nm-v1: E_MAC 4.6 pJ, E_AC 0.9 pJ)" in paths["md"].read_text()
    with pytest.raises(LeaderboardError, match="beyond every row's T_max"):
        render_leaderboard(results_dir, chosen_T=64)


def test_per_seed_rows_name_their_seed(results_dir):
    paths = render_leaderboard(results_dir, per_seed=True)
    rows = set(pd.read_csv(paths["csv"])["row"])
    assert {"dcgs n=4 seed=0", "dcgs n=4 seed=1", "rate n=8 seed=0"} <= rows
    board = pd.read_csv(paths["csv"]).set_index("row")
    assert board.loc["dcgs n=4 seed=0", "metric_pct_T1"] == pytest.approx(99.0)
    assert board.loc["dcgs n=4 seed=1", "metric_pct_T1"] == pytest.approx(100.0)


# -- ablations -------------------------------------------------------------------------
def test_ablation_pivot_of_the_varied_setting(rendered):
    long = pd.read_csv(rendered["ablation"])
    assert long[["method", "setting.n", "metric_pct"]].values.tolist() == [
        ["dcgs", 4, 100.0], ["dcgs", 8, 100.0], ["rate", 4, 99.5], ["rate", 8, 99.5]]
    headers, rows = md_table(rendered["md"].read_text(), "n")
    assert headers == ["n", "dcgs", "rate"] and rows == [["n=4", "100.00", "99.50"], ["n=8", "100.00", "99.50"]]


def _synthetic(method: str, settings: dict, user: dict, seed: int, curve: list[float], key: str) -> dict:
    """A minimal ok record: top1 per t, energy ratio growing with t."""
    per_t = {str(t): {"metric": m, "spikes_per_sample": 10.0 * t, "synops_per_sample": 100.0 * t,
                      "energy_ratio": 0.1 * t} for t, m in enumerate(curve, start=1)}
    return {"method": method, "task": "toy", "model": "net", "settings": settings, "T": len(curve), "metric": "top1",
            "ann": 0.9, "per_t": per_t, "status": "ok", "error": None, "cell_key": key,
            "energy_model": {"name": "horowitz45nm-v1", "e_mac_pj": 4.6, "e_ac_pj": 0.9},
            "provenance": {"spec": {"settings": user, "seed": seed, "T": len(curve), "calib_size": 10,
                                    "eval_size": 10}}}


def test_ablation_with_two_varied_settings_pivots_the_last_into_columns():
    records = []
    for i, (coding, n, top) in enumerate([("rate", "4", 0.5), ("rate", "8", 0.6), ("differential", "4", 0.8),
                                          ("differential", "8", 0.85)]):
        settings = {"coding": coding, "n": int(n), "threshold": "iteration"}
        records.append(_synthetic("dcgs", settings, {"coding": coding, "n": n}, 0, [top / 2, top], f"k{i}"))
    rows = build_rows(results_from_records(records))
    assert sorted(rows.rows["label"]) == ["dcgs coding=differential, n=4", "dcgs coding=differential, n=8",
                                          "dcgs coding=rate, n=4", "dcgs coding=rate, n=8"]
    (ablation,) = ablation_tables(rows, "toy", 2)
    assert ablation.keys == ["coding", "n"]
    assert ablation.pivot.index.name == "coding" and list(ablation.pivot.columns) == ["dcgs n=4", "dcgs n=8"]
    assert ablation.pivot.loc["coding=rate"].tolist() == pytest.approx([50.0, 60.0])
    assert ablation.pivot.loc["coding=differential"].tolist() == pytest.approx([80.0, 85.0])


def test_settings_that_differ_are_labelled_even_when_not_set_by_the_user():
    records = [_synthetic("dcgs", {"n": 4, "coding": "differential"}, {}, 0, [0.9], "a"),
               _synthetic("dcgs", {"n": 8, "coding": "differential"}, {}, 0, [0.9], "b")]
    rows = build_rows(results_from_records(records))
    assert sorted(rows.rows["label"]) == ["dcgs n=4", "dcgs n=8"]
    table = task_table(rows, "toy")
    assert table.chosen_T == 1 and table.T_values == [1]


def test_pareto_mask_and_error_line():
    import numpy as np

    front = pareto_mask(np.array([90.0, 95.0, 95.0, 80.0, np.nan]), np.array([0.2, 0.5, 0.6, 0.1, 0.0]))
    assert front.tolist() == [True, True, False, True, False]
    tb = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n    f()\nValueError: bad n\n'
    assert error_line(tb) == "ValueError: bad n"
    assert error_line("cell exceeded the timeout\nmore") == "cell exceeded the timeout"
    assert error_line(None) == "(no error message recorded)"


# -- published rows --------------------------------------------------------------------
def test_paper_csv_transcribes_dcgs_section_6():
    paper = load_paper()
    paper = paper[paper["paper"].str.startswith("DCGS")]   # other papers' rows (SRP, QCFS ...) are tested with them
    assert paper.groupby("benchmark").size().to_dict() == {"imagenet": 12, "coco": 32, "voc": 28}
    assert set(paper["metric"]) == {"top1", "map", "miou"} and set(paper["unit"]) == {"%"}

    def one(**match):
        hit = paper
        for k, v in match.items():
            hit = hit[hit[k] == v]
        assert len(hit) == 1, match
        return hit.iloc[0]

    row = one(benchmark="coco", table="main", model="FCOS_ResNet50", n="4", T="6")
    assert (row["value"], row["energy_ratio"], row["ann_value"], row["source"]) == ("36.7", "0.43", "39.2", "[seed]")
    row = one(benchmark="voc", table="ablation", coding="rate", T="8")
    assert (row["value"], row["energy_ratio"], row["threshold_rule"]) == ("63.9", "0.71", "threshold iteration")
    row = one(benchmark="voc", table="main", model="FCN_ResNet50", n="4", T="4")
    assert (row["value"], row["energy_ratio"]) == ("60.5", "0.20")       # text kept exactly as published
    row = one(benchmark="imagenet", model="ViT-S/16", T="8")
    assert (row["value"], row["energy_ratio"], row["n"], row["c"]) == ("81.43", "1.05", "8", "4")
    assert "n=8? c=4?" in row["note"]
    row = one(benchmark="imagenet", model="ResNet-18", T="8")
    assert row["energy_ratio"] == "" and "n=4? c=1?" in row["note"] and row["source"] == "[H-MT]"
    assert one(benchmark="imagenet", model="ResNet-34 (control)", T="64")["value"] == "74.11"


def test_paper_rows_are_shown_apart_and_never_ranked(tmp_path):
    """A measured coco task gets the COCO paper tables in its section, in separate tables."""
    records = []
    for record in fixture_records():
        record = copy.deepcopy(record)
        record["task"], record["metric"] = "coco", "map"
        records.append(record)
    (tmp_path / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    paths = render_leaderboard(tmp_path)
    tables = html_tables(paths["html"])
    measured = tables["lb-coco"]
    assert not any("FCOS" in text for row in measured["rows"] for text, _ in row)
    paper_ids = [k for k in tables if k.startswith("paper-coco")]
    assert len(paper_ids) == 2                                   # the main table and the ablation
    for key in paper_ids:
        assert "paper" in tables[key]["class"].split()
        assert tables[key]["headers"][0] == "kind" and {row[0][0] for row in tables[key]["rows"]} == {"paper"}
        assert "source" in tables[key]["headers"]
    page = paths["html"].read_text()
    assert page.index('id="task-coco"') < page.index('id="paper-coco-0"') < page.index('id="failed-cells"')
    # benchmarks not measured (imagenet, voc) still appear, in the separate paper section
    assert 'id="paper-results"' in page and 'id="paper-imagenet-0"' in page and 'id="paper-voc-0"' in page
    assert "coco" not in page[page.index('id="paper-results"'):]
    board = pd.read_csv(paths["csv"])
    assert set(board["task"]) == {"coco"} and len(board) == 7


# -- MLflow ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_sweep(tmp_path_factory):
    """The fixture records logged as two sweeps (with and without ``--set n=...``), as the
    real ones were: parent runs plus a child run per cell; then rendered after the first."""
    from snnbench.tracking import SweepTracker

    root = tmp_path_factory.mktemp("lbmlflow")
    shutil.copy(FIXTURE, root / "ledger.jsonl")
    with_set = SweepTracker(root, "lbtest", {"sets": "n=4,8", "T": 8}, {"snnbench.sweep": "true"})
    without = SweepTracker(root, "lbtest", {"sets": "", "T": 8}, {"snnbench.sweep": "true"})
    for record in fixture_records():
        tracker = with_set if record["provenance"]["spec"]["settings"] else without
        tracker.log_cell(copy.deepcopy(record))
    without.finish("FINISHED")
    with_set.finish("FINISHED")
    render_after_sweep(root, with_set)
    return root, with_set


def test_render_after_sweep_logs_the_files_to_the_parent_run(mlflow_sweep, capsys):
    root, tracker = mlflow_sweep
    logged = {Path(a.path).name for a in tracker.client.list_artifacts(tracker.parent, "leaderboard")}
    assert {"leaderboard.html", "leaderboard.csv", "leaderboard.md", "plot-digits-pareto.png",
            "plot-digits-layers.png", "plot-digits-vgg_small-metric-vs-T.png"} <= logged
    assert (root / "leaderboard" / "leaderboard.html").is_file()


def test_mlflow_gives_the_same_table_as_the_ledger(mlflow_sweep, tmp_path):
    root, _ = mlflow_sweep
    from_ledger = render_leaderboard(root, tmp_path / "ledger")
    from_mlflow = render_leaderboard(root, tmp_path / "mlflow", from_mlflow=True, experiment="lbtest")
    for name in ("csv", "ablation", "failed"):
        assert from_mlflow[name].read_text() == from_ledger[name].read_text(), name
    def strip(path: Path) -> list[str]:   # the lines naming the source and the time differ
        return [line for line in path.read_text().splitlines()
                if not line.startswith(("Generated", "snnbench leaderboard;"))]

    assert strip(from_mlflow["md"]) == strip(from_ledger["md"])
    with pytest.raises(LeaderboardError, match="no MLflow experiment 'nope'"):
        render_leaderboard(root, tmp_path / "x", from_mlflow=True, experiment="nope")


def test_render_after_sweep_never_raises(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="snnbench.leaderboard.render"):
        render_after_sweep(tmp_path / "empty", None)
    assert "leaderboard not rendered" in caplog.text and "no ledger" in caplog.text


# -- CLI -------------------------------------------------------------------------------
def test_cli_prints_written_paths_and_explains_a_missing_ledger(results_dir, tmp_path, capsys):
    from snnbench.leaderboard.cli import add_leaderboard_parser, cmd_leaderboard

    parser = argparse.ArgumentParser(prog="bench")
    add_leaderboard_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["leaderboard", "--results", str(results_dir), "--T", "2"])
    assert (args.out, args.T, args.from_mlflow) == (None, 2, False)
    assert cmd_leaderboard(args) == 0
    printed = capsys.readouterr().out.split()
    assert str(results_dir / "leaderboard" / "leaderboard.html") in printed and len(printed) >= 6
    args = parser.parse_args(["leaderboard", "--results", str(tmp_path / "none")])
    assert cmd_leaderboard(args) == 2
    assert "no ledger at" in capsys.readouterr().err


# -- the page in a real browser --------------------------------------------------------
SORT_PROBE = """<script>
window.addEventListener('load', function () {
  var table = document.getElementById('lb-digits');
  var ths = table.querySelectorAll('thead th'), col = -1;
  ths.forEach(function (th, i) { if (th.textContent.indexOf('energy ratio') === 0) col = i; });
  ths[col].click();
  var order = Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[col].textContent; });
  document.body.setAttribute('data-probe-sorted', order.join('|'));
});
</script></body>"""


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.browser
def test_page_renders_in_headless_chromium(rendered, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found; install the Debian package `chromium` (apt-get install chromium)")
    page = rendered["html"]
    assert "http://" not in page.read_text() and "https://" not in page.read_text()   # nothing external
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", SORT_PROBE))
    dom = _chromium(["--dump-dom", probe.as_uri()], tmp_path / "profile1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # per model: metric vs T and metric vs latency (2 models), then the Pareto and layer plots
    assert 'data-images-rendered="6/6"' in html
    assert html.count('data-rendered="yes"') == 6 and 'data-rendered="no"' not in html
    assert html.count('data-sortable="ready"') == html.count("<table")
    # clicking the energy header sorts the table by energy ratio, ascending
    assert 'data-probe-sorted="0.399|0.454|0.537|0.537|0.671|1.000|1.000"' in html

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "leaderboard.png"
    shot.unlink(missing_ok=True)
    run = _chromium([f"--screenshot={shot}", "--window-size=1400,2000", page.as_uri()], tmp_path / "profile2")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1400, 2000)
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 500            # tables, text and plots, not a blank page


# -- issue 17: one energy convention at a time; fairness columns -------------------------
def _with_conventions(records: list[dict]) -> list[dict]:
    out = []
    for record in records:
        record = copy.deepcopy(record)
        for row in (record.get("per_t") or {}).values():
            if row.get("energy_ratio") is not None:
                row["energy_ratio@dcgs-official"] = row["energy_ratio"] / 2
        if record.get("method") != "ann":
            record["fairness"] = {"frames_before_readout": 1, "levels_per_step": 4.0875, "max_spikes_per_step": 128}
        out.append(record)
    return out


def test_energy_model_choice_renames_headers_and_picks_its_ratios(tmp_path):
    records = _with_conventions(fixture_records())
    (tmp_path / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    default = pd.read_csv(render_leaderboard(tmp_path, out_dir=tmp_path / "h")["csv"])
    paths = render_leaderboard(tmp_path, out_dir=tmp_path / "d", energy_model="dcgs-official")
    chosen = pd.read_csv(paths["csv"])
    snn = ~chosen["reference"]
    assert (chosen["energy_model"] == "dcgs-official").all()
    assert chosen.loc[snn, "energy_ratio"].tolist() == pytest.approx((default.loc[snn, "energy_ratio"] / 2).tolist())
    tables = html_tables(paths["html"])
    headers = next(t["headers"] for k, t in tables.items() if k.startswith("lb-"))
    assert any(h.startswith("energy ratio @T=8 (dcgs-official") for h in headers)
    assert ENERGY_HEADER not in headers
    # fairness columns, in the HTML and the CSV: latency = T + bias pass
    assert {"latency @T=8 (frames)", "levels/step (bits)", "max spikes/step"} <= set(headers)
    assert set(chosen.loc[snn, "latency"]) == {9} and set(chosen.loc[snn, "max_spikes_per_step"]) == {128}
    assert "max spikes/step" in paths["md"].read_text()
    with pytest.raises(LeaderboardError, match="valid: horowitz45nm-v1"):
        render_leaderboard(tmp_path, out_dir=tmp_path / "x", energy_model="nope")


def test_paper_energy_ratios_only_under_their_own_convention(tmp_path):
    records = []
    for record in fixture_records():
        record = copy.deepcopy(record)
        record["task"], record["metric"] = "coco", "map"
        records.append(record)
    (tmp_path / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    def paper_headers(**kw) -> list[str]:
        tables = html_tables(render_leaderboard(tmp_path, out_dir=tmp_path / str(len(kw)), **kw)["html"])
        return [h for k, t in tables.items() if k.startswith("paper-coco") for h in t["headers"]]

    assert not any(h.startswith("ER ") for h in paper_headers())
    assert "ER T=6 (dcgs-official)" in paper_headers(energy_model="dcgs-official")


def test_early_exit_rows_show_unit_spikes_and_mean_steps():
    """A row whose samples stop early (steps_per_sample < t) brings the unit-spike and mean-steps columns."""
    plain = _synthetic("dcgs", {"n": 4}, {}, 0, [0.5, 0.9], "p")
    early = _synthetic("adafire", {"iat": True}, {}, 0, [0.6, 0.8], "e")
    for t, row in early["per_t"].items():
        row.update(unit_spikes_per_sample=25.0 * int(t), steps_per_sample=[1.0, 1.5][int(t) - 1])
    table = task_table(build_rows(results_from_records([plain, early])), "toy")
    keys = [c.key for c in table.columns]
    assert "unit_spikes_per_sample" in keys and "steps_per_sample" in keys
    frame = table.frame.set_index("method")
    assert frame.loc["adafire", "steps_per_sample"] == 1.5 and frame.loc["dcgs", "steps_per_sample"] == 2.0
    assert frame.loc["adafire", "unit_spikes_per_sample"] == 50.0
    without = task_table(build_rows(results_from_records([plain])), "toy")
    assert "steps_per_sample" not in [c.key for c in without.columns]


def test_intervals_and_tied_rank_groups_from_saved_outcomes(tmp_path):
    """Single-seed rows show their 95 % interval; rows not significantly different share a
    rank group, and the chosen-T best mark goes to the whole tied group."""
    import numpy as np

    from snnbench.common.outcomes import BinaryOutcomes, samples_path, save_outcomes
    from snnbench.significance import wilson_interval

    n = 300
    base = np.zeros(n, dtype=bool)
    base[:240] = True                      # 80 %
    near = base.copy()
    near[235:246] = ~near[235:246]         # 79.67 %: tied with the best
    far = np.zeros(n, dtype=bool)
    far[:150] = True                       # 50 %
    records = []
    for method, hits in (("dcgs", base), ("calibration", near), ("rate", far)):
        record = _synthetic(method, {}, {}, 0, [0.3, float(hits.mean())], method)
        record["per_t"]["2"]["metric_ci95"] = list(wilson_interval(int(hits.sum()), n))
        records.append(record)
        save_outcomes(samples_path(tmp_path, method), BinaryOutcomes(t=np.array([2]), correct=hits[None]))
    (tmp_path / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    table = task_table(build_rows(results_from_records(records)), "toy", results_dir=tmp_path)
    frame = table.frame.set_index("method")
    assert frame.loc["dcgs", "rank_group"] == "1 (tied)" == frame.loc["calibration", "rank_group"]
    assert frame.loc["rate", "rank_group"] == "2"
    lo, hi = wilson_interval(240, n)
    assert frame.loc["dcgs", "metric_ci95"] == f"{100 * lo:.2f}–{100 * hi:.2f}"
    marked = {table.frame.loc[i, "method"] for i, keys in table.best.items() if "metric_pct_T2" in keys}
    assert marked == {"dcgs", "calibration"}
    paths = render_leaderboard(tmp_path)
    csv = pd.read_csv(paths["csv"]).set_index("method")
    assert csv.loc["dcgs", "metric_pct_T2_ci95_lo"] == pytest.approx(100 * lo)
    assert csv.loc["rate", "rank_group_number"] == 2
    (measured,) = [t for k, t in html_tables(paths["html"]).items() if k.startswith("lb-")]
    assert "rank group @T=2" in measured["headers"] and "95% CI @T=2" in measured["headers"]
    # without samples files there are no groups, and nothing breaks
    for method in ("dcgs", "calibration", "rate"):
        samples_path(tmp_path, method).unlink()
    plain = task_table(build_rows(results_from_records(records)), "toy", results_dir=tmp_path)
    assert "rank_group" not in [c.key for c in plain.columns] and "metric_ci95" in [c.key for c in plain.columns]
