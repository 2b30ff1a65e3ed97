"""Tensor decompositions: Tucker (HOSVD / HOOI) and tensor train (MPS, TT-SVD)."""

from tcompress.decompose.mps import MPSDecomposition, max_tt_ranks, tensor_train, tt_to_tensor
from tcompress.decompose.tucker import TuckerDecomposition, tucker, tucker_to_tensor

__all__ = [
    "MPSDecomposition",
    "TuckerDecomposition",
    "max_tt_ranks",
    "tensor_train",
    "tt_to_tensor",
    "tucker",
    "tucker_to_tensor",
]
