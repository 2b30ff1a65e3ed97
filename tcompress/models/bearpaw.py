"""The ``hg`` stacked hourglass of bearpaw/pytorch-pose, with the same parameter names.

A checkpoint of that code (``hg.0.hg.3.1.0.conv2.weight``, ``res.``, ``fc.``, ``score.``, ``fc_.``,
``score_.``) loads strictly into :class:`BearpawHourglass` and gives the same outputs: a list of
per-stack heatmaps (N, n_joints, H / 4, W / 4).

Structure (written from the published description of the network, not copied from it): every
residual module is a pre-activation bottleneck ``BN-ReLU-conv1(1x1) BN-ReLU-conv2(3x3)
BN-ReLU-conv3(1x1)`` with biases, of width ``features`` outside and ``features / 2`` inside (the
3x3 convolution is ``features/2 -> features/2``). The hourglass of depth ``depth`` keeps its levels
in ``hg.<i>``, **innermost first**: level ``i`` holds ``[up1, low1, low3]`` (and, for ``i = 0``, a
fourth: the innermost block), each a sequence of ``n_blocks`` bottlenecks.

The stem is ``conv1`` (7x7, stride 2, ``stem_features`` wide) and ``bn1``, then three single
bottlenecks whose widths follow the public constructor, which reads its running width back as the
next one's ``planes``: ``layer1`` stem -> 2 stem, a 2x2 max-pool, ``layer2`` 2 stem -> 4 stem
(``planes`` 2 stem), ``layer3`` 4 stem -> ``features`` (``planes`` features / 2). A bottleneck has
a 1x1 ``downsample`` (with a bias) exactly where its input width differs from its output width:
at the public widths (stem 64, features 256) ``layer1`` and ``layer2`` have one, ``layer3`` not.

Mapping onto the T-Net tensor (stack, depth, pathway, block, f_in, f_out, 3, 3):

- depth ``d`` counts levels **outermost first** as in :class:`~tcompress.models.StackedHourglass`:
  ``d = depth - 1 - i``;
- pathway skip = ``up1`` (``[0]``, at the level's resolution), down = ``low1`` (``[1]``, after
  pooling), up = ``low3`` (``[2]``, before upsampling);
- block = the bottleneck's position in its sequence (``n_blocks`` of them), one 3x3 each;
- the innermost sequence ``hg.<s>.hg.0.3`` and every 1x1 convolution, bias and BatchNorm stay
  dense, as do the stem (``conv1``, ``layer1-3``), ``res``, ``fc``, ``score``, ``fc_``, ``score_``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tcompress.errors import TcompressError
from tcompress.models._config import PositiveIntConfig
from tcompress.models.io import ModelIO

#: The public trainer feeds RGB in [0, 1] minus the MPII training images' mean colour
#: (``data/mpii/mean.pth.tar`` of that repository), not divided by a deviation.
PIXEL_MEAN = (0.440442830324173, 0.4440267086029053, 0.4326828420162201)

#: Pathway (skip, down, up) -> position of its sequence in a level's ModuleList.
PATHWAY_SLOTS = (0, 1, 2)
INNERMOST_SLOT = 3


@dataclass(frozen=True)
class BearpawConfig(PositiveIntConfig):
    """Architecture of a :class:`BearpawHourglass`; defaults are the public ``hg2``.

    ``features`` is the width between blocks (``num_feats * 2`` in the public code, 256), the
    bottlenecks' 3x3 convolutions are ``features // 2`` wide; ``stem_features`` is the width of
    the first convolution (64).
    """

    n_stacks: int = 2
    n_blocks: int = 4
    n_joints: int = 16
    depth: int = 4
    features: int = 256
    stem_features: int = 64
    in_channels: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.features % 2:
            raise TcompressError(
                f"features must be even (bottlenecks are features/2 wide), got {self.features}"
            )


class PreActBottleneck(nn.Module):
    """BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1 (all with biases) plus the input, ``planes`` wide
    inside and ``2 * planes`` at the output; a 1x1 ``downsample`` maps the input when widths
    differ."""

    #: (convolution, the BatchNorm that directly follows it): what BatchNorm folding may fuse.
    bn_after_conv = (("conv1", "bn2"), ("conv2", "bn3"))

    def __init__(self, in_channels: int, planes: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, planes, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 2 * planes, 1)
        if in_channels != 2 * planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, 2 * planes, 1))
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        y = self.conv3(F.relu(self.bn3(y)))
        return y + (x if self.downsample is None else self.downsample(x))


def _sequence(in_channels: int, planes: int, n: int) -> nn.Sequential:
    return nn.Sequential(
        *(PreActBottleneck(in_channels if b == 0 else 2 * planes, planes) for b in range(n))
    )


class BearpawHourglassModule(nn.Module):
    """One hourglass: ``hg[i]`` = [up1, low1, low3] (+ innermost for i = 0), innermost first."""

    def __init__(self, features: int, depth: int, n_blocks: int) -> None:
        super().__init__()
        planes = features // 2
        self.hg = nn.ModuleList(
            nn.ModuleList(_sequence(features, planes, n_blocks) for _ in range(4 if i == 0 else 3))
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level in reversed(self.hg):  # outermost first
            skips.append(level[0](x))
            x = level[1](F.max_pool2d(x, 2, stride=2))
        x = self.hg[0][INNERMOST_SLOT](x)
        for level in self.hg:  # innermost first
            x = level[2](x)
            # A constant scale keeps exported graphs free of run-time shape arithmetic.
            x = skips.pop() + F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x


class BearpawHourglass(nn.Module):
    """The ``hg`` network of bearpaw/pytorch-pose (see the module docstring).

    Shapes
    ------
    input: (N, in_channels, H, W), H and W multiples of 4 * 2**depth.
    output: list of ``n_stacks`` heatmaps, each (N, n_joints, H / 4, W / 4).
    """

    def __init__(self, **config) -> None:
        super().__init__()
        self.config = cfg = BearpawConfig(**config)
        f, stem = cfg.features, cfg.stem_features
        self.conv1 = nn.Conv2d(cfg.in_channels, stem, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(stem)
        # The public constructor widens as it goes: layer1 maps stem -> 2 stem and layer2 reads
        # that width back as its planes, 2 stem -> 4 stem; layer3 brings 4 stem to features.
        self.layer1 = _sequence(stem, stem, 1)
        self.layer2 = _sequence(2 * stem, 2 * stem, 1)
        self.layer3 = _sequence(4 * stem, f // 2, 1)
        self.hg = nn.ModuleList(
            BearpawHourglassModule(f, cfg.depth, cfg.n_blocks) for _ in range(cfg.n_stacks)
        )
        self.res = nn.ModuleList(_sequence(f, f // 2, cfg.n_blocks) for _ in range(cfg.n_stacks))
        self.fc = nn.ModuleList(
            nn.Sequential(nn.Conv2d(f, f, 1), nn.BatchNorm2d(f), nn.ReLU())
            for _ in range(cfg.n_stacks)
        )
        self.score = nn.ModuleList(nn.Conv2d(f, cfg.n_joints, 1) for _ in range(cfg.n_stacks))
        self.fc_ = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in range(cfg.n_stacks - 1))
        self.score_ = nn.ModuleList(nn.Conv2d(cfg.n_joints, f, 1) for _ in range(cfg.n_stacks - 1))

    bn_after_conv = (("conv1", "bn1"),)

    @property
    def io(self) -> ModelIO:
        n = self.config.n_stacks
        rgb = self.config.in_channels == 3
        return ModelIO(
            self.config.in_channels,
            tuple(f"heatmaps_{s}" for s in range(n)),
            size_multiple=4 * 2**self.config.depth,
            pixel_mean=PIXEL_MEAN if rgb else None,
            pixel_std=(1.0, 1.0, 1.0) if rgb else None,
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(F.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(F.max_pool2d(x, 2, stride=2)))
        heatmaps = []
        for s in range(self.config.n_stacks):
            y = self.fc[s](self.res[s](self.hg[s](x)))
            score = self.score[s](y)
            heatmaps.append(score)
            if s < self.config.n_stacks - 1:
                x = x + self.fc_[s](y) + self.score_[s](score)
        return heatmaps

    def block_conv_names(self) -> list[tuple[tuple[int, int, int, int], str]]:
        """(index (stack, depth, pathway, block), module name) of every 3x3 convolution of the
        T-Net tensor, in the tensor's row-major order."""
        cfg = self.config
        return [
            ((s, d, p, b), f"hg.{s}.hg.{cfg.depth - 1 - d}.{PATHWAY_SLOTS[p]}.{b}.conv2")
            for s in range(cfg.n_stacks)
            for d in range(cfg.depth)
            for p in range(3)
            for b in range(cfg.n_blocks)
        ]

    @property
    def tensor_grid(self) -> tuple[int, int, int, int]:
        return (self.config.n_stacks, self.config.depth, 3, self.config.n_blocks)
