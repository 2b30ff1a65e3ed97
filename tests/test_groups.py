"""One tensor per group of same-shape kernels (``--family`` over several widths and strides).

The networks below are built by factories the tests name with ``arch``: a ResNet (three widths,
each later stage entered by a stride-2 convolution), a VGG-style stack (three widths, no common
prefix but ``features``) and a U-Net (encoder, bottom and decoder, skip concatenations, the same
shapes at the same level of both paths). Every kernel with a same-geometry partner is in some
tensor; a kernel alone of its geometry stays dense and ``left_out`` says so.
"""

import json
from collections import Counter

import onnx
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import tcompress
from tcompress import methods
from tcompress.cli import main
from tcompress.errors import FamilyError, RankError, TcompressError
from tcompress.export.onnx import export_onnx
from tcompress.family import KernelGroups, pattern_family
from tcompress.methods.selection import RATIO_TOLERANCE
from tcompress.passes import materialize
from tcompress.tnet import TensorConv2d

from .conftest import make_hourglass
from .family_models import random_weights

EXACT = 1e-5  # max |T-Net - dense| / max |dense| at full rank, float32
WIDTHS = (4, 8, 16)


# -- the networks ------------------------------------------------------------------------------


class Basic(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """Stages of 2, 3 and 2 basic blocks at widths 4, 8, 16; stages 2 and 3 start at stride 2."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4))
        c_in = 4
        for i, (width, blocks) in enumerate(zip(WIDTHS, (2, 3, 2)), 1):
            stage = []
            for b in range(blocks):
                stage.append(Basic(c_in, width, 2 if b == 0 and i > 1 else 1))
                c_in = width
            setattr(self, f"layer{i}", nn.Sequential(*stage))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


class VGG(nn.Module):
    """A plain stack: 3x3 conv-BN-ReLU at widths 4, 4, 4 | 8, 8, 8 | 16, 16, 16 with max-pooling
    between the widths; all under ``features``, so the groups are named by their shapes."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        layers, c_in = [], 3
        for width, count in zip(WIDTHS, (3, 3, 3)):
            for _ in range(count):
                layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
                c_in = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class UNet(nn.Module):
    """Two levels (widths 4, 8), three 3x3 convolutions with a bias per level and path; the first
    of each takes the level's input (image, pooled encoder output or skip concatenation), the
    other two are same-shape across paths, and so is the bottom one (``mid.1.conv1``)."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()

        def level(c_in: int, width: int) -> nn.ModuleDict:
            return nn.ModuleDict(
                {
                    "conv1": nn.Conv2d(c_in, width, 3, padding=1),
                    "conv2": nn.Conv2d(width, width, 3, padding=1),
                    "conv3": nn.Conv2d(width, width, 3, padding=1),
                }
            )

        self.enc = nn.ModuleList([level(3, 4), level(4, 8)])
        self.mid = nn.ModuleList(
            [nn.Identity(), nn.ModuleDict({"conv1": nn.Conv2d(8, 8, 3, 1, 1)})]
        )
        self.dec = nn.ModuleList([level(8 + 4, 4), level(8 + 8, 8)])
        self.head = nn.Conv2d(4, classes, 1)

    @staticmethod
    def _run(block, x):
        for name in ("conv1", "conv2", "conv3"):
            x = F.relu(block[name](x))
        return x

    def forward(self, x):
        skip0 = self._run(self.enc[0], x)
        skip1 = self._run(self.enc[1], F.max_pool2d(skip0, 2))
        bottom = F.relu(self.mid[1]["conv1"](F.max_pool2d(skip1, 2)))
        up = F.interpolate(bottom, scale_factor=2.0, mode="nearest")
        x = self._run(self.dec[1], torch.cat([up, skip1], 1))
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self._run(self.dec[0], torch.cat([x, skip0], 1))
        return self.head(x), bottom


def resnet() -> ResNet:
    return ResNet()


def vgg() -> VGG:
    return VGG()


def unet() -> UNet:
    return UNet()


RESNET = ("tests.test_groups:resnet", "layer{stage}.{block}.conv{conv}")
VGG_ = ("tests.test_groups:vgg", "features.{layer}")
UNET = ("tests.test_groups:unet", "{path}.{level}.conv{conv}")
NETS = {"resnet": (resnet, RESNET), "vgg": (vgg, VGG_), "unet": (unet, UNET)}


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded He-scaled weights, then biases and BatchNorm statistics away from identity
    (:func:`tests.family_models.random_weights`), in eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.normal_(0, (2 / m.weight[0].numel()) ** 0.5)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.uniform_(-0.1, 0.1)
    return random_weights(model, seed + 1)


def dense(name: str) -> nn.Module:
    return seeded(NETS[name][0]())


def convert(name: str, method: str = "tucker", ranks=None, **options):
    _, (arch, pattern) = NETS[name]
    return tcompress.convert(dense(name), method, ranks, arch=arch, family=pattern, **options)


def outputs(model, x):
    with torch.no_grad():
        out = model(x)
    return list(out) if isinstance(out, tuple | list) else [out]


def error(got, want) -> float:
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, want))


@pytest.fixture
def x():
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))


# -- the groups --------------------------------------------------------------------------------


def test_resnet_has_one_group_per_stage_and_keeps_the_stride_two_entries_dense():
    family = pattern_family(resnet(), RESNET[1])
    assert isinstance(family, KernelGroups)
    assert family.group_names == ("layer1", "layer2", "layer3")
    layer1, layer2, layer3 = family.groups
    # layer1 fills block x conv (stage has one value there: no mode)
    assert (layer1.mode_names, layer1.grid) == (("block", "conv"), (2, 2))
    assert layer1.mode_values == (("0", "1"), ("1", "2"))
    # layer2 lacks layer2.0.conv1 (stride 2): block and conv merge, listing the kernels present
    assert (layer2.mode_names, layer2.grid) == (("block_conv",), (5,))
    assert layer2.mode_values == (("0.2", "1.1", "1.2", "2.1", "2.2"),)
    assert layer2.members[0] == ((0,), "layer2.0.conv2")
    assert (layer3.mode_names, layer3.grid) == (("block_conv",), (3,))
    assert family.left_out == tuple(
        f"layer{i}.0.conv1 (shape {w}x{w // 2}x3x3, stride (2, 2), padding (1, 1); no other "
        "matching convolution has this geometry)"
        for i, w in ((2, 8), (3, 16))
    )
    assert len(family.names) == 4 + 5 + 3


def test_vgg_groups_are_named_by_their_shapes():
    family = pattern_family(vgg(), VGG_[1])
    assert family.group_names == ("4x4x3x3", "8x8x3x3", "16x16x3x3")
    assert [g.grid for g in family.groups] == [(2,), (2,), (2,)]
    assert family.groups[0].mode_values == (("3", "6"),)
    assert [line.split(" ")[0] for line in family.left_out] == [
        "features.0",
        "features.10",
        "features.20",
    ]


def test_unet_groups_span_both_paths_and_the_bottom():
    family = pattern_family(unet(), UNET[1])
    assert family.group_names == ("4x4x3x3", "8x8x3x3")
    level0, level1 = family.groups
    assert (level0.mode_names, level0.grid) == (("path", "conv"), (2, 2))
    assert level0.mode_values == (("enc", "dec"), ("2", "3"))
    # enc/mid/dec x conv 1..3 is not filled by the 5 kernels of 8x8: one merged mode
    assert (level1.mode_names, level1.mode_values) == (
        ("path_conv",),
        (("enc.2", "enc.3", "mid.1", "dec.2", "dec.3"),),
    )
    assert len(family.left_out) == 4  # every level's first convolution, on both paths


def test_same_shapes_of_other_strides_are_named_apart_and_grouped_convolutions_stay_dense():
    blocks = nn.ModuleList(
        [nn.Conv2d(4, 4, 3, 1, 1), nn.Conv2d(4, 4, 3, 1, 1)]
        + [nn.Conv2d(4, 4, 3, 2, 1), nn.Conv2d(4, 4, 3, 2, 1)]
        + [nn.Conv2d(4, 4, 3, 1, 1, groups=4), nn.Conv2d(4, 4, 3, 1, 1, groups=4)]
    )
    family = pattern_family(nn.ModuleDict({"blocks": blocks}), "blocks.{i}")
    assert family.group_names == ("4x4x3x3_s1x1_p1x1_d1x1", "4x4x3x3_s2x2_p1x1_d1x1")
    assert [g.mode_values for g in family.groups] == [(("0", "1"),), (("2", "3"),)]
    assert family.left_out == tuple(
        f"blocks.{i} (shape 4x1x3x3, groups 4, padding (1, 1); a grouped convolution stays dense)"
        for i in (4, 5)
    )


def test_a_pattern_that_gives_two_kernels_one_place_is_refused():
    with pytest.raises(FamilyError, match=r"gives '.*' and '.*' the same place \(conv '2'\)"):
        pattern_family(unet(), "*.1.conv{conv}")


def test_the_hourglass_stays_one_tensor_with_one_group_entry():
    tnet = tcompress.convert(make_hourglass(), ranks=(1, 2, 2, 1, 4, 5, 2, 3))
    summary = tnet.summary
    (group,) = summary["groups"]
    assert group["name"] == "hourglasses"
    assert [group[k] for k in ("mode_names", "mode_sizes", "ranks")] == [
        summary["mode_names"],
        summary["mode_sizes"],
        summary["ranks"],
    ]
    assert group["members"] == 24 and group["mode_values"] == []
    assert group["relative_error"] == summary["relative_error"]
    assert group["tensor_params_after"] == summary["tensor_params_after"]
    assert tnet.ranks == (1, 2, 2, 1, 4, 5, 2, 3) and list(tnet.groups) == ["hourglasses"]
    assert all(k.startswith(("net.", "tensor.")) for k in tnet.state_dict())


# -- exactness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("form", ["reconstructed", "factorized"])
def test_full_rank_is_exact_in_both_forms(name, form, x):
    tnet = convert(name, forward=form).eval()
    assert error(outputs(tnet, x), outputs(dense(name), x)) <= EXACT
    assert tnet.summary["relative_error"] < 1e-6
    assert all(g["relative_error"] < 1e-6 for g in tnet.summary["groups"])


@pytest.mark.parametrize("method, ranks", [("mps", None), ("tr", None), ("tai", None)])
def test_full_rank_is_exact_for_the_other_methods(method, ranks, x):
    tnet = convert("resnet", method, ranks).eval()
    assert error(outputs(tnet, x), outputs(dense("resnet"), x)) <= EXACT


@pytest.mark.parametrize("method, ranks", [("tucker", "f_in=3,f_out=3"), ("mps", "3"), ("cp", "6")])
def test_both_forms_agree_at_reduced_rank(method, ranks, x):
    tnet = convert("unet", method, ranks).eval()
    a = outputs(tnet.set_forward("reconstructed"), x)
    assert error(outputs(tnet.set_forward("factorized"), x), a) <= EXACT
    assert error(outputs(materialize(tnet).eval(), x), a) <= EXACT


def test_each_tensor_conv_knows_its_group_and_index():
    tnet = convert("resnet")
    convs = {c.group: [] for c in tnet.tensor_convs()}
    for conv in tnet.tensor_convs():
        convs[conv.group].append(conv.index)
    assert convs == {
        "layer1": [(0, 0), (0, 1), (1, 0), (1, 1)],
        "layer2": [(0,), (1,), (2,), (3,), (4,)],
        "layer3": [(0,), (1,), (2,)],
    }
    assert isinstance(tnet.net.layer2[0].conv1, nn.Conv2d)  # the stride-2 entry stays dense
    assert isinstance(tnet.net.layer2[0].conv2, TensorConv2d)


# -- the T-Net's groups ------------------------------------------------------------------------


def test_a_multi_group_tnet_names_its_groups_and_refuses_single_tensor_questions():
    tnet = convert("resnet", ranks="layer2:f_in=4")
    assert list(tnet.groups) == ["layer1", "layer2", "layer3"]
    assert tnet.groups["layer2"].tensor.ranks == (5, 4, 8, 3, 3)
    assert tnet.groups["layer3"].family.mode_names == ("block_conv",)
    assert tnet.method == "tucker"
    message = r"this T-Net has 3 tensors \(groups layer1, layer2, layer3\) and no single tensor"
    with pytest.raises(TcompressError, match=message):
        _ = tnet.tensor
    with pytest.raises(
        TcompressError, match=r"no single ranks; .* use groups\[name\].tensor.ranks"
    ):
        _ = tnet.ranks
    with pytest.raises(TcompressError, match="no single tensor"):
        tnet.full_tensor()
    assert "layer2: (5, 4, 8, 3, 3)" in repr(tnet)


def test_the_summary_lists_every_group():
    tnet = convert("resnet", ranks="layer3:f_out=8")
    summary = tnet.summary
    assert summary["ranks"] == summary["mode_names"] == summary["mode_sizes"] == []
    assert [g["name"] for g in summary["groups"]] == ["layer1", "layer2", "layer3"]
    keys = {
        "name",
        "mode_names",
        "mode_sizes",
        "ranks",
        "members",
        "tensor_params_before",
        "tensor_params_after",
        "relative_error",
        "mode_values",
    }
    assert all(set(g) == keys for g in summary["groups"])
    layer3 = summary["groups"][2]
    assert layer3["mode_sizes"] == [3, 16, 16, 3, 3] and layer3["ranks"] == [3, 16, 8, 3, 3]
    assert layer3["members"] == 3 and layer3["mode_values"] == [["0.2", "1.1", "1.2"]]
    assert layer3["tensor_params_before"] == 3 * 16 * 16 * 9
    tensors = sum(p.numel() for g in tnet.groups.values() for p in g.tensor.parameters())
    assert sum(g["tensor_params_after"] for g in summary["groups"]) == tensors
    assert summary["tensor_params_after"] == tensors
    assert summary["params_after"] == sum(p.numel() for p in tnet.parameters())
    assert summary["tensor_params_before"] == sum(
        g["tensor_params_before"] for g in summary["groups"]
    )
    assert summary["groups"][0]["relative_error"] < 1e-6 < layer3["relative_error"]
    assert 0 < summary["relative_error"] < layer3["relative_error"]
    assert len(summary["left_out"]) == 2


# -- ranks per group ---------------------------------------------------------------------------


def test_ranks_per_group_and_ranks_for_every_group_where_they_fit():
    ranks = {g["name"]: g["ranks"] for g in convert("resnet", ranks="f_in=4").summary["groups"]}
    assert ranks == {
        "layer1": [2, 2, 4, 4, 3, 3],
        "layer2": [5, 4, 8, 3, 3],
        "layer3": [3, 4, 16, 3, 3],
    }
    tnet = convert("resnet", ranks="f_in=8,f_out=8;layer3:block_conv=2")
    ranks = {g["name"]: g["ranks"] for g in tnet.summary["groups"]}
    # f_in=8 does not fit layer1 (width 4): it keeps full ranks, and a note says why
    assert ranks == {
        "layer1": [2, 2, 4, 4, 3, 3],
        "layer2": [5, 8, 8, 3, 3],
        "layer3": [2, 16, 16, 3, 3],
    }
    assert any(
        n.startswith("ranks 'f_in=8,f_out=8' do not fit group layer1")
        for n in tnet.summary["notes"]
    )
    tnet = convert("resnet", ranks={"layer1": {"block": 1}, "layer2": "f_out=2"})
    assert [g["ranks"][:3] for g in tnet.summary["groups"]] == [[1, 2, 4], [5, 8, 2], [3, 16, 16]]
    mps = convert("resnet", "mps", "layer2:2;layer3:3,3,3,3")
    assert [g["ranks"] for g in mps.summary["groups"]][1:] == [[2, 2, 2, 2], [3, 3, 3, 3]]
    cp = convert("resnet", "cp", "layer1:4;layer2:5;layer3:6")
    assert [g["ranks"] for g in cp.summary["groups"]] == [[4], [5], [6]]
    assert (
        methods.get("cp").initialisation(cp.summary).endswith("ranks layer1 4, layer2 5, layer3 6")
    )


@pytest.mark.parametrize(
    "ranks, message",
    [
        (
            "layer9:f_in=2",
            "ranks 'layer9:f_in=2' name group 'layer9', which the family has not; "
            "expected one of layer1, layer2, layer3",
        ),
        (
            "layer2:stage=1",
            "group layer2: ranks name unknown mode(s) 'stage'; expected mode "
            "names from block_conv, f_in, f_out, h, w",
        ),
        ("layer2:f_in=9", r"group layer2: rank of mode f_in is 9; expected an integer from 1 to 8"),
        (
            "f_in=99",
            "ranks 'f_in=99' fit none of the groups they apply to (layer1: rank of mode f_in is 99",
        ),
        ("2,2;f_in=2", "have two parts without a group"),
        ("layer1:2;layer1:3", "give group 'layer1' twice"),
        (":2", "without its group's name"),
    ],
)
def test_bad_group_ranks_are_one_line_errors(ranks, message):
    with pytest.raises(RankError, match=message.replace("(", r"\(").replace(")", r"\)")):
        convert("resnet", ranks=ranks)


def test_a_hourglass_takes_its_group_name_too():
    tnet = tcompress.convert(make_hourglass(), ranks="hourglasses:f_in=4")
    assert tnet.ranks == (2, 2, 3, 2, 4, 8, 3, 3)
    with pytest.raises(RankError, match="name group 'layer1'.*expected one of hourglasses"):
        tcompress.convert(make_hourglass(), ranks="layer1:f_in=4")


# -- targets across groups ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, method, ratio",
    [
        ("resnet", "tucker", 1.5),
        ("resnet", "tucker", 3),
        ("vgg", "tucker", 2),
        ("unet", "tucker", 2),
        ("resnet", "mps", 2),
        ("unet", "tr", 1.5),
        ("resnet", "cp", 2),
    ],
)
def test_ratio_targets_are_met_across_groups(name, method, ratio):
    tnet = convert(name, method, ratio=ratio, refine=2 if method == "cp" else 0)
    achieved = tnet.summary["compression_ratio"]
    assert ratio <= achieved <= ratio * (1 + RATIO_TOLERANCE)
    assert abs(achieved / ratio - 1) <= 0.03
    assert tnet.summary["target"] == f"ratio {ratio:g}"
    assert len(tnet.summary["groups"]) > 1
    if method in ("tucker", "mps"):
        assert tnet.summary["predicted_error"] >= tnet.summary["relative_error"] - 1e-6


def test_a_ratio_keeps_the_ranks_given_for_a_group():
    tnet = convert("resnet", ranks="layer3:f_in=8,f_out=8", ratio=2)
    layer3 = tnet.summary["groups"][2]
    assert layer3["ranks"][1:3] == [8, 8]
    assert 2 <= tnet.summary["compression_ratio"] <= 2 * (1 + RATIO_TOLERANCE)


def test_an_energy_target_spans_the_groups():
    tnet = convert("resnet", energy=0.9)
    assert tnet.summary["target"] == "energy 0.9"
    assert tnet.summary["compression_ratio"] > 1


def test_layerwise_ratio_and_ranks_per_group(x):
    tnet = convert("resnet", "layerwise-tucker", ratio=2)
    assert abs(tnet.summary["compression_ratio"] / 2 - 1) < 0.3  # the nearest uniform rank
    ranks = [g["ranks"] for g in tnet.summary["groups"]]
    assert ranks[0] == [min(ranks[2][0], 4)] * 2  # one rank for every layer, capped at width 4
    tai = convert("resnet", "tai", "layer2:3")
    assert [g["ranks"] for g in tai.summary["groups"]] == [[12], [3], [48]]
    with pytest.raises(TcompressError, match="groups have ranks of their own"):
        _ = tai.ranks


@pytest.mark.parametrize("method", ["tucker", "mps", "tr"])
def test_data_chooses_the_ranks_of_every_group(method):
    images = [torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))]
    bound = convert("resnet", method, ratio=2)
    tnet = convert("resnet", method, ratio=2, data=images, refine_samples=4)
    s = tnet.summary
    assert 2 <= s["compression_ratio"] <= 2 * (1 + RATIO_TOLERANCE)
    assert s["predicted_error"] is None  # measured costs bound nothing
    assert bound.summary["predicted_error"] is not None
    assert not any("did not choose" in note for note in s["notes"])
    assert s["rank_search"] is None  # the climb is one tensor's
    ranks = [g["ranks"] for g in s["groups"]]
    assert ranks != [g["ranks"] for g in bound.summary["groups"]]
    if method == "tr":
        assert all(r[-1] == 1 for r in ranks)  # a ring of bond 1, as without data


def test_data_that_cannot_choose_says_so_for_every_group():
    images = [torch.rand(4, 3, 16, 16)]
    cp = convert("resnet", "cp", ratio=2, refine=2, data=images, refine_samples=4)
    assert (
        "the data did not choose the ranks: cp has no data-aware allocation (Tucker, MPS and TR "
        "have; CP's one rank is the ratio's)" in cp.summary["notes"]
    )
    layerwise = convert("resnet", "layerwise-tucker", ratio=2, data=images, refine_samples=4)
    assert (
        "the data did not choose the ranks: layerwise-tucker has no data-aware allocation (its "
        "one rank for every layer is the ratio's; per-layer ranks are chosen on it)"
        in layerwise.summary["notes"]
    )


def test_cli_converts_several_groups_on_data(tmp_path):
    torch.save(dense("resnet").state_dict(), tmp_path / "r.pth")
    args = ["convert", str(tmp_path / "r.pth"), "--arch", RESNET[0], "--family", RESNET[1]]
    out = tmp_path / "t.pt"
    options = ["--ratio", "2", "--data", "synthetic", "--refine-samples", "2", "--json"]
    r = CliRunner().invoke(main, [*args, *options, "-o", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert len(summary["groups"]) == 3 and summary["predicted_error"] is None
    assert abs(summary["compression_ratio"] / 2 - 1) <= 0.03 and out.exists()


@pytest.mark.parametrize("method, ranks", [("tucker", "f_in=3,f_out=3"), ("tai", "2")])
def test_refine_data_fits_every_group(method, ranks):
    images = [torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))]
    tnet = convert("resnet", method, ranks, refine_data=images, refine_iterations=5)
    fit = tnet.summary["data_aware"]
    assert [g["name"] for g in fit["groups"]] == ["layer1", "layer2", "layer3"]
    assert all(g["error_after"] <= g["error_before"] for g in fit["groups"])
    assert fit["error_after"] <= fit["error_before"]


# -- files and exports -------------------------------------------------------------------------


@pytest.mark.parametrize("method, ranks", [("tucker", "f_in=3"), ("tr", "2"), ("tai", "2")])
def test_save_and_load_round_trip(tmp_path, method, ranks, x):
    tnet = convert("resnet", method, ranks).eval()
    tcompress.save(tnet, tmp_path / "t.pt")
    payload = torch.load(tmp_path / "t.pt", weights_only=True)
    assert payload["format_version"] == 2 and payload["ranks"] == []
    assert [g["name"] for g in payload["groups"]] == ["layer1", "layer2", "layer3"]
    loaded = tcompress.load(tmp_path / "t.pt", arch=RESNET[0], forward="factorized").eval()
    assert error(outputs(loaded, x), outputs(tnet, x)) <= EXACT
    assert loaded.summary["groups"] == tnet.summary["groups"]
    if method != "tai":
        assert list(loaded.groups) == list(tnet.groups)


def test_a_hourglass_file_is_unchanged(tmp_path):
    tcompress.save(tcompress.convert(make_hourglass(), ranks="f_in=4"), tmp_path / "t.pt")
    payload = torch.load(tmp_path / "t.pt", weights_only=True)
    assert payload["format_version"] == 1 and "groups" not in payload
    assert "name" not in payload["architecture"]["family"]
    assert payload["ranks"] == [2, 2, 3, 2, 4, 8, 3, 3]


@pytest.mark.parametrize("name", ["resnet", "unet"])
def test_factorized_export_validates_and_shares_each_groups_factors(tmp_path, name):
    tnet = convert(name, ranks="f_in=3,f_out=3").eval()
    report = export_onnx(tnet, tmp_path / "t.onnx", "factorized", input_size=16)
    assert report.validation.ok
    model = onnx.load(tmp_path / "t.onnx")
    uses = Counter(n.input[1] for n in model.graph.node if n.op_type == "Conv")
    shared = sorted(c for c in uses.values() if c > 1)
    members = [g["members"] for g in tnet.summary["groups"]]
    # Tucker: U5^T and U6 of each group, each one initializer used by every member
    assert shared == sorted(members * 2)


def test_dense_and_fp16_exports_validate(tmp_path):
    tnet = convert("vgg", ranks="f_in=3").eval()
    assert export_onnx(tnet, tmp_path / "d.onnx", "dense", input_size=16).validation.ok
    report = export_onnx(tnet, tmp_path / "h.onnx", "factorized", input_size=16, precision="fp16")
    assert report.validation.ok


# -- the command line --------------------------------------------------------------------------


def test_cli_converts_with_ranks_per_group_and_exports(tmp_path):
    torch.save(dense("resnet").state_dict(), tmp_path / "r.pth")
    runner = CliRunner()
    args = ["convert", str(tmp_path / "r.pth"), "--arch", RESNET[0], "--family", RESNET[1]]
    out = str(tmp_path / "t.pt")
    r = runner.invoke(main, [*args, "--ranks", "layer1:f_in=2;layer3:f_out=4", "-o", out, "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert [g["ranks"][-4:-2] for g in summary["groups"]] == [[2, 4], [8, 8], [16, 4]]
    r = runner.invoke(main, [*args, "--ranks", "layer7:f_in=2", "-o", out, "--force"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1].endswith("expected one of layer1, layer2, layer3")
    r = runner.invoke(main, [*args, "--ratio", "2", "-o", out, "--force", "--json"])
    assert r.exit_code == 0, r.output
    assert abs(json.loads(r.stdout)["compression_ratio"] / 2 - 1) <= 0.03
    onnx_out = str(tmp_path / "t.onnx")
    r = runner.invoke(
        main, ["export", out, "--arch", RESNET[0], "--input-size", "16", "-o", onnx_out]
    )
    assert r.exit_code == 0, r.output
