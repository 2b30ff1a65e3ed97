"""T-Net -> plain convolutions in the factorized form, standard ops only
(docs/design.md, "The factorized form").

Tucker: each block convolution becomes 1x1 (f_in -> R5, weight U5^T, one parameter shared by every
layer) -> h x w (R5 -> R6, the layer's core G_l x7 U7 x8 U8, original stride/padding/dilation) ->
1x1 (R6 -> f_out, weight U6, shared; a BatchNorm after it stays a per-channel scale and shift on
export, :mod:`tcompress.passes.fold_bn`).
MPS: 1x1 (f_in -> R5, per layer, from the left cores) -> h x w (R5 -> f_out, shared by every layer,
from the right cores). Tensor ring: the same with R8 * R5 channels between the two.
CP: 1x1 (f_in -> R, U5^T, shared) -> depthwise h x 1 (U7, shared) -> depthwise 1 x w (U8, shared)
-> 1x1 (R -> f_out, U6 scaled by the layer's weights, per layer).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tcompress.passes.materialize import tensor_convs_with_parents
from tcompress.tnet import TensorConv2d, TNet


def factorize(tnet: TNet) -> nn.Module:
    """The T-Net as a network of plain ``nn.Conv2d``: every :class:`TensorConv2d` becomes an
    ``nn.Sequential`` of two (MPS, tensor ring), three (Tucker) or four (CP) convolutions. Shared
    factors are one ``nn.Parameter`` used by every layer of their group, so an export stores
    them once."""
    net = copy.deepcopy(tnet.net)
    with torch.no_grad():
        # conv -> its weights, by its group and index (the copies' are the originals')
        weights = tnet.layer_weights("factorized")
    shared = {}

    def parameter(weight: torch.Tensor) -> nn.Parameter:
        # A weight every layer shares is the same tensor each time: one Parameter for all.
        key = (weight.data_ptr(), tuple(weight.shape), tuple(weight.stride()))
        if key not in shared:
            shared[key] = nn.Parameter(weight.detach().clone())
        return shared[key]

    for parent, name, conv in tensor_convs_with_parents(net):
        pre, kernel, post = weights(conv)
        layers = [] if pre is None else [_conv(parameter(pre))]
        if isinstance(kernel, tuple):  # CP: depthwise h x 1, then depthwise 1 x w
            vertical, horizontal = kernel
            layers.append(_depthwise(parameter(vertical), conv, 0))
            layers.append(_depthwise(parameter(horizontal), conv, 1))
        else:
            layers.append(_conv(parameter(kernel), conv))
        if post is not None:
            layers.append(_conv(parameter(post)))
        if conv.bias is not None:
            # The layer's own bias goes to its last convolution (a shared weight stays shared:
            # each Conv2d holds its own bias beside the common weight).
            layers[-1].bias = nn.Parameter(conv.bias.detach().clone())
        setattr(parent, name, nn.Sequential(*layers))
    return net.train(tnet.training)


def _conv(weight: nn.Parameter, geometry: TensorConv2d | None = None) -> nn.Conv2d:
    """A bias-free Conv2d using ``weight`` itself (so shared weights stay one object); the h x w
    convolution keeps the original stride, padding and dilation."""
    out_channels, in_channels, kh, kw = weight.shape
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        (kh, kw),
        stride=geometry.stride if geometry else 1,
        padding=geometry.padding if geometry else 0,
        dilation=geometry.dilation if geometry else 1,
        bias=False,
        device="meta",
    )
    conv.weight = weight
    return conv


def _depthwise(weight: nn.Parameter, geometry: TensorConv2d, axis: int) -> nn.Conv2d:
    """One half of a CP layer's separable kernel: depthwise along the height (``axis`` 0) or the
    width (1), with that axis's stride, padding and dilation."""

    def along(value: tuple[int, int]) -> tuple[int, int]:
        return (value[0], 1) if axis == 0 else (1, value[1])

    channels, _, kh, kw = weight.shape
    conv = nn.Conv2d(
        channels,
        channels,
        (kh, kw),
        stride=along(geometry.stride),
        padding=(geometry.padding[0], 0) if axis == 0 else (0, geometry.padding[1]),
        dilation=along(geometry.dilation),
        groups=channels,
        bias=False,
        device="meta",
    )
    conv.weight = weight
    return conv
