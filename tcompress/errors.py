"""Errors raised for bad input: one readable line naming what was given and what was expected.

Every error tcompress raises for bad input is a :class:`TcompressError` (a ``ValueError``, so
``except ValueError`` keeps working); the CLI prints its message as one line. The kinds:

- :class:`CheckpointError`: a checkpoint file that cannot be read as a network, or a model
  :func:`tcompress.save` cannot write;
- :class:`RankError`: ranks that do not fit the tensor they are meant for;
- :class:`MethodError`: an unknown or unsupported decomposition method;
- :class:`DecompositionError`: a tensor or setting a decomposition cannot take;
- :class:`ForwardFormError`: an unknown forward form, or one a T-Net cannot run in;
- :class:`FamilyError`: a pattern that selects no usable kernel family;
- :class:`OutputError`: an output path that cannot be written as asked;
- :class:`DataError`: a data set, annotation file or image that cannot be used;
- :class:`EvaluationError`: heatmaps, coordinates or evaluation options that do not fit;
- :class:`ExportError`: an ONNX export that cannot be made as asked, or whose validation failed;
- :class:`BenchError`: an ONNX file or setting that cannot be counted or measured as asked.

This module imports nothing of tcompress: every other module may import it.
"""


class TcompressError(ValueError):
    """Base class of every error tcompress raises for bad input."""


class CheckpointError(TcompressError):
    """A checkpoint file is missing, unreadable, unsafe or of another architecture, or a model
    is not one :func:`tcompress.save` writes."""


class RankError(TcompressError):
    """Ranks that do not fit the tensor they are meant for."""


class MethodError(TcompressError):
    """An unknown or unsupported decomposition method."""


class DecompositionError(TcompressError):
    """A tensor (type, dtype) or a setting (sweep count) that a decomposition cannot take."""


class ForwardFormError(TcompressError):
    """An unknown forward form, or one a T-Net cannot run in."""


class FamilyError(TcompressError):
    """A pattern that selects no usable kernel family."""


class OutputError(TcompressError):
    """An output path that cannot be written as asked."""


class DataError(TcompressError):
    """A data set, annotation file or image that is missing, malformed or unreadable."""


class EvaluationError(TcompressError):
    """Heatmaps, coordinates or options of the wrong type, shape or value."""


class ExportError(TcompressError):
    """An export that cannot be made as asked, or whose validation failed."""


class BenchError(TcompressError):
    """An ONNX file, or a setting, that cannot be counted or measured as asked."""
