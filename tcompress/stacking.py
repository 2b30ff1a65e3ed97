"""Block kernels <-> the 8th-order weight tensor W with named modes
(docs/design.md, "The weight tensor").

W[s, d, p, c] is the kernel of convolution (stack s, depth d, pathway p, conv c) with its channel
modes in the order (f_in, f_out), while a PyTorch Conv2d weight is (out, in, kh, kw); the two
functions here are exact inverses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from tcompress.decompose._threads import one_thread
from tcompress.layouts import CUSTOM
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
#: The hourglass's grid modes; the last four modes (channels, kernel) are every family's.
_GRID_MODES, _KERNEL_MODES = MODE_NAMES[:4], MODE_NAMES[4:]
#: Values of a grid mode shown in full; more are shown as the first few and the last.
_VALUES_SHOWN = 6


def mode_descriptions(described: Mapping) -> list[str]:
    """What every mode of a tensor means, one line per mode, for the tables of ``tcompress info``,
    ``convert`` and ``analyze``.

    ``described`` is anything naming the modes under ``mode_names``: a conversion summary (its
    ``architecture`` a name), one of its ``groups``, a saved file's description (its
    ``architecture`` a dict), a kernel family (:meth:`~tcompress.family.KernelFamily.to_dict`,
    grid modes only) or an analysis record. The hourglass layouts' modes are described as
    :data:`MODE_DESCRIPTIONS`. A family read off module names (``--family``, its architecture
    ``custom``, or ``mode_values`` given) has its grid modes described by their own names and the
    values they took, "stage (from the module names: values 1, 2, 3)" (the values of
    ``mode_values``, or of a summary's only group; without them, the name alone), then
    "input features", "output features", "kernel height", "kernel width".
    """
    names = tuple(described["mode_names"])
    grid = names[: -len(_KERNEL_MODES)] if names[-len(_KERNEL_MODES) :] == _KERNEL_MODES else names
    values = list(described.get("mode_values") or ())
    groups = described.get("groups") or []
    if not values and len(groups) == 1:
        values = list(groups[0].get("mode_values") or ())
    architecture = described.get("architecture")
    if isinstance(architecture, Mapping):
        architecture = architecture.get("name")
    custom = architecture == CUSTOM or bool(values) or grid != _GRID_MODES
    if not custom:
        return list(MODE_DESCRIPTIONS)
    lines = [
        _grid_description(name, values[k] if k < len(values) else ()) for k, name in enumerate(grid)
    ]
    return lines + list(MODE_DESCRIPTIONS[len(_GRID_MODES) :])


def _grid_description(name: str, values: Sequence) -> str:
    """``stage (from the module names: values 1, 2, 3)``; long lists shortened, with a count.

    A mode whose values hold dots lists the kernels present: the parts of a group that does not
    fill its grid, joined (``block_conv``: ``0.2``, ``1.1``, ...), described as
    ``block.conv of the kernels present`` where the name splits into as many parts as the
    values have."""
    shown = [str(v) for v in values]
    if not shown:
        return f"{name} (from the module names)"
    merged = any("." in v for v in shown)
    what = "values"
    if merged:
        parts = name.split("_")
        fits = all(v.count(".") == len(parts) - 1 for v in shown)
        what = f"{'.'.join(parts) if fits else 'parts'} of the kernels present,"
    count = f" ({len(shown)} {'kernels' if merged else 'values'})"
    if len(shown) > _VALUES_SHOWN:
        shown = [*shown[: _VALUES_SHOWN - 2], "...", shown[-1]]
    else:
        count = ""
    return f"{name} (from the module names: {what} {', '.join(shown)}{count})"


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
    # One transposing copy per kernel, each on one thread: a parallel copy waits at its barrier
    # for a descheduled thread on cores shared with other processes (ten times slower on 2 busy
    # cores; see tcompress.decompose._threads). On the CPU the kernels are shared out over as
    # many Python threads as torch may use (the copies release the GIL), which needs no
    # barrier per copy: a descheduled thread delays only its own share. The values are the same.
    workers = min(torch.get_num_threads(), len(kernels)) if W.device.type == "cpu" else 1

    def copy(first: int) -> None:
        for i in range(first, len(kernels), workers):
            flat[i] = kernels[i].transpose(0, 1)

    with one_thread():
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(copy, range(workers)))
        else:
            copy(0)
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
