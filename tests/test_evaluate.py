"""tcompress evaluate: the same PCKh for a dense checkpoint, its full-rank T-Net and their ONNX."""

import json

import pytest
import torch
from click.testing import CliRunner

import tcompress
from tcompress.cli import main
from tcompress.data.images import write_image
from tcompress.evaluation import EvaluationError
from tcompress.evaluation.run import evaluate
from tcompress.export.onnx import export_onnx

from .conftest import make_hourglass


@pytest.fixture
def files(tmp_path):
    hourglass = make_hourglass(n_joints=16)  # the 16 MPII joints of the data sets
    checkpoint = str(tmp_path / "hg.pth")
    torch.save(hourglass.state_dict(), checkpoint)
    tnet = tcompress.convert(hourglass, method="tucker")
    tcompress.save(tnet, tmp_path / "t.pt")
    export_onnx(hourglass, tmp_path / "hg.onnx", "dense", input_size=64)
    return {"dense": checkpoint, "tnet": str(tmp_path / "t.pt"), "onnx": str(tmp_path / "hg.onnx")}


def test_same_result_for_every_kind_of_file(files):
    results = {}
    for kind, path in files.items():
        report = evaluate(path, "synthetic", n=12, image_size=64, batch_size=5)
        assert report.kind == kind and report.image_size == 64
        results[kind] = report.result
    ref = results["dense"]
    assert ref.n_samples == 12 and sum(ref.counts) > 100
    for kind in ("tnet", "onnx"):
        # Full rank and a float32 export: the same decoded joints, so the same hits.
        assert results[kind].hits == ref.hits, kind
    flipped = evaluate(files["dense"], "synthetic", n=12, image_size=64, flip=True)
    assert flipped.flip and flipped.result.counts == ref.counts


def test_unlabelled_data_is_refused(tmp_path, files):
    folder = tmp_path / "images"
    folder.mkdir()
    import numpy as np

    write_image(folder / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(EvaluationError, match="has no joint labels"):
        evaluate(files["dense"], str(folder), image_size=64)


def test_cli(files):
    runner = CliRunner()
    r = runner.invoke(main, ["evaluate", files["onnx"], "-n", "8", "--json"])
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    assert js["kind"] == "onnx" and js["image_size"] == 64 and js["pckh"]["metric"] == "PCKh@0.5"
    r = runner.invoke(main, ["evaluate", files["tnet"], "-n", "8", "--image-size", "64"])
    assert r.exit_code == 0 and "mean PCKh@0.5" in r.stdout and "head_top" in r.stdout
    r = runner.invoke(main, ["evaluate", "missing.onnx"])
    assert r.exit_code == 2 and r.output == "Error: ONNX file 'missing.onnx' does not exist\n"
