"""Layer-wise baselines (layerwise-tucker, layerwise-cp, tai): counts, exactness, save/load, ONNX,
--ratio, the command line and fine-tuning."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

import tcompress
from tcompress import methods
from tcompress.cli import main
from tcompress.errors import MethodError, RankError, TcompressError
from tcompress.export.onnx import export_onnx
from tcompress.layerwise import LayerwiseNet
from tcompress.methods.base import RankSpec
from tcompress.passes.layerwise import LayerwiseConfig, decompose_conv

from .conftest import make_hourglass, outputs, scaled_error

METHODS = ("layerwise-tucker", "layerwise-cp", "tai")
#: Reduced per-layer ranks for the 8-feature test hourglass (kernels 8 x 8 x 3 x 3).
REDUCED = {"layerwise-tucker": "3,5", "layerwise-cp": "10", "tai": "6"}


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def closed_form(method, ranks, f=8, k=3):
    """Parameters of one decomposed 8 x 8 x 3 x 3 kernel, written out per method."""
    if method == "layerwise-tucker" and len(ranks) == 2:
        r_in, r_out = ranks
        return r_in * r_out * k * k + f * r_in + f * r_out
    if method == "layerwise-tucker":
        r_in, r_out, r_h, r_w = ranks
        return r_in * r_out * r_h * r_w + f * (r_in + r_out) + k * (r_h + r_w)
    if method == "layerwise-cp":
        return ranks[0] * (f + f + k + k)
    return ranks[0] * (f * k + f * k)


@pytest.mark.parametrize(
    "method,ranks",
    [
        ("layerwise-tucker", "3,5"),
        ("layerwise-tucker", "3,5,2,1"),
        ("layerwise-cp", "10"),
        ("tai", "6"),
    ],
)
def test_parameter_count_matches_the_closed_form(hourglass, method, ranks):
    net = tcompress.convert(hourglass, method=method, ranks=ranks)
    s = net.summary
    n_layers = len(list(hourglass.block_convs()))
    per_layer = closed_form(method, net.ranks)
    assert per_layer == methods.get(method).params((8, 8, 3, 3), net.ranks)
    dense_rest = sum(p.numel() for p in hourglass.parameters()) - n_layers * 8 * 8 * 9
    assert s["params_after"] == sum(p.numel() for p in net.parameters())
    assert s["params_after"] == dense_rest + n_layers * per_layer
    assert s["tensor_params_after"] == n_layers * per_layer
    assert s["compression_ratio"] == s["params_before"] / s["params_after"]
    assert s["layers"] == n_layers and s["method"] == method


@pytest.mark.parametrize("method", METHODS)
def test_full_rank_reproduces_the_original_outputs(hourglass, x, method):
    net = tcompress.convert(hourglass, method=method).eval()
    assert isinstance(net, LayerwiseNet)
    # float32: a different summation order only
    assert scaled_error(outputs(net, x), outputs(hourglass, x)) <= 1e-5
    assert net.summary["relative_error"] <= 1e-5


def test_full_ranks_are_the_exact_ranks():
    assert methods.get("layerwise-tucker").resolve(RankSpec.parse("full"), (8, 6, 3, 3)).ranks == (
        6,
        8,
    )
    assert methods.get("layerwise-cp").resolve(RankSpec.parse(None), (8, 6, 3, 3)).ranks == (54,)
    assert methods.get("tai").resolve(RankSpec.parse("-"), (8, 6, 3, 3)).ranks == (
        18,
    )  # min(6 * 3, 8 * 3)
    assert methods.get("layerwise-tucker").resolve(RankSpec.parse("4"), (8, 8, 3, 3)).ranks == (
        4,
        4,
    )
    # full spatial ranks decompose nothing: Tucker-2
    assert methods.get("layerwise-tucker").resolve(
        RankSpec.parse("4,5,3,3"), (8, 8, 3, 3)
    ).ranks == (
        4,
        5,
    )
    capped = methods.get("layerwise-cp").resolve(RankSpec.parse("100"), (8, 8, 3, 3))
    assert capped.ranks == (72,) and "capped at 72" in capped.notes[0]


def _kernel(seed=0, shape=(8, 6, 3, 3)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _conv(kernel):
    conv = torch.nn.Conv2d(kernel.shape[1], kernel.shape[0], 3, padding=1, bias=False)
    conv.weight = torch.nn.Parameter(kernel)
    return conv.double()


def _rebuilt_error(method, ranks, kernel, n_iter=0):
    layers = decompose_conv(_conv(kernel), method, ranks, LayerwiseConfig(method, n_iter=n_iter))
    with torch.no_grad():
        return float((methods.get(method).kernel(layers) - kernel).norm() / kernel.norm())


def test_tai_is_the_truncated_svd_of_the_reshaped_kernel():
    kernel = _kernel()
    matrix = kernel.permute(1, 2, 0, 3).reshape(6 * 3, 8 * 3)  # (C k) x (N k)
    s = torch.linalg.svdvals(matrix)
    for k in (1, 5, 12):
        expected = float(s[k:].square().sum().sqrt() / s.square().sum().sqrt())
        assert _rebuilt_error("tai", (k,), kernel) == pytest.approx(expected, rel=1e-9)
    assert _rebuilt_error("tai", (18,), kernel) < 1e-12  # K = min(C k, N k)


def test_tucker2_is_the_hosvd_of_the_channel_modes():
    kernel = _kernel(1)
    # With full spatial modes, HOSVD projects on the leading singular vectors of both channel
    # unfoldings; the error equals that of the projection computed directly.
    u_out = torch.linalg.svd(kernel.reshape(8, -1), full_matrices=False)[0][:, :4]
    u_in = torch.linalg.svd(kernel.transpose(0, 1).reshape(6, -1), full_matrices=False)[0][:, :3]
    projected = torch.einsum("oa,pa,pibc,jd,id->ojbc", u_out, u_out, kernel, u_in, u_in)
    expected = float((projected - kernel).norm() / kernel.norm())
    assert _rebuilt_error("layerwise-tucker", (3, 4), kernel) == pytest.approx(expected, rel=1e-9)
    # HOOI sweeps never make it worse; Tucker-4 (spatial ranks too) costs more error
    assert _rebuilt_error("layerwise-tucker", (3, 4), kernel, n_iter=3) <= expected + 1e-12
    assert _rebuilt_error("layerwise-tucker", (3, 4, 2, 2), kernel) > expected


def test_cp_error_decreases_with_rank_and_vanishes_at_the_exact_rank():
    kernel = _kernel(2)
    errors = [_rebuilt_error("layerwise-cp", (r,), kernel) for r in (2, 8, 24, 40)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert _rebuilt_error("layerwise-cp", (54,), kernel) < 1e-12  # min(f_in, f_out) h w


@pytest.mark.parametrize("method", METHODS)
def test_reduced_rank_summary_error_is_the_kernels_error(hourglass, method):
    net = tcompress.convert(hourglass, method=method, ranks=REDUCED[method])
    s = net.summary
    with torch.no_grad():
        got = torch.stack([k for k in net.kernels()])
    want = torch.stack([conv.weight for _, conv in hourglass.block_convs()]).detach()
    assert s["relative_error"] == pytest.approx(float((got - want).norm() / want.norm()), rel=1e-4)
    assert len(s["errors"]) == len(want) and 0 < s["relative_error"] < 1


@pytest.mark.parametrize("method", METHODS)
def test_save_load_round_trip(tmp_path, hourglass, x, method):
    net = tcompress.convert(hourglass, method=method, ranks=REDUCED[method]).eval()
    tcompress.save(net, tmp_path / "lw.pt")
    loaded = tcompress.load(tmp_path / "lw.pt").eval()
    assert isinstance(loaded, LayerwiseNet)
    assert loaded.method == method and loaded.ranks == net.ranks
    assert loaded.summary == net.summary
    assert scaled_error(outputs(loaded, x), outputs(net, x)) == 0


def test_tucker4_save_load(tmp_path, hourglass, x):
    net = tcompress.convert(hourglass, method="layerwise-tucker", ranks="4,4,2,2").eval()
    assert net.ranks == (4, 4, 2, 2)
    tcompress.save(net, tmp_path / "t4.pt")
    loaded = tcompress.load(tmp_path / "t4.pt").eval()
    assert scaled_error(outputs(loaded, x), outputs(net, x)) == 0


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "method,ranks,form",
    [
        ("layerwise-tucker", "3,5", "factorized"),
        ("layerwise-tucker", "4,4,2,2", "factorized"),
        ("layerwise-cp", "10", "factorized"),
        ("tai", "6", "factorized"),
        ("tai", "6", "dense"),
        pytest.param("layerwise-tucker", "3,5", "dense", marks=SLOW),
        pytest.param("layerwise-tucker", "4,4,2,2", "dense", marks=SLOW),
        pytest.param("layerwise-cp", "10", "dense", marks=SLOW),
    ],
)
def test_exports_and_validates_in_onnx_runtime(tmp_path, hourglass, method, ranks, form):
    import onnx

    net = tcompress.convert(hourglass, method=method, ranks=ranks)
    report = export_onnx(net, tmp_path / "lw.onnx", form, input_size=32)
    assert report.validation.ok and report.validation.max_abs_diff <= 1e-4
    graph = onnx.load(tmp_path / "lw.onnx").graph
    assert "BatchNormalization" not in {n.op_type for n in graph.node}  # folded into the chains
    if form == "factorized" and method == "layerwise-cp":
        groups = {a.i for n in graph.node for a in n.attribute if a.name == "group"}
        assert 10 in groups  # the depthwise convolutions


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("ratio", [1.5, 2.5])
def test_ratio_lands_near_the_target(hourglass, method, ratio):
    net = tcompress.convert(hourglass, method=method, ratio=ratio)
    s = net.summary
    assert s["target"] == f"ratio {ratio:g}"
    achieved = s["compression_ratio"]
    # no other per-layer rank lands nearer (on a log scale)
    if method == "layerwise-tucker":
        others = [(r, r) for r in range(1, 9)]
    else:
        others = [
            (r,)
            for r in range(
                1, methods.get(method).resolve(RankSpec.parse(None), (8, 8, 3, 3)).ranks[0]
            )
        ]
    n_layers, rest = s["layers"], s["params_before"] - s["tensor_params_before"]
    for ranks in others:
        other = s["params_before"] / (
            rest + n_layers * methods.get(method).params((8, 8, 3, 3), ranks)
        )
        assert abs(math.log(achieved / ratio)) <= abs(math.log(other / ratio)) + 1e-12
    assert abs(achieved / ratio - 1) < 0.15


def test_bad_ranks_and_targets_say_what_was_expected(hourglass):
    with pytest.raises(RankError, match=r"got 3 rank\(s\) \('1,2,3'\) for layerwise-tucker; "):
        tcompress.convert(hourglass, method="layerwise-tucker", ranks="1,2,3")
    with pytest.raises(RankError, match="layerwise-tucker rank R_out is 9; expected an integer "):
        tcompress.convert(hourglass, method="layerwise-tucker", ranks="4,9")
    with pytest.raises(RankError, match=r"tai rank K is 0; expected an integer from 1 to 24"):
        tcompress.convert(hourglass, method="tai", ranks=0)
    with pytest.raises(RankError, match="layerwise-cp rank R is 'x'; expected an integer"):
        tcompress.convert(hourglass, method="layerwise-cp", ranks="x")
    with pytest.raises(RankError, match="name modes; layer-wise method 'tai' takes one rank K"):
        tcompress.convert(hourglass, method="tai", ranks="f_in=4")
    with pytest.raises(RankError, match="compression ratio 50 is out of reach: with tai"):
        tcompress.convert(hourglass, method="tai", ratio=50)
    with pytest.raises(RankError, match="a layer-wise method takes ranks or ratio"):
        tcompress.convert(hourglass, method="tai", ranks="3", ratio=2)
    with pytest.raises(RankError, match="an energy target applies to T-Nets"):
        tcompress.convert(hourglass, method="layerwise-cp", energy=0.9)
    with pytest.raises(TcompressError, match="refine=2 does not apply to tai"):
        tcompress.convert(hourglass, method="tai", refine=2)
    with pytest.raises(MethodError, match="method 'layerwise-mps' is unknown; expected one of"):
        tcompress.convert(hourglass, method="layerwise-mps")


def test_convert_refuses_a_layerwise_network(tmp_path, hourglass):
    net = tcompress.convert(hourglass, method="tai", ranks=4)
    with pytest.raises(TcompressError, match="already compressed \\(LayerwiseNet\\)"):
        tcompress.convert(net, method="tai")
    tcompress.save(net, tmp_path / "lw.pt")
    with pytest.raises(TcompressError, match="already compressed by tcompress \\(method 'tai'\\)"):
        tcompress.convert(tmp_path / "lw.pt", method="tucker")


def test_a_file_with_ranks_that_do_not_fit_is_refused(tmp_path, hourglass):
    net = tcompress.convert(hourglass, method="tai", ranks=4)
    payload = tcompress.serialize.to_payload(net)
    payload["ranks"] = [4, 4]
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(TcompressError, match="has ranks \\[4, 4\\] that do not fit method 'tai'"):
        tcompress.load(tmp_path / "bad.pt")


def test_cli_convert_info_export_end_to_end(tmp_path, checkpoint, hourglass, x):
    out = tmp_path / "lw.pt"
    r = cli("convert", checkpoint, "--method", "layerwise-tucker", "--ranks", "3,5", "-o", out)
    assert r.exit_code == 0, r.output
    assert "Layer-wise" in r.stdout and "per-layer ranks" in r.stdout and "3,5" in r.stdout
    loaded = tcompress.load(out).eval()
    assert loaded.method == "layerwise-tucker" and loaded.ranks == (3, 5)
    r = cli("convert", checkpoint, "--method", "tai", "--ratio", "2", "-o", tmp_path / "t.pt")
    assert r.exit_code == 0, r.output
    r = cli(
        "convert", checkpoint, "-m", "layerwise-cp", "-r", "12", "-o", tmp_path / "c.pt", "--json"
    )
    js = json.loads(r.stdout)
    for key in ("method", "ranks", "params_before", "params_after", "compression_ratio"):
        assert key in js
    assert js["method"] == "layerwise-cp" and js["ranks"] == [12] and 0 < js["relative_error"] < 1
    r = cli("info", out, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["kind"] == "layerwise"
    assert "layer-wise network saved by" in cli("info", out).stdout


@pytest.mark.slow
def test_cli_export_of_a_layerwise_network(tmp_path, checkpoint):
    out = tmp_path / "lw.pt"
    assert cli("convert", checkpoint, "-m", "layerwise-cp", "-r", "6", "-o", out).exit_code == 0
    r = cli("export", out, "--input-size", "32", "-o", tmp_path / "lw.onnx", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["validation"]["ok"]


def test_cli_bad_ranks_is_one_line_and_no_file(tmp_path, checkpoint):
    out = tmp_path / "lw.pt"
    r = cli("convert", checkpoint, "--method", "layerwise-cp", "--ranks", "4,4", "-o", out)
    assert r.exit_code == 2
    assert r.output.strip() == (
        "Error: got 2 rank(s) ('4,4') for layerwise-cp; expected one CP rank R "
        "(rank-one terms per layer)"
    )
    assert not out.exists()


@pytest.mark.slow
def test_finetune_a_layerwise_network(tmp_path):
    hg = make_hourglass(n_stacks=1, depth=2, block_depth=1, features=8, n_joints=16)
    torch.save(hg.state_dict(), tmp_path / "hg.pth")
    assert cli("convert", tmp_path / "hg.pth", "-m", "tai", "-r", "4", "-o", tmp_path / "t.pt")
    before = tcompress.load(tmp_path / "t.pt")
    args = ["finetune", tmp_path / "t.pt", "--data", "synthetic", "--steps", "2"]
    args += ["--image-size", "32", "--batch-size", "2", "--eval-samples", "4"]
    r = cli(*args, "-o", tmp_path / "ft.pt", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["steps"] == 2
    after = tcompress.load(tmp_path / "ft.pt")
    assert isinstance(after, LayerwiseNet) and after.method == "tai"
    changed = [
        not torch.equal(a, b)
        for (_, a), (_, b) in zip(before.state_dict().items(), after.state_dict().items())
    ]
    assert any(changed)
