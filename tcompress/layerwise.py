"""Layer-wise compressed networks: every convolution of the kernel family decomposed on its own.

The baselines the T-Net paper compares with: the same convolutions a T-Net stacks into W (the block
convolutions of a hourglass, or the members of any :class:`~tcompress.family.KernelFamily`), but
each replaced by a small chain of plain convolutions with its own parameters (nothing is shared):

- ``layerwise-tucker`` (Kim et al. 2016): 1x1 (f_in -> R_in, U_in^T) -> h x w (R_in -> R_out, the
  core, with the original stride, padding and dilation) -> 1x1 (R_out -> f_out, U_out). With
  spatial ranks (Tucker-4) the h x w convolution is a :class:`SpatialTuckerConv2d`, whose kernel is
  its core multiplied by the spatial factors;
- ``layerwise-cp`` (Lebedev et al. 2015): 1x1 (f_in -> R) -> depthwise h x 1 -> depthwise 1 x w ->
  1x1 (R -> f_out);
- ``tai`` (Tai et al. 2016): h x 1 (f_in -> K) -> 1 x w (K -> f_out).

The BatchNorms stay as they are (trainable, dense); an export folds each one that follows a
decomposed convolution into the last convolution of its chain, as for a T-Net. A
:class:`LayerwiseNet` is an ordinary module: it fine-tunes, saves (:func:`tcompress.save`), loads
and exports like a T-Net.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from tcompress.errors import MethodError
from tcompress.family import KernelFamily
from tcompress.models.io import WrapsNetwork
from tcompress.ranks import LAYERWISE_METHODS

#: The modes of one block kernel, the tensor each layer-wise method decomposes.
LAYER_MODE_NAMES = ("f_out", "f_in", "h", "w")


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
        conv = _conv(kernel.shape[1], kernel.shape[0], kernel.shape[2:], self, device="meta")
        conv.weight = nn.Parameter(kernel.clone())
        return conv


def _conv(
    c_in: int,
    c_out: int,
    size: Sequence[int],
    geometry=None,
    *,
    axis: int | None = None,
    groups: int = 1,
    bias: bool = False,
    device=None,
    dtype=None,
) -> nn.Conv2d:
    """A convolution with the stride, padding and dilation of ``geometry`` (none when it is
    ``None``); with ``axis`` 0 or 1, only those along the height or the width."""

    def along(value):
        if geometry is None:
            return 1 if value != "padding" else 0
        v = getattr(geometry, value)
        if axis is None or isinstance(v, str):  # padding "same" / "valid" applies per axis
            return v
        neutral = 0 if value == "padding" else 1
        return (v[0], neutral) if axis == 0 else (neutral, v[1])

    return nn.Conv2d(
        c_in,
        c_out,
        tuple(size),
        stride=along("stride"),
        padding=along("padding"),
        dilation=along("dilation"),
        groups=groups,
        bias=bias,
        device=device,
        dtype=dtype,
    )


def layer_skeleton(
    method: str, ranks: Sequence[int], conv: nn.Conv2d, *, device=None, dtype=None
) -> nn.Sequential:
    """The chain of convolutions that replaces ``conv`` (uninitialised weights).

    Shapes
    ------
    ``layerwise-tucker``: (R_in, f_in, 1, 1), (R_out, R_in, h, w) [Tucker-4: core (R_out, R_in,
    R_h, R_w), factors (h, R_h), (w, R_w)], (f_out, R_out, 1, 1);
    ``layerwise-cp``: (R, f_in, 1, 1), (R, 1, h, 1), (R, 1, 1, w), (f_out, R, 1, 1);
    ``tai``: (K, f_in, h, 1), (f_out, K, 1, w).
    """
    f_in, f_out = conv.in_channels, conv.out_channels
    h, w = conv.kernel_size
    bias = conv.bias is not None
    opts = {"device": device, "dtype": dtype}
    if method == "layerwise-tucker":
        r_in, r_out = ranks[:2]
        if len(ranks) == 4:
            empty = (torch.empty(r_out, r_in, *ranks[2:], **opts),)
            empty += (torch.empty(h, ranks[2], **opts), torch.empty(w, ranks[3], **opts))
            middle = SpatialTuckerConv2d(*empty, conv)
        else:
            middle = _conv(r_in, r_out, (h, w), conv, **opts)
        return nn.Sequential(
            _conv(f_in, r_in, (1, 1), **opts),
            middle,
            _conv(r_out, f_out, (1, 1), bias=bias, **opts),
        )
    if method == "layerwise-cp":
        r = ranks[0]
        return nn.Sequential(
            _conv(f_in, r, (1, 1), **opts),
            _conv(r, r, (h, 1), conv, axis=0, groups=r, **opts),
            _conv(r, r, (1, w), conv, axis=1, groups=r, **opts),
            _conv(r, f_out, (1, 1), bias=bias, **opts),
        )
    if method == "tai":
        k = ranks[0]
        return nn.Sequential(
            _conv(f_in, k, (h, 1), conv, axis=0, **opts),
            _conv(k, f_out, (1, w), conv, axis=1, bias=bias, **opts),
        )
    raise MethodError(
        f"method {method!r} is not layer-wise; expected one of {', '.join(LAYERWISE_METHODS)}"
    )


def layer_kernel(method: str, layers: nn.Sequential) -> torch.Tensor:
    """The dense kernel a chain of :func:`layer_skeleton` computes (differentiable).

    Shapes
    ------
    returns: (f_out, f_in, h, w).
    """
    if method == "layerwise-tucker":
        first, middle, last = layers
        core = middle.kernel() if isinstance(middle, SpatialTuckerConv2d) else middle.weight
        return torch.einsum(
            "ob,bayx,ai->oiyx", last.weight[..., 0, 0], core, first.weight[..., 0, 0]
        )
    if method == "layerwise-cp":
        first, vertical, horizontal, last = layers
        return torch.einsum(
            "or,ry,rx,ri->oiyx",
            last.weight[..., 0, 0],
            vertical.weight[:, 0, :, 0],
            horizontal.weight[:, 0, 0, :],
            first.weight[..., 0, 0],
        )
    if method == "tai":
        vertical, horizontal = layers
        return torch.einsum("njx,jcy->ncyx", horizontal.weight[:, :, 0, :], vertical.weight[..., 0])
    raise MethodError(
        f"method {method!r} is not layer-wise; expected one of {', '.join(LAYERWISE_METHODS)}"
    )


def chain_geometry(method: str, layers: nn.Sequential) -> SimpleNamespace:
    """Stride, padding and dilation of the convolution a chain replaced (the inverse of the split
    :func:`layer_skeleton` makes): those of the h x w convolution, or of the vertical convolution
    along the height and the horizontal one along the width."""
    if method == "layerwise-tucker":
        middle = layers[1]
        return SimpleNamespace(
            stride=middle.stride, padding=middle.padding, dilation=middle.dilation
        )
    vertical, horizontal = (layers[1], layers[2]) if method == "layerwise-cp" else tuple(layers)

    def joined(value):
        v, h = getattr(vertical, value), getattr(horizontal, value)
        return v if isinstance(v, str) else (v[0], h[1])

    return SimpleNamespace(**{k: joined(k) for k in ("stride", "padding", "dilation")})


class LayerwiseNet(WrapsNetwork, nn.Module):
    """A network whose kernel-family convolutions are each decomposed on their own.

    Parameters
    ----------
    net
        The network (a stacked hourglass of a known layout, or any network with a kernel family),
        every family member replaced by its :func:`layer_skeleton` chain.
    method
        ``"layerwise-tucker"``, ``"layerwise-cp"`` or ``"tai"``.
    ranks
        The ranks of every layer (see :func:`tcompress.ranks.resolve_layer_ranks`).
    family
        The decomposed convolutions: module names of ``net`` and their index.
    meta
        What :func:`tcompress.save` records besides the tensors (architecture, summary).

    Shapes
    ------
    input and output: those of ``net`` (a :class:`~tcompress.models.StackedHourglass`: (N,
    in_channels, H, W) -> list of ``n_stacks`` heatmaps (N, n_joints, H/4, W/4)).
    """

    def __init__(
        self,
        net: nn.Module,
        method: str,
        ranks: Sequence[int],
        family: KernelFamily,
        *,
        meta: dict | None = None,
    ) -> None:
        super().__init__()
        if method not in LAYERWISE_METHODS:
            raise MethodError(
                f"method {method!r} is not layer-wise; expected one of "
                f"{', '.join(LAYERWISE_METHODS)}"
            )
        self.net = net
        self.method = method
        self.ranks = tuple(int(r) for r in ranks)
        self.family = family
        self.meta = dict(meta or {})

    @property
    def config(self):
        """The network's configuration (None for a network built by a user's factory)."""
        return getattr(self.net, "config", None)

    @property
    def summary(self) -> dict:
        """The conversion's figures (method, ranks, parameters, ratio, relative error, ...)."""
        return self.meta.get("summary", {})

    @property
    def forward_form(self) -> str:
        """Always ``"factorized"``: each layer runs as its chain of small convolutions."""
        return "factorized"

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        """(f_out, f_in, h, w) of the decomposed kernels (all alike in a family)."""
        _, layers = next(iter(self.block_layers()))
        with torch.no_grad():
            return tuple(layer_kernel(self.method, layers).shape)

    def block_layers(self) -> Iterator[tuple[tuple[int, ...], nn.Sequential]]:
        """Index and chain of every decomposed convolution, in W's row-major order."""
        for index, name in self.family.members:
            yield index, self.net.get_submodule(name)

    def kernels(self) -> list[torch.Tensor]:
        """The dense kernels the chains compute, in W's order (f_out, f_in, h, w each)."""
        return [layer_kernel(self.method, layers) for _, layers in self.block_layers()]

    def extra_repr(self) -> str:
        return f"method={self.method}, ranks={self.ranks}"

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)


class StackedChains(nn.Module):
    """The chains of a :class:`LayerwiseNet` seen as one tensor: :meth:`full` stacks the kernels
    they compute into W's layout, so what fits a T-Net's tensor to W (data-aware refinement) fits
    the chains too. The chains are shared with the network, not copied.

    Shapes
    ------
    full(): (*grid, f_in, f_out, h, w).
    """

    def __init__(self, model: LayerwiseNet) -> None:
        super().__init__()
        self.method = model.method
        self.grid = tuple(model.family.grid)
        self.chains = nn.ModuleList(layers for _, layers in model.block_layers())

    def full(self) -> torch.Tensor:
        kernels = torch.stack([layer_kernel(self.method, layers) for layers in self.chains])
        stacked = kernels.transpose(1, 2)  # (L, f_in, f_out, h, w)
        return stacked.reshape(*self.grid, *stacked.shape[1:])


def layerwise_skeleton(
    net: nn.Module, family: KernelFamily, method: str, ranks: Sequence[int]
) -> LayerwiseNet:
    """A :class:`LayerwiseNet` from the dense ``net`` (changed in place; built on the meta device
    for a known layout), every family member replaced by an uninitialised chain, to load a
    state_dict into with ``assign=True``."""
    for _, name in family.members:
        conv = net.get_submodule(name)
        net.set_submodule(name, layer_skeleton(method, ranks, conv, device="meta"))
    return LayerwiseNet(net, method, ranks, family)


def dense_layers(model: LayerwiseNet) -> nn.Module:
    """The dense network a :class:`LayerwiseNet` stands for: every chain becomes one
    ``nn.Conv2d`` holding its rebuilt kernel (same state_dict layout as an uncompressed model)."""
    net = copy.deepcopy(model.net)
    with torch.no_grad():
        for _, name in model.family.members:
            layers = net.get_submodule(name)
            kernel = layer_kernel(model.method, layers)
            geometry = chain_geometry(model.method, layers)
            bias = layers[-1].bias
            conv = _conv(
                kernel.shape[1],
                kernel.shape[0],
                kernel.shape[2:],
                geometry,
                bias=bias is not None,
                device="meta",
            )
            conv.weight = nn.Parameter(kernel.clone())
            if bias is not None:
                conv.bias = nn.Parameter(bias.detach().clone())
            net.set_submodule(name, conv)
    return net.train(model.training)


def plain_layers(model: LayerwiseNet) -> nn.Module:
    """The network with standard convolutions only (Tucker-4 middles rebuilt as ``nn.Conv2d``),
    for export; each chain stays a chain."""
    net = copy.deepcopy(model.net)
    with torch.no_grad():
        for _, name in model.family.members:
            layers = net.get_submodule(name)
            for i, layer in enumerate(layers):
                if isinstance(layer, SpatialTuckerConv2d):
                    layers[i] = layer.to_conv()
    return net.train(model.training)
