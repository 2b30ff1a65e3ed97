"""Data-aware refinement: the objective is the normalised block-output error it claims to be, and
fitting the factors lowers it without breaking anything else."""

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from tcompress import convert
from tcompress.cli import main
from tcompress.models import StackedHourglass
from tcompress.passes.data_aware import block_statistics, output_error, refine_to_data
from tcompress.serialize import load
from tcompress.stacking import stack_hourglass

from .conftest import make_hourglass, outputs, scaled_error

RANKS = "1,2,2,2,4,4,2,2"
NAMES = [
    StackedHourglass.block_key(index)[: -len(".weight")]
    for index, _ in make_hourglass().block_convs()
]


def images(n=4, size=32, seed=3):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_objective_is_the_measured_normalised_output_error(hourglass):
    x = images()
    # 16x16 maps at the outer level: 256 positions per image, all of them used.
    stats = block_statistics(hourglass, NAMES, [x[:2], x[2:]], positions=10**6)
    W = stack_hourglass(hourglass.state_dict(), hourglass.config)
    W_hat = W + 0.05 * torch.randn(W.shape, generator=torch.Generator().manual_seed(0))
    error, total = output_error(W_hat, W, stats)

    inputs = {}

    def keep(index):
        def hook(module, args, output):
            inputs[index] = args[0]  # returns None: the output stays as it is

        return hook

    hooks = [conv.register_forward_hook(keep(index)) for index, conv in hourglass.block_convs()]
    with torch.no_grad():
        hourglass(x)
    for h in hooks:
        h.remove()
    measured = reference = 0.0
    for layer, (index, conv) in enumerate(hourglass.block_convs()):
        s = stats.scales[layer][None, :, None, None]
        kernel_hat = W_hat[index].transpose(0, 1)
        out = F.conv2d(inputs[index], conv.weight.detach(), padding=1)
        out_hat = F.conv2d(inputs[index], kernel_hat, padding=1)
        positions = out.shape[0] * out.shape[2] * out.shape[3]
        measured += float(((s * (out_hat - out)) ** 2).sum()) / positions
        reference += float(((s * out) ** 2).sum()) / positions
    assert float(error) == pytest.approx(measured, rel=1e-4)
    assert float(total) == pytest.approx(reference, rel=1e-4)
    assert float(output_error(W, W, stats)[0]) == pytest.approx(0, abs=1e-6 * reference)


def test_scales_are_the_batchnorms_after_each_conv(hourglass):
    stats = block_statistics(hourglass, NAMES, [images(2)])
    bn = hourglass.hourglasses[1].levels[0].down.bns[1]
    layer = [index for index, _ in hourglass.block_convs()].index((1, 0, 1, 1))
    expected = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(stats.scales[layer], expected.detach())
    assert stats.images == 2


@pytest.mark.parametrize("method,ranks", [("tucker", RANKS), ("mps", "2,3,4,6,6,3,3"), ("cp", "6")])
def test_refinement_lowers_the_output_error_for_every_method(hourglass, method, ranks):
    stats = block_statistics(hourglass, NAMES, [images()])
    W = stack_hourglass(hourglass.state_dict(), hourglass.config)
    tnet = convert(hourglass, method, ranks)
    report = refine_to_data(tnet.tensor, W, stats, iterations=30)
    error, total = output_error(tnet.tensor.full().detach(), W, stats)
    assert report.error_after == pytest.approx(float((error / total) ** 0.5), rel=1e-4)
    assert report.error_after < 0.95 * report.error_before


def test_convert_with_refine_data_records_the_fit_and_keeps_full_rank_exact(hourglass, x):
    tnet = convert(hourglass, "tucker", RANKS, refine_data=[images()], refine_iterations=20)
    fit = tnet.summary["data_aware"]
    assert fit["images"] == 4 and fit["error_after"] < fit["error_before"]
    # The fit trades weight error for output error.
    assert tnet.summary["relative_error"] >= fit["weight_error_before"] - 1e-6

    full = convert(hourglass, refine_data=[images()], refine_iterations=5)
    assert full.summary["data_aware"]["error_after"] < 1e-5
    assert scaled_error(outputs(full.eval(), x), outputs(hourglass, x)) < 1e-5


def test_convert_rejects_bad_refine_arguments(hourglass):
    with pytest.raises(ValueError, match="refine_samples is 0; expected a whole number >= 1"):
        convert(hourglass, "tucker", RANKS, refine_data=[images()], refine_samples=0)
    with pytest.raises(ValueError, match="batches gave no images"):
        convert(hourglass, "tucker", RANKS, refine_data=[])


def test_cli_refine_data(tmp_path):
    checkpoint = tmp_path / "hg.pth"
    torch.save(make_hourglass().state_dict(), checkpoint)
    out = tmp_path / "t.pt"
    args = ["convert", str(checkpoint), "--ranks", RANKS, "-o", str(out)]
    r = CliRunner().invoke(main, [*args, "--refine-data", "synthetic", "--refine-samples", "2"])
    assert r.exit_code == 0, r.output
    assert "data-aware refinement on 2 images: block output error" in r.output
    fit = load(out).meta["summary"]["data_aware"]
    assert fit["images"] == 2 and fit["error_after"] < fit["error_before"]
