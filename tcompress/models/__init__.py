"""Reference networks that tcompress converts, and the bundled pretrained hourglass."""

from tcompress.models.hourglass import (
    PATHWAYS,
    HourglassConfig,
    StackedHourglass,
    random_hourglass,
)
from tcompress.models.pretrained import PRETRAINED, pretrained, pretrained_info, pretrained_path

__all__ = [
    "PATHWAYS",
    "PRETRAINED",
    "HourglassConfig",
    "StackedHourglass",
    "pretrained",
    "pretrained_info",
    "pretrained_path",
    "random_hourglass",
]
