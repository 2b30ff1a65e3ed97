"""A network of the user's own (converted with --arch and --family) through every command: modes
described by the pattern's names, one block per tensor group, --arch where the command can use
it, and a clear refusal, pointing to the example, where the command is made for pose networks."""

import io
import json
import re

import pytest
import torch
from click.testing import CliRunner
from rich.console import Console
from torch import nn

from tcompress.cli import main
from tcompress.cli.analyze import spectra_tables, sweep_table
from tcompress.cli.render import print_summary
from tcompress.errors import TcompressError
from tcompress.experiments.analysis import Analysis, SweepPoint, analyze
from tcompress.family import pattern_family
from tcompress.stacking import MODE_DESCRIPTIONS, MODE_NAMES, mode_descriptions

from .conftest import make_hourglass
from .family_models import Block, random_weights, resnet

RESNET = ("tests.family_models:resnet", "layer{stage}.{block}.conv{conv}")
TWO_WIDTHS = ("tests.test_custom_commands:two_widths", "layer{stage}.{block}.conv{conv}")
#: What ``info`` must never say about a network of the user's own.
HOURGLASS_WORDS = re.compile(r"hourglass|skip / down|pathway|stack", re.IGNORECASE)
KERNEL_MEANINGS = ["input features", "output features", "kernel height", "kernel width"]
EXAMPLE = "examples/custom_network.py"


class TwoWidths(nn.Module):
    """Two stages of two blocks at widths 8 and 16 (a 1x1 convolution widens between them):
    the pattern's kernels fall in two groups of four same-shape kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(Block(8), Block(8))
        self.widen = nn.Conv2d(8, 16, 1)
        self.layer2 = nn.Sequential(Block(16), Block(16))
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = self.layer2(self.widen(self.layer1(torch.relu(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


def two_widths() -> TwoWidths:
    return TwoWidths()


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def rendered(draw) -> str:
    """What ``draw(console)`` prints, on a console wide enough that no cell wraps."""
    out = io.StringIO()
    draw(Console(file=out, width=400, highlight=False, color_system=None))
    return out.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A dense ResNet checkpoint, its Tucker T-Net (converted with --arch) and that T-Net's ONNX
    export."""
    d = tmp_path_factory.mktemp("custom")
    torch.save(random_weights(resnet()).state_dict(), d / "r.pth")
    r = cli(
        "convert",
        d / "r.pth",
        "--arch",
        RESNET[0],
        "--family",
        RESNET[1],
        "--ranks",
        "f_in=4",
        "-o",
        d / "t.pt",
    )
    assert r.exit_code == 0, r.output
    r = cli("export", d / "t.pt", "--arch", RESNET[0], "--input-size", "16", "-o", d / "t.onnx")
    assert r.exit_code == 0, r.output
    return {"dense": d / "r.pth", "tnet": d / "t.pt", "onnx": d / "t.onnx", "dir": d}


# --- what each mode means ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["StackedHourglass", "BearpawHourglass", "PoseNet"])
def test_hourglass_modes_keep_their_descriptions(layout):
    summary = {"mode_names": list(MODE_NAMES), "architecture": layout}
    assert mode_descriptions(summary) == list(MODE_DESCRIPTIONS)
    assert mode_descriptions({"mode_names": list(MODE_NAMES)}) == list(MODE_DESCRIPTIONS)
    assert MODE_DESCRIPTIONS == (
        "hourglass in the stack",
        "level of the hourglass",
        "skip / down / up",
        "convolution in the block",
        "input features",
        "output features",
        "kernel height",
        "kernel width",
    )


def test_custom_modes_are_described_by_their_own_names():
    family = pattern_family(random_weights(resnet()), "layer{stage}.{block}.conv2")
    lines = mode_descriptions(family.to_dict())
    assert lines == [
        "stage (from the module names: values 1, 2, 3)",
        "block (from the module names: values 0, 1)",
        *KERNEL_MEANINGS,
    ]
    # A summary says which architecture it is; its values, where it has none, are its only
    # group's; without any, each grid mode is named alone.
    names = ["stage", "block", "conv", "f_in", "f_out", "h", "w"]
    group = {"mode_names": names, "mode_values": [["1", "2", "3", "4"], ["0", "1"], ["1", "2"]]}
    lines = mode_descriptions({"mode_names": names, "architecture": "custom", "groups": [group]})
    assert lines[0] == "stage (from the module names: values 1, 2, 3, 4)"
    assert lines[3:] == KERNEL_MEANINGS
    assert mode_descriptions({"mode_names": names, "architecture": "custom"})[:3] == [
        "stage (from the module names)",
        "block (from the module names)",
        "conv (from the module names)",
    ]
    # Modes named like the hourglass's are still the pattern's in a custom network.
    custom = {"mode_names": list(MODE_NAMES), "architecture": "custom"}
    assert mode_descriptions(custom)[0] == "stack (from the module names)"


def test_long_and_merged_modes_are_shortened():
    many = mode_descriptions(
        {"mode_names": ["block"], "mode_values": [[str(i) for i in range(16)]]}
    )
    assert many[0] == "block (from the module names: values 0, 1, 2, 3, ..., 15 (16 values))"
    cells = ["0.2", "1.1", "1.2"]
    merged = mode_descriptions({"mode_names": ["block_conv"], "mode_values": [cells]})
    assert (
        merged[0]
        == "block_conv (from the module names: block.conv of the kernels present, 0.2, 1.1, 1.2)"
    )
    # "res_block" and "conv" joined: the name does not say where one part ends.
    odd = mode_descriptions({"mode_names": ["res_block_conv"], "mode_values": [["0.1", "1.2"]]})
    assert odd[0] == (
        "res_block_conv (from the module names: parts of the kernels present, 0.1, 1.2)"
    )


# --- info and convert: one tensor, or one block per group ---------------------------------------


def test_info_of_a_custom_tnet_speaks_of_its_own_modes(files):
    r = cli("info", files["tnet"], "--arch", RESNET[0])
    assert r.exit_code == 0, r.output
    assert not HOURGLASS_WORDS.search(r.output), r.output
    assert "T-Net of a custom network" in r.output
    summary = json.loads(cli("info", files["tnet"], "--json").stdout)["summary"]
    grid = summary["mode_names"][: -len(KERNEL_MEANINGS)]
    for name in grid:
        assert f"{name} (from the module names" in r.output
    for meaning in KERNEL_MEANINGS:
        assert meaning in r.output
    # Without --arch, the recorded figures: described alike.
    r = cli("info", files["tnet"])
    assert r.exit_code == 0 and not HOURGLASS_WORDS.search(r.output), r.output


def test_info_of_a_hourglass_tnet_is_unchanged(tmp_path, checkpoint):
    out = tmp_path / "t.pt"
    assert cli("convert", checkpoint, "--ranks", "f_in=4", "-o", out).exit_code == 0
    r = cli("info", out)
    assert r.exit_code == 0, r.output
    assert "T-Net of a StackedHourglass" in r.output
    for meaning in MODE_DESCRIPTIONS:
        assert meaning in r.output
    assert "from the module names" not in r.output


def group(name, members, grid, sizes, ranks, before, after, error, values):
    """A summary's entry for one tensor, with the keys the conversion writes."""
    names = [*grid, "f_in", "f_out", "h", "w"]
    return {
        "name": name,
        "mode_names": names,
        "mode_sizes": sizes,
        "ranks": ranks,
        "members": members,
        "tensor_params_before": before,
        "tensor_params_after": after,
        "relative_error": error,
        "mode_values": values,
    }


def summary_with(groups, method="tucker"):
    """A custom network's conversion summary, its tensors as ``groups`` (as the conversion
    will write them); the top-level modes are the first group's."""
    first = groups[0]
    return {
        "method": method,
        "ranks": first["ranks"],
        "mode_names": first["mode_names"],
        "mode_sizes": first["mode_sizes"],
        "tensor_params_before": sum(g["tensor_params_before"] for g in groups),
        "tensor_params_after": sum(g["tensor_params_after"] for g in groups),
        "params_before": 400_000,
        "params_after": 150_000,
        "compression_ratio": 400_000 / 150_000,
        "relative_error": 0.25,
        "errors": [0.25],
        "notes": [],
        "seconds": 0.5,
        "target": "ratio 2.67",
        "predicted_error": 0.3,
        "architecture": "custom",
        "left_out": [
            "layer2.0.conv1 (shape 128x64x3x3, stride (2, 2), padding (1, 1); no other "
            "matching convolution has this geometry)"
        ],
        "groups": groups,
    }


LAYER1 = group(
    "layer1",
    6,
    ["block", "conv"],
    [3, 2, 64, 64, 3, 3],
    [3, 2, 32, 32, 3, 3],
    221_184,
    55_000,
    0.21,
    [["0", "1", "2"], ["1", "2"]],
)
LAYER2 = group(
    "layer2",
    7,
    ["block_conv"],
    [7, 128, 128, 3, 3],
    [4, 48, 48, 3, 3],
    1_032_192,
    83_000,
    0.33,
    [["0.2", "1.1", "1.2", "2.1", "2.2", "3.1", "3.2"]],
)


def test_one_block_per_group():
    out = rendered(lambda c: print_summary(c, summary_with([LAYER1, LAYER2])))
    assert not HOURGLASS_WORDS.search(out), out
    assert "one tensor per group of same-shape kernels (2 tensors)" in out
    assert "ranks chosen for ratio 2.67 (predicted relative error at most 0.3)" in out
    assert "Tensor 1 of 2: layer1, 6 kernels, initialised by HOSVD" in out
    assert "Tensor 2 of 2: layer2, 7 kernels, initialised by HOSVD" in out
    assert "Weight tensor W" not in out
    rows = [re.split(r"\s*│\s*", line.strip(" │")) for line in out.splitlines() if "│" in line]
    assert ["1", "block", "block (from the module names: values 0, 1, 2)", "3", "3 (full)"] in rows
    assert ["2", "conv", "conv (from the module names: values 1, 2)", "2", "2 (full)"] in rows
    assert ["3", "f_in", "input features", "64", "32"] in rows
    merged = (
        "block_conv (from the module names: block.conv of the kernels present, 0.2, 1.1, 1.2, "
        "2.1, ..., 3.2 (7 kernels))"
    )
    assert [r for r in rows if r[:2] == ["1", "block_conv"]][0][2] == merged
    assert ["2", "f_in", "input features", "128", "48"] in rows
    assert ["5", "w", "kernel width", "3", "3 (full)"] in rows
    assert (
        "layer1: parameters 221,184 -> 55,000 (4.02x), relative error ||W - W_hat|| / ||W|| 0.21"
        in out
    )
    assert "layer2: parameters 1,032,192 -> 83,000 (12.44x)" in out
    assert ["2 tensors", "1,253,376", "138,000", "9.08x"] in rows
    assert ["whole network", "400,000", "150,000", "2.67x"] in rows
    assert "relative error of every tensor together ||W - W_hat|| / ||W||: 0.25" in out
    assert "1 matching convolution(s) left dense" in out


def test_bond_ranks_per_group():
    mps = [dict(LAYER1, ranks=[3, 6, 48, 24, 3]), dict(LAYER2, ranks=[7, 48, 24, 3])]
    out = rendered(lambda c: print_summary(c, summary_with(mps, method="mps")))
    assert "layer1: bond ranks" in out and "layer2: bond ranks" in out
    assert "Tensor 2 of 2: layer2, 7 kernels, initialised by TT-SVD" in out
    rows = [re.split(r"\s*│\s*", line.strip(" │")) for line in out.splitlines() if "│" in line]
    assert ["3", "f_in | f_out", "48"] in rows and ["1", "block_conv | f_in", "7"] in rows


def test_one_group_shows_the_single_tensor_display():
    summary = summary_with([LAYER1])
    out = rendered(lambda c: print_summary(c, summary))
    assert "T-Net of a custom network: Tucker, initialised by HOSVD" in out
    assert "Weight tensor W" in out and "Tensor 1 of" not in out
    assert "ranks chosen for ratio 2.67: 3,2,32,32,3,3" in out
    assert "block (from the module names: values 0, 1, 2)" in out
    bare = dict(summary, mode_names=[], mode_sizes=[], ranks=[])  # modes in the group alone
    assert rendered(lambda c: print_summary(c, summary)) == rendered(
        lambda c: print_summary(c, bare)
    )
    no_groups = {k: v for k, v in summary.items() if k != "groups"}
    out = rendered(lambda c: print_summary(c, no_groups))
    assert "block (from the module names)" in out and "relative error ||W - W_hat||" in out
    # A saved file's family names the values the summary lacks.
    family = {"mode_names": ["block", "conv"], "mode_values": [["0", "1", "2"], ["1", "2"]]}
    out = rendered(lambda c: print_summary(c, no_groups, architecture={"family": family}))
    assert "block (from the module names: values 0, 1, 2)" in out


def test_info_renders_the_groups_a_file_records(files, tmp_path):
    payload = torch.load(files["tnet"], weights_only=True)
    payload["summary"] = dict(summary_with([LAYER1, LAYER2]), source=None)
    torch.save(payload, tmp_path / "groups.pt")
    r = cli("info", tmp_path / "groups.pt")
    assert r.exit_code == 0, r.output
    assert "Tensor 1 of 2: layer1, 6 kernels" in r.output
    assert "Tensor 2 of 2: layer2, 7 kernels" in r.output
    assert not HOURGLASS_WORDS.search(r.output), r.output


# --- analyze ------------------------------------------------------------------------------------


def test_analyze_a_custom_network(files, tmp_path):
    out = tmp_path / "an"
    r = cli(
        "analyze",
        files["dense"],
        "--arch",
        RESNET[0],
        "--family",
        RESNET[1],
        "--points",
        "2",
        "-o",
        out,
    )
    assert r.exit_code == 0, r.output
    assert not HOURGLASS_WORDS.search(r.output), r.output
    assert "meaning" in r.output and "input features" in r.output
    record = json.loads((out / "analysis.json").read_text())
    assert record["architecture"] == "custom"
    assert record["config"] == {"factory": RESNET[0], "pattern": RESNET[1]}
    assert record["mode_values"] and record["mode_names"][-4:] == ["f_in", "f_out", "h", "w"]
    meanings = mode_descriptions(record)
    assert meanings[0].startswith(f"{record['mode_names'][0]} (from the module names: ")
    assert meanings[-4:] == KERNEL_MEANINGS


def test_analyze_refuses_pose_data_for_a_custom_network(files, tmp_path):
    r = cli(
        "analyze",
        files["dense"],
        "--arch",
        RESNET[0],
        "--family",
        RESNET[1],
        "--data",
        "synthetic",
        "-o",
        tmp_path / "an",
    )
    assert r.exit_code == 2
    assert "--data synthetic scores every sweep point by PCKh@0.5 on pose heatmaps" in r.output
    assert f"--arch {RESNET[0]} is your own" in r.output
    assert not (tmp_path / "an" / "analysis.json").exists()


def test_analyze_a_network_of_two_groups(tmp_path):
    torch.save(random_weights(two_widths()).state_dict(), tmp_path / "w.pth")
    report = analyze(tmp_path / "w.pth", arch=TWO_WIDTHS[0], family=TWO_WIDTHS[1], points=2)
    assert [g["name"] for g in report.groups] == ["layer1", "layer2"]
    assert [g["mode_sizes"][-4:] for g in report.groups] == [[8, 8, 3, 3], [16, 16, 3, 3]]
    assert {p.group for p in report.sweep} == {"layer1", "layer2"}
    r = cli(
        "analyze",
        tmp_path / "w.pth",
        "--arch",
        TWO_WIDTHS[0],
        "--family",
        TWO_WIDTHS[1],
        "--points",
        "2",
        "-o",
        tmp_path / "an",
    )
    assert r.exit_code == 0, r.output
    assert "Energy of tensor 1 of 2, layer1 (4 kernels)" in r.output
    assert "Energy of tensor 2 of 2, layer2 (4 kernels)" in r.output


def test_analysis_tables_per_group():
    energy = {"block": [0.7, 1.0], "f_in": [0.5, 0.9, 1.0, 1.0]}
    groups = [
        {
            "name": name,
            "members": 2,
            "mode_names": ["block", "f_in"],
            "mode_sizes": [2, 4],
            "mode_values": [["0", "1"]],
            "tensor_params": 8,
            "energy": energy,
        }
        for name in ("layer1", "layer2")
    ]
    report = Analysis(
        {"factory": "m:f", "pattern": "p"},
        ["block", "f_in"],
        [2, 4],
        100,
        8,
        energy,
        architecture="custom",
        mode_values=[["0", "1"]],
        groups=groups,
    )
    report.sweep = [SweepPoint("f_in", 1, [2, 1], 90, 1.1, 0.7, group="layer2")]
    out = rendered(lambda c: [c.print(t) for t in [*spectra_tables(report), sweep_table(report)]])
    assert "Energy of tensor 2 of 2, layer2 (2 kernels)" in out
    assert "block (from the module names: values 0, 1)" in out
    rows = [re.split(r"\s*│\s*", line.strip(" │")) for line in out.splitlines() if "│" in line]
    assert ["layer2", "f_in", "1/4", "1.10x", "0.7000"] in rows


def test_info_of_a_dense_custom_checkpoint_shows_the_tensors_it_would_make(files, tmp_path):
    r = cli("info", files["dense"], "--arch", RESNET[0], "--family", RESNET[1])
    assert r.exit_code == 0, r.output
    assert "built by tests.family_models:resnet" in r.output
    assert "block convolutions form" in r.output and "left dense: layer" in r.output
    assert not HOURGLASS_WORDS.search(r.output.replace(str(files["dense"]), ""))
    r = cli("info", files["dense"], "--arch", RESNET[0], "--family", RESNET[1], "--json")
    described = json.loads(r.output)
    assert described["kind"] == "dense" and described["groups"]
    assert sum(g["members"] for g in described["groups"]) == described["block_convs"]
    assert described["tensor_params"] == sum(g["tensor_params"] for g in described["groups"])
    torch.save(random_weights(two_widths()).state_dict(), tmp_path / "w.pth")
    r = cli("info", tmp_path / "w.pth", "--arch", TWO_WIDTHS[0], "--family", TWO_WIDTHS[1])
    assert r.exit_code == 0, r.output
    assert "form 2 tensors" in r.output and "layer1: 4 kernels" in r.output
    r = cli("info", files["dense"], "--arch", RESNET[0])
    assert r.exit_code != 0 and "--arch is given without --family" in r.output


# --- --arch on the commands that can use it; refusals where a command is made for pose ---------


@pytest.mark.parametrize("command", ["info", "analyze", "export"])
def test_arch_option(command):
    r = cli(command, "--help")
    assert r.exit_code == 0 and "--arch MODULE:FACTORY" in r.output


def test_bench_times_a_custom_export_without_arch(files):
    text = " ".join(cli("bench", "--help").output.split())
    assert "--arch MODULE:FACTORY" not in text and "bench needs no --arch" in text
    r = cli("bench", files["onnx"], files["onnx"], "--repeats", "1", "--warmup", "0", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["settings"]["input_size"] == [16, 16]


@pytest.mark.parametrize(
    "args, says",
    [
        (
            ["--check", "synthetic"],
            "tcompress export --check scores the exported file's pose heatmaps (PCKh@0.5 on "
            "joints), and expects a stacked hourglass of a layout it knows. Export it without "
            "--check",
        ),
        (
            ["--precision", "int8", "--calibrate", "synthetic"],
            "tcompress export --precision int8 calibrates the INT8 ranges on images prepared as "
            "the hourglasses expect them",
        ),
    ],
)
def test_export_refuses_pose_checks_and_calibration_of_a_custom_tnet(files, tmp_path, args, says):
    out = tmp_path / "t.onnx"
    r = cli("export", files["tnet"], "--arch", RESNET[0], "--input-size", "16", *args, "-o", out)
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert line.count("\n") == 0 and says in line and EXAMPLE in line
    assert not out.exists()


@pytest.mark.parametrize("command", ["finetune", "evaluate", "recalibrate"])
def test_pose_commands_say_they_refuse_a_custom_network(command):
    text = " ".join(cli(command, "--help").output.split())
    assert "converted with --arch" in text and "refused" in text and EXAMPLE in text
    assert "--arch MODULE:FACTORY" not in text


@pytest.mark.parametrize(
    "command, args, says",
    [
        (
            "finetune",
            ["--data", "synthetic", "--steps", "1"],
            "tcompress finetune trains on pose heatmaps (heatmap loss on every stack, PCKh@0.5 on "
            "joints), and expects a stacked hourglass of a layout it knows. Fine-tune it in your "
            "own PyTorch training loop: tcompress.load(",
        ),
        (
            "evaluate",
            ["-n", "2"],
            "tcompress evaluate scores pose heatmaps (PCKh@0.5 on joints), and expects a stacked "
            "hourglass of a layout it knows. Score it with your own metric on tcompress.load(",
        ),
        (
            "recalibrate",
            ["--data", "synthetic", "-n", "2"],
            "tcompress recalibrate feeds it images prepared as the hourglasses expect them (crop, "
            "size, pixel scale), not as your network's own preprocessing does, and expects a "
            "stacked hourglass of a layout it knows. Re-estimate its BatchNorm statistics on your "
            "own image batches with tcompress.train.recalibrate_batchnorm(tcompress.load(",
        ),
    ],
)
def test_pose_commands_refuse_a_custom_tnet(files, tmp_path, command, args, says):
    out = tmp_path / "out.pt"
    extra = [] if command == "evaluate" else ["-o", out]
    r = cli(command, files["tnet"], *args, *extra)
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert line.count("\n") == 0 and line.startswith("Error: ")
    assert (
        f"'{files['tnet']}' holds a network built by '{RESNET[0]}' (converted with --arch)" in line
    )
    assert says in line
    assert f"arch='{RESNET[0]}')" in line and line.endswith(f"({EXAMPLE} shows how)")
    assert not out.exists()


def test_evaluate_refuses_an_onnx_file_without_heatmaps(files):
    r = cli("evaluate", files["onnx"], "-n", "2")
    assert r.exit_code == 2, r.output
    assert (
        f"ONNX file '{files['onnx']}' has output(s) 'output' of shape (batch, 5); tcompress "
        "evaluate scores pose heatmaps (PCKh@0.5 on joints) and expects (N, joints, h, w) "
        "outputs" in r.output
    )
    assert f"({EXAMPLE} shows how)" in r.output


def test_pose_commands_still_take_a_hourglass(tmp_path):
    checkpoint, tnet = tmp_path / "hg.pth", tmp_path / "t.pt"
    torch.save(make_hourglass(n_joints=16).state_dict(), checkpoint)
    assert cli("convert", checkpoint, "--ranks", "f_in=4", "-o", tnet).exit_code == 0
    r = cli(
        "recalibrate",
        tnet,
        "--data",
        "synthetic",
        "-n",
        "2",
        "--batch-size",
        "2",
        "--image-size",
        "32",
        "-o",
        tmp_path / "r.pt",
    )
    assert r.exit_code == 0, r.output
    r = cli("export", tnet, "--input-size", "32", "-o", tmp_path / "t.onnx")
    assert r.exit_code == 0, r.output
    r = cli("evaluate", tmp_path / "t.onnx", "-n", "2", "--image-size", "32")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("call", ["finetune", "evaluate"])
def test_the_library_refuses_a_custom_network_for_pose_training_and_scoring(files, call):
    import tcompress

    net = tcompress.load(files["tnet"], arch=RESNET[0])
    with pytest.raises(
        TcompressError, match=f"converted with arch='{RESNET[0]}'; tcompress.{call}"
    ):
        getattr(tcompress, call)(net, "synthetic")
