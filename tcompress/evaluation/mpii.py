"""MPII's own single-person evaluation, as its MATLAB script and bearpaw/pytorch-pose's
``evaluation/eval_PCKh.py`` compute it.

The rules, all of them different from the crop-space PCKh used while training:

- predictions and ground truth are compared in **source-image pixels**;
- the head size is ``0.6 x`` the diagonal of the annotated **head box**;
- a joint is correct when its distance is **strictly below** ``0.5 x`` the head size;
- **every annotated joint** is scored, also those the crop cut off;
- per joint, then the groups Head (``head_top`` alone), Shoulder, Elbow, Wrist, Hip, Knee and
  Ankle (mean of left and right), and **Mean**, the unweighted mean of the 14 per-joint
  accuracies without pelvis and thorax. The mean over joint instances (each joint weighted by
  how often it is annotated, as some later code bases report it) comes beside it.

bearpaw's evaluation reads the ground truth of the 2,958-person validation split from
``detections_our_format.mat``: ``pos_gt_src`` (16, 2, N) joints, ``headboxes_src`` (2, 2, N)
head-box corners, ``jnt_missing`` (16, N), ``dataset_joints`` (1, 16) names; and predictions from a
``preds.mat`` whose ``preds`` is (N, 16, 2). :func:`read_mpii_mat` and :func:`write_preds_mat` read
and write those layouts; their coordinates count pixels from 1, as MPII's annotations do
(:data:`~tcompress.data.mpii.MPII_ORIGIN`), and are 0-based in tcompress.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from tcompress.data.mpii import MPII_ORIGIN, SourceTruth
from tcompress.data.skeleton import JOINTS, N_JOINTS, PCKH_HEAD_FACTOR
from tcompress.data.transforms import heatmap_to_image
from tcompress.errors import DataError
from tcompress.evaluation.pck import MPII_GROUPS, PCKAccumulator, PCKResult

__all__ = [
    "MAT_JOINT_NAMES",
    "OFFICIAL_GROUPS",
    "official_pckh",
    "read_mpii_mat",
    "to_source",
    "write_preds_mat",
]

#: The summary groups of MPII's evaluation: Head is the head top alone.
OFFICIAL_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Head", ("head_top",)),
    *MPII_GROUPS[1:],
)

#: ``dataset_joints`` names of the ``.mat`` files -> tcompress's joint names.
MAT_JOINT_NAMES = {
    "rank": "r_ankle",
    "rkne": "r_knee",
    "rhip": "r_hip",
    "lhip": "l_hip",
    "lkne": "l_knee",
    "lank": "l_ankle",
    "pelv": "pelvis",
    "thor": "thorax",
    "neck": "upper_neck",
    "head": "head_top",
    "rwri": "r_wrist",
    "relb": "r_elbow",
    "rsho": "r_shoulder",
    "lsho": "l_shoulder",
    "lelb": "l_elbow",
    "lwri": "l_wrist",
}


def official_pckh(
    pred: np.ndarray | torch.Tensor,
    truth: SourceTruth,
    threshold: float = 0.5,
) -> PCKResult:
    """PCKh by MPII's rules (see the module docstring).

    ``mean`` is the official Mean (unweighted over the 14 joints); ``mean_instances`` weights
    each joint by its count.

    Parameters
    ----------
    pred
        Predicted ``(x, y)`` in source-image pixels; non-finite predictions count as misses.
    truth
        Ground truth of the same people, in the same order.
    threshold
        Fraction of the head size (0.5 for PCKh@0.5).

    Shapes
    ------
    pred : (N, 16, 2)
    """
    pred = torch.as_tensor(np.asarray(pred, dtype=np.float64))
    n = len(truth.joints)
    if pred.shape != (n, N_JOINTS, 2):
        raise DataError(
            f"predictions of shape {tuple(pred.shape)}; expected ({n}, {N_JOINTS}, 2), one row "
            "per person of the ground truth"
        )
    acc = PCKAccumulator(
        threshold, N_JOINTS, strict=True, groups=OFFICIAL_GROUPS, headline="joints"
    )
    acc.update(
        pred,
        torch.as_tensor(np.where(truth.labelled[..., None], truth.joints, 0.0)),
        torch.as_tensor(truth.labelled),
        torch.as_tensor(np.where(truth.labelled.any(1), truth.head_sizes, 1.0)),
    )
    return acc.result()


def to_source(
    coords: torch.Tensor, matrix: torch.Tensor, image_size: int, heatmap_size: int
) -> torch.Tensor:
    """Heatmap-pixel predictions back to source-image pixels through each sample's crop matrix
    (source -> input image, :func:`~tcompress.data.transforms.crop_matrix`).

    Shapes
    ------
    coords : (N, J, 2)
    matrix : (N, 3, 3)
    return : (N, J, 2) float64
    """
    image = heatmap_to_image(coords.double().cpu().numpy(), image_size, heatmap_size)
    inverse = np.linalg.inv(matrix.double().cpu().numpy())  # (N, 3, 3)
    source = np.einsum("nij,nkj->nki", inverse[:, :2, :2], image) + inverse[:, None, :2, 2]
    return torch.from_numpy(source)


def read_mpii_mat(path: str | os.PathLike) -> SourceTruth:
    """The ground truth of a ``detections_our_format.mat``-style file (see the module docstring),
    joints reordered to tcompress's order by their ``dataset_joints`` names.

    Raises
    ------
    DataError
        A missing or unreadable file, a missing field, or fields whose shapes disagree.
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise DataError(f"MPII ground-truth file {path} does not exist")
    try:
        fields = loadmat(path)
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... on bad files
        raise DataError(f"cannot read {path} as a MATLAB .mat file: {e}") from None
    missing = [k for k in ("pos_gt_src", "headboxes_src", "jnt_missing") if k not in fields]
    if missing:
        raise DataError(
            f"{path} has no field(s) {missing}; expected pos_gt_src (16, 2, N), headboxes_src "
            "(2, 2, N) and jnt_missing (16, N), as in detections_our_format.mat"
        )
    joints = np.asarray(fields["pos_gt_src"], dtype=np.float64)
    boxes = np.asarray(fields["headboxes_src"], dtype=np.float64)
    jnt_missing = np.asarray(fields["jnt_missing"])
    n = joints.shape[-1] if joints.ndim == 3 else -1
    if (
        joints.shape != (N_JOINTS, 2, n)
        or boxes.shape != (2, 2, n)
        or jnt_missing.shape != (N_JOINTS, n)
    ):
        raise DataError(
            f"{path}: pos_gt_src {joints.shape}, headboxes_src {boxes.shape}, jnt_missing "
            f"{jnt_missing.shape}; expected (16, 2, N), (2, 2, N) and (16, N)"
        )
    order = _joint_order(fields.get("dataset_joints"), path)
    joints = joints.transpose(2, 0, 1)[:, order] - MPII_ORIGIN
    labelled = (jnt_missing == 0).T[:, order]
    boxes = boxes.transpose(2, 0, 1)  # (N, corner, xy)
    sizes = PCKH_HEAD_FACTOR * np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=1)
    return SourceTruth(joints, labelled, sizes, np.ones(n, dtype=bool))


def _joint_order(names: object, path: Path) -> list[int]:
    """Positions in the file of tcompress's joints (identity when the file names none)."""
    if names is None:
        return list(range(N_JOINTS))
    flat = [str(np.asarray(v).reshape(-1)[0]) if np.size(v) else "" for v in np.ravel(names)]
    ours = [MAT_JOINT_NAMES.get(s, s) for s in flat]
    if sorted(ours) != sorted(JOINTS):
        raise DataError(
            f"{path}: dataset_joints {flat}; expected the 16 MPII names "
            f"({', '.join(MAT_JOINT_NAMES)})"
        )
    return [ours.index(j) for j in JOINTS]


def write_preds_mat(
    path: str | os.PathLike, preds: np.ndarray | torch.Tensor, *, force: bool = True
) -> None:
    """Write ``preds`` (N, 16, 2), 0-based source-image pixels in tcompress's joint order (MPII's),
    as a ``.mat`` file the public evaluation scripts read (counting pixels from 1); atomically
    (``force=False``: an existing file is refused, even one created while this one is written)."""
    from scipy.io import savemat

    from tcompress.checkpoint import atomic_write

    preds = np.asarray(preds, dtype=np.float64)
    if preds.ndim != 3 or preds.shape[1:] != (N_JOINTS, 2):
        raise DataError(f"preds of shape {preds.shape}; expected (N, {N_JOINTS}, 2)")
    preds = preds + MPII_ORIGIN
    atomic_write(path, lambda tmp: savemat(tmp, {"preds": preds}, appendmat=False), force=force)
