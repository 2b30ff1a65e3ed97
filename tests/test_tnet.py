"""The T-Net module against the dense hourglass it came from."""

import pytest
import torch

import tcompress
from tcompress import methods
from tcompress.tnet import TensorConv2d, TNet

from .conftest import make_hourglass, outputs, scaled_error

METHODS = ("tucker", "mps")
FORMS = ("reconstructed", "factorized")
REDUCED = {"tucker": (1, 2, 2, 1, 4, 5, 2, 3), "mps": (2, 3, 6, 8, 6, 5, 3)}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("form", FORMS)
def test_full_rank_reproduces_the_original(hourglass, x, method, form):
    tnet = tcompress.convert(hourglass, method=method, forward=form).eval()
    # Float32 rounding through a full-rank decomposition and a different summation order.
    assert scaled_error(outputs(tnet, x), outputs(hourglass, x)) <= 1e-5
    assert tnet.summary["relative_error"] <= 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_forward_forms_agree_at_reduced_rank(hourglass, x, method):
    tnet = tcompress.convert(hourglass, method=method, ranks=REDUCED[method]).eval()
    rebuilt = outputs(tnet, x)
    factorized = outputs(tnet.set_forward("factorized"), x)
    assert tnet.forward_form == "factorized"
    assert scaled_error(factorized, rebuilt) <= 1e-5
    # A reduced rank really changes the network.
    assert scaled_error(rebuilt, outputs(hourglass, x)) > 1e-3


@pytest.mark.parametrize("method", METHODS)
def test_parameter_count_is_the_closed_form(hourglass, method):
    ranks = REDUCED[method]
    tnet = tcompress.convert(hourglass, method=method, ranks=ranks)
    dense = sum(p.numel() for p in hourglass.parameters())
    block = sum(c.weight.numel() for _, c in hourglass.block_convs())
    shape = (2, 2, 3, 2, 8, 8, 3, 3)
    factorized = methods.get(method).params(shape, ranks)
    assert sum(p.numel() for p in tnet.parameters()) == dense - block + factorized
    s = tnet.summary
    assert (s["params_before"], s["params_after"]) == (dense, dense - block + factorized)
    assert s["compression_ratio"] == pytest.approx(dense / (dense - block + factorized))


def test_block_convs_are_tensor_views(hourglass):
    tnet = tcompress.convert(hourglass, ranks=REDUCED["tucker"])
    convs = tnet.tensor_convs()
    assert len(convs) == 24 and all(isinstance(c, TensorConv2d) for c in convs)
    assert [c.index for c in convs] == [i for i, _ in hourglass.block_convs()]
    assert not any(k.endswith("convs.0.weight") and "levels" in k for k in tnet.state_dict())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("form", FORMS)
def test_gradients_reach_every_factor_and_training_changes_outputs(hourglass, x, method, form):
    tnet = tcompress.convert(hourglass, method=method, ranks=REDUCED[method], forward=form)
    tnet.train()
    opt = torch.optim.Adam(tnet.parameters(), lr=1e-2)
    before = outputs(tnet.eval(), x)
    tnet.train()
    loss = sum(o.square().mean() for o in tnet(x))
    loss.backward()
    for name, p in tnet.tensor.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    after = outputs(tnet.eval(), x)
    assert scaled_error(after, before) > 1e-4


def test_training_the_tnet_leaves_the_source_model_alone(hourglass, x):
    ref = outputs(hourglass, x)
    tnet = tcompress.convert(hourglass).train()
    opt = torch.optim.SGD(tnet.parameters(), lr=0.1)
    sum(o.sum() for o in tnet(x)).backward()
    opt.step()
    assert scaled_error(outputs(hourglass, x), ref) == 0


def test_train_and_eval_switch_batchnorm(hourglass, x):
    tnet = tcompress.convert(hourglass)
    tnet.train()
    assert all(m.training for m in tnet.modules())
    bn = tnet.net.stem["conv"][1]
    before = bn.running_mean.clone()
    with torch.no_grad():
        tnet(x)
    assert not torch.equal(bn.running_mean, before)
    tnet.eval()
    assert not any(m.training for m in tnet.modules())
    assert scaled_error(outputs(tnet, x), outputs(tnet, x)) == 0


def test_inner_network_alone_is_refused(hourglass, x):
    tnet = tcompress.convert(hourglass)
    with pytest.raises(RuntimeError, match="call the T-Net itself"):
        tnet.net(x)


def test_unknown_forward_form(hourglass):
    with pytest.raises(ValueError, match="forward form 'fast' is unknown"):
        tcompress.convert(hourglass, forward="fast")


def test_float64_source_stays_float64(x):
    model = make_hourglass().double()
    tnet = tcompress.convert(model, ranks=REDUCED["tucker"])
    assert all(p.dtype == torch.float64 for p in tnet.parameters())
    full = tcompress.convert(model, method="mps").eval()
    assert scaled_error(outputs(full, x.double()), outputs(model, x.double())) <= 1e-12


@pytest.mark.parametrize("refine, better", [(0, False), (3, True)])
def test_hooi_refinement_lowers_the_error(hourglass, refine, better):
    tnet = tcompress.convert(hourglass, ranks=REDUCED["tucker"], refine=refine)
    errors = tnet.summary["errors"]
    assert len(errors) == refine + 1
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:]))
    assert tnet.summary["relative_error"] == pytest.approx(errors[-1])
    W = torch.stack([c.weight.transpose(0, 1) for _, c in hourglass.block_convs()]).view(
        2, 2, 3, 2, 8, 8, 3, 3
    )
    with torch.no_grad():
        direct = float((tnet.full_tensor() - W).norm() / W.norm())
    assert direct == pytest.approx(errors[-1], rel=1e-4)


def test_refine_is_tucker_only(hourglass):
    with pytest.raises(
        tcompress.TcompressError,
        match=r"^refine=2 does not apply to mps \(TT-SVD has no iterative refinement\); "
        "expected 0$",
    ):
        tcompress.convert(hourglass, method="mps", refine=2)


def test_is_a_plain_module(hourglass):
    tnet = tcompress.convert(hourglass)
    assert isinstance(tnet, TNet) and isinstance(tnet, torch.nn.Module)
    assert "method=tucker" in repr(tnet)


def test_half_precision_weights_are_decomposed_in_float32_and_kept_in_their_dtype(x):
    model = make_hourglass().to(torch.bfloat16)
    tnet = tcompress.convert(model, method="mps", ranks=4)
    assert all(p.dtype == torch.bfloat16 for p in tnet.parameters())
    assert tnet.summary["dtype"] == "bfloat16"
    assert 0 < tnet.summary["relative_error"] < 1


def test_convert_decomposes_w_as_tucker_does(hourglass):
    # convert takes W's f_out Gram from the source kernels; the decomposition is W's HOSVD.
    from tcompress.decompose import tucker
    from tcompress.stacking import stack_hourglass

    ranks = REDUCED["tucker"]
    tnet = tcompress.convert(hourglass, method="tucker", ranks=ranks, balance=False)
    own = tucker(stack_hourglass(hourglass.state_dict(), hourglass.config), ranks)
    assert abs(tnet.summary["relative_error"] - own.relative_error) <= 1e-6
    for u, v in zip(tnet.tensor.factors, own.factors):
        assert torch.allclose(u @ u.T, v @ v.T, atol=1e-5)
