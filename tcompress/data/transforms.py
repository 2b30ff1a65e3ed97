"""Shared geometry and photometry: per-sample generators, crops, warps, flips and normalisation.

Coordinates follow the pixel-centre convention: pixel (row i, column j) has its centre at
``(x, y) = (j, i)`` and covers ``[j - 0.5, j + 0.5]``, in images and heatmaps alike. A crop matrix
maps source coordinates to output coordinates; ``warp`` resamples an image with it, so pixels and
joints transformed by the same matrix stay aligned.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from tcompress.data.skeleton import FLIP_PERMUTATION

__all__ = [
    "MEAN",
    "STD",
    "color_jitter",
    "crop_matrix",
    "denormalize",
    "flip_heatmaps",
    "flip_joints",
    "heatmap_to_image",
    "image_to_heatmap",
    "normalize",
    "sample_rng",
    "transform_points",
    "warp",
]

#: Per-channel RGB mean and standard deviation of images in [0, 1] (the usual ImageNet values).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def sample_rng(*keys: object) -> np.random.Generator:
    """A generator determined by ``keys`` only (seed, split, index, epoch...), not by call order.

    The keys' ``repr`` is hashed with BLAKE2b, so distinct keys give independent streams. Pass
    plain ``int`` and ``str`` keys: ``np.int64(3)`` and ``3`` have different ``repr``.
    """
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _per_channel(values: tuple[float, ...], like: np.ndarray | torch.Tensor):
    column = np.asarray(values, np.float32).reshape(3, 1, 1)
    return torch.from_numpy(column).to(like) if isinstance(like, torch.Tensor) else column


def normalize(image: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``(image - MEAN) / STD`` per channel, for arrays or tensors of shape (..., 3, H, W)."""
    return (image - _per_channel(MEAN, image)) / _per_channel(STD, image)


def denormalize(image: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Inverse of :func:`normalize`, back to [0, 1] (not clipped)."""
    return image * _per_channel(STD, image) + _per_channel(MEAN, image)


def crop_matrix(
    center: tuple[float, float],
    side: float,
    out_size: int,
    rotation: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """Matrix taking source coordinates to those of a square crop resized to ``out_size``.

    Parameters
    ----------
    center : (float, float)
        Crop centre ``(x, y)`` in source pixels.
    side : float
        Side of the square crop in source pixels; it fills the ``out_size`` output exactly.
    out_size : int
        Output side in pixels.
    rotation : float
        Degrees; the content turns counter-clockwise on screen by this angle.
    flip : bool
        Mirror the output left-right (after the rotation).

    Returns
    -------
    ndarray
        Homogeneous float64 matrix ``M`` with ``[x', y', 1] = M [x, y, 1]``.

    Shapes
    ------
    return : (3, 3)
    """
    scale = out_size / side
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    half = out_size / 2 - 0.5
    m = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]) * [[scale], [scale], [1.0]]
    m[:2, 2] = half - m[:2, :2] @ np.asarray(center, dtype=np.float64)
    if flip:
        m = np.array([[-1.0, 0.0, out_size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    return m


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a homogeneous matrix to points. Shapes: matrix (3, 3), points (..., 2) -> (..., 2)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def image_to_heatmap(points: np.ndarray, image_size: int, heatmap_size: int) -> np.ndarray:
    """Image pixel coordinates -> heatmap pixel coordinates (pixel-centre convention).

    ``x_h = (x + 0.5) * heatmap_size / image_size - 0.5``. Shapes: (..., 2) -> (..., 2).
    """
    return (np.asarray(points, dtype=np.float64) + 0.5) * (heatmap_size / image_size) - 0.5


def heatmap_to_image(points: np.ndarray, image_size: int, heatmap_size: int) -> np.ndarray:
    """Inverse of :func:`image_to_heatmap`. Shapes: (..., 2) -> (..., 2)."""
    return (np.asarray(points, dtype=np.float64) + 0.5) * (image_size / heatmap_size) - 0.5


def warp(image: torch.Tensor, matrix: np.ndarray, out_size: int) -> torch.Tensor:
    """Resample ``image`` through ``matrix`` (source -> output) into a square output.

    Bilinear, zeros outside the source (normalise first so that they mean "average colour").
    Shrinking by 2x or more first averages k x k blocks, to avoid aliasing.

    Shapes
    ------
    image : (C, H, W)
    matrix : (3, 3)
    return : (C, out_size, out_size)
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    k = int(1.0 / math.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    if k >= 2 and min(image.shape[-2:]) >= 2 * k:
        image = F.avg_pool2d(image[None], k)[0]
        # A pooled pixel x' covers source pixels k x' .. k x' + k - 1: centre k x' + (k - 1) / 2.
        matrix = matrix @ np.array([[k, 0, (k - 1) / 2], [0, k, (k - 1) / 2], [0, 0, 1.0]])
    height, width = image.shape[-2:]

    def to_unit(w: float, h: float) -> np.ndarray:  # pixel coordinates -> grid_sample's [-1, 1]
        return np.array([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1.0]])

    theta = (
        to_unit(width, height) @ np.linalg.inv(matrix) @ np.linalg.inv(to_unit(out_size, out_size))
    )
    theta = torch.as_tensor(theta[:2], dtype=image.dtype)[None]
    grid = F.affine_grid(theta, [1, image.shape[0], out_size, out_size], align_corners=False)
    return F.grid_sample(image[None], grid, mode="bilinear", align_corners=False)[0]


def flip_joints(
    joints: np.ndarray, visible: np.ndarray, width: float
) -> tuple[np.ndarray, np.ndarray]:
    """Joints of the left-right mirrored image: ``x -> width - 1 - x``, left and right swapped.

    Shapes
    ------
    joints : (..., 16, 2)
    visible : (..., 16)
    return : ((..., 16, 2), (..., 16))
    """
    joints = np.array(joints, dtype=np.float64)
    joints[..., 0] = width - 1 - joints[..., 0]
    perm = list(FLIP_PERMUTATION)
    return joints[..., perm, :], np.asarray(visible)[..., perm]


def flip_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """Heatmaps of the mirrored image (test-time flipping). Shapes: (..., 16, h, w) -> same."""
    return heatmaps.flip(-1)[..., list(FLIP_PERMUTATION), :, :]


def color_jitter(
    image: np.ndarray | torch.Tensor, rng: np.random.Generator, strength: float = 0.2
) -> np.ndarray | torch.Tensor:
    """Random per-channel gain, brightness and contrast, clipped to [0, 1].

    Gains in ``1 +- strength``, brightness shift ``+- strength / 2``, contrast ``1 +- strength``.

    Shapes
    ------
    image : (3, H, W) in [0, 1], array or Tensor
    return : (3, H, W), same type
    """
    gain = tuple(rng.uniform(1 - strength, 1 + strength, 3))
    shift = float(rng.uniform(-strength / 2, strength / 2))
    contrast = float(rng.uniform(1 - strength, 1 + strength))
    image = image * _per_channel(gain, image) + shift
    mean = float(image.mean())
    return ((image - mean) * contrast + mean).clip(0.0, 1.0)
