"""Fold every BatchNorm into the convolution before it (eval-mode semantics).

In eval mode a BatchNorm is the per-channel affine map y = s * x + t with s = gamma / sqrt(var +
eps) and t = beta - s * mean. After a convolution with weight K and bias b it folds into that
convolution: K' = s[:, None, None, None] * K, b' = s * b + t.

When the convolution's weight is shared by several layers (Tucker's 1x1 U6 and, at the input,
U5^T; the h x w convolution of an MPS or tensor-ring T-Net), folding would give each layer its own
copy of the shared factor. The BatchNorm then becomes a :class:`ChannelAffine` instead (the
layer's own bias, if any, joins its shift), so every shared factor is stored once and the file
holds the parameters the T-Net is counted with.

Decision, by measurement (``benchmarks/bench_shared_factors.py``,
``docs/records/shared_factors.json``; paper-configuration Tucker T-Net, ranks 4,4,3,2,64,64,3,3,
ONNX Runtime on the CPU, 2 threads, batch 1, 256x256): the shared U6 with a ChannelAffine after it
is kept for *every* shared convolution, the 1x1 included. Its file holds 5,269,440 parameters (342
initializers) against 6,035,392 (341) for folding into per-layer copies of U6, 2.99x smaller than
the original's export instead of 2.61x, and it runs as fast: ONNX Runtime folds each Mul and Add
into a per-layer copy of the weight when it loads the file (its optimised graph is the per-layer
fold's, node for node), so the copies exist in memory only. ``copy_shared=True`` restores per-layer
folding of a shared 1x1, for that comparison.

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


def fold_batchnorm(model: nn.Module, *, copy_shared: bool = False) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm that follows a convolution folded.

    Folds the (convolution, BatchNorm) pairs a module declares in ``bn_after_conv`` (dotted child
    names, e.g. a basic block's ``("convs.0", "bns.0")``) and conv-BN-ReLU ``nn.Sequential``
    stacks; a convolution may itself be an ``nn.Sequential`` of convolutions (the factorized form),
    whose last convolution takes the fold. A BatchNorm after a convolution whose weight several
    layers share becomes a :class:`ChannelAffine` (the convolution's bias, if any, moves into its
    shift), so the shared weight stays one parameter.

    ``copy_shared=True`` restores the earlier rule for a shared *1x1* convolution (Tucker's U6):
    the BatchNorm folds into a per-layer copy of it, which stores the factor once per layer. It
    is kept only to measure the two against each other (``benchmarks/bench_shared_factors.py``).
    """
    model = copy.deepcopy(model).eval()
    uses = Counter(id(p) for m in model.modules() for p in m.parameters(recurse=False))
    with torch.no_grad():
        for module in list(model.modules()):
            for conv_name, bn_name in getattr(module, "bn_after_conv", ()):
                bn = _child(module, bn_name)
                if bn is not None:
                    conv = _child(module, conv_name)
                    _set_child(module, bn_name, _fold(conv, bn, uses, copy_shared))
            if isinstance(module, nn.Sequential):
                children = list(module)
                for i in range(1, len(children)):
                    if isinstance(children[i], nn.BatchNorm2d) and _last_conv(children[i - 1]):
                        module[i] = _fold(children[i - 1], children[i], uses, copy_shared)
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


def _fold(conv_like: nn.Module, bn: nn.Module, uses: Counter, copy_shared: bool) -> nn.Module:
    """Fold ``bn`` into the last convolution of ``conv_like``; return what replaces ``bn``."""
    if not isinstance(bn, nn.BatchNorm2d):
        return bn
    conv = _last_conv(conv_like)
    if conv is None or bn.running_var is None:
        return bn
    scale, shift = _scale_shift(bn)
    shared = uses[id(conv.weight)] > 1
    if shared and not (copy_shared and tuple(conv.kernel_size) == (1, 1)):
        # The weight stays shared; the layer's own bias (if any) joins the shift:
        # scale * (K x + b) + shift = scale * K x + (scale * b + shift).
        if conv.bias is not None:
            shift = scale * conv.bias + shift
            conv.bias = None
        return ChannelAffine(scale.detach().clone(), shift.detach().clone())
    conv.weight = nn.Parameter(conv.weight * scale[:, None, None, None])
    bias = shift if conv.bias is None else conv.bias * scale + shift
    conv.bias = nn.Parameter(bias.detach().clone())
    return nn.Identity()
