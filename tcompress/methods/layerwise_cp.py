"""Layer-wise CP (Lebedev et al. 2015): every kernel K (f_out, f_in, h, w) by its own CP-ALS.

Ranks: one CP rank R (rank-one terms per layer); ``full`` (and any R above it, capped with a note)
is min(f_in, f_out) h w, where the exact decomposition sum_{i,y,x} e_i o K[:, i, y, x] o e_y o e_x
is used instead of ALS. Chain: 1x1 (f_in -> R) -> depthwise h x 1 -> depthwise 1 x w -> 1x1
(R -> f_out); the weights spread evenly over the four factors.
"""

from __future__ import annotations

import torch
from torch import nn

from tcompress.decompose.cp import CP_ITERATIONS, cp_als
from tcompress.methods._layers import OneRankMethod, conv, joined_geometry


class LayerwiseCP(OneRankMethod):
    name = "layerwise-cp"
    title = "CP (ALS) of every block convolution"
    rank_names = "R"
    rank_what = "layerwise-cp rank R"
    rank_expected = "one CP rank R (rank-one terms per layer)"
    caps = True
    sweeps = "ALS sweeps"

    def exact(self, shape) -> int:
        # sum over (i, y, x) of e_i o K[:, i, y, x] o e_y o e_x: every kernel is exactly rank f h w
        f_out, f_in, h, w = shape
        return min(f_in, f_out) * h * w

    def params(self, shape, ranks) -> int:
        """R (f_in + f_out + h + w) (the weights folded into the factors)."""
        f_out, f_in, h, w = shape
        return ranks[0] * (f_in + f_out + h + w)

    def skeleton(self, ranks, geometry: nn.Conv2d, *, device=None, dtype=None) -> nn.Sequential:
        """(R, f_in, 1, 1), (R, 1, h, 1), (R, 1, 1, w), (f_out, R, 1, 1)."""
        f_in, f_out = geometry.in_channels, geometry.out_channels
        h, w = geometry.kernel_size
        opts = {"device": device, "dtype": dtype}
        r = ranks[0]
        return nn.Sequential(
            conv(f_in, r, (1, 1), **opts),
            conv(r, r, (h, 1), geometry, axis=0, groups=r, **opts),
            conv(r, r, (1, w), geometry, axis=1, groups=r, **opts),
            conv(r, f_out, (1, 1), bias=geometry.bias is not None, **opts),
        )

    def kernel(self, layers: nn.Sequential) -> torch.Tensor:
        first, vertical, horizontal, last = layers
        return torch.einsum(
            "or,ry,rx,ri->oiyx",
            last.weight[..., 0, 0],
            vertical.weight[:, 0, :, 0],
            horizontal.weight[:, 0, 0, :],
            first.weight[..., 0, 0],
        )

    def geometry(self, layers: nn.Sequential):
        return joined_geometry(layers[1], layers[2])

    def weights(self, kernel, ranks, *, n_iter: int, seed: int) -> list[torch.Tensor]:
        rank = ranks[0]
        if rank == self.exact(kernel.shape):
            terms = _exact_cp(kernel)
        else:
            result = cp_als(kernel, rank, n_iter=n_iter or CP_ITERATIONS, seed=seed)
            # Spread each (positive) weight evenly over the four unit-norm factors: balanced
            # scales train better than one factor carrying the whole norm.
            share = result.weights.pow(0.25)
            terms = [u * share for u in result.factors]
        u_out, u_in, u_h, u_w = terms
        return [
            u_in.t()[:, :, None, None],
            u_h.t()[:, None, :, None],
            u_w.t()[:, None, None, :],
            u_out[:, :, None, None],
        ]


def _exact_cp(kernel: torch.Tensor) -> list[torch.Tensor]:
    """Factors (f_out, f_in, h, w modes; R columns) of the exact decomposition with one term per
    input channel (or output channel, whichever is fewer) and kernel position."""
    f_out, f_in, h, w = kernel.shape
    opts = {"dtype": kernel.dtype, "device": kernel.device}
    eye = torch.eye(h * w, **opts)
    u_h = eye.reshape(h, w, h * w).sum(1)  # column (y, x) is e_y
    u_w = eye.reshape(h, w, h * w).sum(0)  # and e_x
    ones = torch.ones(1, h * w, **opts)
    if f_in <= f_out:
        # term (i, y, x): e_i over f_in, K[:, i, y, x] over f_out
        return [
            kernel.reshape(f_out, -1),
            torch.kron(torch.eye(f_in, **opts), ones),
            u_h.repeat(1, f_in),
            u_w.repeat(1, f_in),
        ]
    return [
        torch.kron(torch.eye(f_out, **opts), ones),
        kernel.permute(1, 0, 2, 3).reshape(f_in, -1),
        u_h.repeat(1, f_out),
        u_w.repeat(1, f_out),
    ]


METHOD = LayerwiseCP()
