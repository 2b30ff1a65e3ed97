"""export_onnx / tcompress export at every precision and format: fp16, INT8, ONNX Runtime's
mobile format, each validated, and the refusals that leave no file."""

import os

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest
import torch

import tcompress
from tcompress.cli import main
from tcompress.errors import ExportError
from tcompress.export.onnx import export_onnx

from .conftest import make_hourglass

RANKS = (1, 2, 2, 1, 4, 5, 2, 3)


@pytest.fixture(scope="module")
def tnet():
    return tcompress.convert(make_hourglass(), method="tucker", ranks=RANKS).eval()


def run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
    return [o.astype(np.float32) for o in session.run(None, {"image": x.astype(dtype)})]


def test_fp16_halves_the_weights_and_validates(tmp_path, tnet):
    fp32 = export_onnx(tnet, tmp_path / "t.onnx", "factorized", input_size=32)
    half = export_onnx(tnet, tmp_path / "h.onnx", "factorized", input_size=32, precision="fp16")
    assert half.precision == "fp16" and half.validation.ok
    assert half.validation.route in ("native", "upcast") and half.validation.note
    initializers = onnx.load(tmp_path / "t.onnx").graph.initializer
    weights = sum(onnx.numpy_helper.to_array(t).nbytes for t in initializers if t.data_type == 1)
    assert fp32.file_bytes - half.file_bytes >= 0.45 * weights  # every float weight halved
    model = onnx.load(tmp_path / "h.onnx")
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["tcompress.precision"] == "fp16" and meta["tcompress.input_layout"] == "NCHW"
    kept = export_onnx(
        tnet, tmp_path / "k.onnx", "factorized", input_size=32, precision="fp16", keep_io_types=True
    )
    assert kept.validation.ok
    assert onnx.load(tmp_path / "k.onnx").graph.input[0].type.tensor_type.elem_type == 1


def test_int8_is_qdq_and_close_to_float(tmp_path, tnet):
    report = export_onnx(
        tnet,
        tmp_path / "q.onnx",
        "factorized",
        input_size=32,
        precision="int8",
        calibrate="synthetic",
        calibration_samples=4,
    )
    assert report.precision == "int8" and report.quantization["calibration_images"] == 4
    ops = {n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = [o.numpy() for o in tnet(torch.from_numpy(x))]
    got = run(tmp_path / "q.onnx", x)
    scale = max(float(np.abs(w).max()) for w in want)
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, want)) < 0.25 * scale


def test_the_mobile_format_loads_and_matches_its_onnx_source(tmp_path, tnet):
    export_onnx(tnet, tmp_path / "t.onnx", "factorized", input_size=32)
    report = export_onnx(tnet, tmp_path / "t.ort", "factorized", input_size=32, format="ort")
    assert report.format == "ort" and report.file_bytes == os.path.getsize(tmp_path / "t.ort")
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    for a, b in zip(run(tmp_path / "t.ort", x), run(tmp_path / "t.onnx", x)):
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
    assert sorted(os.listdir(tmp_path)) == ["t.onnx", "t.ort"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"precision": "fp8"}, "precision 'fp8' is unknown; expected one of fp32, fp16, int8"),
        ({"format": "tflite"}, "format 'tflite' is unknown; expected one of onnx, ort"),
        ({"format": "ort"}, "does not end in .ort; ONNX Runtime reads its mobile format by"),
        ({"precision": "int8"}, "precision='int8' needs calibration images: calibrate=DATA"),
    ],
)
def test_refusals_leave_no_file(tmp_path, tnet, options, message):
    with pytest.raises(ExportError, match=message.replace("(", r"\(")):
        export_onnx(tnet, tmp_path / "x.onnx", "factorized", input_size=32, **options)
    assert os.listdir(tmp_path) == []


def test_fp16_in_the_mobile_format_is_refused(tmp_path, tnet):
    with pytest.raises(ExportError, match="stores the weights of a float16 file as float32"):
        export_onnx(tnet, tmp_path / "x.ort", input_size=32, precision="fp16", format="ort")
    assert os.listdir(tmp_path) == []


def test_cli_int8_with_its_flags(tmp_path, tnet):
    from click.testing import CliRunner

    tcompress.save(tnet, tmp_path / "t.pt")
    runner = CliRunner()
    out = tmp_path / "q.onnx"
    args = ["export", str(tmp_path / "t.pt"), "--input-size", "32", "-o", str(out)]
    r = runner.invoke(main, [*args, "--precision", "int8"])
    assert r.exit_code == 2 and "needs calibration images: --calibrate DATA" in r.output
    r = runner.invoke(main, [*args, "--precision", "int8", "--calibrate", "synthetic", "-n", "2"])
    assert r.exit_code == 0, r.output
    assert "factorized form, int8, onnx" in r.output and out.exists()
