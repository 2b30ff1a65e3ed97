"""Input check, norms and relative errors shared by the Tucker and tensor-train decompositions.

Everything here works on plain :class:`torch.Tensor` objects of any order, dtype float32 or float64
and any device. Norms are accumulated in float64 without a float64 copy of the (large) input, and
relative errors of orthogonal projections are derived from the energy they keep whenever rounding
allows it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from tcompress.decompose._threads import one_thread
from tcompress.errors import DecompositionError, RankError

__all__ = [
    "balanced",
    "balancing_scale",
    "check_decomposable",
    "relative_error_from_energy",
    "squared_distance",
    "squared_norm",
]

# Below this squared relative error, ||W||^2 - ||W_hat||^2 loses too many digits to cancellation
# (in units of the machine epsilon of the input dtype); the error is then computed explicitly.
_CANCELLATION_EPS = 2.0e4


def check_decomposable(tensor: Tensor) -> None:
    """A float32 or float64 tensor of order >= 1, else a clear error."""
    if not isinstance(tensor, Tensor):
        raise DecompositionError(f"tensor is a {type(tensor).__name__}; expected a torch.Tensor")
    if tensor.dtype not in (torch.float32, torch.float64):
        raise DecompositionError(f"tensor has dtype {tensor.dtype}; expected float32 or float64")
    if tensor.ndim == 0:
        raise RankError("cannot decompose a 0-dimensional tensor; expected at least one mode")


def _prod(values: Sequence[int]) -> int:
    return math.prod(int(v) for v in values)


def squared_norm(tensor: Tensor) -> float:
    """Squared Frobenius norm accumulated in float64 without a float64 copy of the tensor.

    Parameters
    ----------
    tensor : Tensor
        Any shape, float32 or float64.

    Returns
    -------
    float
        ``sum(tensor**2)`` with float64 accuracy (for float32 input: the norms of rows of 256
        entries are taken in float32, whose pairwise summation is accurate to a few ulps, and their
        squares are summed in float64, so the relative error is about ``eps32 / sqrt(rows)``).

    Shapes
    ------
    tensor : (any)
    """
    flat = tensor.detach().reshape(-1)
    # One thread: a memory-bound pass plus a few small reductions, which on shared cores cost
    # more in parallel-region waits than they gain (paper-size W: 5.5 ms on one thread, 32 ms on
    # two while other processes load both cores).
    with one_thread():
        if flat.dtype == torch.float64:
            return float(torch.dot(flat, flat))
        width = 256
        full = (flat.numel() // width) * width
        total = 0.0
        if full:
            rows = torch.linalg.vector_norm(flat[:full].view(-1, width), dim=1)
            total += float(rows.double().square().sum())
        if full < flat.numel():
            total += float(torch.linalg.vector_norm(flat[full:]).double().square())
        if not math.isfinite(total) or total < 1e-30:
            # Squares beyond the float32 range (|x| > 1e19) or below it: redo in float64, by
            # blocks.
            step = 1 << 20
            blocks = (flat[s : s + step].double() for s in range(0, flat.numel(), step))
            total = sum(float(torch.dot(block, block)) for block in blocks)
    return total


def balancing_scale(norm_sq: float, numel: int, dtype: torch.dtype) -> float:
    """A power of two that brings the tensor's entries near unit size, or 1.0 if not needed.

    Gram matrices hold sums of squares and would overflow (or underflow) in the input dtype for
    extreme magnitudes; scaling by a power of two is exact and the decompositions are
    equivariant to it (the core is scaled back).

    Parameters
    ----------
    norm_sq : float
        ``||W||^2`` in float64.
    numel : int
        Number of entries of ``W``.
    dtype : torch.dtype
        float32 or float64.

    Returns
    -------
    float
        ``2**k`` with ``k`` an integer; 1.0 when every Gram entry stays well inside the range.
    """
    limit = 1e30 if dtype == torch.float32 else 1e250
    mean_sq = norm_sq / max(numel, 1)
    if norm_sq == 0.0 or (norm_sq < limit and mean_sq > 1.0 / limit):
        return 1.0
    # Make the root-mean-square entry about 1.
    return 2.0 ** -round(0.5 * math.log2(mean_sq))


def squared_distance(tensor: Tensor, other: Tensor) -> float:
    """``||tensor - other||^2`` in float64, subtracting block by block to bound temporary memory.

    Parameters
    ----------
    tensor, other : Tensor
        Same shape and dtype.

    Returns
    -------
    float
        The squared Frobenius distance.

    Shapes
    ------
    tensor, other : (any), identical
    """
    a = tensor.detach().reshape(-1)
    b = other.detach().reshape(-1)
    step = 1 << 22
    return sum(squared_norm(a[s : s + step] - b[s : s + step]) for s in range(0, a.numel(), step))


def relative_error_from_energy(norm_sq: float, kept_sq: float, dtype: torch.dtype) -> float | None:
    """Relative error of an orthogonal projection from the energy it keeps.

    For an orthogonal projection ``W_hat = P W`` Pythagoras gives
    ``||W - W_hat||^2 = ||W||^2 - ||W_hat||^2``, and ``||W_hat||`` is the norm of the core.

    Parameters
    ----------
    norm_sq : float
        ``||W||^2`` in float64.
    kept_sq : float
        ``||W_hat||^2`` in float64.
    dtype : torch.dtype
        The dtype the projection was computed in; sets the rounding level.

    Returns
    -------
    float or None
        ``||W - W_hat|| / ||W||``, or ``None`` when the difference is so small that rounding of the
        two norms (a few ulps of ``dtype`` each) could dominate it; the caller must then measure
        the error on an explicit reconstruction.
    """
    if norm_sq == 0.0:
        return 0.0
    # The difference of two nearly equal energies: clamp rounding below zero.
    rel_sq = max(norm_sq - kept_sq, 0.0) / norm_sq
    if rel_sq < _CANCELLATION_EPS * torch.finfo(dtype).eps:
        return None
    return math.sqrt(rel_sq)


def balanced(tensor: Tensor) -> tuple[Tensor, float, float]:
    """(contiguous detached W times 2^k, its squared norm, 2^k): extreme magnitudes are scaled by
    an exact power of two so that Gram matrices cannot overflow; k = 0 for ordinary weights."""
    w = tensor.detach().contiguous()
    norm_sq = squared_norm(w)
    scale = balancing_scale(norm_sq, w.numel(), w.dtype)
    if scale != 1.0:
        w, norm_sq = w * scale, norm_sq * scale * scale
    return w, norm_sq, scale
