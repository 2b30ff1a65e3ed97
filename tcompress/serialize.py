"""Saving and loading T-Nets: one self-describing file that loads with ``weights_only=True``.

The file is a dict of plain values and tensors::

    {"format": "tcompress.tnet", "format_version": 1, "tcompress_version": "...",
     "architecture": {"name": "StackedHourglass", "config": {...}},
     "method": "tucker", "ranks": [...], "mode_names": [...], "mode_sizes": [...],
     "forward": "reconstructed", "summary": {... conversion figures, source path and sha256 ...},
     "state_dict": {...}}

A layer-wise compressed network (:class:`~tcompress.layerwise.LayerwiseNet`) is saved in the same
format: its method (``layerwise-tucker``, ``layerwise-cp``, ``tai``) and per-layer ranks, with
the block kernel's modes (f_out, f_in, h, w) as ``mode_names`` / ``mode_sizes``.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from tcompress import __version__
from tcompress.checkpoint import check_finite, read_checkpoint, save_torch
from tcompress.errors import CheckpointError, TcompressError
from tcompress.layerwise import LAYER_MODE_NAMES, LayerwiseNet, layerwise_skeleton
from tcompress.layouts import StateSpec, check_state_matches, dense_from_state
from tcompress.models import HourglassConfig
from tcompress.ranks import LAYERWISE_METHODS, resolve_layer_ranks
from tcompress.stacking import MODE_NAMES
from tcompress.tnet import CPTensor, MPSTensor, TNet, TuckerTensor, tnet_skeleton

FORMAT = "tcompress.tnet"
FORMAT_VERSION = 1


def save(tnet: TNet | LayerwiseNet, path: str | os.PathLike) -> None:
    """Write a T-Net or a layer-wise compressed network to ``path`` atomically (a temporary file
    renamed into place)."""
    if not isinstance(tnet, TNet | LayerwiseNet):
        raise TypeError(f"save expects a TNet or a LayerwiseNet, got {type(tnet).__name__}")
    save_torch(to_payload(tnet), path)


def save_model(model: nn.Module, path: str | os.PathLike) -> None:
    """Write a compressed network with :func:`save`, a dense hourglass as its plain state dict
    (atomically)."""
    if isinstance(model, TNet | LayerwiseNet):
        save(model, path)
    else:
        save_torch({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)


def to_payload(tnet: TNet | LayerwiseNet) -> dict:
    layerwise = isinstance(tnet, LayerwiseNet)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tcompress_version": __version__,
        "architecture": {"name": "StackedHourglass", "config": tnet.config.to_dict()},
        "method": tnet.method,
        "ranks": list(tnet.ranks),
        "mode_names": list(LAYER_MODE_NAMES if layerwise else MODE_NAMES),
        "mode_sizes": list(tnet.summary["mode_sizes"] if layerwise else tnet.tensor.shape),
        "forward": tnet.forward_form,
        "summary": dict(tnet.meta.get("summary", {})),
        "state_dict": {k: v.detach().cpu() for k, v in tnet.state_dict().items()},
    }


def load(
    path: str | os.PathLike, *, forward: str | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Load a T-Net saved by :func:`save` (or a dense hourglass checkpoint).

    Parameters
    ----------
    forward
        ``"reconstructed"`` or ``"factorized"``; default: the form the file was saved with.
    device
        Where the parameters go.

    Returns
    -------
    TNet for a T-Net file, :class:`~tcompress.layerwise.LayerwiseNet` for a layer-wise one (which
    has one forward form, ``forward`` does not apply); :class:`~tcompress.models.StackedHourglass`
    for a dense checkpoint.
    """
    ckpt = read_checkpoint(path)
    if not ckpt.is_tnet:
        model = dense_from_state(ckpt.state_dict, ckpt.path)
        check_finite(ckpt.state_dict, ckpt.path)
        return model.to(device)
    return from_payload(ckpt.payload, ckpt.path, forward=forward).to(device)


def from_payload(payload: dict, path: str, *, forward: str | None = None) -> TNet | LayerwiseNet:
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"T-Net file '{path}' has format version {version!r}; this tcompress "
            f"({__version__}) reads version {FORMAT_VERSION}"
        )
    try:
        config = HourglassConfig(**payload["architecture"]["config"])
        method, ranks = payload["method"], [int(r) for r in payload["ranks"]]
        shape = [int(s) for s in payload["mode_sizes"]]
        state = payload["state_dict"]
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"T-Net file '{path}' lacks its description ({e})") from None
    if method in LAYERWISE_METHODS:
        _check_layer_ranks(method, ranks, shape, path)
        tnet = layerwise_skeleton(config, method, ranks)
    else:
        tensor = _empty_tensor(method, shape, ranks, path)
        forward = forward or payload.get("forward", "reconstructed")
        tnet = TNet(tnet_skeleton(config), tensor, forward=forward)
    check_state_matches(StateSpec.of(tnet), state, path)
    check_finite(state, path)
    tnet.load_state_dict(state, strict=True, assign=True)
    tnet.meta = {"architecture": payload["architecture"], "summary": payload.get("summary", {})}
    return tnet


def _check_layer_ranks(method: str, ranks: list[int], shape: list[int], path: str) -> None:
    try:
        fits = resolve_layer_ranks(ranks, method, shape).ranks == tuple(ranks)
    except TcompressError:
        fits = False
    if not fits or len(shape) != 4:
        raise CheckpointError(
            f"T-Net file '{path}' has ranks {ranks} that do not fit method {method!r} on kernels "
            f"of shape {tuple(shape)}"
        )


def _empty_tensor(method: str, shape: list[int], ranks: list[int], path: str):
    with torch.device("meta"):
        if method == "tucker":
            return TuckerTensor(
                torch.empty(ranks), [torch.empty(d, r) for d, r in zip(shape, ranks)]
            )
        if method == "mps":
            bonds = [1, *ranks, 1]
            return MPSTensor([torch.empty(bonds[k], d, bonds[k + 1]) for k, d in enumerate(shape)])
        if method == "cp" and len(ranks) == 1:
            return CPTensor(torch.empty(ranks[0]), [torch.empty(d, ranks[0]) for d in shape])
    raise CheckpointError(
        f"T-Net file '{path}' has method {method!r}; expected tucker, mps, cp, "
        + ", ".join(LAYERWISE_METHODS)
    )
