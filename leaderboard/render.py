"""Render the leaderboard of a results directory: HTML, CSV, Markdown and PNG plots.

    render_leaderboard("results")            # -> results/leaderboard/leaderboard.html ...
    render_after_sweep("results", tracker)   # the same, then logged to the sweep's MLflow run

Files written into ``out_dir`` (default ``<results>/leaderboard``):

* ``leaderboard.html``: one self-contained page (plots embedded; opens offline);
* ``leaderboard.md``: the same tables as Markdown, linking the PNGs next to it;
* ``leaderboard.csv``: the measured rows of every task, raw values (metrics in %), the
  columns the HTML shows plus ``best`` (the columns where the row is marked best),
  ``pareto``, seeds and cell keys; published rows never appear in it;
* ``ablation.csv``: every ablation pivot in long form (when a sweep varied settings);
* ``failed_cells.csv``: cells whose latest record failed, with the exception line;
* ``paper_results.csv``: a copy of the published reference rows shown on the page;
* ``plot-*.png``: metric vs T and metric vs latency (frames actually simulated) per model,
  metric vs energy with the Pareto front, spikes per layer of one cell, per task and track.

Each task gets one section per track: the plain-ANN rows, then (when present) the
QCFS-track rows with their own ANN reference, table, marks and Pareto front.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

import snnbench.leaderboard.document as d
from snnbench.leaderboard.data import LeaderboardError, Results, load_results
from snnbench.leaderboard.html import render_html
from snnbench.leaderboard.markdown import render_markdown
from snnbench.leaderboard.paper import benchmarks, load_paper, paper_path, paper_tables, under_convention
from snnbench.leaderboard.plots import plot_layer_spikes, plot_metric_vs_latency, plot_metric_vs_T, plot_pareto
from snnbench.leaderboard.rows import Rows, build_rows, natural_key
from snnbench.leaderboard.tables import PERCENT, AblationTable, TaskTable, ablation_tables, failed_table, task_table

log = logging.getLogger(__name__)

TITLE = "snnbench leaderboard"
ARTIFACT_DIR = "leaderboard"
CSV_LEAD = ["task", "track", "metric", "model", "row", "method", "settings", "reference", "seeds", "n_seeds", "T_max",
            "ann_metric_pct"]
#: section heading of each track (the plain track keeps the task's plain heading)
TRACK_TITLES = {"plain": "", "qcfs": "QCFS track (ANNs trained with QCFS activations)"}
CSV_TAIL = ["t_to_99pct_ann", "latency", "levels_per_step", "max_spikes_per_step", "chosen_T", "spikes_per_sample",
            "unit_spikes_per_sample", "steps_per_sample", "synops_per_sample", "energy_ratio", "energy_model",
            "e_mac_pj", "e_ac_pj", "pareto", "best", "cell_keys"]


# -- pieces ----------------------------------------------------------------------------
def choose_layer_cell(table: TaskTable, results: Results, wanted: str | None = None) -> tuple[str, str] | None:
    """(cell_key, row label) whose per-layer spikes are plotted for a task.

    ``wanted`` (a cell_key or its prefix) wins when it belongs to the task; otherwise the
    best SNN row at the chosen T (highest metric, then lowest energy ratio) that has
    per-layer counts.
    """
    frame = table.frame[~table.frame["reference"]]
    keys_of = {k: rec["row"] for _, rec in frame.iterrows() for k in rec["cell_keys"].split(";")}
    if wanted:
        for key, label in keys_of.items():
            if key.startswith(wanted) and results.layers.get(key):
                return key, label
    ranked = frame.sort_values([f"metric_pct_T{table.chosen_T}", "energy_ratio"], ascending=[False, True],
                               na_position="last", kind="stable")
    for _, rec in ranked.iterrows():
        for key in rec["cell_keys"].split(";"):
            if results.layers.get(key):
                return key, rec["row"]
    return None


def _track_suffix(track: str) -> str:
    return "" if track == "plain" else f"-{d.slug(track)}"


def _task_plots(rows: Rows, table: TaskTable, results: Results, out: Path, layers_cell: str | None) -> list[d.Image]:
    task, T = table.task, table.chosen_T
    metric = table.metric_name
    suffix = _track_suffix(table.track)
    images = []
    models = sorted(rows.of_task(task, table.track)["model"].unique(), key=natural_key)
    for model in models:
        path = plot_metric_vs_T(rows, task, model, out / f"plot-{d.slug(task)}-{d.slug(model)}-metric-vs-T.png")
        images.append(d.Image(path, f"{metric} vs T, {task} / {model}",
                              f"{task} / {model}: {metric} (%) after t time-steps of one simulation, one line per "
                              "SNN row; dashed: ANN; dotted: 99 % of ANN; band: ± 1 sd over seeds."))
        path = plot_metric_vs_latency(rows, task, model,
                                      out / f"plot-{d.slug(task)}-{d.slug(model)}-metric-vs-latency.png")
        images.append(d.Image(path, f"{metric} vs latency, {task} / {model}",
                              f"{task} / {model}: {metric} (%) against latency, the frames actually simulated up "
                              "to each readout step (T plus SRP's pre-simulation frames, plus differential "
                              "coding's bias frame); dashed: ANN."))
    path = plot_pareto(table, out / f"plot-{d.slug(task)}{suffix}-pareto.png")
    images.append(d.Image(path, f"{metric} vs energy ratio, {task}",
                          f"{task}: every SNN row at T={T}; outlined points and the line: the Pareto front (no row "
                          f"is both more accurate and cheaper); grey x: ANN reference at ratio 1. Energy model "
                          f"{table.energy_label}."))
    chosen = choose_layer_cell(table, results, layers_cell)
    if chosen is not None:
        key, label = chosen
        cell = results.cells[results.cells["cell_key"] == key].iloc[0]
        title = f"{task} / {cell['model']}: {label}, seed {cell['seed']}"
        path = plot_layer_spikes(results.layers[key], T, title, out / f"plot-{d.slug(task)}{suffix}-layers.png")
        if path is not None:
            images.append(d.Image(path, f"spikes per layer, {task}",
                                  f"Spikes per sample of each neuron layer of cell {key} ({label}, seed "
                                  f"{cell['seed']}), cumulative to T={T}: events count a multi-level spike once, "
                                  "unit spikes count it in units of the smallest level."))
    return images


def _task_section(table: TaskTable, ablations: list[AblationTable], images: list[d.Image],
                  paper: pd.DataFrame) -> d.Section:
    frame = table.frame
    n_rows, n_ref = len(frame), int(frame["reference"].sum())
    blocks: list[d.Block] = [
        d.Paragraph(f"{n_rows - n_ref} SNN row(s) and {n_ref} ANN reference row(s). Metric: {table.metric_name} "
                    f"in %. Spikes, SynOps and energy ratio at the chosen T={table.chosen_T}, per sample, "
                    f"cumulative over time-steps 1..T. Energy model: {table.energy_label}.", "note"),
        d.measured_table(table),
        d.Paragraph("Bold green: best value of the column among the SNN rows of the same model (ties all marked; the "
                    "italic ANN reference row is never ranked). T to 99% ANN: the smallest t whose metric reaches "
                    "99 % of the ANN's (blank: never within T_max). Pareto front: at the chosen T over all SNN rows "
                    "of the task. Several seeds: mean ± sample standard deviation. Click a header to sort.",
                    "legend"),
        d.Figures(images)]
    if table.track != "plain":
        blocks.insert(0, d.Paragraph(
            f"{TRACK_TITLES.get(table.track, table.track)}: these rows convert ANNs trained specially for "
            "conversion, so they are ranked only among themselves, against their own ANN reference, never with "
            "the plain-ANN rows of this task.", "note"))
    for ablation in ablations:
        blocks.append(d.Section(f"Ablation: {ablation.model} ({', '.join(ablation.keys)})",
                                f"ablation-{d.slug(table.task)}-{d.slug(ablation.model)}",
                                [d.ablation_table(ablation)], level=3))
    blocks += _paper_sections(paper, table.task, level=3, track=table.track)
    heading = f"{table.task}: {table.metric_name}"
    if table.track != "plain":
        heading += f", {TRACK_TITLES.get(table.track, table.track + ' track')}"
    return d.Section(heading, f"task-{d.slug(table.task)}{_track_suffix(table.track)}", blocks)


def _paper_sections(paper: pd.DataFrame, benchmark: str, level: int, track: str | None = None) -> list[d.Section]:
    out = []
    if track is not None:
        paper = paper[paper["track"] == track]
    for i, ptable in enumerate(paper_tables(paper, benchmark)):
        kind = "ablation" if ptable.kind == "ablation" else "results"
        out.append(d.Section(
            f"Published {kind} (paper): {benchmark}, {ptable.section}", f"paper-{d.slug(benchmark)}-{i}",
            [d.Paragraph(f"Published by {ptable.paper}; transcribed from {ptable.section}, each row with its source "
                         f"tag. Not measured by snnbench and never ranked with the measured rows. {ptable.metric} "
                         "in %; ER = energy ratio as published, shown only when the leaderboard renders its own convention "
                         "(bench leaderboard --energy-model NAME).", "paper-note"),
             d.paper_table(ptable, i)], level=level, badge="paper"))
    return out


def _failed_section(failed: pd.DataFrame) -> d.Section:
    if failed.empty:
        return d.Section("Failed cells", "failed-cells", [d.Paragraph("No failed cell.", "note")])
    return d.Section("Failed cells", "failed-cells", [
        d.Paragraph(f"{len(failed)} cell(s) whose latest record failed; they have no numbers and appear in no table "
                    "or plot. error: the exception line of the recorded traceback (the ledger and the cell's MLflow "
                    "run hold the whole traceback).", "note"),
        d.failed_table(failed)])


def _csv(tables: list[TaskTable]) -> pd.DataFrame:
    frames = [t.csv_frame() for t in tables]
    if not frames:
        return pd.DataFrame(columns=CSV_LEAD + CSV_TAIL)
    frame = pd.concat(frames, ignore_index=True)
    T_cols = sorted({c for c in frame.columns if re.fullmatch(r"metric_pct_T\d+", c)},
                    key=lambda c: int(c[len("metric_pct_T"):]))

    def shown(suffix: str) -> bool:
        return any(f"{c}{suffix}" in frame and frame[f"{c}{suffix}"].notna().any() for c in T_cols)

    suffixes = [x for x in ("_sd", "_ci95_lo", "_ci95_hi") if shown(x)]
    metric_cols = [f"{c}{x}" for c in T_cols for x in ("", *suffixes)]
    groups = ["rank_group_number"] if "rank_group_number" in frame and frame["rank_group_number"].notna().any() else []
    order = CSV_LEAD + metric_cols + groups + CSV_TAIL
    return frame[[c for c in order if c in frame.columns]]


# -- entry points ----------------------------------------------------------------------
def render_leaderboard(results_dir: str | Path, out_dir: str | Path | None = None, chosen_T: int | None = None, *,
                       from_mlflow: bool = False, experiment: str | None = None, per_seed: bool = False,
                       layers_cell: str | None = None, energy_model: str | None = None) -> dict[str, Path]:
    """Build every leaderboard file of ``results_dir``; returns ``{name: path}`` of what was written.

    Args:
        results_dir: a sweep's results directory (``ledger.jsonl``, ``mlflow.db``).
        out_dir: where to write (default ``<results_dir>/leaderboard``).
        chosen_T: T of the spikes/SynOps/energy columns and the Pareto plot (default per
            task: the largest T every row reached).
        from_mlflow: read the MLflow runs instead of the ledger.
        experiment: with ``from_mlflow``, only this experiment.
        per_seed: one row per seed instead of the mean over seeds.
        layers_cell: cell_key (or prefix) whose per-layer spikes are plotted.
        energy_model: the energy convention of every energy column (default
            ``horowitz45nm-v1``); paper rows show their energy ratio only under their own.

    Raises:
        LeaderboardError: nothing to render, or a bad option.
    """
    if chosen_T is not None and int(chosen_T) < 1:
        raise LeaderboardError(f"--T must be at least 1, got {chosen_T}")
    results = load_results(results_dir, from_mlflow=from_mlflow, experiment=experiment, energy_model=energy_model)
    out = Path(out_dir) if out_dir is not None else Path(results_dir) / ARTIFACT_DIR
    out.mkdir(parents=True, exist_ok=True)
    rows = build_rows(results, per_seed=per_seed)
    from snnbench.energy import DEFAULT_ENERGY_MODEL

    paper = under_convention(load_paper(), energy_model or DEFAULT_ENERGY_MODEL.name)
    measured = sorted(rows.rows["task"].unique())
    if chosen_T is not None:
        too_far = [t for t in measured if int(rows.of_task(t)["T_max"].max()) < int(chosen_T)]
        if too_far and len(too_far) == len(measured):
            raise LeaderboardError(f"--T {chosen_T} is beyond every row's T_max ({', '.join(too_far)}); pick a T "
                                   "that was simulated")
    tables, sections, ablations_all, written = [], [], [], {}
    for task in measured:
        for track in rows.tracks(task):
            table = task_table(rows, task, chosen_T, track=track, results_dir=results_dir)
            ablations = ablation_tables(rows, task, table.chosen_T, track=track)
            images = _task_plots(rows, table, results, out, layers_cell)
            written.update({f"plot:{img.path.name}": img.path for img in images})
            tables.append(table)
            ablations_all += ablations
            sections.append(_task_section(table, ablations, images, paper))
        shown = set(rows.tracks(task))
        other = paper[(paper["benchmark"] == task) & ~paper["track"].isin(shown)]
        if not other.empty:  # published rows of a track not measured on this task
            sections.append(d.Section(f"{task}: published results of other tracks (paper)", f"paper-{d.slug(task)}-other",
                                      _paper_sections(other, task, level=3), badge="paper"))
    failed = failed_table(results)
    sections.append(_failed_section(failed))
    unmeasured = [b for b in benchmarks(paper) if b not in measured]
    if unmeasured:
        sections.append(d.Section("Published reference results (paper)", "paper-results",
                                  [d.Paragraph("Published numbers for benchmarks not measured in these results; shown "
                                               "for orientation only and never ranked.", "paper-note")]
                                  + [s for b in unmeasured for s in _paper_sections(paper, b, level=3)],
                                  badge="paper"))
    doc = d.Document(TITLE, _intro(results, rows, failed), sections, _footer(results))

    paths = {"html": out / "leaderboard.html", "md": out / "leaderboard.md", "csv": out / "leaderboard.csv"}
    paths["html"].write_text(render_html(doc), encoding="utf-8")
    paths["md"].write_text(render_markdown(doc), encoding="utf-8")
    _csv(tables).to_csv(paths["csv"], index=False)
    if ablations_all:
        paths["ablation"] = out / "ablation.csv"
        pd.concat([a.long for a in ablations_all], ignore_index=True).to_csv(paths["ablation"], index=False)
    if not failed.empty:
        paths["failed"] = out / "failed_cells.csv"
        failed.to_csv(paths["failed"], index=False)
    paths["paper"] = out / "paper_results.csv"
    shutil.copyfile(paper_path(), paths["paper"])
    paths.update(written)
    log.info("leaderboard of %d task(s) written to %s", len(tables), out)
    return paths


def _intro(results: Results, rows: Rows, failed: pd.DataFrame) -> list[d.Paragraph]:
    n_ok = len(results.cells)
    return [
        d.Paragraph(f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} from {results.source}: {n_ok} successful "
                    f"cell(s) in {len(rows.rows)} row(s), {len(failed)} failed cell(s).", "note"),
        d.Paragraph("Measured rows rank training-free ANN-to-SNN conversions by their metric after t time-steps "
                    f"(task metrics shown x{PERCENT:g}, in %), spikes and synaptic operations per sample and the "
                    "energy ratio E_SNN/E_ANN of a named energy model computed from raw counts. Rows labelled "
                    "'paper' are published numbers with their source, kept in separate tables and never ranked.",
                    "note")]


def _footer(results: Results) -> str:
    shas = sorted({str(s)[:12] for s in results.cells["git_sha"].dropna()})
    return f"{TITLE}; results from {results.source}; git revision(s) of the cells: {', '.join(shas) or 'unknown'}."


def render_after_sweep(results_dir: str | Path, tracker: Any = None, energy_model: str | None = None) -> None:
    """Render into ``<results_dir>/leaderboard`` and log the files to the sweep's parent run.

    Called by ``bench sweep`` at its end; never raises (a failure is a logged warning), so
    a leaderboard problem never fails a finished sweep.
    """
    try:
        paths = render_leaderboard(results_dir, energy_model=energy_model)
    except Exception as err:  # noqa: BLE001 - the sweep's results are safe; the leaderboard is a by-product
        log.warning("leaderboard not rendered: %s (run `bench leaderboard --results %s -v` to retry)",
                    err, results_dir)
        return
    print(f"leaderboard: {paths['html']}")
    if tracker is None:
        return
    for name, path in paths.items():
        try:
            tracker.log_sweep_artifact(path, ARTIFACT_DIR)
        except Exception as err:  # noqa: BLE001 - MLflow trouble must not fail the sweep
            log.warning("could not log %s to MLflow: %s", path.name, err)
            return
