"""Heatmaps to joint coordinates: argmax with sub-pixel refinement, flip testing, prediction.

Coordinates are heatmap pixels ``(x, y)`` with integer values at pixel centres: a peak in column
``i``, row ``j`` decodes to ``(i, j)``, the convention of a target rendered as
``exp(-((i - x)^2 + (j - y)^2) / (2 sigma^2))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from tcompress.data.skeleton import FLIP_PAIRS
from tcompress.errors import EvaluationError
from tcompress.models.io import heatmaps_of
from tcompress.vocabulary import REFINEMENTS

__all__ = [
    "MPII_FLIP_PAIRS",
    "REFINEMENTS",
    "EvaluationError",
    "decode_heatmaps",
    "flip_average",
    "last_stack",
    "predict",
]

#: Left/right channel pairs of the 16 MPII joints (from :mod:`tcompress.data.skeleton`).
MPII_FLIP_PAIRS: tuple[tuple[int, int], ...] = FLIP_PAIRS
_LOG_FLOOR = 1e-10  # heatmap values are clamped to this before the log of quadratic refinement


def decode_heatmaps(heatmaps, refine: str | None = "quarter") -> tuple[Tensor, Tensor]:
    """Joint coordinates and peak values of heatmaps: the argmax, refined to sub-pixel.

    Parameters
    ----------
    heatmaps
        Tensor (or array) of heatmaps; must be finite.
    refine
        ``"quarter"`` (default): the argmax moves a quarter pixel along each axis towards the higher
        of its two neighbours (no move when they are equal or the peak is on that axis' border).
        ``"quadratic"``: one Newton step on the log-heatmap, ``-H^{-1} g`` with the gradient ``g``
        and Hessian ``H`` taken by central differences on the 3x3 neighbourhood of the argmax
        (values clamped to 1e-10 before the log), the offset clipped to half a pixel per axis. A
        Gaussian's log is quadratic, so a Gaussian peak is recovered exactly. Where that step is
        undefined (peak on the border, or ``H`` not negative definite, e.g. flat or all-zero
        maps) the quarter-pixel rule is used. No smoothing is applied first. ``"none"`` or
        ``None``: the integer argmax.

    Returns
    -------
    coords : Tensor
        ``(x, y)`` in heatmap pixels, in the heatmaps' floating dtype (float32 for integer input)
        and on their device. An all-zero (or constant) map gives its first pixel, ``(0, 0)``.
    maxvals : Tensor
        The heatmap value at the argmax (0 for an all-zero map); callers threshold it to call a
        joint absent.

    Shapes
    ------
    heatmaps : (N, J, h, w)
    coords : (N, J, 2)
    maxvals : (N, J)
    """
    hm = _heatmaps(heatmaps, "heatmaps", finite=True)
    mode = _refine(refine)
    n, j, h, w = hm.shape
    flat = hm.reshape(n, j, h * w)
    maxvals, idx = flat.max(dim=-1)
    x, y = idx % w, torch.div(idx, w, rounding_mode="floor")
    coords = torch.stack((x, y), dim=-1).to(torch.float64)
    if mode != "none":

        def at(dx: int, dy: int) -> Tensor:
            xx, yy = (x + dx).clamp(0, w - 1), (y + dy).clamp(0, h - 1)
            return flat.gather(-1, (yy * w + xx).unsqueeze(-1)).squeeze(-1).to(torch.float64)

        inner_x, inner_y = (x > 0) & (x < w - 1), (y > 0) & (y < h - 1)
        sx = torch.sign(at(1, 0) - at(-1, 0)) * inner_x
        sy = torch.sign(at(0, 1) - at(0, -1)) * inner_y
        step = 0.25 * torch.stack((sx, sy), dim=-1)
        if mode == "quadratic":
            step = _newton_step(at, inner_x & inner_y, fallback=step)
        coords = coords + step
    return coords.to(hm.dtype), maxvals


def _newton_step(at: Callable[[int, int], Tensor], inner: Tensor, fallback: Tensor) -> Tensor:
    def log(dx: int, dy: int) -> Tensor:
        return torch.log(at(dx, dy).clamp_min(_LOG_FLOOR))

    centre = log(0, 0)
    gx, gy = (log(1, 0) - log(-1, 0)) / 2, (log(0, 1) - log(0, -1)) / 2
    dxx, dyy = log(1, 0) - 2 * centre + log(-1, 0), log(0, 1) - 2 * centre + log(0, -1)
    dxy = (log(1, 1) - log(1, -1) - log(-1, 1) + log(-1, -1)) / 4
    det = dxx * dyy - dxy * dxy
    ok = inner & (dxx < 0) & (det > 0)
    det = torch.where(ok, det, torch.ones_like(det))
    offset = torch.stack((dxy * gy - dyy * gx, dxy * gx - dxx * gy), dim=-1) / det.unsqueeze(-1)
    return torch.where(ok.unsqueeze(-1), offset.clamp(-0.5, 0.5), fallback)


def flip_average(
    model_outputs,
    flipped_outputs,
    flip_pairs: Sequence[tuple[int, int]] = MPII_FLIP_PAIRS,
    *,
    shift: bool = False,
) -> Tensor:
    """Average heatmaps with those of the horizontally flipped image, brought back unflipped.

    The flipped image's heatmaps are flipped along the width axis and their left/right channels
    swapped (``flip_pairs``), then averaged with the original ones.

    Parameters
    ----------
    model_outputs, flipped_outputs
        Heatmaps of the images and of ``images.flip(-1)``; a list or tuple (one entry per stack)
        stands for its last entry.
    flip_pairs
        Pairs of channels that swap under a horizontal flip (the MPII pairs by default).
    shift
        Move the unflipped heatmaps one pixel to the right (column ``c`` takes column ``c - 1``;
        column 0 keeps its value) before averaging, the usual correction when heatmap coordinates
        are image coordinates divided by the stride (``x_hm = x_img / s``): mirroring the image
        (``x -> W - 1 - x``) then lands a joint ``(s - 1) / s`` heatmap pixel (0.75 for s = 4) to
        the right of where mirroring the heatmap (``x -> w - 1 - x``) puts it, and one pixel is
        the nearest whole-pixel fix. Leave it off (the default) when the heatmap grid is
        centre-aligned with the image (``x_hm = (x_img + 0.5) / s - 0.5``) or when training flips
        heatmaps as arrays: then mirroring is exact and an equivariant model's flip average
        equals its plain output.

    Returns
    -------
    Tensor
        The averaged heatmaps, in the dtype of ``model_outputs``.

    Shapes
    ------
    model_outputs, flipped_outputs, return : (N, J, h, w)
    """
    original = _heatmaps(last_stack(model_outputs), "model_outputs")
    flipped = _heatmaps(last_stack(flipped_outputs), "flipped_outputs")
    if original.shape != flipped.shape:
        raise EvaluationError(
            f"flipped_outputs of shape {tuple(flipped.shape)}; expected the shape of "
            f"model_outputs, {tuple(original.shape)}"
        )
    perm = _flip_permutation(flip_pairs, original.shape[1])
    back = flipped.flip(-1)[:, perm]
    if shift:
        back = torch.cat((back[..., :1], back[..., :-1]), dim=-1)
    return (original + back.to(original.dtype)) / 2


def last_stack(outputs):
    """The heatmaps of the last stack: ``outputs[-1]`` for a list or tuple, else ``outputs``."""
    if isinstance(outputs, (list, tuple)):
        if not outputs:
            raise EvaluationError("model outputs are an empty sequence; expected one per stack")
        return outputs[-1]
    return outputs


def predict(
    model: nn.Module | Callable[[Tensor], object],
    images: Tensor,
    flip: bool = False,
    *,
    flip_pairs: Sequence[tuple[int, int]] = MPII_FLIP_PAIRS,
    shift: bool = False,
    refine: str | None = "quarter",
) -> tuple[Tensor, Tensor]:
    """Decoded joints of a batch: the last stack's heatmaps, optionally flip-averaged.

    Runs under ``torch.no_grad()``. A module is put in eval mode for the call and every submodule
    gets its own training flag back afterwards (also on error).

    Parameters
    ----------
    model
        A module (or any callable) returning a list of heatmaps, one per stack, or one tensor.
    images
        The input batch, already on the model's device.
    flip
        Also run ``images.flip(-1)`` and combine with :func:`flip_average`.
    flip_pairs, shift
        As in :func:`flip_average`.
    refine
        As in :func:`decode_heatmaps`.

    Returns
    -------
    coords, maxvals : Tensor
        As :func:`decode_heatmaps` returns them, in heatmap pixels.

    Shapes
    ------
    images : (N, C, H, W)
    coords : (N, J, 2)
    maxvals : (N, J)
    """
    if not callable(model):
        raise EvaluationError(f"model of type {type(model).__name__}; expected a torch module")
    if not isinstance(images, Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise EvaluationError(f"images {got}; expected a tensor of shape (N, C, H, W)")
    _refine(refine)
    # A network with its own conventions (a channels-last PoseNet) is called through them.
    run = (lambda x: heatmaps_of(model, x)) if isinstance(model, nn.Module) else model
    flags = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            heatmaps = last_stack(run(images))
            if flip:
                flipped = last_stack(run(images.flip(-1)))
                heatmaps = flip_average(heatmaps, flipped, flip_pairs, shift=shift)
    finally:
        for module, flag in flags:
            module.training = flag
    return decode_heatmaps(heatmaps, refine)


def _heatmaps(value, what: str, finite: bool = False) -> Tensor:
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise EvaluationError(
                f"{what} of type {type(value).__name__}; expected a tensor of shape (N, J, h, w)"
            ) from None
    if value.dim() != 4 or value.shape[-1] == 0 or value.shape[-2] == 0:
        raise EvaluationError(
            f"{what} of shape {tuple(value.shape)}; expected (N, J, h, w) with h, w >= 1"
        )
    if not value.is_floating_point():
        value = value.float()
    if finite and not bool(torch.isfinite(value).all()):
        raise EvaluationError(f"{what} contain NaN or infinity; expected finite values")
    return value


def _refine(refine: str | None) -> str:
    mode = "none" if refine is None else refine
    if mode not in REFINEMENTS:
        raise EvaluationError(f"refine {refine!r}; expected one of {', '.join(REFINEMENTS)}")
    return mode


def _flip_permutation(flip_pairs: Sequence[tuple[int, int]], n_joints: int) -> list[int]:
    perm = list(range(n_joints))
    seen: set[int] = set()
    for pair in flip_pairs:
        try:
            a, b = (int(k) for k in pair)
        except (TypeError, ValueError):
            a, b = -1, -1
        if not (0 <= a < n_joints and 0 <= b < n_joints) or a == b or {a, b} & seen:
            raise EvaluationError(
                f"flip pair {pair!r} in {list(flip_pairs)!r}; expected pairs of distinct channels "
                f"in 0..{n_joints - 1}, each channel in at most one pair"
            )
        seen |= {a, b}
        perm[a], perm[b] = b, a
    return perm
