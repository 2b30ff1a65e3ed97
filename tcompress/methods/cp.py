"""CP T-Net: W = sum_r lambda_r u_1[:, r] o ... o u_N[:, r] (a Tucker tensor with a diagonal
core), fitted by CP-ALS.

Ranks: one rank R, the number of rank-one terms (no ``full``: a CP rank that represents W exactly
is not known). Parameters: R (1 + sum D_k). A ratio target takes the largest R within its budget
(CP has no error bound to allocate on); an energy target does not apply. A family of several
tensors has one rank per tensor; a ratio gives every tensor the same share of its own largest
rank, the largest share within the one budget.

Factorized form of each layer: 1x1 (f_in -> R, U5^T, shared) -> depthwise h x 1 (U7, shared) ->
depthwise 1 x w (U8, shared) -> 1x1 (R -> f_out, U6 scaled by the layer's weights, per layer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from tcompress.decompose.cp import CP_ITERATIONS, cp_als, cp_to_tensor
from tcompress.errors import RankError, param
from tcompress.methods._random import random_signs, unit_columns
from tcompress.methods.base import (
    Decomposition,
    FactorTensor,
    RankSpec,
    ResolvedRanks,
    TensorMethod,
    check_rank,
    constant,
    per_layer,
)
from tcompress.methods.selection import (
    GroupChoice,
    RankChoice,
    largest_uniform,
    largest_uniform_groups,
)


class CPTensor(FactorTensor):
    """W = sum_r lambda_r u_1[:, r] o ... o u_N[:, r] with trainable weights and factors.

    Shapes
    ------
    weights: (R,); factors[k]: (D_k, R).
    """

    method = "cp"

    kernel_name = "weights"

    @property
    def ranks(self) -> tuple[int, ...]:
        return (self.weights.shape[0],)

    def full(self) -> torch.Tensor:
        return cp_to_tensor(self.weights, list(self.factors))

    def factorized_weights(self, n_grid: int):
        """(R, f_in, 1, 1) shared, a pair of depthwise kernels (R, 1, h, 1) and (R, 1, 1, w)
        shared, (f_out, R, 1, 1) per layer (U6 scaled by the layer's weights)."""
        g = n_grid
        u = list(self.factors)
        # Per-layer weights lambda * u1[s] * u2[d] * u3[p] * u4[b]: (stack, depth, ..., R)
        scale = self.weights
        for k in range(g):
            shape = (*([1] * k), -1, *([1] * (g - 1 - k)), u[k].shape[1])
            scale = scale * u[k].reshape(shape)
        last = (scale[..., None, :] * u[g + 1])[..., None, None]  # (..., f_out, R, 1, 1)
        first = u[g].t()[:, :, None, None]
        vertical = u[g + 2].t()[:, None, :, None]
        horizontal = u[g + 3].t()[:, None, None, :]
        pair = (vertical.contiguous(), horizontal.contiguous())
        return constant(first), constant(pair), per_layer(last.contiguous(), g)


def cp_params(shape: Sequence[int], ranks: Sequence[int]) -> int:
    """R (1 + sum D_k): the weights and every factor."""
    return ranks[0] * (1 + sum(shape))


_ONE_RANK = "CP needs one rank, the number of rank-one terms, e.g. 256"


class CP(TensorMethod):
    name = "cp"
    title = "CP"
    tensor_type = CPTensor
    fixes_ranks = False
    sweeps = "ALS sweeps"

    def resolve(self, spec: RankSpec, shape, names) -> ResolvedRanks:
        if spec.full or spec.named is not None or len(spec.values) != 1 or spec.values[0] is None:
            raise RankError(f"{_ONE_RANK}; got {spec.shown}")
        rank = check_rank(spec.values[0], "CP rank", math.prod(shape), cap=True)
        return ResolvedRanks(self.name, (rank,))

    def params(self, shape, ranks) -> int:
        return cp_params(shape, ranks)

    def choose(self, W, spec, names, *, ratio, energy, other_params, costs=None) -> RankChoice:
        _check_target(spec, ratio)
        shape = tuple(W.shape)
        top = max(1, math.prod(shape) // (1 + sum(shape)))
        return largest_uniform(self, shape, ratio, other_params, lambda r: (r,), top)

    def choose_groups(
        self, Ws, specs, names, *, ratio, energy, other_params, costs=None
    ) -> GroupChoice:
        """One rank per group, no bound to allocate on: every group takes the same share of its
        own largest rank (the rank whose CP holds as many parameters as its tensor), the largest
        share that fits the ratio's one budget
        (:func:`~tcompress.methods.selection.largest_uniform_groups`)."""
        _check_target(next((s for s in specs if not s.full), RankSpec()), ratio)
        shapes = [tuple(W.shape) for W in Ws]
        tops = [max(1, math.prod(shape) // (1 + sum(shape))) for shape in shapes]
        return largest_uniform_groups(self, shapes, ratio, other_params, lambda r: (r,), tops)

    def decompose(self, W, ranks, *, n_iter: int, seed: int) -> Decomposition:
        result = cp_als(W, ranks[0], n_iter=n_iter or CP_ITERATIONS, seed=seed)
        tensor = CPTensor(result.weights, list(result.factors))
        return Decomposition(
            tensor, [float(e) for e in result.errors], float(result.relative_error)
        )

    def empty(self, shape, ranks) -> CPTensor:
        return CPTensor(torch.empty(ranks[0]), [torch.empty(d, ranks[0]) for d in shape])

    def random(self, shape, ranks, *, std: float, n_grid: int, generator) -> CPTensor:
        """Every weight ``std`` (the dense kernels' scale, as Tucker's core) and factors whose
        entries have mean square R^(-1/N): on the grid modes +-R^(-1/(2N)) at random (every
        layer's R coefficients prod_k u_k[i_k, r] then have the same size), on the others
        Gaussian columns of that norm per entry. An entry of W sums R uncorrelated terms of
        variance std^2 prod_k E u_k[i_k, r]^2 = std^2 / R: std^2 in all."""
        (rank,) = ranks
        n = len(shape)
        entry = rank ** (-1 / (2 * n))  # the factors' root-mean-square entry
        factors = [
            math.sqrt(d)
            * entry
            * (random_signs if k < n_grid else unit_columns)(d, rank, generator)
            for k, d in enumerate(shape)
        ]
        weights = torch.full((rank,), std, dtype=torch.float32)
        return CPTensor(weights, [u.float() for u in factors])

    def uniform_ranks(self, r: int, shape) -> tuple[int, ...]:
        return (r,)

    def fitted_by(self, summary: Mapping) -> str:
        sweeps = f"CP-ALS ({len(summary.get('errors') or [])} sweeps)"
        if summary.get("ranks"):
            return f"{sweeps}, rank {summary['ranks'][0]}"
        groups = summary.get("groups") or []
        return f"{sweeps}, ranks " + ", ".join(f"{g['name']} {g['ranks'][0]}" for g in groups)


def _check_target(spec: RankSpec, ratio) -> None:
    """A target CP can take: a ratio, no rank given with it."""
    if ratio is None:
        raise RankError(
            "an energy target needs a method with an error bound (tucker or mps); give cp "
            f"{param('ranks')} or {param('ratio')}"
        )
    if not spec.full:
        raise RankError(
            f"ranks {spec.shown} and a ratio both given; CP's one rank is chosen whole by the ratio"
        )


METHOD = CP()
