"""The whitened start: weighting W's kernel modes by the data's moments, decomposing, and taking the
weights back off the factors gives a decomposition of W itself, exact at full rank, that is
optimal for the block outputs where the moments are separable and shared."""

import pytest
import torch
from click.testing import CliRunner

from tcompress import convert
from tcompress.cli import main
from tcompress.methods import get
from tcompress.methods.base import RankSpec
from tcompress.models import StackedHourglass
from tcompress.passes.data_aware import BlockStatistics, block_statistics, output_error
from tcompress.passes.whiten import whitening
from tcompress.serialize import load
from tcompress.stacking import stack_hourglass

from .conftest import make_hourglass, outputs, scaled_error

NAMES = [
    StackedHourglass.block_key(index)[: -len(".weight")]
    for index, _ in make_hourglass().block_convs()
]


def images(n=4, size=32, seed=3):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def separable_statistics(f_in, f_out, h, w, layers=1, seed=0, only_channels=False):
    """Moments C (x) S_h (x) S_w shared by every layer, strongly anisotropic in the channels, and
    BatchNorm scales shared too: the case where whitening is exact (``only_channels``: S_h, S_w
    and the scales are identities)."""
    g = torch.Generator().manual_seed(seed)

    def moment(n, spread):
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        return q @ torch.diag(torch.logspace(0, -spread, n, dtype=torch.float64)) @ q.T

    spread = 0 if only_channels else 1
    M = torch.kron(torch.kron(moment(f_in, 3), moment(h, spread)), moment(w, spread))
    scales = torch.rand(f_out, generator=g, dtype=torch.float64) + 0.5
    if only_channels:
        scales = torch.ones_like(scales)
    return BlockStatistics(
        M.expand(layers, -1, -1).float().contiguous(), scales.expand(layers, -1).float(), 1
    )


def test_the_weights_undone_on_a_full_rank_decomposition_give_w_back():
    W = torch.randn(2, 3, 6, 5, 3, 3, generator=torch.Generator().manual_seed(0))
    stats = separable_statistics(6, 5, 3, 3, layers=6)
    weights = whitening(stats, W.shape)
    assert weights.modes == [2, 3, 4, 5]
    assert whitening(stats, W.shape, channels_only=True).modes == [2, 3]
    names = ("a", "b", "f_in", "f_out", "h", "w")
    for method in ("tucker", "mps"):
        full = get(method).resolve(RankSpec.parse(None), W.shape, names).ranks
        tensor = get(method).decompose(weights.apply(W), full, n_iter=0, seed=0).tensor
        weights.undo(tensor)
        torch.testing.assert_close(tensor.full(), W, atol=1e-4, rtol=1e-4)


def test_the_weighted_norm_is_the_output_error_when_the_moments_are_separable():
    W = torch.randn(1, 2, 1, 1, 6, 5, 3, 3, generator=torch.Generator().manual_seed(2))
    stats = separable_statistics(6, 5, 3, 3, layers=2)
    total = output_error(torch.zeros_like(W), W, stats)[1]
    weighted = whitening(stats, W.shape).apply(W).square().sum()
    assert float(weighted) == pytest.approx(float(total), rel=1e-4)


def test_whitened_truncation_is_optimal_for_the_outputs_when_the_moments_are_separable():
    # One layer, f_in truncated, the inputs anisotropic in the channels only: the whitened SVD
    # keeps the directions of the largest output error, which the plain one (by weight norm
    # alone) does not.
    W = torch.randn(1, 1, 1, 1, 12, 7, 3, 3, generator=torch.Generator().manual_seed(1))
    stats = separable_statistics(12, 7, 3, 3, only_channels=True)
    ranks = (1, 1, 1, 1, 4, 7, 3, 3)
    weights = whitening(stats, W.shape, ranks)
    assert weights.modes == [4]  # only the truncated kernel mode is weighted
    tucker = get("tucker")
    with torch.no_grad():
        plain = tucker.decompose(W, ranks, n_iter=0, seed=0).tensor.full()
        tensor = tucker.decompose(weights.apply(W), ranks, n_iter=0, seed=0).tensor
        weights.undo(tensor)
        whitened = tensor.full()
    error_plain, _ = output_error(plain, W, stats)
    error_white, _ = output_error(whitened, W, stats)
    # The optimum: the tail energy of the whitened f_in unfolding with the f_out weights.
    full = whitening(stats, W.shape)
    unfolded = torch.movedim(full.apply(W), 4, 0).reshape(12, -1).double()
    tail = torch.linalg.svdvals(unfolded)[4:].square().sum()
    assert float(error_white) == pytest.approx(float(tail), rel=1e-3)
    assert float(error_white) < 0.5 * float(error_plain)


def test_convert_with_whiten_records_the_modes_and_stays_exact_at_full_rank(hourglass, x):
    tnet = convert(hourglass, "tucker", "1,2,2,2,4,8,2,3", whiten=[images()])
    summary = tnet.summary
    assert summary["whitened"] == ["f_in", "h"]  # the modes whose rank is below their size
    W = stack_hourglass(hourglass.state_dict(), hourglass.config)
    error = float(torch.linalg.norm(tnet.tensor.full().detach() - W) / torch.linalg.norm(W))
    assert summary["relative_error"] == pytest.approx(error, rel=1e-5)
    assert summary["errors"] == [pytest.approx(error, rel=1e-5)]

    # A train's bonds truncate every mode: all four are weighted, and undone exactly.
    full = convert(hourglass, "mps", whiten=[images()])
    assert full.summary["whitened"] == ["f_in", "f_out", "h", "w"]
    assert scaled_error(outputs(full.eval(), x), outputs(hourglass, x)) < 1e-5


def test_whitening_lowers_the_output_error_of_a_channel_truncation(hourglass):
    batches = [images(8)]
    stats = block_statistics(hourglass, NAMES, batches)
    W = stack_hourglass(hourglass.state_dict(), hourglass.config)
    ranks = "2,2,3,2,3,3,3,3"
    plain = convert(hourglass, "tucker", ranks).tensor.full().detach()
    white = convert(hourglass, "tucker", ranks, whiten=batches).tensor.full().detach()
    assert output_error(white, W, stats)[0] < output_error(plain, W, stats)[0]


def test_whiten_refuses_a_layerwise_method(hourglass):
    with pytest.raises(ValueError, match="layerwise-tucker decomposes each layer on its own"):
        convert(hourglass, "layerwise-tucker", "4,4", whiten=[images()])


def test_cli_whiten_then_refine_gathers_the_images_once(tmp_path):
    checkpoint = tmp_path / "hg.pth"
    torch.save(make_hourglass().state_dict(), checkpoint)
    out = tmp_path / "t.pt"
    args = ["convert", str(checkpoint), "--ranks", "f_in=4,f_out=4", "-o", str(out)]
    data = ["--whiten", "synthetic", "--refine-data", "synthetic", "--refine-samples", "2"]
    r = CliRunner().invoke(main, [*args, *data])
    assert r.exit_code == 0, r.output
    assert "weighted on the data in modes f_in, f_out (whitened)" in r.output
    summary = load(out).meta["summary"]
    assert summary["whitened"] == ["f_in", "f_out"]
    assert summary["data_aware"]["images"] == 2
