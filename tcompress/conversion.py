"""Dense network -> compressed network, one pipeline for every method of :mod:`tcompress.methods`:

read the dense source (:mod:`tcompress.source`) -> choose the ranks (for a ratio or an energy
target) or check the ranks given -> decompose (a T-Net method: W, the stacked kernels, becomes one
shared tensor, or one per group of same-shape kernels; a layer-wise method: every kernel its own
chain) -> build the module -> optional data-aware refinement -> summary.

A family of several groups (:class:`~tcompress.family.KernelGroups`) takes ranks per group
(:class:`~tcompress.methods.base.GroupRanks`: ``"layer2:f_in=64;layer3:f_in=128"``, or one spec for
every group where it fits), and a target (``ratio``, ``energy``) chooses the ranks of every group
together, for the whole network."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from tcompress import methods
from tcompress.checkpoint import check_finite
from tcompress.decompose._grams import summed_row_gram
from tcompress.decompose._threads import one_thread
from tcompress.errors import RankError, TcompressError, param
from tcompress.family import KernelFamily
from tcompress.layerwise import LAYER_MODE_NAMES, LayerwiseNet, StackedChains
from tcompress.methods.base import GroupRanks, RankSpec
from tcompress.passes.data_aware import (
    DATA_AWARE_ITERATIONS,
    group_statistics,
    output_error,
    refine_to_data,
)
from tcompress.source import Source, read_source
from tcompress.tnet import TNet, tensorize

log = logging.getLogger(__name__)


@dataclass
class ConversionSummary:
    """What a conversion did, in whole-network figures; saved with the T-Net, shown by the CLI.

    ``groups`` has one dict per tensor (one for a hourglass; layer-wise: one per group of
    kernels decomposed alike), with exactly the keys ``name``, ``mode_names``, ``mode_sizes``,
    ``ranks``, ``members`` (kernels), ``tensor_params_before``, ``tensor_params_after``,
    ``relative_error`` and ``mode_values`` (each grid mode's values, as in
    :attr:`~tcompress.family.KernelFamily.mode_values`; empty for the known layouts). With one
    group the top-level ``ranks``, ``mode_names`` and ``mode_sizes`` are that group's; with
    several they are empty lists (the groups hold them), ``relative_error`` is over all the
    tensors together (``sqrt(sum ||W_g - W_hat_g||^2 / sum ||W_g||^2)``), ``errors`` too (a
    T-Net's, sweep by sweep) and ``predicted_error`` likewise.
    """

    method: str
    ranks: list[int]
    mode_names: list[str]
    mode_sizes: list[int]
    tensor_params_before: int
    tensor_params_after: int
    params_before: int
    params_after: int
    compression_ratio: float
    relative_error: float
    refine: int = 0
    errors: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    source: str | None = None
    source_sha256: str | None = None
    dtype: str = "float32"
    target: str | None = None  # "ratio 4" / "energy 0.9" when the ranks were chosen from it
    predicted_error: float | None = None  # the bound the chosen ranks were picked by
    architecture: str = "StackedHourglass"
    left_out: list[str] = field(default_factory=list)  # matching kernels kept dense, and why
    data_aware: dict | None = None  # DataAwareReport.to_dict() when the factors were fitted to data
    layers: int | None = None  # layer-wise methods: how many convolutions were decomposed
    rank_search: dict | None = None  # SearchReport.to_dict() when the ranks were searched on data
    # The modes weighted by the data before decomposing (whiten=); "group: mode" for several.
    whitened: list[str] | None = None
    groups: list[dict] = field(default_factory=list)  # one entry per tensor (see above)
    # Layer-wise methods with per_layer=True: every block convolution's ranks, by module name,
    # and what chose them ("bound": the kernels' spectra; "data": measured output costs).
    layer_ranks: dict | None = None
    layer_criterion: str | None = None
    # The Tucker core and factors rescaled for fine-tuning (balance=True): factors sqrt(D/R)
    # times orthonormal, the core at the scale of W's entries.
    balanced: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def convert(
    model: str | os.PathLike | nn.Module | Mapping[str, torch.Tensor],
    method: str = "tucker",
    ranks=None,
    *,
    arch: str | None = None,
    family: str | None = None,
    refine: int = 0,
    forward: str = "reconstructed",
    ratio: float | None = None,
    energy: float | None = None,
    seed: int = 0,
    refine_data: str | os.PathLike | Iterable | None = None,
    data: str | os.PathLike | Iterable | None = None,
    whiten: str | os.PathLike | Iterable | None = None,
    per_layer: bool = False,
    refine_samples: int = 256,
    refine_iterations: int = DATA_AWARE_ITERATIONS,
    balance: bool = True,
    device: str | torch.device | None = None,
    progress: Callable[[str], None] | None = None,
) -> TNet | LayerwiseNet:
    """Convert a dense network into a T-Net, or into a layer-wise compressed network.

    Parameters
    ----------
    model
        A dense network of a known layout (:class:`~tcompress.models.StackedHourglass`,
        :class:`~tcompress.models.BearpawHourglass`, :class:`~tcompress.models.PoseNet`), its
        state_dict, or a checkpoint path (bare or wrapped state_dict, ``module.`` prefixes; the
        layout and its configuration are read off the keys). With ``arch`` and ``family``: any
        network's checkpoint, state_dict or module.
    method
        A method registered in :mod:`tcompress.methods`. ``"tucker"`` (HOSVD, optionally refined
        by HOOI), ``"mps"`` (TT-SVD), ``"cp"`` (ALS) or ``"tr"`` (tensor ring, TR-SVD): a
        T-Net. ``"layerwise-tucker"``, ``"layerwise-cp"`` or ``"tai"``: every convolution of the
        kernel family decomposed on its own (:mod:`tcompress.passes.layerwise`), a
        :class:`~tcompress.layerwise.LayerwiseNet`; ``ranks`` are then per-layer ranks,
        ``ratio`` picks the per-layer rank whose whole-network ratio is nearest, ``refine``
        counts HOOI (Tucker) or ALS (CP) sweeps per layer, ``refine_data`` fits every chain, and
        ``forward`` does not apply.
    ranks
        In the method's grammar, as a string of the CLI's forms, a sequence (``None`` keeps a
        mode) or a dict of named modes (:class:`~tcompress.methods.base.RankSpec`). Tucker: one
        rank per mode or named modes; MPS and TR: the bond ranks or one for all; CP: one rank.
        ``None`` keeps full ranks. With ``ratio`` or ``energy``: the ranks given are fixed and
        the others (``None``, ``"full"``, ``"-"`` or not named) are chosen. A family of several
        groups takes ranks per group, ``"layer2:f_in=64,f_out=64;layer3:full"`` or a dict group
        name -> ranks (:class:`~tcompress.methods.base.GroupRanks`); ranks without a group apply
        to every group where they fit, and a group not named keeps full (or chosen) ranks.
    arch
        ``"MODULE:FACTORY"``: a function (importable, called without arguments) that builds the
        user's dense network; the checkpoint must load into it strictly. Recorded in the T-Net
        file; :func:`tcompress.load` needs it again.
    family
        With ``arch``: the pattern over module names that selects the stacked convolutions, its
        ``{named}`` parts becoming the leading modes (:func:`tcompress.family.pattern_family`),
        e.g. ``"layer{stage}.{block}.conv{conv}"``. Kernels of several geometries give one
        tensor per group of same-geometry kernels.
    refine
        Tucker: HOOI sweeps after the HOSVD; CP: ALS sweeps (0: the default budget,
        :data:`~tcompress.decompose.cp.CP_ITERATIONS`).
    seed
        Seed of the random start columns of CP-ALS.
    ratio, energy
        Choose the ranks for a whole-network compression ratio (met within 3% above) or for a
        fraction of ``||W||^2`` kept, greedily on the HOSVD / TT-SVD error bound
        (:mod:`tcompress.methods.selection`); CP takes the largest uniform rank within a
        ratio's budget, TR a ring bond of 1 and the MPS allocation. Several groups share one
        target: the steps range over every group's ranks.
    refine_data
        Images (a data spec such as ``"synthetic"`` or an image folder, or an iterable of image
        batches) on which to fit the factors so that every block convolution's output stays close
        to the original's (:mod:`tcompress.passes.data_aware`), after the decomposition and any
        ``refine`` sweeps; labels are not used. Several groups are fitted one after the other,
        on statistics gathered in one pass.
    data
        With ``ratio`` or ``energy``: images (as ``refine_data``) on which the ranks are chosen
        by what each mode's truncation costs every block convolution's normalised output
        (:func:`~tcompress.passes.data_aware.mode_costs`), in every mode, then (Tucker) rank
        sets are climbed on the converted network's agreement with the original; MPS and TR
        allocate their bonds on what truncating each costs
        (:meth:`~tcompress.methods.mps.MPS.data_costs`); without data, ranks are allocated on
        the HOSVD / TT-SVD error bound of W. CP keeps its one rank (the notes say so). A
        family of several groups allocates every group's ranks at once, each group's costs
        weighted by its layers (:meth:`~tcompress.methods.base.TensorMethod.choose_groups`),
        with no climb. With ``per_layer``: the layers' own ranks on what each costs its
        layer's outputs.
    whiten
        T-Net methods: images (as ``refine_data``) whose block-convolution inputs weight the
        kernel modes before the decomposition (:mod:`tcompress.passes.whiten`), so that each
        truncated channel or kernel direction is chosen by what it costs the outputs rather
        than by its share of ``||W||``; only the modes whose rank is below their size are
        weighted (all four for MPS, TR and CP, whose ranks truncate every mode).
        Combines with ``refine_data`` (the fit then starts there).
    per_layer
        Layer-wise Tucker and Tai with ``ratio``: every layer takes ranks of its own, allocated
        on the spectra of the kernels, each relative to its own norm
        (:func:`~tcompress.passes.layerwise.allocate_layer_ranks`); without it, one rank for
        every layer. The summary's ``layer_ranks`` lists them, its ``ranks`` give the largest.
    refine_samples, refine_iterations
        Images read from ``data``, ``whiten`` or ``refine_data`` and L-BFGS iterations of the
        fit.
    balance
        Tucker T-Nets: rescale the HOSVD's orthonormal factors by sqrt(D_k / R_k) and the core
        by the inverse product (:meth:`~tcompress.methods.tucker.Tucker.balance`): the same W,
        with the core's entries at the scale of W's own, so that fine-tuning moves W about as
        fast as it moves a dense network's kernels (``docs/balance.md``). False keeps the
        orthonormal factors. Modes kept at full rank are never rescaled.
    forward
        ``"reconstructed"`` or ``"factorized"``; switchable later with ``TNet.set_forward``.
    device
        Where to decompose and where the T-Net lives; default: where the weights are.
    progress
        Called with the name of each phase as it starts (for progress displays).

    Returns
    -------
    TNet or LayerwiseNet
        With ``.summary`` (a :class:`ConversionSummary`, as a dict) describing the conversion.
    """
    start = time.perf_counter()
    progress = progress or (lambda phase: None)
    chosen = methods.get(method)
    grouped = GroupRanks.parse(ranks)
    refine = chosen.check_refine(refine)
    if ratio is not None and energy is not None:
        raise RankError(f"give {param('ratio')} or {param('energy')}, not both")
    progress("Reading the checkpoint")
    src = read_source(model, arch=arch, family=family, check_kernels=False)
    groups = src.family.groups
    names = [g.group_name for g in groups]
    with torch.no_grad():
        Ws = src.stacked_groups()
        # A sum is finite when every entry is (barring overflow, which the exact search clears).
        # One thread: a reduction's barrier waits on busy cores (tcompress.decompose._threads).
        with one_thread():
            finite = all(bool(torch.isfinite(W.sum())) for W in Ws)
        if not finite:
            check_finite({k: src.state[k] for k in src.family.weight_keys()}, src.where)
    device = torch.device(device) if device is not None else None
    modes = [_modes(chosen, g, W) for g, W in zip(groups, Ws)]
    target = ratio is not None or energy is not None
    choice, notes, search = None, [], None
    group_stats, stats_of = None, None  # every group's statistics, and the images they are of
    if data is not None and not target:
        raise RankError(
            f"{param('data')} chooses the ranks for a target; give {param('ratio')} or "
            f"{param('energy')} with it (or fit the factors with {param('refine_data')})"
        )

    def fits(g: int, spec: RankSpec):
        mode_names, sizes = modes[g]
        if not target:
            return chosen.resolve(spec, sizes, mode_names)
        if chosen.kind == methods.TNET and chosen.fixes_ranks:
            return chosen.fixed(spec, sizes, mode_names)
        return None  # the method's choice refuses ranks given with a target, in its own words

    specs, group_notes = grouped.for_groups(names, fits)
    notes += group_notes
    layer_ranks = None
    if per_layer:
        if data is not None:
            group_stats, stats_of = _gather(src, Ws, data, refine_samples, seed, progress), data
        progress("Choosing the ranks of every layer")
        choice, layer_ranks = _per_layer(chosen, src, Ws, specs, ratio, group_stats)
        specs = [RankSpec.parse(list(c.ranks)) for c in choice.choices]
        notes.append(_per_layer_note(chosen, layer_ranks, group_stats))
    elif target and len(groups) > 1:
        for g, spec in enumerate(specs):
            _in_group(names, g, fits, g, spec)
        costs = None
        if data is not None:
            group_stats, stats_of = _gather(src, Ws, data, refine_samples, seed, progress), data
            costs = _data_costs(chosen, Ws, group_stats)
        progress("Choosing the ranks")
        choice = _choose_groups(chosen, Ws, specs, src, modes, ratio, energy, costs)
        specs = [RankSpec.parse(c.ranks) for c in choice.choices]
        if data is not None and choice.criterion != "data":
            notes.append(_not_chosen_by_data(chosen))
    elif target:
        W, spec = Ws[0], specs[0]
        costs = None
        if data is not None:
            group_stats, stats_of = _gather(src, Ws, data, refine_samples, seed, progress), data
            costs = (_data_costs(chosen, Ws, group_stats) or [None])[0]
        progress("Choosing the ranks")
        choice = _choose(chosen, W, spec, src, ratio, energy, costs)
        # The climb over the small grid and kernel modes is Tucker's (per-mode ranks).
        if (
            data is not None
            and ratio is not None
            and choice.criterion == "data"
            and chosen.per_mode
        ):
            choice, search = _search(
                chosen, W, spec, src, ratio, choice, data, costs, seed, progress
            )
        specs = [RankSpec.parse(choice.ranks)]
        if data is not None and choice.criterion not in ("data", "search"):
            notes.append(_not_chosen_by_data(chosen))
    resolved = [
        _in_group(names, g, chosen.resolve, spec, modes[g][1], modes[g][0])
        for g, spec in enumerate(specs)
    ]
    notes = [
        note if len(groups) == 1 else f"{name}: {note}"
        for name, r in zip(names, resolved)
        for note in r.notes
    ] + notes
    ranks_of = [r.ranks for r in resolved]
    weights = [None] * len(groups)
    if whiten is not None:
        if chosen.kind != methods.TNET:
            raise TcompressError(
                f"{param('whiten')} weights the modes of the shared tensor; {chosen.name} "
                "decomposes each layer on its own (use a T-Net method: tucker, mps, cp, tr)"
            )
        from tcompress.passes.whiten import whitening

        if group_stats is None or not _same_images(whiten, stats_of):  # gathered once
            group_stats, stats_of = _gather(src, Ws, whiten, refine_samples, seed, progress), whiten
        # Per-mode ranks say which modes are truncated; a train, a ring or CP truncates them all.
        weights = [
            whitening(st, tuple(W.shape), r if chosen.per_mode else None)
            for st, W, r in zip(group_stats, Ws, ranks_of)
        ]
    progress(f"Decomposing {_parts(chosen, src, Ws)} with {chosen.name}")
    if chosen.kind == methods.TNET:
        decompositions = [
            _decompose(chosen, W, r, refine, seed, device, w, _kernels(src, group))
            for group, W, r, w in zip(groups, Ws, ranks_of, weights)
        ]
        tensors = [d[0] for d in decompositions]
        shared = tensors[0] if len(groups) == 1 else dict(zip(names, tensors))
        net = src.without_kernels(tensorize, device)
        model = TNet(net, shared, family=src.family)
        model.set_forward(forward)
        fitted = tensors
        group_errors = [d[1] for d in decompositions]
        relative = [d[2] for d in decompositions]
    else:
        model, fitted, group_errors, relative = _layerwise(
            chosen, src, ranks_of, refine, seed, device, progress, layer_ranks
        )
    data_aware = None
    if refine_data is not None:
        progress("Fitting the factors to the data")
        W_here = Ws if device is None else [W.to(device) for W in Ws]
        if group_stats is None or not _same_images(refine_data, stats_of):  # gathered once
            group_stats = _statistics(src, W_here[0].device, refine_data, refine_samples, seed)
        data_aware = _fit_groups(names, fitted, W_here, group_stats, refine_iterations)
        for g, (tensor, W) in enumerate(zip(fitted, W_here)):
            group_errors[g], relative[g] = _errors(chosen, tensor, W, group_errors[g])
    balanced = False
    if balance and chosen.kind == methods.TNET:
        for tensor in fitted:  # the scale spread for fine-tuning, once every fit is done
            balanced = chosen.balance(tensor) or balanced
    params_after = sum(p.numel() for p in model.parameters())
    kernel_params = sum(W.numel() for W in Ws)
    one = len(groups) == 1
    # ||W_g||^2, which weighs each group's errors in the whole's (one group: not needed)
    norms = [1.0] if one else [float(W.double().square().sum()) for W in Ws]
    entries = [
        _group_entry(chosen, group, W, mode, r, tensor, error, layer_ranks)
        for group, W, mode, r, tensor, error in zip(groups, Ws, modes, ranks_of, fitted, relative)
    ]
    summary = ConversionSummary(
        method=chosen.name,
        ranks=list(ranks_of[0]) if one else [],
        mode_names=list(modes[0][0]) if one else [],
        mode_sizes=list(modes[0][1]) if one else [],
        tensor_params_before=kernel_params,
        tensor_params_after=params_after - (src.params_before - kernel_params),
        params_before=src.params_before,
        params_after=params_after,
        compression_ratio=src.params_before / params_after,
        relative_error=relative[0] if one else _joint(relative, norms),
        refine=refine,
        errors=_joint_errors(chosen, group_errors, norms),
        notes=notes,
        source=src.source,
        source_sha256=src.sha256,
        dtype=str(Ws[0].dtype).removeprefix("torch."),
        target=choice.target if choice else None,
        predicted_error=_finite_or_none(choice.predicted_error) if choice else None,
        architecture=src.architecture["name"],
        left_out=list(src.family.left_out),
        data_aware=data_aware,
        layers=None if chosen.kind == methods.TNET else len(src.family.names),
        rank_search=None if search is None else search.to_dict(),
        groups=entries,
        whitened=_whitened(names, modes, weights) if whiten is not None else None,
        layer_ranks=None if layer_ranks is None else {n: list(r) for n, r in layer_ranks.items()},
        layer_criterion=None if layer_ranks is None else choice.criterion,
        balanced=balanced,
    )
    summary.seconds = time.perf_counter() - start
    model.meta = {"architecture": src.architecture, "summary": summary.to_dict()}
    log.info(
        "converted with %s, ranks %s: %.2fx",
        chosen.name,
        summary.ranks if one else {e["name"]: e["ranks"] for e in entries},
        summary.compression_ratio,
    )
    return model


def _in_group(names: Sequence[str], g: int, call: Callable, *args):
    """``call(*args)`` for group ``g``; with several groups, an error it raises names the
    group."""
    try:
        return call(*args)
    except TcompressError as e:
        if len(names) == 1:
            raise
        raise type(e)(f"group {names[g]}: {e}") from None


def _parts(chosen, src: Source, Ws) -> str:
    """What the method decomposes, in words."""
    if chosen.kind != methods.TNET:
        return f"{len(src.family.names)} block convolutions"
    return "W" if len(Ws) == 1 else f"{len(Ws)} tensors"


def _refuse_layer_ranks(chosen, spec: RankSpec, ratio):
    raise RankError(
        f"ranks {spec.shown} and ratio {ratio!r} both given; a layer-wise method takes "
        f"{param('ranks')} or {param('ratio')} (the same rank for every layer), not both"
    )


def _gather(src: Source, Ws, data, samples, seed, progress) -> list:
    """Every group's :func:`_statistics` on ``data``, said as it starts."""
    progress("Gathering the block convolutions' inputs")
    return _statistics(src, Ws[0].device, data, samples, seed)


def _data_costs(chosen, Ws, group_stats) -> list | None:
    """Each group's measured truncation costs (:meth:`~tcompress.methods.base.TensorMethod.
    data_costs`), or None where the method allocates on its bound even with data."""
    if chosen.kind != methods.TNET:
        return None
    with torch.no_grad():
        costs = [chosen.data_costs(W, stats) for W, stats in zip(Ws, group_stats)]
    return None if any(c is None for c in costs) else costs


def _not_chosen_by_data(chosen) -> str:
    """The note of a conversion given data its method cannot allocate on."""
    if chosen.kind == methods.TNET:
        why = "Tucker, MPS and TR have; CP's one rank is the ratio's"
    else:
        why = "its one rank for every layer is the ratio's; per-layer ranks are chosen on it"
    return f"the data did not choose the ranks: {chosen.name} has no data-aware allocation ({why})"


def _choose_groups(chosen, Ws, specs, src: Source, modes, ratio, energy, costs=None):
    """Ranks of every group for one target: a T-Net method allocates over every group's ranks
    at once (on measured ``costs`` if given, one list per group); a layer-wise method takes the
    one per-layer rank (capped where a group's layers are smaller) whose whole-network ratio is
    nearest."""
    other = src.params_before - sum(W.numel() for W in Ws)
    if chosen.kind == methods.TNET:
        return chosen.choose_groups(
            Ws,
            specs,
            [m[0] for m in modes],
            ratio=ratio,
            energy=energy,
            other_params=other,
            costs=costs,
        )
    from tcompress.methods.selection import GroupChoice, RankChoice
    from tcompress.passes.layerwise import choose_group_layer_ranks

    if energy is not None:
        raise RankError(
            f"an energy target applies to T-Nets (tucker, mps); give {chosen.name} "
            f"{param('ranks')} or {param('ratio')}"
        )
    given = next((spec for spec in specs if not spec.full), None)
    if given is not None:
        _refuse_layer_ranks(chosen, given, ratio)
    shapes = [m[1] for m in modes]
    counts = [len(g.members) for g in src.family.groups]
    ranks = choose_group_layer_ranks(chosen.name, shapes, counts, other, ratio)
    target = f"ratio {ratio:g}"
    choices = tuple(
        RankChoice(chosen.name, r, n * chosen.params(shape, r), math.nan, math.nan, target)
        for r, shape, n in zip(ranks, shapes, counts)
    )
    params = sum(c.tensor_params for c in choices)
    return GroupChoice(chosen.name, choices, params, math.nan, math.nan, target, "uniform")


def _group_entry(chosen, group, W, mode, ranks, tensor, error, layer_ranks=None) -> dict:
    """The summary's entry for one group (the keys :class:`ConversionSummary` lists)."""
    mode_names, mode_sizes = mode
    if chosen.kind == methods.TNET:
        after = sum(p.numel() for p in tensor.parameters())
    elif layer_ranks is not None:
        after = sum(chosen.params(mode_sizes, layer_ranks[name]) for name in group.names)
    else:
        after = len(group.members) * chosen.params(mode_sizes, ranks)
    return {
        "name": group.group_name,
        "mode_names": list(mode_names),
        "mode_sizes": list(mode_sizes),
        "ranks": list(ranks),
        "members": len(group.members),
        "tensor_params_before": W.numel(),
        "tensor_params_after": after,
        "relative_error": float(error),
        "mode_values": [list(v) for v in group.mode_values],
    }


def _joint(errors: Sequence[float], norms: Sequence[float]) -> float:
    """Relative errors of several tensors as one: sqrt(sum e_g^2 ||W_g||^2 / sum ||W_g||^2)."""
    total = sum(norms)
    return math.sqrt(sum(e * e * n for e, n in zip(errors, norms)) / max(total, 1e-300))


def _joint_errors(chosen, group_errors, norms) -> list[float]:
    """The summary's ``errors``: a T-Net's sweep errors (of all the groups' tensors together,
    sweep by sweep, a group with fewer sweeps at its last); a layer-wise method's per-layer
    errors, group after group."""
    if len(group_errors) == 1:
        return [float(e) for e in group_errors[0]]
    if chosen.kind != methods.TNET:
        return [float(e) for errors in group_errors for e in errors]
    sweeps = max(len(e) for e in group_errors)
    return [_joint([e[min(i, len(e) - 1)] for e in group_errors], norms) for i in range(sweeps)]


def _modes(chosen, group: KernelFamily, W: torch.Tensor):
    """The modes one group's ranks refer to (names, sizes): its W for a T-Net method, one of its
    kernels (f_out, f_in, h, w) for a layer-wise one."""
    if chosen.kind == methods.TNET:
        return group.all_mode_names, tuple(W.shape)
    g = len(group.grid)
    f_in, f_out, h, w = W.shape[g:]
    return LAYER_MODE_NAMES, (f_out, f_in, h, w)


def _choose(chosen, W, spec: RankSpec, src: Source, ratio, energy, costs=None):
    """Ranks for a target: the T-Net methods allocate on W (on measured ``costs`` if given);
    a layer-wise method takes the one per-layer rank whose whole-network ratio is nearest."""
    other = src.params_before - W.numel()
    if chosen.kind == methods.TNET:
        names = src.family.all_mode_names
        return chosen.choose(
            W, spec, names, ratio=ratio, energy=energy, other_params=other, costs=costs
        )
    from tcompress.methods.selection import RankChoice
    from tcompress.passes.layerwise import choose_layer_ranks

    if energy is not None:
        raise RankError(
            f"an energy target applies to T-Nets (tucker, mps); give {chosen.name} "
            f"{param('ranks')} or {param('ratio')}"
        )
    if not spec.full:
        raise RankError(
            f"ranks {spec.shown} and ratio {ratio!r} both given; a layer-wise method takes "
            f"{param('ranks')} or {param('ratio')} (the same rank for every layer), not both"
        )
    _, shape = _modes(chosen, src.family, W)
    n_layers = len(src.family.members)
    ranks = choose_layer_ranks(chosen.name, shape, n_layers, other, ratio)
    params = n_layers * chosen.params(shape, ranks)
    return RankChoice(chosen.name, ranks, params, math.nan, math.nan, f"ratio {ratio:g}", "uniform")


#: Images the rank search re-estimates BatchNorm on, and scores agreement on (each): all of
#: them for the finalists, the first QUICK_IMAGES for the quick rating of every candidate.
SEARCH_IMAGES = 64
QUICK_IMAGES = 16


def _search(chosen, W, spec, src: Source, ratio, start, data, costs, seed, progress):
    """Climb from the data-aware allocation ``start`` on the converted network's agreement with
    the original (:mod:`tcompress.passes.rank_search`); the choice and the search's report."""
    from tcompress.methods.selection import RATIO_TOLERANCE, SMALL_MODE, allocate
    from tcompress.passes.rank_search import AgreementScorer, fixed_small, search_ranks

    names, shape = src.family.all_mode_names, tuple(W.shape)
    other = src.params_before - W.numel()
    user = chosen.fixed(spec, shape, names)
    limits = chosen.limits(shape)
    bound = _choose(chosen, W, spec, src, ratio, None)

    def allocate_large(ranks):
        small = fixed_small(ranks, limits, SMALL_MODE)
        fixed = [u if u is not None else f for u, f in zip(user, small)]
        try:
            found = allocate(
                chosen, shape, None, ratio=ratio, fixed=fixed, other_params=other, costs=costs
            )
        except RankError:
            return None
        achieved = src.params_before / (found.tensor_params + other)
        return found if ratio <= achieved <= ratio * (1 + RATIO_TOLERANCE) else None

    images = torch.cat(_image_batches(data, 2 * SEARCH_IMAGES, seed))
    half = max(1, images.shape[0] // 2)
    recalibration, scoring = images[:half], images[half:] if images.shape[0] > 1 else images
    dense, keys, n_grid = src.module(W.device), src.family.weight_keys(), len(src.family.grid)
    scorer = AgreementScorer(dense, keys, n_grid, recalibration.split(16), scoring.split(16))
    quick = AgreementScorer(
        dense, keys, n_grid, [recalibration[:QUICK_IMAGES]], [scoring[:QUICK_IMAGES]]
    )
    return search_ranks(
        chosen,
        W,
        start,
        allocate_large,
        scorer,
        quick_score=quick,
        others=(bound,),
        fixed=user,
        progress=progress,
    )


def _image_batches(data, count: int, seed: int) -> list[torch.Tensor]:
    """Up to ``count`` images of ``data`` (a spec's training split, or an iterable of batches
    or of dicts with an ``"image"``), in batches of 16."""
    from torch.utils.data import DataLoader

    from tcompress.data import make_dataset

    if isinstance(data, str | os.PathLike):
        data = DataLoader(make_dataset(data, "train", n=count, seed=seed + 1), batch_size=16)
    batches, seen = [], 0
    for batch in data:
        images = batch["image"] if isinstance(batch, dict) else batch
        batches.append(images[: count - seen])
        seen += batches[-1].shape[0]
        if seen >= count:
            break
    return batches


def _kernels(src: Source, group) -> list[torch.Tensor]:
    """The Conv2d kernels (f_out, f_in, h, w) one group's W was stacked from."""
    return [src.state[key] for key in group.weight_keys()]


def _kernel_grams(chosen, kernels, work: torch.Tensor) -> dict:
    """``{"grams": {f_out: Gram}}`` for a method whose decomposition takes Grams: W's f_out Gram
    from the kernels W was stacked from, where every f_out fibre is a row of a kernel viewed
    (f_out, f_in * h * w), so it takes one GEMM per kernel; W's own f_out unfolding has h * w
    contiguous entries per fibre and needs a transposing copy of W (for the paper's W, 30 ms
    against 44 ms on 2 cores). Empty when the kernels are not of W's dtype and device."""
    if not chosen.takes_grams or any(
        k.dtype != work.dtype or k.device != work.device for k in kernels
    ):
        return {}
    rows = [k.reshape(k.shape[0], -1) for k in kernels]
    return {"grams": {work.ndim - 3: summed_row_gram(rows)}}


def _decompose(chosen, W, ranks, refine: int, seed: int, device, weights=None, kernels=()):
    """Decompose one group's W with a T-Net method (the weighted W, then the weights undone,
    with ``weights``, a :class:`~tcompress.passes.whiten.Whitening`): (its shared tensor,
    errors, relative error). ``kernels``: the Conv2d kernels W was stacked from, which give
    a method that takes Grams its f_out Gram (:func:`_kernel_grams`)."""
    with torch.no_grad():
        work = W if device is None else W.to(device)
        # Half-precision weights are decomposed in float32 and stored back in their own dtype.
        if work.dtype not in (torch.float32, torch.float64):
            work = work.float()
        if weights is None:
            grams = _kernel_grams(chosen, kernels, work) if kernels else {}
            result = chosen.decompose(work, ranks, n_iter=refine, seed=seed, **grams)
        else:
            result = chosen.decompose(weights.apply(work), ranks, n_iter=refine, seed=seed)
            weights.undo(result.tensor)
            # The sweeps' errors were of the weighted W; what counts now is W's own.
            error = float(torch.linalg.norm(result.tensor.full() - work) / torch.linalg.norm(work))
            result = type(result)(result.tensor, [error], error)
    tensor = result.tensor.to(W.dtype)
    return tensor, list(result.errors), result.relative_error


def _per_layer(chosen, src: Source, Ws, specs, ratio, group_stats):
    """Ranks of every layer for ``ratio``, on its kernel's spectrum, or on what each costs the
    outputs when ``group_stats`` (each group's statistics) are given: a choice holding each
    group's largest, and the layers' ranks by module name."""
    from tcompress.methods.selection import GroupChoice, RankChoice
    from tcompress.passes.layerwise import allocate_layer_ranks, largest, layer_costs

    if chosen.kind != methods.LAYERWISE or ratio is None:
        raise RankError(
            f"{param('per_layer')} gives every layer of a layer-wise method (layerwise-tucker, "
            f"tai) ranks of its own for a {param('ratio')}; got {chosen.name} with "
            + ("a ratio" if ratio is not None else "no ratio")
        )
    given = next((spec for spec in specs if not spec.full), None)
    if given is not None:
        _refuse_layer_ranks(chosen, given, ratio)
    other = src.params_before - sum(W.numel() for W in Ws)
    kernels = {
        name: src.state[key]
        for group in src.family.groups
        for name, key in zip(group.names, group.weight_keys())
    }
    costs = None
    if group_stats is not None and chosen.per_layer_bound:
        costs = {}
        for group, stats in zip(src.family.groups, group_stats):
            measured = layer_costs(chosen.name, [kernels[n] for n in group.names], stats)
            costs.update(zip(group.names, measured))
    layer_ranks = allocate_layer_ranks(chosen.name, kernels, other, ratio, costs)
    target, criterion = f"ratio {ratio:g}", "bound" if costs is None else "data"
    choices = []
    for group in src.family.groups:
        shape = tuple(kernels[group.names[0]].shape)
        params = sum(chosen.params(shape, layer_ranks[n]) for n in group.names)
        top = largest([layer_ranks[n] for n in group.names])
        choices.append(RankChoice(chosen.name, top, params, math.nan, math.nan, target, criterion))
    total = sum(c.tensor_params for c in choices)
    choice = GroupChoice(chosen.name, tuple(choices), total, math.nan, math.nan, target, criterion)
    return choice, layer_ranks


def _per_layer_note(chosen, layer_ranks: Mapping, group_stats=None) -> str:
    """The spread of the ranks given layer by layer, and what chose them, in words."""
    names = chosen.rank_names.split("[")[0].strip(",").split(",")
    columns = list(zip(*layer_ranks.values()))
    spread = ", ".join(
        f"{name} {min(c)}-{max(c)} (mean {sum(c) / len(c):.1f})" for name, c in zip(names, columns)
    )
    if group_stats is None:
        on = "each kernel's spectrum relative to its norm"
    else:
        on = f"what each costs the normalised outputs on {group_stats[0].images} images"
    return (
        f"ranks per layer, on {on}, over {len(layer_ranks)} layers: {spread}; the ranks shown "
        "are the largest"
    )


def _layerwise(
    chosen, src: Source, ranks, refine: int, seed: int, device, progress, layer_ranks=None
):
    """Decompose every kernel with a layer-wise method (``ranks``: each group's, or every
    layer's ``layer_ranks``): the LayerwiseNet, each group's chains seen as one tensor, each
    group's per-layer errors and each group's relative error over its kernels."""
    from tcompress.passes.layerwise import LayerwiseConfig, decompose_layers

    dense = src.module(device)
    groups = src.family.groups
    per_group = ranks[0] if len(groups) == 1 else {g.group_name: r for g, r in zip(groups, ranks)}
    config = LayerwiseConfig(
        chosen.name, per_group, n_iter=refine, seed=seed, layer_ranks=layer_ranks
    )
    net, squared = decompose_layers(dense, config, progress, family=src.family)
    net.meta.pop("notes", None)
    errors, relative, start = [], [], 0
    for group in groups:
        norms = [float(src.state[k].double().square().sum()) for k in group.weight_keys()]
        done = squared[start : start + len(norms)]
        start += len(norms)
        errors.append([math.sqrt(e / max(n, 1e-300)) for e, n in zip(done, norms)])
        relative.append(math.sqrt(sum(done) / max(sum(norms), 1e-300)))
    chains = [StackedChains(net, group.group_name) for group in groups]
    return net, chains, errors, relative


def _errors(chosen, fitted, W, errors):
    """The errors after data-aware refinement: ||W - W_hat|| / ||W||, and per layer for a
    layer-wise method (a T-Net's sweep errors stay those of its decomposition)."""
    with torch.no_grad():
        rebuilt = fitted.full()
        error = float(torch.linalg.norm(rebuilt - W) / torch.linalg.norm(W))
        if chosen.kind == methods.TNET:
            return errors, error
        g = len(W.shape) - 4
        flat_w = W.reshape(-1, *W.shape[g:]).double()
        flat_r = rebuilt.reshape(-1, *W.shape[g:]).double()
        per = (flat_r - flat_w).square().flatten(1).sum(1) / flat_w.square().flatten(1).sum(1)
        return [math.sqrt(float(e)) for e in per], error


def _statistics(src: Source, device, data, samples, seed) -> list:
    """Each group's block convolutions' input moments and BatchNorm scales on ``samples``
    images of ``data`` (a spec's training split, or an iterable of batches), in one pass."""
    from torch.utils.data import DataLoader

    from tcompress.data import make_dataset

    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise TcompressError(f"refine_samples is {samples!r}; expected a whole number >= 1")
    dense = src.module(device)
    if isinstance(data, str | os.PathLike):
        data = DataLoader(make_dataset(data, "train", n=samples, seed=seed), batch_size=16)
    names = [g.names for g in src.family.groups]
    return group_statistics(dense, names, data, max_images=samples, seed=seed)


def _same_images(a, b) -> bool:
    """Whether two data arguments name the same images (one spec, or one iterable)."""
    if isinstance(a, str | os.PathLike) and isinstance(b, str | os.PathLike):
        return os.fspath(a) == os.fspath(b)
    return a is b


def _whitened(names, modes, weights) -> list[str]:
    """The summary's ``whitened``: the weighted modes' names ("group: mode" for several)."""
    if len(names) == 1:
        return [modes[0][0][k] for k in weights[0].modes]
    return [f"{n}: {m[0][k]}" for n, m, w in zip(names, modes, weights) for k in w.modes]


def _fit_groups(names, tensors, Ws, stats, iterations) -> dict:
    """Data-aware refinement of every group's tensor (:func:`_fit_to_data`); one group's report,
    or for several the figures of all of them together (output errors over the summed output
    energy, weight error over the summed ||W||^2, iterations and seconds added up) with each
    group's report under ``groups``."""
    reports = [_fit_to_data(t, W, st, iterations) for t, W, st in zip(tensors, Ws, stats)]
    if len(reports) == 1:
        return reports[0]
    with torch.no_grad():
        outputs = [float(output_error(W, W, st)[1]) for W, st in zip(Ws, stats)]
    norms = [float(W.double().square().sum()) for W in Ws]
    return {
        "error_before": _joint([r["error_before"] for r in reports], outputs),
        "error_after": _joint([r["error_after"] for r in reports], outputs),
        "iterations": sum(r["iterations"] for r in reports),
        "images": reports[0]["images"],
        "seconds": sum(r["seconds"] for r in reports),
        "weight_error_before": _joint([r["weight_error_before"] for r in reports], norms),
        "groups": [{"name": n, **r} for n, r in zip(names, reports)],
    }


def _fit_to_data(tensor, W, stats, iterations) -> dict:
    """Data-aware refinement of ``tensor`` in place (a T-Net's factorized tensor, or the chains
    of a layer-wise network as :class:`~tcompress.layerwise.StackedChains`); its report, with W's
    error before."""
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise TcompressError(f"refine_iterations is {iterations!r}; expected a whole number >= 1")
    with torch.no_grad():
        weight_error = float(torch.linalg.norm(tensor.full() - W) / torch.linalg.norm(W))
    # Fit in float32 even for half-precision weights; the factors go back to their own dtype.
    dtype = next(tensor.parameters()).dtype
    work = tensor.float() if dtype not in (torch.float32, torch.float64) else tensor
    report = refine_to_data(work, W, stats, iterations=iterations)
    work.to(dtype)
    return dict(report.to_dict(), weight_error_before=weight_error)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
