"""Build a data set from a short spec: ``"synthetic"`` or a path."""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset, Subset

from tcompress.data.images import IMAGE_EXTENSIONS, ImageFolder, list_images
from tcompress.data.mpii import ANNOTATION_NAMES, MPIIDataset
from tcompress.data.synthetic import SyntheticPose
from tcompress.errors import DataError
from tcompress.vocabulary import SPLITS

__all__ = ["SYNTHETIC_SIZES", "make_dataset"]

#: Samples in a synthetic split when ``n`` is not given.
SYNTHETIC_SIZES = {"train": 10000, "val": 1000, "test": 1000}

_EXPECTED = (
    "expected 'synthetic', an MPII-style JSON annotation file, a directory holding "
    f"{' or '.join(ANNOTATION_NAMES)}, or a directory of images ({', '.join(IMAGE_EXTENSIONS)})"
)


def make_dataset(
    spec: str | os.PathLike,
    split: str = "train",
    image_size: int = 256,
    heatmap_size: int = 64,
    n: int | None = None,
    seed: int = 0,
    images: str | os.PathLike | None = None,
) -> Dataset:
    """The data set a spec names; augmentation is on for ``split="train"`` only.

    Parameters
    ----------
    spec : str or path-like
        - ``"synthetic"``: :class:`SyntheticPose` of ``n`` samples (``SYNTHETIC_SIZES`` if None;
          write ``./synthetic`` for a folder of that name);
        - a ``.json`` file: :class:`MPIIDataset`;
        - a directory holding ``annotations.json`` (or pytorch-pose's ``mpii_annotations.json``):
          :class:`MPIIDataset` of that file;
        - a directory of images: :class:`ImageFolder` (unlabeled; ``split``, ``heatmap_size``
          unused).
    split : {"train", "val", "test"}
        :data:`~tcompress.vocabulary.SPLITS`.
    image_size, heatmap_size : int
        Sides of the square input image and of the target heatmaps.
    n : int, optional
        Synthetic: the number of samples; paths: keep the first ``n`` samples (a ``Subset``).
    seed : int
        Generation / augmentation seed.
    images : path-like, optional
        MPII: the folder the entries' ``img_paths`` are relative to; default: ``images/`` beside
        the annotation file when the images are there, else the annotation file's folder
        (:func:`~tcompress.data.mpii.find_image_root`).

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        For a spec that is none of these, naming what was given and what was expected.
    """
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {SPLITS}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise DataError(f"n must be a non-negative integer or None, got {n!r}")
    augment = split == "train"
    path = Path(spec)
    annotations = None if str(spec) == "synthetic" else _annotation_file(path)
    if images is not None and annotations is None:
        raise DataError(
            f"an image folder ({images}) was given for data set {str(spec)!r}, which is not an "
            "MPII-style annotation file; expected an annotation JSON or a folder holding one"
        )
    if str(spec) == "synthetic":
        size = SYNTHETIC_SIZES[split] if n is None else n
        return SyntheticPose(
            size, image_size, heatmap_size, seed=seed, split=split, augment=augment
        )
    if annotations is not None:
        data = MPIIDataset(images, annotations, split, image_size, heatmap_size, augment, seed)
    elif path.is_dir() and list_images(path):
        data = ImageFolder(path, image_size)
    elif not path.exists():
        raise DataError(f"data set {str(spec)!r} does not exist; {_EXPECTED}")
    else:
        raise DataError(f"data set {str(spec)!r} is not usable; {_EXPECTED}")
    return data if n is None or n >= len(data) else Subset(data, range(n))


def _annotation_file(path: Path) -> Path | None:
    if path.is_file() and path.suffix.lower() == ".json":
        return path
    if path.is_dir():
        return next((path / n for n in ANNOTATION_NAMES if (path / n).is_file()), None)
    return None


class Materialized(Dataset):
    """Every sample of a data set generated once and kept (repeated evaluations cost no
    rendering)."""

    def __init__(self, data: Dataset) -> None:
        self.items = [data[i] for i in range(len(data))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]
