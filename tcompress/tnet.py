"""The T-Net: a hourglass whose block convolutions read their kernels from one factorized tensor.

The factorized tensor (:class:`TuckerTensor` or :class:`MPSTensor`) holds the only trainable copy of
the block kernels as ``nn.Parameter``s; each block convolution is a :class:`TensorConv2d` that knows
its index (stack, depth, pathway, conv) in the tensor. Two forward forms, chosen at construction and
switchable with :meth:`TNet.set_forward`:

- ``reconstructed``: rebuild W once per forward pass, each convolution slices its kernel;
- ``factorized``: each convolution runs as smaller ones: Tucker 1x1 (U5^T,
  shared) -> h x w (per-layer core) -> 1x1 (U6, shared); MPS 1x1 (per layer) -> h x w (shared).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tcompress.decompose import tt_to_tensor, tucker_to_tensor
from tcompress.decompose.cp import cp_to_tensor
from tcompress.errors import ForwardFormError
from tcompress.family import FamilyError, KernelFamily
from tcompress.models.io import WrapsNetwork

FORWARD_FORMS = ("reconstructed", "factorized")


class TuckerTensor(nn.Module):
    """W = G x_1 U_1 ... x_N U_N with trainable core and factors.

    Shapes
    ------
    core: (R_1, ..., R_N); factors[k]: (D_k, R_k).
    """

    def __init__(self, core: torch.Tensor, factors: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.core = nn.Parameter(core)
        self.factors = nn.ParameterList(nn.Parameter(u) for u in factors)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(u.shape[0] for u in self.factors)

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
            x = _mode_dot(x, self.factors[k], k)
        return x


class MPSTensor(nn.Module):
    """W[i_1, ..., i_N] = G_1[:, i_1, :] ... G_N[:, i_N, :] with trainable cores.

    Shapes
    ------
    cores[k]: (R_{k-1}, D_k, R_k), R_0 = R_N = 1.
    """

    def __init__(self, cores: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.cores = nn.ParameterList(nn.Parameter(g) for g in cores)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(g.shape[1] for g in self.cores)

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(g.shape[2] for g in self.cores[:-1])

    def full(self) -> torch.Tensor:
        return tt_to_tensor(list(self.cores))


class CPTensor(nn.Module):
    """W = sum_r lambda_r u_1[:, r] o ... o u_N[:, r] (a Tucker tensor with a diagonal core), with
    trainable weights and factors.

    Shapes
    ------
    weights: (R,); factors[k]: (D_k, R).
    """

    def __init__(self, weights: torch.Tensor, factors: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.weights = nn.Parameter(weights)
        self.factors = nn.ParameterList(nn.Parameter(u) for u in factors)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(u.shape[0] for u in self.factors)

    @property
    def ranks(self) -> tuple[int, ...]:
        return (self.weights.shape[0],)

    def full(self) -> torch.Tensor:
        return cp_to_tensor(self.weights, list(self.factors))


def _mode_dot(x: torch.Tensor, u: torch.Tensor, mode: int) -> torch.Tensor:
    """x x_mode u: replace mode ``mode`` of size R by size D, with u of shape (D, R)."""
    return torch.movedim(torch.tensordot(x, u, dims=([mode], [1])), -1, mode)


def _chain(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Contract consecutive MPS cores: (R_a, D_a, ..., D_b, R_b)."""
    x = cores[0]
    for g in cores[1:]:
        x = torch.tensordot(x, g, dims=([-1], [0]))
    return x


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
        The shared :class:`TuckerTensor`, :class:`MPSTensor` or :class:`CPTensor` of shape
        (grid modes..., f_in, f_out, h, w): for a hourglass (stack, depth, pathway, block, ...).
    forward
        ``"reconstructed"`` or ``"factorized"``.
    meta
        What :func:`tcompress.save` records besides the tensors (method, ranks, source, ...).
    """

    def __init__(
        self,
        net: nn.Module,
        tensor: TuckerTensor | MPSTensor | CPTensor,
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
        if isinstance(self.tensor, CPTensor):
            return "cp"
        return "tucker" if isinstance(self.tensor, TuckerTensor) else "mps"

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
        # (stack, depth, pathway, block, f_out, f_in, h, w): each slice is a Conv2d kernel.
        g = self.n_grid
        if isinstance(self.tensor, TuckerTensor):
            # Rebuild W with f_in and f_out already swapped (a view of the core, the two factors
            # exchanged) instead of transposing the rebuilt W: one W-sized copy less per step.
            factors = list(self.tensor.factors)
            factors[g], factors[g + 1] = factors[g + 1], factors[g]
            kernels = tucker_to_tensor(self.tensor.core.transpose(g, g + 1), factors)
        else:
            kernels = self.tensor.full().transpose(g, g + 1).contiguous()
        return _none, _per_layer(kernels, g), _none

    def factorized_weights(self) -> tuple[Callable, Callable, Callable]:
        """(1x1 before, h x w kernel, 1x1 after) of each layer, as functions of its index, for the
        factorized form; a weight shared by every layer is the same tensor for every index.

        Shapes
        ------
        Tucker: (R5, f_in, 1, 1) shared, (R6, R5, h, w) per layer, (f_out, R6, 1, 1) shared.
        MPS: (R5, f_in, 1, 1) per layer, (f_out, R5, h, w) shared, no 1x1 after.
        CP: (R, f_in, 1, 1) shared, a pair of depthwise kernels (R, 1, h, 1) and (R, 1, 1, w)
        shared, (f_out, R, 1, 1) per layer (U6 scaled by the layer's weights).
        """
        g = self.n_grid  # the modes f_in, f_out, h, w are g, g + 1, g + 2, g + 3
        if isinstance(self.tensor, CPTensor):
            u = list(self.tensor.factors)
            # Per-layer weights lambda * u1[s] * u2[d] * u3[p] * u4[b]: (stack, depth, ..., R)
            scale = self.tensor.weights
            for k in range(g):
                shape = (*([1] * k), -1, *([1] * (g - 1 - k)), u[k].shape[1])
                scale = scale * u[k].reshape(shape)
            last = (scale[..., None, :] * u[g + 1])[..., None, None]  # (..., f_out, R, 1, 1)
            first = u[g].t()[:, :, None, None]
            vertical = u[g + 2].t()[:, None, :, None]
            horizontal = u[g + 3].t()[:, None, None, :]
            pair = (vertical.contiguous(), horizontal.contiguous())
            return _constant(first), _constant(pair), _per_layer(last.contiguous(), g)
        if isinstance(self.tensor, TuckerTensor):
            u_in, u_out = self.tensor.factors[g], self.tensor.factors[g + 1]
            # Per-layer cores G_l x_7 U_7 x_8 U_8, laid out as Conv2d kernels (R6, R5, h, w).
            cores = self.tensor.layer_cores(g, (g + 2, g + 3)).transpose(g, g + 1).contiguous()
            first = u_in.t()[:, :, None, None]  # 1x1 conv f_in -> R5, shared by every layer
            last = u_out[:, :, None, None]  # 1x1 conv R6 -> f_out, shared by every layer
            return _constant(first), _per_layer(cores, g), _constant(last)
        cores = list(self.tensor.cores)
        # Left part G_1..G_5 gives a per-layer 1x1 conv f_in -> R5 (as (R5, f_in, 1, 1)).
        left = _chain(cores[:g])[0]  # (stack, depth, pathway, block, R4)
        first = torch.tensordot(left, cores[g], dims=([-1], [0]))  # (..., f_in, R5)
        first = first.transpose(-1, -2)[..., None, None].contiguous()
        # Right part G_6 G_7 G_8 is one h x w conv R5 -> f_out shared by every layer.
        right = _chain(cores[g + 1 :])[..., 0]  # (R5, f_out, h, w)
        shared = right.transpose(0, 1).contiguous()
        return _per_layer(first, g), _constant(shared), _none


def _per_layer(stacked: torch.Tensor, n_grid: int) -> Callable[[tuple[int, ...]], torch.Tensor]:
    """Index -> that layer's slice of ``stacked`` (grid modes first).

    The slices come from one ``unbind``, whose backward stacks the layers' gradients once;
    indexing each layer separately would make every backward step allocate a gradient the size
    of the whole tensor.
    """
    grid = stacked.shape[:n_grid]
    slices = stacked.reshape(-1, *stacked.shape[n_grid:]).unbind(0)

    def at(index: tuple[int, ...]) -> torch.Tensor:
        flat = 0
        for i, size in zip(index, grid):
            flat = flat * size + i
        return slices[flat]

    return at


def _none(index: tuple[int, ...]) -> None:
    return None


def _constant(weight: torch.Tensor) -> Callable[[tuple[int, ...]], torch.Tensor]:
    return lambda index: weight


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
