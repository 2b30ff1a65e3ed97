"""What a checkpoint or T-Net file holds, as a plain dict (for ``tcompress info``)."""

from __future__ import annotations

import math
import os

from tcompress import methods
from tcompress.checkpoint import read_checkpoint
from tcompress.layouts import CUSTOM
from tcompress.serialize import from_payload
from tcompress.source import read_source


def describe(
    path: str | os.PathLike, *, arch: str | None = None, family: str | None = None
) -> dict:
    """Architecture, parameter counts and, for a T-Net or a layer-wise network, its method, ranks
    and conversion figures; for a dense checkpoint, the tensors its block convolutions form.

    A T-Net or layer-wise network converted with ``arch``/``family`` is rebuilt (and its
    parameters counted) only when ``arch`` names its factory; otherwise its recorded figures are
    shown. A dense checkpoint of another layout needs both ``arch`` and ``family``, as
    :func:`tcompress.convert` does: it is described as the conversion would stack it (one
    tensor per group of same-shape kernels, ``groups``, and the kernels left dense).
    """
    ckpt = read_checkpoint(path)
    if ckpt.is_tnet:
        payload = ckpt.payload
        summary = dict(payload.get("summary") or {})
        custom = (payload.get("architecture") or {}).get("name") == CUSTOM
        if arch is not None or not custom:
            tnet = from_payload(payload, ckpt.path, arch=arch)
            summary["params_after"] = sum(p.numel() for p in tnet.parameters())
        return {
            "file": ckpt.path,
            "kind": methods.kind(payload["method"]),
            "sha256": ckpt.sha256,
            "tcompress_version": payload.get("tcompress_version"),
            "architecture": payload["architecture"],
            "method": payload["method"],
            "ranks": payload["ranks"],
            "mode_names": payload["mode_names"],
            "mode_sizes": payload["mode_sizes"],
            "forward": payload.get("forward"),
            "params": summary.get("params_after"),
            "summary": summary,
        }
    src = read_source(ckpt, arch=arch, family=family)
    groups = []
    for group in src.family.groups:
        f_out, f_in, h, w = src.state[group.weight_keys()[0]].shape
        sizes = [*group.grid, f_in, f_out, h, w]
        groups.append(
            {
                "name": group.group_name,
                "members": len(group.members),
                "mode_names": list(group.all_mode_names),
                "mode_sizes": sizes,
                "tensor_params": math.prod(sizes),
            }
        )
    architecture = dict(src.architecture)
    architecture.pop("family", None)
    architecture.pop("tcompress", None)
    one = groups[0] if len(groups) == 1 else None
    return {
        "file": ckpt.path,
        "kind": "dense",
        "sha256": ckpt.sha256,
        "architecture": architecture,
        "params": src.params_before,
        "block_convs": len(src.family.names),
        "mode_names": one["mode_names"] if one else [],
        "mode_sizes": one["mode_sizes"] if one else [],
        "tensor_params": sum(g["tensor_params"] for g in groups),
        "groups": groups,
        "left_out": list(src.family.left_out),
    }
