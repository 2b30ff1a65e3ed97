"""Image files through Pillow, cheap crops of them, and a folder of unlabeled images.

Readable: whatever Pillow reads among ``IMAGE_EXTENSIONS`` (JPEG, PNG, BMP, GIF's first frame,
TIFF, WebP, PPM/PGM/PBM) and ``.npy`` arrays. Pixels are taken as stored: EXIF orientation is not
applied, because pose annotations are given in the stored pixel grid.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from tcompress.checkpoint import atomic_write
from tcompress.data.transforms import MEAN, crop_matrix, normalize, warp
from tcompress.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolder",
    "list_images",
    "read_crop",
    "read_image",
    "read_size",
    "write_image",
]

#: Suffixes (lower case) read by :func:`read_image` and listed by :func:`list_images`.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
    ".npy",
)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I": 16-bit PNG/PGM in Pillow < 10
_JPEG_SCALES = (8, 4, 2)  # the reduced sizes libjpeg decodes to directly
_T = TypeVar("_T")


def _check_suffix(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise DataError(
            f"image {path} has suffix {suffix!r}; expected one of {', '.join(IMAGE_EXTENSIONS)}"
        )
    return suffix


def _with_pillow(path: str | os.PathLike, decode: Callable[[Image.Image], _T]) -> _T:
    """``decode(image)`` on the opened file, every failure turned into a one-line DataError.

    ``Image.open`` only reads the header, so ``decode`` must force the decoding itself (any
    conversion to an array does) for corrupt pixel data to be caught here.
    """
    kind = f"{Image.registered_extensions().get(Path(path).suffix.lower(), '')} image".lstrip()
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse from the first level.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                kind = f"{image.format} image" if image.format else "image"
                return decode(image)
        except DataError:
            raise
        except FileNotFoundError:
            raise DataError(f"image file {path} does not exist") from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise DataError(f"{path}: refused as a possible decompression bomb: {e}") from None
        except UnidentifiedImageError:
            raise DataError(f"{path} is not an image file Pillow can read") from None
        except OSError as e:
            if e.errno is not None:  # the file system's error, not the decoder's
                raise DataError(f"cannot read image file {path}: {e.strerror or e}") from None
            raise DataError(f"{path}: corrupt or truncated {kind} ({e})") from None
        except Exception as e:  # Pillow's plugins also raise SyntaxError, ValueError, struct.error
            raise DataError(f"{path}: corrupt or truncated {kind} ({e})") from None


def _pixels(image: Image.Image) -> np.ndarray:
    """RGB floats in [0, 1] of a Pillow image of any mode, shape (H, W, 3); forces decoding."""
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        grey = np.clip(np.asarray(image).astype(np.float32) / 65535, 0.0, 1.0)
    elif mode == "F":  # floating-point TIFF: taken as already in [0, 1], as float .npy arrays
        grey = np.asarray(image, dtype=np.float32)
    elif mode in ("1", "L"):
        grey = np.asarray(image.convert("L") if mode == "1" else image, dtype=np.float32) / 255
    else:
        if mode in ("P", "PA"):  # through RGBA: a palette's transparency may come as bytes
            rgb = np.asarray(image.convert("RGBA"))[..., :3]
        else:  # RGB, RGBA, LA, CMYK, YCbCr, LAB, HSV...: alpha is dropped
            rgb = np.asarray(image if mode == "RGB" else image.convert("RGB"))
        return rgb.astype(np.float32) / 255
    return np.repeat(grey[..., None], 3, axis=2)


def _read_npy(path: str | os.PathLike, mmap_mode: str | None = None) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} as a .npy array: {e}") from None
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise DataError(f"{path}: array of shape {array.shape}; expected (H, W) or (H, W, C<=4)")
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path}: array of dtype {array.dtype}; expected uint8 or float in [0, 1]")
    return array


def _npy_pixels(array: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 or float array -> RGB floats (H, W, 3): grey repeated, alpha dropped."""
    pixels = array.astype(np.float32) / 255 if array.dtype == np.uint8 else array.astype(np.float32)
    if pixels.shape[2] in (2, 4):
        pixels = pixels[..., :-1]
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as RGB floats in [0, 1].

    Files of ``IMAGE_EXTENSIONS`` are decoded by Pillow: grey is repeated to three channels,
    alpha is dropped, palette, CMYK and other modes are converted to RGB, 16-bit grey is divided
    by 65535 (Pillow keeps 8 bits of 16-bit colour images). EXIF orientation is not applied: the
    pixels are those stored, the grid that pose annotations refer to. ``.npy`` arrays are uint8
    (divided by 255) or floats taken as already in [0, 1], shaped (H, W) or (H, W, C).

    Images of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels are refused (Pillow's
    decompression-bomb limit; raise it, or set it to None, to read larger files).

    Returns
    -------
    Tensor
        float32 image, channels first.

    Raises
    ------
    DataError
        For a missing, unreadable, corrupt, truncated or too large file, or an unknown suffix.

    Shapes
    ------
    return : (3, H, W)
    """
    if _check_suffix(path) == ".npy":
        pixels = _npy_pixels(_read_npy(path))
    else:
        pixels = _with_pillow(path, _pixels)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def read_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file, from its header only (the whole array for ``.npy``
    files is memory-mapped, not read). Errors as :func:`read_image`.
    """
    if _check_suffix(path) == ".npy":
        return tuple(_read_npy(path, mmap_mode="r").shape[:2])
    return _with_pillow(path, lambda image: (image.height, image.width))


def _blocks(s: int) -> np.ndarray:
    """Coordinates of an image reduced by s x s blocks -> those of the full image.

    Reduced pixel i covers full pixels s i .. s i + s - 1, so its centre is s i + (s - 1) / 2.
    """
    return np.array([[s, 0.0, (s - 1) / 2], [0.0, s, (s - 1) / 2], [0.0, 0.0, 1.0]])


def _shrink(matrix: np.ndarray) -> float:
    """Source pixels per output pixel (along a side) of a source -> output matrix."""
    return 1.0 / math.sqrt(abs(np.linalg.det(matrix[:2, :2])))


def _plan(
    matrix: np.ndarray, height: int, width: int, out_size: int
) -> tuple[int, tuple[int, int, int, int], np.ndarray] | None:
    """What of a (height, width) source the crop needs, pooled as :func:`warp` pools it.

    Returns the pooling factor ``k``, the box ``(left, top, right, bottom)`` of source pixels to
    decode (whole k x k blocks of warp's grid, so pooling the box gives warp's pooled pixels) and
    the matrix from the pooled box to the output; None when the crop misses the source entirely.
    """
    k = int(_shrink(matrix))
    if not (k >= 2 and min(height, width) >= 2 * k):
        k = 1
    pooled = matrix @ _blocks(k)
    last = out_size - 1.0
    centres = np.array([[0.0, last, 0.0, last], [0.0, 0.0, last, last], [1.0, 1.0, 1.0, 1.0]])
    x, y = (np.linalg.inv(pooled) @ centres)[:2]
    # Bilinear sampling at x reads pixels floor(x) and floor(x) + 1; one more each side is a
    # margin against rounding. Pooled pixels past the last whole block do not exist in warp.
    x0, y0 = max(math.floor(x.min()) - 1, 0), max(math.floor(y.min()) - 1, 0)
    x1 = min(math.floor(x.max()) + 2, width // k - 1)
    y1 = min(math.floor(y.max()) + 2, height // k - 1)
    if x0 > x1 or y0 > y1:
        return None
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    return k, (k * x0, k * y0, k * (x1 + 1), k * (y1 + 1)), pooled @ shift


def _resample(pixels: np.ndarray, k: int, matrix: np.ndarray, out_size: int) -> torch.Tensor:
    """Pool (H, W, 3) pixels by k, then bilinear through ``matrix``, ``MEAN`` outside."""
    mean = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
    image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))) - mean
    if k > 1:
        image = F.avg_pool2d(image[None], k)[0]
    # The matrix now shrinks by less than 2, so warp only interpolates; its zeros are the mean.
    return warp(image, matrix, out_size) + mean


def _mean_image(out_size: int) -> torch.Tensor:
    return torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1).repeat(1, out_size, out_size)


def read_crop(path: str | os.PathLike, matrix: np.ndarray, out_size: int) -> torch.Tensor:
    """The crop ``warp(image, matrix, out_size)`` takes of the image file, decoding little.

    Equals, up to the tolerance below, ``denormalize(warp(normalize(read_image(path)), matrix,
    out_size))``: bilinear resampling, k x k blocks averaged first when the matrix shrinks by
    k >= 2, and the mean colour ``MEAN`` outside the source (0 once normalised). Only the pixels
    around the crop are converted to floats, averaged and resampled.

    JPEG files shrunk by 2, 4 or 8 or more are decoded directly at 1/2, 1/4 or 1/8 scale
    (libjpeg's scaled decoding, Pillow's ``draft``), and warp's rule applies to the rest of the
    shrink. That is close to, not equal to, decoding fully. Where warp's block is the reduced
    scale (shrinks 2-3, 4-5, 8-9) the crops differ by at most 0.02 for 4:4:4 JPEGs and 0.12 for
    4:2:0 ones (the reduced decode keeps the stored half-resolution chroma, the full decode
    interpolates it), 0.004 on average. At other shrinks (3-4, 5-8) warp averages blocks of
    ``int(shrink)`` where the reduced decode averages 2 or 4 and interpolates the rest, which
    moves hard edges by a fraction of an output pixel: differences up to 0.42 at such edges,
    0.01 on average (figures on the test images of ``tests/test_images.py``). Other formats, and
    JPEG crops shrunk by less than 2, match the full decode to float rounding.

    Parameters
    ----------
    path : path-like
        Image file, as for :func:`read_image`.
    matrix : ndarray
        Homogeneous source -> output matrix (:func:`~tcompress.data.transforms.crop_matrix`), in
        full-resolution source pixels, pixel centres at integers.
    out_size : int
        Output side.

    Returns
    -------
    Tensor
        float32 crop in [0, 1], not normalised.

    Shapes
    ------
    matrix : (3, 3)
    return : (3, out_size, out_size)
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all() or not np.linalg.det(matrix[:2, :2]):
        raise DataError(f"matrix= must be a finite invertible 3x3 matrix, got {matrix.tolist()}")
    if isinstance(out_size, bool) or not isinstance(out_size, int) or out_size < 1:
        raise DataError(f"out_size= must be a positive integer, got {out_size!r}")
    if _check_suffix(path) == ".npy":
        array = _read_npy(path, mmap_mode="r")
        plan = _plan(matrix, array.shape[0], array.shape[1], out_size)
        if plan is None:
            return _mean_image(out_size)
        k, (left, top, right, bottom), region_matrix = plan
        return _resample(_npy_pixels(array[top:bottom, left:right]), k, region_matrix, out_size)

    def decode(image: Image.Image) -> torch.Tensor:
        width, height = image.size
        scale, shrink = 1, _shrink(matrix)
        if image.format in ("JPEG", "MPO"):  # MPO: a JPEG with extra pictures
            s = next((s for s in _JPEG_SCALES if shrink >= s and min(width, height) >= s), 1)
            drafted = image.draft(image.mode, (width // s, height // s)) if s > 1 else None
            if drafted is not None:  # (mode, box of the full image in reduced pixels)
                scale = round(width / drafted[1][2])
        # A reduced decode rounds its size up; a last, partial block is left out, as warp
        # leaves out partial pooling blocks, so the crop never shows what lies past the edge.
        plan = _plan(matrix @ _blocks(scale), height // scale, width // scale, out_size)
        if plan is None:
            image.load()  # still decode, so that a corrupt file fails the same way
            return _mean_image(out_size)
        k, box, region_matrix = plan
        return _resample(_pixels(image.crop(box)), k, region_matrix, out_size)

    return _with_pillow(path, decode)


def write_image(path: str | os.PathLike, pixels: np.ndarray, **options) -> None:
    """Write uint8 pixels to an image file, in the format its suffix names, atomically.

    Parameters
    ----------
    path : path-like
        Destination; the suffix picks the format (``.png``, ``.jpg``, ``.bmp``...).
    pixels : ndarray
        uint8 grey, RGB or RGBA (RGBA only for formats with alpha, such as PNG).
    **options
        Passed to Pillow's ``Image.save``, e.g. ``quality=90`` for JPEG.

    Shapes
    ------
    pixels : (H, W), (H, W, 3) or (H, W, 4)
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise DataError(f"pixels of dtype {pixels.dtype} cannot be written; expected uint8")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))):
        raise DataError(f"pixels of shape {pixels.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    suffix = Path(path).suffix.lower()
    kind = Image.registered_extensions().get(suffix)
    if kind is None or kind not in Image.SAVE:
        raise DataError(f"cannot write image {path}: Pillow writes no format for {suffix!r}")
    image = Image.fromarray(np.ascontiguousarray(pixels))
    try:
        atomic_write(path, lambda tmp: image.save(tmp, format=kind, **options))
    except FileNotFoundError:
        raise DataError(f"cannot write image {path}: its directory does not exist") from None
    except (OSError, ValueError, KeyError) as e:  # e.g. RGBA as JPEG, an unknown option value
        raise DataError(f"cannot write image {path} as {kind}: {e}") from None


def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files (by suffix, case-insensitive) directly inside ``root``, sorted by name."""
    return sorted(
        p for p in Path(root).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _fit_matrix(height: int, width: int, image_size: int) -> np.ndarray:
    """The whole (height, width) image, longer side to ``image_size``, centred."""
    return crop_matrix(((width - 1) / 2, (height - 1) / 2), max(height, width), image_size)


def fit_square(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """Normalise and resize a whole [0, 1] image into a square, centred, padded with zeros
    (the mean colour). Shapes: (3, H, W) -> (3, image_size, image_size).
    """
    matrix = _fit_matrix(*image.shape[-2:], image_size)
    return warp(normalize(image), matrix, image_size)


class ImageFolder(Dataset):
    """Unlabeled images of a folder (``IMAGE_EXTENSIONS``), for distillation and BatchNorm
    recalibration. Files are taken in sorted name order; sub-folders are ignored.

    Parameters
    ----------
    root : path-like
        The folder.
    image_size : int
        Output side: each image is fitted whole (longer side to ``image_size``), centred and
        padded with the mean colour, through :func:`read_crop` (JPEG files decoded at reduced
        scale when that is at least 2x the output).

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
        path = self.files[index]
        matrix = _fit_matrix(*read_size(path), self.image_size)
        return {"image": normalize(read_crop(path, matrix, self.image_size)), "index": int(index)}
