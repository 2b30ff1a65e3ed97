"""Each network gets its input as the code that trained it fed it: tcompress's hourglass the data's
normalisation, bearpaw's ``hg`` pixels minus the MPII mean colour, PoseNet pixels in [0, 1] channels
last; in PyTorch and from the exported ONNX file alike."""

import onnx
import pytest
import torch

from tcompress.data import MEAN, STD
from tcompress.errors import TcompressError
from tcompress.evaluation.run import OnnxModel
from tcompress.export.bench import PIXEL_MEAN_KEY, PIXEL_STD_KEY
from tcompress.export.onnx import export_onnx
from tcompress.models import BearpawHourglass, PoseNet, StackedHourglass
from tcompress.models.bearpaw import PIXEL_MEAN
from tcompress.models.io import ModelIO, heatmaps_of

from .conftest import scaled_error

BEARPAW = dict(n_stacks=1, n_blocks=1, depth=4, features=16, stem_features=4)
POSENET = dict(n_stacks=1, depth=4, features=8, stem_features=4, stem_width=8)


def _pixels(images):
    return images * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]


def _seen(model, images):
    """What ``heatmaps_of`` hands the network's forward."""
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    with torch.no_grad():
        heatmaps_of(model.eval(), images)
    handle.remove()
    return seen[0]


@pytest.fixture
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_tcompress_hourglass_takes_the_data_as_it_is(images):
    net = StackedHourglass(n_stacks=1, depth=2, block_depth=1, features=8)
    assert torch.equal(_seen(net, images), images)


def test_bearpaw_takes_pixels_minus_the_mpii_mean(images):
    want = _pixels(images) - torch.tensor(PIXEL_MEAN)[:, None, None]
    assert torch.allclose(_seen(BearpawHourglass(**BEARPAW), images), want, atol=1e-6)


def test_posenet_takes_pixels_channels_last(images):
    want = _pixels(images).permute(0, 2, 3, 1)
    assert torch.allclose(_seen(PoseNet(**POSENET), images), want, atol=1e-6)


@pytest.mark.parametrize("kind", ["bearpaw", "posenet"])
def test_the_onnx_file_carries_the_convention(kind, images, tmp_path):
    torch.manual_seed(0)
    net = (BearpawHourglass(**BEARPAW) if kind == "bearpaw" else PoseNet(**POSENET)).eval()
    path = tmp_path / f"{kind}.onnx"
    export_onnx(net, path, "dense", input_size=64)
    entries = {p.key: p.value for p in onnx.load(path).metadata_props}
    mean = PIXEL_MEAN if kind == "bearpaw" else (0.0, 0.0, 0.0)
    assert tuple(map(float, entries[PIXEL_MEAN_KEY].split(","))) == mean
    assert tuple(map(float, entries[PIXEL_STD_KEY].split(","))) == (1.0, 1.0, 1.0)
    with torch.no_grad():
        want = heatmaps_of(net, images)
    assert scaled_error(OnnxModel(str(path))(images), want) <= 1e-4


def test_model_io_checks_the_convention():
    with pytest.raises(TcompressError, match="given together or not at all"):
        ModelIO(3, ("x",), pixel_mean=(0.5, 0.5, 0.5))
    with pytest.raises(TcompressError, match=r"pixel_mean has 2 values; expected one per input"):
        ModelIO(3, ("x",), pixel_mean=(0.5, 0.5), pixel_std=(1.0, 1.0, 1.0))
    with pytest.raises(TcompressError, match=r"pixel_std \(1.0, 0.0, 1.0\); expected positive"):
        ModelIO(3, ("x",), pixel_mean=(0.5,) * 3, pixel_std=(1.0, 0.0, 1.0))
