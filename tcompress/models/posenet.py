"""The ``PoseNet`` of princeton-vl/pytorch_stacked_hourglass, with the same parameter names.

A checkpoint of that code (saved through its training wrapper and ``DataParallel``, keys such as
``model.module.hgs.0.0.low2.up1.conv2.conv.weight``) loads strictly into :class:`PoseNet` and
gives the same outputs: the input is **channels-last** (N, H, W, C) and the heatmaps of all stacks
come back as **one** tensor (N, n_stacks, n_joints, H / 4, W / 4).

Structure (written from the published description of the network, not copied from it): every
residual module is a pre-activation bottleneck ``BN-ReLU-conv1(1x1) BN-ReLU-conv2(3x3)
BN-ReLU-conv3(1x1)``, each convolution wrapped in a ``Conv`` module (``.conv`` with bias, optional
``.bn``), plus a 1x1 ``skip_layer`` that every residual has but only uses when its widths differ.
An hourglass of depth n is recursive: ``up1`` (skip), ``low1`` (after pooling), ``low2`` (the
hourglass of depth n - 1, or the innermost residual at depth 1), ``low3``, upsampled and added.

Mapping onto the T-Net tensor (stack, depth, pathway, block, f_in, f_out, 3, 3), with one residual
per pathway (``block`` has size 1):

- depth ``d`` is the level reached through ``d`` ``low2.`` steps, outermost first;
- pathway skip = ``up1``, down = ``low1``, up = ``low3``; the kernel is ``conv2.conv``
  (``features/2 -> features/2``);
- the innermost residual (``low2`` at the last level) and every 1x1 convolution, bias and
  BatchNorm stay dense, as do ``pre``, ``features``, ``outs`` and the merges.

The public code's ``increase`` option (wider inner levels) is not supported: with it the levels'
kernels differ in shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tcompress.models._config import PositiveIntConfig
from tcompress.models.io import ModelIO

PATHWAY_NAMES = ("up1", "low1", "low3")


@dataclass(frozen=True)
class PoseNetConfig(PositiveIntConfig):
    """Architecture of a :class:`PoseNet`; defaults are the public configuration (8 stacks).

    ``features`` is ``inp_dim``, ``n_joints`` is ``oup_dim``; ``stem_features`` (64) and
    ``stem_width`` (128) are the widths of the first convolution and of the stem's residuals.
    """

    n_stacks: int = 8
    depth: int = 4
    features: int = 256
    n_joints: int = 16
    stem_features: int = 64
    stem_width: int = 128
    in_channels: int = 3


class Conv(nn.Module):
    """A convolution with bias and ``(k - 1) // 2`` padding, optionally followed by BatchNorm
    and ReLU; parameters under ``conv.`` and ``bn.``."""

    bn_after_conv = (("conv", "bn"),)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        bn: bool = False,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2
        )
        self.bn = nn.BatchNorm2d(out_channels) if bn else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class Residual(nn.Module):
    """Pre-activation bottleneck ``in_channels -> out_channels`` (``out_channels / 2`` inside);
    ``skip_layer`` always exists, and maps the input only when the widths differ."""

    bn_after_conv = (("conv1.conv", "bn2"), ("conv2.conv", "bn3"))

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = Conv(in_channels, mid, 1, relu=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = Conv(mid, mid, 3, relu=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = Conv(mid, out_channels, 1, relu=False)
        self.skip_layer = Conv(in_channels, out_channels, 1, relu=False)
        self.need_skip = in_channels != out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        y = self.conv3(F.relu(self.bn3(y)))
        return y + (self.skip_layer(x) if self.need_skip else x)


class Hourglass(nn.Module):
    """Recursive hourglass of depth ``n``: ``up1 + upsample(low3(low2(low1(pool(x)))))``."""

    def __init__(self, n: int, features: int) -> None:
        super().__init__()
        self.up1 = Residual(features, features)
        self.low1 = Residual(features, features)
        self.low2 = Hourglass(n - 1, features) if n > 1 else Residual(features, features)
        self.low3 = Residual(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up1 = self.up1(x)
        low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2, 2))))
        if up1.shape[-2:] == tuple(2 * s for s in low.shape[-2:]):
            # A constant scale keeps exported graphs free of run-time shape arithmetic.
            return up1 + F.interpolate(low, scale_factor=2.0, mode="nearest")
        return up1 + F.interpolate(low, size=up1.shape[-2:], mode="nearest")


class PoseNet(nn.Module):
    """The stacked hourglass of princeton-vl/pytorch_stacked_hourglass (see the module docstring).

    Shapes
    ------
    input: (N, H, W, in_channels), channels last; H and W multiples of 4 * 2**depth.
    output: (N, n_stacks, n_joints, H / 4, W / 4).
    """

    def __init__(self, **config) -> None:
        super().__init__()
        self.config = cfg = PoseNetConfig(**config)
        f, stem, width = cfg.features, cfg.stem_features, cfg.stem_width
        self.pre = nn.Sequential(
            Conv(cfg.in_channels, stem, 7, 2, bn=True, relu=True),
            Residual(stem, width),
            nn.MaxPool2d(2, 2),
            Residual(width, width),
            Residual(width, f),
        )
        self.hgs = nn.ModuleList(
            nn.Sequential(Hourglass(cfg.depth, f)) for _ in range(cfg.n_stacks)
        )
        self.features = nn.ModuleList(
            nn.Sequential(Residual(f, f), Conv(f, f, 1, bn=True, relu=True))
            for _ in range(cfg.n_stacks)
        )
        self.outs = nn.ModuleList(Conv(f, cfg.n_joints, 1, relu=False) for _ in range(cfg.n_stacks))
        self.merge_features = nn.ModuleList(_merge(f, f) for _ in range(cfg.n_stacks - 1))
        self.merge_preds = nn.ModuleList(_merge(cfg.n_joints, f) for _ in range(cfg.n_stacks - 1))

    @property
    def io(self) -> ModelIO:
        return ModelIO(
            self.config.in_channels,
            ("heatmaps",),
            channels_last=True,
            stacked_output=True,
            size_multiple=4 * 2**self.config.depth,
            # the public trainer feeds pixels / 255, neither centred nor scaled
            pixel_mean=(0.0,) * self.config.in_channels,
            pixel_std=(1.0,) * self.config.in_channels,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pre(images.permute(0, 3, 1, 2))
        heatmaps = []
        for s in range(self.config.n_stacks):
            feature = self.features[s](self.hgs[s](x))
            preds = self.outs[s](feature)
            heatmaps.append(preds)
            if s < self.config.n_stacks - 1:
                x = x + self.merge_preds[s](preds) + self.merge_features[s](feature)
        return torch.stack(heatmaps, 1)

    def block_conv_names(self) -> list[tuple[tuple[int, int, int, int], str]]:
        """(index (stack, depth, pathway, 0), module name) of every 3x3 convolution of the
        T-Net tensor, in the tensor's row-major order."""
        return [
            ((s, d, p, 0), f"hgs.{s}.0.{'low2.' * d}{PATHWAY_NAMES[p]}.conv2.conv")
            for s in range(self.config.n_stacks)
            for d in range(self.config.depth)
            for p in range(3)
        ]

    @property
    def tensor_grid(self) -> tuple[int, int, int, int]:
        return (self.config.n_stacks, self.config.depth, 3, 1)


class _Merge(nn.Module):
    """A 1x1 convolution with bias, parameters under ``conv.conv.``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = Conv(in_channels, out_channels, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _merge(in_channels: int, out_channels: int) -> _Merge:
    return _Merge(in_channels, out_channels)
