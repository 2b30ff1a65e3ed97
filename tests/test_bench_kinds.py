"""``tcompress bench`` on every kind of file ``tcompress export`` writes: float16 (with and without
float32 inputs), INT8 (QDQ, and operator-format quantization as other tools write it), ONNX
Runtime's mobile format ``.ort``; the precision each reports, the share of its MACs run in int8,
and the execution providers asked for. No timed assertions beyond finite, positive speeds."""

import io
import json
import math
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

from tcompress.cli import main
from tcompress.cli.render import bench_table
from tcompress.export.bench import (
    PRECISION_KEY,
    BenchError,
    bench_onnx,
    count_macs,
    precision_of,
)
from tcompress.export.onnx import export_onnx

from .conftest import make_hourglass

S = 32  # the input size every file is exported and measured at
FAST = dict(input_size=S, repeats=2, warmup=0)


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """The small hourglass as every kind of file: fp32, fp16, fp16 with float32 inputs and
    outputs, INT8 (QDQ) and .ort (written alone, as the exporter writes it)."""
    d = tmp_path_factory.mktemp("kinds")
    model = make_hourglass()
    int8 = dict(precision="int8", calibrate="synthetic", calibration_samples=4)
    settings = {
        "fp32": ("a.onnx", {}),
        "fp16": ("b-fp16.onnx", dict(precision="fp16")),
        "fp16-io": ("b-fp16-io.onnx", dict(precision="fp16", keep_io_types=True)),
        "int8": ("b-int8.onnx", int8),
        "ort": ("c.ort", dict(format="ort")),
    }
    paths = {}
    for kind, (name, options) in settings.items():
        paths[kind] = str(d / name)
        export_onnx(model, paths[kind], "dense", input_size=S, **options)
    return paths


def conv_macs(fp32_path: str) -> dict[str, int]:
    """Each Conv's MACs at batch 1, from the output shapes ONNX Runtime actually produces (every
    Conv output made a graph output) and the weight's initializer: a count independent of
    :func:`count_macs`'s shape inference."""
    model = onnx.load(fp32_path)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    model.graph.output.extend(
        helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in convs
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"image": np.zeros((1, 3, S, S), np.float32)})))
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    return {n.name: outputs[n.output[0]].size * math.prod(weights[n.input[1]][1:]) for n in convs}


def dequantized_convs(int8_path: str) -> set[str]:
    """The Convs of a QDQ graph whose input and weight both come from a DequantizeLinear."""
    graph = onnx.load(int8_path).graph
    dq = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return {
        n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in dq and n.input[1] in dq
    }


def strip_metadata(source: str, target) -> str:
    model = onnx.load(source)
    del model.metadata_props[:]
    onnx.save(model, str(target))
    return str(target)


# --- every kind times -------------------------------------------------------------------------


def test_every_kind_times_in_its_own_input_type(kinds):
    order = ["fp32", "fp16", "fp16-io", "int8", "ort"]
    results = bench_onnx([kinds[k] for k in order], **FAST)
    assert [r.path for r in results] == [kinds[k] for k in order]
    for r in results:
        assert math.isfinite(r.speedup) and r.speedup > 0
        assert math.isfinite(r.median_ms) and 0 < r.min_ms <= r.median_ms
        assert len(r.latencies_ms) == 2 and r.input_shape == (1, 3, S, S)
        assert r.provider == r.requested_provider == "CPUExecutionProvider"
    by_kind = dict(zip(order, results))
    assert [r.precision for r in results] == ["fp32", "fp16", "fp16", "int8", "fp32"]
    assert by_kind["fp16"].input_dtype == "float16"  # fed as the file takes it
    assert by_kind["fp16-io"].input_dtype == by_kind["fp32"].input_dtype == "float32"
    fp32 = by_kind["fp32"]
    assert fp32.macs == count_macs(kinds["fp32"], S).total
    for kind in ("fp16", "fp16-io", "int8"):
        assert by_kind[kind].macs == fp32.macs and by_kind[kind].mac_bound == 1.0
    assert fp32.int8_fraction == by_kind["fp16"].int8_fraction == 0.0
    # The .ort file was written alone: its MACs are unknown, and its note says why.
    mobile = by_kind["ort"]
    assert mobile.macs is None and mobile.params is None and mobile.int8_fraction is None
    assert mobile.mac_bound is None and mobile.bound_fraction is None
    assert mobile.macs_from is None and "no c.onnx beside it" in mobile.notes[0]
    assert json.loads(json.dumps(mobile.to_dict()))["macs"] is None


def test_fp16_macs_are_counted_through_its_casts(kinds):
    """A float16 file's Resize scales are Casts of float16 constants, which onnx's shape
    inference does not evaluate: counted anyway, exactly as the float32 file."""
    fp32 = count_macs(kinds["fp32"], S, batch=2)
    for kind in ("fp16", "fp16-io"):
        half = count_macs(kinds[kind], S, batch=2)
        assert half.by_kind == fp32.by_kind and half.params == fp32.params


# --- INT8 -------------------------------------------------------------------------------------


def test_int8_macs_equal_fp32_and_int8_share_is_the_dequantized_convs(kinds):
    fp32, int8 = count_macs(kinds["fp32"], S), count_macs(kinds["int8"], S)
    assert int8.total == fp32.total and int8.by_kind == fp32.by_kind
    per_conv = conv_macs(kinds["fp32"])
    assert sum(per_conv.values()) == fp32.total  # the independent count agrees
    quantized = dequantized_convs(kinds["int8"])
    assert quantized <= set(per_conv)
    assert int8.int8 == sum(per_conv[name] for name in quantized)
    assert int8.int8_fraction == int8.int8 / int8.total
    assert fp32.int8 == 0 and fp32.int8_fraction == 0.0


def test_int8_share_of_a_partly_quantized_file(kinds, tmp_path):
    """The score convolutions left in float32 (``exclude="outputs"``) run in float."""
    from tcompress.export.quantize import quantize_int8

    rng = np.random.default_rng(0)
    images = [rng.standard_normal((1, 3, S, S), dtype=np.float32) for _ in range(2)]
    partial = str(tmp_path / "partial-int8.onnx")
    quantize_int8(kinds["fp32"], partial, images, exclude="outputs", check_images=1)
    per_conv = conv_macs(kinds["fp32"])
    quantized = dequantized_convs(partial)
    assert 0 < len(quantized) < len(per_conv)
    m = count_macs(partial, S)
    assert m.total == sum(per_conv.values())
    assert m.int8 == sum(per_conv[name] for name in quantized) < m.total
    (result,) = bench_onnx([partial], **FAST)
    assert result.precision == "int8" and result.int8_fraction == pytest.approx(m.int8 / m.total)


def test_operator_format_quantization_counts_like_fp32(kinds, tmp_path):
    """QLinearConv (x: input 0, w: input 3) and ONNX Runtime's QLinearAdd, as
    ``quantize_static(quant_format=QOperator)`` writes them, without tcompress's precision."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.images = iter(
                [{"image": rng.standard_normal((1, 3, S, S), dtype=np.float32)} for _ in range(2)]
            )

        def get_next(self):
            return next(self.images, None)

    path = str(tmp_path / "qoperator.onnx")
    quantize_static(kinds["fp32"], path, Reader(), quant_format=QuantFormat.QOperator)
    ops = {(n.domain, n.op_type) for n in onnx.load(path).graph.node}
    assert ("", "QLinearConv") in ops and ("com.microsoft", "QLinearAdd") in ops
    assert ("", "Conv") not in ops
    m, fp32 = count_macs(path, S), count_macs(kinds["fp32"], S)
    assert m.by_kind == fp32.by_kind and m.int8 == m.total
    assert precision_of(path) == "int8"  # no tcompress.precision entry: read from the graph


def test_integer_operators_closed_forms(tmp_path):
    """QLinearConv, ConvInteger, QLinearMatMul and MatMulInteger read their input and weight at
    their own positions; a float Conv of a dequantized weight but a float input runs in float."""
    u8 = TensorProto.UINT8
    rng = np.random.default_rng(0)

    def const(name, array):
        return numpy_helper.from_array(np.asarray(array), name)

    initializers = [
        const("s", np.float32(0.1)),
        const("z", np.uint8(128)),
        const("wz", np.int8(0)),
        const("w", rng.integers(-8, 8, (6, 4, 3, 3)).astype(np.int8)),
        const("b", rng.integers(0, 8, (8, 5)).astype(np.uint8)),
        const("wf", rng.standard_normal((2, 4, 1, 1)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["image", "s", "z"], ["xq"]),
        helper.make_node(
            "QLinearConv", ["xq", "s", "z", "w", "s", "wz", "s", "z"], ["c1"], pads=[1] * 4
        ),
        helper.make_node("ConvInteger", ["xq", "w", "z", "wz"], ["c2"], pads=[1] * 4),
        helper.make_node("QLinearMatMul", ["c1", "s", "z", "b", "s", "z", "s", "z"], ["m1"]),
        helper.make_node("MatMulInteger", ["xq", "b", "z", "z"], ["m2"]),
        helper.make_node("DequantizeLinear", ["w", "s", "wz"], ["wd"]),
        helper.make_node("Conv", ["image", "wf"], ["f1"]),  # float
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("Conv", ["image", "wd"], ["f2"], pads=[1] * 4),  # float input
        helper.make_node("Conv", ["xd", "wd"], ["f3"], pads=[1] * 4),  # both dequantized
    ]
    outputs = [
        helper.make_tensor_value_info("c1", u8, None),
        helper.make_tensor_value_info("c2", TensorProto.INT32, None),
        helper.make_tensor_value_info("m1", u8, None),
        helper.make_tensor_value_info("m2", TensorProto.INT32, None),
        helper.make_tensor_value_info("f1", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("f2", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("f3", TensorProto.FLOAT, None),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 4, 8, 8])
    graph = helper.make_graph(nodes, "integer", [image], outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    conv = 6 * 8 * 8 * 4 * 9  # per image: (C_out x H x W) x (C_in x 3 x 3)
    qmatmul = 6 * 8 * 5 * 8  # (1, 6, 8, 8) @ (8, 5)
    imatmul = 4 * 8 * 5 * 8  # (1, 4, 8, 8) @ (8, 5)
    float_1x1 = 2 * 8 * 8 * 4
    m = count_macs(model, 8, batch=2)
    assert m.by_kind["conv_kxk"] == 2 * 4 * conv  # QLinearConv, ConvInteger, f2, f3
    assert m.by_kind["conv1x1"] == 2 * float_1x1
    assert m.by_kind["other"] == 2 * (qmatmul + imatmul)
    assert m.int8 == 2 * (3 * conv + qmatmul + imatmul)  # all but the float f1 and f2
    assert precision_of(model) == "int8"


# --- precision --------------------------------------------------------------------------------


def test_precision_from_metadata_and_inferred_without_it(kinds, tmp_path):
    for kind, precision in (("fp16", "fp16"), ("fp16-io", "fp16"), ("int8", "int8")):
        entries = {e.key: e.value for e in onnx.load(kinds[kind]).metadata_props}
        assert entries[PRECISION_KEY] == precision  # what the exporter writes, read back
        assert precision_of(kinds[kind]) == precision
    assert precision_of(kinds["fp32"]) == "fp32"
    # The metadata entry wins over the graph: it is read, not only inferred.
    told = onnx.load(kinds["fp32"])
    told.metadata_props.add(key=PRECISION_KEY, value="fp16")
    assert precision_of(told) == "fp16"

    stripped = {
        kind: strip_metadata(kinds[kind], tmp_path / f"stripped-{kind}.onnx")
        for kind in ("fp32", "fp16", "fp16-io", "int8")
    }
    results = bench_onnx(list(stripped.values()), input_size=S, repeats=1, warmup=0)
    assert [r.precision for r in results] == ["fp32", "fp16", "fp16", "int8"]
    assert all(r.input_layout == "NCHW" for r in results)  # from the shape, without metadata


# --- .ort files -------------------------------------------------------------------------------


def test_ort_macs_from_the_onnx_file_beside_it(kinds, tmp_path):
    mobile = shutil.copy(kinds["ort"], tmp_path / "x.ort")
    shutil.copy(kinds["fp32"], tmp_path / "x.onnx")
    fp32, result = bench_onnx([kinds["fp32"], str(mobile)], **FAST)
    assert result.macs == fp32.macs and result.params == fp32.params
    assert result.macs_from == str(tmp_path / "x.onnx") and result.mac_bound == 1.0
    assert result.precision == "fp32" and result.int8_fraction == 0.0
    assert result.notes == ["MACs and parameters counted from x.onnx beside it"]
    assert result.size_bytes == (tmp_path / "x.ort").stat().st_size

    # Another model under the same name (float16 input) is not counted for it.
    other = shutil.copy(kinds["ort"], tmp_path / "y.ort")
    shutil.copy(kinds["fp16"], tmp_path / "y.onnx")
    (result,) = bench_onnx([str(other)], **FAST)
    assert result.macs is None and result.macs_from is None
    assert result.notes[0].startswith("MACs unknown: y.onnx beside it is another model")


# --- providers --------------------------------------------------------------------------------


def test_missing_provider_names_the_available_ones(kinds):
    available = ", ".join(ort.get_available_providers())
    with pytest.raises(BenchError) as e:
        bench_onnx([kinds["fp32"]], providers=["CUDAExecutionProvider"], **FAST)
    assert str(e.value) == (
        f"providers asks for 'CUDAExecutionProvider', which this onnxruntime {ort.__version__} "
        "does not have (CUDAExecutionProvider comes with the onnxruntime-gpu package); expected "
        f"one of {available}"
    )
    with pytest.raises(BenchError, match=r"^providers is \[3\]; expected names of ONNX Runtime"):
        bench_onnx([kinds["fp32"]], providers=[3], **FAST)
    # The command line names its own flag, and takes short, comma-separated names.
    r = cli(kinds["fp32"], "--provider", "CPU,CUDA", "--repeats", 1)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip() == "Error: --provider" + str(e.value).removeprefix("providers")


def test_providers_are_recorded_and_named_once(kinds):
    results = bench_onnx(
        [kinds["fp32"], kinds["int8"]], providers="cpu, CPUExecutionProvider", **FAST
    )
    assert len(results) == 2  # the same provider, asked twice, runs once
    assert {(r.requested_provider, r.provider) for r in results} == {
        ("CPUExecutionProvider", "CPUExecutionProvider")
    }


def test_each_file_on_each_provider_against_the_first_on_the_same(kinds):
    if "AzureExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs a second execution provider besides the CPU's")
    providers = ["CPUExecutionProvider", "AzureExecutionProvider"]
    results = bench_onnx([kinds["fp32"], kinds["int8"]], providers=providers, **FAST)
    assert [(r.path, r.requested_provider) for r in results] == [
        (kinds["fp32"], providers[0]),
        (kinds["int8"], providers[0]),
        (kinds["fp32"], providers[1]),
        (kinds["int8"], providers[1]),
    ]
    assert results[0].speedup == results[2].speedup == 1.0  # each provider's own reference
    console = Console(width=160, file=io.StringIO(), highlight=False)
    console.print(bench_table(results))
    text = console.file.getvalue()
    assert "provider" in text and "Azure" in text and text.count("(ref)") == 2


# --- the command line -------------------------------------------------------------------------


def cli(*args):
    return CliRunner().invoke(main, ["bench", *map(str, args)], env={"COLUMNS": "240"})


def test_cli_json_and_table_of_every_kind(kinds):
    files = (kinds["fp32"], kinds["int8"], kinds["ort"])
    r = cli(*files, "--repeats", 2, "--warmup", 0, "--json")
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    assert js["settings"]["providers"] == ["CPUExecutionProvider"]
    assert js["settings"]["provider"] == "CPUExecutionProvider"
    rows = js["results"]
    assert [x["path"] for x in rows] == list(files)
    assert [x["precision"] for x in rows] == ["fp32", "int8", "fp32"]
    assert [x["provider"] for x in rows] == ["CPUExecutionProvider"] * 3
    assert rows[0]["int8_fraction"] == 0.0 and rows[1]["int8_fraction"] > 0
    assert rows[1]["macs"] == rows[0]["macs"] == count_macs(kinds["fp32"], S).total
    assert rows[2]["macs"] is None and rows[2]["int8_fraction"] is None
    assert all(x["speedup"] > 0 for x in rows)

    r = cli(*files, "--repeats", 1, "--warmup", 0, "--provider", "CPU")
    assert r.exit_code == 0, r.output
    for header in ("precision", "int8", "GMACs", "MAC bound", "of bound"):
        assert header in r.stdout
    table = r.stdout.split("Latencies are")[0]
    assert "provider" not in table  # one provider: the caption names it
    assert "int8 = share of the MACs run in int8" in r.stdout and "–" in r.stdout
    assert "c.ort: MACs unknown" in r.stdout and "on CPU;" in r.stdout
