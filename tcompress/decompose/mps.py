"""Matrix-product-state (tensor-train) decomposition by TT-SVD (Oseledets, 2011).

A tensor train writes an order-N tensor as a chain of order-3 cores::

    W[i_1, ..., i_N] ~ G_1[:, i_1, :] @ G_2[:, i_2, :] @ ... @ G_N[:, i_N, :]

with ``G_k`` of shape ``(R_{k-1}, D_k, R_k)`` and ``R_0 = R_N = 1``. TT-SVD sweeps left to right:
the remainder (initially ``W``) is reshaped to ``(R_{k-1} D_k) x (D_{k+1} ... D_N)``, its leading
``R_k`` left singular vectors become core ``k`` and their projection ``U^T M`` is the next
remainder. Every core but the last is left-orthogonal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tcompress.decompose._grams import leading_left_basis
from tcompress.decompose._norms import (
    balanced,
    check_decomposable,
    relative_error_from_energy,
    squared_distance,
    squared_norm,
)
from tcompress.decompose._threads import one_thread
from tcompress.errors import RankError

__all__ = ["MPSDecomposition", "max_tt_ranks", "tensor_train", "tt_to_tensor"]


@dataclass
class MPSDecomposition:
    """Result of :func:`tensor_train`.

    Attributes
    ----------
    cores : list of Tensor
        The TT cores, in the dtype and on the device of the input; all but the last are
        left-orthogonal (``G_k`` reshaped to ``(R_{k-1} D_k, R_k)`` has orthonormal columns).
    relative_error : float
        ``||W - W_hat|| / ||W||`` (float64 arithmetic).

    Shapes
    ------
    cores[k] : (R_{k-1}, D_k, R_k), with R_0 = R_N = 1
    """

    cores: list[Tensor]
    relative_error: float


def max_tt_ranks(shape: Sequence[int]) -> tuple[int, ...]:
    """Largest useful internal TT ranks of a shape: the ranks of its sequential unfoldings.

    Parameters
    ----------
    shape : sequence of int
        ``(D_1, ..., D_N)``.

    Returns
    -------
    tuple of int
        ``N - 1`` values, ``R_k = min(D_1 ... D_k, D_{k+1} ... D_N)`` for ``k = 1 .. N-1``.

    Shapes
    ------
    shape : (N,)
    return : (N - 1,)
    """
    dims = [int(d) for d in shape]
    return tuple(min(math.prod(dims[:k]), math.prod(dims[k:])) for k in range(1, len(dims)))


def tt_to_tensor(cores: Sequence[Tensor]) -> Tensor:
    """Contract a tensor train into the full tensor. Differentiable with respect to every core.

    Parameters
    ----------
    cores : sequence of Tensor
        TT cores with matching bond dimensions and ``R_0 = R_N = 1``.

    Returns
    -------
    Tensor
        The full tensor, contiguous, in the dtype and on the device of the cores.

    Shapes
    ------
    cores[k] : (R_{k-1}, D_k, R_k)
    return : (D_1, ..., D_N)
    """
    if not cores:
        raise RankError("cannot rebuild a tensor train without cores")
    if cores[0].shape[0] != 1 or cores[-1].shape[-1] != 1:
        raise RankError(
            f"boundary ranks must be 1, got R_0 = {cores[0].shape[0]} and "
            f"R_N = {cores[-1].shape[-1]}"
        )
    for k in range(1, len(cores)):
        if cores[k].shape[0] != cores[k - 1].shape[2]:
            raise RankError(
                f"core {k} has left rank {cores[k].shape[0]} but core {k - 1} has right rank "
                f"{cores[k - 1].shape[2]}"
            )
    shape = [c.shape[1] for c in cores]
    # Left interface: rows index (i_1, ..., i_k) row-major, columns the bond R_k.
    left = cores[0].reshape(shape[0], cores[0].shape[2])
    for core in cores[1:]:
        r_in, d, r_out = core.shape
        # (rows, R_{k-1}) @ (R_{k-1}, D_k R_k): appending i_k to the row index.
        left = (left @ core.reshape(r_in, d * r_out)).reshape(-1, r_out)
    return left.reshape(shape).contiguous()


def _check_input(tensor: Tensor, ranks: Sequence[int]) -> tuple[int, ...]:
    check_decomposable(tensor)
    ranks = tuple(int(r) for r in ranks)
    if len(ranks) != tensor.ndim - 1:
        raise RankError(
            f"got {len(ranks)} TT ranks {ranks} for a tensor of order {tensor.ndim}; expected "
            f"{tensor.ndim - 1} internal bond ranks (R_1 .. R_{tensor.ndim - 1})"
        )
    bounds = max_tt_ranks(tensor.shape)
    for k, (r, top) in enumerate(zip(ranks, bounds, strict=True)):
        if not 1 <= r <= top:
            raise RankError(
                f"TT rank {r} for bond {k + 1} (between modes {k} and {k + 1}) must be between "
                f"1 and {top} for shape {tuple(tensor.shape)}"
            )
    return ranks


def _split(matrix: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """One TT-SVD step: ``matrix ~ U @ (U^T @ matrix)``, ``U`` the leading left singular vectors.

    Parameters
    ----------
    matrix : Tensor
        The unfolding of the current remainder.
    rank : int
        Target rank; capped at ``min(m, n)``.

    Returns
    -------
    basis : Tensor
        ``U``, orthonormal columns (the left-orthogonal core, flattened).
    remainder : Tensor
        ``U^T @ matrix``, passed on to the next step.

    Shapes
    ------
    matrix : (m, n)
    basis : (m, r), r = min(rank, m, n)
    remainder : (r, n)
    """
    m, n = matrix.shape
    rank = min(rank, m, n)
    if rank == m:
        # No truncation and m <= n: U = I is a valid choice (the identity is orthogonal and the
        # projection keeps everything), and the remainder is the matrix itself.
        return torch.eye(m, dtype=matrix.dtype, device=matrix.device), matrix
    if rank == n:
        # No truncation and m > n: any orthonormal basis of the column space is exact;
        # Householder QR gives one (orthonormal even if the matrix is rank-deficient).
        with one_thread():
            q, r = torch.linalg.qr(matrix)
        return q, r
    # Truncation: the leading left singular vectors from the Gram of the short side (m <= n:
    # eigenvectors of M M^T; m > n: the Q factor of M V with V the eigenvectors of M^T M), the
    # split checked against the Gram's rounding and refined in float64 where it is hidden
    # (tcompress.decompose._grams.leading_left_basis). The remainder is the projection U^T M, so
    # that U U^T M is the orthogonal projection of M whatever the rounding in U.
    basis = leading_left_basis(matrix, rank)
    return basis, basis.T @ matrix


def tensor_train(tensor: Tensor, ranks: Sequence[int]) -> MPSDecomposition:
    """Tensor-train (MPS) decomposition by TT-SVD.

    Parameters
    ----------
    tensor : Tensor
        The tensor ``W``, float32 or float64, any device, order ``N >= 1``.
    ranks : sequence of int
        The ``N - 1`` internal bond ranks ``(R_1, ..., R_{N-1})``, each at most
        ``max_tt_ranks(tensor.shape)[k]``. A rank larger than the rank the previous truncations
        leave available (``R_{k-1} D_k`` or ``D_{k+1} ... D_N``) is reduced to it, as in TT-SVD.

    Returns
    -------
    MPSDecomposition
        The cores and the relative error.

    Shapes
    ------
    tensor : (D_1, ..., D_N)
    cores[k] : (R_{k-1}, D_k, R_k), with R_0 = R_N = 1

    Raises
    ------
    RankError
        If the number of ranks is not ``N - 1`` or a rank is outside ``[1, max_tt_ranks]``.
    DecompositionError
        If ``tensor`` is not a float32 or float64 tensor.

    Notes
    -----
    Steps that do not truncate need no SVD: with ``R_k = R_{k-1} D_k`` the core is an identity and
    the remainder is unchanged; with ``R_k`` equal to the number of columns a QR is exact. A
    truncating step takes eigenvectors of the Gram matrix of the smaller side of the unfolding,
    accumulated in the input dtype; where the truncation falls below what that Gram resolves
    (singular values under about 3e-4 sigma_1 in float32), the step is redone from a float64
    Gram (float64 input: an SVD), so every truncation is as accurate as an SVD's
    (:func:`tcompress.decompose._grams.leading_left_basis`). The left-orthogonal cores make
    ``W_hat`` an orthogonal projection of ``W`` with ``||W_hat||`` the norm of the last core, so
    the relative error is ``sqrt(||W||^2 - ||G_N||^2) / ||W||`` in float64, or, when the error is
    too small for that difference to be accurate, measured on a float64 reconstruction.
    """
    ranks = _check_input(tensor, ranks)
    shape = tuple(tensor.shape)
    with torch.no_grad():
        w, norm_sq, scale = balanced(tensor)
        cores: list[Tensor] = []
        remainder = w
        r_prev = 1
        for k, rank in enumerate(ranks):
            basis, remainder = _split(remainder.reshape(r_prev * shape[k], -1), rank)
            r_next = basis.shape[1]
            cores.append(basis.reshape(r_prev, shape[k], r_next))
            r_prev = r_next
        last = remainder.reshape(r_prev, shape[-1], 1).contiguous()
        if last.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr():
            # No step changed the remainder (every bond was an identity): do not alias the input.
            last = last.clone()
        cores.append(last)
        error = relative_error_from_energy(norm_sq, squared_norm(cores[-1]), w.dtype)
        if error is None:
            # Small error: measured on the cores' reconstruction in float64 (a float32 one
            # would add its own rounding, about 1e-7 relative, to an error of that order).
            rebuilt = tt_to_tensor([core.to(torch.float64) for core in cores])
            error = (squared_distance(w, rebuilt) / norm_sq) ** 0.5
        if scale != 1.0:
            cores[-1] = cores[-1] / scale
    return MPSDecomposition(cores=cores, relative_error=error)
