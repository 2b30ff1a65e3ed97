"""The T-Net: a network whose stacked convolutions read their kernels from factorized tensors.

The shared tensor (a :class:`~tcompress.methods.base.SharedTensor` of one of the T-Net methods in
:mod:`tcompress.methods`) holds the only trainable copy of the block kernels as
``nn.Parameter``s; each block convolution is a :class:`TensorConv2d` that knows its index (stack,
depth, pathway, conv) in the tensor. A family of several groups
(:class:`~tcompress.family.KernelGroups`: the kernels of each geometry) has one shared tensor per
group, and each convolution knows its group too. Two forward forms, chosen at construction and
switchable with :meth:`TNet.set_forward`:

- ``reconstructed``: rebuild each W once per forward pass, each convolution slices its kernel;
- ``factorized``: each convolution runs as smaller ones, as its method lays them out (Tucker: 1x1
  (U5^T, shared) -> h x w (per-layer core) -> 1x1 (U6, shared); MPS: 1x1 (per layer) -> h x w
  (shared)).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tcompress.errors import ForwardFormError, TcompressError
from tcompress.family import FamilyError, KernelFamily, KernelGroups
from tcompress.models.io import WrapsNetwork
from tcompress.vocabulary import FORWARD_FORMS


class TensorConv2d(nn.Module):
    """A convolution whose kernel is a slice of the T-Net's shared tensor: at ``index`` in the
    tensor of ``group`` (the group's name; None where the T-Net has one tensor).

    It owns no parameters; :class:`TNet` hands it its weights for the current forward pass, so that
    the pass builds the shared tensor (or the shared factors) once for every layer.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        index: tuple[int, ...],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        bias: torch.Tensor | None = None,
        group: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        # A bias is the layer's own (dense) parameter, never part of the shared tensor.
        self.bias = None if bias is None else nn.Parameter(bias)
        self.kernel_size = _pair(kernel_size)
        self.index = tuple(index)
        self.group = group
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        # (1x1 before or None, h x w kernel, 1x1 after or None), set by TNet.forward.
        self._weights: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._weights is None:
            raise RuntimeError(
                "TensorConv2d has no weights: call the T-Net itself, not its inner network"
            )
        pre, kernel, post = self._weights
        if pre is not None:
            x = F.conv2d(x, pre)
        if isinstance(kernel, tuple):  # CP: depthwise h x 1, then depthwise 1 x w
            x = separable_depthwise(x, *kernel, self.stride, self.padding, self.dilation)
        else:
            x = F.conv2d(x, kernel, None, self.stride, self.padding, self.dilation)
        if post is not None:
            x = F.conv2d(x, post)
        if self.bias is not None:
            x = x + self.bias[:, None, None]
        return x

    def extra_repr(self) -> str:
        group = "" if self.group is None else f"group={self.group!r}, "
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, {group}index={self.index}, "
            f"bias={self.bias is not None}"
        )


def separable_depthwise(
    x: torch.Tensor,
    vertical: torch.Tensor,
    horizontal: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """A depthwise h x 1 then a depthwise 1 x w convolution, splitting the geometry of one h x w
    convolution between them. Shapes: vertical (R, 1, h, 1), horizontal (R, 1, 1, w)."""
    if isinstance(padding, str):
        raise ForwardFormError(
            f"padding is {padding!r}; the factorized form of a CP T-Net needs integer padding "
            "(use forward='reconstructed')"
        )
    groups = vertical.shape[0]
    x = F.conv2d(x, vertical, None, (stride[0], 1), (padding[0], 0), (dilation[0], 1), groups)
    return F.conv2d(x, horizontal, None, (1, stride[1]), (0, padding[1]), (1, dilation[1]), groups)


class TensorGroup(NamedTuple):
    """One group of a T-Net: its shared tensor and the family of kernels it holds (None where
    the T-Net was built without its family)."""

    tensor: nn.Module
    family: KernelFamily | None


class TNet(WrapsNetwork, nn.Module):
    """A network whose stacked convolutions are slices of factorized tensors: one shared tensor,
    or one per group of kernels of one geometry.

    Parameters
    ----------
    net
        The network (a stacked hourglass, or any network with a kernel family), its stacked
        convolutions already replaced by :class:`TensorConv2d`.
    tensor
        The shared tensor (:class:`~tcompress.methods.base.SharedTensor`) of shape (grid
        modes..., f_in, f_out, h, w): for a hourglass (stack, depth, pathway, block, ...). For
        several groups: a mapping group name -> its shared tensor, in the family's order (each
        :class:`TensorConv2d` names its group).
    forward
        ``"reconstructed"`` or ``"factorized"``.
    meta
        What :func:`tcompress.save` records besides the tensors (method, ranks, source, ...).
    family
        The kernel family (:class:`~tcompress.family.KernelFamily`, or
        :class:`~tcompress.family.KernelGroups` for several tensors), for :attr:`groups`.

    One tensor is the module ``tensor`` (its parameters ``tensor.*``); several are ``tensors``,
    a list in the family's order (``tensors.0.*``, ...). :attr:`tensor`, :attr:`ranks`,
    :attr:`n_grid`, :meth:`full_tensor` and the weight functions describe one tensor and refuse
    several; :attr:`groups` serves both.
    """

    def __init__(
        self,
        net: nn.Module,
        tensor: nn.Module | Mapping[str, nn.Module],
        *,
        forward: str = "reconstructed",
        meta: dict | None = None,
        family: KernelFamily | KernelGroups | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        if isinstance(tensor, Mapping):
            if not tensor:
                raise FamilyError("tensor is an empty mapping; expected one tensor per group")
            names = tuple(tensor)
        else:
            names = (_single_name(net, family),)
        if len(names) == 1:
            self.tensor = tensor if not isinstance(tensor, Mapping) else tensor[names[0]]
        else:
            self.tensors = nn.ModuleList(tensor[name] for name in names)
        self.group_names = names
        self.family = family
        self.meta = dict(meta or {})
        self._forward_form = _check_forward(forward)

    # -- description ---------------------------------------------------------------------------
    @property
    def config(self):
        """The network's configuration (None for a network built by a user's factory)."""
        return getattr(self.net, "config", None)

    @property
    def tensor(self) -> nn.Module:
        """The shared tensor, for a T-Net of one group (:attr:`groups` has every group's)."""
        if "tensor" not in self._modules:
            raise self._several("tensor", "groups[name].tensor")
        return self._modules["tensor"]

    @property
    def groups(self) -> dict[str, TensorGroup]:
        """Group name -> its shared tensor and its kernel family, in the family's order."""
        tensors = [self.tensor] if "tensor" in self._modules else list(self.tensors)
        families = dict.fromkeys(self.group_names)
        if self.family is not None:
            families.update({g.group_name: g for g in self.family.groups})
        return {name: TensorGroup(t, families[name]) for name, t in zip(self.group_names, tensors)}

    @property
    def method(self) -> str:
        """The method of the shared tensors (one for all groups)."""
        return next(iter(self.groups.values())).tensor.method

    @property
    def ranks(self) -> tuple[int, ...]:
        return self.tensor.ranks if len(self.group_names) == 1 else self._refuse("ranks")

    @property
    def summary(self) -> dict:
        """The conversion's figures (method, ranks, parameters, ratio, relative error, ...)."""
        return self.meta.get("summary", {})

    @property
    def forward_form(self) -> str:
        return self._forward_form

    def set_forward(self, form: str) -> TNet:
        """Switch between the ``reconstructed`` and ``factorized`` forward forms; returns self."""
        self._forward_form = _check_forward(form)
        return self

    def tensor_convs(self) -> list[TensorConv2d]:
        return [m for m in self.net.modules() if isinstance(m, TensorConv2d)]

    @property
    def n_grid(self) -> int:
        """Number of leading (grid) modes of the tensor: the modes before f_in, f_out, h, w."""
        return len(self.tensor.shape) - 4

    def full_tensor(self) -> torch.Tensor:
        """W rebuilt from the factors, (stack, depth, pathway, block, f_in, f_out, h, w), for a
        T-Net of one group (each group's: ``groups[name].tensor.full()``)."""
        return self.tensor.full()

    def extra_repr(self) -> str:
        if len(self.group_names) == 1:
            ranks = f"ranks={self.ranks}"
        else:
            ranks = "groups=" + ", ".join(
                f"{name}: {group.tensor.ranks}" for name, group in self.groups.items()
            )
        return f"method={self.method}, {ranks}, forward={self._forward_form!r}"

    def _refuse(self, what: str):
        raise self._several(what, f"groups[name].tensor.{what}")

    def _several(self, what: str, instead: str) -> TcompressError:
        return TcompressError(
            f"this T-Net has {len(self.group_names)} tensors (groups "
            f"{', '.join(self.group_names)}) and no single {what}; expected a T-Net of one "
            f"group, or use {instead}"
        )

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        convs = self.tensor_convs()
        try:
            # The weights are built at the factors' precision even under autocast (mixed
            # precision training casts each convolution's input and kernel, not the rebuild).
            with torch.autocast(x.device.type, enabled=False):
                weights = self.layer_weights()
                for conv in convs:
                    conv._weights = weights(conv)
            return self.net(x)
        finally:
            for conv in convs:
                conv._weights = None

    def layer_weights(self, form: str | None = None) -> Callable[[TensorConv2d], tuple]:
        """conv -> its (1x1 before, kernel, 1x1 after) in ``form`` (default: the T-Net's own),
        each group's shared weights built once: the functions of :meth:`reconstructed_weights`
        or :meth:`factorized_weights`, applied to a convolution's index in its group's tensor."""
        form = _check_forward(form or self._forward_form)
        parts = {}
        for name, group in self.groups.items():
            n_grid = len(group.tensor.shape) - 4
            if form == "reconstructed":
                parts[name] = group.tensor.reconstructed_weights(n_grid)
            else:
                parts[name] = group.tensor.factorized_weights(n_grid)
        only = next(iter(parts.values())) if len(parts) == 1 else None

        def weights(conv: TensorConv2d) -> tuple:
            functions = only if only is not None else parts.get(conv.group)
            if functions is None:
                raise FamilyError(
                    f"a TensorConv2d names group {conv.group!r}; expected one of {', '.join(parts)}"
                )
            return tuple(part(conv.index) for part in functions)

        return weights

    def reconstructed_weights(self) -> tuple[Callable, Callable, Callable]:
        """(1x1 before, kernel, 1x1 after) of each layer, as functions of its index, for the
        reconstructed form: no 1x1s, the kernel is the layer's slice of W (one group; for
        several, :meth:`layer_weights`)."""
        return self.tensor.reconstructed_weights(self.n_grid)

    def factorized_weights(self) -> tuple[Callable, Callable, Callable]:
        """(1x1 before, h x w kernel, 1x1 after) of each layer, as functions of its index, for the
        factorized form (the method's layout); a weight shared by every layer is the same tensor
        for every index (one group; for several, :meth:`layer_weights`)."""
        return self.tensor.factorized_weights(self.n_grid)


def _single_name(net: nn.Module, family) -> str:
    """The name of a T-Net's one group: its family's, else its convolutions' group, else W."""
    if family is not None:
        return family.groups[0].group_name
    for m in net.modules():
        if isinstance(m, TensorConv2d) and m.group is not None:
            return m.group
    return "W"


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _check_forward(form: str) -> str:
    if form not in FORWARD_FORMS:
        raise ForwardFormError(
            f"forward form {form!r} is unknown; expected one of {', '.join(FORWARD_FORMS)}"
        )
    return form


def tensorize(net: nn.Module, family: KernelFamily | KernelGroups) -> nn.Module:
    """Replace every member of ``family`` (of each of its groups) in ``net`` (in place) by a
    :class:`TensorConv2d` with the same geometry, its group's name and its index there; a bias
    stays the layer's own parameter (left empty on the meta device, for
    ``load_state_dict(assign=True)``). Returns ``net``."""
    for group in family.groups:
        group_name = group.group_name  # derived from every member's name: once per group
        for index, name in group.members:
            parent_name, _, attr = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            conv = getattr(parent, attr)
            if not isinstance(conv, nn.Conv2d):
                raise FamilyError(
                    f"family member '{name}' is a {type(conv).__name__}; expected an nn.Conv2d"
                )
            bias = None
            if conv.bias is not None:
                bias = torch.empty_like(conv.bias, device=conv.bias.device)
            replacement = TensorConv2d(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                index,
                stride=conv.stride,
                padding=conv.padding,
                dilation=conv.dilation,
                bias=bias,
                group=group_name,
            )
            setattr(parent, attr, replacement)
    return net
