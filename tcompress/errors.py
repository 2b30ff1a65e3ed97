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

Naming the caller's parameters
------------------------------
A message that tells the caller what to change names the library's parameter, wrapped in
:func:`param` inside the message's f-string; that is the one line a raise site needs::

    raise OutputError(f"output '{path}' exists; pass {param('force', True)} to overwrite it")

``str(error)`` spells it as Python does (``pass force=True to overwrite it``), and the command
line, which knows its flags, prints :meth:`TcompressError.for_command` (``pass --force to
overwrite it``). The spellings:

=====================================  ======================  ==========================
at the raise site                      ``str(error)``          ``error.for_command()``
=====================================  ======================  ==========================
``param("lr")``                        ``lr``                  ``--lr``
``param("force", True)``               ``force=True``          ``--force``
``param("device", "cpu")``             ``device='cpu'``        ``--device cpu``
``param("teacher", metavar="ORIG")``   ``teacher=ORIG``        ``--teacher ORIG``
=====================================  ======================  ==========================

A flag is ``--`` and the parameter's name with hyphens for underscores, unless the command maps
the name to its own flag (``for_command({"teacher": "--distill-from"})``; in the CLI,
``@handle_errors(teacher="--distill-from")``). A boolean value is a bare flag.
:attr:`TcompressError.params` lists the parameters a message names. :func:`param` is for the
messages of these classes only: elsewhere its marks would show.

This module imports nothing of tcompress: every other module may import it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# A parameter in a message, between private-use characters no message holds otherwise:
# OPEN name SEP python-spelling SEP flag-value CLOSE (flag-value empty for a bare flag).
_OPEN, _SEP, _CLOSE = "\ue000", "\ue001", "\ue002"
_MARK = re.compile(f"{_OPEN}([^{_SEP}]*){_SEP}([^{_SEP}]*){_SEP}([^{_CLOSE}]*){_CLOSE}")
_UNSET = object()


def param(name: str, value: object = _UNSET, *, metavar: str | None = None) -> str:
    """The caller's parameter ``name`` as a message of a :class:`TcompressError` names it: with
    no value (``lr``), a value (``device='cpu'``; a boolean is a bare flag on the command line)
    or a placeholder for one (``metavar="ORIGINAL"``: ``teacher=ORIGINAL``). See the module's
    docstring."""
    if metavar is not None:
        python, flag_value = f"{name}={metavar}", metavar
    elif value is _UNSET:
        python, flag_value = name, ""
    else:
        python = f"{name}={value!r}"
        flag_value = "" if isinstance(value, bool) else str(value)
    return f"{_OPEN}{name}{_SEP}{python}{_SEP}{flag_value}{_CLOSE}"


class TcompressError(ValueError):
    """Base class of every error tcompress raises for bad input.

    ``str(error)`` names the caller's parameters as Python does, :meth:`for_command` as a
    command line's flags; :attr:`params` are the names (see :func:`param`)."""

    def __init__(self, *args: object) -> None:
        marked = args[0] if args and isinstance(args[0], str) else None
        self._marked = marked
        self.params: tuple[str, ...] = tuple(m[1] for m in _MARK.finditer(marked or ""))
        if marked is not None:
            args = (_MARK.sub(lambda m: m[2], marked), *args[1:])
        super().__init__(*args)

    def for_command(self, flags: Mapping[str, str] | None = None) -> str:
        """The message with every parameter it names spelled as a flag: ``flags[name]``, else
        ``--`` and the name with hyphens, followed by the value's text when it has one."""
        if self._marked is None or len(self.args) != 1:
            return str(self)
        flags = flags or {}

        def spell(m: re.Match) -> str:
            flag = flags.get(m[1], "--" + m[1].replace("_", "-"))
            return f"{flag} {m[3]}" if m[3] else flag

        return _MARK.sub(spell, self._marked)

    def __reduce__(self):
        # Pickled (e.g. from a DataLoader worker) with the parameters it names.
        args = self.args if self._marked is None else (self._marked, *self.args[1:])
        return type(self), args, self.__dict__


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
