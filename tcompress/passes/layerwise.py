"""Dense network -> layer-wise compressed network: each kernel-family convolution decomposed alone.

Three per-layer decompositions of a kernel K (f_out, f_in, h, w), all under ``torch.no_grad()`` in
the kernel's dtype (float32 for half-precision kernels, stored back in their own dtype):

- ``layerwise-tucker``: HOSVD of K on its channel modes (Tucker-2) or all four (Tucker-4),
  optionally refined by HOOI sweeps: K = C x_in U_in x_out U_out [x_h U_h x_w U_w];
- ``layerwise-cp``: CP-ALS of K (:func:`tcompress.decompose.cp.cp_als`), the weights spread evenly
  over the four factors; at the rank that represents K exactly (min(f_in, f_out) h w) the exact
  decomposition sum_{i,y,x} e_i o K[:, i, y, x] o e_y o e_x is used instead;
- ``tai``: the closed form of Tai et al. (2016): K reshaped to the (f_in h) x (f_out w) matrix
  M[(c, y), (n, x)] = K[n, c, y, x] and truncated by SVD, M ~ U S V^T; the vertical filters are
  the columns of U scaled by sqrt(S), the horizontal ones those of V, which is the best rank-K
  split in the Frobenius norm (Eckart-Young).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tcompress.decompose import tucker
from tcompress.decompose.cp import CP_ITERATIONS, cp_als
from tcompress.errors import MethodError, RankError, TcompressError
from tcompress.family import FamilyError, KernelFamily, layout_family
from tcompress.layerwise import LayerwiseNet, layer_kernel, layer_skeleton
from tcompress.ranks import LAYERWISE_METHODS, layer_params, resolve_layer_ranks


@dataclass
class LayerwiseConfig:
    """How :func:`decompose_layers` decomposes every block convolution.

    Attributes
    ----------
    method
        ``"layerwise-tucker"``, ``"layerwise-cp"`` or ``"tai"``.
    ranks
        Per-layer ranks in any form :func:`tcompress.ranks.resolve_layer_ranks` accepts
        (``None`` or ``"full"``: exact).
    n_iter
        ``layerwise-tucker``: HOOI sweeps after the HOSVD (default 0); ``layerwise-cp``: ALS
        sweeps (0: :data:`~tcompress.decompose.cp.CP_ITERATIONS`); ``tai``: must be 0 (closed form).
    seed
        Seed of the random start columns of CP-ALS.
    """

    method: str
    ranks: object = None
    n_iter: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or self.method.lower() not in LAYERWISE_METHODS:
            raise MethodError(
                f"method {self.method!r} is not layer-wise; expected one of "
                f"{', '.join(LAYERWISE_METHODS)}"
            )
        self.method = self.method.lower()
        if isinstance(self.n_iter, bool) or not isinstance(self.n_iter, int) or self.n_iter < 0:
            raise TcompressError(
                f"refine is {self.n_iter!r}; expected a whole number of sweeps >= 0"
            )
        if self.method == "tai" and self.n_iter:
            raise TcompressError(
                f"refine={self.n_iter} does not apply to tai (a closed-form SVD); expected 0"
            )


def decompose_layers(
    model: nn.Module,
    config: LayerwiseConfig,
    progress: Callable[[str], None] | None = None,
    *,
    family: KernelFamily | None = None,
) -> tuple[LayerwiseNet, list[float]]:
    """A copy of ``model`` with every convolution of ``family`` replaced by its decomposed chain.

    ``family`` defaults to the block convolutions of a known hourglass layout
    (:func:`~tcompress.family.layout_family`); for any other network, give one
    (:func:`~tcompress.family.pattern_family`). ``progress``, if given, is called with a short
    description before each layer.

    Returns
    -------
    (LayerwiseNet, per-layer squared errors ||K - K_hat||^2 in W's order)
    """
    family = family if family is not None else _known_family(model)
    kernel_shape = block_kernel_shape(model, family)
    resolved = resolve_layer_ranks(config.ranks, config.method, kernel_shape)
    net = copy.deepcopy(model)
    squared = []
    with torch.no_grad():
        for i, (_, name) in enumerate(family.members):
            if progress is not None:
                progress(
                    f"Decomposing block convolution {i + 1}/{len(family.members)} ({config.method})"
                )
            conv = net.get_submodule(name)
            layers = decompose_conv(conv, config.method, resolved.ranks, config)
            net.set_submodule(name, layers)
            rebuilt = layer_kernel(config.method, layers)
            squared.append(float((rebuilt.double() - conv.weight.double()).square().sum()))
    out = LayerwiseNet(net, config.method, resolved.ranks, family)
    out.meta["notes"] = list(resolved.notes)
    return out.train(model.training), squared


def _known_family(model: nn.Module) -> KernelFamily:
    if not hasattr(model, "block_conv_names"):
        raise FamilyError(
            f"model is a {type(model).__name__} without a known kernel family; expected a "
            "StackedHourglass, BearpawHourglass or PoseNet, or family= (a KernelFamily, e.g. "
            "from tcompress.family.pattern_family)"
        )
    return layout_family(model)


def block_kernel_shape(model: nn.Module, family: KernelFamily) -> tuple[int, int, int, int]:
    """(f_out, f_in, h, w) of the family's kernels (all alike)."""
    return tuple(model.get_submodule(family.names[0]).weight.shape)


def decompose_conv(
    conv: nn.Conv2d, method: str, ranks: Sequence[int], config: LayerwiseConfig
) -> nn.Sequential:
    """The chain of :func:`~tcompress.layerwise.layer_skeleton` for ``conv``, its weights from
    the decomposition of ``conv.weight``."""
    kernel = conv.weight.detach()
    dtype = kernel.dtype
    work = kernel if dtype in (torch.float32, torch.float64) else kernel.float()
    layers = layer_skeleton(method, ranks, conv, device="meta")
    if method == "layerwise-tucker":
        weights = _tucker_weights(work, ranks, config.n_iter)
    elif method == "layerwise-cp":
        weights = _cp_weights(work, ranks[0], config)
    else:
        weights = _tai_weights(work, ranks[0])
    if conv.bias is not None:
        weights.append(conv.bias.detach())
    targets = [(m, name) for m in layers for name, _ in m.named_parameters(recurse=False)]
    for (module, name), value in zip(targets, weights, strict=True):
        setattr(module, name, nn.Parameter(value.to(dtype).contiguous().clone()))
    return layers


def _tucker_weights(kernel: torch.Tensor, ranks: Sequence[int], n_iter: int) -> list:
    """Tucker-2/-4 of K (f_out, f_in, h, w) by HOSVD [+ HOOI]: first 1x1, middle, last 1x1."""
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


def _cp_weights(kernel: torch.Tensor, rank: int, config: LayerwiseConfig) -> list:
    """CP of K: 1x1 (R, f_in), depthwise (R, 1, h, 1), depthwise (R, 1, 1, w), 1x1 (f_out, R)."""
    f_out, f_in, h, w = kernel.shape
    if rank == min(f_in, f_out) * h * w:
        terms = _exact_cp(kernel)
    else:
        result = cp_als(kernel, rank, n_iter=config.n_iter or CP_ITERATIONS, seed=config.seed)
        # Spread each (positive) weight evenly over the four unit-norm factors: balanced scales
        # train better than one factor carrying the whole norm.
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
    eye = torch.eye(h * w, dtype=kernel.dtype, device=kernel.device)
    u_h = eye.reshape(h, w, h * w).sum(1)  # column (y, x) is e_y
    u_w = eye.reshape(h, w, h * w).sum(0)  # and e_x
    if f_in <= f_out:
        ident = torch.eye(f_in, dtype=kernel.dtype, device=kernel.device)
        # term (i, y, x): e_i over f_in, K[:, i, y, x] over f_out
        return [
            kernel.reshape(f_out, -1),
            torch.kron(ident, torch.ones(1, h * w, dtype=kernel.dtype, device=kernel.device)),
            u_h.repeat(1, f_in),
            u_w.repeat(1, f_in),
        ]
    ident = torch.eye(f_out, dtype=kernel.dtype, device=kernel.device)
    return [
        torch.kron(ident, torch.ones(1, h * w, dtype=kernel.dtype, device=kernel.device)),
        kernel.permute(1, 0, 2, 3).reshape(f_in, -1),
        u_h.repeat(1, f_out),
        u_w.repeat(1, f_out),
    ]


def _tai_weights(kernel: torch.Tensor, rank: int) -> list:
    """Tai et al.'s split of K: vertical (K, f_in, h, 1) and horizontal (f_out, K, 1, w)."""
    f_out, f_in, h, w = kernel.shape
    matrix = kernel.permute(1, 2, 0, 3).reshape(f_in * h, f_out * w)  # M[(c, y), (n, x)]
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    root = s[:rank].sqrt()
    vertical = (u[:, :rank] * root).t().reshape(rank, f_in, h, 1)
    horizontal = (root[:, None] * vh[:rank]).reshape(rank, f_out, w).permute(1, 0, 2)
    return [vertical, horizontal[:, :, None, :]]


def choose_layer_ranks(
    method: str,
    kernel_shape: Sequence[int],
    n_layers: int,
    other_params: int,
    ratio: float,
) -> tuple[int, ...]:
    """The per-layer ranks (the same for every layer) whose whole-network compression ratio is
    nearest to ``ratio`` (on a log scale; a tie goes to the smaller model).

    Tucker keeps R_in = R_out and full spatial modes (Tucker-2). Whole-network parameters are
    ``other_params + n_layers * layer_params(method, kernel_shape, ranks)``; the original network
    has ``other_params + n_layers * prod(kernel_shape)``.

    Raises
    ------
    RankError
        A ratio below 1 or above what rank 1 in every layer gives.
    """
    f_out, f_in, h, w = kernel_shape
    before = other_params + n_layers * math.prod(kernel_shape)
    if method == "layerwise-tucker":
        candidates = [(r, r) for r in range(1, min(f_in, f_out) + 1)]
    else:
        top = resolve_layer_ranks(None, method, kernel_shape).ranks[0]
        candidates = [(r,) for r in range(1, top + 1)]

    def achieved(ranks) -> float:
        return before / (other_params + n_layers * layer_params(method, kernel_shape, ranks))

    best = achieved(candidates[0])
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 1 <= ratio <= best:
        raise RankError(
            f"compression ratio {ratio!r} is out of reach: with {method} this network goes "
            f"from 1x to {best:.2f}x (rank 1 in every layer)"
        )
    return min(candidates, key=lambda r: (abs(math.log(achieved(r) / ratio)), -achieved(r)))
