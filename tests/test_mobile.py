"""ONNX Runtime's mobile format: the .ort file loads, matches its .onnx source and is written
atomically with nothing left beside it; the mobile usability verdicts come back as data."""

import logging
import os
import platform
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import tcompress
from tcompress.errors import ExportError
from tcompress.export import mobile
from tcompress.export.fp16 import fp16_providers, to_fp16
from tcompress.export.mobile import MobileUsability, compare_ort, mobile_usability, to_ort
from tcompress.export.onnx import export_onnx

from .conftest import make_hourglass

RANKS = (1, 2, 2, 1, 4, 5, 2, 3)
CPU = ["CPUExecutionProvider"]
X86 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The small hourglass (dense) and its Tucker T-Net (factorized) in float32 ONNX, alone in
    their folder."""
    folder = tmp_path_factory.mktemp("onnx")
    tnet = tcompress.convert(make_hourglass(), method="tucker", ranks=RANKS)
    export_onnx(make_hourglass(), folder / "hg.onnx", "dense", input_size=32, validate=False)
    export_onnx(tnet, folder / "tnet.onnx", "factorized", input_size=32, validate=False)
    return folder


@pytest.fixture(scope="module")
def converted(sources, tmp_path_factory):
    """The hourglass's .ort (fixed style), in a folder of its own."""
    out = tmp_path_factory.mktemp("ort") / "hg.ort"
    return out, to_ort(sources / "hg.onnx", out)


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


def test_the_ort_file_loads_and_matches_its_source(sources, converted):
    out, report = converted
    assert sorted(os.listdir(out.parent)) == ["hg.ort"]  # no config, no temporary folder
    assert sorted(os.listdir(sources)) == ["hg.onnx", "tnet.onnx"]  # nothing beside the source
    assert report.path == os.fspath(out) and report.file_bytes == os.path.getsize(out)
    assert report.source_bytes == os.path.getsize(sources / "hg.onnx")
    assert report.validation.ok and report.validation.names == "passed"
    assert report.validation.checker == "not applicable"
    assert [c.batch for c in report.validation.outputs] == [1, 1, 3, 3]
    assert report.validation.max_abs_diff == 0.0  # the same kernels, optimised alike
    # Independently: ONNX Runtime takes the .ort, and at its x86 defaults (NCHWc) the source
    # differs from it by float32 summation order only.
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32) * 2
    got = ort.InferenceSession(out, providers=CPU).run(None, {"image": x})
    want = ort.InferenceSession(sources / "hg.onnx", providers=CPU).run(None, {"image": x})
    assert [g.shape for g in got] == [w.shape for w in want] == [(2, 4, 8, 8)] * 2
    assert max(float(np.abs(g - w).max()) for g, w in zip(got, want)) <= 1e-6


def test_the_ort_file_keeps_metadata_names_and_operators(sources, converted):
    out, report = converted
    session = ort.InferenceSession(out, providers=CPU)
    assert session.get_modelmeta().custom_metadata_map["tcompress.input_layout"] == "NCHW"
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.get_inputs()[0].shape == ["batch", 3, 32, 32]
    assert [o.name for o in session.get_outputs()] == ["heatmaps_0", "heatmaps_1"]
    assert "ai.onnx;11;Conv" in report.operators
    assert report.types["ai.onnx:Conv"] == ["float"]
    assert report.config_path is None and report.notes == []
    assert report.to_dict()["validation"]["ok"] is True
    assert report.to_dict()["size_ratio"] == report.size_ratio


def test_runtime_style_with_its_config_written_elsewhere(sources, tmp_path):
    (tmp_path / "ort").mkdir()
    (tmp_path / "build").mkdir()
    out, config = tmp_path / "ort" / "t.ort", tmp_path / "build" / "ops.config"
    report = to_ort(sources / "tnet.onnx", out, optimization_style="runtime", config=config)
    assert report.optimization_style == "runtime" and report.validation.ok
    assert report.validation.max_abs_diff <= 1e-6
    assert any("enable_saved_runtime_optimizations" in n for n in report.notes)
    assert sorted(os.listdir(tmp_path / "ort")) == ["t.ort"]
    assert sorted(os.listdir(tmp_path / "build")) == ["ops.config"]
    lines = [line for line in config.read_text().splitlines() if not line.startswith("#")]
    assert any(line.startswith("ai.onnx;") and "Conv" in line for line in lines)
    assert report.config_path == os.fspath(config)
    assert ort.InferenceSession(out, providers=CPU).get_inputs()[0].name == "image"


def test_an_existing_output_is_replaced(sources, converted, tmp_path):
    out = tmp_path / "hg.ort"
    out.write_bytes(b"old")
    to_ort(sources / "hg.onnx", out, validate=False)
    # (Two conversions of one model need not be byte-identical: compare what they compute.)
    assert out.stat().st_size == converted[0].stat().st_size
    assert compare_ort(out, converted[0].parent / "hg.ort").names == "passed"
    assert compare_ort(out, sources / "hg.onnx").max_abs_diff == 0.0
    assert sorted(os.listdir(tmp_path)) == ["hg.ort"]


@pytest.mark.skipif(not X86 or "CPUExecutionProvider" in fp16_providers(), reason="fp16 CPU")
def test_a_float16_source_is_refused_where_conv_would_run_in_float32(sources, tmp_path):
    to_fp16(sources / "hg.onnx", tmp_path / "hg16.onnx")
    with pytest.raises(ExportError) as error:
        to_ort(tmp_path / "hg16.onnx", tmp_path / "hg16.ort")
    message = one_line(error)
    assert "is float16, but ONNX Runtime's CPU provider here has no float16 Conv" in message
    assert "allow_float32_fallback=True" in message
    assert "--allow-float32-fallback" in error.value.for_command()
    assert sorted(os.listdir(tmp_path)) == ["hg16.onnx"]


def test_a_float16_source_is_kept_when_asked(sources, tmp_path):
    to_fp16(sources / "hg.onnx", tmp_path / "hg16.onnx")
    report = to_ort(tmp_path / "hg16.onnx", tmp_path / "hg16.ort", allow_float32_fallback=True)
    assert report.validation.ok
    session = ort.InferenceSession(tmp_path / "hg16.ort", providers=CPU)
    assert session.get_inputs()[0].type == "tensor(float16)"
    if "CPUExecutionProvider" not in fp16_providers():
        assert report.notes and "float32" in report.notes[0]
    assert sorted(os.listdir(tmp_path)) == ["hg16.onnx", "hg16.ort"]


@pytest.mark.slow
def test_the_plain_command_runs_where_hiding_torch_fails(sources, tmp_path, monkeypatch):
    # Should a later converter need torch, the tool's own `python -m` command runs instead.
    monkeypatch.setattr(mobile, "_HIDE_TORCH", "raise ImportError(\"No module named 'torch'\")")
    report = to_ort(sources / "hg.onnx", tmp_path / "hg.ort")
    assert report.validation.max_abs_diff == 0.0
    assert sorted(os.listdir(tmp_path)) == ["hg.ort"]


def test_compare_ort_catches_another_network(sources, converted):
    # Same names, types and shapes, other weights: every output is off.
    check = compare_ort(converted[0], sources / "tnet.onnx")
    assert check.names == "passed" and not check.ok
    assert len(check.problems) == 4 and all("max abs diff" in p for p in check.problems)


def test_a_converter_failure_is_one_line_and_leaves_nothing(tmp_path):
    # onnx reads it, ONNX Runtime does not know the operator.
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["image"], ["out"], domain="example.custom")],
        "custom",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)]
    )
    onnx.save(model, tmp_path / "custom.onnx")
    with pytest.raises(ExportError) as error:
        to_ort(tmp_path / "custom.onnx", tmp_path / "custom.ort")
    message = one_line(error)
    assert message.startswith("ONNX Runtime's converter failed on")
    assert "NoSuchOp" in message
    assert sorted(os.listdir(tmp_path)) == ["custom.onnx"]


def test_bad_arguments_are_one_line_errors(sources, tmp_path):
    source = sources / "hg.onnx"
    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n")
    cases = [
        ((source, tmp_path / "hg.onnx"), {}, "does not end in .ort"),
        ((source, source), {}, "does not end in .ort"),
        ((tmp_path / "missing.onnx", tmp_path / "o.ort"), {}, "does not exist"),
        ((text, tmp_path / "o.ort"), {}, "is not an ONNX model"),
        ((source, tmp_path / "nowhere" / "o.ort"), {}, "does not exist; create it first"),
        ((source, tmp_path / "o.ort"), {"optimization_style": "max"}, "expected one of fixed"),
        ((source, tmp_path / "o.ort"), {"target_platform": "riscv"}, "expected None, 'arm'"),
        ((source, tmp_path / "o.ort"), {"validate": 1}, "expected True or False"),
        ((source, tmp_path / "o.ort"), {"config": tmp_path / "o.ort"}, "is the output"),
        ((source, tmp_path / "o.ort"), {"config": source}, "is the source file"),
    ]
    for args, kwargs, expected in cases:
        with pytest.raises(ExportError) as error:
            to_ort(*args, **kwargs)
        assert expected in one_line(error), (args, kwargs)
    assert sorted(os.listdir(tmp_path)) == ["notes.onnx"]


def test_the_ort_suffix_is_what_onnx_runtime_goes_by(converted, tmp_path):
    # Why the output must end in .ort: under another name ONNX Runtime parses it as ONNX.
    other = tmp_path / "hg.bin"
    other.write_bytes(converted[0].read_bytes())
    with pytest.raises(Exception, match="(?i)protobuf"):
        ort.InferenceSession(other, providers=CPU)


# --- mobile usability -------------------------------------------------------------------------


def test_mobile_usability_is_data_not_output(sources, capfd, caplog):
    handlers = list(logging.getLogger().handlers)
    with caplog.at_level(logging.DEBUG):
        result = mobile_usability(sources / "hg.onnx")
    assert isinstance(result, MobileUsability) and result.available
    assert set(result.verdicts) == {"NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram"}
    assert set(result.verdicts.values()) <= {"YES", "MAYBE", "NO"}
    # The dynamic batch keeps NNAPI / CoreML off; fixed shapes would let them take every node.
    assert set(result.fixed_shape_verdicts) == set(result.verdicts)
    assert result.fixed_shape_verdicts["NNAPI"] == "YES"
    assert isinstance(result.try_nnapi_or_coreml, bool)
    assert any("partitions" in m for m in result.messages)
    assert result.to_dict()["verdicts"] == result.verdicts
    out = capfd.readouterr()
    assert out.out == "" and out.err == ""
    assert caplog.records == []
    assert logging.getLogger().handlers == handlers


def test_mobile_usability_without_the_checker(sources, monkeypatch):
    monkeypatch.setitem(sys.modules, mobile._CHECKER, None)
    result = mobile_usability(sources / "hg.onnx")
    assert not result.available and result.verdicts == {} and result.try_nnapi_or_coreml is None


def test_mobile_usability_of_a_bad_file_is_one_line(tmp_path):
    with pytest.raises(ExportError) as error:
        mobile_usability(tmp_path / "missing.onnx")
    assert "does not exist" in one_line(error)
