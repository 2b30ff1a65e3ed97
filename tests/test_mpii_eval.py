"""MPII's own evaluation rules: a hand-made case scored by hand, from JSON head boxes and from a
``detections_our_format.mat``-style file; the way back through the crop; the .mat layouts."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import loadmat, savemat

from tcompress.data import MPIIDataset
from tcompress.data.mpii import MPII_ORIGIN, SourceTruth
from tcompress.data.skeleton import JOINTS
from tcompress.data.transforms import crop_matrix, image_to_heatmap, transform_points
from tcompress.errors import DataError
from tcompress.evaluation.mpii import (
    MAT_JOINT_NAMES,
    official_pckh,
    read_mpii_mat,
    to_source,
    write_preds_mat,
)

# Three people. Head boxes of diagonal 50, 100 and 5 px: head sizes 30, 60 and 3, thresholds
# (0.5 x head size) 15, 30 and 1.5. Offsets are along x, in source pixels.
BOXES = [[[0, 0], [30, 40]], [[0, 0], [60, 80]], [[10, 10], [13, 14]]]
OFFSETS = [
    {0: 14.9, 1: 15.0, 2: 20.0},  # 15.0 is not strictly below 15: a miss
    {0: 29.0, 2: 31.0, 9: 31.0, 5: 29.99},  # joint 5 lies far outside the crop: still scored
    {**{j: 1.0 for j in range(16)}, 12: 2.0, 6: 100.0},
]
UNANNOTATED = {(1, 3)}  # (person, joint)

# By hand: hits / counts per joint.
HITS = [3, 2, 1, 2, 3, 3, 2, 3, 3, 2, 3, 3, 2, 3, 3, 3]
COUNTS = [3, 3, 3, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]
PER_JOINT = [100 * h / c for h, c in zip(HITS, COUNTS)]
# Mean: the 14 joints but pelvis (6) and thorax (7), unweighted: (10 x 100 + 3 x 200/3 +
# 100/3) / 14.
MEAN = (1000 + 200 + 100 / 3) / 14
MEAN_INSTANCES = 100 * 36 / 41  # 41 annotated instances of those joints, 5 misses
GROUPS = {
    "Head": 200 / 3,  # head top alone
    "Shoulder": (200 / 3 + 100) / 2,
    "Elbow": 100.0,
    "Wrist": 100.0,
    "Hip": (100 / 3 + 100) / 2,
    "Knee": (200 / 3 + 100) / 2,
    "Ankle": 100.0,
}


def _joints(person):
    rows = np.stack([100.0 + 10 * np.arange(16), 200.0 + 5 * person + np.zeros(16)], 1)
    if person == 1:
        rows[5] = [5000.0, 4000.0]
    return rows


def _truth_and_preds():
    joints = np.stack([_joints(p) for p in range(3)])
    labelled = np.ones((3, 16), dtype=bool)
    for p, j in UNANNOTATED:
        labelled[p, j] = False
    preds = joints.copy()
    for p, offsets in enumerate(OFFSETS):
        for j, dx in offsets.items():
            preds[p, j, 0] += dx
    return joints, labelled, preds


def _check(result):
    assert result.hits == tuple(HITS) and result.counts == tuple(COUNTS)
    assert result.per_joint == pytest.approx(PER_JOINT)
    assert result.mean == pytest.approx(MEAN)
    assert result.mean_instances == pytest.approx(MEAN_INSTANCES)
    assert result.groups == pytest.approx(GROUPS)
    assert result.headline == "joints"


def _mpii_folder(tmp_path, joints, labelled, with_boxes=True):
    (tmp_path / "images").mkdir()
    entries = []
    for p in range(3):
        Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8)).save(tmp_path / f"images/{p}.png")
        # MPII's files count pixels from 1: the 0-based joints plus MPII_ORIGIN
        rows = [
            [*(xy + MPII_ORIGIN), 1] if labelled[p, j] else [0, 0, 0]
            for j, xy in enumerate(joints[p])
        ]
        entry = {
            "img_paths": f"{p}.png",
            "joint_self": [[float(v) for v in row] for row in rows],
            "objpos": [32.0, 24.0],
            "scale_provided": 0.2,
            "isValidation": 1,
        }
        if with_boxes:
            entry["headboxes"] = BOXES[p]
        entries.append(entry)
    entries.append(dict(entries[0], isValidation=0))  # a training entry, not scored
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(entries))
    return path


def _mat(path, joints, labelled, names=tuple(MAT_JOINT_NAMES)):
    """A detections_our_format.mat-style file, joints stored in the order of ``names``."""
    ours = [MAT_JOINT_NAMES[n] for n in names]
    order = [JOINTS.index(j) for j in ours]
    cells = np.empty((1, 16), dtype=object)
    for k, name in enumerate(names):
        cells[0, k] = np.array([name])
    savemat(
        path,
        {
            "pos_gt_src": (joints[:, order] + MPII_ORIGIN).transpose(1, 2, 0),
            "headboxes_src": np.array(BOXES, dtype=np.float64).transpose(1, 2, 0),
            "jnt_missing": (~labelled[:, order]).T.astype(np.uint8),
            "dataset_joints": cells,
        },
    )


def test_hand_made_case_from_json_head_boxes(tmp_path):
    joints, labelled, preds = _truth_and_preds()
    data = MPIIDataset(None, _mpii_folder(tmp_path, joints, labelled), "test", 64, 16)
    truth = data.truth()
    assert truth.has_box.all() and truth.head_sizes == pytest.approx([30, 60, 3])
    _check(official_pckh(preds, truth))


@pytest.mark.parametrize("names", [tuple(MAT_JOINT_NAMES), tuple(reversed(MAT_JOINT_NAMES))])
def test_hand_made_case_from_a_mat_file(tmp_path, names):
    joints, labelled, preds = _truth_and_preds()
    _mat(tmp_path / "gt.mat", joints, labelled, names)
    truth = read_mpii_mat(tmp_path / "gt.mat")
    assert np.array_equal(truth.labelled, labelled)
    assert np.allclose(truth.joints, joints)
    _check(official_pckh(preds, truth))


def test_strict_threshold_differs_from_inclusive():
    truth = SourceTruth(np.zeros((1, 16, 2)), np.ones((1, 16), bool), np.array([2.0]), np.ones(1))
    preds = np.zeros((1, 16, 2))
    preds[0, :, 0] = 1.0  # exactly 0.5 x head size away: a miss under MPII's rule
    assert official_pckh(preds, truth).mean == 0.0
    preds[0, :, 0] = 0.999
    assert official_pckh(preds, truth).mean == 100.0


def test_predictions_of_the_wrong_shape_are_refused():
    truth = SourceTruth(np.zeros((2, 16, 2)), np.ones((2, 16), bool), np.ones(2), np.ones(2))
    with pytest.raises(
        DataError, match=r"predictions of shape \(3, 16, 2\); expected \(2, 16, 2\)"
    ):
        official_pckh(np.zeros((3, 16, 2)), truth)


def test_to_source_inverts_the_crop():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 500, (4, 16, 2))
    matrices = [
        crop_matrix((250.0 + 10 * k, 240.0), 300.0 + 20 * k, 256, rotation=10.0 * k, flip=k % 2)
        for k in range(4)
    ]
    heat = np.stack(
        [image_to_heatmap(transform_points(m, p), 256, 64) for m, p in zip(matrices, points)]
    )
    back = to_source(torch.from_numpy(heat), torch.from_numpy(np.stack(matrices)), 256, 64)
    assert np.abs(back.numpy() - points).max() < 1e-9


def test_preds_mat_round_trip(tmp_path):
    preds = np.random.default_rng(1).uniform(0, 900, (5, 16, 2))
    write_preds_mat(tmp_path / "preds.mat", preds)  # 0-based here, from 1 in the file
    assert np.array_equal(loadmat(tmp_path / "preds.mat")["preds"], preds + MPII_ORIGIN)
    assert [p.name for p in tmp_path.iterdir()] == ["preds.mat"]  # no temporary file left
    with pytest.raises(DataError, match=r"preds of shape \(5, 15, 2\); expected \(N, 16, 2\)"):
        write_preds_mat(tmp_path / "bad.mat", preds[:, :15])
    assert not (tmp_path / "bad.mat").exists()


def test_mat_file_errors(tmp_path):
    with pytest.raises(DataError, match="MPII ground-truth file .*nope.mat does not exist"):
        read_mpii_mat(tmp_path / "nope.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DataError, match="cannot read .*junk.mat as a MATLAB .mat file"):
        read_mpii_mat(tmp_path / "junk.mat")
    savemat(tmp_path / "few.mat", {"pos_gt_src": np.zeros((16, 2, 3))})
    with pytest.raises(DataError, match=r"has no field\(s\) \['headboxes_src', 'jnt_missing'\]"):
        read_mpii_mat(tmp_path / "few.mat")
    savemat(
        tmp_path / "shapes.mat",
        {
            "pos_gt_src": np.zeros((16, 2, 3)),
            "headboxes_src": np.zeros((2, 2, 4)),
            "jnt_missing": np.zeros((16, 3)),
        },
    )
    with pytest.raises(DataError, match=r"headboxes_src \(2, 2, 4\).*expected \(16, 2, N\)"):
        read_mpii_mat(tmp_path / "shapes.mat")
    joints, labelled, _ = _truth_and_preds()
    _mat(tmp_path / "names.mat", joints, labelled)
    fields = loadmat(tmp_path / "names.mat")
    fields["dataset_joints"][0, 3] = np.array(["knee"])
    savemat(tmp_path / "names.mat", {k: v for k, v in fields.items() if not k.startswith("__")})
    with pytest.raises(DataError, match="dataset_joints .*'knee'.*expected the 16 MPII names"):
        read_mpii_mat(tmp_path / "names.mat")
