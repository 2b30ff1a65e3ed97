"""Tucker decomposition: truncated higher-order SVD (HOSVD) and higher-order orthogonal iteration.

A Tucker decomposition writes an order-N tensor as a small core multiplied along every mode by a
factor with orthonormal columns::

    W ~ G x_1 U_1 x_2 U_2 ... x_N U_N,    G = W x_1 U_1^T ... x_N U_N^T

HOSVD (De Lathauwer, De Moor & Vandewalle, 2000) takes ``U_k`` as the leading left singular vectors
of the mode-``k`` unfolding of ``W``; HOOI then improves every ``U_k`` in turn given the others.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tcompress.decompose._grams import leading_left_singular_vectors, leading_mode_vectors
from tcompress.decompose._norms import (
    balanced,
    check_decomposable,
    relative_error_from_energy,
    squared_distance,
    squared_norm,
)
from tcompress.decompose._products import multi_mode_product
from tcompress.errors import DecompositionError, RankError

__all__ = ["TuckerDecomposition", "tucker", "tucker_to_tensor"]


@dataclass
class TuckerDecomposition:
    """Result of :func:`tucker`.

    Attributes
    ----------
    core : Tensor
        The core tensor, in the dtype and on the device of the input.
    factors : list of Tensor
        ``factors[k]`` has orthonormal columns (leading singular vectors of the mode-``k``
        unfolding for HOSVD), in the dtype and on the device of the input.
    relative_error : float
        ``||W - W_hat|| / ||W||`` of the returned decomposition (float64 arithmetic).
    errors : list of float
        Relative error after the HOSVD, then after each HOOI sweep (``n_iter + 1`` values,
        non-increasing); ``errors[-1] == relative_error``.

    Shapes
    ------
    core : (R_1, ..., R_N)
    factors[k] : (D_k, R_k)
    """

    core: Tensor
    factors: list[Tensor]
    relative_error: float
    errors: list[float]


def _check_input(tensor: Tensor, ranks: Sequence[int]) -> tuple[int, ...]:
    """Validate dtype and ranks cheaply; return the ranks as a tuple of ints."""
    check_decomposable(tensor)
    ranks = tuple(int(r) for r in ranks)
    if len(ranks) != tensor.ndim:
        raise RankError(
            f"got {len(ranks)} Tucker ranks {ranks} for a tensor of order {tensor.ndim} "
            f"with shape {tuple(tensor.shape)}; expected one rank per mode"
        )
    for k, (r, d) in enumerate(zip(ranks, tensor.shape, strict=True)):
        if not 1 <= r <= d:
            raise RankError(f"Tucker rank {r} for mode {k} (size {d}) must be between 1 and {d}")
    return ranks


def tucker_to_tensor(core: Tensor, factors: Sequence[Tensor]) -> Tensor:
    """Rebuild the full tensor ``G x_1 U_1 ... x_N U_N`` from a Tucker decomposition.

    Differentiable with respect to the core and every factor (used in training forward passes).

    Parameters
    ----------
    core : Tensor
        The core tensor.
    factors : sequence of Tensor
        One factor per mode of the core.

    Returns
    -------
    Tensor
        The reconstructed tensor, contiguous, in the dtype and on the device of the core.

    Shapes
    ------
    core : (R_1, ..., R_N)
    factors[k] : (D_k, R_k)
    return : (D_1, ..., D_N)
    """
    if len(factors) != core.ndim:
        raise RankError(f"got {len(factors)} factors for a core of order {core.ndim}")
    for k, f in enumerate(factors):
        if f.ndim != 2 or f.shape[1] != core.shape[k]:
            raise RankError(
                f"factor {k} has shape {tuple(f.shape)}; expected (D_{k}, {core.shape[k]}) "
                f"to match the core's mode {k}"
            )
    # Contracting mode k of the core with U_k^T (R_k x D_k) expands it from R_k to D_k.
    return multi_mode_product(core, [f.T for f in factors])


def _relative_error(
    tensor: Tensor, core: Tensor, factors: Sequence[Tensor], norm_sq: float
) -> float:
    """``||W - W_hat|| / ||W||`` for a Tucker tensor with orthonormal factors.

    ``W_hat = W x_k (U_k U_k^T)`` is an orthogonal projection of ``W``, so
    ``||W - W_hat||^2 = ||W||^2 - ||W_hat||^2`` and ``||W_hat|| = ||G||`` (orthonormal factors).
    When that difference is too small to trust, the error is measured on the tensor rebuilt in
    float64.
    """
    error = relative_error_from_energy(norm_sq, squared_norm(core), tensor.dtype)
    if error is None:
        # Small error: measured on the reconstruction in float64 (a float32 one would add its
        # own rounding, about 1e-7 relative, to an error of that order).
        rebuilt = tucker_to_tensor(core.to(torch.float64), [f.to(torch.float64) for f in factors])
        error = (squared_distance(tensor, rebuilt) / norm_sq) ** 0.5
    return error


def _hosvd_factors(
    tensor: Tensor, ranks: tuple[int, ...], grams: Mapping[int, Tensor] | None = None
) -> list[Tensor]:
    """Leading left singular vectors of every mode unfolding of ``tensor`` (``grams``: the Grams
    of some modes, already computed)."""
    n = tensor.numel()
    # Modes whose unfolding has at most as many rows as columns use the row Gram; their Grams
    # are computed together so that adjacent small modes share a pass over the tensor, and the
    # modes whose truncation those Grams do not resolve share one float64 pass.
    left = {k: ranks[k] for k, d in enumerate(tensor.shape) if d * d <= n}
    given = {k: g for k, g in (grams or {}).items() if k in left}
    found = leading_mode_vectors(tensor, left, given)
    return [
        found[k] if k in found else leading_left_singular_vectors(tensor, k, ranks[k])
        for k in range(tensor.ndim)
    ]


def tucker(
    tensor: Tensor,
    ranks: Sequence[int],
    *,
    n_iter: int = 0,
    grams: Mapping[int, Tensor] | None = None,
) -> TuckerDecomposition:
    """Tucker decomposition by truncated HOSVD, optionally refined by HOOI sweeps.

    Parameters
    ----------
    tensor : Tensor
        The tensor ``W`` to decompose, float32 or float64, any device, any order ``N >= 1``.
    ranks : sequence of int
        Multilinear ranks ``(R_1, ..., R_N)``, ``1 <= R_k <= D_k``.
    n_iter : int, default 0
        Number of HOOI sweeps after the HOSVD. Each sweep replaces every ``U_k`` in turn by the
        leading left singular vectors of the mode-``k`` unfolding of ``W`` projected on all other
        (current) factors. A sweep that would raise the error (possible only through rounding once
        converged) is rejected and the iteration stops, so ``errors`` never increases.
    grams : mapping of int to Tensor, optional
        ``{k: W_(k) W_(k)^T}``, in the dtype of ``tensor``, for modes whose Gram the caller
        already has or can build faster from another layout of the same entries
        (:func:`tcompress.convert` builds the f_out Gram from the Conv2d kernels W was stacked
        from). The others are computed from ``tensor``; a mode whose truncation the given Gram
        does not resolve gets its float64 Gram from ``tensor`` as any other.

    Returns
    -------
    TuckerDecomposition
        Core, factors, relative error and the error history (``n_iter + 1`` values).

    Shapes
    ------
    tensor : (D_1, ..., D_N)
    core : (R_1, ..., R_N)
    factors[k] : (D_k, R_k)

    Raises
    ------
    RankError
        If the number of ranks differs from the order or a rank is outside ``[1, D_k]``.
    DecompositionError
        If ``tensor`` is not a float32 or float64 tensor, or ``n_iter`` is not a whole number
        >= 0.

    Notes
    -----
    The factors are eigenvectors of the Gram matrix of the smaller side of each unfolding: the Gram
    is accumulated in the input dtype by BLAS on views of the tensor (never a transposed copy of
    the whole tensor) and its eigendecomposition is done on one thread (in float64, or in float32
    for Grams of 512 rows or more, vectors orthonormalised in float64). Where a truncation falls
    below what that Gram resolves (singular values under about 3e-4 sigma_1 in float32), the mode
    gets its Gram again in float64 (float64 input: an SVD of the unfolding), so every truncation
    is as accurate as an SVD's (:func:`tcompress.decompose._grams.leading_mode_vectors`). The
    relative error uses ``||W - W_hat||^2 = ||W||^2 - ||G||^2`` in float64 and falls back to a
    float64 reconstruction when the error is too small for that difference to be accurate.
    """
    ranks = _check_input(tensor, ranks)
    for k, g in (grams or {}).items():
        if not 0 <= k < tensor.ndim or tuple(g.shape) != (tensor.shape[k],) * 2:
            raise DecompositionError(
                f"the Gram given for mode {k} has shape {tuple(g.shape)}; expected a square "
                f"matrix of the mode's size for a tensor of shape {tuple(tensor.shape)}"
            )
    if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral) or n_iter < 0:
        raise DecompositionError(
            f"n_iter is {n_iter!r}; expected a whole number of HOOI sweeps >= 0"
        )
    with torch.no_grad():
        w, norm_sq, scale = balanced(tensor)
        if grams and scale != 1.0:  # W was scaled by an exact power of two
            grams = {k: g * (scale * scale) for k, g in grams.items()}
        factors = _hosvd_factors(w, ranks, grams)
        core = multi_mode_product(w, factors)
        errors = [_relative_error(w, core, factors, norm_sq)]
        for sweep in range(n_iter):
            new_factors = _hooi_sweep(w, factors, ranks)
            new_core = multi_mode_product(w, new_factors)
            new_error = _relative_error(w, new_core, new_factors, norm_sq)
            if new_error > errors[-1]:
                # Converged to rounding level: keep the better decomposition and stop.
                errors.extend([errors[-1]] * (n_iter - sweep))
                break
            factors, core = new_factors, new_core
            errors.append(new_error)
        if scale != 1.0:
            core = core / scale
    return TuckerDecomposition(core=core, factors=factors, relative_error=errors[-1], errors=errors)


def _hooi_sweep(tensor: Tensor, factors: list[Tensor], ranks: tuple[int, ...]) -> list[Tensor]:
    """One HOOI sweep: update every factor in mode order, each given the latest others.

    The update of ``U_k`` needs the Gram of mode ``k`` of ``W x_{j != k} U_j^T``. A factor with
    ``R_j = D_j`` is square orthogonal and ``(W x_j Q^T)_(k) (W x_j Q^T)_(k)^T = W_(k) W_(k)^T``
    for ``j != k``, so only truncated modes need to be projected. Consecutive updates that
    project on the same factors share the projected tensor.
    """
    shape = tuple(tensor.shape)
    factors = list(factors)
    truncated = [j for j in range(len(shape)) if ranks[j] < shape[j]]
    version = [0] * len(shape)
    cached_key: tuple[tuple[int, int], ...] | None = None
    projected = tensor
    for k in range(len(shape)):
        key = tuple((j, version[j]) for j in truncated if j != k)
        if key != cached_key:
            mats = [factors[j] if (j != k and j in truncated) else None for j in range(len(shape))]
            projected = multi_mode_product(tensor, mats) if key else tensor
            cached_key = key
        factors[k] = leading_left_singular_vectors(projected, k, ranks[k])
        version[k] += 1
    return factors
