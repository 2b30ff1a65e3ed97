"""The ``tcompress`` command line. Commands parse and forward to the library; only this package
prints. Heavy imports happen inside command bodies so that ``tcompress --help`` is instant."""

from __future__ import annotations

import functools
import sys

import click

from tcompress import __version__


def handle_errors(fn=None, /, **flags: str):
    """Turn a :class:`~tcompress.errors.TcompressError` into one line on stderr, exit status 2,
    the library's parameters it names spelled as the command's flags
    (:meth:`~tcompress.errors.TcompressError.for_command`): ``--`` and the name with hyphens, or
    the flag given for it, as in ``@handle_errors(teacher="--distill-from")``."""
    if fn is None:
        return functools.partial(handle_errors, **flags)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from tcompress.errors import TcompressError

        try:
            return fn(*args, **kwargs)
        except TcompressError as e:
            click.echo(f"Error: {one_line(e, flags)}", err=True)
            sys.exit(2)

    return wrapper


def images_option(fn):
    """``--images DIR``: the folder an MPII annotation file's image paths are relative to."""
    from pathlib import Path

    return click.option(
        "--images",
        type=click.Path(path_type=Path),
        default=None,
        help="MPII: folder the annotations' image paths are relative to [default: images/ "
        "beside the annotation file if the images are there].",
    )(fn)


def one_line(error: BaseException, flags: dict[str, str] | None = None) -> str:
    """The message of ``error`` (a :class:`~tcompress.errors.TcompressError`'s with its
    parameters spelled as ``flags``); for one re-raised from a DataLoader worker (whose text is
    the worker's whole traceback), the original message alone."""
    from tcompress.errors import TcompressError

    text = error.for_command(flags) if isinstance(error, TcompressError) else str(error)
    if "DataLoader worker" not in text or "Original Traceback" not in text:
        return text
    last = next((line for line in reversed(text.splitlines()) if line.strip()), text)
    name, sep, message = last.partition(": ")
    return message if sep and name.split(".")[-1].isidentifier() else last


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tcompress")
def main() -> None:
    """Compress pretrained stacked hourglasses into single-tensor T-Nets (Kossaifi et al., 2019).

    \b
    tcompress demo                                        # small end-to-end run, no files needed
    tcompress convert hg.pth --ranks 4,4,3,2,64,64,3,3 -o tnet.pt
    tcompress info tnet.pt
    """


from tcompress.cli import analyze as _analyze  # noqa: E402,F401
from tcompress.cli import bench as _bench  # noqa: E402,F401
from tcompress.cli import compare as _compare  # noqa: E402,F401
from tcompress.cli import convert as _convert  # noqa: E402,F401  (registers commands)
from tcompress.cli import demo as _demo  # noqa: E402,F401
from tcompress.cli import evaluate as _evaluate  # noqa: E402,F401
from tcompress.cli import export as _export  # noqa: E402,F401
from tcompress.cli import info as _info  # noqa: E402,F401
from tcompress.cli import recalibrate as _recalibrate  # noqa: E402,F401
from tcompress.cli import train as _train  # noqa: E402,F401
