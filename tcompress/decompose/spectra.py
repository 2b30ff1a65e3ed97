"""Spectra of a tensor's unfoldings: what the Tucker and tensor-train error bounds are made of.

The spectra come from Gram matrices accumulated in the tensor's dtype. A float32 Gram carries
rounding of about eps32 * lambda_max in every eigenvalue, so its small eigenvalues (singular values
below about 3e-4 sigma_1) are noise, and so would be the error bounds of truncations among them.
Where the smallest eigenvalue falls below what the Gram resolves (the margin of
:mod:`tcompress.decompose._grams`), that Gram is accumulated again in float64 (for float64 data:
the singular values come from an SVD of the unfolding).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from tcompress.decompose._grams import _RESOLVED_MARGIN, block_mode_grams, gram_columns
from tcompress.decompose._threads import one_thread

__all__ = ["bond_spectra", "mode_spectra"]


def mode_spectra(tensor: Tensor) -> list[Tensor]:
    """Squared singular values of every mode unfolding, descending, float64.

    Shapes: tensor (D_1, ..., D_N); spectra[k] (D_k,).
    """
    work = _work(tensor)
    grams = block_mode_grams(work, range(work.dim()))
    spectra = {k: _descending(grams[k]) for k in range(work.dim())}
    # A mode larger than the rest of the tensor has exact zeros beyond its column count.
    ranks = {k: min(d, work.numel() // max(d, 1)) for k, d in enumerate(work.shape)}
    unresolved = [k for k in spectra if not _resolved(spectra[k], grams[k], ranks[k])]
    if unresolved and work.dtype == torch.float64:
        for k in unresolved:
            values = _svd_spectrum(work.movedim(k, 0).reshape(work.shape[k], -1))
            spectra[k] = torch.cat([values, values.new_zeros(work.shape[k] - values.numel())])
    elif unresolved:
        exact = block_mode_grams(work.to(torch.float64), unresolved)
        for k in unresolved:
            spectra[k] = _descending(exact[k])
    return [spectra[k] for k in range(work.dim())]


def bond_spectra(tensor: Tensor) -> list[Tensor]:
    """Squared singular values of the N-1 sequential unfoldings, descending, float64.

    Shapes: tensor (D_1, ..., D_N); spectra[k] (min(D_1..D_{k+1}, D_{k+2}..D_N),).
    """
    work = _work(tensor)
    shape, spectra = work.shape, []
    for k in range(1, work.dim()):
        rows = math.prod(shape[:k])
        matrix = work.reshape(rows, -1)
        spectra.append(_accurate(matrix, lambda m: m.T if m.shape[0] <= m.shape[1] else m))
    return spectra


def _work(tensor: Tensor) -> Tensor:
    work = tensor.detach().contiguous()
    if work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    return work


def _accurate(matrix: Tensor, side: Callable[[Tensor], Tensor]) -> Tensor:
    """The squared singular values of ``matrix`` from the Gram of ``side(matrix)``'s columns,
    refined where that Gram's rounding hides the smallest."""
    gram = gram_columns(side(matrix))
    values = _descending(gram)
    if _resolved(values, gram, values.numel()):
        return values
    if matrix.dtype == torch.float64:
        return _svd_spectrum(matrix)
    return _descending(gram_columns(side(matrix.to(torch.float64))))


def _resolved(values: Tensor, gram: Tensor, count: int) -> bool:
    """Whether the ``count``-th eigenvalue (the last one that can be nonzero) is above the
    rounding of a Gram accumulated in its dtype."""
    if count < 1:
        return True
    trace = float(gram.diagonal().sum(dtype=torch.float64))
    return float(values[count - 1]) >= _RESOLVED_MARGIN * torch.finfo(gram.dtype).eps * trace


def _svd_spectrum(matrix: Tensor) -> Tensor:
    with one_thread():
        s = torch.linalg.svdvals(matrix.to(torch.float64))
    return s.square().cpu()


def _descending(gram: Tensor) -> Tensor:
    with one_thread():
        values = torch.linalg.eigvalsh(gram.double()).clamp_min(0)
    return values.flip(0).cpu()
