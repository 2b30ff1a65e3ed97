"""MPS (tensor-train) T-Net: W[i_1, ..., i_N] = G_1[:, i_1, :] ... G_N[:, i_N, :], by TT-SVD.

Ranks: the N-1 bond ranks, one value for every bond, or ``full``; a bond above what TT-SVD can
keep (its maximal TT rank, or the previous bond times its mode's size) is capped, and the cap is
reported. Parameters: sum R_{k-1} D_k R_k with R_0 = R_N = 1.

Factorized form of each layer: 1x1 (f_in -> R5, per layer, from the left cores G_1..G_5) -> h x w
(R5 -> f_out, shared by every layer, from the right cores G_6 G_7 G_8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tcompress.decompose import max_tt_ranks, tensor_train, tt_to_tensor
from tcompress.decompose.spectra import bond_spectra
from tcompress.errors import RankError
from tcompress.methods._random import random_cores
from tcompress.methods.base import (
    CoreTensor,
    Decomposition,
    RankSpec,
    ResolvedRanks,
    TensorMethod,
    chain,
    check_rank,
    constant,
    none,
    per_layer,
)


class MPSTensor(CoreTensor):
    """W[i_1, ..., i_N] = G_1[:, i_1, :] ... G_N[:, i_N, :] with trainable cores.

    Shapes
    ------
    cores[k]: (R_{k-1}, D_k, R_k), R_0 = R_N = 1.
    """

    method = "mps"

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(g.shape[2] for g in self.cores[:-1])

    def full(self) -> torch.Tensor:
        return tt_to_tensor(list(self.cores))

    def factorized_weights(self, n_grid: int):
        """(R5, f_in, 1, 1) per layer, (f_out, R5, h, w) shared, no 1x1 after."""
        g = n_grid
        cores = list(self.cores)
        # Left part G_1..G_5 gives a per-layer 1x1 conv f_in -> R5 (as (R5, f_in, 1, 1)).
        left = chain(cores[:g])[0]  # (stack, depth, pathway, block, R4)
        first = torch.tensordot(left, cores[g], dims=([-1], [0]))  # (..., f_in, R5)
        first = first.transpose(-1, -2)[..., None, None].contiguous()
        # Right part G_6 G_7 G_8 is one h x w conv R5 -> f_out shared by every layer.
        right = chain(cores[g + 1 :])[..., 0]  # (R5, f_out, h, w)
        shared = right.transpose(0, 1).contiguous()
        return per_layer(first, g), constant(shared), none


def mps_params(shape: Sequence[int], bonds: Sequence[int]) -> int:
    """sum R_{k-1} D_k R_k with R_0 = R_N = 1."""
    r = (1, *bonds, 1)
    return sum(r[k] * d * r[k + 1] for k, d in enumerate(shape))


def cap_bonds(bonds: Sequence[int], shape: Sequence[int]) -> list[int]:
    """Bonds that TT-SVD can realise: bond k (between modes k and k+1) is at most bond k-1 times
    D_k and at most D_{k+1} times bond k+1."""
    out = list(bonds)
    out[0] = min(out[0], shape[0])
    for k in range(1, len(out)):
        out[k] = min(out[k], out[k - 1] * shape[k])
    out[-1] = min(out[-1], shape[-1])
    for k in range(len(out) - 2, -1, -1):
        out[k] = min(out[k], out[k + 1] * shape[k + 1])
    return out


class MPS(TensorMethod):
    name = "mps"
    title = "MPS (tensor train)"
    tensor_type = MPSTensor
    no_sweeps = "TT-SVD has no iterative refinement"
    bonds = True

    def resolve(self, spec: RankSpec, shape, names) -> ResolvedRanks:
        shape = tuple(int(s) for s in shape)
        limits = max_tt_ranks(shape)
        n = len(limits)
        if spec.full:
            return ResolvedRanks(self.name, limits)
        if spec.named is not None:
            raise RankError(
                f"MPS ranks are {n} bond ranks or one value for all bonds, got {spec.shown}; "
                "named modes apply to Tucker only"
            )
        values = list(spec.values)
        if len(values) == 1:
            values = values * n
        if len(values) != n:
            raise RankError(
                f"got {len(values)} MPS bond rank(s) ({spec.shown}); expected {n} bond ranks "
                "(one between each pair of neighbouring modes) or one value for all bonds"
            )
        bonds, notes = [], []
        for k, v in enumerate(values):
            bond = check_rank(v, self.rank_name(k, names), limits[k], cap=True)
            # TT-SVD can keep at most min(rows, columns) of the k-th unfolding: rows are the
            # previous bond times this mode's size, columns the product of the remaining modes.
            limit = min(limits[k], (bonds[-1] if bonds else 1) * shape[k])
            if bond > limit:
                why = "its maximal TT rank" if limit == limits[k] else f"bond {k} x {shape[k]}"
                notes.append(f"bond {k + 1}: {bond} capped at {limit} ({why})")
                bond = limit
            bonds.append(bond)
        return ResolvedRanks(self.name, tuple(bonds), tuple(notes))

    def rank_name(self, k: int, names) -> str:
        return f"MPS bond rank {k + 1}"

    def limits(self, shape) -> tuple[int, ...]:
        return max_tt_ranks(shape)

    def cap(self, ranks, shape) -> list[int]:
        return cap_bonds(ranks, shape)

    def params(self, shape, ranks) -> int:
        return mps_params(shape, ranks)

    def spectra(self, W: torch.Tensor) -> list[torch.Tensor]:
        return bond_spectra(W)

    def data_costs(self, W: torch.Tensor, stats) -> list[list[float]]:
        """Each bond truncated alone, its cost measured on the data: W's k-th sequential
        unfolding (modes 1..k against the rest) kept to its leading r singular directions,
        which is what TT-SVD keeps at that bond with every other bond full."""
        from tcompress.passes.data_aware import truncation_costs

        work = W.detach().double()
        shape = tuple(work.shape)
        truncations = []
        for k, limit in enumerate(self.limits(shape), start=1):
            matrix = work.reshape(math.prod(shape[:k]), -1)
            if matrix.shape[0] <= matrix.shape[1]:
                u = torch.linalg.svd(matrix, full_matrices=False)[0]

                def keep(r, u=u, matrix=matrix):
                    return (u[:, :r] @ (u[:, :r].T @ matrix)).reshape(shape)
            else:
                vh = torch.linalg.svd(matrix, full_matrices=False)[2]

                def keep(r, vh=vh, matrix=matrix):
                    return ((matrix @ vh[:r].T) @ vh[:r]).reshape(shape)

            truncations.append((limit, keep))
        return truncation_costs(W, stats, truncations)

    def decompose(self, W, ranks, *, n_iter: int, seed: int) -> Decomposition:
        result = tensor_train(W, ranks)
        error = float(result.relative_error)
        return Decomposition(MPSTensor(list(result.cores)), [error], error)

    def empty(self, shape, ranks) -> MPSTensor:
        bonds = [1, *ranks, 1]
        return MPSTensor([torch.empty(bonds[k], d, bonds[k + 1]) for k, d in enumerate(shape)])

    def random(self, shape, ranks, *, std: float, n_grid: int, generator) -> MPSTensor:
        """Cores whose every block kernel has squared norm std^2 times its entries
        (:func:`~tcompress.methods._random.random_cores`): the kernel cores right-orthogonal,
        every slice of a grid core a norm-preserving random matrix times s, with
        s^n_grid = std * sqrt(f_in f_out h w). A train has no favoured entry, so every entry of
        W then has variance std^2."""
        bonds = (1, *ranks, 1)
        cores = random_cores(shape, bonds, std=std, n_grid=n_grid, generator=generator)
        return MPSTensor(cores)

    def fitted_by(self, summary) -> str:
        return "TT-SVD"


METHOD = MPS()
