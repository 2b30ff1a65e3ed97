"""Ranks chosen from a target: a whole-network compression ratio, or a fraction of W's energy.

Both methods have an error bound made of discarded squared singular values:

- Tucker (HOSVD): ``||W - W_hat||^2 <= sum_k sum_{i > R_k} s_{k,i}^2``, where ``s_{k,i}`` are the
  singular values of the mode-k unfolding;
- MPS (TT-SVD): ``||W - W_hat||^2 <= sum_k sum_{i > R_k} t_{k,i}^2``, where ``t_{k,i}`` are those
  of the k-th sequential unfolding ``(D_1 ... D_k) x (D_{k+1} ... D_N)``.

The allocation is greedy on that bound: starting from full ranks (or the ranks the user fixed),
lower by one the rank whose step discards the least energy per parameter saved, until the
parameter budget or the energy floor is reached. For a ratio, what the budget has left is then
spent again, one rank at a time, on the ranks that regain the most energy per parameter, so the
target is met from above, within a few percent even where single steps are coarse (small modes).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tcompress.decompose import max_tt_ranks
from tcompress.decompose._grams import block_mode_grams
from tcompress.errors import RankError
from tcompress.ranks import mps_params, tucker_params

__all__ = ["RankChoice", "bond_spectra", "choose_ranks", "mode_spectra"]

#: A ratio target is met when the achieved ratio lies in [target, target * (1 + RATIO_TOLERANCE)].
RATIO_TOLERANCE = 0.03


@dataclass(frozen=True)
class RankChoice:
    """Chosen ranks and what the bound predicts for them."""

    method: str
    ranks: tuple[int, ...]
    tensor_params: int
    energy_kept: float  # fraction of ||W||^2 the bound guarantees is kept
    predicted_error: float  # bound on ||W - W_hat|| / ||W||
    target: str  # "ratio 4" or "energy 0.9"


def mode_spectra(tensor: Tensor) -> list[Tensor]:
    """Squared singular values of every mode unfolding, descending, float64.

    Shapes: tensor (D_1, ..., D_N); spectra[k] (D_k,).
    """
    work = tensor.detach().contiguous()
    if work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    grams = block_mode_grams(work, range(work.dim()))
    return [_descending(grams[k]) for k in range(work.dim())]


def bond_spectra(tensor: Tensor) -> list[Tensor]:
    """Squared singular values of the N-1 sequential unfoldings, descending, float64.

    Shapes: tensor (D_1, ..., D_N); spectra[k] (min(D_1..D_{k+1}, D_{k+2}..D_N),).
    """
    work = tensor.detach().contiguous()
    if work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    shape, spectra = work.shape, []
    for k in range(1, work.dim()):
        rows = math.prod(shape[:k])
        matrix = work.reshape(rows, -1)
        gram = matrix @ matrix.T if rows <= matrix.shape[1] else matrix.T @ matrix
        spectra.append(_descending(gram))
    return spectra


def _descending(gram: Tensor) -> Tensor:
    values = torch.linalg.eigvalsh(gram.double()).clamp_min(0)
    return values.flip(0).cpu()


def choose_ranks(
    method: str,
    shape: Sequence[int],
    spectra: Sequence[Tensor],
    *,
    ratio: float | None = None,
    energy: float | None = None,
    fixed: Sequence[int | None] | None = None,
    other_params: int = 0,
) -> RankChoice:
    """Ranks of ``method`` for a whole-network ``ratio`` or an ``energy`` fraction of W kept.

    Parameters
    ----------
    spectra
        :func:`mode_spectra` (Tucker) or :func:`bond_spectra` (MPS) of W.
    ratio
        Whole-network parameters before / after, counting ``other_params`` (everything outside
        W) on both sides; met within ``RATIO_TOLERANCE`` above.
    energy
        Fraction of ``||W||^2`` to keep, in (0, 1]; the fewest parameters the bound allows.
    fixed
        One entry per rank: an integer fixes it, ``None`` lets the allocation choose.

    Raises
    ------
    RankError
        Neither or both targets, or a target out of reach.
    """
    if (ratio is None) == (energy is None):
        raise RankError("give one target: a compression ratio or an energy fraction")
    if method == "cp":
        return _cp_rank(shape, ratio, energy, other_params)
    shape = tuple(int(s) for s in shape)
    limits = shape if method == "tucker" else max_tt_ranks(shape)
    params = tucker_params if method == "tucker" else mps_params
    fixed = list(fixed) if fixed is not None else [None] * len(limits)
    if len(fixed) != len(limits):
        raise RankError(f"{len(fixed)} fixed ranks given; expected {len(limits)}")
    ranks = [f if f is not None else limit for f, limit in zip(fixed, limits)]
    if method == "mps":
        ranks = _cap(ranks, shape)
    budget = high = low = 0.0
    free = [k for k, f in enumerate(fixed) if f is None]
    # tails[k][r]: energy discarded by keeping r values of spectrum k
    tails = [[float(t) for t in s.flip(0).cumsum(0).flip(0)] + [0.0] for s in spectra]
    total = tails[0][0] or 1.0  # ||W||^2: every spectrum sums to it

    def discarded(rs: Sequence[int]) -> float:
        return sum(tails[k][min(r, len(tails[k]) - 1)] for k, r in enumerate(rs))

    before = math.prod(shape) + other_params
    if ratio is not None:
        floor = [1] * len(limits)
        for k, f in enumerate(fixed):
            floor[k] = f if f is not None else 1
        if method == "mps":
            floor = _cap(floor, shape)
        best = before / (params(shape, floor) + other_params)
        if not 1 <= ratio <= best:
            raise RankError(
                f"compression ratio {ratio:g} is out of reach: with {method} this network "
                f"goes from 1x (full ranks) to {best:.2f}x (rank 1 in every free mode)"
            )
        high = before / ratio - other_params  # tensor parameters allowed
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
        trial = _cap(trial, shape) if method == "mps" else trial
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
        if method == "tucker" and not low <= params(shape, ranks) <= high:
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
    return RankChoice(method, tuple(ranks), params(shape, ranks), kept, math.sqrt(1 - kept), target)


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


def _cp_rank(shape: Sequence[int], ratio, energy, other_params: int) -> RankChoice:
    """CP has no error bound to allocate on: the largest rank within the ratio's budget."""
    if ratio is None:
        raise RankError("an energy target needs tucker or mps; give CP a --ratio or --ranks")
    per_rank = 1 + sum(shape)
    before = math.prod(shape) + other_params
    best = before / (per_rank + other_params)
    if not 1 <= ratio <= best:
        raise RankError(
            f"compression ratio {ratio:g} is out of reach: with cp this network goes up to "
            f"{best:.2f}x (rank 1)"
        )
    rank = max(1, int((before / ratio - other_params) // per_rank))
    return RankChoice("cp", (rank,), rank * per_rank, math.nan, math.nan, f"ratio {ratio:g}")


def _cap(bonds: Sequence[int], shape: Sequence[int]) -> list[int]:
    """Bonds that TT-SVD can realise: bond k (between modes k and k+1) is at most bond k-1 times
    D_k and at most D_{k+1} times bond k+1."""
    out = list(bonds)
    out[0] = min(out[0], shape[0])
    for k in range(1, len(out)):
        out[k] = min(out[k], out[k - 1] * shape[k])
    out[-1] = min(out[-1], shape[-1])
    for k in range(len(out) - 2, -1, -1):
        out[k] = min(out[k], out[k + 1] * shape[k + 1])
    return out
