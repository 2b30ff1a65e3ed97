"""A whitened start: decompose W after weighting each kernel mode by what it costs on data.

The decompositions minimise ``||W - W_hat||``, which counts every input channel, output channel and
kernel tap the same. A block convolution's normalised output error is
``tr(diag(s)^2 E M E^T)`` (:mod:`tcompress.passes.data_aware`), with ``M`` the second moment of
the layer's input patches over (f_in, h, w). If ``M`` were the same for every layer and separable,
``M = C (x) S_h (x) S_w``, and ``s`` the same too, that error would be
``|| E x_f_in L_C^T x_f_out diag(s) x_h L_h^T x_w L_w^T ||^2`` (``L`` the Cholesky factors): a
plain Frobenius error of W weighted on its kernel modes. So decomposing the weighted W' and
undoing the weights on the factors of those modes (``U_k <- A_k^-1 U_k``) truncates each
direction by what it costs the outputs, in the spirit of SVD-LLM's truncation-aware whitening;
the factors are no longer orthonormal, which nothing downstream needs.

The weights are pooled over the layers (they share the factors): ``C``, ``S_h`` and ``S_w`` are
the partial traces of the layers' moments (scaled so that their Kronecker product is the moment
when it is separable), averaged with each layer's mean squared BatchNorm scale as its weight; the
f_out weight is the BatchNorm scale's root mean square, each layer weighted by its input energy.

Only the kernel modes whose rank is below their size are weighted: a mode kept whole loses
nothing, and weighting it only bends the other modes' truncation towards the pooled average (on
the bundled model, weighting all four modes where only the taps were cut converted 34 points of
PCKh below the plain HOSVD, the taps alone 8). Weighting the channels alone (``channels_only``)
converted 44 points below it where channels and taps were both cut (docs/whitening.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tcompress.errors import TcompressError
from tcompress.passes.data_aware import BlockStatistics, mode_dot

#: Ridge added to each moment matrix before its Cholesky factor, relative to its mean diagonal:
#: input channels that a ReLU leaves (almost) always zero would otherwise make it singular.
RIDGE = 1e-6


@dataclass
class Whitening:
    """Weights ``matrices[k]`` (D_k, D_k) for kernel modes ``k`` of W (counted from the first
    mode, grid modes included); :meth:`apply` weights W, :meth:`undo` takes the weights back off
    a decomposition of the weighted W."""

    matrices: dict[int, torch.Tensor]

    @property
    def modes(self) -> list[int]:
        return sorted(self.matrices)

    def apply(self, W: torch.Tensor) -> torch.Tensor:
        out = W
        for k in self.modes:
            out = mode_dot(out, self.matrices[k].to(W), k)
        return out

    def undo(self, tensor: torch.nn.Module) -> None:
        """``tensor`` (a shared tensor fitted to the weighted W) in place: the factor or core of
        each weighted mode multiplied by the weight's inverse, so that ``tensor.full()``
        approximates W itself."""
        with torch.no_grad():
            for k in self.modes:
                inverse = torch.linalg.inv(self.matrices[k].double())
                if hasattr(tensor, "factors"):  # Tucker, CP: U_k (D_k, R_k)
                    u = tensor.factors[k]
                    u.copy_((inverse @ u.double()).to(u.dtype))
                elif hasattr(tensor, "cores"):  # MPS, TR: G_k (R_{k-1}, D_k, R_k)
                    g = tensor.cores[k]
                    g.copy_(torch.einsum("ed,adb->aeb", inverse, g.double()).to(g.dtype))
                else:
                    raise TcompressError(
                        f"a {type(tensor).__name__} has neither factors nor cores; expected a "
                        "shared tensor of a T-Net method"
                    )


def whitening(
    stats: BlockStatistics,
    shape: Sequence[int],
    ranks: Sequence[int] | None = None,
    *,
    channels_only: bool = False,
) -> Whitening:
    """The pooled weights of the kernel modes (f_in, f_out, h, w; with ``channels_only`` f_in
    and f_out alone) of W with ``shape``, for those whose rank in ``ranks`` is below their size
    (all of them when ``ranks`` is None: a train, a ring or CP truncates every mode).

    Shapes
    ------
    stats.moments: (L, f_in * h * w, f_in * h * w); stats.scales: (L, f_out);
    shape: (*grid, f_in, f_out, h, w).
    """
    g = len(shape) - 4
    f_in, f_out, h, w = (int(s) for s in shape[g:])
    layers = stats.moments.shape[0]
    if stats.moments.shape[1] != f_in * h * w or stats.scales.shape[1] != f_out:
        raise TcompressError(
            f"the statistics are of layers with {stats.moments.shape[1]} inputs and "
            f"{stats.scales.shape[1]} outputs; expected {f_in * h * w} and {f_out} for W of "
            f"shape {tuple(shape)}"
        )
    moments = stats.moments.double().reshape(layers, f_in, h, w, f_in, h, w)
    scales = stats.scales.double().square()  # (L, f_out)
    weight = scales.mean(1)
    pooled = torch.einsum("l,lcijdkm->cijdkm", weight / weight.sum(), moments)
    energy = torch.einsum("lcijcij->l", moments)  # each layer's input energy
    # Each partial trace carries the other two factors' traces, so their Kronecker product is
    # the moment times its trace squared; the channel factor takes that scale off.
    trace = float(torch.einsum("cijcij->", pooled)) or 1.0
    candidates = {
        g: _cholesky_t(torch.einsum("cijdij->cd", pooled) / trace**2),
        g + 1: torch.diag(torch.sqrt((energy[:, None] * scales).sum(0) / energy.sum())),
        g + 2: _cholesky_t(torch.einsum("cijckj->ik", pooled)),
        g + 3: _cholesky_t(torch.einsum("cijcik->jk", pooled)),
    }
    modes = range(g, g + (2 if channels_only else 4))
    keep = [k for k in modes if ranks is None or ranks[k] < shape[k]]
    return Whitening({k: candidates[k].float() for k in keep})


def _cholesky_t(moment: torch.Tensor) -> torch.Tensor:
    """L^T with ``moment + ridge = L L^T``: ``||L^T v||^2 = v^T moment v``."""
    ridge = RIDGE * float(moment.diagonal().mean()) or RIDGE
    eye = torch.eye(moment.shape[0], dtype=moment.dtype, device=moment.device)
    return torch.linalg.cholesky(moment + ridge * eye).T
