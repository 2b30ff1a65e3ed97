"""The dense-network reader's shortcuts give what the generic paths give: ``copy_meta_network``
a deep copy, ``assign_state`` ``load_state_dict(strict=True, assign=True)``, the finite check its
verdict; the shared meta network of a layout stays untouched by conversions."""

import copy

import pytest
import torch
from torch import nn

import tcompress
from tcompress.errors import CheckpointError
from tcompress.layouts import ARCHITECTURES, build
from tcompress.source import assign_state, copy_meta_network, read_dense, read_source
from tcompress.stacking import stack_kernels
from tcompress.tnet import TensorConv2d

from .conftest import make_hourglass


def assert_same_copy(a: nn.Module, b: nn.Module, original: nn.Module) -> None:
    """``b`` is built like ``a`` (a deep copy of ``original``) and shares nothing mutable with
    ``original``."""
    assert type(a) is type(b) and b is not original
    assert list(vars(a)) == list(vars(b))
    for key, x in vars(a).items():
        y, o = vars(b)[key], vars(original)[key]
        if key == "_modules":
            assert list(x) == list(y)
            for name in x:
                assert (x[name] is None) == (y[name] is None)
                if x[name] is not None:
                    assert_same_copy(x[name], y[name], o[name])
        elif key in ("_parameters", "_buffers"):
            assert list(x) == list(y)
            for name, u in x.items():
                v = y[name]
                if u is None:
                    assert v is None
                    continue
                assert type(u) is type(v) and v is not o[name]
                assert (u.shape, u.stride(), u.dtype, u.device, u.requires_grad) == (
                    v.shape,
                    v.stride(),
                    v.dtype,
                    v.device,
                    v.requires_grad,
                )
        else:
            assert type(x) is type(y) and x == y, key
            if isinstance(y, dict | set | list):
                assert y is not o


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_copy_of_a_meta_network_is_a_deep_copy(name):
    dense = build(name, ARCHITECTURES[name].config())
    copied = copy_meta_network(dense)
    assert_same_copy(copy.deepcopy(dense), copied, dense)
    next(copied.parameters()).requires_grad_(False)
    assert next(dense.parameters()).requires_grad


def test_copy_keeps_a_shared_module_shared_and_hooks():
    with torch.device("meta"):
        conv = nn.Conv2d(2, 2, 3)
        net = nn.Sequential(conv, nn.ReLU(), conv)
    net[1].register_forward_hook(lambda module, args, out: out)
    copied = copy_meta_network(net)
    assert copied[0] is copied[2] and copied[0] is not conv
    assert copied[0].weight is copied[2].weight and copied[0].weight is not conv.weight
    assert len(copied[1]._forward_hooks) == 1
    assert copied[1]._forward_hooks is not net[1]._forward_hooks


def test_copy_of_a_network_with_values_is_deepcopy():
    net = make_hourglass()
    copied = copy_meta_network(net)
    for (k, a), (_, b) in zip(net.state_dict().items(), copied.state_dict().items()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), k


def _assigned(net: nn.Module) -> list:
    return [
        (k, type(v).__name__, v.data_ptr(), v.requires_grad, v.dtype, v.shape)
        for k, v in [*net.named_parameters(), *net.named_buffers()]
    ]


def test_assign_state_is_load_state_dict_assign():
    state = make_hourglass().state_dict()
    dense = read_source(state).dense
    ours, theirs = copy_meta_network(dense), copy_meta_network(dense)
    frozen = "stem.conv.0.weight"
    for net in (ours, theirs):
        net.get_parameter(frozen).requires_grad_(False)
    assign_state(ours, state)
    theirs.load_state_dict(state, strict=True, assign=True)
    assert _assigned(ours) == _assigned(theirs)
    assert not ours.get_parameter(frozen).requires_grad
    assert all(isinstance(p, nn.Parameter) for p in ours.parameters())


def test_assign_state_errors_are_load_state_dict_errors():
    state = make_hourglass().state_dict()
    dense = read_source(state).dense
    missing = {k: v for k, v in state.items() if k != "stem.conv.0.weight"}
    extra = {**state, "stem.extra": torch.zeros(1)}
    wrong = {**state, "stem.conv.0.weight": torch.zeros(1)}
    for bad in (missing, extra, wrong):
        with pytest.raises(RuntimeError) as theirs:
            copy_meta_network(dense).load_state_dict(bad, strict=True, assign=True)
        with pytest.raises(RuntimeError) as ours:
            assign_state(copy_meta_network(dense), bad)
        assert str(ours.value) == str(theirs.value)


def test_assign_state_runs_load_hooks():
    with torch.device("meta"):
        net = nn.Sequential(nn.Conv2d(2, 2, 3))
    seen = []
    net[0].register_load_state_dict_post_hook(lambda module, keys: seen.append(module))
    assign_state(net, {"0.weight": torch.ones(2, 2, 3, 3), "0.bias": torch.zeros(2)})
    assert seen == [net[0]] and torch.equal(net[0].weight, torch.ones(2, 2, 3, 3))


def test_the_shared_layout_network_is_never_changed():
    model = make_hourglass()
    dense = read_source(model).dense
    before = [(k, v.shape, v.is_meta) for k, v in dense.state_dict().items()]
    tcompress.convert(model, "tucker", (2, 2, 2, 2, 4, 4, 2, 2))
    tcompress.convert(model, "mps", 4, forward="factorized")
    read_dense(model.state_dict())
    again = read_source(model).dense
    assert again is dense
    assert [(k, v.shape, v.is_meta) for k, v in dense.state_dict().items()] == before
    assert not any(isinstance(m, TensorConv2d) for m in dense.modules())


def test_conversion_keeps_the_thread_count():
    threads = torch.get_num_threads()
    tcompress.convert(make_hourglass(), "tucker", (2, 2, 2, 2, 4, 4, 2, 2))
    assert torch.get_num_threads() == threads


def test_finite_check_verdicts():
    state = make_hourglass().state_dict()
    key = "hourglasses.0.levels.0.skip.bns.0.running_var"
    for value, word in ((float("nan"), "NaN"), (float("inf"), "Inf")):
        bad = dict(state)
        bad[key] = bad[key].clone()
        bad[key][1] = value
        with pytest.raises(CheckpointError) as info:
            read_source(bad)
        assert str(info.value) == (
            f"checkpoint 'state_dict': '{key}' has 1 {word} value(s); expected finite weights"
        )
    # Finite values whose float32 sum overflows: refused by neither check.
    large = dict(state)
    large[key] = torch.full_like(state[key], 3e38)
    read_source(large)


def test_large_stacks_are_exact():
    f = 64
    kernels = [torch.randn(f, f, 3, 3) for _ in range(240)]  # 35 MB, the paper W's order
    W = stack_kernels(kernels, (len(kernels),))
    assert all(torch.equal(W[i].transpose(0, 1), k) for i, k in enumerate(kernels))
