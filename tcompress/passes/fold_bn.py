"""Fold every BatchNorm into the convolution before it (eval-mode semantics).

In eval mode a BatchNorm is the per-channel affine map y = s * x + t with s = gamma / sqrt(var +
eps) and t = beta - s * mean. After a convolution with weight K and bias b it folds into that
convolution: K' = s[:, None, None, None] * K, b' = s * b + t. When the convolution's weight is
shared by several layers (the h x w convolution of an MPS T-Net), folding would give each layer its
own copy; the BatchNorm then becomes a :class:`ChannelAffine` instead, so the shared weight is
stored once.

Pre-activation networks (the public hourglasses: BN-ReLU-conv) put a BatchNorm *before* a
convolution, with a ReLU between: it cannot enter that convolution. Their modules declare
``bn_after_conv``, the (convolution, BatchNorm) pairs where the BatchNorm directly follows a
convolution (a bottleneck's ``bn2`` after ``conv1``, ``bn3`` after the 3x3 ``conv2``); those are
folded, and every BatchNorm left (a bottleneck's ``bn1``, which follows a residual sum) becomes a
:class:`ChannelAffine` (two elementwise operations).
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import nn


class ChannelAffine(nn.Module):
    """y = x * scale + shift per channel: an eval-mode BatchNorm without its statistics.

    Shapes
    ------
    scale, shift: (C,); input and output: (N, C, H, W).
    """

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.scale = nn.Parameter(scale[:, None, None])
        self.shift = nn.Parameter(shift[:, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm that follows a convolution folded.

    Folds the (convolution, BatchNorm) pairs a module declares in ``bn_after_conv`` (dotted child
    names, e.g. a basic block's ``("convs.0", "bns.0")``) and conv-BN-ReLU ``nn.Sequential``
    stacks; a convolution may itself be an ``nn.Sequential`` of convolutions (the factorized form),
    whose last convolution takes the fold.
    """
    model = copy.deepcopy(model).eval()
    uses = Counter(id(p) for m in model.modules() for p in m.parameters(recurse=False))
    with torch.no_grad():
        for module in list(model.modules()):
            for conv_name, bn_name in getattr(module, "bn_after_conv", ()):
                bn = _child(module, bn_name)
                if bn is not None:
                    _set_child(module, bn_name, _fold(_child(module, conv_name), bn, uses))
            if isinstance(module, nn.Sequential):
                children = list(module)
                for i in range(1, len(children)):
                    if isinstance(children[i], nn.BatchNorm2d) and _last_conv(children[i - 1]):
                        module[i] = _fold(children[i - 1], children[i], uses)
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.BatchNorm2d) and child.running_var is not None:
                    setattr(module, name, _affine(child))
    return model


def _child(module: nn.Module, name: str) -> nn.Module | None:
    try:
        return module.get_submodule(name)
    except AttributeError:
        return None


def _set_child(module: nn.Module, name: str, child: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, attr, child)


def _scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode BatchNorm as y = scale * x + shift."""
    inv_std = torch.rsqrt(bn.running_var + bn.eps)
    scale = bn.weight * inv_std if bn.affine else inv_std
    shift = (bn.bias if bn.affine else 0) - scale * bn.running_mean
    return scale, shift


def _affine(bn: nn.BatchNorm2d) -> ChannelAffine:
    scale, shift = _scale_shift(bn)
    return ChannelAffine(scale.detach().clone(), shift.detach().clone())


def _last_conv(module: nn.Module) -> nn.Conv2d | None:
    if isinstance(module, nn.Conv2d):
        return module
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], nn.Conv2d):
        return module[-1]
    return None


def _fold(conv_like: nn.Module, bn: nn.Module, uses: Counter) -> nn.Module:
    """Fold ``bn`` into the last convolution of ``conv_like``; return what replaces ``bn``."""
    if not isinstance(bn, nn.BatchNorm2d):
        return bn
    conv = _last_conv(conv_like)
    if conv is None or bn.running_var is None:
        return bn
    scale, shift = _scale_shift(bn)
    if uses[id(conv.weight)] > 1 and tuple(conv.kernel_size) != (1, 1):
        return ChannelAffine(scale.detach().clone(), shift.detach().clone())
    conv.weight = nn.Parameter(conv.weight * scale[:, None, None, None])
    bias = shift if conv.bias is None else conv.bias * scale + shift
    conv.bias = nn.Parameter(bias.detach().clone())
    return nn.Identity()
