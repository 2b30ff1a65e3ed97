"""What a checkpoint or T-Net file holds, as a plain dict (for ``tcompress info``)."""

from __future__ import annotations

import math
import os

from tcompress import methods
from tcompress.checkpoint import read_checkpoint
from tcompress.layouts import CUSTOM
from tcompress.serialize import from_payload
from tcompress.source import read_source


def describe(path: str | os.PathLike, *, arch: str | None = None) -> dict:
    """Architecture, parameter counts and, for a T-Net or a layer-wise network, its method, ranks
    and conversion figures.

    A T-Net or layer-wise network converted with ``arch``/``family`` is rebuilt (and its
    parameters counted) only when ``arch`` names its factory; otherwise its recorded figures are
    shown.
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
    src = read_source(ckpt)
    family = src.family
    f_out, f_in, h, w = src.state[family.weight_keys()[0]].shape
    sizes = [*family.grid, f_in, f_out, h, w]
    return {
        "file": ckpt.path,
        "kind": "dense",
        "sha256": ckpt.sha256,
        "architecture": {"name": src.architecture["name"], "config": src.architecture["config"]},
        "params": src.params_before,
        "block_convs": len(family.members),
        "mode_names": list(family.all_mode_names),
        "mode_sizes": sizes,
        "tensor_params": math.prod(sizes),
    }
