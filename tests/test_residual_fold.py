"""A residual block's batch norm and add folded into the native step of the neuron they feed
(methods/snn/input_norm.py, "<norm>+<skip>" input maps of methods/snn/native_source.py): the
step reads ``fmaf(x, alpha, beta) + skip`` exactly as torch computes ``bn(x) + skip``, the
graph rewrite takes only the safe pattern, and converted residual networks give the same
outputs, states and counts folded or not, and the same as the eager reference."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from snnbench.methods.snn import fused, input_norm, native_source, native_steps
from snnbench.methods.snn.neurons import SpikingNeuron
from native_step_cases import step_from_fixed_state


#: native loops on one torch thread, checked terms forgotten (conftest.folded_norms)
pytestmark = pytest.mark.usefixtures("folded_norms")


def _bits(a: torch.Tensor) -> torch.Tensor:
    return a.contiguous().view(torch.int32)


def _randomised(bn: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g))
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) * 2 + 0.2)
        bn.weight.copy_(torch.randn(bn.weight.shape, generator=g))
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=g))
    return bn


def _norm(kind: str, channels: int, seed: int) -> nn.Module:
    from torchvision.ops.misc import FrozenBatchNorm2d

    bn = nn.BatchNorm2d(channels) if kind == "fma" else FrozenBatchNorm2d(channels)
    return _randomised(bn, seed).eval().requires_grad_(False)


@pytest.mark.parametrize("coding,first,input_map", list(itertools.product(
    ["differential", "rate"], [True, False], [m for m in native_source.INPUT_MAPS if "+" in m])))
def test_the_residual_step_equals_the_step_of_torchs_sum(coding, first, input_map):
    """The step with an input map "<norm>+<skip>" equals the plain step on bn(x) + skip (or
    bn(x) + bn2(skip)) computed by torch, bit for bit: spikes and every state tensor."""
    main, _, branch = input_map.partition("+")
    g = torch.Generator().manual_seed(4)
    x, skip = (torch.randn(3, 6, 5, 7, generator=g) * 4 for _ in range(2))
    bn, bn2 = _norm(main, 6, seed=1), _norm(branch if branch != "x" else main, 6, seed=2)
    with torch.no_grad():
        summed = bn(x) + (skip if branch == "x" else bn2(skip))
    terms = input_norm.affine_of(bn)
    second = (None, None) if branch == "x" else input_norm.affine_of(bn2)[:2]
    signature = fused.StepSignature.of(coding, "mt", 4, True, 0.0, None)
    theta = (torch.rand(1, 6, 1, 1, generator=g) + 0.5).expand(3, 6, 5, 7).contiguous()

    def run(inp, affine):
        return step_from_fixed_state(signature, inp, theta, coding, first, affine)

    folded = run(x, (*terms[:2], input_map, skip, *second))
    for a, b in zip(folded, run(summed, None), strict=True):
        assert torch.equal(_bits(a), _bits(b))
    assert any(bool((f != 0).any()) for f in folded[:1])  # the neurons fired: the comparison saw spikes


def test_a_residual_input_map_without_its_branch_is_refused():
    signature = fused.StepSignature.of("rate", "if", 1, False, 0.0, None)
    x, v = torch.rand(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    terms = input_norm.affine_of(_norm("fma", 3, seed=1))
    theta = (torch.ones(3 * 16), 0)
    with pytest.raises(ValueError, match="needs a residual branch"):
        native_steps.step(signature, x, None, v, None, None, theta, 1.0, None, (*terms[:2], "fma+x", None, None, None))
    with pytest.raises(ValueError, match="contiguous tensor of the input's shape"):
        native_steps.step(signature, x, None, v, None, None, theta, 1.0, None,
                          (*terms[:2], "fma+x", torch.rand(2, 3, 4, 1).expand(2, 3, 4, 4), None, None))
    with pytest.raises(ValueError, match="unknown input map 'fma\\+y'"):
        native_steps.kernel(signature, "fma+y")


class _Block(nn.Module):
    """conv-bn-relu, conv-bn, + shortcut (identity, or conv-bn when ``downsample``), relu."""

    def __init__(self, channels: int, out: int, kind: str, seed: int, downsample: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, out, 3, padding=1, bias=False), _norm(kind, out, seed)
        self.conv2, self.bn2 = nn.Conv2d(out, out, 3, padding=1, bias=False), _norm(kind, out, seed + 1)
        self.shortcut = nn.Sequential(nn.Conv2d(channels, out, 1, bias=False), _norm(kind, out, seed + 2)) \
            if downsample else nn.Identity()
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + self.shortcut(x))


def _resnet(kind: str = "fma") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), _norm(kind, 4, 10), nn.ReLU(),
                         _Block(4, 4, kind, 20, downsample=False), _Block(4, 6, kind, 30, downsample=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()


def _convert(ann: nn.Module, x: torch.Tensor, method: str, settings: dict):
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.snn.stats import collect_stats
    from snnbench.plugins import create_method

    m = create_method(method, settings)
    ctx = ConversionContext(T=4, example=x, device=x.device, calib_batches=lambda: iter([x]))
    return m.convert(ann, collect_stats(ann, [x], m.stat_kinds(ann, ctx)), ctx)


def _simulate(snn, batches: list[torch.Tensor], T: int = 4):
    """Outputs of plain and counted runs over ``batches`` (the bias pass replayed after the
    first), the final states and the count summary."""
    from snnbench.counting import OpCounter

    outputs = []
    with torch.inference_mode():
        for x in batches:
            snn.reset()
            outputs += [o.clone() for o in snn.simulate(x, T)]
        snn.reset()
        with OpCounter(snn, T) as counter:
            outputs += [o.clone() for o in snn.simulate(batches[0], T)]
            counter.add_samples(len(batches[0]))
    states = [getattr(m, name) for m in snn.net.modules() if isinstance(m, SpikingNeuron)
              for name in ("v", "e_in", "e_out", "c_out") if getattr(m, name) is not None]
    return outputs, states, counter.summary()


def _same(a, b) -> None:
    for p, q in zip(a[0] + a[1], b[0] + b[1], strict=True):
        assert torch.equal(_bits(p), _bits(q))
    assert a[2] == b[2]


@pytest.mark.parametrize("method,kind", [("dcgs", "fma"), ("rate", "fma"), ("dcgs", "mul_add")])
def test_a_folded_residual_network_gives_the_unfolded_and_eager_outputs_and_counts(method, kind, monkeypatch):
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(5, 1, 12, 12, generator=g) for _ in range(3)]
    folded = _convert(_resnet(kind), batches[0], method, {"fuse": True})
    neurons = [m for m in folded.net.modules() if isinstance(m, SpikingNeuron)]
    assert [(m.input_skip, len(m.input_norm)) for m in neurons] == [("", 1), ("", 1), ("x", 1), ("", 1), ("norm", 2)]
    assert not any(n.op == "call_function" for n in folded.net.graph.nodes if n.name.startswith("add"))
    maps = []
    real = native_steps.prepare
    monkeypatch.setattr(native_steps, "prepare", lambda *a, **k: maps.append(a[9][2] if a[9] is not None else "")
                        or real(*a, **k))
    result = _simulate(folded, batches)
    # 5 neurons x 4 runs x steps 1 and 2 (the bias pass runs torch's kernels; steps 3 and 4 the
    # plan the second leaves, which keeps its input map: tests/test_native_plan.py)
    assert sorted(set(maps)) == ["fma" if kind == "fma" else "mul_add", f"{kind}+{kind}", f"{kind}+x"]
    assert len(maps) == 5 * 4 * 2
    monkeypatch.setattr(input_norm, "install", lambda gm, neuron_type: 0)
    reference = _simulate(_convert(_resnet(kind), batches[0], method, {"fuse": True}), batches)
    _same(result, reference)
    if kind == "fma":
        _same(result, _simulate(_convert(_resnet(kind), batches[0], method, {"fuse": False}), batches))


def test_where_the_residual_fold_does_not_run_the_neuron_adds_with_torch():
    x = torch.rand(5, 1, 12, 12)
    snn = _convert(_resnet(), x, "dcgs", {"fuse": True})
    reference = _simulate(snn, [x])
    torch.set_num_threads(2)  # inductor steps: the neuron normalises and adds with torch
    try:
        _same(_simulate(snn, [x]), reference)
    finally:
        torch.set_num_threads(1)
    neuron = [m for m in snn.net.modules() if isinstance(m, SpikingNeuron)][2]
    probe, skip = torch.rand(5, 4, 12, 12), torch.rand(5, 4, 12, 12)
    with torch.inference_mode():
        assert input_norm.pending(neuron, probe, skip)[2] == "fma+x"
        assert input_norm.pending(neuron, probe, skip.transpose(2, 3)) is None
        assert input_norm.pending(neuron, probe, skip[:1]) is None  # broadcast: torch's add
        assert input_norm.pending(neuron, probe, skip.double()) is None
        expected = neuron.input_norm[0](probe) + skip[:1]
        assert torch.equal(input_norm.apply_torch(neuron, probe, skip[:1]), expected)


def test_install_folds_only_the_safe_residual_pattern():
    x = torch.rand(2, 1, 8, 8)

    class Watched(nn.Module):  # the add's output feeds the neuron and something else
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.act = nn.Conv2d(1, 2, 3, padding=1), _norm("fma", 2, 1), nn.ReLU()

        def forward(self, x):
            y = self.bn(self.conv(x)) + x
            return self.act(y) + y

    class SharedNorm(nn.Module):  # the shortcut's norm also feeds another branch: the skip is folded as it is
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 3, padding=1), _norm("fma", 2, 1)
            self.short, self.short_bn = nn.Conv2d(1, 2, 1), _norm("fma", 2, 2)
            self.act, self.other = nn.ReLU(), nn.ReLU()

        def forward(self, x):
            s = self.short_bn(self.short(x))
            return self.act(self.bn(self.conv(x)) + s) + self.other(s)

    class MixedNorms(SharedNorm):  # a FrozenBatchNorm2d on the shortcut: not of the main norm's kind
        def __init__(self) -> None:
            super().__init__()
            self.short_bn = _norm("mul_add", 2, 2)

        def forward(self, x):
            return self.act(self.bn(self.conv(x)) + self.short_bn(self.short(x)))

    def folds(model: nn.Module) -> list[tuple[str, int]]:
        snn = _convert(model.eval(), x, "dcgs", {"fuse": True})
        return [(m.input_skip, len(m.input_norm)) for m in snn.net.modules() if isinstance(m, SpikingNeuron)]

    assert ("x", 1) not in folds(Watched()) and ("norm", 2) not in folds(Watched())
    assert ("x", 1) in folds(SharedNorm())
    assert folds(MixedNorms()) == [("x", 1)]
    eager = _convert(_resnet(), x, "dcgs", {"fuse": False})
    assert not any(m.input_skip for m in eager.net.modules() if isinstance(m, SpikingNeuron))
