"""Tensor-ring T-Net: W[i_1, ..., i_N] = trace(G_1[:, i_1, :] ... G_N[:, i_N, :]), by TR-SVD.

A tensor train whose ends are joined: core k is (R_{k-1}, D_k, R_k) with R_0 = R_N, the ring bond
(:mod:`tcompress.decompose.tr`). Ranks: the N bond ranks (R_N, the last, closes the ring between
the last mode and the first), one value for every bond, or ``full`` (the ring bond 1 and the
maximal TT ranks: exact, and then the ring is a train). TR-SVD opens the ring at a mode that can
hold the product of its two bonds; a bond above what the sweep can keep is capped, with a note.
Parameters: sum R_{k-1} D_k R_k. A ratio or energy target gives a ring with bond 1, whose other
bonds are allocated on the TT-SVD error bound as for MPS (a ring with bond 1 is a train); a wider
ring bond is given explicitly. A family of several tensors has one ring per tensor; a target gives
each ring bond 1, its other bonds allocated with every tensor's under one budget.

Factorized form of each layer (modes f_in, f_out, h, w last, the ring bond R_N riding along):
1x1 (f_in -> R_N R_5, per layer, from the left cores G_1..G_5) -> h x w (R_N R_5 -> f_out, shared by
every layer, from the right cores G_6 G_7 G_8). With R_N = 1 this is the MPS layout.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from tcompress.decompose.tr import cap_tr_ranks, tensor_ring, tr_full_ranks, tr_params, tr_to_tensor
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
from tcompress.methods.selection import GroupChoice, RankChoice


class TRTensor(CoreTensor):
    """A tensor ring with trainable cores.

    Shapes
    ------
    cores[k]: (R_{k-1}, D_k, R_k), R_0 = R_N.
    """

    method = "tr"

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(g.shape[2] for g in self.cores)

    def full(self) -> torch.Tensor:
        return tr_to_tensor(list(self.cores))

    def factorized_weights(self, n_grid: int):
        """(R_N R5, f_in, 1, 1) per layer, (f_out, R_N R5, h, w) shared, no 1x1 after."""
        g = n_grid
        cores = list(self.cores)
        # Left part: (R_N, grid..., f_in, R5), the layer's 1x1 conv f_in -> (R_N, R5).
        left = torch.tensordot(chain(cores[:g]), cores[g], dims=([-1], [0]))
        left = torch.movedim(left, 0, -2)  # (grid..., f_in, R_N, R5)
        first = left.flatten(-2).transpose(-1, -2)[..., None, None].contiguous()
        # Right part: (R5, f_out, h, w, R_N), one h x w conv (R_N, R5) -> f_out for every layer.
        right = chain(cores[g + 1 :])
        shared = right.permute(1, 4, 0, 2, 3).reshape(right.shape[1], -1, *right.shape[2:4])
        return per_layer(first, g), constant(shared.contiguous()), none


class TensorRing(TensorMethod):
    name = "tr"
    title = "tensor ring"
    tensor_type = TRTensor
    fixes_ranks = False
    no_sweeps = "TR-SVD has no iterative refinement"
    bonds = True

    def resolve(self, spec: RankSpec, shape, names) -> ResolvedRanks:
        shape = tuple(int(s) for s in shape)
        n = len(shape)
        if spec.full:
            return ResolvedRanks(self.name, tr_full_ranks(shape))
        if spec.named is not None:
            raise RankError(
                f"tensor-ring ranks are {n} bond ranks or one value for all bonds, got "
                f"{spec.shown}; named modes apply to Tucker only"
            )
        values = list(spec.values) * (n if len(spec.values) == 1 else 1)
        if len(values) != n:
            raise RankError(
                f"got {len(values)} tensor-ring bond rank(s) ({spec.shown}); expected {n} bond "
                "ranks (one between each pair of neighbouring modes, the last closing the ring "
                "between the last mode and the first) or one value for all bonds"
            )
        full = (*tr_full_ranks(shape)[:-1], max(shape))
        bonds = [
            check_rank(v, self.rank_name(k, names), full[k], cap=True) for k, v in enumerate(values)
        ]
        ranks, notes = cap_tr_ranks(shape, bonds)
        return ResolvedRanks(self.name, tuple(ranks), tuple(notes))

    def rank_name(self, k: int, names) -> str:
        return f"tensor-ring bond rank {k + 1}"

    def params(self, shape, ranks) -> int:
        return tr_params(shape, ranks)

    def choose(self, W, spec, names, *, ratio, energy, other_params, costs=None) -> RankChoice:
        """A ring with bond 1 is a train: the inner bonds are allocated on the TT-SVD error bound
        (as for MPS), the ring bond is 1; raise it with explicit ranks."""
        if not spec.full:
            raise RankError(
                f"ranks {spec.shown} and a target both given; a target chooses every tensor-ring "
                "bond (the ring bond 1, the others on the TT-SVD bound)"
            )
        from tcompress.methods import get

        train = get("mps").choose(
            W, spec, names, ratio=ratio, energy=energy, other_params=other_params, costs=costs
        )
        return replace(train, method=self.name, ranks=(*train.ranks, 1))

    def data_costs(self, W: torch.Tensor, stats) -> list[list[float]]:
        """The train's bond costs (:meth:`MPS.data_costs <tcompress.methods.mps.MPS.data_costs>`):
        a ratio target gives a ring of bond 1, a train."""
        from tcompress.methods import get

        return get("mps").data_costs(W, stats)

    def choose_groups(
        self, Ws, specs, names, *, ratio, energy, other_params, costs=None
    ) -> GroupChoice:
        """Every group a ring with bond 1, its other bonds allocated with the other groups' on
        the sum of their TT-SVD bounds (as for MPS; on their trains' measured ``costs`` if
        given), under one target."""
        given = next((s for s in specs if not s.full), None)
        if given is not None:
            raise RankError(
                f"ranks {given.shown} and a target both given; a target chooses every "
                "tensor-ring bond (the ring bond 1, the others on the TT-SVD bound)"
            )
        from tcompress.methods import get

        train = get("mps").choose_groups(
            Ws, specs, names, ratio=ratio, energy=energy, other_params=other_params, costs=costs
        )
        rings = tuple(replace(c, method=self.name, ranks=(*c.ranks, 1)) for c in train.choices)
        return replace(train, method=self.name, choices=rings)

    def decompose(self, W, ranks, *, n_iter: int, seed: int) -> Decomposition:
        result = tensor_ring(W, ranks)
        error = float(result.relative_error)
        return Decomposition(TRTensor(list(result.cores)), [error], error)

    def empty(self, shape, ranks) -> TRTensor:
        bonds = [ranks[-1], *ranks]
        return TRTensor([torch.empty(bonds[k], d, bonds[k + 1]) for k, d in enumerate(shape)])

    def random(self, shape, ranks, *, std: float, n_grid: int, generator) -> TRTensor:
        """The cores of :meth:`MPS.random <tcompress.methods.mps.MPS.random>` around the ring
        (R_0 = R_N, :func:`~tcompress.methods._random.random_cores`): the right-orthogonal
        kernel cores leave each value of the ring bond 1/R_N of a kernel's norm, and the trace
        over the R_N rows of the grid cores' product makes it up, so every block kernel has
        squared norm about std^2 times its entries."""
        bonds = (ranks[-1], *ranks)
        cores = random_cores(shape, bonds, std=std, n_grid=n_grid, generator=generator)
        return TRTensor(cores)

    def uniform_ranks(self, r: int, shape) -> tuple[int, ...]:
        """The MPS bonds at ``r`` or below and a ring bond of 1, as a ratio target gives a
        converted tensor ring (:meth:`choose`)."""
        from tcompress.methods import get

        return (*get("mps").uniform_ranks(r, shape), 1)

    def fitted_by(self, summary) -> str:
        if summary.get("ranks"):
            return f"TR-SVD (ring bond {summary['ranks'][-1]})"
        groups = summary.get("groups") or []
        bonds = ", ".join(f"{g['name']} {g['ranks'][-1]}" for g in groups)
        return f"TR-SVD (ring bonds {bonds})"


METHOD = TensorRing()
