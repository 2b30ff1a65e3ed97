"""Block kernels <-> the 8th-order weight tensor W with named modes
(docs/design.md, "The weight tensor").

W[s, d, p, c] is the kernel of convolution (stack s, depth d, pathway p, conv c) with its channel
modes in the order (f_in, f_out), while a PyTorch Conv2d weight is (out, in, kh, kw); the two
functions here are exact inverses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from tcompress.decompose._threads import one_thread
from tcompress.models import HourglassConfig, StackedHourglass

MODE_NAMES = ("stack", "depth", "pathway", "block", "f_in", "f_out", "h", "w")
MODE_DESCRIPTIONS = (
    "hourglass in the stack",
    "level of the hourglass",
    "skip / down / up",
    "convolution in the block",
    "input features",
    "output features",
    "kernel height",
    "kernel width",
)


def tensor_shape(config: HourglassConfig, kernel_size: tuple[int, int] = (3, 3)) -> tuple[int, ...]:
    """Shape of W for a hourglass configuration."""
    f = config.features
    return (config.n_stacks, config.depth, 3, config.block_depth, f, f, *kernel_size)


def block_keys(config: HourglassConfig) -> list[tuple[tuple[int, int, int, int], str]]:
    """(index, state-dict key) of every block kernel, in W's (row-major) order."""
    return [
        ((s, d, p, c), StackedHourglass.block_key((s, d, p, c)))
        for s in range(config.n_stacks)
        for d in range(config.depth)
        for p in range(3)
        for c in range(config.block_depth)
    ]


def stack_kernels(kernels: Sequence[torch.Tensor], grid: Sequence[int]) -> torch.Tensor:
    """Stack Conv2d kernels, listed in row-major order over ``grid``, into W.

    Shapes
    ------
    kernels: each (f_out, f_in, h, w); ``len(kernels) == prod(grid)``.
    returns: (*grid, f_in, f_out, h, w), contiguous.
    """
    f_out, f_in, h, w = kernels[0].shape
    W = torch.empty((*grid, f_in, f_out, h, w), dtype=kernels[0].dtype, device=kernels[0].device)
    flat = W.view(-1, f_in, f_out, h, w)
    # One transposing copy per kernel, on one thread: each copy is short, and on cores shared
    # with other processes a parallel copy waits at its barrier for a descheduled thread (ten
    # times slower on 2 busy cores; see tcompress.decompose._threads). The values are the same.
    with one_thread():
        for i, kernel in enumerate(kernels):
            flat[i] = kernel.transpose(0, 1)
    return W


def unstack_kernels(W: torch.Tensor, n_grid_modes: int = 4) -> list[torch.Tensor]:
    """Inverse of :func:`stack_kernels`: the Conv2d kernels (f_out, f_in, h, w), row-major."""
    flat = W.reshape(-1, *W.shape[n_grid_modes:])
    return [flat[i].transpose(0, 1).contiguous() for i in range(flat.shape[0])]


def stack_hourglass(state: Mapping[str, torch.Tensor], config: HourglassConfig) -> torch.Tensor:
    """W from a (validated) hourglass state_dict."""
    keys = block_keys(config)
    return stack_kernels([state[key] for _, key in keys], tensor_shape(config)[:4])


def block_key_set(config: HourglassConfig) -> set[str]:
    return {key for _, key in block_keys(config)}
