"""Image files without extra dependencies, and a folder of unlabeled images.

Readable: PNG (see :mod:`tcompress.data.png`), binary PGM/PPM (P5/P6, 8 or 16 bits) and ``.npy``
arrays. JPEG is not supported: convert such data sets to PNG or ``.npy`` first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tcompress.data.png import _read_bytes, read_png, write_png
from tcompress.data.transforms import crop_matrix, normalize, warp
from tcompress.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "list_images", "read_image", "read_png", "write_png"]

IMAGE_EXTENSIONS = (".png", ".ppm", ".pgm", ".pnm", ".npy")
_PNM_HEADER = re.compile(
    rb"\A(P[56])(?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)"
    rb"(?:\s+|#[^\n]*\n)+(\d+)\s"
)


def _read_pnm(path: str | os.PathLike) -> np.ndarray:
    """Binary PGM (P5) or PPM (P6), 8 or 16 bits, as floats in [0, 1] of shape (H, W, C)."""
    data = _read_bytes(path)
    header = _PNM_HEADER.match(data)
    if header is None:
        raise DataError(f"{path}: not a binary PGM (P5) or PPM (P6) file with a complete header")
    width, height, maxval = (int(g) for g in header.groups()[1:])
    channels = 3 if header.group(1) == b"P6" else 1
    dtype = np.dtype(np.uint8 if maxval < 256 else ">u2")
    count = width * height * channels
    body = data[header.end() : header.end() + count * dtype.itemsize]
    if not 0 < maxval < 65536 or len(body) < count * dtype.itemsize:
        raise DataError(f"{path}: {width}x{height} PPM/PGM with maxval {maxval} is truncated")
    return np.frombuffer(body, dtype).reshape(height, width, channels).astype(np.float32) / maxval


def _read_npy(path: str | os.PathLike) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} as a .npy array: {e}") from None
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise DataError(f"{path}: array of shape {array.shape}; expected (H, W) or (H, W, C<=4)")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: array of dtype {array.dtype}; expected uint8 or float in [0, 1]")
    return array.astype(np.float32)


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read a PNG, binary PPM/PGM or ``.npy`` image as RGB floats in [0, 1].

    ``.npy`` arrays are uint8 (divided by 255) or floats taken as already in [0, 1], shaped
    (H, W) or (H, W, C). Grey images are repeated to three channels; alpha is dropped.

    Returns
    -------
    Tensor
        float32 image, channels first.

    Shapes
    ------
    return : (3, H, W)
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        pixels = read_png(path).astype(np.float32) / 255
    elif suffix in (".ppm", ".pgm", ".pnm"):
        pixels = _read_pnm(path)
    elif suffix == ".npy":
        pixels = _read_npy(path)
    else:
        raise DataError(f"image {path} has suffix {suffix!r}; expected one of {IMAGE_EXTENSIONS}")
    if pixels.shape[2] in (2, 4):
        pixels = pixels[..., :-1]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files (by suffix, case-insensitive) directly inside ``root``, sorted by name."""
    return sorted(
        p for p in Path(root).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def fit_square(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """Normalise and resize a whole [0, 1] image into a square, centred, padded with zeros
    (the mean colour). Shapes: (3, H, W) -> (3, image_size, image_size).
    """
    height, width = image.shape[-2:]
    matrix = crop_matrix(((width - 1) / 2, (height - 1) / 2), max(height, width), image_size)
    return warp(normalize(image), matrix, image_size)


class ImageFolder(Dataset):
    """Unlabeled images of a folder (PNG, PPM/PGM, ``.npy``), for distillation and BatchNorm
    recalibration. Files are taken in sorted name order; sub-folders are ignored.

    Parameters
    ----------
    root : path-like
        The folder.
    image_size : int
        Output side: each image is fitted whole (longer side to ``image_size``), centred and
        padded with the mean colour.

    Shapes
    ------
    image : (3, image_size, image_size) float32, normalised with ``MEAN`` / ``STD``
    index : int
    """

    def __init__(self, root: str | os.PathLike, image_size: int = 256) -> None:
        if not Path(root).is_dir():
            raise DataError(f"image folder {root} is not a directory")
        self.files = list_images(root)
        if not self.files:
            raise DataError(f"image folder {root} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise DataError(f"image_size must be a positive integer, got {image_size!r}")
        self.root, self.image_size = Path(root), image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.files):
            raise IndexError(f"index {index} out of range for {len(self.files)} images")
        image = fit_square(read_image(self.files[index]), self.image_size)
        return {"image": image, "index": int(index)}
