"""Ranks chosen from a target: a whole-network compression ratio, or a fraction of W's energy.

A method with an error bound made of discarded squared singular values (its
:meth:`~tcompress.methods.base.TensorMethod.spectra`) is allocated greedily on that bound:

- Tucker (HOSVD): ``||W - W_hat||^2 <= sum_k sum_{i > R_k} s_{k,i}^2``, where ``s_{k,i}`` are the
  singular values of the mode-k unfolding;
- MPS (TT-SVD): ``||W - W_hat||^2 <= sum_k sum_{i > R_k} t_{k,i}^2``, where ``t_{k,i}`` are those
  of the k-th sequential unfolding ``(D_1 ... D_k) x (D_{k+1} ... D_N)``.

Starting from full ranks (or the ranks the user fixed), lower by one the rank whose step discards
the least energy per parameter saved, until the parameter budget or the energy floor is reached.
For a ratio, what the budget has left is then spent again, one rank at a time, on the ranks that
regain the most energy per parameter, so the target is met from above, within a few percent even
where single steps are coarse (small modes).

With data (``costs``), the same allocation runs on measured costs instead of the bound: what
truncating each mode alone costs the normalised outputs of the block convolutions on real inputs
(:func:`~tcompress.passes.data_aware.mode_costs`), as a fraction of those outputs' energy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from tcompress.errors import RankError

__all__ = ["RATIO_TOLERANCE", "RankChoice", "allocate", "largest_uniform", "ratio_budget"]

#: A ratio target is met when the achieved ratio lies in [target, target * (1 + RATIO_TOLERANCE)].
RATIO_TOLERANCE = 0.03


@dataclass(frozen=True)
class RankChoice:
    """Ranks chosen for a target, and what the method's bound predicts for them (NaN: no bound)."""

    method: str
    ranks: tuple[int, ...]
    tensor_params: int
    energy_kept: float  # fraction of ||W||^2 the bound guarantees is kept
    predicted_error: float  # bound on ||W - W_hat|| / ||W||
    target: str  # "ratio 4" or "energy 0.9"
    criterion: str = "bound"  # what allocated: "bound", "data" (measured costs) or "uniform"


def ratio_budget(ratio, before: int, other_params: int, best: float, method: str) -> float:
    """The tensor parameters a whole-network ``ratio`` allows; ``best`` is the ratio of the
    smallest model the method can make, which bounds the reachable targets."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float):
        raise RankError(f"compression ratio {ratio!r} is not a number; expected one >= 1")
    if not 1 <= ratio <= best:
        raise RankError(
            f"compression ratio {ratio:g} is out of reach: with {method} this network "
            f"goes from 1x (full ranks) to {best:.2f}x (rank 1 in every free mode)"
        )
    return before / ratio - other_params


def allocate(
    method,
    shape: Sequence[int],
    spectra: Sequence[Tensor],
    *,
    ratio: float | None = None,
    energy: float | None = None,
    fixed: Sequence[int | None] | None = None,
    other_params: int = 0,
    costs: Sequence[Sequence[float]] | None = None,
) -> RankChoice:
    """Ranks of ``method`` (a :class:`~tcompress.methods.base.TensorMethod`: its ``limits``,
    ``params`` and ``cap``) for a whole-network ``ratio`` or an ``energy`` fraction of W kept.

    Parameters
    ----------
    spectra
        The method's :meth:`~tcompress.methods.base.TensorMethod.spectra` of W.
    ratio
        Whole-network parameters before / after, counting ``other_params`` (everything outside
        W) on both sides; met within ``RATIO_TOLERANCE`` above.
    energy
        Fraction of ``||W||^2`` to keep, in (0, 1]; the fewest parameters the bound allows.
    fixed
        One entry per rank: an integer fixes it, ``None`` lets the allocation choose.
    costs
        Measured instead of bounded: ``costs[k][r]``, the fraction of the output energy lost by
        keeping ``r`` of mode ``k`` (1 at 0, 0 at full rank); ``spectra`` is then unused, and
        ``energy`` is the fraction of the output energy kept.

    Raises
    ------
    RankError
        Neither or both targets, or a target out of reach.
    """
    if (ratio is None) == (energy is None):
        raise RankError("give one target: a compression ratio or an energy fraction")
    shape = tuple(int(s) for s in shape)
    limits = method.limits(shape)
    params = method.params
    fixed = list(fixed) if fixed is not None else [None] * len(limits)
    if len(fixed) != len(limits):
        raise RankError(f"{len(fixed)} fixed ranks given; expected {len(limits)}")
    ranks = method.cap([f if f is not None else limit for f, limit in zip(fixed, limits)], shape)
    budget = high = low = 0.0
    free = [k for k, f in enumerate(fixed) if f is None]
    # tails[k][r]: energy discarded by keeping r values of spectrum k
    if costs is not None:
        tails = [[float(c) for c in mode] for mode in costs]
        if [len(t) - 1 for t in tails] != list(limits):
            raise RankError(
                f"costs for ranks up to {[len(t) - 1 for t in tails]}; expected {list(limits)}"
            )
        total = 1.0
    else:
        tails = [[float(t) for t in s.flip(0).cumsum(0).flip(0)] + [0.0] for s in spectra]
        total = tails[0][0] or 1.0  # ||W||^2: every spectrum sums to it

    def discarded(rs: Sequence[int]) -> float:
        return sum(tails[k][min(r, len(tails[k]) - 1)] for k, r in enumerate(rs))

    before = math.prod(shape) + other_params
    if ratio is not None:
        floor = [1] * len(limits)
        for k, f in enumerate(fixed):
            floor[k] = f if f is not None else 1
        floor = method.cap(floor, shape)
        best = before / (params(shape, floor) + other_params)
        high = ratio_budget(ratio, before, other_params, best, method.name)  # tensor parameters
        low = before / (ratio * (1 + RATIO_TOLERANCE)) - other_params
    else:
        if not 0 < energy <= 1:
            raise RankError(f"energy fraction {energy:g} is out of range; expected (0, 1]")
        budget = (1 - energy) * total

    def step(rs: list[int], k: int, by: int) -> list[int] | None:
        trial = list(rs)
        trial[k] += by
        if not 1 <= trial[k] <= limits[k]:
            return None
        trial = method.cap(trial, shape)
        return None if trial == rs else trial

    def descend(rs: list[int], keep: int | None = None, modes=None) -> list[int]:
        """Lower the cheapest rank (energy per parameter) until the budget or the floor."""
        while True:
            p0, d0 = params(shape, rs), discarded(rs)
            if ratio is not None and p0 <= high:
                return rs
            moves = []
            for k in free if modes is None else modes:
                trial = step(rs, k, -1) if k != keep else None
                if trial is None or params(shape, trial) >= p0:
                    continue
                p, d = params(shape, trial), discarded(trial)
                if energy is None or d <= budget:
                    moves.append(((d - d0) / (p0 - p), trial))
            if not moves:
                return rs
            rs = min(moves, key=lambda m: m[0])[1]

    def grow(rs: list[int], modes=None) -> list[int]:
        """Spend what the budget has left on the ranks that regain the most per parameter."""
        while True:
            p0, d0 = params(shape, rs), discarded(rs)
            moves = []
            for k in free if modes is None else modes:
                trial = step(rs, k, +1)
                if trial is None:
                    continue
                p, d = params(shape, trial), discarded(trial)
                if p0 < p <= high and d < d0:
                    moves.append(((d0 - d) / (p - p0), trial))
            if not moves:
                return rs
            rs = max(moves, key=lambda m: m[0])[1]

    ranks = descend(ranks)
    if ratio is not None:
        ranks = grow(ranks)
        for _ in range(len(limits) * 4):  # too coarse: trade one rank up for others down
            if params(shape, ranks) >= low:
                break
            options = []
            for k in free:
                trial = step(ranks, k, +1)
                if trial is not None:
                    options.append(grow(descend(trial, keep=k)))
            fits = [r for r in options if params(shape, r) <= high and r != ranks]
            landing = [r for r in fits if params(shape, r) >= low]
            if landing:
                ranks = min(landing, key=discarded)
                break
            closer = [r for r in fits if params(shape, r) > params(shape, ranks)]
            if not closer:
                break
            ranks = max(closer, key=lambda r: params(shape, r))
        if method.enumerate_small_modes and not low <= params(shape, ranks) <= high:
            ranks = _enumerate_small_modes(
                ranks,
                free,
                limits,
                descend,
                grow,
                discarded,
                lambda r: low <= params(shape, r) <= high,
            )
    lost = discarded(ranks)
    kept = max(0.0, 1 - lost / total)
    target = f"ratio {ratio:g}" if ratio is not None else f"energy {energy:g}"
    if costs is not None:  # measured, not a bound on ||W - W_hat||: nothing predicted
        return RankChoice(
            method.name, tuple(ranks), params(shape, ranks), kept, math.nan, target, "data"
        )
    return RankChoice(
        method.name, tuple(ranks), params(shape, ranks), kept, math.sqrt(1 - kept), target
    )


#: Tucker modes at most this size are enumerated when the greedy steps are too coarse to land.
SMALL_MODE = 8
MAX_COMBINATIONS = 4096


def _enumerate_small_modes(ranks, free, limits, descend, grow, discarded, lands):
    """Every rank combination of the small free modes (the large ones then allocated greedily);
    the landing allocation that discards the least, or ``ranks`` if none lands."""
    small = [k for k in free if limits[k] <= SMALL_MODE]
    large = [k for k in free if limits[k] > SMALL_MODE]
    if not small or math.prod(limits[k] for k in small) > MAX_COMBINATIONS:
        return ranks
    best = None
    for combo in itertools.product(*(range(1, limits[k] + 1) for k in small)):
        trial = list(ranks)
        for k, r in zip(small, combo):
            trial[k] = r
        for k in large:
            trial[k] = limits[k]
        trial = grow(descend(trial, modes=large), modes=large) if large else trial
        if lands(trial) and (best is None or discarded(trial) < discarded(best)):
            best = trial
    return best if best is not None else ranks


def largest_uniform(
    method,
    shape: Sequence[int],
    ratio: float,
    other_params: int,
    ranks_of,
    top: int,
) -> RankChoice:
    """For a method without an error bound to allocate on: the largest single rank value r (its
    ranks ``ranks_of(r)``, r from 1 to ``top``) within the parameter budget of ``ratio``."""
    before = math.prod(shape) + other_params
    best = before / (method.params(shape, ranks_of(1)) + other_params)
    high = ratio_budget(ratio, before, other_params, best, method.name)
    low, up = 1, top
    while low < up:  # parameters grow with r: the largest r within the budget
        mid = (low + up + 1) // 2
        low, up = (mid, up) if method.params(shape, ranks_of(mid)) <= high else (low, mid - 1)
    ranks = tuple(ranks_of(low))
    params = method.params(shape, ranks)
    return RankChoice(method.name, ranks, params, math.nan, math.nan, f"ratio {ratio:g}", "uniform")
