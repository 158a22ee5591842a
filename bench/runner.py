"""Run one cell in-process and return its :class:`~snnbench.record.CellResult`.

The runner builds the model, evaluates the ANN once (cached per task x model x eval size),
and then either reports that evaluation at every t (a method flagged ``reference``: the
static ANN) or calibrates (statistics cached per kind, so methods share them), converts
and simulates to T. The record's JSON form is the contract described in
:mod:`snnbench.record`.
"""

from __future__ import annotations

import itertools
import logging
import time
import traceback
from typing import Any, Callable, Collection

import torch

from snnbench.common.cache import MemoryCache, digest
from snnbench.cell import CellSpec, resolve_eval_ts
from snnbench.counting import OpCounter
from snnbench.energy import DEFAULT_ENERGY_MODEL, ENERGY_MODELS
from snnbench.per_t import reference_rows, simulated_rows
from snnbench.plugins import create_method, create_task
from snnbench.provenance import git_revision, host_info, package_versions
from snnbench.record import CellResult
from snnbench.samples import from_cache, intervals, save_samples, to_cache, with_intervals
from snnbench.methods.base import ConversionContext, SpikingModel
from snnbench.common.outcomes import Outcomes
from snnbench.tasks.base import StepMetric
from snnbench.tasks.zoo import model_track

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; a CUDA request without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine; use --device cpu")
    return dev


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def simulate(snn: SpikingModel, task, bundle, batches, T: int, desc: str = "", total: int | None = None,
             progress: bool = False, eval_ts: Collection[int] | None = None, metric: StepMetric | None = None
             ) -> tuple[dict[int, dict[str, float]], Any]:
    """Step ``snn`` to T over evaluation batches; the metric at each t of ``eval_ts`` (every
    t when None) and op counts at every t. Outputs at other t are neither post-processed
    (``bundle.finish``) nor scored.

    ``total`` is the number of batches, if known, for the progress bar over batches x t.
    ``metric``: the task metric to update (default: a new one); pass one to read its
    per-sample outcomes afterwards.

    A model with per-sample early exit sets ``snn.active`` for each frame (methods/base.py):
    the counter then counts only the samples that ran, and the steps each sample used are
    recorded (``summary.steps``, ``summary.steps_histogram``).
    """
    from snnbench.console import step_bar

    metric = metric if metric is not None else task.new_metric()
    wanted = None if eval_ts is None else set(eval_ts)
    bar = step_bar(desc, total, T, progress)
    try:
        with torch.inference_mode(), OpCounter(snn, T) as counter:
            for inputs, targets in batches:
                x, meta = bundle.prepare(inputs)
                x = x.to(_device_of(snn))
                snn.reset()
                used: torch.Tensor | None = None
                for t, out in enumerate(snn.simulate(x, T), start=1):
                    if wanted is None or t in wanted:
                        metric.update(t, bundle.finish(out, meta), targets)
                    active = getattr(snn, "active", None)
                    counter.add_steps(t, active, x.shape[0])
                    if active is not None:
                        used = active.to(torch.int64) if used is None else used + active.to(torch.int64)
                    bar.update(1)
                if used is not None:
                    counter.add_steps_used(used)
                counter.add_samples(x.shape[0])
            summary = counter.summary()
    finally:
        bar.close()
    return metric.compute(), summary


def _batch_count(task, eval_size: int | None, batch_size: int) -> int | None:
    """Evaluation batches of a cell, for the progress bar (None when the set size is unknown)."""
    try:
        n = task.eval_set_size()
    except Exception:  # noqa: BLE001 - only a progress-bar total
        n = None
    if n is None:
        return None
    n = min(n, eval_size) if eval_size else n
    return -(-n // batch_size)


def _device_of(module: torch.nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _data_key(spec: CellSpec, bundle) -> dict[str, Any]:
    """What cached ANN numbers and statistics depend on, including the identity of the weights loaded."""
    from snnbench.tasks.zoo.weights import bundle_weights_sha256

    return {"task": spec.task, "model": spec.model, "weights": spec.weights, "data_root": spec.data_root,
            "weights_sha256": bundle_weights_sha256(bundle)}


def evaluate_ann(spec: CellSpec, task, bundle, cache, progress: bool) -> dict[str, Any]:
    """ANN metric and dense MACs on the evaluation set, cached per (task, model, eval size)."""
    key = digest({**_data_key(spec, bundle), "eval_size": spec.eval_size, "what": "ann-eval-v2"})

    def compute() -> dict[str, Any]:
        from snnbench.methods.ann import ANNReference

        start = time.perf_counter()
        batch = spec.batch_size or task.default_batch_size
        batches = iter(task.eval_batches(spec.eval_size, batch, bundle))
        first = next(batches)
        example, _ = bundle.prepare(first[0])
        ctx = ConversionContext(T=1, example=example.to(_device_of(bundle.core)))
        reference = ANNReference().convert(bundle.core, None, ctx)
        metric = task.new_metric()
        metrics, summary = simulate(reference, task, bundle, itertools.chain([first], batches), T=1,
                                    desc=f"ann/{spec.model}/{spec.task}", progress=progress,
                                    total=_batch_count(task, spec.eval_size, batch), metric=metric)
        outcomes = metric.outcomes()
        return {"metrics": metrics[1], "dense_macs": summary.dense_macs, "samples": summary.samples,
                "layers": summary.layers, "wall_s": time.perf_counter() - start,
                "ci95": intervals(outcomes).get(1), "outcomes": to_cache(outcomes)}

    return cache.get_or_compute("ann", key, compute)


def calibration_batches(spec: CellSpec, task, bundle):
    """Core-input batches for calibration: ``calib_size`` training images, or with
    ``calib_split="eval"`` the first ``calib_size`` evaluation images (the DCGS paper's
    protocol, docs/dcgs-official-code.md §3.5; allowed only when asked for explicitly)."""
    if spec.calib_split == "train":
        return task.calib_batches(spec.calib_size, spec.calib_batch_size, spec.seed, bundle)
    if spec.calib_split != "eval":
        raise ValueError(f"calib_split must be 'train' or 'eval', got {spec.calib_split!r}")
    return (bundle.prepare(inputs)[0] for inputs, _ in task.eval_batches(spec.calib_size, spec.calib_batch_size,
                                                                          bundle))


def calibration_stats(spec: CellSpec, task, bundle, method, ctx: ConversionContext, cache, progress: bool):
    """The statistics ``method`` asks for; each kind computed once and cached."""
    from snnbench.methods.snn.stats import Stats, collect_stats

    kinds = method.stat_kinds(bundle.core, ctx)
    base = {**_data_key(spec, bundle), "calib_size": spec.calib_size, "calib_batch": spec.calib_batch_size,
            "seed": spec.seed, **({"calib_split": spec.calib_split} if spec.calib_split != "train" else {})}
    key_of = {kind: digest({**base, "kind": kind.key()}) for kind in kinds}
    stats = Stats()
    with cache.lock("stats", digest(base)):
        missing = []
        for kind in kinds:
            found = cache.get("stats", key_of[kind])
            if found is None:
                missing.append(kind)
            else:
                stats.add(kind, found)
        if missing:
            collected = collect_stats(bundle.core, ctx.calib_batches, missing, progress=progress,
                                      desc=f"calibrate {spec.model}/{spec.task}")
            for kind in missing:
                cache.put("stats", key_of[kind], collected.get_kind(kind))
                stats.add(kind, collected.get_kind(kind))
    return stats


def run_cell(spec: CellSpec, cache=None, progress: bool = False,
             on_stage: Callable[[str], None] | None = None) -> CellResult:
    """Run one cell; never raises for a failing cell: returns ``status="failed"`` with the traceback.

    Third-party warnings raised meanwhile (torch's CUDA_HOME notice, dynamo recompile
    messages, ...) stay off the console and are stored in the record's ``warnings``
    (:func:`snnbench.console.capture_warnings`).
    """
    from snnbench.console import capture_warnings

    with capture_warnings() as captured:
        fields = _run_cell(spec, cache, progress, on_stage)
    return CellResult(**fields, warnings=captured.to_list())


def _run_cell(spec: CellSpec, cache, progress: bool, on_stage: Callable[[str], None] | None) -> dict[str, Any]:
    """The fields of the cell's :class:`CellResult` (everything but the captured warnings)."""
    start = time.perf_counter()
    cache = cache if cache is not None else MemoryCache()
    out: dict[str, Any] = {"method": spec.method, "task": spec.task, "model": spec.model,
                           "settings": dict(spec.settings), "T": spec.T}
    timings: dict[str, float] = {}
    stage = on_stage or (lambda _: None)
    task = None
    try:
        out["cell_key"] = spec.key()
        method = create_method(spec.method, spec.settings)
        out["settings"] = method.config()["settings"]
        out["reference"] = bool(method.reference)
        device = resolve_device(spec.device)
        seed_everything(spec.seed)
        task = create_task(spec.task, data_root=spec.data_root)
        out["metric"] = task.metric
        stage("build")
        t0 = time.perf_counter()
        bundle = task.build(spec.model, weights=spec.weights, device=device, progress=progress)
        timings["build_s"] = time.perf_counter() - t0
        from snnbench.tasks.zoo.weights import bundle_weights_sha256

        out["weights_sha256"] = bundle_weights_sha256(bundle)
        out["track"] = model_track(spec.model)

        stage("ann")
        t0 = time.perf_counter()
        ann = evaluate_ann(spec, task, bundle, cache, progress)
        timings["ann_s"] = time.perf_counter() - t0
        out.update(ann=ann["metrics"][task.metric], ann_ci95=ann["ci95"], ann_metrics=ann["metrics"],
                   ann_macs_per_sample=ann["dense_macs"],
                   energy_model=DEFAULT_ENERGY_MODEL.to_dict(),
                   energy_models={name: model.to_dict() for name, model in ENERGY_MODELS.items()})
        if method.reference:  # the static model: the cached ANN evaluation is its result at every t
            rows = reference_rows(ann, task.metric, spec.T)
            if ann["ci95"] is not None:
                rows = with_intervals(rows, {t: ann["ci95"] for t in range(1, spec.T + 1)})
            out.update(per_t=rows, layers=ann["layers"], n_eval=ann.get("samples"))
            outcomes = from_cache(ann["outcomes"])
        else:
            fields, outcomes = _convert_and_simulate(spec, task, bundle, method, ann, device, cache, progress, stage,
                                                     timings)
            out.update(fields)
        save_samples(spec.samples_dir, out["cell_key"], outcomes)
        out["status"] = "ok"
    except Exception:  # noqa: BLE001 - a failed cell is data, not a crash
        out.update(status="failed", error=traceback.format_exc())
        log.debug("cell %s failed:\n%s", spec.label(), out["error"])
    out["timings"] = {k: round(v, 3) for k, v in timings.items()}
    out["provenance"] = {"git": git_revision(), "versions": package_versions(), "host": host_info(),
                         "spec": spec.to_dict(), "splits": _splits(task)}
    out["wall_s"] = round(time.perf_counter() - start, 3)
    return out


def _convert_and_simulate(spec: CellSpec, task, bundle, method, ann: dict[str, Any], device: torch.device, cache,
                          progress: bool, stage: Callable[[str], None], timings: dict[str, float]
                          ) -> tuple[dict[str, Any], Outcomes | None]:
    """Calibrate, convert and simulate a spiking method; the record fields this yields and the
    metric's per-sample outcomes."""
    calib = lambda: calibration_batches(spec, task, bundle)  # noqa: E731
    example = next(iter(calib()))
    ctx = ConversionContext(T=spec.T, device=device, example=example.to(device),
                            calib_batches=lambda: (b.to(device) for b in calib()))
    stage("calibrate")
    t0 = time.perf_counter()
    stats = calibration_stats(spec, task, bundle, method, ctx, cache, progress)
    timings["calibrate_s"] = time.perf_counter() - t0
    stage("convert")
    t0 = time.perf_counter()
    snn = method.convert(bundle.core, stats, ctx).to(device).eval()
    timings["convert_s"] = time.perf_counter() - t0
    out: dict[str, Any] = {"conversion": snn.describe()}
    fairness = snn.fairness()
    out["fairness"] = fairness.to_dict()
    stage("simulate")
    t0 = time.perf_counter()
    batch = spec.batch_size or task.default_batch_size
    eval_ts = resolve_eval_ts(spec.eval_ts, spec.T, getattr(task, "default_eval_ts", "all"))
    out["eval_ts"] = eval_ts
    metric = task.new_metric()
    metrics, summary = simulate(snn, task, bundle, task.eval_batches(spec.eval_size, batch, bundle), spec.T,
                                desc=spec.label(), progress=progress, eval_ts=eval_ts,
                                total=_batch_count(task, spec.eval_size, batch), metric=metric)
    timings["simulate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    outcomes = metric.outcomes()
    rows = simulated_rows(metrics, summary, fairness, DEFAULT_ENERGY_MODEL, ann["dense_macs"], task.metric, spec.T)
    out["per_t"] = with_intervals(rows, intervals(outcomes))
    timings["intervals_s"] = time.perf_counter() - t0
    out.update(layers=summary.layers, eval_samples=summary.samples, n_eval=summary.samples)
    if summary.steps_histogram is not None:  # per-sample early exit (e.g. AdaFire's IAT)
        out["adaptive_timesteps"] = {
            "mean_steps": summary.steps[-1],
            "steps_histogram": {str(k): v for k, v in sorted(summary.steps_histogram.items())}}
    return out, outcomes


def _splits(task) -> dict[str, str] | None:
    if task is None:
        return None
    try:
        return task.splits()
    except Exception:  # noqa: BLE001 - provenance must not fail a cell
        return None


__all__ = ["run_cell", "simulate", "evaluate_ann", "resolve_device"]
