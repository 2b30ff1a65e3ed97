"""MPII-style single-person pose data from the widely used JSON annotation list.

Each entry is a dict with ``img_paths`` (relative to the image root), ``joint_self`` (16 rows of
``[x, y, visible]`` in MPII joint order), ``objpos`` (``[x, y]`` person centre),
``scale_provided`` (person height / 200 px) and ``isValidation`` (0 or 1), and optionally
``headboxes`` (``[[x1, y1], [x2, y2]]``, the head box MPII's PCKh is measured against).
MPII's coordinates count pixels from 1 (its MATLAB tools; ``MPII_ORIGIN``): on reading they are
moved to the 0-based pixel-centre convention of :mod:`tcompress.data.transforms`, and predictions
written for MPII's scripts are moved back (:func:`~tcompress.evaluation.mpii.write_preds_mat`).

The image root is usually a folder of its own (pytorch-pose's ``data/mpii/mpii_annotations.json``
beside ``data/mpii/images/``): :func:`find_image_root` picks it. An ``img_paths`` that is absolute
or climbs out of the root with ``..`` is refused.

A joint counts as labelled when both coordinates in the file are positive (the format writes
missing joints as zeros or negatives), whatever its visibility flag: MPII's PCKh scores occluded
labelled joints too, so they keep their heatmaps unless ``drop_occluded=True``.

Splits: ``test`` is the entries marked ``isValidation`` (the official validation set, which the
published PCKh figures use: MPII's own test labels are not public); ``val``, for every choice made
before reporting, is one training image in :data:`HELD_OUT`, picked by a hash of its path so that
all people of an image fall on the same side; ``train`` is the remaining training entries.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tcompress.data.images import read_crop
from tcompress.data.skeleton import (
    FLIP_PERMUTATION,
    HEAD_BOX_PER_SEGMENT,
    HEAD_TOP,
    N_JOINTS,
    PCKH_HEAD_FACTOR,
    UPPER_NECK,
    head_size,
    head_size_from_box,
)
from tcompress.data.targets import gaussian_heatmaps
from tcompress.data.transforms import (
    color_jitter,
    crop_matrix,
    image_to_heatmap,
    normalize,
    sample_rng,
    transform_points,
)
from tcompress.errors import DataError
from tcompress.vocabulary import SPLITS

__all__ = [
    "ANNOTATION_NAMES",
    "CENTER_SHIFT",
    "CROP_MARGIN",
    "MPII_ORIGIN",
    "HEAD_SEGMENT_PER_SCALE",
    "HELD_OUT",
    "MPIIDataset",
    "Person",
    "SourceTruth",
    "find_image_root",
    "held_out",
    "load_annotations",
    "split_of",
]

#: Crop side = 200 px x ``scale_provided`` x ``CROP_MARGIN``.
CROP_MARGIN = 1.25
#: upper_neck-head_top distance per unit of ``scale_provided`` (person height / 200 px), used only
#: when a head joint is unlabelled: the head is taken as 1/8 of the height, 25 px per unit.
HEAD_SEGMENT_PER_SCALE = 200 / 8
#: The crop centre sits this many source pixels per unit of ``scale_provided`` below ``objpos``
#: (about 7% of the person's height), as in the public MPII codes (pytorch-pose, HRNet, mmpose),
#: so that crops match the ones their checkpoints were trained on.
CENTER_SHIFT = 15.0
#: Where MPII's pixel coordinates start: the centre of the first pixel is 1 in its files, 0 here.
MPII_ORIGIN = 1.0
#: Annotation file names looked for in a data folder, in this order.
ANNOTATION_NAMES = ("annotations.json", "mpii_annotations.json")


@dataclass(frozen=True)
class Person:
    """One validated annotation entry; ``entry`` is its position in the JSON list. Coordinates are
    0-based (the file's less ``MPII_ORIGIN``)."""

    entry: int
    image: str
    joints: np.ndarray  # (16, 2)
    flags: np.ndarray  # (16,) the file's visibility flags
    center: tuple[float, float]
    scale: float
    validation: bool
    head_box: np.ndarray | None = None  # (2, 2): [[x1, y1], [x2, y2]]
    labelled: np.ndarray | None = None  # (16,) bool; None: every joint with positive coordinates

    @property
    def crop_center(self) -> tuple[float, float]:
        """Centre of the person's crop: ``objpos`` moved down by ``CENTER_SHIFT x scale``."""
        return (self.center[0], self.center[1] + CENTER_SHIFT * self.scale)

    def __post_init__(self) -> None:
        if self.labelled is None:
            object.__setattr__(self, "labelled", (self.joints > 0).all(1))

    def head_size(self) -> float:
        """Head size in source pixels: MPII's ``0.6 x head-box diagonal`` when the entry has a
        head box, else the estimate from the neck-top segment (or the person's height)."""
        if self.head_box is not None:
            return float(head_size_from_box(self.head_box.reshape(4)))
        if self.labelled[UPPER_NECK] and self.labelled[HEAD_TOP]:
            return float(head_size(self.joints))
        return PCKH_HEAD_FACTOR * HEAD_BOX_PER_SEGMENT * HEAD_SEGMENT_PER_SCALE * self.scale


@dataclass(frozen=True)
class SourceTruth:
    """Ground truth of a split in source-image pixels, for scoring predictions mapped back
    through the crop.

    Shapes
    ------
    joints : (N, 16, 2) float64
    labelled : (N, 16) bool
    head_sizes : (N,) float64, ``0.6 x head-box diagonal`` or its estimate
    has_box : (N,) bool, the head size comes from a head box
    """

    joints: np.ndarray
    labelled: np.ndarray
    head_sizes: np.ndarray
    has_box: np.ndarray

    def rows(self, index) -> SourceTruth:
        """The people ``index`` selects (a slice, an index array or a boolean mask)."""
        return SourceTruth(
            self.joints[index], self.labelled[index], self.head_sizes[index], self.has_box[index]
        )


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
    if _leaves_root(path):
        raise DataError(
            f"{where}: entry {entry}: image path {path!r} leaves the image root; expected a path "
            "inside it (no leading '/', no '..' above the root)"
        )
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
    box = item.get("headboxes")
    if box is not None:
        if not (
            isinstance(box, list)
            and len(box) == 2
            and all(isinstance(c, list) and len(c) == 2 and all(map(_number, c)) for c in box)
        ):
            raise bad("headboxes", "[[x1, y1], [x2, y2]] numbers")
        box = np.asarray(box, dtype=np.float64) - MPII_ORIGIN
        if not (box[1] - box[0] != 0).any():
            raise bad("headboxes", "a box with two distinct corners")
    table = np.asarray(rows, dtype=np.float64)
    return Person(
        entry,
        path,
        table[:, :2] - MPII_ORIGIN,
        table[:, 2],
        (center[0] - MPII_ORIGIN, center[1] - MPII_ORIGIN),
        scale,
        bool(validation),
        box,
        (table[:, :2] > 0).all(1),
    )


#: One training image in this many is held out as the validation split.
HELD_OUT = 20


def held_out(image: str) -> bool:
    """Whether a training image belongs to the validation split: a CRC-32 of its path (with
    forward slashes), so the choice depends on the image alone, not on the file's order."""
    return zlib.crc32(image.replace("\\", "/").encode()) % HELD_OUT == 0


def split_of(person: Person) -> str:
    """The split an entry belongs to: ``test`` (isValidation), ``val`` or ``train``."""
    if person.validation:
        return "test"
    return "val" if held_out(person.image) else "train"


def _leaves_root(path: str) -> bool:
    """The path is absolute (POSIX or Windows style) or climbs above its root."""
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        return True
    depth = 0
    for part in path.replace("\\", "/").split("/"):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            return True
    return False


def find_image_root(annotations_json: str | os.PathLike, people: list[Person]) -> Path:
    """The folder the entries' ``img_paths`` are relative to, when not given.

    ``images/`` beside the annotation file (the usual MPII layout) when it holds the first
    entry's image or the annotation file's own folder does not, else the annotation file's
    folder.
    """
    here = Path(annotations_json).parent
    beside = here / "images"
    if not beside.is_dir():
        return here
    if not people or (beside / people[0].image).is_file() or not (here / people[0].image).is_file():
        return beside
    return here


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

    The crop is a square of side ``200 * scale_provided * CROP_MARGIN`` source pixels centred
    ``CENTER_SHIFT * scale_provided`` pixels below ``objpos`` (:attr:`Person.crop_center`, the
    public MPII codes' crop), resized to ``image_size``. Training augmentation (``augment``):
    rotation uniform in +-30 degrees, scale uniform in 0.75-1.25, horizontal flip with
    left/right swap (p = 0.5) and colour jitter, drawn from a generator keyed by (seed, split,
    entry, epoch).

    Parameters
    ----------
    root : path-like or None
        Folder the ``img_paths`` are relative to; None: :func:`find_image_root`.
    annotations_json : path-like
        The JSON annotation list.
    split : {"train", "val", "test"}
        ``test``: the entries with ``isValidation`` 1; ``val``: the training images
        :func:`held_out`; ``train``: the other training entries.
    image_size, heatmap_size : int
        Sides of the square input image and of the target heatmaps.
    augment : bool, optional
        Apply the training augmentation; default True for "train" only.
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
    head_size : () float32, heatmap pixels (:meth:`Person.head_size`: 0.6 x the head-box
        diagonal when the entry has ``headboxes``, else from the neck-top segment, else from the
        person scale, ``HEAD_SEGMENT_PER_SCALE``)
    index : int
    matrix : (3, 3) float64, source pixels -> input pixels; unaugmented samples only (the way
        back for scoring in the source image, :meth:`truth`)
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        annotations_json: str | os.PathLike,
        split: str = "train",
        image_size: int = 256,
        heatmap_size: int = 64,
        augment: bool | None = None,
        seed: int = 0,
        sigma: float | None = None,
        drop_occluded: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise DataError(f"split {split!r} is not one of {SPLITS}")
        for name, value in (("image_size", image_size), ("heatmap_size", heatmap_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise DataError(f"seed must be an integer, got {seed!r}")
        people = load_annotations(annotations_json)
        root = find_image_root(annotations_json, people) if root is None else Path(root)
        if not root.is_dir():
            raise DataError(f"MPII image root {root} is not a directory")
        self.people = [p for p in people if split_of(p) == split]
        missing = [p for p in self.people if not (root / p.image).is_file()]
        if missing:
            raise DataError(
                f"{annotations_json}: entry {missing[0].entry}: image file "
                f"{root / missing[0].image} does not exist ({len(missing)} of {len(self.people)} "
                f"{split} entries name missing images; expected them under {root})"
            )
        self.root, self.split, self.seed = root, split, int(seed)
        self.image_size, self.heatmap_size, self.sigma = image_size, heatmap_size, sigma
        self.augment = split == "train" if augment is None else bool(augment)
        self.drop_occluded, self.epoch = bool(drop_occluded), 0

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh augmentations for this epoch (epoch 0 is the default)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.people)

    def _read(self, person: Person, matrix: np.ndarray) -> torch.Tensor:
        """The person's crop through ``matrix``, in [0, 1], not normalised: only the region
        around it is decoded (JPEG at reduced scale when the crop shrinks by 2x or more), see
        :func:`~tcompress.data.images.read_crop`. Colour jitter is applied to this crop, so its
        contrast turns about the crop's mean colour rather than the whole photo's."""
        path = self.root / person.image
        if not path.is_file():
            raise DataError(f"entry {person.entry}: image file {path} does not exist")
        try:
            return read_crop(path, matrix, self.image_size)
        except DataError as e:
            raise DataError(f"entry {person.entry}: {e}") from None

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.people):
            raise IndexError(f"index {index} out of range for {len(self.people)} people")
        try:
            return self._sample(index)
        except DataError:
            raise
        except Exception as e:  # whatever fails on a sample: one line naming the entry and file
            person = self.people[index]
            raise DataError(
                f"entry {person.entry} ({self.root / person.image}): {type(e).__name__}: {e}"
            ) from None

    def _sample(self, index: int) -> dict:
        person = self.people[index]
        side = 200.0 * person.scale * CROP_MARGIN
        rotation, flip = 0.0, False
        if self.augment:
            rng = sample_rng("mpii", self.seed, self.split, person.entry, self.epoch)
            side *= rng.uniform(0.75, 1.25)
            rotation, flip = rng.uniform(-30.0, 30.0), bool(rng.random() < 0.5)
        matrix = crop_matrix(person.crop_center, side, self.image_size, rotation, flip)
        image = self._read(person, matrix)
        if self.augment:  # drawn after the geometry, as before: same augmentations per seed
            image = color_jitter(image, rng)
        image = normalize(image)

        labelled = person.labelled.copy()
        if self.drop_occluded:
            labelled &= person.flags > 0
        joints = image_to_heatmap(
            transform_points(matrix, person.joints), self.image_size, self.heatmap_size
        )
        if flip:  # positions are mirrored by the matrix; the names swap sides
            joints, labelled = joints[list(FLIP_PERMUTATION)], labelled[list(FLIP_PERMUTATION)]
        inside = ((joints > -0.5) & (joints < self.heatmap_size - 0.5)).all(1)
        visible = (labelled & inside).astype(np.float32)
        head = person.head_size() * self.heatmap_size / side  # source -> heatmap pixels
        sample = {
            "image": image,
            "heatmaps": gaussian_heatmaps(joints, visible, self.heatmap_size, self.sigma),
            "joints": torch.as_tensor(joints, dtype=torch.float32),
            "visible": torch.from_numpy(visible),
            "head_size": torch.tensor(head, dtype=torch.float32),
            "index": int(index),
        }
        if not self.augment:  # the way back to source pixels, for scoring there
            sample["matrix"] = torch.from_numpy(matrix)
        return sample

    def truth(self) -> SourceTruth:
        """Ground truth of every person of the split in source pixels (see :class:`SourceTruth`);
        row ``i`` belongs to sample ``i``."""
        people = self.people
        labelled = np.array([p.labelled for p in people], dtype=bool).reshape(-1, N_JOINTS)
        if self.drop_occluded:
            labelled &= np.array([p.flags > 0 for p in people], dtype=bool).reshape(-1, N_JOINTS)
        return SourceTruth(
            joints=np.array([p.joints for p in people], dtype=np.float64).reshape(-1, N_JOINTS, 2),
            labelled=labelled,
            head_sizes=np.array([p.head_size() for p in people], dtype=np.float64),
            has_box=np.array([p.head_box is not None for p in people], dtype=bool),
        )
