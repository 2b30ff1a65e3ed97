"""Dense hourglass -> T-Net: stack the block kernels, factorize W, build the fine-tunable module."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from tcompress import __version__
from tcompress.checkpoint import check_finite, read_checkpoint
from tcompress.decompose import tensor_train, tucker
from tcompress.decompose.cp import CP_ITERATIONS, cp_als
from tcompress.errors import CheckpointError, RankError, TcompressError
from tcompress.layerwise import LAYER_MODE_NAMES, LayerwiseNet
from tcompress.layouts import check_state_matches, infer_hourglass_config, skeleton, state_spec
from tcompress.models import HourglassConfig, StackedHourglass
from tcompress.ranks import (
    LAYERWISE_METHODS,
    check_method,
    factorized_params,
    fixed_ranks,
    resolve_ranks,
)
from tcompress.stacking import MODE_NAMES, block_key_set, block_keys, stack_hourglass
from tcompress.tnet import CPTensor, MPSTensor, TNet, TuckerTensor, tnet_skeleton

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
    layers: int | None = None  # layer-wise methods: how many block convolutions were decomposed

    def to_dict(self) -> dict:
        return asdict(self)


def convert(
    model: str | os.PathLike | nn.Module | Mapping[str, torch.Tensor],
    method: str = "tucker",
    ranks=None,
    *,
    refine: int = 0,
    forward: str = "reconstructed",
    ratio: float | None = None,
    energy: float | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: Callable[[str], None] | None = None,
) -> TNet | LayerwiseNet:
    """Convert a dense stacked hourglass into a T-Net, or into a layer-wise compressed network.

    Parameters
    ----------
    model
        A :class:`~tcompress.models.StackedHourglass`, its state_dict, or a checkpoint path (bare or
        wrapped state_dict; the architecture is read off the keys).
    method
        ``"tucker"`` (HOSVD, optionally refined by HOOI), ``"mps"`` (TT-SVD) or ``"cp"`` (ALS):
        a T-Net. ``"layerwise-tucker"``, ``"layerwise-cp"`` or ``"tai"``: every block
        convolution decomposed on its own (:mod:`tcompress.passes.layerwise`), a
        :class:`~tcompress.layerwise.LayerwiseNet`; ``ranks`` are then per-layer ranks
        (:func:`~tcompress.ranks.resolve_layer_ranks`), ``ratio`` picks the per-layer rank whose
        whole-network ratio is nearest, ``refine`` counts HOOI (Tucker) or ALS (CP) sweeps per
        layer, and ``forward`` does not apply.
    ranks
        Tucker: 8 ranks (``None``/``"full"`` entries keep a mode), a dict of named modes, or a
        string in the CLI's forms; MPS: 7 bond ranks or one for all. ``None`` keeps full ranks.
        With ``ratio`` or ``energy``: the ranks given are fixed and the others (``None``,
        ``"full"``, ``"-"`` or not named) are chosen.
    refine
        Tucker: HOOI sweeps after the HOSVD; CP: ALS sweeps (0: the default budget,
        :data:`~tcompress.decompose.cp.CP_ITERATIONS`).
    seed
        Seed of the random start columns of CP-ALS.
    ratio, energy
        Choose the ranks for a whole-network compression ratio (met within 3% above) or for a
        fraction of ``||W||^2`` kept, greedily on the HOSVD / TT-SVD error bound
        (:mod:`tcompress.rank_selection`).
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
    if isinstance(method, str) and method.lower() in LAYERWISE_METHODS:
        return _convert_layerwise(
            model, method.lower(), ranks, refine, ratio, energy, seed, device, progress, start
        )
    progress("Reading the checkpoint")
    state, config, source, sha256, where = _dense_state(model)
    with torch.no_grad():
        W = stack_hourglass(state, config)
        # A sum is finite when every entry is (barring overflow, which the exact search clears).
        if not bool(torch.isfinite(W.sum())):
            check_finite({k: state[k] for _, k in block_keys(config)}, where)
    choice = None
    if ratio is not None or energy is not None:
        progress("Choosing the ranks")
        choice = _choose(W, state, config, method, ranks, ratio, energy)
        ranks = choice.ranks
    resolved = resolve_ranks(ranks, method, _shape(state, config), MODE_NAMES)
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
    net = _net_without_blocks(state, config, device)
    params_before = state_spec(config).n_params
    tnet = TNet(net, tensor, forward=forward)
    params_after = sum(p.numel() for p in tnet.parameters())
    summary = ConversionSummary(
        method=resolved.method,
        ranks=list(resolved.ranks),
        mode_names=list(MODE_NAMES),
        mode_sizes=list(W.shape),
        tensor_params_before=W.numel(),
        tensor_params_after=factorized_params(resolved.method, W.shape, resolved.ranks),
        params_before=params_before,
        params_after=params_after,
        compression_ratio=params_before / params_after,
        relative_error=float(result.relative_error),
        refine=refine,
        errors=[float(e) for e in errors],
        notes=list(resolved.notes),
        source=source,
        source_sha256=sha256,
        dtype=str(W.dtype).removeprefix("torch."),
        target=choice.target if choice else None,
        predicted_error=_finite_or_none(choice.predicted_error) if choice else None,
    )
    summary.seconds = time.perf_counter() - start
    tnet.meta = {"architecture": _architecture(config), "summary": summary.to_dict()}
    log.info(
        "converted with %s, ranks %s: %.2fx",
        summary.method,
        summary.ranks,
        summary.compression_ratio,
    )
    return tnet


def _convert_layerwise(
    model, method, ranks, refine, ratio, energy, seed, device, progress, start
) -> LayerwiseNet:
    from tcompress.passes.layerwise import (
        LayerwiseConfig,
        block_kernel_shape,
        choose_layer_ranks,
        decompose_layers,
    )

    if energy is not None:
        raise RankError(
            f"an energy target applies to T-Nets (tucker, mps); give {method} --ranks or --ratio"
        )
    progress("Reading the checkpoint")
    state, config, source, sha256, where = _dense_state(model)
    check_finite({k: state[k] for _, k in block_keys(config)}, where)
    dense = skeleton(config)
    dense.load_state_dict(dict(state), strict=True, assign=True)
    if device is not None:
        dense = dense.to(device)
    kernel_shape = block_kernel_shape(dense)
    n_layers = len(block_keys(config))
    params_before = state_spec(config).n_params
    kernel_params = n_layers * math.prod(kernel_shape)
    if ratio is not None:
        if not (ranks is None or (isinstance(ranks, str) and ranks.strip().lower() == "full")):
            raise RankError(
                f"ranks {ranks!r} and ratio {ratio!r} both given; a layer-wise method takes "
                "--ranks or --ratio (the same rank for every layer), not both"
            )
        progress("Choosing the ranks")
        ranks = choose_layer_ranks(
            method, kernel_shape, n_layers, params_before - kernel_params, ratio
        )
    layer_config = LayerwiseConfig(method, ranks, n_iter=refine, seed=seed)
    progress(f"Decomposing {n_layers} block convolutions with {method}")
    net, squared = decompose_layers(dense, layer_config, progress)
    norms = [float(conv.weight.detach().double().square().sum()) for _, conv in dense.block_convs()]
    params_after = sum(p.numel() for p in net.parameters())
    summary = ConversionSummary(
        method=method,
        ranks=list(net.ranks),
        mode_names=list(LAYER_MODE_NAMES),
        mode_sizes=list(kernel_shape),
        tensor_params_before=kernel_params,
        tensor_params_after=params_after - (params_before - kernel_params),
        params_before=params_before,
        params_after=params_after,
        compression_ratio=params_before / params_after,
        relative_error=math.sqrt(sum(squared) / max(sum(norms), 1e-300)),
        refine=refine,
        errors=[math.sqrt(e / max(n, 1e-300)) for e, n in zip(squared, norms)],
        notes=net.meta.pop("notes", []),
        source=source,
        source_sha256=sha256,
        dtype=str(next(iter(dense.block_convs()))[1].weight.dtype).removeprefix("torch."),
        target=f"ratio {ratio:g}" if ratio is not None else None,
        layers=n_layers,
    )
    summary.seconds = time.perf_counter() - start
    net.meta = {"architecture": _architecture(config), "summary": summary.to_dict()}
    log.info("converted with %s, ranks %s: %.2fx", method, summary.ranks, summary.compression_ratio)
    return net


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _choose(W, state, config: HourglassConfig, method: str, ranks, ratio, energy):
    from tcompress.rank_selection import bond_spectra, choose_ranks, mode_spectra

    method = check_method(method)
    shape = _shape(state, config)
    fixed = fixed_ranks(ranks, method, shape, MODE_NAMES)
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
        other_params=state_spec(config).n_params - W.numel(),
    )


def _dense_state(model) -> tuple[dict, HourglassConfig, str | None, str | None, str]:
    """(validated state_dict, configuration, source path, source sha256, name for messages)."""
    if isinstance(model, StackedHourglass):
        state, config, source, sha256 = model.state_dict(), model.config, None, None
        where = "model"
    elif isinstance(model, TNet | LayerwiseNet):
        raise CheckpointError(
            f"the model is already compressed ({type(model).__name__}); convert takes a dense "
            "hourglass"
        )
    elif isinstance(model, nn.Module):
        raise CheckpointError(
            f"model is a {type(model).__name__}; expected a tcompress StackedHourglass, "
            "its state_dict or a checkpoint path"
        )
    elif isinstance(model, Mapping):
        state, where, source, sha256 = dict(model), "state_dict", None, None
        config = infer_hourglass_config(state, where)
    elif isinstance(model, str | os.PathLike):
        ckpt = read_checkpoint(model)
        if ckpt.is_tnet:
            raise CheckpointError(
                f"checkpoint '{ckpt.path}' is already compressed by tcompress (method "
                f"{ckpt.payload.get('method')!r}); convert takes the uncompressed hourglass it "
                "came from"
            )
        state, where, source, sha256 = ckpt.state_dict, ckpt.path, ckpt.path, ckpt.sha256
        config = infer_hourglass_config(state, where)
    else:
        raise CheckpointError(
            f"model is a {type(model).__name__}; expected a StackedHourglass, a state_dict "
            "or a checkpoint path"
        )
    check_state_matches(state_spec(config), state, where)
    # The block kernels are checked once stacked (see convert): one pass over W.
    check_finite(state, where, skip=block_key_set(config))
    return state, config, source, sha256, where


def _shape(state: Mapping[str, torch.Tensor], config: HourglassConfig) -> tuple[int, ...]:
    first = state[block_keys(config)[0][1]]
    f_out, f_in, h, w = first.shape
    return (config.n_stacks, config.depth, 3, config.block_depth, f_in, f_out, h, w)


def _net_without_blocks(state, config: HourglassConfig, device) -> StackedHourglass:
    """The hourglass with every block conv replaced by a :class:`TensorConv2d`, the rest of its
    weights copied from ``state`` (so fine-tuning never touches the source model)."""
    net = tnet_skeleton(config)
    blocks = block_key_set(config)
    rest = {k: v.detach().clone() for k, v in state.items() if k not in blocks}
    if device is not None:
        rest = {k: v.to(device) for k, v in rest.items()}
    net.load_state_dict(rest, strict=True, assign=True)
    return net


def _architecture(config: HourglassConfig) -> dict:
    return {"name": "StackedHourglass", "config": config.to_dict(), "tcompress": __version__}
