"""INT8 files (tcompress.export.quantize): static QDQ quantization of an exported float32 file
with ONNX Runtime's tools, calibrated on images from a data spec.

Small networks at 32x32 (a PoseNet at 64x64, its depth's smallest input), a few calibration
images; no timed assertions (speed is benchmarks/bench_int8.py's)."""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper

import tcompress
from tcompress.data import write_image
from tcompress.data.transforms import MEAN, STD
from tcompress.errors import ExportError
from tcompress.export import quantize as quantize_module
from tcompress.export.bench import INPUT_LAYOUT_KEY, PIXEL_MEAN_KEY, PIXEL_STD_KEY
from tcompress.export.onnx import export_onnx
from tcompress.export.quantize import (
    PRECISION_KEY,
    QUANTIZATION_KEY,
    calibration_images,
    quantize_int8,
    saturating_cpu,
    saturation_note,
)
from tcompress.models import ModelIO, PoseNet

from .conftest import make_hourglass
from .test_public_layouts import random_state, shapes_of

SIZE = 32
#: max |INT8 - float32| / max |float32| per output, worst over the images, on the calibration
#: images (measured about 0.03 on these networks: 8-bit activations through some twenty layers)
#: and on held-out ones, whose activations may leave the calibrated ranges (measured 0.21 on the
#: worse of the two). Loose bounds: a file quantized wrongly (a wrong layout, uncalibrated
#: ranges) is off by the outputs' own size.
LOOSE = 0.1
LOOSE_HELD_OUT = 0.3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small hourglass's dense float32 export (16 joints, as the synthetic data's), its default
    INT8 file and calibration images."""
    d = tmp_path_factory.mktemp("int8")
    fp32 = str(d / "hg.onnx")
    export_onnx(make_hourglass(n_joints=16), fp32, form="dense", input_size=SIZE)
    images = calibration_images("synthetic", 4, SIZE, fp32)
    int8 = str(d / "hg-int8.onnx")
    report = quantize_int8(fp32, int8, images)
    return {"dir": d, "fp32": fp32, "int8": int8, "images": images, "report": report}


def nodes(path, op_type):
    return [n for n in onnx.load(path).graph.node if n.op_type == op_type]


def weight_of(model, node):
    """The initializer behind a Conv's weight, and the DequantizeLinear node if there is one."""
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    name = node.input[1]
    if name in inits:
        return inits[name], None
    dq = producers[name]
    assert dq.op_type == "DequantizeLinear"
    return inits[dq.input[0]], dq


def run(path, image):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image})


def held_out(n=1):
    """Validation images (calibration took training ones), channels first, batch 1."""
    from tcompress.data import make_dataset

    data = make_dataset("synthetic", "val", SIZE, SIZE // 4, n=n)
    return [data[i]["image"][None].numpy() for i in range(n)]


def listing(folder):
    return sorted(os.listdir(folder))


# --- the file ---------------------------------------------------------------------------------


def test_the_file_is_qdq_with_int8_per_channel_weights(files):
    model = onnx.load(files["int8"])
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert not ops & {"QLinearConv", "ConvInteger"}  # QDQ, not the QOperator format
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == len(nodes(files["fp32"], "Conv"))
    inits = {i.name: i for i in model.graph.initializer}
    for conv in convs:
        weight, dq = weight_of(model, conv)
        assert dq is not None and weight.data_type == TensorProto.INT8, conv.name
        scale = numpy_helper.to_array(inits[dq.input[1]])
        assert scale.shape == (weight.dims[0],), conv.name  # one scale per output channel
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert axis == 0
    # Activations are unsigned by default.
    q = nodes(files["int8"], "QuantizeLinear")[0]
    assert inits[q.input[2]].data_type == TensorProto.UINT8


def test_the_report_states_the_settings_and_the_file(files):
    report = files["report"]
    assert (report.activation_type, report.weight_type) == ("uint8", "int8")
    assert report.calibration_method == "percentile"
    assert report.per_channel is True and report.reduce_range is True
    assert report.calibration_images == 4
    assert report.excluded == [] and report.float_nodes == []
    assert report.quantized_nodes == len(nodes(files["fp32"], "Conv"))
    assert report.file_bytes == os.path.getsize(files["int8"])
    assert report.source_bytes == os.path.getsize(files["fp32"])
    assert report.size_ratio == pytest.approx(report.file_bytes / report.source_bytes)
    # 7-bit weights: products that fit 16 bits, so every CPU computes alike (measured 0.025 on
    # x86 without VNNI, where the 8-bit file measured 0.14).
    assert 0 <= report.output_error < LOOSE
    assert not any("saturate" in note for note in report.notes)
    assert report.to_dict()["size_ratio"] == report.size_ratio


def test_the_default_weights_are_7_bit(files):
    import json

    entries = {p.key: p.value for p in onnx.load(files["int8"]).metadata_props}
    assert json.loads(entries[QUANTIZATION_KEY])["reduce_range"] is True
    model = onnx.load(files["int8"])
    for conv in nodes(files["int8"], "Conv"):
        weight, _ = weight_of(model, conv)
        assert np.abs(numpy_helper.to_array(weight)).max() <= 64, conv.name  # 7-bit range


def test_8_bit_weights_on_request(files, tmp_path):
    out = str(tmp_path / "q.onnx")
    report = quantize_int8(files["fp32"], out, files["images"], reduce_range=False)
    assert report.reduce_range is False
    model = onnx.load(out)
    widest = max(
        np.abs(numpy_helper.to_array(weight_of(model, conv)[0])).max()
        for conv in nodes(out, "Conv")
    )
    assert widest == 127  # symmetric per-channel 8-bit: each channel's largest weight is 127
    cpu = saturating_cpu()
    if cpu is None:
        assert 0 <= report.output_error < LOOSE
        assert not any("saturate" in note for note in report.notes)
    else:  # x86 without VNNI: 8-bit products saturate here (measured 0.14); the report says so
        assert report.notes[-1] == saturation_note(cpu, report.output_error)


@pytest.mark.parametrize("with_range", [False, True])
def test_a_saturating_cpu_is_noted_unless_weights_are_7_bit(
    files, tmp_path, monkeypatch, with_range
):
    monkeypatch.setattr(quantize_module, "saturating_cpu", lambda: "Test CPU, x86 without VNNI")
    out = str(tmp_path / "q.onnx")
    report = quantize_int8(files["fp32"], out, files["images"][:1], reduce_range=with_range)
    noted = [note for note in report.notes if "saturate" in note]
    if with_range:
        assert noted == [] and report.saturating_cpu is None and report.saturation is None
    else:
        assert report.saturating_cpu == "Test CPU, x86 without VNNI"
        assert report.to_dict()["saturating_cpu"] == "Test CPU, x86 without VNNI"
        assert noted == [report.saturation]
        assert noted == [saturation_note("Test CPU, x86 without VNNI", report.output_error)]
        assert noted[0].startswith("this CPU (Test CPU, x86 without VNNI) adds pairs of u8 x s8")
        assert noted[0].endswith(
            "quantize with 7-bit weights, the default: reduce_range=True (tcompress export "
            "without --full-range)"
        )


@pytest.mark.parametrize(
    "machine, capabilities, expected",
    [
        ("x86_64", {"avx2": True, "cpu_name": "AMD EPYC"}, "AMD EPYC, x86 without VNNI"),
        ("x86_64", {"avx2": True, "avx512_f": True}, "x86, AVX-512 without VNNI"),
        ("x86_64", {"avx2": True, "avx512_f": True, "avx512_vnni": True}, None),
        ("AMD64", {"avx2": True, "avx_vnni": True}, None),
        ("aarch64", {}, None),
        ("arm64", {}, None),
    ],
)
def test_which_cpus_saturate(monkeypatch, machine, capabilities, expected):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert saturating_cpu() == expected


def test_an_unknown_cpu_is_not_called_saturating(monkeypatch):
    import platform

    def broken():
        raise RuntimeError("no cpuinfo")

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "get_capabilities", broken)
    assert saturating_cpu() is None
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    assert saturating_cpu() is None


def test_the_metadata_is_kept_and_the_settings_recorded(files):
    import json

    entries = {p.key: p.value for p in onnx.load(files["int8"]).metadata_props}
    assert entries[INPUT_LAYOUT_KEY] == "NCHW"
    assert entries[PRECISION_KEY] == "int8"
    settings = json.loads(entries[QUANTIZATION_KEY])
    assert settings["activation_type"] == "uint8" and settings["calibration_images"] == 4


def test_the_outputs_are_close_to_float32(files):
    for image in held_out(2):
        ref, got = run(files["fp32"], image), run(files["int8"], image)
        assert len(got) == len(ref) == 2
        for a, b in zip(got, ref):
            assert a.shape == b.shape
            assert np.abs(a - b).max() / np.abs(b).max() <= LOOSE_HELD_OUT


def test_the_int8_file_evaluates_like_any_onnx_file(files):
    """tcompress.evaluate takes the INT8 file (batched: the batch axis stays dynamic)."""
    report = tcompress.evaluate(files["int8"], "synthetic", n=4, batch_size=4)
    assert report.kind == "onnx" and report.image_size == SIZE


def activation_scales(path):
    """Scale of every quantized activation (not weights) of a QDQ file, by tensor name."""
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        n.input[0]: float(inits[n.input[1]])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
    }


def test_percentile_calibration(files, tmp_path):
    out = str(tmp_path / "q.onnx")
    report = quantize_int8(
        files["fp32"], out, files["images"][:2], calibration_method="percentile", percentile=99.0
    )
    assert report.calibration_method == "percentile" and report.calibration_images == 2
    assert report.output_error < LOOSE_HELD_OUT
    # Keeping 99 % of the values clips ranges that min-max keeps whole.
    minmax = str(tmp_path / "minmax.onnx")
    quantize_int8(files["fp32"], minmax, files["images"][:2], calibration_method="minmax")
    ours, theirs = activation_scales(out), activation_scales(minmax)
    assert ours.keys() == theirs.keys()
    assert sum(ours[k] < 0.99 * theirs[k] for k in ours) > len(ours) // 2


@pytest.mark.slow
def test_entropy_calibration_searches_a_threshold(files, tmp_path):
    """Entropy calibration clips ranges (its KL search has more histogram bins than the
    quantized range: with as many, as quantize_static sets it, it keeps every range whole)."""
    out = str(tmp_path / "q.onnx")
    report = quantize_int8(files["fp32"], out, files["images"][:2], calibration_method="entropy")
    assert report.calibration_method == "entropy"
    assert report.output_error < LOOSE_HELD_OUT
    minmax = str(tmp_path / "minmax.onnx")
    quantize_int8(files["fp32"], minmax, files["images"][:2], calibration_method="minmax")
    ours, theirs = activation_scales(out), activation_scales(minmax)
    assert sum(ours[k] < 0.99 * theirs[k] for k in ours) > len(ours) // 4


def test_signed_activations(files, tmp_path):
    out = str(tmp_path / "q.onnx")
    report = quantize_int8(files["fp32"], out, files["images"][:2], activation_type="int8")
    model = onnx.load(out)
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = {inits[n.input[2]].data_type for n in nodes(out, "QuantizeLinear")}
    assert zero_points == {TensorProto.INT8}
    assert report.activation_type == "int8" and report.output_error < LOOSE


def test_per_tensor_weights(files, tmp_path):
    out = str(tmp_path / "q.onnx")
    quantize_int8(files["fp32"], out, files["images"][:2], per_channel=False)
    model = onnx.load(out)
    inits = {i.name: i for i in model.graph.initializer}
    for conv in nodes(out, "Conv"):
        _, dq = weight_of(model, conv)
        assert numpy_helper.to_array(inits[dq.input[1]]).size == 1


def test_excluded_nodes_stay_float(files, tmp_path):
    out = str(tmp_path / "q.onnx")
    report = quantize_int8(files["fp32"], out, files["images"][:2], exclude=["first", "/scores.*"])
    first = "/conv/conv.0/Conv"
    scores = ["/scores.0/Conv", "/scores.1/Conv"]
    assert report.excluded == [first, *scores]
    assert sorted(report.float_nodes) == sorted([first, *scores])
    assert report.quantized_nodes == len(nodes(files["fp32"], "Conv")) - 3
    model = onnx.load(out)
    for conv in model.graph.node:
        if conv.op_type != "Conv":
            continue
        weight, dq = weight_of(model, conv)
        if conv.name in report.excluded:
            assert dq is None and weight.data_type == TensorProto.FLOAT, conv.name
        else:
            assert weight.data_type == TensorProto.INT8, conv.name
    assert report.output_error < LOOSE


def test_the_outputs_group_names_the_score_convolutions(files, tmp_path):
    out = str(tmp_path / "q.onnx")
    report = quantize_int8(files["fp32"], out, files["images"][:1], exclude="outputs")
    assert report.excluded == ["/scores.0/Conv", "/scores.1/Conv"]


def test_images_may_be_tensors_or_lack_the_batch_axis(files, tmp_path):
    images = [torch.from_numpy(files["images"][0]), files["images"][1][0]]
    report = quantize_int8(files["fp32"], str(tmp_path / "q.onnx"), images)
    assert report.calibration_images == 2


def test_an_existing_output_is_replaced(files, tmp_path):
    out = tmp_path / "q.onnx"
    out.write_bytes(b"old")
    quantize_int8(files["fp32"], str(out), files["images"][:1])
    assert nodes(str(out), "QuantizeLinear")
    assert listing(tmp_path) == ["q.onnx"]


# --- bad input --------------------------------------------------------------------------------


def bad_images(files):
    good = files["images"][0]
    return {
        "empty": ([], "images is empty; expected at least one calibration image"),
        "a path": ("images/", "images is 'images/'; expected an iterable of image arrays"),
        "wrong size": (
            [np.zeros((1, 3, 64, 64), np.float32)],
            r"calibration image 0 has shape \(1, 3, 64, 64\); expected \(1, 3, 32, 32\) "
            r"float32 arrays \(NCHW\)",
        ),
        "channels last": (
            [good.transpose(0, 2, 3, 1)],
            r"calibration image 0 has shape \(1, 32, 32, 3\); expected \(1, 3, 32, 32\)",
        ),
        "a batch": ([np.concatenate([good, good])], r"calibration image 0 has shape \(2, 3"),
        "integers": (
            [good.astype(np.int64)],
            "calibration image 0 holds int64; expected .* normalised as",
        ),
        "NaN": (
            [good, np.full_like(good, np.nan)],
            "calibration image 1 holds NaN or Inf; expected finite pixels",
        ),
        "not an array": ([object()], "calibration image 0 holds object; expected"),
    }


BAD_IMAGES = ("empty", "a path", "wrong size", "channels last", "a batch", "integers", "NaN")


@pytest.mark.parametrize("case", [*BAD_IMAGES, "not an array"])
def test_bad_images_are_refused(files, tmp_path, case):
    images, message = bad_images(files)[case]
    with pytest.raises(ExportError, match=message):
        quantize_int8(files["fp32"], str(tmp_path / "q.onnx"), images)
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"activation_type": "float16"},
            "activation_type is 'float16'; expected one of uint8, int8",
        ),
        (
            {"calibration_method": "kl"},
            "calibration_method is 'kl'; expected one of minmax, entropy, percentile",
        ),
        ({"per_channel": "yes"}, "per_channel is 'yes'; expected True or False"),
        ({"percentile": 120}, r"percentile is 120; expected a number in \(0, 100\]"),
        ({"check_images": -1}, "check_images is -1; expected a whole number >= 0"),
        (
            {"exclude": ["/nothing/*"]},
            "exclude entry '/nothing/\\*' matches no node; expected node names such as "
            "'/conv/conv.0/Conv', fnmatch patterns over them or one of first, outputs",
        ),
        ({"exclude": [3]}, "exclude holds 3; expected node names, patterns or one of"),
    ],
)
def test_bad_settings_are_refused(files, tmp_path, settings, message):
    with pytest.raises(ExportError, match=message):
        quantize_int8(files["fp32"], str(tmp_path / "q.onnx"), files["images"][:1], **settings)
    assert listing(tmp_path) == []


def test_quantization_types_of_onnxruntime_are_accepted(files, tmp_path):
    from onnxruntime.quantization import CalibrationMethod, QuantType

    report = quantize_int8(
        files["fp32"],
        str(tmp_path / "q.onnx"),
        files["images"][:1],
        activation_type=QuantType.QInt8,
        calibration_method=CalibrationMethod.MinMax,
    )
    assert (report.activation_type, report.calibration_method) == ("int8", "minmax")


def test_bad_sources_are_refused(files, tmp_path):
    out = str(tmp_path / "q.onnx")
    images = files["images"][:1]
    missing = str(tmp_path / "missing.onnx")
    with pytest.raises(ExportError, match=f"ONNX file '{missing}' does not exist"):
        quantize_int8(missing, out, images)
    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n")
    with pytest.raises(ExportError, match="is not an ONNX model"):
        quantize_int8(str(text), out, images)
    with pytest.raises(
        ExportError,
        match="is already quantized \\(it holds DequantizeLinear, QuantizeLinear nodes\\); "
        "expected a float32 file written by export_onnx",
    ):
        quantize_int8(files["int8"], out, images)
    assert listing(tmp_path) == ["notes.onnx"]


def test_bad_outputs_are_refused(files, tmp_path):
    images = files["images"][:1]
    with pytest.raises(ExportError, match="is the source file; choose another output path"):
        quantize_int8(files["fp32"], files["fp32"], images)
    assert nodes(files["fp32"], "QuantizeLinear") == []
    missing = tmp_path / "no" / "q.onnx"
    with pytest.raises(ExportError, match=f"output directory '{missing.parent}' does not exist"):
        quantize_int8(files["fp32"], str(missing), images)
    with pytest.raises(ExportError, match="is a directory; expected a file path"):
        quantize_int8(files["fp32"], str(tmp_path), images)


def test_a_failure_while_writing_leaves_no_file(files, tmp_path, monkeypatch):
    from tcompress.export import quantize

    def broken(prepared, tmp, *args):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("calibration ran out of memory\nsecond line")

    out = tmp_path / "q.onnx"
    out.write_bytes(b"old")
    monkeypatch.setattr(quantize, "_quantize", broken)
    with pytest.raises(
        ExportError, match=r"^quantizing '.*hg\.onnx' failed: calibration ran out of memory$"
    ):
        quantize_int8(files["fp32"], str(out), files["images"][:1])
    assert listing(tmp_path) == ["q.onnx"] and out.read_bytes() == b"old"


@pytest.mark.parametrize("reduce_range", [True, False])
def test_non_finite_outputs_are_refused_and_leave_no_file(
    files, tmp_path, monkeypatch, reduce_range
):
    monkeypatch.setattr(quantize_module, "_output_error", lambda *args: float("nan"))
    out = tmp_path / "q.onnx"
    with pytest.raises(
        ExportError,
        match=r"^the INT8 file made from '.*hg\.onnx' gives non-finite outputs on the "
        r"calibration images; expected finite heatmaps$",
    ):
        quantize_int8(files["fp32"], str(out), files["images"][:1], reduce_range=reduce_range)
    assert listing(tmp_path) == []


# --- calibration images -----------------------------------------------------------------------


def test_calibration_images_from_synthetic_data(files):
    images = files["images"]
    assert len(images) == 4
    assert all(i.shape == (1, 3, SIZE, SIZE) and i.dtype == np.float32 for i in images)
    from tcompress.data import make_dataset

    data = make_dataset("synthetic", "train", SIZE, SIZE // 4, n=4)
    np.testing.assert_array_equal(images[2][0], data[2]["image"].numpy())


def test_calibration_images_in_the_models_convention(files, tmp_path):
    ours = calibration_images("synthetic", 2, SIZE, "NCHW")
    last = calibration_images("synthetic", 2, SIZE, "NHWC")
    assert last[0].shape == (1, SIZE, SIZE, 3)
    np.testing.assert_array_equal(last[1], ours[1].transpose(0, 2, 3, 1))
    # A network's own pixel normalisation: (pixel - mean) / std, pixels in [0, 1].
    mean, std = (0.5, 0.4, 0.3), (1.0, 0.5, 0.25)
    io = ModelIO(3, ("heatmaps",), pixel_mean=mean, pixel_std=std)
    theirs = calibration_images("synthetic", 2, SIZE, io)
    pixels = ours[1] * np.array(STD)[:, None, None] + np.array(MEAN)[:, None, None]
    expected = (pixels - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(theirs[1], expected, atol=1e-5)
    # ... read from an ONNX file's metadata, as OnnxModel reads it.
    proto = onnx.load(files["fp32"])
    for key, value in ((PIXEL_MEAN_KEY, mean), (PIXEL_STD_KEY, std)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, ",".join(map(repr, value))
    onnx.save(proto, tmp_path / "own.onnx")
    from_file = calibration_images("synthetic", 2, SIZE, tmp_path / "own.onnx")
    np.testing.assert_allclose(from_file[1], theirs[1], atol=1e-6)
    # ... or from the network itself.
    net = calibration_images("synthetic", 1, SIZE, make_hourglass())
    np.testing.assert_array_equal(net[0], ours[0])


def test_calibration_images_from_an_unlabeled_folder(files, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(folder / f"{i}.png", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    images = calibration_images(folder, 8, SIZE, files["fp32"])  # fewer than asked: all of them
    assert len(images) == 3 and images[0].shape == (1, 3, SIZE, SIZE)
    report = quantize_int8(files["fp32"], str(tmp_path / "q.onnx"), images)
    assert report.calibration_images == 3


def test_bad_calibration_requests_are_refused(tmp_path):
    with pytest.raises(ExportError, match="n is 0; expected a whole number >= 1 of images"):
        calibration_images("synthetic", 0, SIZE)
    with pytest.raises(ExportError, match="input_size is 2; expected a whole number >= 4"):
        calibration_images("synthetic", 1, 2)
    with pytest.raises(ExportError, match=r"input_size is \(32, 64\); calibration images are"):
        calibration_images("synthetic", 1, (32, 64))
    assert calibration_images("synthetic", 1, (SIZE, SIZE))[0].shape == (1, 3, SIZE, SIZE)
    with pytest.raises(ExportError, match="convention is 'NCWH'; expected a ModelIO, a network"):
        calibration_images("synthetic", 1, SIZE, "NCWH")
    from tcompress.errors import DataError

    with pytest.raises(DataError, match="does not exist"):
        calibration_images(tmp_path / "nothing", 1, SIZE)


# --- a channels-last file ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_channels_last_file(tmp_path):
    """A PoseNet export (input (N, H, W, C), one stacked output) calibrates on images in its own
    layout and refuses channels-first ones."""
    small = dict(n_stacks=2, depth=4, features=8, stem_features=4, stem_width=8)
    with torch.device("meta"):
        keys = shapes_of(PoseNet(**small).state_dict())
    net = PoseNet(**small)
    net.load_state_dict(random_state(keys, seed=3))
    fp32 = str(tmp_path / "pn.onnx")
    export_onnx(net.eval(), fp32, form="dense", input_size=64)
    images = calibration_images("synthetic", 3, 64, fp32)
    assert images[0].shape == (1, 64, 64, 3)
    out = str(tmp_path / "pn-int8.onnx")
    report = quantize_int8(fp32, out, images)
    assert report.quantized_nodes > 0 and report.output_error < LOOSE
    entries = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert entries[INPUT_LAYOUT_KEY] == "NHWC"
    with pytest.raises(ExportError, match=r"expected \(1, 64, 64, 3\) float32 arrays \(NHWC\)"):
        quantize_int8(fp32, str(tmp_path / "x.onnx"), [images[0].transpose(0, 3, 1, 2)])


# --- shared factors ---------------------------------------------------------------------------


def test_a_shared_factor_is_stored_once_in_the_int8_file(tmp_path):
    """ONNX Runtime's pre-processing folds the scale and shift after Tucker's shared U6 into a
    per-layer copy; with per-channel weight scales and positive BatchNorm scales the copies
    quantize to the same int8 values, and the INT8 file keeps one of them."""
    from torch import nn

    hourglass = make_hourglass(n_joints=16)
    with torch.no_grad():
        for m in hourglass.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.abs_().add_(0.1)  # positive scales, as trained networks nearly all have
    tnet = tcompress.convert(hourglass, method="tucker", ranks="2,2,3,2,3,5,3,3").eval()
    fp32, int8 = str(tmp_path / "t.onnx"), str(tmp_path / "t-int8.onnx")
    export_onnx(tnet, fp32, "factorized", input_size=SIZE)
    report = quantize_int8(fp32, int8, calibration_images("synthetic", 4, SIZE, fp32))
    u6 = (8, 5, 1, 1)  # f_out x R6, one per block convolution before the merge
    model = onnx.load(int8)
    copies = [i for i in model.graph.initializer if tuple(i.dims) == u6]
    assert len(copies) == 1 and copies[0].data_type == TensorProto.INT8
    assert report.shared_initializers >= 23  # 24 block convolutions, U6 once
    # Each layer keeps its own scales: 24 DequantizeLinear nodes read the one U6.
    readers = [n for n in model.graph.node if copies[0].name in n.input]
    assert len(readers) == 24 and len({n.input[1] for n in readers}) == 24


def test_merging_identical_initializers_changes_no_output(files, tmp_path):
    from tcompress.export.quantize import share_identical_initializers

    model = onnx.load(files["int8"])
    dequantized = {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    first = next(i for i in model.graph.initializer if i.name in dequantized and i.raw_data)
    twin = model.graph.initializer.add()
    twin.CopyFrom(first)
    twin.name = first.name + ".copy"
    reader = next(
        n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == first.name
    )
    probe = model.graph.node.add()  # a second reader of the original (its output unused)
    probe.CopyFrom(reader)
    probe.name, probe.output[0] = "probe", "probe_output"
    reader.input[0] = twin.name  # the real reader now reads the copy
    before = str(tmp_path / "before.onnx")
    onnx.save(model, before)
    merged = share_identical_initializers(model)
    assert merged >= 1 and twin.name not in {i.name for i in model.graph.initializer}
    after = str(tmp_path / "after.onnx")
    onnx.save(model, after)
    image = held_out()[0]
    for a, b in zip(run(before, image), run(after, image)):
        np.testing.assert_array_equal(a, b)


# --- 7-bit weights through export_onnx and the command line ------------------------------------


def test_export_passes_the_weight_width_on_and_notes_a_saturating_cpu(tmp_path, monkeypatch):
    model = make_hourglass(n_joints=16)
    int8 = dict(precision="int8", calibrate="synthetic", calibration_samples=2, input_size=SIZE)
    monkeypatch.setattr(quantize_module, "saturating_cpu", lambda: "Test CPU, x86 without VNNI")
    report = export_onnx(model, tmp_path / "r.onnx", "dense", **int8)
    assert report.quantization["reduce_range"] is True
    assert not any("saturate" in note for note in report.notes)
    report = export_onnx(model, tmp_path / "q.onnx", "dense", reduce_range=False, **int8)
    assert report.quantization["reduce_range"] is False
    error = report.quantization["output_error"]
    assert saturation_note("Test CPU, x86 without VNNI", error) in report.notes
    # A refused task check of 8-bit weights on such a CPU names the remedy; 7-bit ones do not.
    out = tmp_path / "t.onnx"
    checked = dict(int8, check="synthetic", check_samples=2, max_drop=-1)
    with pytest.raises(ExportError) as refused:
        export_onnx(model, out, "dense", reduce_range=False, **checked)
    hint = (
        "; this CPU (Test CPU, x86 without VNNI) adds pairs of 8-bit products in 16 bits, which "
        "can saturate: quantize with 7-bit weights for it (the default, without {}), or check "
        "the file on the CPU it is for"
    )
    assert str(refused.value).endswith(hint.format("reduce_range=False"))
    assert refused.value.for_command({"reduce_range": "--full-range"}).endswith(
        hint.format("--full-range")
    )
    with pytest.raises(ExportError) as refused:
        export_onnx(model, out, "dense", **checked)
    assert "saturate" not in str(refused.value)
    assert not out.exists()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_8_bit_weights_are_refused_outside_int8(tmp_path, precision):
    out = tmp_path / "x.onnx"
    with pytest.raises(ExportError) as refused:
        export_onnx(make_hourglass(), out, "dense", precision=precision, reduce_range=False)
    assert str(refused.value) == (
        "reduce_range=False keeps 8-bit INT8 weights and applies to precision='int8' only; "
        f"the file asked for is {precision}"
    )
    assert not out.exists()
    with pytest.raises(ExportError, match=r"^reduce_range is 1; expected True or False$"):
        export_onnx(make_hourglass(), out, "dense", reduce_range=1)


def test_the_command_line_takes_full_range(tmp_path):
    import json

    from click.testing import CliRunner

    from tcompress.cli import main
    from tcompress.models import pretrained_path

    args = ["export", str(pretrained_path()), "--form", "dense", "--input-size", "64"]
    args += ["--precision", "int8", "--calibrate", "synthetic", "-n", "2", "--no-validate"]
    for flags, reduced in (([], True), (["--full-range"], False)):
        out = tmp_path / f"hg-int8-{reduced}.onnx"
        r = CliRunner().invoke(main, [*args, *flags, "--json", "-o", str(out)])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["quantization"]["reduce_range"] is reduced
        settings = {p.key: p.value for p in onnx.load(out).metadata_props}[QUANTIZATION_KEY]
        assert json.loads(settings)["reduce_range"] is reduced
    fp16 = ["export", str(pretrained_path()), "--precision", "fp16", "--full-range"]
    r = CliRunner().invoke(main, [*fp16, "-o", str(tmp_path / "h.onnx")])
    assert r.exit_code == 2 and not (tmp_path / "h.onnx").exists()
    assert r.stderr.strip() == (
        "Error: --full-range keeps 8-bit INT8 weights and applies to --precision int8 only; "
        "the file asked for is fp16"
    )


def test_an_8_bit_file_warns_when_run_on_a_saturating_cpu(files, tmp_path, monkeypatch, caplog):
    from tcompress.evaluation.run import OnnxModel

    eight = str(tmp_path / "q8.onnx")
    quantize_int8(files["fp32"], eight, files["images"][:1], reduce_range=False)
    monkeypatch.setattr(quantize_module, "saturating_cpu", lambda: "Test CPU, x86 without VNNI")
    with caplog.at_level("WARNING", logger="tcompress.evaluation.run"):
        assert OnnxModel(eight).saturating_cpu == "Test CPU, x86 without VNNI"
        assert OnnxModel(files["int8"]).saturating_cpu is None
        assert OnnxModel(files["fp32"]).saturating_cpu is None
    (warned,) = caplog.messages
    assert warned == (
        f"ONNX file '{eight}' has 8-bit INT8 weights, and this CPU (Test CPU, x86 without "
        "VNNI) adds pairs of their products in 16 bits, which can saturate: its scores here can be "
        "far below those on CPUs with VNNI or on ARM; for this CPU, export with 7-bit weights "
        "(tcompress export's default, without --full-range)"
    )
    monkeypatch.setattr(quantize_module, "saturating_cpu", lambda: None)
    caplog.clear()
    assert OnnxModel(eight).saturating_cpu is None and caplog.messages == []
