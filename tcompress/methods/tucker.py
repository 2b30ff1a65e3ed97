"""Tucker T-Net: W = G x_1 U_1 ... x_N U_N, initialised by HOSVD, optionally refined by HOOI.

Ranks: one per mode (``"4,4,3,2,64,64,3,3"``, ``full`` or ``-`` keeping a mode), named overrides
(``"f_in=64,f_out=64"``, the other modes full) or ``full``. Parameters: prod(R_k) + sum D_k R_k.

Factorized form of each layer: 1x1 (f_in -> R5, U5^T, shared) -> h x w (R5 -> R6, the layer's core
G_l x7 U7 x8 U8, per layer) -> 1x1 (R6 -> f_out, U6, shared).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from tcompress.decompose import tucker, tucker_to_tensor
from tcompress.decompose.spectra import mode_spectra
from tcompress.errors import RankError
from tcompress.methods._random import balanced_orthonormal
from tcompress.methods.base import (
    Decomposition,
    FactorTensor,
    RankSpec,
    ResolvedRanks,
    TensorMethod,
    check_rank,
    constant,
    mode_dot,
    none,
    per_layer,
)


class TuckerTensor(FactorTensor):
    """W = G x_1 U_1 ... x_N U_N with trainable core and factors.

    Shapes
    ------
    core: (R_1, ..., R_N); factors[k]: (D_k, R_k).
    """

    method = "tucker"

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(self.core.shape)

    def full(self) -> torch.Tensor:
        return tucker_to_tensor(self.core, list(self.factors))

    def layer_cores(self, n_grid: int, last_modes: Sequence[int]) -> torch.Tensor:
        """The core contracted with the grid factors (modes ``0..n_grid-1``) and the factors of
        ``last_modes``: one small core per convolution.

        Shapes
        ------
        returns: (*grid sizes, R_{n_grid}, ..., D_k for k in last_modes ...).
        """
        x = self.core
        for k in [*range(n_grid), *last_modes]:
            x = mode_dot(x, self.factors[k], k)
        return x

    def reconstructed_weights(self, n_grid: int):
        # Rebuild W with f_in and f_out already swapped (a view of the core, the two factors
        # exchanged) instead of transposing the rebuilt W: one W-sized copy less per step.
        g = n_grid
        factors = list(self.factors)
        factors[g], factors[g + 1] = factors[g + 1], factors[g]
        kernels = tucker_to_tensor(self.core.transpose(g, g + 1), factors)
        return none, per_layer(kernels, g), none

    def factorized_weights(self, n_grid: int):
        """(R5, f_in, 1, 1) shared, (R6, R5, h, w) per layer, (f_out, R6, 1, 1) shared."""
        g = n_grid
        u_in, u_out = self.factors[g], self.factors[g + 1]
        # Per-layer cores G_l x_7 U_7 x_8 U_8, laid out as Conv2d kernels (R6, R5, h, w).
        cores = self.layer_cores(g, (g + 2, g + 3)).transpose(g, g + 1).contiguous()
        first = u_in.t()[:, :, None, None]  # 1x1 conv f_in -> R5, shared by every layer
        last = u_out[:, :, None, None]  # 1x1 conv R6 -> f_out, shared by every layer
        return constant(first), per_layer(cores, g), constant(last)


def tucker_params(shape: Sequence[int], ranks: Sequence[int]) -> int:
    """prod(R_k) + sum(D_k R_k)."""
    return math.prod(ranks) + sum(d * r for d, r in zip(shape, ranks))


class Tucker(TensorMethod):
    name = "tucker"
    title = "Tucker"
    tensor_type = TuckerTensor
    sweeps = "HOOI sweeps"
    per_mode = True
    enumerate_small_modes = True
    takes_grams = True

    def resolve(self, spec: RankSpec, shape, names) -> ResolvedRanks:
        shape, names = tuple(int(s) for s in shape), tuple(names)
        if spec.full:
            return ResolvedRanks(self.name, shape)
        values = spec.by_mode(names)
        if len(values) != len(shape):
            raise RankError(
                f"got {len(values)} rank(s) ({spec.shown}); expected {len(shape)} Tucker ranks, "
                f"one per mode ({', '.join(names)})"
            )
        ranks = tuple(
            check_rank(v, self.rank_name(k, names), shape[k]) for k, v in enumerate(values)
        )
        return ResolvedRanks(self.name, ranks)

    def rank_name(self, k: int, names) -> str:
        return f"rank of mode {names[k]}"

    def fixed_entries(self, spec: RankSpec, names) -> list:
        return spec.by_mode(tuple(names))

    def limits(self, shape) -> tuple[int, ...]:
        return tuple(int(s) for s in shape)

    def params(self, shape, ranks) -> int:
        return tucker_params(shape, ranks)

    def spectra(self, W: torch.Tensor) -> list[torch.Tensor]:
        return mode_spectra(W)

    def data_costs(self, W: torch.Tensor, stats) -> list[list[float]]:
        """Each mode truncated alone on its HOSVD factor, its cost measured on the data."""
        from tcompress.passes.data_aware import mode_costs

        return mode_costs(W, stats, tucker(W.float(), tuple(W.shape)).factors)

    def decompose(self, W, ranks, *, n_iter: int, seed: int, grams=None) -> Decomposition:
        result = tucker(W, ranks, n_iter=n_iter, grams=grams)
        tensor = TuckerTensor(result.core, list(result.factors))
        return Decomposition(
            tensor, [float(e) for e in result.errors], float(result.relative_error)
        )

    def balance(self, tensor: TuckerTensor) -> bool:
        """Every factor scaled by sqrt(D_k / R_k) (the HOSVD's orthonormal columns become rows of
        unit mean squared norm, as :meth:`random` draws them) and the core divided by the
        product, prod_k sqrt(D_k / R_k) = sqrt(#W / #core): W is the same, and the core's
        entries have the RMS of the rebuilt W's own instead of sqrt(#W / #core) times it.
        RMSprop moves each entry by about the learning rate a step, so a core at W's scale moves
        W about as fast as the dense network's kernels move (``docs/balance.md``: at 3x on the
        bundled model the 5-minute recipe ends higher from the balanced form). Full-rank modes
        are left as they are: a conversion at full rank stays exact to the bit."""
        with torch.no_grad():
            scale = 1.0
            for u in tensor.factors:
                d, r = u.shape
                if d != r:
                    s = math.sqrt(d / r)
                    u.mul_(s)
                    scale *= s
            if scale != 1.0:
                tensor.core.div_(scale)
        return scale != 1.0

    def empty(self, shape, ranks) -> TuckerTensor:
        return TuckerTensor(torch.empty(ranks), [torch.empty(d, r) for d, r in zip(shape, ranks)])

    def random(self, shape, ranks, *, std: float, n_grid: int, generator) -> TuckerTensor:
        """A Gaussian core of standard deviation ``std``, drawn as a dense kernel is, and
        factors whose rows all have unit norm: sqrt(D_k / R_k) times orthonormal columns with
        rows of equal norm (:func:`~tcompress.methods._random.balanced_orthonormal`). Every
        entry of W, sum_r G[r] prod_k U_k[i_k, r_k], then has variance
        Var(G) prod_k ||U_k[i_k, :]||^2 = std^2, at every index alike, and a block kernel's
        squared norm is a sum of R5 R6 R7 R8 independent terms, close to its expectation.

        The scale sits in the core rather than in the factors (orthonormal factors would need
        a core of std * sqrt(prod D_k / R_k)): RMSprop moves every parameter by about the
        learning rate a step, so a core at the dense kernels' scale moves the kernels about as
        fast as the dense network's own (``docs/scratch.md``)."""
        factors = [
            math.sqrt(d / r) * balanced_orthonormal(d, r, generator, dtype=torch.float64)
            for d, r in zip(shape, ranks)
        ]
        core = std * torch.randn(*ranks, generator=generator, dtype=torch.float64)
        return TuckerTensor(core.float(), [u.float() for u in factors])

    def fitted_by(self, summary: Mapping) -> str:
        refine = summary.get("refine")
        return "HOSVD" + (f" + {refine} HOOI sweep(s)" if refine else "")

    def error_detail(self, summary: Mapping) -> str:
        errors = summary.get("errors") or []
        if len(errors) > 1:
            return f" (HOSVD {errors[0]:.4g} -> after HOOI {errors[-1]:.4g})"
        return super().error_detail(summary)


METHOD = Tucker()
