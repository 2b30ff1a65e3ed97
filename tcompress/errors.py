"""Errors raised for bad input: one readable line naming what was given and what was expected."""


class TcompressError(ValueError):
    """Base class of every error tcompress raises for bad input."""


class CheckpointError(TcompressError):
    """A checkpoint file is missing, unreadable, unsafe or of another architecture."""


class RankError(TcompressError):
    """Ranks that do not fit the tensor they are meant for."""


class MethodError(TcompressError):
    """An unknown or unsupported decomposition method."""


class OutputError(TcompressError):
    """An output path that cannot be written as asked."""


class DataError(TcompressError):
    """A data set, annotation file or image that is missing, malformed or unreadable."""
