"""Parse and validate ranks, in one place, for every method.

Accepted forms:

- Tucker: one rank per mode, ``"4,4,3,2,64,64,3,3"``, where ``full`` or ``-`` keeps a mode; named
  overrides ``"f_in=64,f_out=64"`` (the other modes full); ``"full"``. In Python: a sequence of ints
  (``None`` keeps a mode), a dict ``{mode name: rank}``, or the same strings.
- MPS: the N-1 bond ranks, or one value for every bond, or ``"full"``; a bond above its maximal TT
  rank (the smaller of the products of the mode sizes on either side) is capped, and the cap is
  reported.
- Layer-wise methods (one decomposition per block convolution, the same ranks for every layer):
  ``layerwise-tucker`` takes ``"R_in,R_out"``, one value for both, or ``"R_in,R_out,R_h,R_w"``
  (Tucker-4, the kernel's spatial modes decomposed too); ``layerwise-cp`` one rank R; ``tai`` the
  number K of intermediate channels. ``full`` keeps every layer exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tcompress.decompose import max_tt_ranks
from tcompress.errors import MethodError, RankError

TNET_METHODS = ("tucker", "mps", "cp")
LAYERWISE_METHODS = ("layerwise-tucker", "layerwise-cp", "tai")
METHODS = (*TNET_METHODS, *LAYERWISE_METHODS)
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
    if method in LAYERWISE_METHODS:
        raise MethodError(
            f"method {method!r} decomposes each layer on its own; its ranks are resolved by "
            "resolve_layer_ranks"
        )
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


def resolve_layer_ranks(ranks, method: str, kernel_shape: Sequence[int]) -> ResolvedRanks:
    """Ranks of a layer-wise ``method`` for block kernels of shape (f_out, f_in, h, w).

    Returns
    -------
    ResolvedRanks
        ``layerwise-tucker``: (R_in, R_out), or (R_in, R_out, R_h, R_w) when a spatial rank is
        below its kernel size; ``layerwise-cp``: (R,); ``tai``: (K,). ``full`` gives the ranks
        that represent every kernel exactly; a CP rank above that is capped (with a note).
    """
    method = check_method(method)
    f_out, f_in, h, w = (int(s) for s in kernel_shape)
    full = ranks is None or (isinstance(ranks, str) and ranks.strip().lower() in ("", *_FULL))
    if isinstance(ranks, Mapping) or (isinstance(ranks, str) and "=" in ranks):
        raise RankError(
            f"ranks {_show(ranks)} name modes; layer-wise method {method!r} takes "
            f"{_LAYER_FORMS.get(method, 'ranks')}"
        )
    if method == "layerwise-tucker":
        if full:
            return ResolvedRanks(method, (f_in, f_out))
        values = _items(ranks)
        if len(values) == 1:
            values = values * 2
        if len(values) not in (2, 4):
            raise RankError(
                f"got {len(values)} rank(s) ({_show(ranks)}) for layerwise-tucker; expected "
                f"{_LAYER_FORMS[method]}"
            )
        names, sizes = ("R_in", "R_out", "R_h", "R_w"), (f_in, f_out, h, w)
        out = tuple(
            _one(v, f"layerwise-tucker rank {names[k]}", sizes[k]) for k, v in enumerate(values)
        )
        # Spatial ranks equal to the kernel size decompose nothing: plain Tucker-2.
        return ResolvedRanks(method, out[:2] if out[2:] == (h, w) else out)
    if method == "layerwise-cp":
        # sum over (i, y, x) of e_i o K[:, i, y, x] o e_y o e_x: every kernel is exactly rank f h w
        exact = min(f_in, f_out) * h * w
        what, expected = "layerwise-cp rank R", "one CP rank R (rank-one terms per layer)"
    elif method == "tai":
        exact = min(f_in * h, f_out * w)
        what, expected = "tai rank K", "one rank K (intermediate channels per layer)"
    else:
        raise MethodError(
            f"method {method!r} is not layer-wise; expected one of {', '.join(LAYERWISE_METHODS)}"
        )
    if full:
        return ResolvedRanks(method, (exact,))
    values = _items(ranks)
    if len(values) != 1:
        raise RankError(
            f"got {len(values)} rank(s) ({_show(ranks)}) for {method}; expected {expected}"
        )
    if method == "tai":
        return ResolvedRanks(method, (_one(values[0], what, exact, limit="exact rank"),))
    rank = _one(values[0], what, exact, cap=True)
    if rank > exact:
        note = f"{what} {rank} capped at {exact}, the rank that represents every kernel exactly"
        return ResolvedRanks(method, (exact,), (note,))
    return ResolvedRanks(method, (rank,))


_LAYER_FORMS = {
    "layerwise-tucker": "'R_in,R_out', one value for both, or 'R_in,R_out,R_h,R_w' (Tucker-4)",
    "layerwise-cp": "one CP rank R",
    "tai": "one rank K",
}


def layer_params(method: str, kernel_shape: Sequence[int], ranks: Sequence[int]) -> int:
    """Parameters of one block kernel (f_out, f_in, h, w) decomposed by a layer-wise method.

    - Tucker-2: R_in R_out h w + f_in R_in + f_out R_out;
    - Tucker-4: R_in R_out R_h R_w + f_in R_in + f_out R_out + h R_h + w R_w;
    - CP: R (f_in + f_out + h + w) (the weights folded into the factors);
    - Tai: K (f_in h + f_out w).
    """
    f_out, f_in, h, w = kernel_shape
    if method == "layerwise-tucker":
        r_in, r_out, r_h, r_w = (*ranks, h, w)[:4]
        spatial = 0 if len(ranks) == 2 else h * r_h + w * r_w
        return r_in * r_out * r_h * r_w + f_in * r_in + f_out * r_out + spatial
    if method == "layerwise-cp":
        return ranks[0] * (f_in + f_out + h + w)
    if method == "tai":
        return ranks[0] * (f_in * h + f_out * w)
    raise MethodError(f"method {method!r} is not layer-wise")


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


def _one(value, what: str, size: int, cap: bool = False, limit: str = "mode size") -> int:
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
            f"{what} is {value}; expected an integer {allowed} ({limit} {size})"
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
