"""Kernel families of any network: ``--arch MODULE:FACTORY --family PATTERN``."""

import math

import onnx
import pytest
import torch
from click.testing import CliRunner

import tcompress
from tcompress.cli import main
from tcompress.errors import CheckpointError, TcompressError
from tcompress.export.onnx import export_onnx
from tcompress.family import FamilyError, compile_pattern, pattern_family

from .family_models import random_weights, resnet, unet

RESNET = ("tests.family_models:resnet", "layer{stage}.{block}.conv{conv}")
UNET = ("tests.family_models:unet", "{path}.{level}.conv{conv}")
EXACT = 1e-5  # max |T-Net - dense| / max |dense| at full rank, float32


def error(got, want):
    got = got if isinstance(got, tuple | list) else [got]
    want = want if isinstance(want, tuple | list) else [want]
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, want))


@pytest.fixture
def dense_resnet():
    return random_weights(resnet())


@pytest.fixture
def x():
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def test_pattern_syntax():
    regex, modes = compile_pattern("layer{stage}.{block}.conv{conv}.weight")
    assert modes == ("stage", "block", "conv")
    assert regex.match("layer1.0.conv2").groupdict() == {"stage": "1", "block": "0", "conv": "2"}
    assert not regex.match("layer1.0.conv2.bn")
    regex, _ = compile_pattern("*.{level}.conv{conv}")
    assert regex.match("down.1.conv2") and not regex.match("a.b.1.conv2")


def test_resnet_family_reports_what_stays_dense(dense_resnet):
    # The stride-2 layer3.0.conv1 is alone of its geometry: dense. The other 11 do not fill the
    # stage x block x conv grid, so those modes merge into one listing the kernels present.
    family = pattern_family(dense_resnet, RESNET[1])
    assert family.mode_names == ("stage_block_conv",)
    assert family.grid == (11,)
    assert family.mode_values[0][:3] == ("1.0.1", "1.0.2", "1.1.1")
    assert family.mode_values[0][-3:] == ("3.0.2", "3.1.1", "3.1.2")
    assert family.members[0] == ((0,), "layer1.0.conv1")
    assert family.members[-1] == ((10,), "layer3.1.conv2")
    assert family.name == "8x8x3x3"  # no common prefix: named by its shape
    assert family.left_out == (
        "layer3.0.conv1 (shape 8x8x3x3, stride (2, 2), padding (1, 1); no other matching "
        "convolution has this geometry)",
    )


@pytest.mark.parametrize("form", ["reconstructed", "factorized"])
def test_resnet_full_rank_from_a_checkpoint_is_exact(tmp_path, dense_resnet, x, form):
    path = tmp_path / "resnet.pth"
    torch.save({"model": {f"module.{k}": v for k, v in dense_resnet.state_dict().items()}}, path)
    tnet = tcompress.convert(path, arch=RESNET[0], family=RESNET[1], forward=form).eval()
    assert tnet.summary["mode_sizes"] == [11, 8, 8, 3, 3]
    assert tnet.summary["architecture"] == "custom"
    assert len(tnet.summary["left_out"]) == 1
    with torch.no_grad():
        assert error(tnet(x), dense_resnet(x)) <= EXACT


def test_resnet_reduced_rank_parameter_count(dense_resnet):
    ranks = (4, 4, 5, 3, 3)
    tnet = tcompress.convert(dense_resnet, "tucker", ranks, arch=RESNET[0], family=RESNET[1])
    before = sum(p.numel() for p in dense_resnet.parameters())
    shape = (11, 8, 8, 3, 3)
    expected = before - math.prod(shape) + math.prod(ranks)
    expected += sum(d * r for d, r in zip(shape, ranks))
    assert tnet.summary["params_after"] == expected == sum(p.numel() for p in tnet.parameters())
    assert tnet.summary["compression_ratio"] == pytest.approx(before / expected)


def test_unet_named_parts_and_two_outputs(x):
    dense = random_weights(unet())
    for method, ranks in (("tucker", None), ("mps", None)):
        tnet = tcompress.convert(dense, method, ranks, arch=UNET[0], family=UNET[1]).eval()
        assert tnet.summary["mode_names"][:3] == ["path", "level", "conv"]
        family = tnet.meta["architecture"]["family"]
        assert family["mode_values"][0] == ["down", "up"]
        assert tnet.summary["left_out"] == []
        with torch.no_grad():
            assert error(tnet(x), dense(x)) <= EXACT, method


def test_save_needs_the_factory_again_to_load(tmp_path, dense_resnet, x):
    tnet = tcompress.convert(
        dense_resnet, "tucker", (4, 4, 4, 3, 3), arch=RESNET[0], family=RESNET[1]
    ).eval()
    tcompress.save(tnet, tmp_path / "t.pt")
    with pytest.raises(
        CheckpointError,
        match=r"converted from the network of 'tests.family_models:resnet'; pass "
        r"arch='tests.family_models:resnet' to load it",
    ):
        tcompress.load(tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match="module 'no_such_module' cannot be imported"):
        tcompress.load(tmp_path / "t.pt", arch="no_such_module:resnet")
    with pytest.raises(CheckpointError, match="has no callable 'nope'"):
        tcompress.load(tmp_path / "t.pt", arch="tests.family_models:nope")
    loaded = tcompress.load(tmp_path / "t.pt", arch=RESNET[0]).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), tnet(x))


@pytest.mark.parametrize("form", ["factorized", "dense"])
def test_family_tnets_export_and_validate(tmp_path, form):
    dense = random_weights(unet())
    tnet = tcompress.convert(dense, "tucker", (2, 2, 2, 4, 4, 3, 3), arch=UNET[0], family=UNET[1])
    report = export_onnx(tnet, tmp_path / "u.onnx", form, input_size=16)
    assert report.validation.ok
    assert [o.name for o in onnx.load(tmp_path / "u.onnx").graph.output] == [
        "output_0",
        "output_1",
    ]


def test_bad_families_are_one_line_errors(dense_resnet):
    cases = {
        "layer.conv": "has no {named} part",
        "layer{stage}.{stage}.conv1": "names mode 'stage' twice",
        "layer{f_in}.0.conv1": "uses mode name 'f_in'",
        "block{x}.conv": "matches no convolution; the model's convolutions are 'stem', ",
        "layer{stage}.9.conv1": "matches no convolution",
    }
    for pattern, message in cases.items():
        with pytest.raises(FamilyError, match=message.replace("(", r"\(")):
            tcompress.convert(dense_resnet, arch=RESNET[0], family=pattern)
    with pytest.raises(FamilyError, match="leaves 1 convolution to stack"):
        tcompress.convert(dense_resnet, arch=RESNET[0], family="layer{stage}.0.shortcut")
    with pytest.raises(TcompressError, match="arch is given without family"):
        tcompress.convert(dense_resnet, arch=RESNET[0])
    with pytest.raises(CheckpointError, match="arch is 'resnet'; expected MODULE:FACTORY"):
        tcompress.convert(dense_resnet, arch="resnet", family=RESNET[1])
    with pytest.raises(CheckpointError, match=r"'stem.weight' has shape \(4, 3, 3, 3\)"):
        state = dict(dense_resnet.state_dict(), **{"stem.weight": torch.zeros(4, 3, 3, 3)})
        tcompress.convert(state, arch=RESNET[0], family=RESNET[1])


def test_cli_convert_and_export_with_arch(tmp_path, dense_resnet):
    torch.save(dense_resnet.state_dict(), tmp_path / "r.pth")
    runner = CliRunner()
    r = runner.invoke(
        main,
        [
            "convert",
            str(tmp_path / "r.pth"),
            "--arch",
            RESNET[0],
            "--family",
            RESNET[1],
            "--ranks",
            "stage_block_conv=3,f_in=4",
            "-o",
            str(tmp_path / "t.pt"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "1 matching convolution(s) left dense" in r.output
    assert "layer3.0.conv1 (shape 8x8x3x3, stride (2, 2)" in r.output
    r = runner.invoke(main, ["export", str(tmp_path / "t.pt"), "-o", str(tmp_path / "t.onnx")])
    assert r.exit_code == 2 and "pass --arch tests.family_models:resnet to load it" in r.output
    r = runner.invoke(
        main,
        [
            "export",
            str(tmp_path / "t.pt"),
            "--arch",
            RESNET[0],
            "--input-size",
            "16",
            "-o",
            str(tmp_path / "t.onnx"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "t.onnx").exists()
    r = runner.invoke(main, ["convert", str(tmp_path / "r.pth"), "--family", RESNET[1]])
    assert r.exit_code == 2 and "--family is given without --arch" in r.output
