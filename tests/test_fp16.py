"""float16 ONNX files: conversion (size, types, metadata), the providers that run float16 Conv,
validation against PyTorch by the route available here, and bad input as one-line errors."""

import os
import platform

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tcompress
from tcompress.errors import ExportError
from tcompress.export import fp16
from tcompress.export.fp16 import (
    FP16_ATOL,
    FP16_RTOL,
    Fp16Validation,
    fp16_providers,
    to_fp16,
    upcast,
    validate_fp16,
)
from tcompress.export.onnx import export_onnx
from tcompress.export.validate import ValidationReport

from .conftest import make_hourglass

RANKS = (1, 2, 2, 1, 4, 5, 2, 3)
KEYS = ("tcompress.input_layout", "tcompress.pixel_mean", "tcompress.pixel_std")
NATIVE = bool(fp16_providers())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The small hourglass (dense) and its Tucker T-Net (factorized), exported in float32."""
    folder = tmp_path_factory.mktemp("fp32")
    hourglass = make_hourglass()
    tnet = tcompress.convert(make_hourglass(), method="tucker", ranks=RANKS).eval()
    paths = {"hourglass": folder / "hg.onnx", "tnet": folder / "tnet.onnx"}
    export_onnx(hourglass, paths["hourglass"], "dense", input_size=32, validate=False)
    export_onnx(tnet, paths["tnet"], "factorized", input_size=32, validate=False)
    return {"hourglass": hourglass, "tnet": tnet, "paths": paths}


@pytest.fixture(scope="module")
def half(exported, tmp_path_factory):
    """The small hourglass's float16 file (float16 input and outputs), validated on the way."""
    path = tmp_path_factory.mktemp("fp16") / "hg16.onnx"
    report = to_fp16(exported["paths"]["hourglass"], path, reference=exported["hourglass"])
    return path, report


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


def float_weight_bytes(path) -> int:
    return sum(
        numpy_helper.to_array(t).nbytes
        for t in onnx.load(path).graph.initializer
        if t.data_type == TensorProto.FLOAT
    )


# --- conversion -------------------------------------------------------------------------------


def test_every_weight_and_tensor_is_float16_and_the_metadata_is_kept(exported, half):
    path, report = half
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)  # nodes in topological order, too
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT16}
    assert report.weights == sum(np.prod(t.dims) for t in model.graph.initializer)
    io = [*model.graph.input, *model.graph.output]
    assert {v.type.tensor_type.elem_type for v in io} == {TensorProto.FLOAT16}
    source = onnx.load(exported["paths"]["hourglass"])
    meta = {e.key: e.value for e in model.metadata_props}
    for entry in source.metadata_props:
        assert meta[entry.key] == entry.value
    assert meta["tcompress.input_layout"] == "NCHW"
    assert meta[fp16.PRECISION_KEY] == "fp16"
    # Resize's scales stay float32, as the operator requires (the converter casts them back).
    assert all(
        n.op_type != "Cast" or n.attribute[0].i == TensorProto.FLOAT for n in model.graph.node
    )


def test_pixel_normalisation_metadata_is_kept(exported, tmp_path):
    source = onnx.load(exported["paths"]["hourglass"])
    for key, value in zip(KEYS[1:], ("0.5,0.5,0.5", "0.25,0.25,0.25")):
        entry = source.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(source, tmp_path / "normalised.onnx")
    to_fp16(tmp_path / "normalised.onnx", tmp_path / "half.onnx")
    meta = {e.key: e.value for e in onnx.load(tmp_path / "half.onnx").metadata_props}
    assert [meta[k] for k in KEYS] == ["NCHW", "0.5,0.5,0.5", "0.25,0.25,0.25"]


def test_the_file_is_about_half_the_size(exported, half, tmp_path):
    path, report = half
    source = exported["paths"]["hourglass"]
    assert report.source_bytes == os.path.getsize(source)
    assert report.file_bytes == os.path.getsize(path)
    # Every weight byte halves; the graph around it is the same text.
    saved = report.source_bytes - report.file_bytes
    assert saved == pytest.approx(float_weight_bytes(source) / 2, rel=0.03)
    # Once the weights outweigh the graph (features=32: 1.2 MB), the file is half the size.
    wide = make_hourglass(features=32)
    export_onnx(wide, tmp_path / "wide.onnx", "dense", input_size=32, validate=False)
    big = to_fp16(tmp_path / "wide.onnx", tmp_path / "wide16.onnx")
    assert 0.49 < big.size_ratio < 0.53
    assert big.to_dict()["size_ratio"] == big.size_ratio


def test_keep_io_types_keeps_float32_input_and_outputs(exported, tmp_path):
    path = tmp_path / "io32.onnx"
    report = to_fp16(
        exported["paths"]["tnet"], path, keep_io_types=True, reference=exported["tnet"]
    )
    assert report.keep_io_types and report.validation.ok
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.type for i in session.get_inputs()] == ["tensor(float)"]
    assert {o.type for o in session.get_outputs()} == {"tensor(float)"}
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert all(
        o.dtype == np.float32 and o.shape == (2, 4, 8, 8) for o in session.run(None, {"image": x})
    )
    model = onnx.load(path)
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT16}


def test_a_t_net_converts_and_validates(exported, tmp_path):
    report = to_fp16(exported["paths"]["tnet"], tmp_path / "t16.onnx", reference=exported["tnet"])
    assert report.validation.ok and report.validation.names == "passed"
    assert report.file_bytes < report.source_bytes
    assert sorted(os.listdir(tmp_path)) == ["t16.onnx"]


def test_the_quantization_tools_still_import_after_a_conversion(exported, tmp_path):
    # onnxruntime.transformers puts its folder on sys.path for its modules' own imports, which
    # the quantization tools' pre-processing needs later in the same process.
    to_fp16(exported["paths"]["hourglass"], tmp_path / "h.onnx")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    assert callable(quant_pre_process)


# --- providers --------------------------------------------------------------------------------


def test_fp16_providers_are_available_ones_that_pass_the_probe():
    found = fp16_providers()
    assert isinstance(found, tuple)
    assert set(found) <= set(ort.get_available_providers())
    assert fp16_providers() is found  # computed once


def test_the_cpu_verdict_agrees_with_onnx_runtime_s_profile(tmp_path):
    # Independently of the probe's optimized graph: the kernels ONNX Runtime ran, by its profile.
    import json

    data, x, want = fp16._probe_model()
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = os.fspath(tmp_path / "profile")
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x})
    events = json.load(open(session.end_profiling()))
    ran = {
        e["args"]["op_name"] for e in events if e.get("cat") == "Node" and "op_name" in e["args"]
    }
    assert "Conv" in ran
    assert got.dtype == np.float16 and np.allclose(got, want, rtol=1e-2, atol=1e-2)
    assert ("Cast" in ran) == ("CPUExecutionProvider" not in fp16_providers())


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64") or not ort.__version__.startswith("1.32"),
    reason="measured on x86 with ONNX Runtime 1.32",
)
def test_onnx_runtime_1_32_on_x86_has_no_float16_conv():
    assert "CPUExecutionProvider" not in fp16_providers()


# --- validation -------------------------------------------------------------------------------


def test_validation_reports_its_route(exported, half):
    path, report = half
    check = report.validation
    assert isinstance(check, Fp16Validation) and isinstance(check, ValidationReport)
    assert check.ok and check.checker == "passed" and check.names == "passed"
    assert check.route == ("native" if NATIVE else "upcast")
    assert check.provider == (fp16_providers()[0] if NATIVE else "CPUExecutionProvider")
    assert check.note
    assert [(c.batch, c.name) for c in check.outputs] == [
        (1, "heatmaps_0"),
        (1, "heatmaps_1"),
        (3, "heatmaps_0"),
        (3, "heatmaps_1"),
    ]
    as_dict = check.to_dict()
    assert as_dict["route"] == check.route and as_dict["ok"] is True
    assert report.to_dict()["validation"]["route"] == check.route


def test_correct_exports_pass_with_margin(exported, half):
    path, _ = half
    check = validate_fp16(path, exported["hourglass"])
    # Measured on correct exports: at most 4.1e-3 of the output's scale, against 1e-2 + 1e-3.
    for c in check.outputs:
        assert c.max_abs_diff < c.tolerance / 3
        assert c.tolerance == pytest.approx(FP16_ATOL + FP16_RTOL * c.max_abs_diff / c.max_rel_diff)
        assert 1e-5 < c.max_rel_diff < 5e-3  # float16 rounding shows, and stays small


@pytest.mark.parametrize("route", ["upcast", "auto"])
def test_a_wrong_weight_fails(exported, half, tmp_path, route):
    path, _ = half
    model = onnx.load(path)
    convs = [n.input[1] for n in model.graph.node if n.op_type == "Conv"]
    target = next(t for t in model.graph.initializer if t.name == convs[len(convs) // 2])
    wrong = (numpy_helper.to_array(target).astype(np.float32) * 1.1).astype(np.float16)
    target.CopyFrom(numpy_helper.from_array(wrong, target.name))
    onnx.save(model, tmp_path / "wrong.onnx")
    check = validate_fp16(tmp_path / "wrong.onnx", exported["hourglass"], route=route)
    assert not check.ok
    assert check.problems and all("max abs diff" in p for p in check.problems)


def test_another_network_fails_and_leaves_no_file(exported, tmp_path):
    with pytest.raises(ExportError) as error:
        to_fp16(exported["paths"]["hourglass"], tmp_path / "h.onnx", reference=make_hourglass(7))
    message = one_line(error)
    assert "failed validation" in message and "route" in message
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(NATIVE, reason="a provider here runs float16 Conv")
def test_route_native_without_a_provider_is_an_error(exported, half):
    with pytest.raises(ExportError) as error:
        validate_fp16(half[0], exported["hourglass"], route="native")
    message = one_line(error)
    assert "no execution provider here runs float16 Conv" in message
    assert "route='upcast'" in message
    assert error.value.for_command().count("--route upcast") == 1


@pytest.mark.skipif(not NATIVE, reason="no provider here runs float16 Conv")
def test_route_native_runs_the_file_itself(exported, half):
    check = validate_fp16(half[0], exported["hourglass"], route="native")
    assert check.ok and check.route == "native" and check.provider in fp16_providers()


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_the_native_route_feeds_the_file_its_own_types(
    exported, tmp_path, monkeypatch, keep_io_types
):
    # The native route's code, run here on the CPU provider (which takes the file, through its
    # Casts) by pretending it has float16 kernels: what a CUDA machine runs on CUDA.
    monkeypatch.setattr(fp16, "fp16_providers", lambda: ("CPUExecutionProvider",))
    path = tmp_path / "h.onnx"
    to_fp16(exported["paths"]["hourglass"], path, keep_io_types=keep_io_types)
    check = validate_fp16(path, exported["hourglass"])
    assert check.ok and check.route == "native" and check.provider == "CPUExecutionProvider"
    assert "float16 kernels on CPUExecutionProvider" in check.note
    # About the upcast route's numbers: on x86 the CPU provider computes in float32 as upcast
    # does (with float32 input it may skip the input's rounding, which upcast keeps).
    upcast_check = validate_fp16(path, exported["hourglass"], route="upcast")
    for a, b in zip(check.outputs, upcast_check.outputs):
        assert a.max_abs_diff == pytest.approx(b.max_abs_diff, rel=0.2 if not keep_io_types else 1)


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_upcast_is_lossless_and_keeps_the_roundings(exported, tmp_path, keep_io_types):
    path = tmp_path / "h.onnx"
    to_fp16(exported["paths"]["hourglass"], path, keep_io_types=keep_io_types)
    model = onnx.load(path)
    wide = upcast(model)
    assert all(t.data_type != TensorProto.FLOAT16 for t in wide.graph.initializer)
    halves = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for t in wide.graph.initializer:
        assert np.array_equal(numpy_helper.to_array(t), halves[t.name].astype(np.float32))
    io = [*wide.graph.input, *wide.graph.output]
    assert {v.type.tensor_type.elem_type for v in io} == {TensorProto.FLOAT}

    def casts_to(m, kind):
        return [n for n in m.graph.node if n.op_type == "Cast" and n.attribute[0].i == kind]

    # Each Cast to float16 of the file (the input's, with keep_io_types) stays a rounding:
    # a Cast to float16 and one back to float32.
    half_casts = casts_to(model, TensorProto.FLOAT16)
    assert len(half_casts) == (1 if keep_io_types else 0)
    assert len(casts_to(wide, TensorProto.FLOAT16)) == len(half_casts)
    assert len(casts_to(wide, TensorProto.FLOAT)) == len(casts_to(model, TensorProto.FLOAT)) + len(
        half_casts
    )
    onnx.checker.check_model(wide, full_check=True)
    assert model.graph.initializer[0].data_type == TensorProto.FLOAT16  # the input is untouched


def test_the_upcast_route_matches_the_cpu_provider_on_the_file(exported, half):
    # On x86 ONNX Runtime runs the float16 file through Casts, in float32: what upcast runs.
    path, report = half
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    check = validate_fp16(path, exported["hourglass"], route="upcast", batches=(2,))
    import torch

    from tcompress.models.io import model_io

    x = model_io(exported["hourglass"]).example(2, (32, 32), torch.Generator().manual_seed(0))
    got = session.run(None, {"image": x.numpy().astype(np.float16)})
    with torch.no_grad():
        want = [w.numpy() for w in exported["hourglass"](x)]
    direct = max(float(np.abs(g.astype(np.float64) - w).max()) for g, w in zip(got, want))
    assert direct == pytest.approx(max(c.max_abs_diff for c in check.outputs), rel=0.2)


# --- bad input --------------------------------------------------------------------------------


def test_bad_sources_and_outputs_are_one_line_errors(exported, half, tmp_path):
    source = exported["paths"]["hourglass"]
    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n")
    cases = [
        ((tmp_path / "missing.onnx", tmp_path / "o.onnx"), {}, "does not exist"),
        ((text, tmp_path / "o.onnx"), {}, "is not an ONNX model"),
        ((half[0], tmp_path / "o.onnx"), {}, "is already float16"),
        ((source, source), {}, "is the source file"),
        ((source, tmp_path / "nowhere" / "o.onnx"), {}, "does not exist; create it first"),
        ((source, tmp_path), {}, "is a directory"),
        ((source, tmp_path / "o.onnx"), {"keep_io_types": "yes"}, "expected True or False"),
    ]
    for args, kwargs, expected in cases:
        with pytest.raises(ExportError) as error:
            to_fp16(*args, **kwargs)
        assert expected in one_line(error), (args, kwargs)
    assert sorted(os.listdir(tmp_path)) == ["notes.onnx"]


def test_bad_validation_settings_are_one_line_errors(exported, half):
    model = exported["hourglass"]
    for kwargs, expected in [
        ({"route": "gpu"}, "route is 'gpu'; expected one of auto, native, upcast"),
        ({"atol": -1.0}, "atol is -1.0; expected a number >= 0"),
        ({"input_size": "big"}, "input_size is 'big'; expected an int or (height, width)"),
    ]:
        with pytest.raises(ExportError) as error:
            validate_fp16(half[0], model, **kwargs)
        assert one_line(error) == expected


def test_a_weight_beyond_float16_range_is_refused(tmp_path):
    w = np.full((1, 1, 1, 1), 1e5, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["out"])],
        "big",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 4, 4])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "b.onnx"
    )
    with pytest.raises(ExportError) as error:
        to_fp16(tmp_path / "b.onnx", tmp_path / "b16.onnx")
    assert "beyond float16's largest value 65504" in one_line(error)
    assert sorted(os.listdir(tmp_path)) == ["b.onnx"]
