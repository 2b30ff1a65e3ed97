"""Reference networks that tcompress converts."""

from tcompress.models.hourglass import PATHWAYS, HourglassConfig, StackedHourglass

__all__ = ["PATHWAYS", "HourglassConfig", "StackedHourglass"]
