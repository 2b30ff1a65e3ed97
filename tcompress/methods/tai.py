"""Tai et al. (2016): every kernel K (f_out, f_in, h, w) split into a vertical and a horizontal
convolution, in closed form.

K reshaped to the (f_in h) x (f_out w) matrix M[(c, y), (n, x)] = K[n, c, y, x] and truncated by
SVD, M ~ U S V^T; the vertical filters are the columns of U scaled by sqrt(S), the horizontal ones
those of V, which is the best rank-K split in the Frobenius norm (Eckart-Young). Ranks: one rank
K (intermediate channels per layer), at most min(f_in h, f_out w) (``full``: exact). Chain: h x 1
(f_in -> K) -> 1 x w (K -> f_out).
"""

from __future__ import annotations

import torch
from torch import nn

from tcompress.methods._layers import OneRankMethod, conv, joined_geometry


class Tai(OneRankMethod):
    name = "tai"
    title = "Tai et al. split of every block convolution (SVD)"
    rank_names = "K"
    rank_what = "tai rank K"
    rank_expected = "one rank K (intermediate channels per layer)"
    no_sweeps = "a closed-form SVD"

    def exact(self, shape) -> int:
        f_out, f_in, h, w = shape
        return min(f_in * h, f_out * w)

    per_layer_bound = True

    def layer_spectra(self, kernel) -> list[torch.Tensor]:
        """The spectrum of the (f_in h) x (f_out w) matrix the split factors: its tail beyond K
        is exactly what rank K loses."""
        f_out, f_in, h, w = kernel.shape
        matrix = kernel.permute(1, 2, 0, 3).reshape(f_in * h, f_out * w)
        return [torch.linalg.svdvals(matrix.double()).square()]

    def truncations(self, kernel) -> list:
        """K: the truncated SVD of the (f_in h) x (f_out w) matrix, folded back."""
        f_out, f_in, h, w = kernel.shape
        matrix = kernel.detach().permute(1, 2, 0, 3).reshape(f_in * h, f_out * w).double()
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)

        def keep(r: int) -> torch.Tensor:
            kept = (u[:, :r] * s[:r]) @ vh[:r]
            return kept.reshape(f_in, h, f_out, w).permute(2, 0, 1, 3)

        return [keep]

    def params(self, shape, ranks) -> int:
        """K (f_in h + f_out w)."""
        f_out, f_in, h, w = shape
        return ranks[0] * (f_in * h + f_out * w)

    def skeleton(self, ranks, geometry: nn.Conv2d, *, device=None, dtype=None) -> nn.Sequential:
        """(K, f_in, h, 1), (f_out, K, 1, w)."""
        f_in, f_out = geometry.in_channels, geometry.out_channels
        h, w = geometry.kernel_size
        opts = {"device": device, "dtype": dtype}
        k = ranks[0]
        return nn.Sequential(
            conv(f_in, k, (h, 1), geometry, axis=0, **opts),
            conv(k, f_out, (1, w), geometry, axis=1, bias=geometry.bias is not None, **opts),
        )

    def kernel(self, layers: nn.Sequential) -> torch.Tensor:
        vertical, horizontal = layers
        return torch.einsum("njx,jcy->ncyx", horizontal.weight[:, :, 0, :], vertical.weight[..., 0])

    def geometry(self, layers: nn.Sequential):
        return joined_geometry(layers[0], layers[1])

    def weights(self, kernel, ranks, *, n_iter: int, seed: int) -> list[torch.Tensor]:
        """Vertical (K, f_in, h, 1) and horizontal (f_out, K, 1, w)."""
        f_out, f_in, h, w = kernel.shape
        rank = ranks[0]
        matrix = kernel.permute(1, 2, 0, 3).reshape(f_in * h, f_out * w)  # M[(c, y), (n, x)]
        u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
        root = s[:rank].sqrt()
        vertical = (u[:, :rank] * root).t().reshape(rank, f_in, h, 1)
        horizontal = (root[:, None] * vh[:rank]).reshape(rank, f_out, w).permute(1, 0, 2)
        return [vertical, horizontal[:, :, None, :]]


METHOD = Tai()
