"""Dense network -> T-Net: stack the kernel family, factorize W, build the fine-tunable module; or
-> layer-wise compressed network: decompose every family member on its own."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from tcompress import __version__
from tcompress.checkpoint import check_finite, read_checkpoint
from tcompress.decompose import tensor_train, tucker
from tcompress.decompose.cp import CP_ITERATIONS, cp_als
from tcompress.errors import CheckpointError, RankError, TcompressError
from tcompress.family import KernelFamily, layout_family, pattern_family
from tcompress.layerwise import LAYER_MODE_NAMES, LayerwiseNet, StackedChains
from tcompress.layouts import (
    CUSTOM,
    KNOWN_MODELS,
    StateSpec,
    build,
    build_factory,
    check_state_matches,
    detect_architecture,
)
from tcompress.ranks import (
    LAYERWISE_METHODS,
    check_method,
    factorized_params,
    fixed_ranks,
    resolve_ranks,
)
from tcompress.tnet import CPTensor, MPSTensor, TNet, TuckerTensor, tensorize
from tcompress.train.data_aware import DATA_AWARE_ITERATIONS, block_statistics, refine_to_data

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
        ``"tucker"`` (HOSVD, optionally refined by HOOI), ``"mps"`` (TT-SVD) or ``"cp"`` (ALS):
        a T-Net. ``"layerwise-tucker"``, ``"layerwise-cp"`` or ``"tai"``: every convolution of
        the kernel family decomposed on its own (:mod:`tcompress.passes.layerwise`), a
        :class:`~tcompress.layerwise.LayerwiseNet`; ``ranks`` are then per-layer ranks
        (:func:`~tcompress.ranks.resolve_layer_ranks`), ``ratio`` picks the per-layer rank whose
        whole-network ratio is nearest, ``refine`` counts HOOI (Tucker) or ALS (CP) sweeps per
        layer, ``refine_data`` fits every chain, and ``forward`` does not apply.
    ranks
        Tucker: one rank per mode (``None``/``"full"`` entries keep a mode), a dict of named
        modes, or a string in the CLI's forms; MPS: the bond ranks or one for all; CP: one rank.
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
        (:mod:`tcompress.rank_selection`).
    refine_data
        Images (a data spec such as ``"synthetic"`` or an image folder, or an iterable of image
        batches) on which to fit the factors so that every block convolution's output stays close
        to the original's (:mod:`tcompress.train.data_aware`), after the decomposition and any
        ``refine`` sweeps; labels are not used.
    refine_samples, refine_iterations
        Images read from ``refine_data`` and L-BFGS iterations of that fit.
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
    progress("Reading the checkpoint")
    src = read_source(model, arch=arch, family=family)
    if isinstance(method, str) and method.lower() in LAYERWISE_METHODS:
        return _convert_layerwise(
            src,
            method.lower(),
            ranks,
            refine=refine,
            ratio=ratio,
            energy=energy,
            seed=seed,
            refine_data=(refine_data, refine_samples, refine_iterations),
            device=device,
            progress=progress,
            start=start,
        )
    state, kernels = src.state, src.family
    with torch.no_grad():
        W = kernels.stack(state)
        # A sum is finite when every entry is (barring overflow, which the exact search clears).
        if not bool(torch.isfinite(W.sum())):
            check_finite({k: state[k] for k in kernels.weight_keys()}, src.where)
    mode_names = kernels.all_mode_names
    choice = None
    if ratio is not None or energy is not None:
        progress("Choosing the ranks")
        choice = _choose(W, mode_names, method, ranks, ratio, energy, src.params_before)
        ranks = choice.ranks
    resolved = resolve_ranks(ranks, method, tuple(W.shape), mode_names)
    if not isinstance(refine, int) or isinstance(refine, bool) or refine < 0:
        raise TcompressError(f"refine is {refine!r}; expected a whole number of HOOI sweeps >= 0")
    if refine and resolved.method == "mps":
        raise TcompressError(
            f"refine={refine} applies to Tucker (HOOI) and CP (ALS sweeps); method is {method!r}"
        )
    device = torch.device(device) if device is not None else None

    progress(f"Decomposing W with {resolved.method}")
    with torch.no_grad():
        if device is not None:
            W = W.to(device)
        # Half-precision weights are decomposed in float32 and stored back in their own dtype.
        work = W if W.dtype in (torch.float32, torch.float64) else W.float()
        if resolved.method == "tucker":
            result = tucker(work, resolved.ranks, n_iter=refine)
            tensor = TuckerTensor(result.core.to(W.dtype), [u.to(W.dtype) for u in result.factors])
            errors = list(result.errors)
        elif resolved.method == "cp":
            result = cp_als(work, resolved.ranks[0], n_iter=refine or CP_ITERATIONS, seed=seed)
            tensor = CPTensor(result.weights.to(W.dtype), [u.to(W.dtype) for u in result.factors])
            errors = list(result.errors)
        else:
            result = tensor_train(work, resolved.ranks)
            tensor = MPSTensor([g.to(W.dtype) for g in result.cores])
            errors = [result.relative_error]
    data_aware = None
    if refine_data is not None:
        progress("Fitting the factors to the data")
        data_aware = _fit_to_data(
            tensor, W, src, refine_data, refine_samples, refine_iterations, seed
        )
        with torch.no_grad():
            final_error = float(torch.linalg.norm(tensor.full() - W) / torch.linalg.norm(W))
    net = _net_without_kernels(src, device)
    tnet = TNet(net, tensor, forward=forward)
    params_after = sum(p.numel() for p in tnet.parameters())
    summary = ConversionSummary(
        method=resolved.method,
        ranks=list(resolved.ranks),
        mode_names=list(mode_names),
        mode_sizes=list(W.shape),
        tensor_params_before=W.numel(),
        tensor_params_after=factorized_params(resolved.method, W.shape, resolved.ranks),
        params_before=src.params_before,
        params_after=params_after,
        compression_ratio=src.params_before / params_after,
        relative_error=final_error if data_aware else float(result.relative_error),
        refine=refine,
        errors=[float(e) for e in errors],
        notes=list(resolved.notes),
        source=src.source,
        source_sha256=src.sha256,
        dtype=str(W.dtype).removeprefix("torch."),
        target=choice.target if choice else None,
        predicted_error=_finite_or_none(choice.predicted_error) if choice else None,
        architecture=src.architecture["name"],
        left_out=list(kernels.left_out),
        data_aware=data_aware,
    )
    summary.seconds = time.perf_counter() - start
    tnet.meta = {"architecture": src.architecture, "summary": summary.to_dict()}
    log.info(
        "converted with %s, ranks %s: %.2fx",
        summary.method,
        summary.ranks,
        summary.compression_ratio,
    )
    return tnet


@dataclass
class Source:
    """A dense network read for conversion: its validated state_dict, the kernel family, the
    dense module it loads into (on the meta device for the known layouts) and what the T-Net
    file records about its architecture."""

    state: dict[str, torch.Tensor]
    family: KernelFamily
    dense: nn.Module
    architecture: dict
    params_before: int
    source: str | None = None
    sha256: str | None = None
    where: str = "model"


def read_source(model, *, arch: str | None = None, family: str | None = None) -> Source:
    """Read ``model`` (module, state_dict or checkpoint path) for :func:`convert`: detect its
    layout (or build it with ``arch`` and select the kernels with ``family``), load it strictly
    and check its weights are finite."""
    if (arch is None) != (family is None):
        given, missing = ("arch", "family") if family is None else ("family", "arch")
        raise TcompressError(
            f"{given} is given without {missing}; a network of another layout needs both "
            "(e.g. arch='mymodels:resnet', family='layer{stage}.{block}.conv{conv}')"
        )
    if isinstance(model, TNet | LayerwiseNet):
        raise CheckpointError(
            f"the model is already compressed ({type(model).__name__}); convert takes a dense "
            "network"
        )
    source = sha256 = None
    if isinstance(model, nn.Module):
        state, where = model.state_dict(), "model"
    elif isinstance(model, Mapping):
        state, where = dict(model), "state_dict"
    elif isinstance(model, str | os.PathLike):
        ckpt = read_checkpoint(model)
        if ckpt.is_tnet:
            raise CheckpointError(
                f"checkpoint '{ckpt.path}' is already compressed by tcompress (method "
                f"{ckpt.payload.get('method')!r}); convert takes the uncompressed network it "
                "came from"
            )
        state, where, source, sha256 = ckpt.state_dict, ckpt.path, ckpt.path, ckpt.sha256
    else:
        raise CheckpointError(
            f"model is a {type(model).__name__}; expected a network, a state_dict or a "
            "checkpoint path"
        )
    if arch is not None:
        dense = build_factory(arch)
        kernels = pattern_family(dense, family)
        architecture = {"name": CUSTOM, "factory": arch, "pattern": family}
    elif isinstance(model, nn.Module) and not isinstance(model, KNOWN_MODELS):
        raise CheckpointError(
            f"model is a {type(model).__name__}; expected a StackedHourglass, BearpawHourglass "
            "or PoseNet, or arch='MODULE:FACTORY' with family='PATTERN' for another network"
        )
    else:
        layout, config = detect_architecture(state, where)
        dense = build(layout.name, config)
        kernels = layout_family(dense)
        architecture = {"name": layout.name, "config": config.to_dict()}
    spec = StateSpec.of(dense)
    check_state_matches(spec, state, where)
    # The kernels are checked once stacked (see convert): one pass over W.
    check_finite(state, where, skip=set(kernels.weight_keys()))
    architecture = {**architecture, "family": kernels.to_dict(), "tcompress": __version__}
    return Source(state, kernels, dense, architecture, spec.n_params, source, sha256, where)


def _convert_layerwise(
    src: Source,
    method: str,
    ranks,
    *,
    refine: int,
    ratio: float | None,
    energy: float | None,
    seed: int,
    refine_data: tuple,
    device,
    progress: Callable[[str], None],
    start: float,
) -> LayerwiseNet:
    """:func:`convert` with a layer-wise method: every family member decomposed on its own."""
    from tcompress.passes.layerwise import LayerwiseConfig, choose_layer_ranks, decompose_layers

    if energy is not None:
        raise RankError(
            f"an energy target applies to T-Nets (tucker, mps); give {method} --ranks or --ratio"
        )
    data, samples, iterations = refine_data
    keys = src.family.weight_keys()
    originals = [src.state[k] for k in keys]
    check_finite(dict(zip(keys, originals)), src.where)
    kernel_shape = tuple(originals[0].shape)
    n_layers = len(keys)
    kernel_params = n_layers * math.prod(kernel_shape)
    if ratio is not None:
        if not (ranks is None or (isinstance(ranks, str) and ranks.strip().lower() == "full")):
            raise RankError(
                f"ranks {ranks!r} and ratio {ratio!r} both given; a layer-wise method takes "
                "--ranks or --ratio (the same rank for every layer), not both"
            )
        progress("Choosing the ranks")
        ranks = choose_layer_ranks(
            method, kernel_shape, n_layers, src.params_before - kernel_params, ratio
        )
    layer_config = LayerwiseConfig(method, ranks, n_iter=refine, seed=seed)
    dense = copy.deepcopy(src.dense)
    dense.load_state_dict(src.state, strict=True, assign=True)
    if device is not None:
        dense = dense.to(device)
    progress(f"Decomposing {n_layers} block convolutions with {method}")
    net, squared = decompose_layers(dense, layer_config, progress, family=src.family)
    data_aware = None
    if data is not None:
        progress("Fitting the chains to the data")
        W = src.family.stack(src.state).to(originals[0].device if device is None else device)
        data_aware = _fit_to_data(StackedChains(net), W, src, data, samples, iterations, seed)
        with torch.no_grad():
            squared = [
                float((k.double() - o.to(k.device).double()).square().sum())
                for k, o in zip(net.kernels(), originals)
            ]
    norms = [float(o.double().square().sum()) for o in originals]
    params_after = sum(p.numel() for p in net.parameters())
    summary = ConversionSummary(
        method=method,
        ranks=list(net.ranks),
        mode_names=list(LAYER_MODE_NAMES),
        mode_sizes=list(kernel_shape),
        tensor_params_before=kernel_params,
        tensor_params_after=params_after - (src.params_before - kernel_params),
        params_before=src.params_before,
        params_after=params_after,
        compression_ratio=src.params_before / params_after,
        relative_error=math.sqrt(sum(squared) / max(sum(norms), 1e-300)),
        refine=refine,
        errors=[math.sqrt(e / max(n, 1e-300)) for e, n in zip(squared, norms)],
        notes=net.meta.pop("notes", []),
        source=src.source,
        source_sha256=src.sha256,
        dtype=str(originals[0].dtype).removeprefix("torch."),
        target=f"ratio {ratio:g}" if ratio is not None else None,
        architecture=src.architecture["name"],
        left_out=list(src.family.left_out),
        data_aware=data_aware,
        layers=n_layers,
    )
    summary.seconds = time.perf_counter() - start
    net.meta = {"architecture": src.architecture, "summary": summary.to_dict()}
    log.info("converted with %s, ranks %s: %.2fx", method, summary.ranks, summary.compression_ratio)
    return net


def _fit_to_data(tensor, W, src: Source, data, samples, iterations, seed) -> dict:
    """Data-aware refinement of ``tensor`` in place (a T-Net's factorized tensor, or the chains
    of a layer-wise network as :class:`~tcompress.layerwise.StackedChains`); its report, with W's
    error before."""
    import copy

    from torch.utils.data import DataLoader

    from tcompress.data import make_dataset

    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise TcompressError(f"refine_samples is {samples!r}; expected a whole number >= 1")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise TcompressError(f"refine_iterations is {iterations!r}; expected a whole number >= 1")
    with torch.no_grad():
        weight_error = float(torch.linalg.norm(tensor.full() - W) / torch.linalg.norm(W))
    dense = copy.deepcopy(src.dense)
    dense.load_state_dict({k: v.to(W.device) for k, v in src.state.items()}, assign=True)
    if isinstance(data, str | os.PathLike):
        data = DataLoader(make_dataset(data, "train", n=samples, seed=seed), batch_size=16)
    stats = block_statistics(dense, src.family.names, data, max_images=samples, seed=seed)
    # Fit in float32 even for half-precision weights; the factors go back to their own dtype.
    dtype = next(tensor.parameters()).dtype
    work = tensor.float() if dtype not in (torch.float32, torch.float64) else tensor
    report = refine_to_data(work, W, stats, iterations=iterations)
    work.to(dtype)
    return dict(report.to_dict(), weight_error_before=weight_error)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _choose(W, mode_names, method: str, ranks, ratio, energy, params_before: int):
    from tcompress.rank_selection import bond_spectra, choose_ranks, mode_spectra

    method = check_method(method)
    shape = tuple(W.shape)
    fixed = fixed_ranks(ranks, method, shape, mode_names)
    with torch.no_grad():
        if method == "cp":
            spectra = []
        else:
            spectra = mode_spectra(W) if method == "tucker" else bond_spectra(W)
    return choose_ranks(
        method,
        shape,
        spectra,
        ratio=ratio,
        energy=energy,
        fixed=fixed,
        other_params=params_before - W.numel(),
    )


def _net_without_kernels(src: Source, device) -> nn.Module:
    """The dense network with every family member replaced by a :class:`TensorConv2d`, the rest
    of its weights copied from the source (so fine-tuning never touches the source model)."""
    net = tensorize(copy.deepcopy(src.dense), src.family)
    kernels = set(src.family.weight_keys())
    rest = {k: v.detach().clone() for k, v in src.state.items() if k not in kernels}
    if device is not None:
        rest = {k: v.to(device) for k, v in rest.items()}
    net.load_state_dict(rest, strict=True, assign=True)
    return net.to(device) if device is not None else net
