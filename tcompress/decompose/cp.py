"""CP (CANDECOMP/PARAFAC) decomposition by alternating least squares, in torch.

A rank-R CP decomposition writes an order-N tensor as a sum of R rank-one terms::

    W ~ sum_r lambda_r  u_1[:, r] o u_2[:, r] o ... o u_N[:, r]

It is the super-diagonal special case of Tucker (a diagonal core). ALS updates one factor at a
time by least squares, ``U_n = W_(n) KR_{k != n}(U_k) (*_{k != n} U_k^T U_k)^+``; the product
with the Khatri-Rao matrix (MTTKRP) is contracted mode by mode, largest mode first, so no
Khatri-Rao matrix is ever formed. The start is seeded: the leading left singular vectors of each
unfolding where the rank allows, random columns beyond. The iteration budget is ``n_iter`` sweeps
(25 by default), stopping earlier when the error changes by less than ``tol`` between sweeps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tcompress.decompose._grams import block_mode_grams
from tcompress.decompose._norms import check_decomposable
from tcompress.decompose._threads import one_thread
from tcompress.errors import RankError

__all__ = ["CPDecomposition", "CP_ITERATIONS", "cp_als", "cp_to_tensor"]

#: Default number of ALS sweeps.
CP_ITERATIONS = 25


@dataclass
class CPDecomposition:
    """Result of :func:`cp_als`: unit-norm factor columns and their weights.

    Shapes
    ------
    weights : (R,)
    factors[k] : (D_k, R)
    """

    weights: Tensor
    factors: list[Tensor]
    relative_error: float
    errors: list[float] = field(default_factory=list)  # after each sweep


def cp_to_tensor(weights: Tensor, factors: Sequence[Tensor]) -> Tensor:
    """The full tensor of a CP decomposition, as one matrix product of two Khatri-Rao products
    (the modes split where the two sides are most even). Shapes: returns (D_1, ..., D_N)."""
    shape = [u.shape[0] for u in factors]
    split = min(
        range(1, len(factors)),
        key=lambda k: max(math.prod(shape[:k]), math.prod(shape[k:])),
    )
    left = _khatri_rao(factors[:split]) * weights
    right = _khatri_rao(factors[split:])
    return (left @ right.t()).reshape(shape)


def _khatri_rao(factors: Sequence[Tensor]) -> Tensor:
    """Column-wise Kronecker product, first factor slowest. Shapes: (prod D_k, R)."""
    out = factors[0]
    for u in factors[1:]:
        out = (out[:, None, :] * u[None, :, :]).reshape(-1, u.shape[1])
    return out


def _mttkrp(tensor: Tensor, factors: Sequence[Tensor], mode: int) -> Tensor:
    """``W_(mode) KR_{k != mode}(U_k)``, contracting the other modes one at a time, the largest
    first (the first contraction shrinks the tensor most). Shapes: returns (D_mode, R)."""
    others = sorted((k for k in range(tensor.dim()) if k != mode), key=lambda k: -tensor.shape[k])
    first = others[0]
    x = torch.movedim(torch.tensordot(tensor, factors[first], dims=([first], [0])), -1, 0)
    axes = [k for k in range(tensor.dim()) if k != first]  # x's modes after the rank index
    for k in others[1:]:
        at = axes.index(k) + 1
        x = _contract(x, factors[k], at)
        axes.pop(at - 1)
    return x.t()  # (D_mode, R)


def _contract(x: Tensor, u: Tensor, at: int) -> Tensor:
    """Sum mode ``at`` of ``x`` (rank index first) against ``u`` (D, R), rank index kept."""
    shape = [1] * x.dim()
    shape[0], shape[at] = u.shape[1], u.shape[0]
    return (x * u.t().reshape(shape)).sum(at)


def cp_als(
    tensor: Tensor,
    rank: int,
    *,
    n_iter: int = CP_ITERATIONS,
    tol: float = 1e-8,
    seed: int = 0,
) -> CPDecomposition:
    """Rank-``rank`` CP decomposition of ``tensor`` by ALS (float64 Gram solves).

    Parameters
    ----------
    tensor : Tensor
        Order N >= 2, float32 or float64, finite.
    rank : int
        Number of rank-one terms, >= 1.
    n_iter : int
        ALS sweeps at most (each updates every factor once).
    tol : float
        Stop when the relative error changes by less than this between sweeps.
    seed : int
        Seed of the random columns of the start.
    """
    check_decomposable(tensor)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise RankError(f"CP rank is {rank!r}; expected an integer >= 1")
    dtype, work = tensor.dtype, tensor.detach().contiguous()
    n = work.dim()
    generator = torch.Generator().manual_seed(seed)
    grams = block_mode_grams(work, range(n))
    factors = []
    for k in range(n):
        size = work.shape[k]
        # A start for ALS only: its accuracy in the small directions does not matter, so the
        # float32 Gram is not refined (the final error is measured in float64 when small).
        with one_thread():
            values, vectors = torch.linalg.eigh(grams[k].double())
        leading = vectors.flip(-1)[:, : min(rank, size)]
        if rank > size:
            extra = torch.randn(size, rank - size, generator=generator, dtype=torch.float64)
            leading = torch.cat([leading, extra / extra.norm(dim=0)], 1)
        factors.append(leading.to(work.device, dtype))
    norm_sq = float(work.double().square().sum())
    weights = torch.ones(rank, dtype=dtype, device=work.device)
    errors: list[float] = []
    for _ in range(n_iter):
        for k in range(n):
            product = torch.ones(rank, rank, dtype=torch.float64, device=work.device)
            for j in range(n):
                if j != k:
                    product *= (factors[j].t() @ factors[j]).double()
            m = _mttkrp(work, factors, k).double()
            with one_thread():
                solved = torch.linalg.lstsq(product, m.t(), rcond=None).solution.t()
            weights = solved.norm(dim=0).clamp_min(1e-300)
            factors[k] = (solved / weights).to(dtype)
        error = _relative_error(work, weights.to(dtype), factors, norm_sq, m, k)
        errors.append(error)
        if len(errors) > 1 and abs(errors[-2] - errors[-1]) < tol:
            break
    weights = weights.to(dtype)
    final = errors[-1] if errors else 1.0
    if final < 1e-4:  # the norm identity cancels: measure the small error directly
        difference = cp_to_tensor(weights.double(), [u.double() for u in factors]) - work.double()
        final = float(difference.norm()) / max(norm_sq, 1e-300) ** 0.5
    return CPDecomposition(weights, factors, final, errors)


def _relative_error(work, weights, factors, norm_sq, last_mttkrp, last_mode) -> float:
    """||W - W_hat|| / ||W|| from ||W||^2 - 2 <W, W_hat> + ||W_hat||^2 (float64)."""
    u = factors[last_mode].double() * weights.double()
    inner = float((last_mttkrp * u).sum())
    gram = torch.ones(len(weights), len(weights), dtype=torch.float64, device=work.device)
    for f in factors:
        gram *= (f.t() @ f).double()
    w = weights.double()
    model_sq = float(w @ gram @ w)
    return max(norm_sq - 2 * inner + model_sq, 0.0) ** 0.5 / max(norm_sq, 1e-300) ** 0.5
