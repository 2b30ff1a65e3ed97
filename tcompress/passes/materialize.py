"""T-Net -> the plain dense network, every block kernel rebuilt from its group's shared tensor."""

from __future__ import annotations

import copy

import torch
from torch import nn

from tcompress.tnet import TensorConv2d, TNet


def materialize(tnet: TNet) -> nn.Module:
    """The dense network a T-Net stands for: each :class:`TensorConv2d` becomes an ``nn.Conv2d``
    whose kernel is its slice of W (and whose bias, if any, is the layer's own). The result has
    the dense network's class and state_dict layout (it saves and loads as an uncompressed
    checkpoint).
    """
    net = copy.deepcopy(tnet.net)
    with torch.no_grad():
        # (grid modes..., f_out, f_in, h, w) per group: each slice a Conv2d kernel.
        stacked = {}
        for group_name, group in tnet.groups.items():
            g = len(group.tensor.shape) - 4
            stacked[group_name] = group.tensor.full().transpose(g, g + 1)
    only = next(iter(stacked.values())) if len(stacked) == 1 else None
    for parent, name, conv in tensor_convs_with_parents(net):
        kernels = only if only is not None else stacked[conv.group]
        dense = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            bias=conv.bias is not None,
            device=kernels.device,
            dtype=kernels.dtype,
        )
        dense.weight = nn.Parameter(kernels[conv.index].clone())
        if conv.bias is not None:
            dense.bias = nn.Parameter(conv.bias.detach().clone())
        setattr(parent, name, dense)
    return net.train(tnet.training)


def tensor_convs_with_parents(net: nn.Module) -> list[tuple[nn.Module, str, TensorConv2d]]:
    """(parent module, attribute name, conv) of every :class:`TensorConv2d` in ``net``."""
    found = []
    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, TensorConv2d):
                found.append((parent, name, child))
    return found
