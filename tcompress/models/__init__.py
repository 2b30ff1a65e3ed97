"""Networks that tcompress converts: its reference hourglass, the public hourglass layouts it
reads (bearpaw/pytorch-pose, princeton-vl PoseNet), and the bundled pretrained hourglass."""

from tcompress.models.bearpaw import BearpawConfig, BearpawHourglass
from tcompress.models.hourglass import (
    PATHWAYS,
    HourglassConfig,
    StackedHourglass,
    random_hourglass,
)
from tcompress.models.io import ModelIO
from tcompress.models.posenet import PoseNet, PoseNetConfig
from tcompress.models.pretrained import PRETRAINED, pretrained, pretrained_info, pretrained_path

__all__ = [
    "PATHWAYS",
    "BearpawConfig",
    "BearpawHourglass",
    "ModelIO",
    "PoseNet",
    "PoseNetConfig",
    "PRETRAINED",
    "HourglassConfig",
    "StackedHourglass",
    "pretrained",
    "pretrained_info",
    "pretrained_path",
    "random_hourglass",
]
