"""MPII-style single-person pose data from the widely used JSON annotation list.

Each entry is a dict with ``img_paths`` (relative to the image root), ``joint_self`` (16 rows of
``[x, y, visible]`` in MPII joint order), ``objpos`` (``[x, y]`` person centre),
``scale_provided`` (person height / 200 px) and ``isValidation`` (0 or 1). Coordinates are used as
given, in the pixel-centre convention of :mod:`tcompress.data.transforms`.

A joint counts as labelled when both coordinates are positive (the format writes missing joints as
zeros or negatives), whatever its visibility flag: MPII's PCKh scores occluded labelled joints
too, so they keep their heatmaps unless ``drop_occluded=True``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tcompress.data.images import read_image
from tcompress.data.skeleton import (
    FLIP_PERMUTATION,
    HEAD_BOX_PER_SEGMENT,
    N_JOINTS,
    PCKH_HEAD_FACTOR,
    head_size,
)
from tcompress.data.targets import gaussian_heatmaps
from tcompress.data.transforms import (
    color_jitter,
    crop_matrix,
    image_to_heatmap,
    normalize,
    sample_rng,
    transform_points,
    warp,
)
from tcompress.errors import DataError

__all__ = ["CROP_MARGIN", "HEAD_SEGMENT_PER_SCALE", "MPIIDataset", "Person", "load_annotations"]

#: Crop side = 200 px x ``scale_provided`` x ``CROP_MARGIN``.
CROP_MARGIN = 1.25
#: upper_neck-head_top distance per unit of ``scale_provided`` (person height / 200 px), used only
#: when a head joint is unlabelled: the head is taken as 1/8 of the height, 25 px per unit.
HEAD_SEGMENT_PER_SCALE = 200 / 8


@dataclass(frozen=True)
class Person:
    """One validated annotation entry; ``entry`` is its position in the JSON list."""

    entry: int
    image: str
    joints: np.ndarray  # (16, 2)
    flags: np.ndarray  # (16,) the file's visibility flags
    center: tuple[float, float]
    scale: float
    validation: bool


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse(entry: int, item: object, where: str) -> Person:
    def bad(field: str, expected: str) -> DataError:
        text = repr(item[field]) if field in item else ""
        got = f"is {text if len(text) <= 60 else text[:57] + '...'}" if text else "is missing"
        return DataError(f"{where}: entry {entry}: field {field!r} {got}; expected {expected}")

    if not isinstance(item, dict):
        raise DataError(f"{where}: entry {entry} is a {type(item).__name__}; expected a dict")
    path = item.get("img_paths")
    if not isinstance(path, str) or not path:
        raise bad("img_paths", "an image path relative to the root")
    rows = item.get("joint_self")
    if not (
        isinstance(rows, list)
        and len(rows) == N_JOINTS
        and all(isinstance(r, list) and len(r) == 3 and all(map(_number, r)) for r in rows)
    ):
        raise bad("joint_self", f"{N_JOINTS} rows of [x, y, visible] numbers")
    center = item.get("objpos")
    if not (isinstance(center, list) and len(center) == 2 and all(map(_number, center))):
        raise bad("objpos", "[x, y] numbers")
    scale = item.get("scale_provided")
    if not (_number(scale) and scale > 0):
        raise bad("scale_provided", "a positive number")
    validation = item.get("isValidation")
    if validation not in (0, 1):  # also admits true/false and 0.0/1.0
        raise bad("isValidation", "0 or 1")
    table = np.asarray(rows, dtype=np.float64)
    return Person(
        entry, path, table[:, :2], table[:, 2], (center[0], center[1]), scale, bool(validation)
    )


def load_annotations(path: str | os.PathLike) -> list[Person]:
    """Read and validate an MPII-style JSON annotation list; errors name the entry and field."""
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except FileNotFoundError:
        raise DataError(f"annotation file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise DataError(f"annotation file {path} is not valid JSON: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read annotation file {path}: {e}") from None
    if not isinstance(items, list):
        raise DataError(f"annotation file {path} holds a {type(items).__name__}; expected a list")
    return [_parse(i, item, str(path)) for i, item in enumerate(items)]


class MPIIDataset(Dataset):
    """MPII-style crops around one person, with heatmap targets.

    The crop is a square of side ``200 * scale_provided * CROP_MARGIN`` source pixels centred on
    ``objpos``, resized to ``image_size``. Training augmentation (``augment``): rotation uniform in
    +-30 degrees, scale uniform in 0.75-1.25, horizontal flip with left/right swap (p = 0.5) and
    colour jitter, drawn from a generator keyed by (seed, split, entry, epoch).

    Parameters
    ----------
    root : path-like
        Folder the ``img_paths`` are relative to.
    annotations_json : path-like
        The JSON annotation list.
    split : {"train", "val"}
        Entries with ``isValidation`` 0 or 1.
    image_size, heatmap_size : int
        Sides of the square input image and of the target heatmaps.
    augment : bool, optional
        Apply the training augmentation; default True for "train", False for "val".
    seed : int
        Augmentation seed.
    sigma : float, optional
        Heatmap Gaussian std in heatmap pixels (:func:`~tcompress.data.targets.default_sigma`).
    drop_occluded : bool
        Treat joints whose visibility flag is 0 as invisible.

    Shapes
    ------
    image : (3, image_size, image_size) float32, normalised with ``MEAN`` / ``STD``
    heatmaps : (16, heatmap_size, heatmap_size) float32
    joints : (16, 2) float32, (x, y) in heatmap pixels
    visible : (16,) float32, 1 when labelled and inside the crop
    head_size : () float32, heatmap pixels (:func:`~tcompress.data.skeleton.head_size`); when
        upper_neck or head_top is unlabelled, estimated from the person scale
        (``HEAD_SEGMENT_PER_SCALE``)
    index : int
    """

    def __init__(
        self,
        root: str | os.PathLike,
        annotations_json: str | os.PathLike,
        split: str = "train",
        image_size: int = 256,
        heatmap_size: int = 64,
        augment: bool | None = None,
        seed: int = 0,
        sigma: float | None = None,
        drop_occluded: bool = False,
    ) -> None:
        if not Path(root).is_dir():
            raise DataError(f"MPII image root {root} is not a directory")
        if split not in ("train", "val"):
            raise DataError(f"split {split!r} is not one of ('train', 'val')")
        for name, value in (("image_size", image_size), ("heatmap_size", heatmap_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise DataError(f"seed must be an integer, got {seed!r}")
        people = load_annotations(annotations_json)
        self.people = [p for p in people if p.validation == (split == "val")]
        self.root, self.split, self.seed = Path(root), split, int(seed)
        self.image_size, self.heatmap_size, self.sigma = image_size, heatmap_size, sigma
        self.augment = split == "train" if augment is None else bool(augment)
        self.drop_occluded, self.epoch = bool(drop_occluded), 0

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh augmentations for this epoch (epoch 0 is the default)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.people)

    def _read(self, person: Person) -> torch.Tensor:
        path = self.root / person.image
        if not path.is_file():
            raise DataError(f"entry {person.entry}: image file {path} does not exist")
        try:
            return read_image(path)
        except DataError as e:
            raise DataError(f"entry {person.entry}: {e}") from None

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.people):
            raise IndexError(f"index {index} out of range for {len(self.people)} people")
        person = self.people[index]
        image = self._read(person)
        side = 200.0 * person.scale * CROP_MARGIN
        rotation, flip = 0.0, False
        if self.augment:
            rng = sample_rng("mpii", self.seed, self.split, person.entry, self.epoch)
            side *= rng.uniform(0.75, 1.25)
            rotation, flip = rng.uniform(-30.0, 30.0), bool(rng.random() < 0.5)
            image = color_jitter(image, rng)
        matrix = crop_matrix(person.center, side, self.image_size, rotation, flip)
        image = warp(normalize(image), matrix, self.image_size)

        labelled = (person.joints > 0).all(1)
        if self.drop_occluded:
            labelled &= person.flags > 0
        joints = image_to_heatmap(
            transform_points(matrix, person.joints), self.image_size, self.heatmap_size
        )
        if flip:  # positions are mirrored by the matrix; the names swap sides
            joints, labelled = joints[list(FLIP_PERMUTATION)], labelled[list(FLIP_PERMUTATION)]
        inside = ((joints > -0.5) & (joints < self.heatmap_size - 0.5)).all(1)
        visible = (labelled & inside).astype(np.float32)
        if labelled[8] and labelled[9]:
            head = float(head_size(joints))
        else:  # a neck-top segment estimated from the person's height, 200 px x scale
            segment = HEAD_SEGMENT_PER_SCALE * person.scale * self.heatmap_size / side
            head = PCKH_HEAD_FACTOR * HEAD_BOX_PER_SEGMENT * segment
        return {
            "image": image,
            "heatmaps": gaussian_heatmaps(joints, visible, self.heatmap_size, self.sigma),
            "joints": torch.as_tensor(joints, dtype=torch.float32),
            "visible": torch.from_numpy(visible),
            "head_size": torch.tensor(head, dtype=torch.float32),
            "index": int(index),
        }
