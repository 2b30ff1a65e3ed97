"""The T-Net: a hourglass whose block convolutions read their kernels from one factorized tensor.

The shared tensor (a :class:`~tcompress.methods.base.SharedTensor` of one of the T-Net methods in
:mod:`tcompress.methods`) holds the only trainable copy of the block kernels as
``nn.Parameter``s; each block convolution is a :class:`TensorConv2d` that knows its index (stack,
depth, pathway, conv) in the tensor. Two forward forms, chosen at construction and switchable with
:meth:`TNet.set_forward`:

- ``reconstructed``: rebuild W once per forward pass, each convolution slices its kernel;
- ``factorized``: each convolution runs as smaller ones, as its method lays them out (Tucker: 1x1
  (U5^T, shared) -> h x w (per-layer core) -> 1x1 (U6, shared); MPS: 1x1 (per layer) -> h x w
  (shared)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tcompress.errors import ForwardFormError
from tcompress.family import FamilyError, KernelFamily
from tcompress.models.io import WrapsNetwork
from tcompress.vocabulary import FORWARD_FORMS


class TensorConv2d(nn.Module):
    """A convolution whose kernel is a slice of the T-Net's shared tensor.

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
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        # A bias is the layer's own (dense) parameter, never part of the shared tensor.
        self.bias = None if bias is None else nn.Parameter(bias)
        self.kernel_size = _pair(kernel_size)
        self.index = tuple(index)
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
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, index={self.index}, "
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


class TNet(WrapsNetwork, nn.Module):
    """A network whose stacked convolutions are slices of one factorized tensor.

    Parameters
    ----------
    net
        The network (a stacked hourglass, or any network with a kernel family), its stacked
        convolutions already replaced by :class:`TensorConv2d`.
    tensor
        The shared tensor (:class:`~tcompress.methods.base.SharedTensor`) of shape (grid
        modes..., f_in, f_out, h, w): for a hourglass (stack, depth, pathway, block, ...).
    forward
        ``"reconstructed"`` or ``"factorized"``.
    meta
        What :func:`tcompress.save` records besides the tensors (method, ranks, source, ...).
    """

    def __init__(
        self,
        net: nn.Module,
        tensor: nn.Module,
        *,
        forward: str = "reconstructed",
        meta: dict | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.tensor = tensor
        self.meta = dict(meta or {})
        self._forward_form = _check_forward(forward)

    # -- description ---------------------------------------------------------------------------
    @property
    def config(self):
        """The network's configuration (None for a network built by a user's factory)."""
        return getattr(self.net, "config", None)

    @property
    def method(self) -> str:
        return self.tensor.method

    @property
    def ranks(self) -> tuple[int, ...]:
        return self.tensor.ranks

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
        """W rebuilt from the factors, (stack, depth, pathway, block, f_in, f_out, h, w)."""
        return self.tensor.full()

    def extra_repr(self) -> str:
        return f"method={self.method}, ranks={self.ranks}, forward={self._forward_form!r}"

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        convs = self.tensor_convs()
        try:
            # The weights are built at the factors' precision even under autocast (mixed
            # precision training casts each convolution's input and kernel, not the rebuild).
            with torch.autocast(x.device.type, enabled=False):
                if self._forward_form == "reconstructed":
                    parts = self.reconstructed_weights()
                else:
                    parts = self.factorized_weights()
                for conv in convs:
                    conv._weights = tuple(part(conv.index) for part in parts)
            return self.net(x)
        finally:
            for conv in convs:
                conv._weights = None

    def reconstructed_weights(self) -> tuple[Callable, Callable, Callable]:
        """(1x1 before, kernel, 1x1 after) of each layer, as functions of its index, for the
        reconstructed form: no 1x1s, the kernel is the layer's slice of W."""
        return self.tensor.reconstructed_weights(self.n_grid)

    def factorized_weights(self) -> tuple[Callable, Callable, Callable]:
        """(1x1 before, h x w kernel, 1x1 after) of each layer, as functions of its index, for the
        factorized form (the method's layout); a weight shared by every layer is the same tensor
        for every index."""
        return self.tensor.factorized_weights(self.n_grid)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _check_forward(form: str) -> str:
    if form not in FORWARD_FORMS:
        raise ForwardFormError(
            f"forward form {form!r} is unknown; expected one of {', '.join(FORWARD_FORMS)}"
        )
    return form


def tensorize(net: nn.Module, family: KernelFamily) -> nn.Module:
    """Replace every member of ``family`` in ``net`` (in place) by a :class:`TensorConv2d` with
    the same geometry and index; a bias stays the layer's own parameter (left empty on the meta
    device, for ``load_state_dict(assign=True)``). Returns ``net``."""
    for index, name in family.members:
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
        )
        setattr(parent, attr, replacement)
    return net
