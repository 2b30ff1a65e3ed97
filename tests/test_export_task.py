"""Task-level validation of exports: PCKh of the file against its PyTorch model."""

import os

import pytest

import tcompress
from tcompress.errors import ExportError
from tcompress.export.onnx import export_onnx
from tcompress.export.task import task_check
from tcompress.models import pretrained_path


@pytest.fixture(scope="module")
def bundled():
    return tcompress.load(pretrained_path()).eval()


def test_an_fp32_export_scores_as_its_model(tmp_path, bundled):
    path = tmp_path / "hg.onnx"
    report = export_onnx(bundled, path, "dense", check="synthetic", check_samples=16)
    t = report.task
    assert t.images == 16 and t.data == "synthetic" and t.max_drop == 0.25
    assert t.pckh_pytorch > 50  # a trained model: the check can see a drop
    assert abs(t.drop) <= 0.25 and t.passed
    assert report.to_dict()["task"]["passed"] is True


def test_a_file_that_scores_below_its_model_is_refused_and_not_written(tmp_path, bundled):
    broken = tcompress.convert(pretrained_path(), ranks="1,1,1,1,2,2,1,1").eval()
    export_onnx(broken, tmp_path / "broken.onnx", "factorized")
    check = task_check(
        tmp_path / "broken.onnx", bundled, "synthetic", n=16, max_drop=1.0, image_size=256
    )
    assert check.drop > 10 and not check.passed
    # Through export_onnx the file is checked against its own model (a drop near 0): a negative
    # budget refuses even that, and the refusal leaves no file.
    out = tmp_path / "t.onnx"
    with pytest.raises(ExportError, match=r"failed the task check: PCKh@0.5 .* \(at most -1 "):
        export_onnx(broken, out, "factorized", check="synthetic", check_samples=8, max_drop=-1)
    assert not out.exists() and os.listdir(tmp_path) == ["broken.onnx"]


def test_unlabeled_check_data_is_refused(tmp_path, bundled):
    import numpy as np

    from tcompress.data import write_image

    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "a.png", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ExportError, match="has no labels; the task check scores PCKh"):
        export_onnx(bundled, tmp_path / "x.onnx", "dense", check=folder, check_samples=1)
    assert not (tmp_path / "x.onnx").exists()
