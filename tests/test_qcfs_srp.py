"""The QCFS track: the QCFS activation, the ``qcfs`` and ``srp`` methods, latency that counts
every simulated frame, the zoo's QCFS models and the leaderboard's separate QCFS track.

Hand-computed traces below use θ = 1 (and θ = 2 to check the scaling); the SRP rules are
those of baselines.md §3 (the official ``MPLayer``): mask M = 1[v > 1e-3·θ] after the τ-th
frame, potential back to θ/2, emitted spikes multiplied by M afterwards.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from snnbench.common.activations import QCFS, qcfs_thresholds
from snnbench.counting import OpCounter
from snnbench.methods.base import ConversionContext
from snnbench.methods.qcfs import NotQCFSModelError
from snnbench.methods.qcfs.srp import PLAIN_ANN_NOTE, SRPNeuron
from snnbench.methods.snn.stats import Stats, collect_stats
from snnbench.plugins import create_method


def qcfs_formula(x: torch.Tensor, lam: float, L: int) -> torch.Tensor:
    """h(x) = λ·clip(floor(x·L/λ + 1/2)/L, 0, 1), written independently of the module."""
    return lam * torch.clamp(torch.floor(x * L / lam + 0.5) / L, 0, 1)


def identity_linear(n_in: int, n_out: int, weight: torch.Tensor | None = None) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.copy_(weight if weight is not None else torch.eye(n_out, n_in))
        layer.bias.zero_()
    return layer


def converted(method: str, model: nn.Module, x: torch.Tensor, T: int, settings: dict | None = None):
    ctx = ConversionContext(T=T, example=x)
    m = create_method(method, settings or {})
    kinds = m.stat_kinds(model, ctx)
    stats = collect_stats(model, [x], kinds) if kinds else Stats()
    return m.convert(model, stats, ctx).eval()


def run(snn, x: torch.Tensor, T: int) -> list[torch.Tensor]:
    snn.reset()
    with torch.no_grad():
        return [y.clone() for y in snn.simulate(x, T)]


# -- the QCFS activation -----------------------------------------------------------------
def test_qcfs_activation_equals_hand_values_and_formula():
    act = QCFS(levels=4, initial_threshold=2.0)
    x = torch.tensor([-1.0, 0.0, 0.2, 0.26, 0.5, 0.74, 0.76, 1.9, 2.5])
    # x·L/λ + 1/2 = 2x + 1/2 -> floor -> /4, clip, ·2 (worked by hand)
    expected = torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 2.0, 2.0])
    assert torch.equal(act(x), expected)
    y = torch.randn(1000) * 3
    assert torch.allclose(act(y), qcfs_formula(y, 2.0, 4))


def test_qcfs_floor_is_straight_through_and_lambda_learns_from_clipped_inputs():
    act = QCFS(levels=4, initial_threshold=1.0)
    x = torch.tensor([0.3, 0.6, 2.0, 3.0], requires_grad=True)
    act(x).sum().backward()
    # inside [0, λ] the floor passes the gradient (dh/dx = λ·(L/λ)/L = 1); clipped inputs get 0
    assert torch.equal(x.grad, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    # dh/dλ = q - x/λ inside (q = quantised level), 1 where clipped at λ
    q = torch.tensor([0.25, 0.5])  # floor(4x + 1/2)/4 for x = 0.3, 0.6
    expected = float((q - torch.tensor([0.3, 0.6])).sum()) + 2.0
    assert act.up.grad.item() == pytest.approx(expected, abs=1e-6)
    act.up.data.fill_(5.0)
    act.reset_parameters()
    assert act.up.item() == 1.0


@pytest.mark.parametrize("L", [2, 4, 8])
def test_qcfs_conversion_is_exact_at_T_equal_L(L):
    """QCFS theory (Bu et al. 2022, Thm 2): with v(0) = θ/2 and θ = λ an IF neuron on a constant
    input emits floor(T·x/λ + 1/2) spikes (clipped to [0, T]), so at T = L its mean is h(x)."""
    torch.manual_seed(L)
    lam = 1.7
    x = torch.rand(1, 400) * 2.4 * lam - 0.4 * lam
    frac = torch.frac(x * L / lam + 0.5).abs()[0]
    x = x[0][(frac > 1e-3) & (frac < 1 - 1e-3)].unsqueeze(0)  # away from the floor's jumps (float rounding)
    n = x.shape[1]
    model = nn.Sequential(identity_linear(n, n), QCFS(L, lam), identity_linear(n, n)).eval()
    snn = converted("qcfs", model, x, T=L)
    outs = run(snn, x, L)
    assert torch.allclose(outs[L - 1], qcfs_formula(x, lam, L), atol=1e-5)
    assert torch.allclose(outs[L - 1], model(x), atol=1e-5)


def test_qcfs_refuses_a_plain_relu_model_naming_the_qcfs_models():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    with pytest.raises(NotQCFSModelError, match="vgg_small_qcfs"):
        converted("qcfs", model, torch.randn(2, 3), T=4)


# -- SRP -----------------------------------------------------------------------------------
@pytest.mark.parametrize("theta", [1.0, 2.0])
def test_srp_neuron_hand_trace(theta):
    """Three neurons, τ = 2 (values in units of θ):

    A: x = 0.3 every frame: v 0.8, 1.1 -> spike, residual 0.1 > 0 -> M = 1; reset 0.5;
       0.8, 1.1 -> spike (emitted), 0.4.            spikes 0 1 | 0 1 0
    B: x = 0.6, -0.1, 0.6, 0.6, 0.6: 1.1 -> spike (0.1), 0.0 -> residual 0 -> M = 0; reset
       0.5; 1.1 -> fires inside (0.1) but emits nothing, 0.7, 1.3 -> (0.3).  1 0 | 0 0 0
    C: x = 0.25: 0.75, 1.0 -> spike, residual exactly 0 -> M = 0; reset 0.5; 0.75, 1.0 ->
       fires inside (0.0), emits nothing; 0.25.       0 1 | 0 0 0
    """
    neuron = SRPNeuron(torch.tensor(theta), presim=2)
    inputs = torch.tensor([[0.3, 0.6, 0.25], [0.3, -0.1, 0.25], [0.3, 0.6, 0.25], [0.3, 0.6, 0.25],
                           [0.3, 0.6, 0.25]]) * theta
    spikes = torch.stack([neuron(x.view(1, 3)).view(3) for x in inputs])
    expected = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float32) * theta
    assert torch.equal(spikes, expected)
    assert torch.equal(neuron.mask.view(3), torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(neuron.v.view(3), torch.tensor([0.4, 0.3, 0.25]) * theta, atol=1e-6)
    neuron.reset()
    assert neuron.mask is None and neuron.v is None and neuron.t == 0


# Per-frame emitted spikes of the readout-window network below (θ = λ = 1, τ = 2):
# A x=0.3: v 0.8, 1.1 (spike, 0.1) | reset 0.5: 0.8, 1.1 (spike, 0.1), 0.4, 0.7  -> 0 1 | 0 1 0 0
# C x=0.25: 0.75, 1.0 (spike, residual 0: masked) | nothing emitted              -> 0 1 | 0 0 0 0
# D x=0.8: 1.3 (spike, 0.3), 1.1 (spike, 0.1) | reset 0.5: 1.3 (s), 1.1 (s), 0.9, 1.7 (s) -> 1 1 | 1 1 0 1
SRP_INPUT = torch.tensor([[0.3, 0.25, 0.8]])
SRP_EMITTED = {1: 1, 2: 3, 3: 1, 4: 2, 5: 0, 6: 1}   # spikes summed over the three neurons, per frame


def srp_toy_model() -> nn.Module:
    return nn.Sequential(identity_linear(3, 3), QCFS(4, 1.0), identity_linear(3, 1, torch.ones(1, 3))).eval()


def test_srp_readout_window_skips_presimulation_and_latency_is_t_plus_tau():
    snn = converted("srp", srp_toy_model(), SRP_INPUT, T=4, settings={"presim": 2})
    outs = [float(y) for y in run(snn, SRP_INPUT, 4)]
    readout = [SRP_EMITTED[f] for f in (3, 4, 5, 6)]
    expected = [sum(readout[:t]) / t for t in range(1, 5)]    # running mean over frames τ+1..τ+t only
    assert outs == pytest.approx(expected)
    fair = snn.fairness()
    assert fair.frames_before_readout == 2
    assert [fair.latency(t) for t in range(1, 5)] == [3, 4, 5, 6]
    assert snn.describe()["threshold"] == "qcfs" and snn.describe()["track"] == "qcfs"


def test_srp_counts_include_presimulation_frames():
    snn = converted("srp", srp_toy_model(), SRP_INPUT, T=4, settings={"presim": 2})
    with OpCounter(snn, 4) as counter:
        run(snn, SRP_INPUT, 4)
        counter.add_samples(1)
    summary = counter.summary()
    cumulative = [sum(SRP_EMITTED[f] for f in range(1, t + 3)) for t in range(1, 5)]   # frames 1..t+τ
    assert summary.events == pytest.approx(cumulative)
    assert summary.acs == pytest.approx(cumulative)        # the output layer: one AC per spike (fan-out 1)
    assert summary.macs == pytest.approx([9.0 * (t + 2) for t in range(1, 5)])  # analog 3x3 input layer, every frame


def test_srp_without_presimulation_is_qcfs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), QCFS(4, 1.5), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 8), QCFS(4, 2.0), nn.Linear(8, 3)).eval()
    x = torch.randn(4, 1, 4, 4)
    a = run(converted("srp", model, x, T=6, settings={"presim": 0}), x, 6)
    b = run(converted("qcfs", model, x, T=6), x, 6)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_srp_on_a_plain_relu_ann_uses_percentile_thresholds_and_says_so():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    x = torch.randn(16, 5)
    snn = converted("srp", model, x, T=4)
    info = snn.describe()
    assert info["threshold"] == "percentile" and info["note"] == PLAIN_ANN_NOTE and info["track"] == "plain"
    assert snn.fairness().frames_before_readout == 4
    with pytest.raises(NotQCFSModelError):
        converted("srp", model, x, T=4, settings={"threshold": "qcfs"})


def test_differential_coding_latency_is_t_plus_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    x = torch.randn(16, 5)
    dcgs = converted("dcgs", model, x, T=4).fairness()
    assert dcgs.frames_before_readout == 1 and [dcgs.latency(t) for t in (1, 4)] == [2, 5]
    rate = converted("rate", model, x, T=4).fairness()
    assert rate.frames_before_readout == 0 and rate.latency(4) == 4


def test_clip_statistic_above_the_ceiling_is_capped_so_t1_can_fire():
    """A percentile of QCFS outputs all equal to λ may come back one ulp above λ (CUDA quantile);
    the threshold is capped at the ceiling, so an IF neuron driven above λ still fires at t = 1."""
    from snnbench.methods.snn.stats import StatKind

    lam = 1.25
    model = nn.Sequential(identity_linear(2, 2), QCFS(4, lam), identity_linear(2, 2)).eval()
    x = torch.tensor([[3.0, 3.0]])
    method = create_method("rate", {})
    ctx = ConversionContext(T=1, example=x)
    (kind,) = method.stat_kinds(model, ctx)
    assert kind == StatKind("percentile", granularity="layer", placement="activations", p=99.9)
    stats = Stats()
    above = torch.nextafter(torch.tensor(lam), torch.tensor(2 * lam)).reshape(1)
    stats.add(kind, {"1": {"value": above}})
    snn = method.convert(model, stats, ctx).eval()
    out = run(snn, x, 1)[0]
    assert torch.allclose(out, torch.full((1, 2), lam))


# -- zoo models ------------------------------------------------------------------------------
def test_zoo_qcfs_specs_and_torchvision_qcfs_checkpoints(tmp_path):
    from snnbench.tasks.zoo import get_model_spec, model_track
    from snnbench.tasks.zoo.weights import load_into, load_state_dict_file

    spec = get_model_spec("vgg_small_qcfs")
    assert spec.track == "qcfs" and model_track("vgg_small") == "plain" and model_track("resnet_small_qcfs") == "qcfs"
    net = spec.build(spec, in_shape=(1, 8, 8), num_classes=10)
    assert len(qcfs_thresholds(net)) == 5 and not any(isinstance(m, nn.ReLU) for m in net.modules())

    tv = get_model_spec("qcfs/resnet18_L4")
    assert tv.track == "qcfs" and tv.meta["qcfs_levels"] == 4 and get_model_spec("qcfs/vgg11").meta["qcfs_levels"] == 8
    model = tv.build(tv, num_classes=10)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.ReLU)) for m in model.modules())
    assert all(m.levels == 4 for m in model.modules() if isinstance(m, QCFS))
    # a user's checkpoint (λ under the official name "up") loads strictly
    trained = copy.deepcopy(model)
    with torch.no_grad():
        trained.relu.up.fill_(3.25)
    path = tmp_path / "qcfs_resnet18.pth"
    torch.save({"state_dict": trained.state_dict()}, path)
    load_into(model, load_state_dict_file(path), origin=str(path))
    assert model.relu.up.item() == 3.25


@pytest.mark.slow
def test_run_cell_records_track_latency_and_the_qcfs_ann(digits_task):
    """End to end on digits: the zoo trains vgg_small_qcfs (slow on a busy machine), the ANN
    metric is measured with its QCFS activations, qcfs/srp rows carry track and latency."""
    from snnbench.cell import CellSpec
    from snnbench.runner import run_cell
    from snnbench.tasks.zoo.training import evaluate_top1

    bundle = digits_task.build("vgg_small_qcfs", progress=False)
    common = dict(task="digits", model="vgg_small_qcfs", T=4, eval_size=360, calib_size=100)
    srp = run_cell(CellSpec(method="srp", **common))
    assert srp["status"] == "ok", srp["error"]
    assert srp["track"] == "qcfs" and srp["fairness"]["frames_before_readout"] == 4
    assert [srp["per_t"][str(t)]["latency"] for t in range(1, 5)] == [5, 6, 7, 8]
    assert srp["ann"] == pytest.approx(evaluate_top1(bundle.core, digits_task.split("test")), abs=1e-9)
    qcfs = run_cell(CellSpec(method="qcfs", **common))
    assert qcfs["status"] == "ok" and qcfs["per_t"]["4"]["latency"] == 4
    json.dumps(srp)  # the result stays JSON


# -- leaderboard -------------------------------------------------------------------------------
def _record(method: str, model: str, track: str, metrics: list[float], ann: float, latency_offset: int = 0,
            note: str = "") -> dict:
    key = f"{method}-{model}"
    per_t = {str(t): {"metric": m, "spikes_per_sample": 10.0 * t, "synops_per_sample": 100.0 * t,
                      "energy_ratio": 0.1 * t, "latency": t + latency_offset} for t, m in enumerate(metrics, 1)}
    return {"cell_key": key, "task": "digits", "model": model, "method": method, "T": len(metrics), "status": "ok",
            "metric": "top1", "ann": ann, "per_t": per_t, "settings": {}, "track": track,
            "conversion": {"note": note} if note else {},
            "energy_model": {"name": "horowitz45nm-v1", "e_mac_pj": 4.6, "e_ac_pj": 0.9},
            "provenance": {"spec": {"task": "digits", "model": model, "method": method, "T": len(metrics),
                                    "seed": 0, "calib_size": 100, "eval_size": 200, "settings": {}}}}


def test_qcfs_rows_never_enter_a_plain_track_ranking(tmp_path):
    from snnbench.leaderboard.data import results_from_records
    from snnbench.leaderboard.render import render_leaderboard
    from snnbench.leaderboard.rows import build_rows
    from snnbench.leaderboard.tables import task_table

    records = [_record("ann", "vgg_small", "plain", [0.98] * 4, 0.98),
               _record("rate", "vgg_small", "plain", [0.5, 0.7, 0.8, 0.9], 0.98),
               _record("srp", "vgg_small", "plain", [0.4, 0.6, 0.7, 0.8], 0.98, 4, PLAIN_ANN_NOTE),
               _record("ann", "vgg_small_qcfs", "qcfs", [0.95] * 4, 0.95),
               # better than every plain row at every T: it must still never be marked in the plain table
               _record("qcfs", "vgg_small_qcfs", "qcfs", [0.9, 0.93, 0.94, 0.95], 0.95),
               _record("srp", "vgg_small_qcfs", "qcfs", [0.92, 0.94, 0.95, 0.95], 0.95, 4)]
    rows = build_rows(results_from_records(records))
    assert rows.tracks("digits") == ["plain", "qcfs"]
    plain = task_table(rows, "digits", track="plain")
    qcfs = task_table(rows, "digits", track="qcfs")
    assert set(plain.frame["model"]) == {"vgg_small"} and set(qcfs.frame["model"]) == {"vgg_small_qcfs"}
    assert "srp (SRP mechanism, non-QCFS ANN)" in set(plain.frame["row"])
    assert plain.frame.loc[plain.frame["reference"], "ann_metric_pct"].tolist() == [pytest.approx(98.0)]
    assert qcfs.frame.loc[qcfs.frame["reference"], "ann_metric_pct"].tolist() == [pytest.approx(95.0)]
    best_plain = {plain.frame.at[i, "row"] for i, cols in plain.best.items() if "metric_pct_T1" in cols}
    assert best_plain == {"rate"}
    curve = rows.curve(int(rows.rows[(rows.rows["method"] == "srp") & (rows.rows["track"] == "qcfs")]["row_id"].iloc[0]))
    assert curve["latency"].tolist() == [5, 6, 7, 8]

    (tmp_path / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    paths = render_leaderboard(tmp_path)
    md = paths["md"].read_text()
    assert "## digits: top1\n" in md and "## digits: top1, QCFS track" in md
    plain_part = md.split("## digits: top1, QCFS track")[0]
    assert "vgg_small_qcfs" not in plain_part.split("## Failed cells")[0]
    assert any(name.endswith("metric-vs-latency.png") for name in (p.name for p in paths.values()))
    import pandas as pd

    board = pd.read_csv(paths["csv"])
    assert dict(zip(board["row"] + "/" + board["model"], board["track"]))["qcfs/vgg_small_qcfs"] == "qcfs"


def test_paper_rows_of_srp_and_qcfs_carry_their_track():
    from snnbench.leaderboard.paper import load_paper

    paper = load_paper()
    srp = paper[paper["method"] == "srp"]
    assert len(srp) == 16 and set(srp["track"]) == {"qcfs"}
    vgg = srp[(srp["benchmark"] == "imagenet") & (srp["model"] == "VGG-16") & (srp["T"] == "2")]
    assert vgg["value"].tolist() == ["61.37"] and "tau=14" in vgg["note"].iloc[0]
    assert set(paper[paper["method"] == "dcgs"]["track"]) == {"plain"}


def test_sweep_grid_keeps_qcfs_models_out_of_the_defaults_and_qcfs_off_plain_models():
    from snnbench.grid import GridError, GridOptions, expand_grid

    options = GridOptions(T=4)
    default = expand_grid(["rate"], ["digits"], None, {}, [0], options)
    assert "vgg_small_qcfs" not in {c.model for c in default} and "vgg_small" in {c.model for c in default}
    cells = expand_grid(["qcfs", "srp", "dcgs"], ["digits"], ["vgg_small_qcfs", "vgg_small"], {}, [0], options)
    pairs = {(c.method, c.model) for c in cells}
    assert pairs == {("qcfs", "vgg_small_qcfs"), ("srp", "vgg_small_qcfs"), ("dcgs", "vgg_small_qcfs"),
                     ("srp", "vgg_small"), ("dcgs", "vgg_small")}
    with pytest.raises(GridError, match="vgg_small_qcfs"):
        expand_grid(["qcfs"], ["digits"], ["vgg_small"], {}, [0], options)
