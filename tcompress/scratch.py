"""T-Nets trained from scratch: a new stacked hourglass whose block kernels are born as slices of
one random low-rank tensor, with no dense network to convert.

:func:`random_tnet` builds the network; ``tcompress train --method M --ranks R`` (or
``--ratio X``) and :func:`tcompress.train.train` (``method=``, ``ranks=``, ``ratio=``) train it
with the loop of the dense ``train``.

**Initialisation.** The dense hourglass is built as ``train`` builds it (``torch.manual_seed``
of the seed, then PyTorch's default initialisation of every layer), so that everything outside
the tensor (stem, innermost blocks, heads, scores, inter-stack convolutions, BatchNorm) starts
as a dense run of the same seed starts. Its block kernels are dropped; the method's factors are
drawn instead (:meth:`~tcompress.methods.base.TensorMethod.random`) so that every rebuilt block
kernel has the spread the dense kernel it replaces would have had: nn.Conv2d draws its weights
from U(-b, b) with b = 1 / sqrt(fan_in), fan_in = f_in h w (Kaiming-uniform with a = sqrt(5)),
a standard deviation of 1 / sqrt(3 fan_in) (:func:`dense_kernel_std`). Each method reaches it
its own way (Tucker: a core drawn as a dense kernel, factors with rows of unit norm; MPS and TR:
orthogonal kernel cores and norm-preserving grid slices; CP: every weight at the dense kernels'
scale): see the methods' ``random``. The truncation of a random dense W would not do: its spread
shrinks with the ranks (a Tucker truncation keeps a little more than prod(R_k / D_k) of a random
tensor's energy: the kernels of a 3x T-Net start at less than half the dense init's standard
deviation).

Where the scale sits among the factors matters as much: a BatchNorm follows every block
convolution, so the forward pass does not see a kernel's scale, but RMSprop moves every
parameter by about the learning rate a step, and a tensor's relative change per step is the
learning rate over its entries' size. A Tucker core at the dense kernels' scale moves the
kernels about as fast as the dense network's own; with orthonormal factors (and the core
carrying sqrt(prod D_k / R_k) more) they move about half as fast, and the T-Net learns more
slowly (``docs/scratch.md``).

**Ranks for a ratio.** With no trained W there is no error bound to allocate on (the greedy
allocation of ``convert --ratio`` on a random W follows noise: on a 1-stack hourglass at 3x it
takes f_in to rank 1), so ``ratio=`` takes every rank at one value r or its limit where that is
lower (:meth:`~tcompress.methods.base.TensorMethod.uniform_ranks`), the largest r whose whole
network meets the ratio: Tucker keeps the small grid and kernel modes whole (while r is at least
their size) and narrows the channel modes alike, MPS narrows the widest bonds, CP takes the
largest rank, a tensor ring has a ring bond of 1 (as for ``convert``). Then the ranks at r go
one higher, one by one in mode order, while the budget still allows, so that the ratio is met
from above and closely.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence

import torch

from tcompress import __version__, methods
from tcompress.conversion import ConversionSummary
from tcompress.errors import MethodError, RankError, param
from tcompress.family import layout_family
from tcompress.methods.base import RankSpec
from tcompress.methods.selection import RankChoice, largest_uniform, ratio_budget
from tcompress.models import HourglassConfig, StackedHourglass
from tcompress.tnet import TNet, tensorize

__all__ = ["dense_kernel_std", "random_tnet", "scratch_ranks"]


def dense_kernel_std(fan_in: int) -> float:
    """The standard deviation of nn.Conv2d's default weights for ``fan_in`` = f_in h w:
    Kaiming-uniform with a = sqrt(5), U(-1/sqrt(fan_in), 1/sqrt(fan_in)), so 1 / sqrt(3 fan_in)
    (gain sqrt(2 / (1 + a^2)) = sqrt(1/3) over sqrt(fan_in))."""
    return 1 / math.sqrt(3 * fan_in)


def scratch_ranks(method: str, shape: Sequence[int], other_params: int, ratio: float) -> RankChoice:
    """The ranks a T-Net of ``method`` trained from scratch takes for a whole-network ``ratio``
    (``other_params``: the parameters outside W): the method's
    :meth:`~tcompress.methods.base.TensorMethod.uniform_ranks` at the largest r within the
    ratio's budget."""
    chosen = methods.get(method)
    shape = tuple(int(d) for d in shape)
    before = math.prod(shape) + other_params
    best = before / (chosen.params(shape, chosen.uniform_ranks(1, shape)) + other_params)
    budget = ratio_budget(ratio, before, other_params, best, chosen.name)
    # Double r until the ranks stop changing (every limit reached) or the budget is passed.
    top = 1
    while True:
        now, wider = chosen.uniform_ranks(top, shape), chosen.uniform_ranks(2 * top, shape)
        if wider == now or chosen.params(shape, now) > budget:
            break
        top *= 2
    choice = largest_uniform(
        chosen, shape, ratio, other_params, lambda r: chosen.uniform_ranks(r, shape), top
    )
    ranks = _fill(chosen, shape, choice.ranks, budget)
    return dataclasses.replace(choice, ranks=ranks, tensor_params=chosen.params(shape, ranks))


def _fill(method, shape: Sequence[int], ranks: Sequence[int], budget: float) -> tuple[int, ...]:
    """``ranks`` with what the budget still allows after the largest uniform value r: each rank
    at r, in mode order, one higher while the parameters stay within ``budget`` (the next
    uniform value would pass it, so a rank is raised at most once). Ranks at their limit (their
    value in the uniform ranks of an unbounded r: a tensor ring's bond stays 1), or at another
    value than r, stay."""
    ranks = tuple(ranks)
    if len(ranks) == 1:  # CP: the largest value within the budget is already the choice
        return ranks
    limits = method.uniform_ranks(math.prod(shape), shape)  # every rank at its limit
    r = max(ranks)
    for k, (rank, limit) in enumerate(zip(ranks, limits)):
        if rank != r or rank >= limit:
            continue
        wider = tuple(method.cap([*ranks[:k], rank + 1, *ranks[k + 1 :]], shape))
        if method.params(shape, wider) <= budget:
            ranks = wider
    return ranks


def random_tnet(
    config: HourglassConfig | Mapping[str, int],
    method: str = "tucker",
    ranks=None,
    *,
    ratio: float | None = None,
    seed: int = 0,
    forward: str = "reconstructed",
) -> TNet:
    """A new T-Net of a :class:`~tcompress.models.StackedHourglass` of ``config``, its block
    kernels one random low-rank tensor of ``method`` and ``ranks`` (or ranks for ``ratio``), for
    training from scratch (see the module's docstring for the initialisation).

    Parameters
    ----------
    config
        A :class:`~tcompress.models.HourglassConfig` or a mapping of its fields.
    method
        A T-Net method: ``"tucker"``, ``"mps"``, ``"cp"`` or ``"tr"``.
    ranks
        In the method's grammar, as :func:`tcompress.convert` takes them (``"full"`` keeps full
        ranks). Give ``ranks`` or ``ratio``, one of them.
    ratio
        A whole-network compression ratio against the dense hourglass of ``config``: every rank
        at the largest common value (or its limit) that meets it (:func:`scratch_ranks`).
    seed
        Seeds the dense layers (``torch.manual_seed``, as :func:`tcompress.train.train` does)
        and the factors (a generator of their own).
    forward
        ``"reconstructed"`` or ``"factorized"``.

    Returns
    -------
    TNet
        In train mode, with ``.summary`` as a conversion's (method, ranks, parameters, ratio;
        ``source`` None, ``relative_error`` NaN: there is no W to compare with) and ``scratch``:
        the seed, the block kernels' target standard deviation and how the ranks were chosen.

    Raises
    ------
    MethodError
        An unknown or layer-wise method.
    RankError
        Both or neither of ``ranks`` and ``ratio``, ranks that do not fit, a ratio out of reach.
    """
    start = time.perf_counter()
    chosen = methods.get(method)
    if chosen.kind != methods.TNET:
        raise MethodError(
            f"method {chosen.name!r} decomposes each layer on its own; a T-Net trained from "
            f"scratch takes one of {', '.join(methods.names(methods.TNET))}"
        )
    if (ranks is None) == (ratio is None):
        given = "both" if ranks is not None else "neither"
        raise RankError(
            f"a T-Net trained from scratch takes {param('ranks')} or {param('ratio')}, one of "
            f"them; got {given} ('full' ranks keep every mode whole)"
        )
    if not isinstance(config, HourglassConfig):
        config = HourglassConfig(**config)
    torch.manual_seed(seed)
    dense = StackedHourglass(**dataclasses.asdict(config))
    family = layout_family(dense)
    kernel = dense.get_submodule(family.names[0]).weight
    f_out, f_in, h, w = kernel.shape
    shape = (*family.grid, f_in, f_out, h, w)
    names = family.all_mode_names
    params_before = sum(p.numel() for p in dense.parameters())
    other = params_before - math.prod(shape)
    choice = None
    if ratio is not None:
        choice = scratch_ranks(chosen.name, shape, other, ratio)
        ranks = choice.ranks
    resolved = chosen.resolve(RankSpec.parse(ranks), shape, names)
    std = dense_kernel_std(f_in * h * w)
    generator = torch.Generator().manual_seed(seed)
    tensor = chosen.random(
        shape, resolved.ranks, std=std, n_grid=len(family.grid), generator=generator
    )
    tnet = TNet(tensorize(dense, family), tensor, forward=forward)
    params_after = sum(p.numel() for p in tnet.parameters())
    summary = ConversionSummary(
        method=chosen.name,
        ranks=list(resolved.ranks),
        mode_names=list(names),
        mode_sizes=list(shape),
        tensor_params_before=math.prod(shape),
        tensor_params_after=params_after - other,
        params_before=params_before,
        params_after=params_after,
        compression_ratio=params_before / params_after,
        relative_error=math.nan,
        notes=list(resolved.notes),
        target=None if choice is None else choice.target,
        architecture=type(dense).__name__,
    )
    summary.seconds = time.perf_counter() - start
    scratch = {
        "seed": seed,
        "kernel_std": std,
        "ranks_from": "given" if choice is None else "uniform",
    }
    architecture = {
        "name": type(dense).__name__,
        "config": config.to_dict(),
        "family": family.to_dict(),
        "tcompress": __version__,
    }
    tnet.meta = {
        "architecture": architecture,
        "summary": {**summary.to_dict(), "scratch": scratch},
    }
    return tnet.train()
