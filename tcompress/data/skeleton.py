"""The MPII joint set: 16 joints, left/right flip pairs, kinematic tree and head-size conventions.

Joint coordinates are ``(x, y)`` with ``x`` to the right and ``y`` down, in pixels whose centres sit
at integer coordinates. "Right" and "left" are the person's own sides.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "FLIP_PAIRS",
    "FLIP_PERMUTATION",
    "HEAD_BOX_PER_SEGMENT",
    "JOINTS",
    "LIMBS",
    "N_JOINTS",
    "PARENTS",
    "PCKH_HEAD_FACTOR",
    "head_size",
    "head_size_from_box",
]

#: Joint names in MPII order.
JOINTS = (
    "r_ankle",
    "r_knee",
    "r_hip",
    "l_hip",
    "l_knee",
    "l_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "r_wrist",
    "r_elbow",
    "r_shoulder",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
)
N_JOINTS = len(JOINTS)
R_ANKLE, R_KNEE, R_HIP, L_HIP, L_KNEE, L_ANKLE, PELVIS, THORAX, UPPER_NECK, HEAD_TOP = range(10)
R_WRIST, R_ELBOW, R_SHOULDER, L_SHOULDER, L_ELBOW, L_WRIST = range(10, 16)

#: (right, left) pairs exchanged by a horizontal flip.
FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))

#: ``FLIP_PERMUTATION[j]`` is the joint that ``j`` becomes after a horizontal flip.
FLIP_PERMUTATION = tuple(
    next((b if j == a else a for a, b in FLIP_PAIRS if j in (a, b)), j) for j in range(N_JOINTS)
)

#: Parent of each joint in the kinematic tree rooted at the pelvis (-1 for the root).
PARENTS = (1, 2, 6, 6, 3, 4, -1, 6, 7, 8, 11, 12, 7, 7, 13, 14)

#: (parent, child) bones of the tree, root outwards.
LIMBS = tuple((PARENTS[j], j) for j in (2, 1, 0, 3, 4, 5, 7, 8, 9, 12, 11, 10, 13, 14, 15))

#: PCKh threshold unit: MPII's head size is this factor times the head-box diagonal.
PCKH_HEAD_FACTOR = 0.6

#: Head-box diagonal per upper_neck-head_top distance, for data without head boxes. The head box is
#: taken as a square whose side is the neck-top segment, so its diagonal is sqrt(2) ~ 1.41 times the
#: segment (MPII head boxes are typically 1.4-1.5 times it).
HEAD_BOX_PER_SEGMENT = math.sqrt(2.0)


def head_size_from_box(box: np.ndarray) -> np.ndarray:
    """MPII head size: ``PCKH_HEAD_FACTOR`` times the head-box diagonal.

    Parameters
    ----------
    box : ndarray
        Head boxes ``(x1, y1, x2, y2)``.

    Returns
    -------
    ndarray
        Head sizes, in the units of ``box``.

    Shapes
    ------
    box : (..., 4)
    return : (...)
    """
    box = np.asarray(box, dtype=np.float64)
    return PCKH_HEAD_FACTOR * np.hypot(box[..., 2] - box[..., 0], box[..., 3] - box[..., 1])


def head_size(joints: np.ndarray) -> np.ndarray:
    """Head size from the head joints, for data without head boxes (synthetic, JSON annotations).

    ``PCKH_HEAD_FACTOR * HEAD_BOX_PER_SEGMENT * |upper_neck - head_top|`` (about 0.85 times the
    segment), so that it plays the role of MPII's ``0.6 x head-box diagonal``.

    Parameters
    ----------
    joints : ndarray
        Joint coordinates in MPII order.

    Returns
    -------
    ndarray
        Head sizes, in the units of ``joints``.

    Shapes
    ------
    joints : (..., 16, 2)
    return : (...)
    """
    joints = np.asarray(joints, dtype=np.float64)
    segment = joints[..., UPPER_NECK, :] - joints[..., HEAD_TOP, :]
    return PCKH_HEAD_FACTOR * HEAD_BOX_PER_SEGMENT * np.hypot(segment[..., 0], segment[..., 1])
