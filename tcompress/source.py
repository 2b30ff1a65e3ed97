"""The one reader of dense networks: a module, a state_dict or a checkpoint file becomes a
validated :class:`Source` (its state, its kernel family, the dense network it loads into).

:func:`tcompress.convert`, :func:`tcompress.load`, ``tcompress info`` and ``tcompress analyze``
all read dense networks here: the layout is detected from the keys (or built by the user's
factory with a kernel family pattern), the state is loaded strictly and checked finite.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from tcompress import __version__
from tcompress.checkpoint import Checkpoint, check_finite, read_checkpoint
from tcompress.errors import CheckpointError, TcompressError, param
from tcompress.family import KernelFamily, layout_family, pattern_family
from tcompress.layouts import (
    CUSTOM,
    KNOWN_MODELS,
    StateSpec,
    build,
    build_factory,
    check_state_matches,
    detect_architecture,
)
from tcompress.models.io import WrapsNetwork


@dataclass
class Source:
    """A dense network read for conversion: its validated state_dict, the kernel family, the
    dense module it loads into (on the meta device for the known layouts) and what a compressed
    file records about its architecture."""

    state: dict[str, torch.Tensor]
    family: KernelFamily
    dense: nn.Module
    architecture: dict
    params_before: int
    source: str | None = None
    sha256: str | None = None
    where: str = "model"

    def stacked(self) -> torch.Tensor:
        """W: the family's kernels stacked, (grid modes..., f_in, f_out, h, w)."""
        return self.family.stack(self.state)

    def module(self, device: str | torch.device | None = None) -> nn.Module:
        """A copy of the dense network holding the state (tensors shared, not copied)."""
        net = copy.deepcopy(self.dense)
        state = self.state if device is None else {k: v.to(device) for k, v in self.state.items()}
        net.load_state_dict(state, strict=True, assign=True)
        return net

    def without_kernels(self, replace, device: str | torch.device | None = None) -> nn.Module:
        """A copy of the dense network after ``replace(net, family)`` swapped every family member
        for modules of its own, the rest of the weights copied from the state (so fine-tuning never
        touches the source model)."""
        net = replace(copy.deepcopy(self.dense), self.family)
        kernels = set(self.family.weight_keys())
        rest = {k: v.detach().clone() for k, v in self.state.items() if k not in kernels}
        if device is not None:
            rest = {k: v.to(device) for k, v in rest.items()}
        net.load_state_dict(rest, strict=True, assign=True)
        return net.to(device) if device is not None else net


def read_source(
    model,
    *,
    arch: str | None = None,
    family: str | None = None,
    check_kernels: bool = True,
) -> Source:
    """Read ``model`` (module, state_dict, checkpoint path or :class:`Checkpoint`): detect its
    layout (or build it with ``arch`` and select the kernels with ``family``), check the state
    matches it key for key and shape for shape, and check its weights are finite (the kernels too
    unless ``check_kernels`` is False: :func:`tcompress.convert` checks them once stacked)."""
    if (arch is None) != (family is None):
        given, missing = ("arch", "family") if family is None else ("family", "arch")
        raise TcompressError(
            f"{param(given)} is given without {param(missing)}; a network of another layout "
            f"needs both (e.g. {param('arch', 'mymodels:resnet')}, "
            f"{param('family', 'layer{stage}.{block}.conv{conv}')})"
        )
    if isinstance(model, WrapsNetwork):
        raise CheckpointError(
            f"the model is already compressed ({type(model).__name__}); a dense network is expected"
        )
    source = sha256 = None
    if isinstance(model, nn.Module):
        state, where = model.state_dict(), "model"
    elif isinstance(model, Checkpoint | str | os.PathLike):
        ckpt = model if isinstance(model, Checkpoint) else read_checkpoint(model)
        if ckpt.is_tnet:
            raise CheckpointError(
                f"checkpoint '{ckpt.path}' is already compressed by tcompress (method "
                f"{ckpt.payload.get('method')!r}); convert takes the uncompressed network it "
                "came from"
            )
        state, where, source, sha256 = ckpt.state_dict, ckpt.path, ckpt.path, ckpt.sha256
    elif isinstance(model, Mapping):
        state, where = dict(model), "state_dict"
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
    skip = {k for k, v in state.items() if v.is_meta}  # a meta tensor has no values to check
    check_finite(state, where, skip=skip if check_kernels else skip | set(kernels.weight_keys()))
    architecture = {**architecture, "family": kernels.to_dict(), "tcompress": __version__}
    return Source(state, kernels, dense, architecture, spec.n_params, source, sha256, where)


def read_dense(model, **options) -> nn.Module:
    """The dense network ``model`` describes, its state loaded strictly (:func:`read_source`)."""
    return read_source(model, **options).module()
