"""Layer-wise methods beyond the reference hourglass: the public layouts (bearpaw ``hg``, PoseNet),
networks given with ``arch``/``family``, and data-aware refinement of the chains."""

import json

import onnx
import pytest
import torch
from click.testing import CliRunner

import tcompress
from tcompress.cli import main
from tcompress.errors import CheckpointError
from tcompress.export.onnx import export_onnx
from tcompress.family import FamilyError, pattern_family
from tcompress.layerwise import LayerwiseNet
from tcompress.models import BearpawHourglass, PoseNet
from tcompress.passes.layerwise import LayerwiseConfig, decompose_layers

from .conftest import outputs, scaled_error
from .family_models import random_weights, resnet
from .test_public_layouts import bearpaw_case, posenet_case
from .test_public_layouts import scaled_error as public_error

METHODS = ("layerwise-tucker", "layerwise-cp", "tai")
#: Reduced per-layer ranks for 4 x 4 x 3 x 3 kernels (the public test layouts' 3x3 convolutions).
REDUCED = {"layerwise-tucker": "2,3", "layerwise-cp": "6", "tai": "5"}
RESNET = ("tests.family_models:resnet", "layer{stage}.{block}.conv{conv}")
EXACT = 1e-5  # max |layer-wise - reference| / max |reference| at full rank, float32


def case(layout, stacks=2):
    return (bearpaw_case if layout == "bearpaw" else posenet_case)(stacks)


@pytest.mark.parametrize("layout", ["bearpaw", "posenet"])
@pytest.mark.parametrize("method", METHODS)
def test_full_rank_on_public_layouts_reproduces_the_public_forward(layout, method):
    state, x, want = case(layout)
    net = tcompress.convert(state, method).eval()
    assert isinstance(net, LayerwiseNet)
    assert isinstance(net.net, BearpawHourglass if layout == "bearpaw" else PoseNet)
    assert net.summary["architecture"] == type(net.net).__name__
    assert net.summary["layers"] == len(net.family.members)
    with torch.no_grad():
        assert public_error(net(x), want) <= EXACT


@pytest.mark.parametrize("layout", ["bearpaw", "posenet"])
def test_public_layouts_save_load_and_count_parameters(tmp_path, layout):
    state, x, _ = case(layout)
    net = tcompress.convert(state, "layerwise-tucker", REDUCED["layerwise-tucker"]).eval()
    # Tucker-2 of a 4 x 4 x 3 x 3 kernel with a bias: R_in R_out 9 + 4 R_in + 4 R_out, bias kept
    per_layer = 2 * 3 * 9 + 4 * 2 + 4 * 3
    dense = sum(v.numel() for k, v in state.items() if "running" not in k and "num_b" not in k)
    assert net.summary["params_after"] == dense - net.summary["layers"] * (4 * 4 * 9 - per_layer)
    tcompress.save(net, tmp_path / "lw.pt")
    loaded = tcompress.load(tmp_path / "lw.pt").eval()
    assert isinstance(loaded, LayerwiseNet) and type(loaded.net) is type(net.net)
    with torch.no_grad():
        assert public_error(loaded(x), net(x)) == 0
    info = CliRunner().invoke(main, ["info", str(tmp_path / "lw.pt"), "--json"])
    assert json.loads(info.stdout)["kind"] == "layerwise"


@pytest.mark.parametrize(
    "layout, method, form",
    [
        ("bearpaw", "tai", "factorized"),
        ("posenet", "layerwise-cp", "factorized"),
        pytest.param("posenet", "layerwise-tucker", "dense", marks=pytest.mark.slow),
    ],
)
def test_public_layouts_export_with_their_own_conventions(tmp_path, layout, method, form):
    state, x, _ = case(layout)
    net = tcompress.convert(state, method, REDUCED[method]).eval()
    report = export_onnx(net, tmp_path / "lw.onnx", form, input_size=64)
    assert report.validation.ok
    names = [o.name for o in onnx.load(tmp_path / "lw.onnx").graph.output]
    assert names == (["heatmaps_0", "heatmaps_1"] if layout == "bearpaw" else ["heatmaps"])


def test_a_family_network_converts_saves_and_needs_its_factory(tmp_path):
    dense = random_weights(resnet())
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    net = tcompress.convert(dense, "tai", arch=RESNET[0], family=RESNET[1]).eval()
    assert net.summary["architecture"] == "custom"
    assert net.summary["left_out"] and "layer3.0.conv1" in net.summary["left_out"][0]
    with torch.no_grad():
        assert scaled_error([net(x)], [dense(x)]) <= EXACT
    reduced = tcompress.convert(dense, "tai", 4, arch=RESNET[0], family=RESNET[1]).eval()
    tcompress.save(reduced, tmp_path / "lw.pt")
    with pytest.raises(CheckpointError, match="pass arch='tests.family_models:resnet'"):
        tcompress.load(tmp_path / "lw.pt")
    loaded = tcompress.load(tmp_path / "lw.pt", arch=RESNET[0]).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), reduced(x))
    report = export_onnx(reduced, tmp_path / "lw.onnx", "factorized", input_size=16)
    assert report.validation.ok


def test_decompose_layers_needs_a_family_for_an_unknown_network(tmp_path):
    with pytest.raises(
        FamilyError, match="model is a ResNet without a known kernel family; expected a "
    ):
        decompose_layers(resnet(), LayerwiseConfig("tai", 2))
    family = pattern_family(resnet(), RESNET[1])
    net, _ = decompose_layers(resnet(), LayerwiseConfig("tai", 2), family=family)
    assert len(list(net.block_layers())) == len(family.members)
    with pytest.raises(CheckpointError, match=r"its network \(ResNet\) has no config; convert"):
        tcompress.save(net, tmp_path / "lw.pt")


def images(n=4, size=32, seed=3):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method,ranks", [("layerwise-tucker", "3,3"), ("tai", "4")])
def test_refine_data_fits_the_chains(hourglass, x, method, ranks):
    plain = tcompress.convert(hourglass, method, ranks)
    net = tcompress.convert(hourglass, method, ranks, refine_data=[images()], refine_iterations=20)
    fit = net.summary["data_aware"]
    assert fit["images"] == 4 and fit["error_after"] < 0.95 * fit["error_before"]
    assert fit["weight_error_before"] == pytest.approx(plain.summary["relative_error"], rel=1e-5)
    # The fit trades weight error for output error; the summary's errors are after the fit.
    assert net.summary["relative_error"] >= fit["weight_error_before"] - 1e-6
    changed = [not torch.equal(a, b) for a, b in zip(net.kernels(), plain.kernels())]
    assert all(changed) and len(net.summary["errors"]) == len(changed)

    full = tcompress.convert(hourglass, "tai", refine_data=[images()], refine_iterations=5)
    assert scaled_error(outputs(full.eval(), x), outputs(hourglass, x)) < 1e-5


def test_cli_refine_data_with_a_layerwise_method(tmp_path, checkpoint):
    out = tmp_path / "lw.pt"
    args = ["convert", str(checkpoint), "-m", "tai", "-r", "4", "-o", str(out)]
    r = CliRunner().invoke(main, [*args, "--refine-data", "synthetic", "--refine-samples", "2"])
    assert r.exit_code == 0, r.output
    assert "data-aware refinement on 2 images: block output error" in r.output
    fit = tcompress.load(out).summary["data_aware"]
    assert fit["images"] == 2 and fit["error_after"] < fit["error_before"]
