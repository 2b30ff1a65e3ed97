"""What the architecture configurations share: every field a positive integer, a dict form."""

from __future__ import annotations

from dataclasses import asdict

from tcompress.errors import TcompressError


class PositiveIntConfig:
    """Mixin for frozen dataclasses whose fields are all positive integers."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TcompressError(f"{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)
