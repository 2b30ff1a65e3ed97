"""Ranks searched on data: the rank set whose converted network agrees best with the original.

Neither W's reconstruction error nor the block convolutions' output error (the costs of
:func:`~tcompress.passes.data_aware.mode_costs`) orders rank sets of one size the way fine-tuning
does: on the bundled model, rank sets that lower the depth or the kernel modes rebuild those
outputs 3x worse and yet convert, and fine-tune, better (``docs/records/rank_criteria.json``).
What tracks it is the whole network: after conversion and BatchNorm re-estimation, how often the
converted network puts each joint where the original does, on unlabeled images.

:func:`search_ranks` searches the ranks of the small modes (the grid and kernel modes, up to
:data:`~tcompress.methods.selection.SMALL_MODE`), the channel modes re-allocated on the measured
costs for each so that the ratio is still met. When few rank sets meet the target (61 of the 432
combinations of the bundled model's small modes at 3x), every one is rated on a few images and
the best few again on more; otherwise the search climbs from the costs' allocation (or the
error bound's, whichever agrees better), one small mode up or down, or one up and another down,
to the best neighbour while one agrees better.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from tcompress.models.io import heatmaps_of

log = logging.getLogger(__name__)

#: A joint agrees when the converted network's heatmap peak lies within this fraction of the
#: heatmap side of the original's (2 pixels of a 64 x 64 heatmap).
AGREEMENT_RADIUS = 1 / 32
#: Climbing steps at most (each tries every neighbour).
SEARCH_STEPS = 6
#: At most this many rank sets meeting the target are each rated (else the search climbs).
MAX_CANDIDATES = 128
#: Small-mode combinations enumerated at most (each allocated, not rated).
MAX_COMBINATIONS = 4096
#: Rank sets re-rated on more images after the quick rating of every candidate.
FINALISTS = 6


@dataclass
class SearchReport:
    """The rank sets tried (``tried``: ranks -> agreement) and the path the climb took."""

    start: tuple[int, ...]
    chosen: tuple[int, ...]
    agreement: float
    tried: dict[tuple[int, ...], float] = field(default_factory=dict)
    path: list[tuple[int, ...]] = field(default_factory=list)
    images: int = 0
    quick: dict[tuple[int, ...], float] = field(default_factory=dict)  # the quick ratings

    def to_dict(self) -> dict:
        return {
            "start": list(self.start),
            "chosen": list(self.chosen),
            "agreement": self.agreement,
            "tried": [{"ranks": list(r), "agreement": a} for r, a in self.tried.items()],
            "path": [list(r) for r in self.path],
            "images": self.images,
            "quick": [{"ranks": list(r), "agreement": a} for r, a in self.quick.items()],
        }


def peaks(heatmaps: torch.Tensor) -> torch.Tensor:
    """(x, y) of each heatmap's maximum. Shapes: (N, J, h, w) -> (N, J, 2)."""
    flat = heatmaps.flatten(2).argmax(-1)
    width = heatmaps.shape[-1]
    return torch.stack((flat % width, flat // width), -1).float()


class AgreementScorer:
    """Scores W estimates by how often the network, its kernels replaced, puts each joint where
    the original does (last stack's heatmap peaks, within :data:`AGREEMENT_RADIUS`), after its
    BatchNorm statistics are re-estimated on ``recalibration`` batches.

    ``dense`` is copied once; each score writes the kernels into the copy."""

    def __init__(
        self,
        dense: nn.Module,
        weight_keys: Sequence[str],
        n_grid: int,
        recalibration: Sequence[torch.Tensor],
        scoring: Sequence[torch.Tensor],
    ) -> None:
        self.net = copy.deepcopy(dense).eval()
        self.params = [self.net.get_parameter(k) for k in weight_keys]
        self.n_grid = n_grid
        self.recalibration, self.scoring = list(recalibration), list(scoring)
        with torch.no_grad():
            self.reference = [peaks(heatmaps_of(self.net, x)[-1]) for x in self.scoring]
            side = heatmaps_of(self.net, self.scoring[0][:1])[-1].shape[-1]
        self.radius = AGREEMENT_RADIUS * side
        self.images = sum(x.shape[0] for x in self.scoring)

    def __call__(self, W_hat: torch.Tensor) -> float:
        from tcompress.stacking import unstack_kernels
        from tcompress.train import recalibrate_batchnorm

        with torch.no_grad():
            for p, kernel in zip(self.params, unstack_kernels(W_hat, self.n_grid)):
                p.copy_(kernel)
            recalibrate_batchnorm(self.net, self.recalibration)
            self.net.eval()
            agree = total = 0
            for x, ref in zip(self.scoring, self.reference):
                got = peaks(heatmaps_of(self.net, x)[-1])
                agree += int(((got - ref).norm(dim=-1) <= self.radius).sum())
                total += ref.shape[0] * ref.shape[1]
        return agree / total


def search_ranks(
    method,
    W: torch.Tensor,
    start,
    allocate_large: Callable[[Sequence[int]], object | None],
    score: Callable[[torch.Tensor], float],
    *,
    quick_score: Callable[[torch.Tensor], float] | None = None,
    others: Sequence = (),
    fixed: Sequence[int | None] | None = None,
    finalists: int = FINALISTS,
    steps: int = SEARCH_STEPS,
    small: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[object, SearchReport]:
    """The rank set whose truncated HOSVD ``score`` rates best, over the small modes' ranks.

    When the small modes' combinations that meet the target number at most
    :data:`MAX_CANDIDATES` (61 on the bundled model at 3x), every one is rated by
    ``quick_score`` (fewer images), and the ``finalists`` best, with ``start`` and ``others``,
    by ``score``. Otherwise the search climbs from the best of ``start`` and ``others``: every
    step of one small mode up or down, or of one up and another down, rated by ``quick_score``;
    the best of them, rated by ``score``, is taken while it rates better.

    Parameters
    ----------
    method
        The Tucker method (its ``limits``, ``decompose``).
    start, others
        :class:`~tcompress.methods.selection.RankChoice` starting points.
    allocate_large
        Ranks (one per mode, the small modes set) -> the choice with the large modes allocated
        to meet the target, or None when it cannot be met.
    score, quick_score
        W estimate -> agreement in [0, 1], higher is better; ``quick_score`` defaults to
        ``score``.
    fixed
        Ranks the user fixed (never moved).
    small
        Modes at most this size are searched (default: ``SMALL_MODE``).
    """
    from tcompress.methods.selection import SMALL_MODE

    say = progress or (lambda message: None)
    quick_score = quick_score or score
    limits = method.limits(tuple(W.shape))
    fixed = list(fixed) if fixed is not None else [None] * len(limits)
    small = SMALL_MODE if small is None else small
    movable = [k for k, d in enumerate(limits) if d <= small and fixed[k] is None]
    tried: dict[tuple[int, ...], float] = {}
    quick: dict[tuple[int, ...], float] = {}

    def estimate(ranks) -> torch.Tensor:
        with torch.no_grad():
            return method.decompose(W, tuple(ranks), n_iter=0, seed=0).tensor.full()

    def value(choice) -> float:
        ranks = tuple(choice.ranks)
        if ranks not in tried:
            tried[ranks] = score(estimate(ranks))
            say(f"Searching the ranks: {','.join(map(str, ranks))} agrees {tried[ranks]:.3f}")
        return tried[ranks]

    candidates = _landing(movable, limits, start, allocate_large)
    if candidates is not None:
        for i, choice in enumerate(candidates):
            say(f"Searching the ranks: rating {i + 1} of {len(candidates)}")
            quick[tuple(choice.ranks)] = quick_score(estimate(choice.ranks))
        ranked = sorted(candidates, key=lambda c: -quick[tuple(c.ranks)])
        best = max([*ranked[:finalists], start, *others], key=value)
        path = [tuple(best.ranks)]
    else:
        best = max([start, *others], key=value)
        path = [tuple(best.ranks)]
        for _ in range(steps):
            neighbours, seen = [], {tuple(best.ranks)}
            for moves in _moves(movable):
                trial = list(best.ranks)
                for k, by in moves:
                    trial[k] += by
                if not all(1 <= trial[k] <= limits[k] for k, _ in moves):
                    continue
                choice = allocate_large(trial)
                if choice is not None and tuple(choice.ranks) not in seen:
                    seen.add(tuple(choice.ranks))
                    neighbours.append(choice)
            if not neighbours:
                break
            for choice in neighbours:  # every neighbour on few images, the best on all
                if tuple(choice.ranks) not in quick:
                    quick[tuple(choice.ranks)] = quick_score(estimate(choice.ranks))
            top = max(neighbours, key=lambda c: quick[tuple(c.ranks)])
            if value(top) <= value(best):
                break
            best = top
            path.append(tuple(best.ranks))
    report = SearchReport(
        tuple(start.ranks),
        tuple(best.ranks),
        value(best),
        tried,
        path,
        getattr(score, "images", 0),
        quick,
    )
    log.info("rank search: %s (agreement %.3f)", best.ranks, report.agreement)
    return replace(best, criterion="search"), report


def _landing(movable, limits, start, allocate_large) -> list | None:
    """Every combination of the small modes' ranks, the large modes allocated, that meets the
    target (distinct rank sets); None when there are more than :data:`MAX_CANDIDATES`."""
    sizes = [limits[k] for k in movable]
    if math.prod(sizes) > MAX_COMBINATIONS:
        return None
    found: dict[tuple[int, ...], object] = {}
    for combo in itertools.product(*(range(1, d + 1) for d in sizes)):
        trial = list(start.ranks)
        for k, r in zip(movable, combo):
            trial[k] = r
        choice = allocate_large(trial)
        if choice is not None:
            found.setdefault(tuple(choice.ranks), choice)
            if len(found) > MAX_CANDIDATES:
                return None
    return list(found.values())


def _moves(movable: Sequence[int]) -> list[tuple[tuple[int, int], ...]]:
    """The steps from one rank set to its neighbours: one small mode up or down, or one up and
    another down (a budget moved between two modes, which no single step can do when the
    channel modes are already full)."""
    singles = [((k, by),) for k in movable for by in (-1, 1)]
    pairs = [((k, 1), (j, -1)) for k in movable for j in movable if j != k]
    return singles + pairs


def fixed_small(ranks: Sequence[int], limits: Sequence[int], small: int) -> list[int | None]:
    """``ranks`` with the large modes (above ``small``) freed: the ``fixed`` entries that let an
    allocation re-spend the channel modes."""
    return [r if d <= small else None for r, d in zip(ranks, limits)]


__all__ = [
    "AGREEMENT_RADIUS",
    "FINALISTS",
    "MAX_CANDIDATES",
    "AgreementScorer",
    "SEARCH_STEPS",
    "SearchReport",
    "fixed_small",
    "peaks",
    "search_ranks",
]
