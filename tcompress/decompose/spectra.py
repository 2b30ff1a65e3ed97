"""Spectra of a tensor's unfoldings: what the Tucker and tensor-train error bounds are made of."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tcompress.decompose._grams import block_mode_grams

__all__ = ["bond_spectra", "mode_spectra"]


def mode_spectra(tensor: Tensor) -> list[Tensor]:
    """Squared singular values of every mode unfolding, descending, float64.

    Shapes: tensor (D_1, ..., D_N); spectra[k] (D_k,).
    """
    work = tensor.detach().contiguous()
    if work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    grams = block_mode_grams(work, range(work.dim()))
    return [_descending(grams[k]) for k in range(work.dim())]


def bond_spectra(tensor: Tensor) -> list[Tensor]:
    """Squared singular values of the N-1 sequential unfoldings, descending, float64.

    Shapes: tensor (D_1, ..., D_N); spectra[k] (min(D_1..D_{k+1}, D_{k+2}..D_N),).
    """
    work = tensor.detach().contiguous()
    if work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    shape, spectra = work.shape, []
    for k in range(1, work.dim()):
        rows = math.prod(shape[:k])
        matrix = work.reshape(rows, -1)
        gram = matrix @ matrix.T if rows <= matrix.shape[1] else matrix.T @ matrix
        spectra.append(_descending(gram))
    return spectra


def _descending(gram: Tensor) -> Tensor:
    values = torch.linalg.eigvalsh(gram.double()).clamp_min(0)
    return values.flip(0).cpu()
