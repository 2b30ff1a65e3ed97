"""Layer-wise Tucker (Kim et al. 2016): every kernel K (f_out, f_in, h, w) by its own HOSVD
[+ HOOI], K = C x_in U_in x_out U_out [x_h U_h x_w U_w].

Ranks: ``"R_in,R_out"``, one value for both, or ``"R_in,R_out,R_h,R_w"`` (Tucker-4, the kernel's
spatial modes decomposed too); ``full`` keeps every layer exact. Chain: 1x1 (f_in -> R_in, U_in^T)
-> h x w (R_in -> R_out, the core, with the original stride, padding and dilation; Tucker-4: a
:class:`SpatialTuckerConv2d`) -> 1x1 (R_out -> f_out, U_out).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from tcompress.decompose import tucker
from tcompress.decompose.spectra import mode_spectra
from tcompress.errors import RankError
from tcompress.methods._layers import conv
from tcompress.methods.base import LayerMethod, RankSpec, ResolvedRanks, check_rank

_FORMS = "'R_in,R_out', one value for both, or 'R_in,R_out,R_h,R_w' (Tucker-4)"


class SpatialTuckerConv2d(nn.Module):
    """The h x w convolution of a Tucker-4 layer: kernel = core x_h U_h x_w U_w.

    Shapes
    ------
    core: (R_out, R_in, R_h, R_w); factor_h: (h, R_h); factor_w: (w, R_w);
    kernel: (R_out, R_in, h, w).
    """

    def __init__(
        self,
        core: torch.Tensor,
        factor_h: torch.Tensor,
        factor_w: torch.Tensor,
        geometry: nn.Conv2d,
    ) -> None:
        super().__init__()
        self.core = nn.Parameter(core)
        self.factor_h = nn.Parameter(factor_h)
        self.factor_w = nn.Parameter(factor_w)
        self.stride, self.padding = geometry.stride, geometry.padding
        self.dilation = geometry.dilation

    def kernel(self) -> torch.Tensor:
        return torch.einsum("oiab,ya,xb->oiyx", self.core, self.factor_h, self.factor_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel(), None, self.stride, self.padding, self.dilation)

    def to_conv(self) -> nn.Conv2d:
        """The plain ``nn.Conv2d`` with the rebuilt kernel (for export)."""
        kernel = self.kernel().detach()
        out = conv(kernel.shape[1], kernel.shape[0], kernel.shape[2:], self, device="meta")
        out.weight = nn.Parameter(kernel.clone())
        return out


class LayerwiseTucker(LayerMethod):
    name = "layerwise-tucker"
    title = "Tucker (HOSVD) of every block convolution"
    rank_names = "R_in,R_out[,R_h,R_w]"
    sweeps = "HOOI sweeps"

    def resolve(self, spec: RankSpec, shape, names=()) -> ResolvedRanks:
        f_out, f_in, h, w = (int(s) for s in shape)
        if spec.named is not None:
            raise RankError(
                f"ranks {spec.shown} name modes; layer-wise method {self.name!r} takes {_FORMS}"
            )
        if spec.full:
            return ResolvedRanks(self.name, (f_in, f_out))
        values = list(spec.values)
        if len(values) == 1:
            values = values * 2
        if len(values) not in (2, 4):
            raise RankError(
                f"got {len(values)} rank(s) ({spec.shown}) for {self.name}; expected {_FORMS}"
            )
        labels, sizes = ("R_in", "R_out", "R_h", "R_w"), (f_in, f_out, h, w)
        out = tuple(
            check_rank(v, f"{self.name} rank {labels[k]}", sizes[k]) for k, v in enumerate(values)
        )
        # Spatial ranks equal to the kernel size decompose nothing: plain Tucker-2.
        return ResolvedRanks(self.name, out[:2] if out[2:] == (h, w) else out)

    def params(self, shape, ranks) -> int:
        """Tucker-2: R_in R_out h w + f_in R_in + f_out R_out; Tucker-4: R_in R_out R_h R_w +
        f_in R_in + f_out R_out + h R_h + w R_w."""
        f_out, f_in, h, w = shape
        r_in, r_out, r_h, r_w = (*ranks, h, w)[:4]
        spatial = 0 if len(ranks) == 2 else h * r_h + w * r_w
        return r_in * r_out * r_h * r_w + f_in * r_in + f_out * r_out + spatial

    per_layer_bound = True

    def layer_spectra(self, kernel) -> list[torch.Tensor]:
        """The f_in and f_out unfoldings' spectra (R_in, R_out of Tucker-2): the HOSVD loses at
        most the sum of their tails."""
        spectra = mode_spectra(kernel)
        return [spectra[1], spectra[0]]

    def truncations(self, kernel) -> list:
        """R_in: the kernel's f_in mode projected on its leading r singular vectors; R_out: its
        f_out mode."""
        work = kernel.detach().double()

        def projector(mode: int):
            unfolded = work.movedim(mode, 0).reshape(work.shape[mode], -1)
            u = torch.linalg.svd(unfolded, full_matrices=False)[0]
            equation = "ab,biyx->aiyx" if mode == 0 else "ab,obyx->oayx"
            return lambda r: torch.einsum(equation, u[:, :r] @ u[:, :r].T, work)

        return [projector(1), projector(0)]

    def candidates(self, shape) -> list[tuple[int, ...]]:
        """R_in = R_out, full spatial modes (Tucker-2)."""
        f_out, f_in = shape[:2]
        return [(r, r) for r in range(1, min(f_in, f_out) + 1)]

    def skeleton(self, ranks, geometry: nn.Conv2d, *, device=None, dtype=None) -> nn.Sequential:
        """(R_in, f_in, 1, 1), (R_out, R_in, h, w) [Tucker-4: core (R_out, R_in, R_h, R_w),
        factors (h, R_h), (w, R_w)], (f_out, R_out, 1, 1)."""
        f_in, f_out = geometry.in_channels, geometry.out_channels
        h, w = geometry.kernel_size
        opts = {"device": device, "dtype": dtype}
        r_in, r_out = ranks[:2]
        if len(ranks) == 4:
            empty = (torch.empty(r_out, r_in, *ranks[2:], **opts),)
            empty += (torch.empty(h, ranks[2], **opts), torch.empty(w, ranks[3], **opts))
            middle = SpatialTuckerConv2d(*empty, geometry)
        else:
            middle = conv(r_in, r_out, (h, w), geometry, **opts)
        return nn.Sequential(
            conv(f_in, r_in, (1, 1), **opts),
            middle,
            conv(r_out, f_out, (1, 1), bias=geometry.bias is not None, **opts),
        )

    def kernel(self, layers: nn.Sequential) -> torch.Tensor:
        first, middle, last = layers
        core = middle.kernel() if isinstance(middle, SpatialTuckerConv2d) else middle.weight
        return torch.einsum(
            "ob,bayx,ai->oiyx", last.weight[..., 0, 0], core, first.weight[..., 0, 0]
        )

    def geometry(self, layers: nn.Sequential) -> SimpleNamespace:
        middle = layers[1]
        return SimpleNamespace(
            stride=middle.stride, padding=middle.padding, dilation=middle.dilation
        )

    def weights(self, kernel, ranks, *, n_iter: int, seed: int) -> list[torch.Tensor]:
        """First 1x1, middle (core, or core and spatial factors), last 1x1."""
        f_out, f_in, h, w = kernel.shape
        full = (ranks[1], ranks[0], *(ranks[2:] if len(ranks) == 4 else (h, w)))
        result = tucker(kernel, full, n_iter=n_iter)
        u_out, u_in, u_h, u_w = result.factors
        first = u_in.t()[:, :, None, None]  # (R_in, f_in, 1, 1)
        last = u_out[:, :, None, None]  # (f_out, R_out, 1, 1)
        if len(ranks) == 4:
            return [first, result.core, u_h, u_w, last]
        # Full spatial ranks: the factors are orthogonal h x h and w x w; fold them into the core.
        core = torch.einsum("oiab,ya,xb->oiyx", result.core, u_h, u_w)
        return [first, core, last]


METHOD = LayerwiseTucker()
