"""An eval-mode BatchNorm folded into the native neuron step (methods/snn/input_norm.py): the
folded terms reproduce torch's kernel bit for bit, the graph rewrite is exactly the safe
pattern, and a converted network gives the same outputs and counts folded or not."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from snnbench.methods.snn import fused, input_norm, native_steps
from snnbench.methods.snn.neurons import SpikingNeuron
from native_step_cases import step_from_fixed_state


#: native loops on one torch thread, checked terms forgotten (conftest.folded_norms)
pytestmark = pytest.mark.usefixtures("folded_norms")


def _bits(a: torch.Tensor) -> torch.Tensor:
    return a.contiguous().view(torch.int32)


def _batch_norm(channels: int, seed: int, affine: bool = True, eps: float = 1e-5) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels, affine=affine, eps=eps)
    bn.running_mean.copy_(torch.randn(channels, generator=g) * 3)
    bn.running_var.copy_(torch.rand(channels, generator=g) * 4 + 1e-3)
    if affine:
        bn.weight.data.copy_(torch.randn(channels, generator=g))
        bn.bias.data.copy_(torch.randn(channels, generator=g))
    return bn.eval().requires_grad_(False)  # as in a converted network's simulation (no autograd)


def _frozen(channels: int, seed: int) -> nn.Module:
    """torchvision's FrozenBatchNorm2d (detection backbones) with the statistics of _batch_norm."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    frozen, bn = FrozenBatchNorm2d(channels), _batch_norm(channels, seed)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(frozen, name).copy_(getattr(bn, name).detach())
    return frozen


def _apply(terms: tuple[torch.Tensor, torch.Tensor, str], x: torch.Tensor) -> torch.Tensor:
    alpha, beta, kind = terms
    y = torch.empty_like(x)
    input_norm._library().bn_apply(x.shape[0], x.shape[1], x[0, 0].numel(), x.data_ptr(), alpha.data_ptr(),
                                   beta.data_ptr(), int(kind == "fma"), y.data_ptr())
    return y


@pytest.mark.parametrize("channels,shape,affine,eps", [(16, (64, 16, 28, 28), True, 1e-5), (32, (8, 32, 14, 14), True, 1e-3),
                                                        (3, (5, 3, 7, 9), False, 1e-5), (10, (4, 10, 1, 1), True, 0.1)])
def test_folded_terms_give_torchs_batch_norm_bit_for_bit(channels, shape, affine, eps):
    bn = _batch_norm(channels, seed=channels, affine=affine, eps=eps)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 10
    x.view(-1)[:4] = torch.tensor([0.0, -0.0, 1e-30, -3e20])
    terms = input_norm.affine_of(bn)
    assert terms is not None and terms[2] == "fma"
    with torch.no_grad():
        assert torch.equal(_bits(_apply(terms, x)), _bits(bn(x)))


@pytest.mark.parametrize("channels,shape", [(16, (64, 16, 28, 28)), (96, (4, 96, 8, 8)), (10, (4, 10, 1, 1))])
def test_folded_terms_give_frozen_batch_norm_bit_for_bit(channels, shape):
    frozen = _frozen(channels, seed=channels)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 10
    x.view(-1)[:4] = torch.tensor([0.0, -0.0, 1e-30, -3e20])
    terms = input_norm.affine_of(frozen)
    assert terms is not None and terms[2] == "mul_add"
    assert torch.equal(_bits(_apply(terms, x)), _bits(frozen(x)))
    fused_rule = (terms[0], terms[1], "fma")  # one rounding where FrozenBatchNorm2d rounds twice: differs
    assert not torch.equal(_bits(_apply(fused_rule, x)), _bits(frozen(x)))


def test_folded_terms_by_hand():
    bn = nn.BatchNorm2d(1, eps=0.0).eval()  # mean 1, var 4, weight 3, bias 0.5: y = 1.5 (x - 1) + 0.5
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    bn.weight.data.fill_(3.0)
    bn.bias.data.fill_(0.5)
    bn.requires_grad_(False)
    alpha, beta, kind = input_norm.affine_of(bn)
    assert alpha.tolist() == [1.5] and beta.tolist() == [-1.0] and kind == "fma"
    assert _apply((alpha, beta, kind), torch.tensor([[[[0.0, 1.0, 3.0]]]])).tolist() == [[[[-1.0, 0.5, 3.5]]]]


def test_terms_that_do_not_round_as_torch_are_refused_with_one_warning(monkeypatch, caplog):
    # two roundings where torch's kernel rounds once: the probe must notice
    monkeypatch.setattr(input_norm, "SOURCE", input_norm.SOURCE.replace("fmaf(x[i], alpha[c], beta[c])",
                                                                        "x[i] * alpha[c] + beta[c]"))
    with caplog.at_level("WARNING", logger="snnbench.methods.snn.input_norm"):
        assert input_norm.affine_of(_batch_norm(16, seed=2)) is None
        assert input_norm.affine_of(_batch_norm(8, seed=3)) is None
    assert sum("does not round as the folded step would" in r.message for r in caplog.records) == 1


def test_terms_follow_the_module_and_refuse_what_is_not_eval_float32():
    bn = _batch_norm(4, seed=4)
    first = input_norm.affine_of(bn)
    assert input_norm.affine_of(bn) is first  # checked once per state of the module's tensors
    bn.running_var.mul_(2)
    second = input_norm.affine_of(bn)
    assert second is not first and not torch.equal(second[0], first[0])
    assert input_norm.affine_of(_batch_norm(4, seed=4).train()) is None
    assert input_norm.affine_of(_batch_norm(4, seed=4).double()) is None
    assert input_norm.affine_of(nn.BatchNorm2d(4, track_running_stats=False).eval()) is None


STEP_CASES = list(itertools.product(["differential", "rate"], [("mt", 4), ("if", 1)], [True, False],
                                    ["BatchNorm2d", "FrozenBatchNorm2d"]))


@pytest.mark.parametrize("coding,rule_n,first,norm", STEP_CASES)
def test_the_affine_step_equals_the_step_of_the_normalised_input(coding, rule_n, first, norm):
    rule, n = rule_n
    g = torch.Generator().manual_seed(9)
    bn = _batch_norm(6, seed=6) if norm == "BatchNorm2d" else _frozen(6, seed=6)
    x = torch.randn(3, 6, 5, 7, generator=g)
    theta = (torch.rand(1, 6, 1, 1, generator=g) + 0.5).expand(3, 6, 5, 7).contiguous()
    signature = fused.StepSignature.of(coding, rule, n, True, None, None)
    terms = input_norm.affine_of(bn)
    with torch.no_grad():
        normalised = bn(x)

    def run(inp, affine):
        return step_from_fixed_state(signature, inp, theta, coding, first, affine)

    for folded, plain in zip(run(x, terms), run(normalised, None)):
        assert torch.equal(_bits(folded), _bits(plain))


def _convert(ann: nn.Module, x: torch.Tensor, method: str, settings: dict):
    from snnbench.methods.base import ConversionContext
    from snnbench.methods.snn.stats import collect_stats
    from snnbench.plugins import create_method

    m = create_method(method, settings)
    ctx = ConversionContext(T=4, example=x, device=x.device, calib_batches=lambda: iter([x]))
    return m.convert(ann, collect_stats(ann, [x], m.stat_kinds(ann, ctx)), ctx)


def _ann() -> nn.Module:
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 3))
    for bn in (ann[1], ann[4]):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.2, 2.0)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    return ann.eval()


def _simulate(snn, x: torch.Tensor, T: int = 4):
    from snnbench.counting import OpCounter

    with torch.inference_mode():
        snn.reset()
        plain = [o.clone() for o in snn.simulate(x, T)]
        snn.reset()
        with OpCounter(snn, T) as counter:
            counted = [o.clone() for o in snn.simulate(x, T)]
            counter.add_samples(len(x))
        return plain, counted, counter.summary()


@pytest.mark.parametrize("method", ["dcgs", "rate"])
def test_a_folded_network_gives_the_unfolded_outputs_and_counts(method, monkeypatch):
    x = torch.rand(5, 1, 12, 12)
    folded = _convert(_ann(), x, method, {"fuse": True})
    neurons = [m for m in folded.net.modules() if isinstance(m, SpikingNeuron)]
    assert [bool(m.input_norm) for m in neurons] == [True, True]
    assert not any(n.op == "call_module" and isinstance(folded.net.get_submodule(n.target), nn.BatchNorm2d)
                   for n in folded.net.graph.nodes)
    assert {name for name, _ in folded.net.named_modules()} >= {"1", "4"}  # the modules stay at their paths
    steps = []
    real = native_steps.prepare
    monkeypatch.setattr(native_steps, "prepare", lambda *a, **k: steps.append(a[9] is not None) or real(*a, **k))
    result = _simulate(folded, x)
    # two folded neurons, both runs, steps 1 and 2 (the bias pass runs torch's kernel; steps 3 and 4
    # the plan step 2 leaves, with the same terms: tests/test_native_plan.py)
    assert sum(steps) == 2 * 2 * 2
    monkeypatch.setattr(input_norm, "install", lambda gm, neuron_type: 0)
    reference = _simulate(_convert(_ann(), x, method, {"fuse": True}), x)
    eager = _simulate(_convert(_ann(), x, method, {"fuse": False}), x)
    for other in (reference, eager):
        for a, b in zip(result[0] + result[1], other[0] + other[1], strict=True):
            assert torch.equal(_bits(a), _bits(b))
        assert result[2] == other[2]


def test_where_the_fold_does_not_run_the_neuron_normalises_with_torch():
    x = torch.rand(5, 1, 12, 12)
    snn = _convert(_ann(), x, "rate", {"fuse": True})
    reference = _simulate(snn, x)[0]
    torch.set_num_threads(2)  # inductor steps: the neuron applies the BatchNorm itself
    try:
        assert all(torch.equal(_bits(a), _bits(b)) for a, b in zip(_simulate(snn, x)[0], reference))
    finally:
        torch.set_num_threads(1)
    neuron = next(m for m in snn.net.modules() if isinstance(m, SpikingNeuron) and m.input_norm)
    probe = torch.rand(5, 4, 12, 12)
    assert input_norm.pending(neuron, probe) is None  # autograd on: the BatchNorm's parameters require grad
    with torch.inference_mode():
        assert input_norm.pending(neuron, probe) is not None
        neuron.input_bias = torch.zeros(1, 4, 1, 1)  # SNN Calibration's bias is added after the BatchNorm
        assert input_norm.pending(neuron, probe) is None
        neuron.input_bias = None
        assert input_norm.pending(neuron, probe.transpose(2, 3)) is None
        assert input_norm.pending(neuron, probe[:, :3]) is None
        assert input_norm.pending(neuron, torch.rand(5, 4, 2, 2)) is None  # channel rows of 4: torch's kernel
        assert input_norm.pending(neuron, torch.rand(5, 4, 3, 3)) is not None


def test_install_folds_only_the_safe_pattern():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8)

    class TwoUsers(nn.Module):  # the BatchNorm's output also feeds the residual sum
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.act = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU()

        def forward(self, x):
            y = self.bn(self.conv(x))
            return self.act(y) + y

    assert not any(m.input_norm for m in _convert(TwoUsers().eval(), x, "dcgs", {"fuse": True}).net.modules()
                   if isinstance(m, SpikingNeuron))
    x = torch.rand(2, 1, 12, 12)
    eager = _convert(_ann(), x, "dcgs", {"fuse": False})
    assert not any(m.input_norm for m in eager.net.modules() if isinstance(m, SpikingNeuron))
    framed = _convert(_ann(), x, "dcgs", {"fuse": True, "compile_frame": True})
    assert not any(m.input_norm for m in framed.net.modules() if isinstance(m, SpikingNeuron))


def test_a_network_with_frozen_batch_norms_folds_them_and_gives_the_same_outputs(monkeypatch):
    from torchvision.ops.misc import FrozenBatchNorm2d

    x = torch.rand(4, 1, 12, 12)

    def ann() -> nn.Module:
        model = _ann()
        for index in (1, 4):
            model[index] = _frozen(4, seed=index)
        return model

    folded = _convert(ann(), x, "dcgs", {"fuse": True})
    norms = [m.input_norm[0] for m in folded.net.modules() if isinstance(m, SpikingNeuron) and m.input_norm]
    assert len(norms) == 2 and all(type(m) is FrozenBatchNorm2d for m in norms)
    result = _simulate(folded, x)
    monkeypatch.setattr(input_norm, "install", lambda gm, neuron_type: 0)
    reference = _simulate(_convert(ann(), x, "dcgs", {"fuse": True}), x)
    for a, b in zip(result[0] + result[1], reference[0] + reference[1], strict=True):
        assert torch.equal(_bits(a), _bits(b))
    assert result[2] == reference[2]


def test_terms_that_cannot_be_built_leave_torchs_kernel_with_one_warning(monkeypatch, caplog):
    def no_compiler(code):
        raise RuntimeError("no C compiler")

    monkeypatch.setattr(native_steps, "_build", no_compiler)
    with caplog.at_level("WARNING"):
        assert input_norm.affine_of(_batch_norm(4, seed=1)) is None
        assert input_norm.affine_of(_batch_norm(4, seed=2)) is None
    assert sum("native batch-norm terms could not be built" in r.getMessage() for r in caplog.records) == 1
