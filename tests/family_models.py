"""Networks with repeated blocks, built by factories the tests name with ``--arch``."""

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (a 1x1 strided shortcut when the block downsamples)."""

    def __init__(self, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = nn.Conv2d(width, width, 1, stride) if stride > 1 else None

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    """Three stages of two blocks at one width; the third stage downsamples in its first conv
    (so that kernel differs in stride from the rest of the family)."""

    def __init__(self, width: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.layer1 = nn.Sequential(Block(width), Block(width))
        self.layer2 = nn.Sequential(Block(width), Block(width))
        self.layer3 = nn.Sequential(Block(width, stride=2), Block(width))
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(F.relu(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


class UNet(nn.Module):
    """Encoder ``down.<level>`` and decoder ``up.<level>`` of two 3x3 convs at one width, a 1x1
    ``merge`` after each skip concatenation, two outputs (segmentation and its coarse copy)."""

    def __init__(self, width: int = 8, levels: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)

        def double():
            return nn.ModuleDict(
                {
                    "conv1": nn.Conv2d(width, width, 3, padding=1),
                    "conv2": nn.Conv2d(width, width, 3, padding=1),
                }
            )

        self.down = nn.ModuleList(double() for _ in range(levels))
        self.up = nn.ModuleList(double() for _ in range(levels))
        self.merge = nn.ModuleList(nn.Conv2d(2 * width, width, 1) for _ in range(levels))
        self.bottom = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Conv2d(width, classes, 1)

    @staticmethod
    def _run(block, x):
        return F.relu(block["conv2"](F.relu(block["conv1"](x))))

    def forward(self, x):
        x = F.relu(self.stem(x))
        skips = []
        for block in self.down:
            x = self._run(block, x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        coarse = F.relu(self.bottom(x))
        x = coarse
        for block, merge in zip(self.up, self.merge):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self._run(block, merge(torch.cat([x, skips.pop()], 1)))
        return self.head(x), coarse


def resnet() -> ResNet:
    return ResNet()


def unet() -> UNet:
    return UNet()


def random_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded weights and BatchNorm statistics away from identity, in eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()
