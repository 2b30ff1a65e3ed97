"""Dense network -> layer-wise compressed network: each kernel-family convolution decomposed alone.

Every kernel K (f_out, f_in, h, w) is decomposed by its layer-wise method
(:mod:`tcompress.methods`: ``layerwise-tucker``, ``layerwise-cp``, ``tai``) under
``torch.no_grad()`` in the kernel's dtype (float32 for half-precision kernels, stored back in their
own dtype) and replaced by the method's chain of convolutions.
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tcompress.errors import RankError
from tcompress.family import FamilyError, KernelFamily, KernelGroups, layout_family
from tcompress.layerwise import LayerwiseNet, layer_method
from tcompress.methods.base import GroupRanks, RankSpec
from tcompress.passes.data_aware import output_energy


@dataclass
class LayerwiseConfig:
    """How :func:`decompose_layers` decomposes every block convolution.

    Attributes
    ----------
    method
        ``"layerwise-tucker"``, ``"layerwise-cp"`` or ``"tai"``.
    ranks
        Per-layer ranks in any form :class:`~tcompress.methods.base.RankSpec` parses and the
        method accepts (``None`` or ``"full"``: exact); for a family of several groups, per
        group in any form :class:`~tcompress.methods.base.GroupRanks` parses (a dict group
        name -> ranks, or ``"layer2:4;layer3:8"``), ranks without a group applying to every
        group where they fit.
    n_iter
        ``layerwise-tucker``: HOOI sweeps after the HOSVD (default 0); ``layerwise-cp``: ALS
        sweeps (0: :data:`~tcompress.decompose.cp.CP_ITERATIONS`); ``tai``: must be 0 (closed form).
    seed
        Seed of the random start columns of CP-ALS.
    layer_ranks
        Ranks of every block convolution, by module name (:func:`allocate_layer_ranks`), in
        place of ``ranks``.
    """

    method: str
    ranks: object = None
    n_iter: int = 0
    seed: int = 0
    layer_ranks: Mapping[str, Sequence[int]] | None = None

    def __post_init__(self) -> None:
        method = layer_method(self.method)
        self.method = method.name
        method.check_refine(self.n_iter)


def decompose_layers(
    model: nn.Module,
    config: LayerwiseConfig,
    progress: Callable[[str], None] | None = None,
    *,
    family: KernelFamily | KernelGroups | None = None,
) -> tuple[LayerwiseNet, list[float]]:
    """A copy of ``model`` with every convolution of ``family`` (of each of its groups) replaced
    by its decomposed chain.

    ``family`` defaults to the block convolutions of a known hourglass layout
    (:func:`~tcompress.family.layout_family`); for any other network, give one
    (:func:`~tcompress.family.pattern_family`). ``progress``, if given, is called with a short
    description before each layer.

    Returns
    -------
    (LayerwiseNet, per-layer squared errors ||K - K_hat||^2 in W's order, group after group)
    """
    family = family if family is not None else _known_family(model)
    groups = family.groups
    method = layer_method(config.method)
    shapes = [block_kernel_shape(model, group) for group in groups]
    names = [group.group_name for group in groups]
    specs, notes = GroupRanks.parse(config.ranks).for_groups(
        names, lambda g, spec: method.resolve(spec, shapes[g])
    )
    resolved = []
    for g, (spec, shape) in enumerate(zip(specs, shapes)):
        try:
            resolved.append(method.resolve(spec, shape))
        except RankError as e:
            if len(groups) == 1:
                raise
            raise RankError(f"group {names[g]}: {e}") from None
    own = None
    if config.layer_ranks is not None:
        own = {
            name: method.resolve(RankSpec.parse(list(ranks)), block_kernel_shape(model, name)).ranks
            for name, ranks in config.layer_ranks.items()
        }
        # Each group's ranks: the largest of its layers', rank by rank.
        resolved = [
            dataclasses.replace(r, ranks=largest([own[n] for n in g.names]))
            for g, r in zip(groups, resolved)
        ]
    net = copy.deepcopy(model)
    squared = []
    total, done = len(family.names), 0
    with torch.no_grad():
        for group, ranks in zip(groups, resolved):
            for name in group.names:
                done += 1
                if progress is not None:
                    progress(f"Decomposing block convolution {done}/{total} ({config.method})")
                conv = net.get_submodule(name)
                layer = ranks.ranks if own is None else own[name]
                layers = decompose_conv(conv, config.method, layer, config)
                net.set_submodule(name, layers)
                rebuilt = method.kernel(layers)
                squared.append(float((rebuilt.double() - conv.weight.double()).square().sum()))
    if len(groups) == 1:
        out = LayerwiseNet(net, config.method, resolved[0].ranks, family, layer_ranks=own)
        notes = [*resolved[0].notes, *notes]
    else:
        out = LayerwiseNet(
            net,
            config.method,
            {n: r.ranks for n, r in zip(names, resolved)},
            family,
            layer_ranks=own,
        )
        notes = [f"{n}: {note}" for n, r in zip(names, resolved) for note in r.notes] + notes
    out.meta["notes"] = notes
    return out.train(model.training), squared


def largest(ranks: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The largest of several layers' ranks, rank by rank."""
    return tuple(max(values) for values in zip(*ranks))


def _known_family(model: nn.Module) -> KernelFamily:
    if not hasattr(model, "block_conv_names"):
        raise FamilyError(
            f"model is a {type(model).__name__} without a known kernel family; expected a "
            "StackedHourglass, BearpawHourglass or PoseNet, or family= (a KernelFamily, e.g. "
            "from tcompress.family.pattern_family)"
        )
    return layout_family(model)


def block_kernel_shape(model: nn.Module, family: KernelFamily | str) -> tuple[int, int, int, int]:
    """(f_out, f_in, h, w) of the family's kernels (all alike in a group; the first group's), or
    of the convolution named ``family``."""
    name = family if isinstance(family, str) else family.names[0]
    return tuple(model.get_submodule(name).weight.shape)


def decompose_conv(
    conv: nn.Conv2d, method: str, ranks: Sequence[int], config: LayerwiseConfig
) -> nn.Sequential:
    """The method's chain for ``conv``, its weights from the decomposition of ``conv.weight``."""
    kernel = conv.weight.detach()
    dtype = kernel.dtype
    work = kernel if dtype in (torch.float32, torch.float64) else kernel.float()
    chosen = layer_method(method)
    layers = chosen.skeleton(ranks, conv, device="meta")
    weights = chosen.weights(work, ranks, n_iter=config.n_iter, seed=config.seed)
    if conv.bias is not None:
        weights.append(conv.bias.detach())
    targets = [(m, name) for m in layers for name, _ in m.named_parameters(recurse=False)]
    for (module, name), value in zip(targets, weights, strict=True):
        setattr(module, name, nn.Parameter(value.to(dtype).contiguous().clone()))
    return layers


def choose_layer_ranks(
    method: str,
    kernel_shape: Sequence[int],
    n_layers: int,
    other_params: int,
    ratio: float,
) -> tuple[int, ...]:
    """The per-layer ranks (the same for every layer) whose whole-network compression ratio is
    nearest to ``ratio`` (on a log scale; a tie goes to the smaller model).

    The candidates are the method's (Tucker: R_in = R_out, full spatial modes). Whole-network
    parameters are ``other_params + n_layers * method.params(kernel_shape, ranks)``; the original
    network has ``other_params + n_layers * prod(kernel_shape)``.

    Raises
    ------
    RankError
        A ratio below 1 or above what rank 1 in every layer gives.
    """
    (ranks,) = choose_group_layer_ranks(method, [kernel_shape], [n_layers], other_params, ratio)
    return ranks


def choose_group_layer_ranks(
    method: str,
    kernel_shapes: Sequence[Sequence[int]],
    n_layers: Sequence[int],
    other_params: int,
    ratio: float,
) -> list[tuple[int, ...]]:
    """:func:`choose_layer_ranks` for several groups of layers (``kernel_shapes[g]``,
    ``n_layers[g]`` layers each): the same candidate for every layer, the i-th of each group's
    candidates (its last where a group has fewer: its layers are smaller), whose whole-network
    ratio is nearest to ``ratio``. Each group's ranks, in order."""
    chosen = layer_method(method)
    before = other_params + sum(n * math.prod(s) for s, n in zip(kernel_shapes, n_layers))
    candidates = [chosen.candidates(shape) for shape in kernel_shapes]
    steps = max(len(c) for c in candidates)

    def at(i: int) -> list[tuple[int, ...]]:
        return [c[min(i, len(c) - 1)] for c in candidates]

    def achieved(i: int) -> float:
        params = sum(
            n * chosen.params(shape, ranks)
            for shape, n, ranks in zip(kernel_shapes, n_layers, at(i))
        )
        return before / (other_params + params)

    _check_reach(ratio, achieved(0), method)
    i = min(range(steps), key=lambda i: (abs(math.log(achieved(i) / ratio)), -achieved(i)))
    return at(i)


def _check_reach(ratio, best: float, method: str) -> None:
    """A whole-network ratio a layer-wise method can meet: a number from 1 to ``best``, the
    ratio of rank 1 in every layer."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 1 <= ratio <= best:
        raise RankError(
            f"compression ratio {ratio!r} is out of reach: with {method} this network goes "
            f"from 1x to {best:.2f}x (rank 1 in every layer)"
        )


def layer_costs(method: str, kernels: Sequence[torch.Tensor], stats) -> list[list[list[float]]]:
    """What each rank of each layer costs the network's normalised outputs, measured on data.

    ``costs[l][k][r]``: the expected squared error of layer ``l``'s BatchNorm-normalised output
    (:func:`~tcompress.passes.data_aware.output_error`'s measure, on the layer's input moments
    ``stats.moments[l]`` and scales ``stats.scales[l]``) when rank ``k`` of its decomposition
    is ``r`` and the others are full (the method's
    :meth:`~tcompress.methods.base.LayerMethod.truncations`), over the summed normalised output
    energy of every layer; never increasing with ``r``, 0 at full rank. The layers in the order
    of ``stats`` (W's row-major order)."""
    chosen = layer_method(method)
    moments = stats.moments.double()
    scales = stats.scales.double()

    def energy(i: int, kernel: torch.Tensor) -> float:
        return float(
            output_energy(kernel.reshape(kernel.shape[0], -1) * scales[i][:, None], moments[i])
        )

    with torch.no_grad():
        works = [k.detach().double() for k in kernels]
        total = sum(energy(i, k) for i, k in enumerate(works)) or 1.0
        full = RankSpec.parse("full")
        costs = []
        for i, kernel in enumerate(works):
            limits = chosen.resolve(full, tuple(kernel.shape)).ranks
            layer = []
            for keep, limit in zip(chosen.truncations(kernel), limits):
                values = [energy(i, kernel - keep(r)) / total for r in range(limit)] + [0.0]
                for r in range(1, len(values)):  # a larger rank never costs more
                    values[r] = min(values[r], values[r - 1])
                layer.append(values)
            costs.append(layer)
    return costs


def allocate_layer_ranks(
    method: str,
    kernels: Mapping[str, torch.Tensor],
    other_params: int,
    ratio: float,
    costs: Mapping[str, Sequence[Sequence[float]]] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Ranks of every layer, each its own, for a whole-network ``ratio``.

    Without ``costs``, on each kernel's spectrum, its error taken relative to the kernel (a
    BatchNorm follows every block convolution, so the next layer sees a kernel's direction, not
    its scale): the bound of a layer at ranks r is the tail of its
    :meth:`~tcompress.methods.base.LayerMethod.layer_spectra` beyond r over ``||K||^2``. With
    ``costs`` (layer name -> :func:`layer_costs`' entry), on what each rank costs the outputs.
    From full ranks, the greedy steps lower, one at a time, the rank (of any layer) that adds the
    least to the summed costs per parameter saved, until the network's parameters
    (``other_params`` outside the kernels, on both sides) meet the ratio.

    Returns
    -------
    dict
        Layer name -> its ranks, in the order of ``kernels``.

    Raises
    ------
    RankError
        A method without a bound (layer-wise CP), or a ratio out of reach.
    """
    chosen = layer_method(method)
    names = list(kernels)
    shapes = {n: tuple(int(d) for d in kernels[n].shape) for n in names}
    if not chosen.per_layer_bound:
        raise RankError(
            f"{chosen.name} has no error bound to give each layer its own ranks; give it "
            "one rank for every layer (--ratio without --per-layer)"
        )
    tails = {}
    for n in names:
        if costs is not None:
            tails[n] = [list(map(float, mode)) for mode in costs[n]]
            continue
        norm = float(kernels[n].double().square().sum()) or 1.0
        spectra = chosen.layer_spectra(kernels[n].detach())
        tails[n] = [[float(t) / norm for t in s.flip(0).cumsum(0).flip(0)] + [0.0] for s in spectra]
    ranks = {n: [len(t) - 1 for t in tails[n]] for n in names}
    full = RankSpec.parse("full")
    limits = {n: chosen.resolve(full, shapes[n]).ranks for n in names}
    ranks = {n: [min(r, limit) for r, limit in zip(ranks[n], limits[n])] for n in names}
    before = other_params + sum(math.prod(shapes[n]) for n in names)
    smallest = other_params + sum(chosen.params(shapes[n], [1] * len(ranks[n])) for n in names)
    _check_reach(ratio, before / smallest, method)
    budget = before / ratio - other_params
    params = {n: chosen.params(shapes[n], ranks[n]) for n in names}
    total = sum(params.values())
    version = dict.fromkeys(names, 0)
    heap = []

    def push(i: int) -> None:
        n = names[i]
        for k, r in enumerate(ranks[n]):
            if r <= 1:
                continue
            lower = [*ranks[n][:k], r - 1, *ranks[n][k + 1 :]]
            saved = params[n] - chosen.params(shapes[n], lower)
            if saved > 0:
                lost = tails[n][k][r - 1] - tails[n][k][r]
                heapq.heappush(heap, (lost / saved, i, k, version[n]))

    for i in range(len(names)):
        push(i)
    while total > budget and heap:
        _, i, k, seen = heapq.heappop(heap)
        n = names[i]
        if seen != version[n]:
            continue  # this layer changed since the step was priced
        ranks[n][k] -= 1
        after = chosen.params(shapes[n], ranks[n])
        total += after - params[n]
        params[n] = after
        version[n] += 1
        push(i)
    return {n: tuple(ranks[n]) for n in names}
