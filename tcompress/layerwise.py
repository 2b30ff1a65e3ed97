"""Layer-wise compressed networks: every convolution of the kernel family decomposed on its own.

The baselines the T-Net paper compares with: the same convolutions a T-Net stacks into W (the block
convolutions of a hourglass, or the members of any :class:`~tcompress.family.KernelFamily`), but
each replaced by a small chain of plain convolutions with its own parameters (nothing is shared),
as its layer-wise method (:mod:`tcompress.methods`: ``layerwise-tucker``, ``layerwise-cp``,
``tai``) lays the chain out.

The BatchNorms stay as they are (trainable, dense); an export folds each one that follows a
decomposed convolution into the last convolution of its chain, as for a T-Net. A
:class:`LayerwiseNet` is an ordinary module: it fine-tunes, saves (:func:`tcompress.save`), loads
and exports like a T-Net.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from tcompress import methods
from tcompress.errors import MethodError, RankError, TcompressError
from tcompress.family import KernelFamily, KernelGroups
from tcompress.models.io import WrapsNetwork

#: The modes of one block kernel, the tensor each layer-wise method decomposes.
LAYER_MODE_NAMES = ("f_out", "f_in", "h", "w")


class LayerwiseNet(WrapsNetwork, nn.Module):
    """A network whose kernel-family convolutions are each decomposed on their own.

    Parameters
    ----------
    net
        The network (a stacked hourglass of a known layout, or any network with a kernel family),
        every family member replaced by its method's chain.
    method
        A layer-wise method of :mod:`tcompress.methods` (``"layerwise-tucker"``,
        ``"layerwise-cp"``, ``"tai"``).
    ranks
        The ranks of every layer (as the method resolves them); for a family of several groups,
        the same for all of them or a mapping group name -> its layers' ranks.
    family
        The decomposed convolutions: module names of ``net`` and their index
        (:class:`~tcompress.family.KernelFamily`, or :class:`~tcompress.family.KernelGroups`).
    layer_ranks
        Layers with ranks of their own: module name -> ranks, for every member of the family
        (ranks allocated per layer, :func:`tcompress.passes.layerwise.allocate_layer_ranks`);
        ``ranks`` then gives each group's largest, rank by rank.
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
        ranks: Sequence[int] | Mapping[str, Sequence[int]],
        family: KernelFamily | KernelGroups,
        *,
        layer_ranks: Mapping[str, Sequence[int]] | None = None,
        meta: dict | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.method = layer_method(method).name
        names = [g.group_name for g in family.groups]
        if isinstance(ranks, Mapping):
            missing = [n for n in names if n not in ranks]
            if missing:
                raise RankError(
                    f"ranks name groups {', '.join(ranks)}; expected ranks for every group of "
                    f"the family ({', '.join(names)}), {missing[0]!r} has none"
                )
            self.group_ranks = {n: tuple(int(r) for r in ranks[n]) for n in names}
        else:
            self.group_ranks = {n: tuple(int(r) for r in ranks) for n in names}
        self.family = family
        self.layer_ranks = _layer_ranks(family, self.group_ranks, layer_ranks)
        self.meta = dict(meta or {})

    @property
    def per_layer(self) -> bool:
        """Whether the layers of a group have ranks of their own (:attr:`layer_ranks`)."""
        return any(
            self.layer_ranks[name] != self.group_ranks[group.group_name]
            for group in self.family.groups
            for name in group.names
        )

    @property
    def ranks(self) -> tuple[int, ...]:
        """The ranks of every layer: one group's, or those every group shares."""
        distinct = set(self.group_ranks.values())
        if len(distinct) > 1:
            raise TcompressError(
                "this network's groups have ranks of their own ("
                + ", ".join(f"{n}: {r}" for n, r in self.group_ranks.items())
                + "); expected one group, or use group_ranks"
            )
        return next(iter(distinct))

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
        """(f_out, f_in, h, w) of the decomposed kernels (all alike in a group; the first
        group's, :meth:`group_kernel_shape` gives each group's)."""
        return self.group_kernel_shape(self.family.groups[0].group_name)

    def group_kernel_shape(self, name: str) -> tuple[int, int, int, int]:
        """(f_out, f_in, h, w) of the kernels of group ``name``."""
        layers = self.net.get_submodule(self._group(name).names[0])
        with torch.no_grad():
            return tuple(self.layer_method.kernel(layers).shape)

    def _group(self, name: str) -> KernelFamily:
        family = self.family
        return family if isinstance(family, KernelFamily) else family.group(name)

    @property
    def layer_method(self):
        """The :class:`~tcompress.methods.base.LayerMethod` the chains belong to."""
        return methods.get(self.method)

    def block_layers(
        self, group: str | None = None
    ) -> Iterator[tuple[tuple[int, ...], nn.Sequential]]:
        """Index and chain of every decomposed convolution, in W's row-major order (each
        group's in turn; of group ``group`` only when given)."""
        groups = self.family.groups if group is None else (self._group(group),)
        for family in groups:
            for index, name in family.members:
                yield index, self.net.get_submodule(name)

    def kernels(self) -> list[torch.Tensor]:
        """The dense kernels the chains compute, in W's order (f_out, f_in, h, w each)."""
        kernel = self.layer_method.kernel
        return [kernel(layers) for _, layers in self.block_layers()]

    def extra_repr(self) -> str:
        if self.per_layer:
            return f"method={self.method}, ranks per layer (largest {self.group_ranks})"
        if len(set(self.group_ranks.values())) == 1:
            return f"method={self.method}, ranks={self.ranks}"
        return f"method={self.method}, ranks={self.group_ranks}"

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)


class StackedChains(nn.Module):
    """The chains of a :class:`LayerwiseNet` seen as one tensor: :meth:`full` stacks the kernels
    they compute into W's layout, so what fits a T-Net's tensor to W (data-aware refinement) fits
    the chains too. The chains are shared with the network, not copied. For a family of several
    groups, the chains of group ``group`` (default: the first).

    Shapes
    ------
    full(): (*grid, f_in, f_out, h, w).
    """

    def __init__(self, model: LayerwiseNet, group: str | None = None) -> None:
        super().__init__()
        self.layer_method = model.layer_method
        name = group if group is not None else model.family.groups[0].group_name
        self.grid = tuple(model._group(name).grid)
        self.chains = nn.ModuleList(layers for _, layers in model.block_layers(name))

    def full(self) -> torch.Tensor:
        kernels = torch.stack([self.layer_method.kernel(layers) for layers in self.chains])
        stacked = kernels.transpose(1, 2)  # (L, f_in, f_out, h, w)
        return stacked.reshape(*self.grid, *stacked.shape[1:])


def layerwise_skeleton(
    net: nn.Module,
    family: KernelFamily | KernelGroups,
    method: str,
    ranks: Sequence[int] | Mapping[str, Sequence[int]],
    layer_ranks: Mapping[str, Sequence[int]] | None = None,
) -> LayerwiseNet:
    """A :class:`LayerwiseNet` from the dense ``net`` (changed in place; built on the meta device
    for a known layout), every family member replaced by an uninitialised chain, to load a
    state_dict into with ``assign=True``; ``ranks`` and ``layer_ranks`` as for
    :class:`LayerwiseNet`."""
    skeleton = layer_method(method).skeleton
    names = [g.group_name for g in family.groups]
    group_ranks = ranks if isinstance(ranks, Mapping) else dict.fromkeys(names, ranks)
    for name, layer in _layer_ranks(family, group_ranks, layer_ranks).items():
        conv = net.get_submodule(name)
        net.set_submodule(name, skeleton(layer, conv, device="meta"))
    return LayerwiseNet(net, method, ranks, family, layer_ranks=layer_ranks)


def _layer_ranks(family, group_ranks: Mapping, layer_ranks: Mapping | None) -> dict:
    """Every member's ranks: its own from ``layer_ranks``, else its group's."""
    members = [(name, group.group_name) for group in family.groups for name in group.names]
    if layer_ranks is None:
        return {name: tuple(int(r) for r in group_ranks[g]) for name, g in members}
    known = {name for name, _ in members}
    unknown = [name for name in layer_ranks if name not in known]
    missing = [name for name, _ in members if name not in layer_ranks]
    if unknown or missing:
        which = f"{unknown[0]!r} is not one" if unknown else f"{missing[0]!r} has none"
        raise RankError(
            f"layer ranks name {len(layer_ranks)} layers; expected ranks for every block "
            f"convolution of the family ({len(members)}): {which}"
        )
    return {name: tuple(int(r) for r in layer_ranks[name]) for name, _ in members}


def dense_layers(model: LayerwiseNet) -> nn.Module:
    """The dense network a :class:`LayerwiseNet` stands for: every chain becomes one
    ``nn.Conv2d`` holding its rebuilt kernel (same state_dict layout as an uncompressed model)."""
    method = model.layer_method
    net = copy.deepcopy(model.net)
    with torch.no_grad():
        for name in model.family.names:
            layers = net.get_submodule(name)
            kernel = method.kernel(layers)
            geometry = method.geometry(layers)
            bias = layers[-1].bias
            conv = nn.Conv2d(
                kernel.shape[1],
                kernel.shape[0],
                tuple(kernel.shape[2:]),
                stride=geometry.stride,
                padding=geometry.padding,
                dilation=geometry.dilation,
                bias=bias is not None,
                device="meta",
            )
            conv.weight = nn.Parameter(kernel.clone())
            if bias is not None:
                conv.bias = nn.Parameter(bias.detach().clone())
            net.set_submodule(name, conv)
    return net.train(model.training)


def plain_layers(model: LayerwiseNet) -> nn.Module:
    """The network with standard convolutions only, for export: a link of a chain that is not one
    (a Tucker-4 middle) becomes the ``nn.Conv2d`` its ``to_conv()`` gives; each chain stays a
    chain."""
    net = copy.deepcopy(model.net)
    with torch.no_grad():
        for name in model.family.names:
            layers = net.get_submodule(name)
            for i, layer in enumerate(layers):
                if hasattr(layer, "to_conv"):
                    layers[i] = layer.to_conv()
    return net.train(model.training)


def layer_method(name: str):
    """The layer-wise method registered as ``name``."""
    method = methods.get(name)
    if method.kind != methods.LAYERWISE:
        raise MethodError(
            f"method {name!r} is not layer-wise; expected one of "
            f"{', '.join(methods.names(methods.LAYERWISE))}"
        )
    return method
