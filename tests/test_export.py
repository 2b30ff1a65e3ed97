"""ONNX export: both forms run in ONNX Runtime and match PyTorch; broken exports are caught."""

import json
import os
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

import tcompress
from tcompress.cli import main
from tcompress.export import onnx as onnx_export
from tcompress.export.onnx import ExportError, export_onnx

from .conftest import outputs

RANKS = {"tucker": (1, 2, 2, 1, 4, 5, 2, 3), "mps": (2, 3, 6, 8, 6, 5, 3)}


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(o) for o in session.run(None, {"image": x.numpy()})]


@pytest.mark.parametrize("method", ["tucker", "mps"])
@pytest.mark.parametrize("form", ["factorized", "dense"])
def test_both_forms_match_pytorch_in_onnx_runtime(tmp_path, hourglass, method, form):
    tnet = tcompress.convert(hourglass, method=method, ranks=RANKS[method]).eval()
    path = tmp_path / "t.onnx"
    report = export_onnx(tnet, path, form, input_size=32)
    assert report.validation.ok and report.validation.checker == "passed"
    assert [c.batch for c in report.validation.outputs] == [1, 1, 3, 3]
    # Independently of the built-in validation: another batch size and other inputs.
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 3
    got, want = run_onnx(path, x), outputs(tnet, x)
    assert [g.shape for g in got] == [w.shape for w in want]
    # float32 rounding of the folded BatchNorms and of another summation order
    assert max(float((g - w).abs().max()) for g, w in zip(got, want)) <= 1e-4
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["heatmaps_0", "heatmaps_1"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops


def test_shared_factors_are_one_initializer(tmp_path, hourglass):
    tnet = tcompress.convert(hourglass, ranks=RANKS["tucker"])
    path = tmp_path / "t.onnx"
    export_onnx(tnet, path, "factorized", input_size=32)
    model = onnx.load(path)
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    uses = Counter(name for n in model.graph.node if n.op_type == "Conv" for name in n.input[1:2])
    r5 = RANKS["tucker"][4]
    first = [name for name, dims in inits.items() if dims == (r5, 8, 1, 1) and "convs" in name]
    assert first == ["hourglasses.0.levels.0.skip.convs.0.0.weight"]
    assert uses[first[0]] == 24  # U5^T: one initializer, every block's first 1x1 conv


def test_dense_hourglass_exports_dense_only(tmp_path, hourglass, checkpoint):
    report = export_onnx(checkpoint, tmp_path / "hg.onnx", "dense", input_size=32)
    assert report.validation.ok
    x = torch.randn(1, 3, 32, 32)
    assert (
        max(
            float((g - w).abs().max())
            for g, w in zip(run_onnx(tmp_path / "hg.onnx", x), outputs(hourglass, x))
        )
        <= 1e-4
    )
    with pytest.raises(ExportError, match="an uncompressed hourglass has no factorized form"):
        export_onnx(hourglass, tmp_path / "f.onnx", "factorized", input_size=32)
    assert not (tmp_path / "f.onnx").exists()


def test_broken_export_is_caught_and_leaves_no_file(tmp_path, hourglass, monkeypatch):
    tnet = tcompress.convert(hourglass, ranks=RANKS["tucker"])
    real = onnx_export.deployable

    def broken(model, form):
        rewritten = real(model, form)
        with torch.no_grad():
            rewritten.scores[1].bias += 0.5  # a wrong pass: the second stack's heatmaps shift
        return rewritten

    monkeypatch.setattr(onnx_export, "deployable", broken)
    with pytest.raises(ExportError) as info:
        export_onnx(tnet, tmp_path / "t.onnx", "factorized", input_size=32)
    text = str(info.value)
    assert "failed validation" in text
    assert "batch 1, heatmaps_1: max abs diff 0.5 > tolerance" in text
    assert "batch 3, heatmaps_1" in text and "heatmaps_0" not in text
    assert os.listdir(tmp_path) == []


def test_input_size_must_fit_the_hourglass(tmp_path, hourglass):
    with pytest.raises(ExportError, match="input size 30x30 does not fit a hourglass of depth 2"):
        export_onnx(hourglass, tmp_path / "x.onnx", "dense", input_size=30)


def test_cli_export(tmp_path, checkpoint):
    runner = CliRunner()
    tnet = tmp_path / "t.pt"
    assert (
        runner.invoke(main, ["convert", checkpoint, "--ranks", "f_in=4", "-o", str(tnet)]).exit_code
        == 0
    )
    out = tmp_path / "t.onnx"
    r = runner.invoke(
        main,
        [
            "export",
            str(tnet),
            "--form",
            "factorized",
            "--input-size",
            "32",
            "-o",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    assert js["validation"]["ok"] and js["form"] == "factorized" and js["file_bytes"] > 0
    r = runner.invoke(main, ["export", str(tnet), "--input-size", "32", "-o", str(out)])
    assert r.exit_code == 2 and "exists; pass --force" in r.output
    r = runner.invoke(
        main,
        ["export", str(tnet), "--form", "dense", "--input-size", "32", "-o", str(out), "--force"],
    )
    assert r.exit_code == 0 and "passed" in r.stdout and "wrote" in r.stdout
    r = runner.invoke(
        main,
        [
            "export",
            checkpoint,
            "--form",
            "factorized",
            "--input-size",
            "32",
            "-o",
            str(tmp_path / "h.onnx"),
        ],
    )
    assert r.exit_code == 2 and r.output.startswith("Error: an uncompressed hourglass")
    assert not (tmp_path / "h.onnx").exists()
    x = np.zeros((1, 3, 32, 32), np.float32)
    assert len(ort.InferenceSession(str(out)).run(None, {"image": x})) == 2


def test_public_api():
    assert tcompress.export_onnx is export_onnx


def test_export_leaves_the_model_as_it_was(tmp_path, hourglass):
    tnet = tcompress.convert(hourglass.double(), ranks=RANKS["tucker"]).train()
    report = export_onnx(tnet, tmp_path / "t.onnx", "factorized", input_size=32)
    assert report.validation.ok
    assert tnet.training
    assert all(p.dtype == torch.float64 for p in tnet.parameters())


def test_only_hourglasses_and_tnets(tmp_path):
    with pytest.raises(
        ExportError,
        match="model is a Linear; expected a T-Net, a LayerwiseNet or a StackedHourglass",
    ):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
