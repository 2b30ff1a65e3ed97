"""Saving and loading T-Nets: one self-describing file that loads with ``weights_only=True``.

The file is a dict of plain values and tensors::

    {"format": "tcompress.tnet", "format_version": 1, "tcompress_version": "...",
     "architecture": {"name": "StackedHourglass", "config": {...}, "family": {...}},
     "method": "tucker", "ranks": [...], "mode_names": [...], "mode_sizes": [...],
     "forward": "reconstructed", "summary": {... conversion figures, source path and sha256 ...},
     "state_dict": {...}}

``architecture.name`` is one of the known layouts (``StackedHourglass``, ``BearpawHourglass``,
``PoseNet``; rebuilt from ``config``) or ``custom``: a network built by the user's factory, recorded
as ``architecture.factory = "MODULE:FACTORY"`` with the stacked modules in ``architecture.family``.
Loading a custom T-Net needs ``arch=`` (CLI: ``--arch``) naming that factory again: a file never
makes tcompress import code by itself.

A layer-wise compressed network (:class:`~tcompress.layerwise.LayerwiseNet`) is saved in the same
format, with the same architecture record: its method (``layerwise-tucker``, ``layerwise-cp``,
``tai``) and per-layer ranks, with the kernel's modes (f_out, f_in, h, w) as ``mode_names`` /
``mode_sizes``.

A network whose family has several groups (one tensor per group of same-shape kernels,
:class:`~tcompress.family.KernelGroups`) is written as format version 2: ``ranks``,
``mode_names`` and ``mode_sizes`` are empty lists and ``groups`` lists, per group, its ``name``,
``ranks``, ``mode_names`` and ``mode_sizes``; its tensors are ``tensors.0.*``, ``tensors.1.*``,
... in the family's order (``architecture.family`` records the groups). A version-1 reader
refuses such a file by its version; files of one tensor stay version 1, as they were.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from tcompress import __version__, methods
from tcompress.checkpoint import check_finite, read_checkpoint, save_torch
from tcompress.errors import CheckpointError, MethodError, TcompressError, param
from tcompress.family import family_from_dict, layout_family
from tcompress.layerwise import LAYER_MODE_NAMES, LayerwiseNet, layerwise_skeleton
from tcompress.layouts import (
    ARCHITECTURES,
    CUSTOM,
    StateSpec,
    build,
    build_factory,
    check_state_matches,
)
from tcompress.methods.base import RankSpec
from tcompress.source import read_dense
from tcompress.stacking import MODE_NAMES
from tcompress.tnet import TNet, tensorize

FORMAT = "tcompress.tnet"
FORMAT_VERSION = 1
#: The version of a file whose family has several groups (one tensor each).
GROUPS_FORMAT_VERSION = 2


def save(tnet: TNet | LayerwiseNet, path: str | os.PathLike, *, force: bool = True) -> None:
    """Write a T-Net or a layer-wise compressed network to ``path`` atomically (a temporary file
    renamed into place, see :func:`~tcompress.checkpoint.atomic_write`); an existing file is
    replaced, or with ``force=False`` refused, even one created while this one was written."""
    if not isinstance(tnet, TNet | LayerwiseNet):
        raise CheckpointError(
            f"tnet is a {type(tnet).__name__}; expected a TNet or a LayerwiseNet to save"
        )
    save_torch(to_payload(tnet), path, force=force)


def save_model(model: nn.Module, path: str | os.PathLike, *, force: bool = True) -> None:
    """Write a compressed network with :func:`save`, a dense network as its plain state dict
    (atomically; ``force`` as for :func:`save`)."""
    if isinstance(model, TNet | LayerwiseNet):
        save(model, path, force=force)
    else:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_torch(state, path, force=force)


def to_payload(tnet: TNet | LayerwiseNet) -> dict:
    layerwise = isinstance(tnet, LayerwiseNet)
    architecture = dict(tnet.meta.get("architecture") or {})
    if not architecture:
        if tnet.config is None:
            raise CheckpointError(
                f"the {type(tnet).__name__} records no architecture and its network "
                f"({type(tnet.net).__name__}) has no config; convert with arch='MODULE:FACTORY' "
                "and family='PATTERN' so that the file can rebuild the network"
            )
        architecture = {"name": type(tnet.net).__name__, "config": tnet.config.to_dict()}
        if layerwise:
            architecture["family"] = tnet.family.to_dict()
    if architecture.get("name") == CUSTOM and not architecture.get("factory"):
        raise CheckpointError(
            "the T-Net's architecture records no factory; convert with arch='MODULE:FACTORY' "
            "so that the file can rebuild the network"
        )
    family = architecture.get("family")
    groups = _groups(tnet, family)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if len(groups) == 1 else GROUPS_FORMAT_VERSION,
        "tcompress_version": __version__,
        "architecture": architecture,
        "method": tnet.method,
        "ranks": groups[0]["ranks"] if len(groups) == 1 else [],
        "mode_names": groups[0]["mode_names"] if len(groups) == 1 else [],
        "mode_sizes": groups[0]["mode_sizes"] if len(groups) == 1 else [],
        "forward": tnet.forward_form,
        "summary": dict(tnet.meta.get("summary", {})),
        "state_dict": {k: v.detach().cpu() for k, v in tnet.state_dict().items()},
    }
    if len(groups) > 1:
        payload["groups"] = groups
    if layerwise and tnet.per_layer:
        payload["layer_ranks"] = {n: list(r) for n, r in tnet.layer_ranks.items()}
    return payload


def _groups(tnet: TNet | LayerwiseNet, family: dict | None) -> list[dict]:
    """Name, ranks, mode names and sizes of every tensor (a layer-wise network: of every group's
    layers), in the family's order."""
    if isinstance(tnet, LayerwiseNet):
        return [
            {
                "name": name,
                "ranks": list(ranks),
                "mode_names": list(LAYER_MODE_NAMES),
                "mode_sizes": list(tnet.group_kernel_shape(name)),
            }
            for name, ranks in tnet.group_ranks.items()
        ]
    if len(tnet.group_names) == 1:
        names = family_from_dict(family).all_mode_names if family else MODE_NAMES
        return [
            {
                "name": tnet.group_names[0],
                "ranks": list(tnet.ranks),
                "mode_names": list(names),
                "mode_sizes": list(tnet.tensor.shape),
            }
        ]
    recorded = family_from_dict(family) if family else tnet.family
    if recorded is None:
        raise CheckpointError(
            f"the T-Net of {len(tnet.group_names)} tensors records no kernel family; convert "
            "it with tcompress.convert so that the file can name each tensor's modes"
        )
    modes = {g.group_name: g.all_mode_names for g in recorded.groups}
    return [
        {
            "name": name,
            "ranks": list(group.tensor.ranks),
            "mode_names": list(modes[name]),
            "mode_sizes": list(group.tensor.shape),
        }
        for name, group in tnet.groups.items()
    ]


def load(
    path: str | os.PathLike,
    *,
    forward: str | None = None,
    device: str | torch.device = "cpu",
    arch: str | None = None,
) -> nn.Module:
    """Load a T-Net saved by :func:`save` (or a dense checkpoint of a known layout).

    Parameters
    ----------
    forward
        ``"reconstructed"`` or ``"factorized"``; default: the form the file was saved with.
    device
        Where the parameters go.
    arch
        ``"MODULE:FACTORY"`` for a T-Net converted with ``arch``/``family``: the factory that
        builds its dense network (the file records which one it was converted with; it is not
        imported unless named here).

    Returns
    -------
    TNet for a T-Net file, :class:`~tcompress.layerwise.LayerwiseNet` for a layer-wise one (which
    has one forward form, ``forward`` does not apply); the dense network
    (:class:`~tcompress.models.StackedHourglass`, :class:`~tcompress.models.BearpawHourglass` or
    :class:`~tcompress.models.PoseNet`) for a dense checkpoint.
    """
    ckpt = read_checkpoint(path)
    if not ckpt.is_tnet:
        return read_dense(ckpt).to(device)
    return from_payload(ckpt.payload, ckpt.path, forward=forward, arch=arch).to(device)


def from_payload(
    payload: dict, path: str, *, forward: str | None = None, arch: str | None = None
) -> TNet | LayerwiseNet:
    version = payload.get("format_version")
    if version not in (FORMAT_VERSION, GROUPS_FORMAT_VERSION):
        raise CheckpointError(
            f"T-Net file '{path}' has format version {version!r}; this tcompress "
            f"({__version__}) reads versions {FORMAT_VERSION} and {GROUPS_FORMAT_VERSION}"
        )
    try:
        architecture = payload["architecture"]
        method = payload["method"]
        if version == FORMAT_VERSION:
            recorded = [(None, payload["ranks"], payload["mode_sizes"])]
        else:
            recorded = [(g["name"], g["ranks"], g["mode_sizes"]) for g in payload["groups"]]
        tensors = [
            (name, [int(r) for r in ranks], [int(s) for s in sizes])
            for name, ranks, sizes in recorded
        ]
        state = payload["state_dict"]
        net, family = _dense_skeleton(architecture, path, arch)
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"T-Net file '{path}' lacks its description ({e})") from None
    try:
        chosen = methods.get(method)
    except MethodError:
        raise CheckpointError(
            f"T-Net file '{path}' has method {method!r}; expected one of "
            f"{', '.join(methods.names())}"
        ) from None
    names = [g.group_name for g in family.groups]
    if len(tensors) != len(names) or (len(names) > 1 and [t[0] for t in tensors] != names):
        raise CheckpointError(
            f"T-Net file '{path}' records tensors {[t[0] for t in tensors]}; expected one per "
            f"group of its family ({', '.join(names)})"
        )
    for _, ranks, shape in tensors:
        _check_ranks(chosen, ranks, shape, path)
    if chosen.kind == methods.LAYERWISE:
        ranks = tensors[0][1] if len(names) == 1 else {n: t[1] for n, t in zip(names, tensors)}
        layer_ranks = _layer_ranks(payload, family, tensors, chosen, path)
        tnet = layerwise_skeleton(net, family, chosen.name, ranks, layer_ranks)
    else:
        with torch.device("meta"):
            empty = [chosen.empty(shape, ranks) for _, ranks, shape in tensors]
        forward = forward or payload.get("forward", "reconstructed")
        shared = empty[0] if len(names) == 1 else dict(zip(names, empty))
        tnet = TNet(tensorize(net, family), shared, forward=forward, family=family)
    check_state_matches(StateSpec.of(tnet), state, path)
    check_finite(state, path)
    tnet.load_state_dict(state, strict=True, assign=True)
    tnet.meta = {"architecture": payload["architecture"], "summary": payload.get("summary", {})}
    return tnet


def _dense_skeleton(architecture: dict, path: str, arch: str | None):
    """The dense network a T-Net file describes (meta device for the known layouts) and its
    kernel family."""
    name = architecture["name"]
    if name == CUSTOM:
        recorded = architecture["factory"]
        if arch is None:
            raise CheckpointError(
                f"T-Net file '{path}' was converted from the network of {recorded!r}; pass "
                f"{param('arch', recorded)} to load it: tcompress does not import code a file "
                "names"
            )
        return build_factory(arch), family_from_dict(architecture["family"])
    if name not in ARCHITECTURES:
        raise CheckpointError(
            f"T-Net file '{path}' has architecture {name!r}; expected one of "
            f"{', '.join([*ARCHITECTURES, CUSTOM])}"
        )
    net = build(name, architecture["config"])
    return net, layout_family(net)


def _layer_ranks(payload: dict, family, tensors, chosen, path: str) -> dict | None:
    """A layer-wise file's ranks of every layer, where its layers have their own (checked as the
    group's ranks are, on the group's kernel shape)."""
    recorded = payload.get("layer_ranks")
    if recorded is None:
        return None
    members = {name: g for g, group in enumerate(family.groups) for name in group.names}
    if not isinstance(recorded, dict) or set(recorded) != set(members):
        raise CheckpointError(
            f"T-Net file '{path}' records layer ranks for {len(recorded)} layers; expected one "
            f"entry for each of the family's {len(members)} block convolutions"
        )
    out = {}
    for name, ranks in recorded.items():
        ranks = [int(r) for r in ranks]
        _check_ranks(chosen, ranks, tensors[members[name]][2], path)
        out[name] = ranks
    return out


def _check_ranks(chosen, ranks: list[int], shape: list[int], path: str) -> None:
    """The recorded ranks must be ones the method resolves to, on the recorded modes."""
    try:
        names = [str(k) for k in range(len(shape))]
        fits = chosen.resolve(RankSpec.parse(ranks), shape, names).ranks == tuple(ranks)
    except TcompressError:
        fits = False
    if not fits:
        raise CheckpointError(
            f"T-Net file '{path}' has ranks {ranks} that do not fit method {chosen.name!r} on "
            f"modes of sizes {tuple(shape)}"
        )
