"""ONNX files in their network's own layout: a PoseNet export (channels-last input, one stacked
output) evaluates like the PyTorch model, and files without the layout entry are read by shape."""

import json

import onnx
import pytest
import torch
from click.testing import CliRunner

import tcompress
from tcompress.cli import main
from tcompress.errors import TcompressError
from tcompress.evaluation.decode import EvaluationError
from tcompress.evaluation.run import OnnxModel
from tcompress.export.bench import INPUT_LAYOUT_KEY, BenchError, input_layout
from tcompress.export.onnx import export_onnx
from tcompress.models import PoseNet
from tcompress.models.io import heatmaps_of

from .conftest import make_hourglass, scaled_error
from .test_public_layouts import random_state, shapes_of

SIZE = 64  # PoseNet of depth 4: a multiple of 4 * 2**4
SMALL_POSENET = dict(n_stacks=2, depth=4, features=8, stem_features=4, stem_width=8)


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def without_layout_entry(path, out):
    """A copy of an exported file as older tcompress versions wrote it: no layout entry."""
    proto = onnx.load(path)
    kept = [p for p in proto.metadata_props if p.key != INPUT_LAYOUT_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, out)
    return str(out)


@pytest.fixture(scope="module")
def posenet(tmp_path_factory):
    """A small PoseNet with trained-looking weights: its dense checkpoint, a T-Net of it, and
    the T-Net's factorized ONNX export."""
    d = tmp_path_factory.mktemp("posenet")
    with torch.device("meta"):
        keys = shapes_of(PoseNet(**SMALL_POSENET).state_dict())
    state = random_state(keys, seed=3)
    torch.save({"state_dict": {f"model.module.{k}": v for k, v in state.items()}}, d / "pn.pth")
    tnet = tcompress.convert(d / "pn.pth", "tucker", "f_in=3,f_out=3").eval()
    tcompress.save(tnet, d / "pn.pt")
    export_onnx(tnet, d / "pn.onnx", "factorized", input_size=SIZE)
    return {"tnet": tnet, "pt": d / "pn.pt", "onnx": str(d / "pn.onnx"), "dir": d}


def test_the_export_names_its_input_layout(posenet, tmp_path):
    entries = {p.key: p.value for p in onnx.load(posenet["onnx"]).metadata_props}
    assert entries[INPUT_LAYOUT_KEY] == "NHWC"
    export_onnx(make_hourglass(), tmp_path / "hg.onnx", "dense", input_size=32)
    entries = {p.key: p.value for p in onnx.load(tmp_path / "hg.onnx").metadata_props}
    assert entries[INPUT_LAYOUT_KEY] == "NCHW"


def test_onnx_model_feeds_channels_last_and_splits_the_stacks(posenet):
    model = OnnxModel(posenet["onnx"])
    assert (model.layout, model.channels, model.image_size) == ("NHWC", 3, SIZE)
    images = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    got = model(images)
    with torch.no_grad():
        want = heatmaps_of(posenet["tnet"], images)
    assert [g.shape for g in got] == [w.shape for w in want] == [(3, 16, 16, 16)] * 2
    assert scaled_error(got, want) <= 1e-4


def test_files_without_the_layout_entry_are_read_by_their_shape(posenet, tmp_path):
    old = without_layout_entry(posenet["onnx"], tmp_path / "old-pn.onnx")
    model = OnnxModel(old)
    assert (model.layout, model.channels, model.image_size) == ("NHWC", 3, SIZE)
    export_onnx(make_hourglass(), tmp_path / "hg.onnx", "dense", input_size=32)
    model = OnnxModel(without_layout_entry(tmp_path / "hg.onnx", tmp_path / "old-hg.onnx"))
    assert (model.layout, model.channels, model.image_size) == ("NCHW", 3, 32)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = heatmaps_of(make_hourglass(), images)
    assert scaled_error(model(images), want) <= 1e-4


def test_input_layout_from_the_entry_or_the_shape():
    assert input_layout(["batch", 256, 256, 3]) == "NHWC"
    assert input_layout(["batch", "height", "width", 3]) == "NHWC"
    assert input_layout(["batch", 3, 256, 256]) == "NCHW"
    assert input_layout(["batch", 3, "height", "width"]) == "NCHW"
    assert input_layout([1, 3, 3, 3]) == "NCHW"  # no way to tell: channels first
    assert input_layout([1, 64, 64, 1], channels=1) == "NHWC"
    # The entry wins over the shape.
    assert input_layout([1, 64, 64, 3], {INPUT_LAYOUT_KEY: "NCHW"}) == "NCHW"
    assert input_layout([1, 16, 16, 8], {INPUT_LAYOUT_KEY: "NHWC"}) == "NHWC"
    with pytest.raises(BenchError) as e:
        input_layout([1, 3, 8, 8], {INPUT_LAYOUT_KEY: "CHW"}, where="ONNX file 'x.onnx'")
    assert str(e.value) == (
        "ONNX file 'x.onnx': metadata tcompress.input_layout is 'CHW'; expected one of NCHW, NHWC"
    )


def test_images_of_the_wrong_channels_are_one_clear_error(posenet):
    model = OnnxModel(posenet["onnx"])
    with pytest.raises(EvaluationError) as e:
        model(torch.zeros(1, 1, SIZE, SIZE))
    assert isinstance(e.value, TcompressError)
    assert str(e.value) == (
        f"images have shape (1, 1, {SIZE}, {SIZE}); ONNX file '{posenet['onnx']}' expects "
        "(N, 3, H, W) images"
    )


@pytest.mark.parametrize("flip", [False, True])
def test_a_posenet_export_evaluates_with_the_pytorch_models_pckh(posenet, tmp_path, flip):
    old = without_layout_entry(posenet["onnx"], tmp_path / "old.onnx")
    common = ["--data", "synthetic", "-n", 8, "--json", *(["--flip"] if flip else [])]
    reports = {
        name: json.loads(cli("evaluate", path, *common, "--image-size", SIZE).stdout)
        for name, path in (("pt", posenet["pt"]), ("onnx", posenet["onnx"]), ("old", old))
    }
    assert reports["pt"]["kind"] == "tnet" and reports["onnx"]["kind"] == "onnx"
    assert reports["pt"]["pckh"] == reports["onnx"]["pckh"] == reports["old"]["pckh"]
    # Random weights score near zero, so the equal scores above prove little alone; the same
    # heatmaps do (test_onnx_model_feeds_channels_last_and_splits_the_stacks).
    assert reports["pt"]["pckh"]["n_visible"] > 0
    # Without --image-size: the size the file was exported at, read from the right axis.
    own = json.loads(cli("evaluate", posenet["onnx"], *common).stdout)
    assert own["image_size"] == SIZE and own["pckh"] == reports["onnx"]["pckh"]
