"""Dense network -> compressed network, one pipeline for every method of :mod:`tcompress.methods`:

read the dense source (:mod:`tcompress.source`) -> choose the ranks (for a ratio or an energy
target) or check the ranks given -> decompose (a T-Net method: W, the stacked kernels, becomes one
shared tensor; a layer-wise method: every kernel its own chain) -> build the module -> optional
data-aware refinement -> summary."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from tcompress import methods
from tcompress.checkpoint import check_finite
from tcompress.decompose._threads import one_thread
from tcompress.errors import RankError, TcompressError, param
from tcompress.layerwise import LAYER_MODE_NAMES, LayerwiseNet, StackedChains
from tcompress.methods.base import RankSpec
from tcompress.passes.data_aware import DATA_AWARE_ITERATIONS, block_statistics, refine_to_data
from tcompress.source import Source, read_source
from tcompress.tnet import TNet, tensorize

log = logging.getLogger(__name__)


@dataclass
class ConversionSummary:
    """What a conversion did, in whole-network figures; saved with the T-Net, shown by the CLI."""

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
    whitened: list[str] | None = None  # modes weighted by the data before decomposing (whiten=)

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
    refine_samples: int = 256,
    refine_iterations: int = DATA_AWARE_ITERATIONS,
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
        the others (``None``, ``"full"``, ``"-"`` or not named) are chosen.
    arch
        ``"MODULE:FACTORY"``: a function (importable, called without arguments) that builds the
        user's dense network; the checkpoint must load into it strictly. Recorded in the T-Net
        file; :func:`tcompress.load` needs it again.
    family
        With ``arch``: the pattern over module names that selects the stacked convolutions, its
        ``{named}`` parts becoming the leading modes (:func:`tcompress.family.pattern_family`),
        e.g. ``"layer{stage}.{block}.conv{conv}"``.
    refine
        Tucker: HOOI sweeps after the HOSVD; CP: ALS sweeps (0: the default budget,
        :data:`~tcompress.decompose.cp.CP_ITERATIONS`).
    seed
        Seed of the random start columns of CP-ALS.
    ratio, energy
        Choose the ranks for a whole-network compression ratio (met within 3% above) or for a
        fraction of ``||W||^2`` kept, greedily on the HOSVD / TT-SVD error bound
        (:mod:`tcompress.methods.selection`); CP and TR take the largest uniform rank within a
        ratio's budget.
    refine_data
        Images (a data spec such as ``"synthetic"`` or an image folder, or an iterable of image
        batches) on which to fit the factors so that every block convolution's output stays close
        to the original's (:mod:`tcompress.passes.data_aware`), after the decomposition and any
        ``refine`` sweeps; labels are not used.
    data
        With ``ratio`` or ``energy``: images (as ``refine_data``) on which the ranks are chosen
        by what each mode's truncation costs every block convolution's normalised output
        (:func:`~tcompress.passes.data_aware.mode_costs`), in every mode; without, ranks are
        allocated on the HOSVD / TT-SVD error bound of W. Tucker only; the other methods keep
        their own choice (the summary's notes say so).
    whiten
        T-Net methods: images (as ``refine_data``) whose block-convolution inputs weight the
        kernel modes before the decomposition (:mod:`tcompress.passes.whiten`), so that each
        truncated channel or kernel direction is chosen by what it costs the outputs rather
        than by its share of ``||W||``; only the modes whose rank is below their size are
        weighted. Combines with ``refine_data`` (the fit then starts there).
    refine_samples, refine_iterations
        Images read from ``data``, ``whiten`` or ``refine_data`` and L-BFGS iterations of the
        fit.
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
    spec = RankSpec.parse(ranks)
    refine = chosen.check_refine(refine)
    if ratio is not None and energy is not None:
        raise RankError(f"give {param('ratio')} or {param('energy')}, not both")
    progress("Reading the checkpoint")
    src = read_source(model, arch=arch, family=family, check_kernels=False)
    with torch.no_grad():
        W = src.stacked()
        # A sum is finite when every entry is (barring overflow, which the exact search clears).
        # One thread: a reduction's barrier waits on busy cores (tcompress.decompose._threads).
        with one_thread():
            finite = bool(torch.isfinite(W.sum()))
        if not finite:
            check_finite({k: src.state[k] for k in src.family.weight_keys()}, src.where)
    device = torch.device(device) if device is not None else None
    mode_names, mode_sizes, parts = _modes(chosen, src, W)
    choice, stats, notes, search = None, None, [], None
    stats_of = data  # the images ``stats`` were gathered on, once they are
    if data is not None and ratio is None and energy is None:
        raise RankError(
            f"{param('data')} chooses the ranks for a target; give {param('ratio')} or "
            f"{param('energy')} with it (or fit the factors with {param('refine_data')})"
        )
    if ratio is not None or energy is not None:
        costs = None
        if data is not None:
            progress("Gathering the block convolutions' inputs")
            stats = _statistics(src, W.device, data, refine_samples, seed)
            with torch.no_grad():
                costs = chosen.data_costs(W, stats) if chosen.kind == methods.TNET else None
        progress("Choosing the ranks")
        choice = _choose(chosen, W, spec, src, ratio, energy, costs)
        if data is not None and ratio is not None and choice.criterion == "data":
            choice, search = _search(
                chosen, W, spec, src, ratio, choice, data, costs, seed, progress
            )
        spec = RankSpec.parse(choice.ranks)
        if data is not None and choice.criterion not in ("data", "search"):
            notes.append(
                f"the data did not choose the ranks: {chosen.name} has no data-aware "
                "allocation (Tucker has)"
            )
    resolved = chosen.resolve(spec, mode_sizes, mode_names)
    weights = None
    if whiten is not None:
        if chosen.kind != methods.TNET:
            raise TcompressError(
                f"{param('whiten')} weights the modes of the shared tensor; {chosen.name} "
                "decomposes each layer on its own (use a T-Net method: tucker, mps, cp, tr)"
            )
        from tcompress.passes.whiten import whitening

        if stats is None or not _same_images(whiten, stats_of):  # the same images are gathered once
            progress("Gathering the block convolutions' inputs")
            stats = _statistics(src, W.device, whiten, refine_samples, seed)
            stats_of = whiten
        # Per-mode ranks say which modes are truncated; a train, a ring or CP truncates them all.
        weights = whitening(stats, mode_sizes, resolved.ranks if chosen.per_mode else None)
    progress(f"Decomposing {parts} with {chosen.name}")
    if chosen.kind == methods.TNET:
        model, fitted, errors, error = _tnet(
            chosen, src, W, resolved.ranks, refine, seed, device, weights
        )
        model.set_forward(forward)
    else:
        model, fitted, errors, error = _layerwise(
            chosen, src, resolved.ranks, refine, seed, device, progress
        )
    data_aware = None
    if refine_data is not None:
        progress("Fitting the factors to the data")
        W_here = W if device is None else W.to(device)
        if stats is None or not _same_images(refine_data, stats_of):  # gathered once
            stats = _statistics(src, W_here.device, refine_data, refine_samples, seed)
        data_aware = _fit_to_data(fitted, W_here, stats, refine_iterations)
        errors, error = _errors(chosen, fitted, W_here, errors)
    params_after = sum(p.numel() for p in model.parameters())
    kernel_params = W.numel()
    summary = ConversionSummary(
        method=chosen.name,
        ranks=list(resolved.ranks),
        mode_names=list(mode_names),
        mode_sizes=list(mode_sizes),
        tensor_params_before=kernel_params,
        tensor_params_after=params_after - (src.params_before - kernel_params),
        params_before=src.params_before,
        params_after=params_after,
        compression_ratio=src.params_before / params_after,
        relative_error=error,
        refine=refine,
        errors=[float(e) for e in errors],
        notes=[*resolved.notes, *notes],
        source=src.source,
        source_sha256=src.sha256,
        dtype=str(W.dtype).removeprefix("torch."),
        target=choice.target if choice else None,
        predicted_error=_finite_or_none(choice.predicted_error) if choice else None,
        architecture=src.architecture["name"],
        left_out=list(src.family.left_out),
        data_aware=data_aware,
        layers=None if chosen.kind == methods.TNET else len(src.family.members),
        rank_search=None if search is None else search.to_dict(),
        whitened=None if weights is None else [mode_names[k] for k in weights.modes],
    )
    summary.seconds = time.perf_counter() - start
    model.meta = {"architecture": src.architecture, "summary": summary.to_dict()}
    log.info(
        "converted with %s, ranks %s: %.2fx", chosen.name, summary.ranks, summary.compression_ratio
    )
    return model


def _modes(chosen, src: Source, W: torch.Tensor):
    """The modes the method's ranks refer to (names, sizes) and what it decomposes, in words: W
    for a T-Net method, one block kernel (f_out, f_in, h, w) for a layer-wise one."""
    if chosen.kind == methods.TNET:
        return src.family.all_mode_names, tuple(W.shape), "W"
    g = len(src.family.grid)
    f_in, f_out, h, w = W.shape[g:]
    return LAYER_MODE_NAMES, (f_out, f_in, h, w), f"{len(src.family.members)} block convolutions"


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
    _, shape, _ = _modes(chosen, src, W)
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


def _tnet(chosen, src: Source, W, ranks, refine: int, seed: int, device, weights=None):
    """Decompose W with a T-Net method (the weighted W, then the weights undone, with
    ``weights``, a :class:`~tcompress.passes.whiten.Whitening`): (TNet, its shared tensor,
    errors, relative error)."""
    with torch.no_grad():
        work = W if device is None else W.to(device)
        # Half-precision weights are decomposed in float32 and stored back in their own dtype.
        if work.dtype not in (torch.float32, torch.float64):
            work = work.float()
        if weights is None:
            result = chosen.decompose(work, ranks, n_iter=refine, seed=seed)
        else:
            result = chosen.decompose(weights.apply(work), ranks, n_iter=refine, seed=seed)
            weights.undo(result.tensor)
            # The sweeps' errors were of the weighted W; what counts now is W's own.
            error = float(torch.linalg.norm(result.tensor.full() - work) / torch.linalg.norm(work))
            result = type(result)(result.tensor, [error], error)
    tensor = result.tensor.to(W.dtype)
    net = src.without_kernels(tensorize, device)
    return TNet(net, tensor), tensor, result.errors, result.relative_error


def _layerwise(chosen, src: Source, ranks, refine: int, seed: int, device, progress):
    """Decompose every kernel with a layer-wise method: (LayerwiseNet, its chains seen as one
    tensor, per-layer errors, relative error over all kernels)."""
    from tcompress.passes.layerwise import LayerwiseConfig, decompose_layers

    dense = src.module(device)
    config = LayerwiseConfig(chosen.name, ranks, n_iter=refine, seed=seed)
    net, squared = decompose_layers(dense, config, progress, family=src.family)
    net.meta.pop("notes", None)
    keys = src.family.weight_keys()
    norms = [float(src.state[k].double().square().sum()) for k in keys]
    errors = [math.sqrt(e / max(n, 1e-300)) for e, n in zip(squared, norms)]
    error = math.sqrt(sum(squared) / max(sum(norms), 1e-300))
    return net, StackedChains(net), errors, error


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


def _statistics(src: Source, device, data, samples, seed):
    """The block convolutions' input moments and BatchNorm scales on ``samples`` images of
    ``data`` (a spec's training split, or an iterable of batches)."""
    from torch.utils.data import DataLoader

    from tcompress.data import make_dataset

    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise TcompressError(f"refine_samples is {samples!r}; expected a whole number >= 1")
    dense = src.module(device)
    if isinstance(data, str | os.PathLike):
        data = DataLoader(make_dataset(data, "train", n=samples, seed=seed), batch_size=16)
    return block_statistics(dense, src.family.names, data, max_images=samples, seed=seed)


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


def _same_images(a, b) -> bool:
    """Whether two data arguments name the same images (one spec, or one iterable)."""
    if isinstance(a, str | os.PathLike) and isinstance(b, str | os.PathLike):
        return os.fspath(a) == os.fspath(b)
    return a is b


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
