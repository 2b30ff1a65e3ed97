"""MAC counts against closed forms, the interleaved ONNX Runtime benchmark, its errors and CLI."""

import json
import warnings

import onnx
import pytest
import torch
from click.testing import CliRunner

from tcompress.cli import main
from tcompress.errors import TcompressError
from tcompress.export.bench import INPUT_LAYOUT_KEY, KINDS, BenchError, bench_onnx, count_macs

S = 16  # the input size the files are exported at (only the batch dim is dynamic)


class Chain(torch.nn.Module):
    """1x1 (8 -> 4) -> 3x3 (4 -> 4) -> 1x1 (4 -> 8), as in a factorized T-Net convolution."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(8, 4, 1, bias=False)
        self.b = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.c = torch.nn.Conv2d(4, 8, 1)

    def forward(self, x):
        return self.c(self.b(self.a(x)))


class Separable(torch.nn.Module):
    """Depthwise 3x3 with stride 2, then a pointwise 8 -> 16."""

    def __init__(self):
        super().__init__()
        self.dw = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.pw = torch.nn.Conv2d(8, 16, 1)

    def forward(self, x):
        return self.pw(self.dw(x))


class Shared(torch.nn.Module):
    """The same 3x3 convolution (one weight, one bias) applied twice."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.relu(self.conv(x)))


class Head(torch.nn.Module):
    """A 1x1 convolution, global pooling and a linear layer (a Gemm)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 4, 1)
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x).mean((2, 3), keepdim=True), 1))


class Factored(torch.nn.Module):
    """A 3x3 convolution whose weight is rebuilt from two factors in every forward pass."""

    def __init__(self):
        super().__init__()
        self.u = torch.nn.Parameter(torch.randn(16, 2))
        self.v = torch.nn.Parameter(torch.randn(2, 8 * 9))

    def forward(self, x):
        return torch.nn.functional.conv2d(x, (self.u @ self.v).reshape(16, 8, 3, 3), padding=1)


def export(model, path, channels=8, fold=True):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model.eval(),
            (torch.randn(1, channels, S, S),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            dynamic_axes={"image": {0: "batch"}},
            do_constant_folding=fold,
        )
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    return {
        "conv3": export(torch.nn.Conv2d(8, 16, 3, padding=1), d / "conv3.onnx"),
        "chain": export(Chain(), d / "chain.onnx"),
        "separable": export(Separable(), d / "separable.onnx"),
        "shared": export(Shared(), d / "shared.onnx"),
        "head": export(Head(), d / "head.onnx"),
        "factored": export(Factored(), d / "factored.onnx", fold=False),
        "rgb": export(torch.nn.Conv2d(3, 16, 3, padding=1), d / "rgb.onnx", channels=3),
    }


def kinds(**counts):
    return {k: counts.get(k, 0) for k in KINDS}


def test_conv3x3_closed_form_at_any_size_and_batch(files):
    m = count_macs(files["conv3"], S)
    assert m.total == 16 * 8 * 9 * S * S
    assert m.by_kind == kinds(conv_kxk=16 * 8 * 9 * S * S)
    assert m.params == 16 * 8 * 9 + 16
    # The size and batch asked for replace the exported ones; a ModelProto works like a path.
    proto = onnx.load(files["conv3"])
    before = proto.SerializeToString()
    m = count_macs(proto, (12, 20), batch=3)
    assert m.total == 3 * 16 * 8 * 9 * 12 * 20
    assert proto.SerializeToString() == before  # the caller's model is left alone


def test_chain_separable_and_gemm(files):
    hw = S * S
    m = count_macs(files["chain"], S)
    assert m.by_kind == kinds(conv1x1=hw * (4 * 8 + 8 * 4), conv_kxk=hw * 4 * 4 * 9)
    assert m.total == sum(m.by_kind.values())
    assert m.params == 4 * 8 + (4 * 4 * 9 + 4) + (8 * 4 + 8)

    m = count_macs(files["separable"], S)
    out = (S // 2) ** 2  # stride 2
    assert m.by_kind == kinds(depthwise=out * 8 * 9, conv1x1=out * 16 * 8)

    m = count_macs(files["head"], S, batch=2)
    assert m.by_kind == kinds(conv1x1=2 * hw * 4 * 8, other=2 * 10 * 4)


def test_shared_weight_is_counted_once_in_params_but_twice_in_macs(files):
    graph = onnx.load(files["shared"]).graph
    assert sum(node.op_type == "Conv" for node in graph.node) == 2
    m = count_macs(files["shared"], S)
    assert m.params == 8 * 8 * 9 + 8
    assert m.total == 2 * 8 * 8 * 9 * S * S


def test_weights_computed_from_constants_are_not_per_inference(files):
    m = count_macs(files["factored"], S)
    assert m.total == m.by_kind["conv_kxk"] == 16 * 8 * 9 * S * S
    assert m.constant == 16 * 2 * 72  # u @ v, folded once by ONNX Runtime
    assert m.params == 16 * 2 + 2 * 72


def test_bench_ratios_and_fields(files):
    phases = []
    paths = [files["conv3"], files["chain"], files["conv3"]]
    results = bench_onnx(paths, input_size=S, repeats=3, warmup=1, progress=phases.append)
    assert [r.path for r in results] == paths
    assert all(r.input_shape == (1, 8, S, S) for r in results)
    first, chain, again = results
    for field in ("speedup", "size_ratio", "mac_bound", "bound_fraction", "params_ratio"):
        assert getattr(first, field) == 1.0
    assert first.macs == count_macs(files["conv3"], S).total
    assert chain.macs == count_macs(files["chain"], S).total
    assert chain.params == count_macs(files["chain"], S).params
    assert chain.mac_bound == pytest.approx(first.macs / chain.macs)
    assert chain.size_ratio == pytest.approx(first.size_bytes / chain.size_bytes)
    assert chain.bound_fraction == pytest.approx(chain.speedup / chain.mac_bound)
    for r in results:
        assert len(r.latencies_ms) == 3 and 0 < r.min_ms <= r.median_ms
        assert r.size_bytes > 0 and r.speedup > 0
    assert again.mac_bound == 1.0 and again.size_ratio == 1.0
    assert any("round 3/3" in p for p in phases)
    assert json.loads(json.dumps(chain.to_dict()))["macs"] == chain.macs


def test_missing_and_non_onnx_files(files, tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(BenchError, match=r"^ONNX file '.*nope\.onnx' does not exist$"):
        bench_onnx([files["conv3"], str(missing)], input_size=S, repeats=1)
    text = tmp_path / "notes.onnx"
    text.write_text("these are notes, not a model\n")
    with pytest.raises(TcompressError) as e:
        count_macs(str(text), S)
    assert str(e.value) == (
        f"'{text}' is not an ONNX model (not a protobuf); expected an ONNX model file, "
        "such as one written by torch.onnx.export or onnx.save"
    )
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(BenchError, match=r"is empty \(0 bytes\)"):
        bench_onnx([str(empty)], input_size=S)


def test_mismatched_channels_fixed_shapes_and_settings(files):
    with pytest.raises(BenchError) as e:
        bench_onnx([files["conv3"], files["rgb"]], input_size=S, repeats=1)
    assert str(e.value) == (
        f"input channels differ: '{files['conv3']}' takes 8, '{files['rgb']}' takes 3; "
        "expected every model to take the same input"
    )
    with pytest.raises(BenchError, match=r"takes a fixed input shape \(batch, 8, 16, 16\); "):
        bench_onnx([files["conv3"]], input_size=32, repeats=1)
    with pytest.raises(BenchError, match=r"^repeats is 0; expected a whole number >= 1$"):
        bench_onnx([files["conv3"]], input_size=S, repeats=0)
    with pytest.raises(BenchError, match=r"^input_size is \(16, 0\)"):
        count_macs(files["conv3"], (16, 0))


def cli(*args):
    return CliRunner().invoke(main, ["bench", *map(str, args)], env={"COLUMNS": "240"})


def test_cli_table_and_json(files):
    args = (files["conv3"], files["separable"], "--input-size", S, "--repeats", 2, "--warmup", 0)
    r = cli(*args)
    assert r.exit_code == 0, r.output
    for header in ("file", "params", "size x", "GMACs", "MAC bound", "speed-up", "of bound"):
        assert header in r.stdout
    assert "MAC bound = MACs of ref / MACs" in r.stdout and "(ref)" in r.stdout
    assert "medians of 2 interleaved rounds" in r.stdout and "to the first file" in r.stdout

    # Without --input-size: the size the files were exported at (their inputs fix it).
    r = cli(files["conv3"], files["separable"], "--repeats", 2, "--warmup", 0, "--json")
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    assert js["settings"]["input_size"] == [S, S] and js["settings"]["repeats"] == 2
    assert js["settings"]["input_shape"] == [1, 8, S, S]
    assert [x["path"] for x in js["results"]] == [files["conv3"], files["separable"]]
    assert js["results"][0]["speedup"] == 1.0
    assert js["results"][1]["macs"] == count_macs(files["separable"], S).total


def test_cli_bad_file_is_one_line_exit_2(files, tmp_path):
    text = tmp_path / "readme.txt"
    text.write_text("hello\n")
    r = cli(files["conv3"], text, "--input-size", S)
    assert r.exit_code == 2
    assert r.stdout == "" and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: '{text}' is not an ONNX model")


# --- channels-last inputs -----------------------------------------------------------------------


class ChannelsLast(torch.nn.Module):
    """A 3x3 convolution (C -> 16) of an (N, H, W, C) image, as a PoseNet takes it."""

    def __init__(self, channels):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 16, 3, padding=1)

    def forward(self, x):
        return self.conv(x.permute(0, 3, 1, 2))


def export_channels_last(path, channels, layout_entry=None):
    """Exported at (1, S, S, channels), batch dynamic; ``layout_entry`` as tcompress writes it."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            ChannelsLast(channels).eval(),
            (torch.randn(1, S, S, channels),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            dynamic_axes={"image": {0: "batch"}},
        )
    if layout_entry:
        proto = onnx.load(path)
        proto.metadata_props.add(key=INPUT_LAYOUT_KEY, value=layout_entry)
        onnx.save(proto, path)
    return str(path)


@pytest.fixture(scope="module")
def last(tmp_path_factory):
    d = tmp_path_factory.mktemp("channels-last")
    return {
        "rgb": export_channels_last(d / "rgb-last.onnx", 3),  # told by its shape
        "eight": export_channels_last(d / "eight-last.onnx", 8, "NHWC"),  # told by its entry
    }


@pytest.mark.parametrize("name, channels", [("rgb", 3), ("eight", 8)])
def test_channels_last_macs_use_the_spatial_axes(last, name, channels):
    m = count_macs(last[name], (12, 20), batch=2)
    assert m.by_kind == kinds(conv_kxk=2 * 16 * channels * 9 * 12 * 20)


def test_bench_feeds_each_file_its_own_layout(files, last):
    results = bench_onnx([files["rgb"], last["rgb"]], input_size=S, repeats=1, warmup=0)
    first, other = results
    assert (first.input_layout, first.input_shape) == ("NCHW", (1, 3, S, S))
    assert (other.input_layout, other.input_shape) == ("NHWC", (1, S, S, 3))
    assert [r.channels for r in results] == [3, 3] and other.input_size == (S, S)
    assert other.macs == first.macs == 16 * 3 * 9 * S * S
    with pytest.raises(BenchError) as e:
        bench_onnx([files["rgb"], last["eight"]], input_size=S, repeats=1)
    assert str(e.value) == (
        f"input channels differ: '{files['rgb']}' takes 3, '{last['eight']}' takes 8; "
        "expected every model to take the same input"
    )
    with pytest.raises(BenchError, match=r"takes a fixed input shape \(batch, 16, 16, 8\); "):
        bench_onnx([last["eight"]], input_size=32, repeats=1)


@pytest.fixture(scope="module")
def posenet_onnx(tmp_path_factory):
    from tcompress.export.onnx import export_onnx
    from tcompress.models import PoseNet

    path = tmp_path_factory.mktemp("posenet") / "pn.onnx"
    torch.manual_seed(0)
    model = PoseNet(n_stacks=1, depth=2, features=8, stem_features=4, stem_width=8).eval()
    export_onnx(model, path, "dense", input_size=32)
    return str(path)


def test_cli_names_a_posenet_input_channels_last(posenet_onnx):
    r = cli(posenet_onnx, "--repeats", 1, "--warmup", 0, "--json")
    assert r.exit_code == 0, r.output
    settings = json.loads(r.stdout)["settings"]
    assert settings["input_size"] == [32, 32] and settings["input_layout"] == "NHWC"
    assert settings["input_shape"] == [1, 32, 32, 3]
    assert json.loads(r.stdout)["results"][0]["macs"] == count_macs(posenet_onnx, 32).total
    r = cli(posenet_onnx, "--repeats", 1, "--warmup", 0)
    assert r.exit_code == 0, r.output
    assert "at batch 1, 32x32 channels last," in r.stdout
