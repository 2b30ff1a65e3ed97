"""MPII data laid out as people have it: the annotation file beside an ``images/`` folder or
anywhere with ``--images``; and every bad input, wherever it fails, as one line with exit 2."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import loadmat, savemat

from tcompress.cli import one_line
from tcompress.data import MPIIDataset, make_dataset
from tcompress.data.mpii import MPII_ORIGIN
from tcompress.data.skeleton import JOINTS
from tcompress.errors import DataError
from tcompress.evaluation.mpii import MAT_JOINT_NAMES
from tcompress.models import StackedHourglass

from .test_cli import cli
from .test_mpii_pipeline import write_mpii


@pytest.fixture(scope="module")
def mpii(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpii")
    write_mpii(root, n=6, n_val=2)
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "small.pth"
    torch.manual_seed(0)
    torch.save(StackedHourglass(n_stacks=1, depth=2, block_depth=1, features=16).state_dict(), path)
    return path


def test_images_folder_beside_the_annotations_is_found(mpii, tmp_path):
    for spec in (mpii, mpii / "annotations.json"):
        data = make_dataset(spec, "test", 64, 16)
        assert data.root == mpii / "images" and len(data) == 2
        assert data[0]["image"].shape == (3, 64, 64)
    # pytorch-pose's name for the file
    (tmp_path / "mpii_annotations.json").write_text((mpii / "annotations.json").read_text())
    (tmp_path / "images").symlink_to(mpii / "images")
    assert make_dataset(tmp_path, "train", 64, 16).root == tmp_path / "images"


def test_images_beside_the_json_still_work(mpii, tmp_path):
    for image in (mpii / "images").iterdir():
        (tmp_path / image.name).symlink_to(image)
    (tmp_path / "a.json").write_text((mpii / "annotations.json").read_text())
    assert make_dataset(tmp_path / "a.json", "train", 64, 16).root == tmp_path


def test_images_elsewhere_with_images(mpii, tmp_path):
    (tmp_path / "ann.json").write_text((mpii / "annotations.json").read_text())
    data = make_dataset(tmp_path / "ann.json", "test", 64, 16, images=mpii / "images")
    assert data.root == mpii / "images"
    with pytest.raises(DataError, match=r"image file .*000000.jpg does not exist \(4 of 4 train"):
        make_dataset(tmp_path / "ann.json", "train", 64, 16)
    with pytest.raises(DataError, match="an image folder .* was given for data set 'synthetic'"):
        make_dataset("synthetic", "train", 64, 16, n=2, images=mpii / "images")
    r = cli(
        "evaluate", "unused.pth", "--data", tmp_path / "ann.json", "--images", tmp_path / "none"
    )
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_training_and_evaluation_with_images(mpii, small, tmp_path):
    (tmp_path / "ann.json").write_text((mpii / "annotations.json").read_text())
    common = ["--data", tmp_path / "ann.json", "--images", mpii / "images", "--image-size", "64"]
    r = cli(
        "finetune", small, *common, "--steps", "2", "--batch-size", "2", "-o", tmp_path / "f.pt"
    )
    assert r.exit_code == 0, r.output
    r = cli("evaluate", tmp_path / "f.pt", *common, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rules"] == "mpii"


def test_one_line_of_a_worker_error():
    text = (
        "Caught DataError in DataLoader worker process 1.\nOriginal Traceback (most recent call "
        'last):\n  File "x.py", line 3, in f\n    raise DataError(...)\n'
        "tcompress.errors.DataError: entry 7 (images/a.jpg): truncated\n"
    )
    assert one_line(DataError(text)) == "entry 7 (images/a.jpg): truncated"
    assert one_line(DataError("plain")) == "plain"


def error_line(result) -> str:
    """The one error line of a failed command (progress displays aside); no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in errors if not line.startswith(("Training", "Evaluating"))]
    assert len(errors) == 1 and errors[0].startswith("Error: "), result.output
    return errors[0]


def _bad_set(mpii, tmp_path, entry):
    (tmp_path / "images").symlink_to(mpii / "images")
    entries = json.loads((mpii / "annotations.json").read_text())
    (tmp_path / "annotations.json").write_text(json.dumps([entry(e) for e in entries]))
    return tmp_path


def test_a_corrupt_jpeg_in_a_worker_is_one_line(mpii, small, tmp_path):
    (tmp_path / "corrupt").mkdir()
    for image in (mpii / "images").iterdir():
        (tmp_path / "corrupt" / image.name).write_bytes(image.read_bytes())
    (tmp_path / "corrupt" / "000002.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    args = ["--data", mpii, "--images", tmp_path / "corrupt", "--image-size", "64"]
    for extra in ([], ["--workers", "2"]):
        out = tmp_path / f"bad{len(extra)}.pt"
        r = cli("finetune", small, *args, "--steps", "4", "--batch-size", "2", *extra, "-o", out)
        line = error_line(r)
        assert line.startswith("Error: entry 2") and "000002.jpg" in line, line
        assert not out.exists()


def test_a_missing_field_is_one_line(mpii, small, tmp_path):
    data = _bad_set(mpii, tmp_path, lambda e: {k: v for k, v in e.items() if k != "objpos"})
    r = cli("evaluate", small, "--data", data, "--image-size", "64")
    assert r.exit_code == 2
    assert r.output.strip() == (
        f"Error: {data / 'annotations.json'}: entry 0: field 'objpos' is missing; expected "
        "[x, y] numbers"
    )


def test_a_model_of_other_joints_is_one_line(mpii, tmp_path):
    path = tmp_path / "eight.pth"
    net = StackedHourglass(n_stacks=1, depth=2, block_depth=1, features=16, n_joints=8)
    torch.save(net.state_dict(), path)
    line = error_line(cli("evaluate", path, "--data", mpii, "--image-size", "64"))
    assert "predicts 8 joints" in line and "has 16" in line, line
    out = tmp_path / "ft.pt"
    args = ["--image-size", "64", "--steps", "1", "--batch-size", "2", "-o", out]
    line = error_line(cli("finetune", path, "--data", mpii, *args))
    assert "the model gives 8 heatmaps of 16x16; the data's targets are 16 of 16x16" in line
    assert not out.exists()


def test_head_boxes_are_checked(mpii, tmp_path):
    data = _bad_set(mpii, tmp_path, lambda e: dict(e, headboxes=[[1, 2], [1, 2]]))
    with pytest.raises(DataError, match="field 'headboxes' .* expected a box with two distinct"):
        MPIIDataset(None, data / "annotations.json")
    (tmp_path / "annotations.json").write_text(
        json.dumps([dict(e, headboxes=[1, 2, 3, 4]) for e in json.loads(
            (mpii / "annotations.json").read_text())])
    )  # fmt: skip
    with pytest.raises(DataError, match=r"field 'headboxes' is \[1, 2, 3, 4\]; expected \[\[x1"):
        MPIIDataset(None, data / "annotations.json")


def test_without_head_boxes_the_head_size_is_estimated(mpii, small, tmp_path):
    data = _bad_set(mpii, tmp_path, lambda e: {k: v for k, v in e.items() if k != "headboxes"})
    r = cli("evaluate", small, "--data", data, "--image-size", "64", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["head_sizes"].startswith("estimated from the head joints (2 of 2")
    truth = MPIIDataset(None, data / "annotations.json", "test").truth()
    assert not truth.has_box.any() and np.all(truth.head_sizes > 0)


def test_grey_and_png_images_read(mpii, tmp_path):
    (tmp_path / "images").mkdir()
    entries = json.loads((mpii / "annotations.json").read_text())
    for k, e in enumerate(entries):
        pixels = np.asarray(Image.open(mpii / "images" / e["img_paths"]).convert("L"))
        name = f"{k}.png" if k % 2 else f"{k}.jpeg"
        Image.fromarray(pixels).save(tmp_path / "images" / name)
        e["img_paths"] = name
    (tmp_path / "annotations.json").write_text(json.dumps(entries))
    data = make_dataset(tmp_path, "train", 64, 16)
    assert all(data[i]["image"].shape == (3, 64, 64) for i in range(len(data)))


def test_train_on_an_mpii_folder(mpii, tmp_path):
    out = tmp_path / "hg.pth"
    config = ["--stacks", "1", "--depth", "2", "--block-depth", "1", "--features", "16"]
    r = cli("train", "--data", mpii, *config, "--steps", "2", "--batch-size", "2",
            "--image-size", "64", "-o", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert out.exists()


def test_preds_mat_is_not_overwritten_without_force(mpii, small, tmp_path):
    preds = tmp_path / "preds.mat"
    preds.write_bytes(b"keep me")
    args = ["evaluate", small, "--data", mpii, "--image-size", "64", "--preds-mat", preds]
    assert "exists; pass --force to overwrite it" in error_line(cli(*args))
    assert preds.read_bytes() == b"keep me"
    assert cli(*args, "--force").exit_code == 0
    assert loadmat(preds)["preds"].shape == (2, 16, 2)
    line = error_line(cli("evaluate", small, "--data", "synthetic", "-n", "2", "--image-size",
                          "64", "--preds-mat", tmp_path / "syn.mat"))  # fmt: skip
    assert "writes MPII predictions; data 'synthetic' is not an MPII-style set" in line
    assert not (tmp_path / "syn.mat").exists()


def test_a_mat_file_of_other_people_is_refused(mpii, small, tmp_path):
    truth = MPIIDataset(None, mpii / "annotations.json", "test").truth()
    order = [MAT_JOINT_NAMES[n] for n in MAT_JOINT_NAMES]
    assert tuple(order) == JOINTS
    fields = {
        "pos_gt_src": (truth.joints[::-1] + MPII_ORIGIN).transpose(1, 2, 0),  # people swapped
        "headboxes_src": np.tile([[[0.0]], [[30.0]]], (1, 2, 2)),
        "jnt_missing": (~truth.labelled).T.astype(np.uint8),
    }
    savemat(tmp_path / "gt.mat", fields)
    args = ["evaluate", small, "--data", mpii, "--image-size", "64", "--mpii-mat"]
    line = error_line(cli(*args, tmp_path / "gt.mat"))
    assert "head sizes (median) from the annotations' validation entries" in line
    savemat(tmp_path / "three.mat", {k: np.concatenate([v, v[..., :1]], -1) for k, v in
                                      fields.items()})  # fmt: skip
    line = error_line(cli(*args, tmp_path / "three.mat"))
    assert "holds 3 people; the validation split has 2" in line
    fields["pos_gt_src"] = (truth.joints + MPII_ORIGIN).transpose(1, 2, 0)
    savemat(tmp_path / "good.mat", fields)
    r = cli(*args, tmp_path / "good.mat", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["head_sizes"] == f"head boxes of {tmp_path / 'good.mat'}"
    line = error_line(cli(*args, tmp_path / "good.mat", "--split", "train"))
    assert "holds MPII's validation entries, the test split; got split 'train'" in line
