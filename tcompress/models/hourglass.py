"""The T-Net-ready stacked hourglass of Kossaifi et al., CVPR 2019
(docs/design.md, "The reference network").

Every residual module inside the hourglasses is a basic block of ``block_depth`` 3x3 convolutions at
constant width, so that all of them can be stacked into one 8th-order tensor indexed by
(stack, depth, pathway, conv in block, f_in, f_out, h, w).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tcompress.models._config import PositiveIntConfig
from tcompress.models.io import ModelIO

PATHWAYS = ("skip", "down", "up")


@dataclass(frozen=True)
class HourglassConfig(PositiveIntConfig):
    """Architecture of a :class:`StackedHourglass`; the paper's configuration by default."""

    n_stacks: int = 4
    depth: int = 4
    block_depth: int = 2
    features: int = 128
    n_joints: int = 16
    in_channels: int = 3


class BasicBlock(nn.Module):
    """``block_depth`` convolutions (3x3, stride 1, padding 1, no bias) each followed by
    BatchNorm, with an identity shortcut; ReLU after every BatchNorm but the last, and after the
    sum (He et al.)."""

    def __init__(self, features: int, block_depth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(features, features, 3, padding=1, bias=False) for _ in range(block_depth)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(features) for _ in range(block_depth))

    @property
    def bn_after_conv(self) -> tuple[tuple[str, str], ...]:
        """(convolution, BatchNorm) child names where the BatchNorm directly follows the
        convolution: ``bns.i`` after ``convs.i``."""
        return tuple((f"convs.{c}", f"bns.{c}") for c in range(len(self.convs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        last = len(self.convs) - 1
        for c, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            y = bn(conv(y))
            if c < last:
                y = F.relu(y)
        return F.relu(y + x)


class HourglassLevel(nn.Module):
    """The three pathways of one hourglass level: ``skip`` at the level's resolution, ``down`` after
    2x max-pooling (encoder) and ``up`` before 2x nearest upsampling (decoder)."""

    def __init__(self, features: int, block_depth: int) -> None:
        super().__init__()
        self.skip = BasicBlock(features, block_depth)
        self.down = BasicBlock(features, block_depth)
        self.up = BasicBlock(features, block_depth)


class Hourglass(nn.Module):
    """``depth`` levels, outermost first, around a dense innermost block at the lowest resolution;
    each level's skip output is summed with its upsampled decoder output."""

    def __init__(self, features: int, depth: int, block_depth: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList(HourglassLevel(features, block_depth) for _ in range(depth))
        self.innermost = BasicBlock(features, block_depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level in self.levels:
            skips.append(level.skip(x))
            x = level.down(F.max_pool2d(x, 2))
        x = self.innermost(x)
        for level, skip in zip(reversed(self.levels), reversed(skips)):
            up = level.up(x)
            if skip.shape[-2:] == tuple(2 * s for s in up.shape[-2:]):
                # A constant scale keeps exported graphs free of run-time shape arithmetic.
                x = skip + F.interpolate(up, scale_factor=2.0, mode="nearest")
            else:  # odd sizes: max-pooling floored, so match the skip exactly
                x = skip + F.interpolate(up, size=skip.shape[-2:], mode="nearest")
        return x


def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class StackedHourglass(nn.Module):
    """Stacked hourglass network whose hourglass blocks all share one shape (T-Net ready): every
    convolution of the hourglass blocks is a dense 3x3 convolution (stride 1, padding 1, no bias).

    Parameters
    ----------
    n_stacks, depth, block_depth, features, n_joints, in_channels
        Number of hourglasses, levels per hourglass, convolutions per basic block, constant
        feature width, heatmap channels and input channels. Defaults are the paper's configuration.

    Shapes
    ------
    input: (N, in_channels, H, W) with H and W divisible by 4 * 2**depth.
    output: list of ``n_stacks`` heatmaps, each (N, n_joints, H / 4, W / 4).
    """

    def __init__(
        self,
        n_stacks: int = 4,
        depth: int = 4,
        block_depth: int = 2,
        features: int = 128,
        n_joints: int = 16,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.config = HourglassConfig(n_stacks, depth, block_depth, features, n_joints, in_channels)
        f = features
        # Stem to 1/4 resolution: 7x7 stride-2 convolution to f/2 channels, 2x max-pooling, 3x3
        # convolution to f channels, a dense basic block. Everything heavy runs at 1/4 resolution,
        # so the stem costs about a seventh of the paper network's multiply-adds.
        half = max(f // 2, 1)
        self.stem = nn.ModuleDict(
            {
                "conv": conv_bn_relu(in_channels, half, 7, stride=2),
                "expand": conv_bn_relu(half, f, 3),
                "block": BasicBlock(f, block_depth),
            }
        )
        self.hourglasses = nn.ModuleList(Hourglass(f, depth, block_depth) for _ in range(n_stacks))
        self.heads = nn.ModuleList(conv_bn_relu(f, f, 1) for _ in range(n_stacks))
        self.scores = nn.ModuleList(nn.Conv2d(f, n_joints, 1) for _ in range(n_stacks))
        # Intermediate supervision: features and heatmaps mapped back and added to the next input.
        self.merge_features = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in range(n_stacks - 1))
        self.merge_heatmaps = nn.ModuleList(nn.Conv2d(n_joints, f, 1) for _ in range(n_stacks - 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(self.stem["conv"](x), 2)
        x = self.stem["block"](self.stem["expand"](x))
        heatmaps = []
        for s, hourglass in enumerate(self.hourglasses):
            features = self.heads[s](hourglass(x))
            heatmap = self.scores[s](features)
            heatmaps.append(heatmap)
            if s < len(self.hourglasses) - 1:
                x = x + self.merge_features[s](features) + self.merge_heatmaps[s](heatmap)
        return heatmaps

    def block_convs(self) -> Iterator[tuple[tuple[int, int, int, int], nn.Conv2d]]:
        """The convolutions that form the T-Net tensor, with their (stack, depth, pathway, conv)
        index, in the tensor's order."""
        for s, hourglass in enumerate(self.hourglasses):
            for d, level in enumerate(hourglass.levels):
                for p, pathway in enumerate(PATHWAYS):
                    for c, conv in enumerate(getattr(level, pathway).convs):
                        yield (s, d, p, c), conv

    @property
    def io(self) -> ModelIO:
        return ModelIO(
            self.config.in_channels,
            tuple(f"heatmaps_{s}" for s in range(self.config.n_stacks)),
            size_multiple=4 * 2**self.config.depth,
        )

    @property
    def tensor_grid(self) -> tuple[int, int, int, int]:
        cfg = self.config
        return (cfg.n_stacks, cfg.depth, 3, cfg.block_depth)

    def block_conv_names(self) -> list[tuple[tuple[int, int, int, int], str]]:
        """(index (stack, depth, pathway, conv), module name) of every convolution of the T-Net
        tensor, in the tensor's row-major order."""
        return [
            (index, self.block_key(index).removesuffix(".weight"))
            for index, _ in self.block_convs()
        ]

    @staticmethod
    def block_key(index: tuple[int, int, int, int]) -> str:
        """State-dict key of the kernel at ``index`` = (stack, depth, pathway, conv)."""
        s, d, p, c = index
        return f"hourglasses.{s}.levels.{d}.{PATHWAYS[p]}.convs.{c}.weight"


def random_hourglass(seed: int = 0, **config) -> StackedHourglass:
    """A :class:`StackedHourglass` with seeded random weights and non-trivial BatchNorm statistics
    and affine parameters, in eval mode: a stand-in for a trained network in demos, tests and
    benchmarks (with identity BatchNorms, eval-mode outputs would not exercise them)."""
    torch.manual_seed(seed)
    model = StackedHourglass(**config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model.eval()
