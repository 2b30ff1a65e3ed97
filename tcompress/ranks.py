"""Parse and validate ranks, in one place, for every method.

Accepted forms (DESIGN section 5):

- Tucker: one rank per mode, ``"4,4,3,2,64,64,3,3"``, where ``full`` or ``-`` keeps a mode; named
  overrides ``"f_in=64,f_out=64"`` (the other modes full); ``"full"``. In Python: a sequence of ints
  (``None`` keeps a mode), a dict ``{mode name: rank}``, or the same strings.
- MPS: the N-1 bond ranks, or one value for every bond, or ``"full"``; a bond above its maximal TT
  rank (the smaller of the products of the mode sizes on either side) is capped, and the cap is
  reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tcompress.decompose import max_tt_ranks
from tcompress.errors import MethodError, RankError

METHODS = ("tucker", "mps", "cp")
_FULL = ("full", "-")


@dataclass(frozen=True)
class ResolvedRanks:
    """Validated ranks of one method for one tensor shape; ``notes`` says what was capped."""

    method: str
    ranks: tuple[int, ...]
    notes: tuple[str, ...] = field(default=())


def check_method(method: str) -> str:
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise MethodError(f"method {method!r} is unknown; expected one of {', '.join(METHODS)}")
    return method.lower()


def resolve_ranks(
    ranks, method: str, shape: Sequence[int], mode_names: Sequence[str]
) -> ResolvedRanks:
    """Turn any accepted form of ``ranks`` into validated integers for ``method`` on ``shape``."""
    method = check_method(method)
    shape = tuple(int(s) for s in shape)
    if method == "tucker":
        return ResolvedRanks(method, _tucker(ranks, shape, tuple(mode_names)))
    if method == "cp":
        return ResolvedRanks(method, (_cp(ranks, shape),))
    return _mps(ranks, shape)


def _cp(ranks, shape: tuple[int, ...]) -> int:
    """One CP rank R >= 1 (no 'full': a CP rank that represents W exactly is not known)."""
    if ranks is None or isinstance(ranks, Mapping) or (isinstance(ranks, str) and "=" in ranks):
        raise RankError(
            f"CP needs one rank, the number of rank-one terms, e.g. --ranks 256; got {_show(ranks)}"
        )
    values = _items(ranks)
    if len(values) != 1 or (isinstance(values[0], str) and values[0].lower() in _FULL):
        raise RankError(
            f"CP needs one rank, the number of rank-one terms, e.g. --ranks 256; got {_show(ranks)}"
        )
    return _one(values[0], "CP rank", math.prod(shape), cap=True)


def _tucker(ranks, shape: tuple[int, ...], names: tuple[str, ...]) -> tuple[int, ...]:
    n = len(shape)
    expected = f"{n} Tucker ranks, one per mode ({', '.join(names)})"
    if ranks is None or (isinstance(ranks, str) and ranks.strip().lower() in ("", *_FULL)):
        return shape
    if isinstance(ranks, str) and "=" in ranks:
        ranks = _named(ranks, names)
    if isinstance(ranks, Mapping):
        unknown = [k for k in ranks if k not in names]
        if unknown:
            raise RankError(
                f"ranks name unknown mode(s) {', '.join(map(repr, unknown))}; "
                f"expected mode names from {', '.join(names)}"
            )
        values = [ranks.get(name) for name in names]
    else:
        values = _items(ranks)
    if len(values) != n:
        raise RankError(f"got {len(values)} rank(s) ({_show(ranks)}); expected {expected}")
    return tuple(_one(v, f"rank of mode {names[k]}", shape[k]) for k, v in enumerate(values))


def _mps(ranks, shape: tuple[int, ...]) -> ResolvedRanks:
    limits = max_tt_ranks(shape)
    n = len(limits)
    if ranks is None or (isinstance(ranks, str) and ranks.strip().lower() in ("", *_FULL)):
        return ResolvedRanks("mps", limits)
    if isinstance(ranks, Mapping) or (isinstance(ranks, str) and "=" in ranks):
        raise RankError(
            f"MPS ranks are {n} bond ranks or one value for all bonds, got {_show(ranks)}; "
            "named modes apply to Tucker only"
        )
    values = _items(ranks)
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise RankError(
            f"got {len(values)} MPS bond rank(s) ({_show(ranks)}); expected {n} bond ranks "
            "(one between each pair of neighbouring modes) or one value for all bonds"
        )
    bonds, notes = [], []
    for k, v in enumerate(values):
        bond = _one(v, f"MPS bond rank {k + 1}", limits[k], cap=True)
        # TT-SVD can keep at most min(rows, columns) of the k-th unfolding: rows are the previous
        # bond times this mode's size, columns the product of the remaining modes.
        limit = min(limits[k], (bonds[-1] if bonds else 1) * shape[k])
        if bond > limit:
            why = "its maximal TT rank" if limit == limits[k] else f"bond {k} x {shape[k]}"
            notes.append(f"bond {k + 1}: {bond} capped at {limit} ({why})")
            bond = limit
        bonds.append(bond)
    return ResolvedRanks("mps", tuple(bonds), tuple(notes))


def fixed_ranks(
    ranks, method: str, shape: Sequence[int], mode_names: Sequence[str]
) -> list[int | None]:
    """The ranks a user fixed when the rest are to be chosen (``--ranks`` with ``--ratio``):
    one entry per rank, ``None`` where the value was ``full``, ``-`` or not named."""
    method = check_method(method)
    shape, names = tuple(int(s) for s in shape), tuple(mode_names)
    limits = shape if method == "tucker" else max_tt_ranks(shape)
    if ranks is None or (isinstance(ranks, str) and ranks.strip().lower() in ("", *_FULL)):
        return [None] * len(limits)
    if isinstance(ranks, str) and "=" in ranks:
        if method != "tucker":
            raise RankError("named modes apply to Tucker only")
        ranks = _named(ranks, names)
    if isinstance(ranks, Mapping):
        unknown = [k for k in ranks if k not in names]
        if unknown:
            raise RankError(
                f"unknown mode name(s) {', '.join(map(str, unknown))}; modes are {', '.join(names)}"
            )
        values = [ranks.get(name) for name in names]
    else:
        values = _items(ranks)
    if len(values) != len(limits):
        raise RankError(
            f"got {len(values)} rank(s) ({_show(ranks)}); expected {len(limits)} for {method}, "
            "with 'full' or '-' where the rank is to be chosen"
        )
    out: list[int | None] = []
    for k, (v, limit) in enumerate(zip(values, limits)):
        free = v is None or (isinstance(v, str) and v.strip().lower() in _FULL)
        what = f"rank of mode {names[k]}" if method == "tucker" else f"MPS bond rank {k + 1}"
        out.append(None if free else _one(v, what, limit))
    return out


def _named(text: str, names: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise RankError(
                f"ranks {text!r} mix named and positional values; use either "
                "'f_in=64,f_out=64' or one value per mode"
            )
        key, value = (s.strip() for s in part.split("=", 1))
        out[key] = value
    return out


def _items(ranks) -> list:
    if isinstance(ranks, str):
        return [s.strip() for s in ranks.split(",")]
    if isinstance(ranks, int | float):
        return [ranks]
    try:
        return list(ranks)
    except TypeError:
        raise RankError(f"ranks {ranks!r} are neither a list of integers nor a string") from None


def _one(value, what: str, size: int, cap: bool = False) -> int:
    """One rank: an integer in [1, size] (or >= 1 when ``cap``), or full/-/None for ``size``."""
    allowed = "at least 1" if cap else f"from 1 to {size}"
    if value is None or (isinstance(value, str) and value.strip().lower() in _FULL):
        return size
    if isinstance(value, bool):
        raise RankError(f"{what} is {value!r}; expected an integer {allowed}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise RankError(
                f"{what} is {value.strip()!r}; expected an integer {allowed}, 'full' or '-'"
            ) from None
    if isinstance(value, float):
        if not value.is_integer():
            raise RankError(f"{what} is {value!r}; expected an integer {allowed}")
        value = int(value)
    if not isinstance(value, int):
        raise RankError(f"{what} is {value!r}; expected an integer {allowed}")
    if value < 1 or (not cap and value > size):
        raise RankError(
            f"{what} is {value}; expected an integer {allowed} (mode size {size})"
            if not cap
            else f"{what} is {value}; expected an integer {allowed}"
        )
    return value


def _show(ranks) -> str:
    if isinstance(ranks, str):
        return repr(ranks)
    try:
        return ",".join(str(v) for v in ranks)
    except TypeError:
        return repr(ranks)


def tucker_params(shape: Sequence[int], ranks: Sequence[int]) -> int:
    """prod(R_k) + sum(D_k R_k)."""
    return math.prod(ranks) + sum(d * r for d, r in zip(shape, ranks))


def mps_params(shape: Sequence[int], bonds: Sequence[int]) -> int:
    """sum R_{k-1} D_k R_k with R_0 = R_N = 1."""
    r = (1, *bonds, 1)
    return sum(r[k] * d * r[k + 1] for k, d in enumerate(shape))


def cp_params(shape: Sequence[int], ranks: Sequence[int]) -> int:
    """R (1 + sum D_k): the weights and every factor."""
    return ranks[0] * (1 + sum(shape))


def factorized_params(method: str, shape: Sequence[int], ranks: Sequence[int]) -> int:
    if method == "cp":
        return cp_params(shape, ranks)
    return tucker_params(shape, ranks) if method == "tucker" else mps_params(shape, ranks)
