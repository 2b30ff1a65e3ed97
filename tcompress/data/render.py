"""Vectorised numpy drawing: anti-aliased shaded shapes, noise textures and blur.

Every shape is computed only inside its bounding box. Canvases are float32 ``(3, H, W)`` arrays in
[0, 1] painted in place; shapes return their coverage so callers can also build masks. Everything
is single-threaded numpy, so data-loader workers do not compete for cores.
"""

from __future__ import annotations

import colorsys

import numpy as np
from scipy import ndimage

__all__ = [
    "Coverage",
    "blur",
    "capsule",
    "ellipse",
    "hsv",
    "paint",
    "polygon",
    "rectangle",
    "upsample",
    "value_noise",
]

#: (row slice, column slice, coverage in [0, 1] of shape (h, w), normalised radius of shape (h, w))
Coverage = tuple[slice, slice, np.ndarray, np.ndarray]


def _unit_clip(x: np.ndarray) -> np.ndarray:
    """``x`` clipped to [0, 1] in place (plain ufuncs: ``np.clip`` has a costly wrapper)."""
    return np.minimum(np.maximum(x, 0, out=x), 1, out=x)


def _grid(shape: tuple[int, ...], lo: np.ndarray, hi: np.ndarray):
    """Pixel-centre coordinates of the canvas window covering ``[lo, hi]``, or None if empty."""
    x0, y0 = max(int(np.floor(lo[0])), 0), max(int(np.floor(lo[1])), 0)
    x1, y1 = min(int(np.ceil(hi[0])) + 1, shape[-1]), min(int(np.ceil(hi[1])) + 1, shape[-2])
    if x1 <= x0 or y1 <= y0:
        return None
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    return slice(y0, y1), slice(x0, x1), xs, ys


def capsule(shape, a, b, ra: float, rb: float) -> Coverage | None:
    """Segment ``a``-``b`` thickened to radius ``ra`` at ``a`` and ``rb`` at ``b`` (a limb)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    r = max(ra, rb)
    g = _grid(shape, np.minimum(a, b) - r - 1, np.maximum(a, b) + r + 1)
    if g is None:
        return None
    rows, cols, xs, ys = g
    d = b - a
    t = _unit_clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / max(float(d @ d), 1e-6))
    dx, dy = xs - a[0] - t * d[0], ys - a[1] - t * d[1]
    dist = np.sqrt(dx * dx + dy * dy)
    radius = ra + t * (rb - ra)
    return rows, cols, _unit_clip(radius - dist + 0.5), dist / radius


def ellipse(shape, center, rx: float, ry: float, angle: float = 0.0) -> Coverage | None:
    """Ellipse with semi-axes ``rx`` (along ``angle``, radians) and ``ry``."""
    c = np.asarray(center, np.float32)
    r = max(rx, ry)
    g = _grid(shape, c - r - 1, c + r + 1)
    if g is None:
        return None
    rows, cols, xs, ys = g
    cos, sin = np.cos(angle), np.sin(angle)
    u = ((xs - c[0]) * cos + (ys - c[1]) * sin) / rx
    v = ((ys - c[1]) * cos - (xs - c[0]) * sin) / ry
    rho = np.sqrt(u * u + v * v)
    return rows, cols, _unit_clip((1 - rho) * min(rx, ry) + 0.5), rho


def rectangle(shape, center, half_w: float, half_h: float, angle: float = 0.0) -> Coverage | None:
    """Rectangle with half-sides ``half_w`` (along ``angle``, radians) and ``half_h``."""
    c = np.asarray(center, np.float32)
    r = float(np.hypot(half_w, half_h))
    g = _grid(shape, c - r - 1, c + r + 1)
    if g is None:
        return None
    rows, cols, xs, ys = g
    cos, sin = np.cos(angle), np.sin(angle)
    u = np.abs((xs - c[0]) * cos + (ys - c[1]) * sin)
    v = np.abs((ys - c[1]) * cos - (xs - c[0]) * sin)
    inside = np.minimum(half_w - u, half_h - v)
    return rows, cols, _unit_clip(inside + 0.5), np.maximum(u / half_w, v / half_h)


def polygon(shape, points) -> Coverage | None:
    """Convex polygon through ``points`` (either orientation)."""
    p = np.asarray(points, np.float32)
    g = _grid(shape, p.min(0) - 1, p.max(0) + 1)
    if g is None:
        return None
    rows, cols, xs, ys = g
    q = np.roll(p, -1, axis=0)
    area = float(np.sum(p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]))
    inside = np.full(np.broadcast_shapes(xs.shape, ys.shape), np.inf, np.float32)
    for (x0, y0), (x1, y1) in zip(p, q):
        length = max(float(np.hypot(x1 - x0, y1 - y0)), 1e-6)
        signed = ((x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0)) / length
        inside = np.minimum(inside, signed if area > 0 else -signed)
    scale = max(float(np.ptp(p, axis=0).min()) / 2, 1.0)
    return rows, cols, _unit_clip(inside + 0.5), 1 - _unit_clip(inside / scale)


def paint(
    canvas: np.ndarray,
    cover: Coverage | None,
    colour,
    shading: float = 0.0,
    mask: np.ndarray | None = None,
) -> None:
    """Blend ``colour`` into ``canvas`` over a shape, darkened by ``shading * radius^2`` at its rim.

    Parameters
    ----------
    canvas : ndarray
        float32 image painted in place.
    cover : Coverage or None
        A shape from :func:`capsule`, :func:`ellipse`, :func:`rectangle` or :func:`polygon`
        (None, for a shape outside the canvas, paints nothing).
    colour : array-like
        RGB triple, or a texture the size of ``canvas``.
    shading : float
        Darkening at the shape's rim, for a rounded look.
    mask : ndarray, optional
        float32 coverage accumulator (maximum), updated in place.

    Shapes
    ------
    canvas : (3, H, W)
    colour : (3,) or (3, H, W)
    mask : (H, W)
    """
    if cover is None:
        return
    rows, cols, alpha, radius = cover
    colour = np.asarray(colour, np.float32)
    colour = colour[:, rows, cols] if colour.ndim == 3 else colour[:, None, None]
    if shading:
        colour = colour * (1 - shading * np.minimum(radius, 1) ** 2)
    window = canvas[:, rows, cols]
    window += alpha * (colour - window)
    if mask is not None:
        np.maximum(mask[rows, cols], alpha, out=mask[rows, cols])


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB of an HSV colour, all in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a small grid to ``size x size`` (pixel-centre aligned, edges clamped).

    Shapes: grid (C, h, w) -> (C, size, size).
    """

    def taps(cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip(
            (np.arange(size, dtype=np.float32) + 0.5) * (cells / size) - 0.5, 0, cells - 1
        )
        lo = np.minimum(pos.astype(int), max(cells - 2, 0))
        return lo, np.minimum(lo + 1, cells - 1), (pos - lo).astype(np.float32)

    lo, hi, t = taps(grid.shape[2])
    rows = grid[:, :, lo] + (grid[:, :, hi] - grid[:, :, lo]) * t  # (C, h, size): small
    lo, hi, t = taps(grid.shape[1])
    out = np.take(rows, lo, axis=1)  # whole rows: cheap gathers
    out += (np.take(rows, hi, axis=1) - out) * t[:, None]
    return out


def value_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 3) -> np.ndarray:
    """Smooth random field in [0, 1]: a ``cells x cells`` random grid upsampled bilinearly.

    Shapes: return (channels, size, size) float32.
    """
    return upsample(rng.random((channels, cells, cells), dtype=np.float32), size)


def blur(canvas: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each channel, reflected borders. Shapes: (C, H, W) -> (C, H, W)."""
    return ndimage.gaussian_filter(canvas, (0, sigma, sigma), mode="reflect", truncate=3.0)
