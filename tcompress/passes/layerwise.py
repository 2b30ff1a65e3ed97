"""Dense network -> layer-wise compressed network: each kernel-family convolution decomposed alone.

Every kernel K (f_out, f_in, h, w) is decomposed by its layer-wise method
(:mod:`tcompress.methods`: ``layerwise-tucker``, ``layerwise-cp``, ``tai``) under
``torch.no_grad()`` in the kernel's dtype (float32 for half-precision kernels, stored back in their
own dtype) and replaced by the method's chain of convolutions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tcompress.errors import RankError
from tcompress.family import FamilyError, KernelFamily, layout_family
from tcompress.layerwise import LayerwiseNet, layer_method
from tcompress.methods.base import RankSpec


@dataclass
class LayerwiseConfig:
    """How :func:`decompose_layers` decomposes every block convolution.

    Attributes
    ----------
    method
        ``"layerwise-tucker"``, ``"layerwise-cp"`` or ``"tai"``.
    ranks
        Per-layer ranks in any form :class:`~tcompress.methods.base.RankSpec` parses and the
        method accepts (``None`` or ``"full"``: exact).
    n_iter
        ``layerwise-tucker``: HOOI sweeps after the HOSVD (default 0); ``layerwise-cp``: ALS
        sweeps (0: :data:`~tcompress.decompose.cp.CP_ITERATIONS`); ``tai``: must be 0 (closed form).
    seed
        Seed of the random start columns of CP-ALS.
    """

    method: str
    ranks: object = None
    n_iter: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        method = layer_method(self.method)
        self.method = method.name
        method.check_refine(self.n_iter)


def decompose_layers(
    model: nn.Module,
    config: LayerwiseConfig,
    progress: Callable[[str], None] | None = None,
    *,
    family: KernelFamily | None = None,
) -> tuple[LayerwiseNet, list[float]]:
    """A copy of ``model`` with every convolution of ``family`` replaced by its decomposed chain.

    ``family`` defaults to the block convolutions of a known hourglass layout
    (:func:`~tcompress.family.layout_family`); for any other network, give one
    (:func:`~tcompress.family.pattern_family`). ``progress``, if given, is called with a short
    description before each layer.

    Returns
    -------
    (LayerwiseNet, per-layer squared errors ||K - K_hat||^2 in W's order)
    """
    family = family if family is not None else _known_family(model)
    kernel_shape = block_kernel_shape(model, family)
    method = layer_method(config.method)
    resolved = method.resolve(RankSpec.parse(config.ranks), kernel_shape)
    net = copy.deepcopy(model)
    squared = []
    with torch.no_grad():
        for i, (_, name) in enumerate(family.members):
            if progress is not None:
                progress(
                    f"Decomposing block convolution {i + 1}/{len(family.members)} ({config.method})"
                )
            conv = net.get_submodule(name)
            layers = decompose_conv(conv, config.method, resolved.ranks, config)
            net.set_submodule(name, layers)
            rebuilt = method.kernel(layers)
            squared.append(float((rebuilt.double() - conv.weight.double()).square().sum()))
    out = LayerwiseNet(net, config.method, resolved.ranks, family)
    out.meta["notes"] = list(resolved.notes)
    return out.train(model.training), squared


def _known_family(model: nn.Module) -> KernelFamily:
    if not hasattr(model, "block_conv_names"):
        raise FamilyError(
            f"model is a {type(model).__name__} without a known kernel family; expected a "
            "StackedHourglass, BearpawHourglass or PoseNet, or family= (a KernelFamily, e.g. "
            "from tcompress.family.pattern_family)"
        )
    return layout_family(model)


def block_kernel_shape(model: nn.Module, family: KernelFamily) -> tuple[int, int, int, int]:
    """(f_out, f_in, h, w) of the family's kernels (all alike)."""
    return tuple(model.get_submodule(family.names[0]).weight.shape)


def decompose_conv(
    conv: nn.Conv2d, method: str, ranks: Sequence[int], config: LayerwiseConfig
) -> nn.Sequential:
    """The method's chain for ``conv``, its weights from the decomposition of ``conv.weight``."""
    kernel = conv.weight.detach()
    dtype = kernel.dtype
    work = kernel if dtype in (torch.float32, torch.float64) else kernel.float()
    chosen = layer_method(method)
    layers = chosen.skeleton(ranks, conv, device="meta")
    weights = chosen.weights(work, ranks, n_iter=config.n_iter, seed=config.seed)
    if conv.bias is not None:
        weights.append(conv.bias.detach())
    targets = [(m, name) for m in layers for name, _ in m.named_parameters(recurse=False)]
    for (module, name), value in zip(targets, weights, strict=True):
        setattr(module, name, nn.Parameter(value.to(dtype).contiguous().clone()))
    return layers


def choose_layer_ranks(
    method: str,
    kernel_shape: Sequence[int],
    n_layers: int,
    other_params: int,
    ratio: float,
) -> tuple[int, ...]:
    """The per-layer ranks (the same for every layer) whose whole-network compression ratio is
    nearest to ``ratio`` (on a log scale; a tie goes to the smaller model).

    The candidates are the method's (Tucker: R_in = R_out, full spatial modes). Whole-network
    parameters are ``other_params + n_layers * method.params(kernel_shape, ranks)``; the original
    network has ``other_params + n_layers * prod(kernel_shape)``.

    Raises
    ------
    RankError
        A ratio below 1 or above what rank 1 in every layer gives.
    """
    chosen = layer_method(method)
    before = other_params + n_layers * math.prod(kernel_shape)
    candidates = chosen.candidates(kernel_shape)

    def achieved(ranks) -> float:
        return before / (other_params + n_layers * chosen.params(kernel_shape, ranks))

    best = achieved(candidates[0])
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 1 <= ratio <= best:
        raise RankError(
            f"compression ratio {ratio!r} is out of reach: with {method} this network goes "
            f"from 1x to {best:.2f}x (rank 1 in every layer)"
        )
    return min(candidates, key=lambda r: (abs(math.log(achieved(r) / ratio)), -achieved(r)))
