"""Reference networks that tcompress converts."""

from tcompress.models.hourglass import (
    PATHWAYS,
    HourglassConfig,
    StackedHourglass,
    random_hourglass,
)

__all__ = ["PATHWAYS", "HourglassConfig", "StackedHourglass", "random_hourglass"]
