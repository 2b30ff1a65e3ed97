"""Every pass against the model it came from: full and reduced rank, Tucker and MPS."""

import pytest
import torch
from torch import nn

import tcompress
from tcompress.models import StackedHourglass
from tcompress.passes import ChannelAffine, factorize, fold_batchnorm, materialize
from tcompress.tnet import TensorConv2d

from .conftest import make_hourglass, outputs, scaled_error

RANKS = {
    ("tucker", "full"): None,
    ("tucker", "reduced"): (1, 2, 2, 1, 4, 5, 2, 3),
    ("mps", "full"): None,
    ("mps", "reduced"): (2, 3, 6, 8, 6, 5, 3),
}
CASES = list(RANKS)


def tnet_for(hourglass, method, rank):
    return tcompress.convert(hourglass, method=method, ranks=RANKS[(method, rank)]).eval()


@pytest.mark.parametrize("method, rank", CASES)
def test_materialize_is_the_dense_hourglass_of_the_tnet(hourglass, x, method, rank):
    tnet = tnet_for(hourglass, method, rank)
    dense = materialize(tnet).eval()
    assert isinstance(dense, StackedHourglass)
    assert not any(isinstance(m, TensorConv2d) for m in dense.modules())
    # Same kernels, same convolutions: only float rounding of the rebuild differs.
    assert scaled_error(outputs(dense, x), outputs(tnet, x)) <= 1e-6
    # It has the dense layout: it loads into a fresh hourglass strictly.
    StackedHourglass(**dense.config.to_dict()).load_state_dict(dense.state_dict(), strict=True)
    if rank == "full":
        assert scaled_error(outputs(dense, x), outputs(hourglass, x)) <= 1e-5


@pytest.mark.parametrize("method, rank", CASES)
def test_factorize_uses_plain_convs_with_shared_factors(hourglass, x, method, rank):
    tnet = tnet_for(hourglass, method, rank)
    plain = factorize(tnet).eval()
    assert not any(isinstance(m, TensorConv2d) for m in plain.modules())
    assert scaled_error(outputs(plain, x), outputs(tnet, x)) <= 1e-5
    blocks = [c for _, c in _block_convs(plain)]
    assert len(blocks) == 24
    assert all(len(b) == (3 if method == "tucker" else 2) for b in blocks)
    if method == "tucker":
        assert len({id(b[0].weight) for b in blocks}) == 1  # U5^T shared
        assert len({id(b[2].weight) for b in blocks}) == 1  # U6 shared
        assert len({id(b[1].weight) for b in blocks}) == 24  # per-layer cores
    else:
        assert len({id(b[0].weight) for b in blocks}) == 24
        assert len({id(b[1].weight) for b in blocks}) == 1
    # Shared factors counted once: the closed form of the factorized block weights.
    unique = {id(c.weight): c.weight.numel() for b in blocks for c in b}
    r5, r6 = blocks[0][0].out_channels, blocks[0][-1].in_channels
    if method == "tucker":
        expected = 8 * r5 + 24 * r6 * r5 * 3 * 3 + r6 * 8
    else:
        expected = 24 * r5 * 8 + 8 * r5 * 3 * 3
    assert sum(unique.values()) == expected


def _block_convs(model):
    for s, hourglass in enumerate(model.hourglasses):
        for d, level in enumerate(hourglass.levels):
            for p, block in enumerate((level.skip, level.down, level.up)):
                for c, conv in enumerate(block.convs):
                    yield (s, d, p, c), conv


@pytest.mark.parametrize("method, rank", CASES)
@pytest.mark.parametrize("rewrite", [materialize, factorize])
def test_fold_batchnorm_after_either_rewrite(hourglass, x, method, rank, rewrite):
    tnet = tnet_for(hourglass, method, rank)
    folded = fold_batchnorm(rewrite(tnet))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not folded.training
    assert scaled_error(outputs(folded, x), outputs(tnet, x)) <= 1e-5
    affines = [m for m in folded.modules() if isinstance(m, ChannelAffine)]
    if rewrite is factorize and method in ("mps", "tucker"):
        # The shared h x w conv (MPS) and the shared 1x1 U6 (Tucker) keep one weight each; the
        # BatchNorms after them become per-channel affines.
        assert len(affines) == 24
    else:
        assert affines == []


def test_fold_batchnorm_on_the_dense_hourglass_and_untouched_source(hourglass, x):
    before = {k: v.clone() for k, v in hourglass.state_dict().items()}
    folded = fold_batchnorm(hourglass)
    assert scaled_error(outputs(folded, x), outputs(hourglass, x)) <= 1e-5
    assert all(torch.equal(v, hourglass.state_dict()[k]) for k, v in before.items())


def test_stride_padding_and_dilation_are_preserved(x):
    """A block conv with another geometry keeps it through every rewrite."""
    model = make_hourglass(n_stacks=1)
    tnet = tcompress.convert(model, ranks=(1, 2, 3, 2, 6, 6, 3, 3)).eval()
    for conv in tnet.tensor_convs():
        if conv.index == (0, 0, 0, 1):
            conv.padding, conv.dilation = (2, 2), (2, 2)
    ref = outputs(tnet, x)
    for rewrite in (materialize, factorize):
        plain = rewrite(tnet).eval()
        convs = [
            m
            for m in plain.hourglasses[0].levels[0].skip.convs[1].modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
        ]
        assert [(c.padding, c.dilation, c.stride) for c in convs] == [((2, 2), (2, 2), (1, 1))]
        assert scaled_error(outputs(plain, x), ref) <= 1e-5


class _Declared(nn.Module):
    """A module the fold knows nothing about but its ``bn_after_conv``: dotted child names."""

    bn_after_conv = (("body.0", "norms.0"),)

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.ModuleList([nn.Conv2d(3, 4, 3, padding=1, bias=False)])
        self.norms = nn.ModuleList([nn.BatchNorm2d(4)])

    def forward(self, x):
        return torch.relu(self.norms[0](self.body[0](x)))


def test_fold_batchnorm_reads_only_declared_pairs(x):
    import inspect

    import tcompress.passes.fold_bn as fold_bn

    assert "tcompress.models" not in inspect.getsource(fold_bn)  # no concrete model class
    model = _Declared()
    with torch.no_grad():
        model.norms[0].running_mean.uniform_(-0.1, 0.1)
        model.norms[0].running_var.uniform_(0.5, 1.5)
        model.norms[0].weight.uniform_(0.5, 1.5)
    model.eval()
    folded = fold_batchnorm(model)
    assert isinstance(folded.norms[0], nn.Identity) and folded.body[0].bias is not None
    with torch.no_grad():
        assert scaled_error([folded(x)], [model(x)]) <= 1e-5
