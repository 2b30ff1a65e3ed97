"""Compression methods, registered by name: each module of this package owns one method.

A method owns everything about itself: its rank grammar and validation, its parameter count, the
spectra its ranks are chosen from, its decomposition, the empty modules a saved file loads into,
its factorized and dense forms and how the command line describes it. The rest of tcompress asks
the registry (:func:`get`) and never branches on a method's name.

This module is torch-free: the names and kinds below are the vocabulary the command line offers
as choices before anything heavy is imported. A method's module is imported on first lookup.

Adding a method is one module here (a :class:`~tcompress.methods.base.TensorMethod` or
:class:`~tcompress.methods.base.LayerMethod` instance called ``METHOD``) and one line in
:data:`REGISTRY`.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

from tcompress.errors import MethodError

#: A T-Net: every kernel of the family is a slice of one low-rank tensor.
TNET = "tnet"
#: A layer-wise network: every kernel of the family decomposed on its own.
LAYERWISE = "layerwise"


class Entry(NamedTuple):
    """A registered method: its kind, its module in this package and its rank grammar in words
    (the command line's help, before anything heavy is imported)."""

    kind: str
    module: str
    ranks: str


#: name -> :class:`Entry`. The one registration of each method.
REGISTRY: dict[str, Entry] = {
    "tucker": Entry(
        TNET,
        "tucker",
        "one rank per mode ('full' or '-' keeps a mode), or named overrides such as "
        "f_in=64,f_out=64",
    ),
    "mps": Entry(TNET, "mps", "the bond ranks between neighbouring modes, or one for all bonds"),
    "cp": Entry(TNET, "cp", "one rank (the number of rank-one terms)"),
    "tr": Entry(TNET, "tr", "the bond ranks, the last closing the ring, or one for all bonds"),
    "layerwise-tucker": Entry(
        LAYERWISE,
        "layerwise_tucker",
        "R_in,R_out per layer (or one value for both; R_in,R_out,R_h,R_w for Tucker-4)",
    ),
    "layerwise-cp": Entry(LAYERWISE, "layerwise_cp", "R per layer (rank-one terms)"),
    "tai": Entry(LAYERWISE, "tai", "K per layer (intermediate channels)"),
}


def names(kind: str | None = None) -> tuple[str, ...]:
    """The registered method names, all of them or those of one ``kind`` (:data:`TNET` or
    :data:`LAYERWISE`), in registration order."""
    return tuple(name for name, e in REGISTRY.items() if kind is None or e.kind == kind)


def check(name: str) -> str:
    """``name`` in its registered spelling (case-insensitive); an unknown name is a
    :class:`~tcompress.errors.MethodError` listing the registered ones."""
    key = name.lower() if isinstance(name, str) else None
    if key not in REGISTRY:
        raise MethodError(f"method {name!r} is unknown; expected one of {', '.join(REGISTRY)}")
    return key


def kind(name: str) -> str:
    """:data:`TNET` or :data:`LAYERWISE` (torch-free)."""
    return REGISTRY[check(name)].kind


def rank_help() -> str:
    """Every method's rank grammar, one sentence each (torch-free)."""
    return " ".join(f"{name}: {e.ranks}." for name, e in REGISTRY.items())


def get(name: str):
    """The method registered as ``name`` (its module imported on first use)."""
    key = check(name)
    return importlib.import_module(f"{__name__}.{REGISTRY[key].module}").METHOD
