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

A family of several tensors (one per group of same-shape kernels) has one whole-network target
for all of them (:func:`allocate_groups`): the greedy steps range over the ranks of every tensor,
on the sum of the tensors' bounds, the parameters of every tensor and of the dense rest counted in
the ratio; a method without a bound takes the largest equal share of every tensor's largest rank
that fits the common budget (:func:`largest_uniform_groups`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from tcompress.errors import RankError

__all__ = [
    "RATIO_TOLERANCE",
    "GroupChoice",
    "RankChoice",
    "allocate",
    "allocate_groups",
    "largest_uniform",
    "largest_uniform_groups",
    "ratio_budget",
]

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


@dataclass(frozen=True)
class GroupChoice:
    """Ranks chosen for several tensors under one whole-network target: each group's
    :class:`RankChoice` (its ranks, its tensor parameters, the energy of its tensor the bound
    guarantees is kept, its bound), and the same figures for all the tensors together."""

    method: str
    choices: tuple[RankChoice, ...]
    tensor_params: int
    energy_kept: float  # fraction of the summed ||W_g||^2 the bound guarantees is kept
    predicted_error: float  # bound on sqrt(sum ||W_g - W_hat_g||^2 / sum ||W_g||^2)
    target: str
    criterion: str = "bound"

    @property
    def ranks(self) -> tuple[tuple[int, ...], ...]:
        return tuple(c.ranks for c in self.choices)


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
    found = allocate_groups(
        method,
        [shape],
        [spectra],
        ratio=ratio,
        energy=energy,
        fixed=None if fixed is None else [fixed],
        other_params=other_params,
        costs=None if costs is None else [costs],
    )
    (one,) = found.choices
    return RankChoice(
        method.name,
        one.ranks,
        one.tensor_params,
        found.energy_kept,
        found.predicted_error,
        found.target,
        found.criterion,
    )


def allocate_groups(
    method,
    shapes: Sequence[Sequence[int]],
    spectra: Sequence[Sequence[Tensor] | None],
    *,
    ratio: float | None = None,
    energy: float | None = None,
    fixed: Sequence[Sequence[int | None] | None] | None = None,
    other_params: int = 0,
    costs: Sequence[Sequence[Sequence[float]]] | None = None,
    weights: Sequence[float] | None = None,
) -> GroupChoice:
    """:func:`allocate` over several tensors at once, one whole-network target for all: the
    greedy steps range over the ranks of every tensor, each lowering the rank (of any tensor)
    that discards the least energy per parameter saved, the bound being the sum of the tensors'
    bounds (``weights[g] ||W_g - W_hat_g||^2`` summed over the groups; unweighted by default)
    and the parameters the sum of theirs plus ``other_params`` (everything outside the tensors,
    counted on both sides).

    ``shapes``, ``spectra``, ``fixed`` and ``weights`` have one entry per tensor (``fixed`` as
    for :func:`allocate`, or None for a tensor whose ranks are all free). ``energy`` is the
    fraction of the (weighted) summed ``||W_g||^2`` kept. The choice's ``energy_kept`` and
    ``predicted_error`` are unweighted, over all the tensors together.

    ``costs`` (measured, see :func:`allocate`) has one entry per tensor, each a fraction of that
    tensor's own output energy; ``weights`` then put the fractions of separate tensors on one
    scale (:meth:`~tcompress.methods.base.TensorMethod.choose_groups` weighs each by its
    layers), and the choice's ``energy_kept`` is the weighted fraction of the output energy
    kept.
    """
    if (ratio is None) == (energy is None):
        raise RankError("give one target: a compression ratio or an energy fraction")
    shapes = [tuple(int(s) for s in shape) for shape in shapes]
    if costs is not None and len(costs) != len(shapes):
        raise RankError(f"expected costs for {len(shapes)} tensor(s), got {len(costs)}")
    sizes = [len(method.limits(shape)) for shape in shapes]
    cuts = [sum(sizes[:g]) for g in range(len(sizes) + 1)]
    limits = tuple(r for shape in shapes for r in method.limits(shape))

    def split(rs: Sequence[int]) -> list[list[int]]:
        return [list(rs[cuts[g] : cuts[g + 1]]) for g in range(len(shapes))]

    def params(rs: Sequence[int]) -> int:
        return sum(method.params(shape, r) for shape, r in zip(shapes, split(rs)))

    def cap(rs: Sequence[int]) -> list[int]:
        return [r for shape, part in zip(shapes, split(rs)) for r in method.cap(part, shape)]

    if fixed is None:
        fixed = [None] * len(shapes)
    if len(fixed) != len(shapes):
        raise RankError(f"fixed ranks for {len(fixed)} tensors given; expected {len(shapes)}")
    flat_fixed = []
    for size, given in zip(sizes, fixed):
        given = list(given) if given is not None else [None] * size
        if len(given) != size:
            raise RankError(f"{len(given)} fixed ranks given; expected {size}")
        flat_fixed += given
    fixed = flat_fixed
    ranks = cap([f if f is not None else limit for f, limit in zip(fixed, limits)])
    budget = high = low = 0.0
    free = [k for k, f in enumerate(fixed) if f is None]
    # tails[k][r]: energy discarded by keeping r values of spectrum k (all tensors' in a row)
    if costs is not None:
        for g, (group, shape) in enumerate(zip(costs, shapes)):
            sizes_given = [len(mode) - 1 for mode in group]
            if sizes_given != list(method.limits(shape)):
                which = "" if len(shapes) == 1 else f" of tensor {g + 1}"
                raise RankError(
                    f"costs{which} for ranks up to {sizes_given}; expected "
                    f"{list(method.limits(shape))}"
                )
        tails = [[float(c) for c in mode] for group in costs for mode in group]
        totals = [1.0] * len(shapes)  # each tensor's costs are fractions of its own energy
    else:
        tails = [
            [float(t) for t in s.flip(0).cumsum(0).flip(0)] + [0.0]
            for group in spectra
            for s in group
        ]
        # ||W_g||^2: every spectrum of a tensor sums to it
        totals = [tails[cuts[g]][0] or 1.0 for g in range(len(shapes))]
    raw = tails
    if weights is not None:
        if len(weights) != len(shapes):
            raise RankError(f"{len(weights)} weights given; expected {len(shapes)}")
        scale = [float(weights[g]) for g in range(len(shapes)) for _ in range(sizes[g])]
        tails = [[t * w for t in tail] for tail, w in zip(raw, scale)]
    total = sum(totals) if weights is None else sum(t * w for t, w in zip(totals, weights))

    def discarded(rs: Sequence[int], tails=tails) -> float:
        return sum(tails[k][min(r, len(tails[k]) - 1)] for k, r in enumerate(rs))

    before = sum(math.prod(shape) for shape in shapes) + other_params
    if ratio is not None:
        floor = [1] * len(limits)
        for k, f in enumerate(fixed):
            floor[k] = f if f is not None else 1
        floor = cap(floor)
        best = before / (params(floor) + other_params)
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
        trial = cap(trial)
        return None if trial == rs else trial

    def descend(rs: list[int], keep: int | None = None, modes=None) -> list[int]:
        """Lower the cheapest rank (energy per parameter) until the budget or the floor."""
        while True:
            p0, d0 = params(rs), discarded(rs)
            if ratio is not None and p0 <= high:
                return rs
            moves = []
            for k in free if modes is None else modes:
                trial = step(rs, k, -1) if k != keep else None
                if trial is None:
                    continue
                p = params(trial)
                if p >= p0:
                    continue
                d = discarded(trial)
                if energy is None or d <= budget:
                    moves.append(((d - d0) / (p0 - p), trial))
            if not moves:
                return rs
            rs = min(moves, key=lambda m: m[0])[1]

    def grow(rs: list[int], modes=None) -> list[int]:
        """Spend what the budget has left on the ranks that regain the most per parameter."""
        while True:
            p0, d0 = params(rs), discarded(rs)
            moves = []
            for k in free if modes is None else modes:
                trial = step(rs, k, +1)
                if trial is None:
                    continue
                p, d = params(trial), discarded(trial)
                if p0 < p <= high and d < d0:
                    moves.append(((d0 - d) / (p - p0), trial))
            if not moves:
                return rs
            rs = max(moves, key=lambda m: m[0])[1]

    ranks = descend(ranks)
    if ratio is not None:
        ranks = grow(ranks)
        for _ in range(len(limits) * 4):  # too coarse: trade one rank up for others down
            if params(ranks) >= low:
                break
            options = []
            for k in free:
                trial = step(ranks, k, +1)
                if trial is not None:
                    options.append(grow(descend(trial, keep=k)))
            fits = [r for r in options if params(r) <= high and r != ranks]
            landing = [r for r in fits if params(r) >= low]
            if landing:
                ranks = min(landing, key=discarded)
                break
            closer = [r for r in fits if params(r) > params(ranks)]
            if not closer:
                break
            ranks = max(closer, key=params)
        if method.enumerate_small_modes and not low <= params(ranks) <= high:
            ranks = _enumerate_small_modes(
                ranks,
                free,
                limits,
                descend,
                grow,
                discarded,
                lambda r: low <= params(r) <= high,
            )
    target = f"ratio {ratio:g}" if ratio is not None else f"energy {energy:g}"
    measured = costs is not None  # not a bound on ||W - W_hat||: nothing predicted
    choices = []
    for g, (shape, part) in enumerate(zip(shapes, split(ranks))):
        lost = discarded(part, raw[cuts[g] : cuts[g + 1]])
        kept = max(0.0, 1 - lost / totals[g])
        bound = math.nan if measured else math.sqrt(1 - kept)
        criterion = "data" if measured else "bound"
        choices.append(
            RankChoice(
                method.name, tuple(part), method.params(shape, part), kept, bound, target, criterion
            )
        )
    if measured:  # fractions of separate energies: on the weights' one scale
        kept = max(0.0, 1 - discarded(ranks) / total)
    else:
        kept = max(0.0, 1 - discarded(ranks, raw) / sum(totals))
    return GroupChoice(
        method.name,
        tuple(choices),
        params(ranks),
        kept,
        math.nan if measured else math.sqrt(1 - kept),
        target,
        "data" if measured else "bound",
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


def largest_uniform_groups(
    method,
    shapes: Sequence[Sequence[int]],
    ratio: float,
    other_params: int,
    ranks_of,
    tops: Sequence[int],
) -> GroupChoice:
    """:func:`largest_uniform` over several tensors under one budget: every tensor takes the
    same share of its own largest rank value ``tops[g]``, ``r_g = ceil(s * tops[g] / max(tops))``
    (at least 1), for the largest step ``s`` from 1 to ``max(tops)`` within the parameter budget
    of ``ratio``; a tensor's ranks are ``ranks_of(r_g)``. With one tensor, ``r = s``."""
    shapes = [tuple(int(d) for d in shape) for shape in shapes]
    most = max(tops)

    def ranks_at(s: int) -> list[tuple[int, ...]]:
        return [tuple(ranks_of(max(1, math.ceil(s * top / most)))) for top in tops]

    def params(s: int) -> int:
        return sum(method.params(shape, r) for shape, r in zip(shapes, ranks_at(s)))

    before = sum(math.prod(shape) for shape in shapes) + other_params
    best = before / (params(1) + other_params)
    high = ratio_budget(ratio, before, other_params, best, method.name)
    low, up = 1, most
    while low < up:  # parameters grow with s: the largest s within the budget
        mid = (low + up + 1) // 2
        low, up = (mid, up) if params(mid) <= high else (low, mid - 1)
    target = f"ratio {ratio:g}"
    choices = tuple(
        RankChoice(method.name, r, method.params(shape, r), math.nan, math.nan, target, "uniform")
        for shape, r in zip(shapes, ranks_at(low))
    )
    return GroupChoice(method.name, choices, params(low), math.nan, math.nan, target, "uniform")
