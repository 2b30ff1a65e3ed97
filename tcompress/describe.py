"""What a checkpoint or T-Net file holds, as a plain dict (for ``tcompress info``)."""

from __future__ import annotations

import math
import os

from tcompress.checkpoint import check_finite, read_checkpoint
from tcompress.layouts import dense_from_state
from tcompress.ranks import LAYERWISE_METHODS
from tcompress.serialize import from_payload
from tcompress.stacking import MODE_NAMES, block_keys


def describe(path: str | os.PathLike) -> dict:
    """Architecture, parameter counts and, for a T-Net, its method, ranks and conversion figures."""
    ckpt = read_checkpoint(path)
    if ckpt.is_tnet:
        tnet = from_payload(ckpt.payload, ckpt.path)
        payload = ckpt.payload
        summary = dict(payload.get("summary") or {})
        summary["params_after"] = sum(p.numel() for p in tnet.parameters())
        return {
            "file": ckpt.path,
            "kind": "layerwise" if payload["method"] in LAYERWISE_METHODS else "tnet",
            "sha256": ckpt.sha256,
            "tcompress_version": payload.get("tcompress_version"),
            "architecture": payload["architecture"],
            "method": payload["method"],
            "ranks": payload["ranks"],
            "mode_names": payload["mode_names"],
            "mode_sizes": payload["mode_sizes"],
            "forward": payload.get("forward"),
            "params": summary["params_after"],
            "summary": summary,
        }
    model = dense_from_state(ckpt.state_dict, ckpt.path)
    check_finite(ckpt.state_dict, ckpt.path)
    config = model.config
    first = ckpt.state_dict[block_keys(config)[0][1]]
    f_out, f_in, h, w = first.shape
    sizes = [config.n_stacks, config.depth, 3, config.block_depth, f_in, f_out, h, w]
    return {
        "file": ckpt.path,
        "kind": "dense",
        "sha256": ckpt.sha256,
        "architecture": {"name": "StackedHourglass", "config": config.to_dict()},
        "params": sum(p.numel() for p in model.parameters()),
        "block_convs": len(block_keys(config)),
        "mode_names": list(MODE_NAMES),
        "mode_sizes": sizes,
        "tensor_params": math.prod(sizes),
    }
