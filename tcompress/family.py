"""The kernel family: which convolutions of a network form the T-Net tensor, at which index.

For the known hourglass layouts the family is fixed by the architecture (stack, depth, pathway,
block). For any other network, :func:`pattern_family` reads it off the module names with a pattern
whose ``{named}`` parts become the leading modes: ``layer{stage}.{block}.conv{conv}`` stacks a
ResNet's block convolutions into a tensor (stage, block, conv, f_in, f_out, h, w).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from tcompress.errors import FamilyError
from tcompress.stacking import stack_kernels

#: The modes every kernel family ends with.
KERNEL_MODES = ("f_in", "f_out", "h", "w")
HOURGLASS_MODES = ("stack", "depth", "pathway", "block")


@dataclass(frozen=True)
class KernelFamily:
    """Convolutions stacked into one tensor: ``members[i] = (index, module name)`` in row-major
    order over ``grid``; ``mode_values[k]`` names the values of grid mode ``k`` (the parts of
    the module names they came from); ``left_out`` says which matching convolutions stay dense,
    and why."""

    mode_names: tuple[str, ...]
    grid: tuple[int, ...]
    members: tuple[tuple[tuple[int, ...], str], ...]
    mode_values: tuple[tuple[str, ...], ...] = ()
    left_out: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.mode_names) != len(self.grid) or not self.grid:
            raise FamilyError(
                f"mode_names {self.mode_names} and grid {self.grid} must be non-empty and of "
                "equal length"
            )
        if len(self.members) != math.prod(self.grid):
            raise FamilyError(
                f"the family has {len(self.members)} member(s); expected one per grid cell, "
                f"{math.prod(self.grid)} for grid {self.grid}"
            )

    @property
    def names(self) -> list[str]:
        return [name for _, name in self.members]

    @property
    def all_mode_names(self) -> tuple[str, ...]:
        return (*self.mode_names, *KERNEL_MODES)

    def weight_keys(self) -> list[str]:
        return [f"{name}.weight" for name in self.names]

    def stack(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """W from a state_dict: (*grid, f_in, f_out, h, w)."""
        return stack_kernels([state[key] for key in self.weight_keys()], self.grid)

    def to_dict(self) -> dict:
        return {
            "mode_names": list(self.mode_names),
            "grid": list(self.grid),
            "members": [[list(index), name] for index, name in self.members],
            "mode_values": [list(v) for v in self.mode_values],
            "left_out": list(self.left_out),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> KernelFamily:
        return cls(
            tuple(data["mode_names"]),
            tuple(int(g) for g in data["grid"]),
            tuple((tuple(int(i) for i in index), str(name)) for index, name in data["members"]),
            tuple(tuple(v) for v in data.get("mode_values", ())),
            tuple(data.get("left_out", ())),
        )


def layout_family(model: nn.Module) -> KernelFamily:
    """The family of a known hourglass layout (a model with ``block_conv_names`` and
    ``tensor_grid``): modes (stack, depth, pathway, block)."""
    return KernelFamily(HOURGLASS_MODES, tuple(model.tensor_grid), tuple(model.block_conv_names()))


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def compile_pattern(pattern: str) -> tuple[re.Pattern, tuple[str, ...]]:
    """A family pattern as a regular expression over module names, and its mode names.

    ``{name}`` matches one part of a dotted name made of letters, digits and ``_`` (a number
    such as ``3``, or a name such as ``down``), ``*`` any run of characters inside one part;
    everything else matches itself. A trailing ``.weight`` is ignored.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise FamilyError(
            f"family pattern is {pattern!r}; expected e.g. 'layer{{stage}}.{{block}}.conv{{conv}}'"
        )
    text = pattern.strip().removesuffix(".weight")
    names = tuple(_PLACEHOLDER.findall(text))
    if not names:
        raise FamilyError(
            f"family pattern {pattern!r} has no {{named}} part; expected at least one, e.g. "
            "'layer{stage}.{block}.conv{conv}'"
        )
    repeated = [n for n, c in Counter(names).items() if c > 1]
    if repeated:
        raise FamilyError(
            f"family pattern {pattern!r} names mode {repeated[0]!r} twice; expected each "
            "{named} part once"
        )
    if set(names) & set(KERNEL_MODES):
        clash = sorted(set(names) & set(KERNEL_MODES))[0]
        raise FamilyError(
            f"family pattern {pattern!r} uses mode name {clash!r}; expected names other than "
            f"{', '.join(KERNEL_MODES)} (the kernel's own modes)"
        )
    regex, pos = "", 0
    for m in _PLACEHOLDER.finditer(text):
        regex += _literal(text[pos : m.start()]) + f"(?P<{m.group(1)}>[A-Za-z0-9_]+)"
        pos = m.end()
    regex += _literal(text[pos:])
    return re.compile(f"^{regex}$"), names


def _literal(text: str) -> str:
    return "[^.]*".join(re.escape(part) for part in text.split("*"))


def pattern_family(model: nn.Module, pattern: str) -> KernelFamily:
    """The convolutions of ``model`` whose names match ``pattern`` (see :func:`compile_pattern`),
    stacked over the values of its named parts.

    The family is the largest group of matching convolutions that share one geometry (kernel
    shape, stride, padding, dilation; ``groups=1``); its grid has, for every named part, the
    values seen in that group (numbers in numeric order, names in order of appearance). Where the
    group does not fill the grid, values are removed one at a time, the one with the most empty
    cells first, until it does. Every matching convolution that is not in the tensor is listed
    in ``left_out`` with the reason; it stays dense.
    """
    regex, modes = compile_pattern(pattern)
    matched: list[tuple[dict[str, str], str, nn.Conv2d]] = []
    for name, module in model.named_modules():
        m = regex.match(name)
        if m and isinstance(module, nn.Conv2d):
            matched.append((m.groupdict(), name, module))
    if not matched:
        convs = [n for n, mod in model.named_modules() if isinstance(mod, nn.Conv2d)]
        shown = ", ".join(f"'{n}'" for n in convs[:4]) + (", ..." if len(convs) > 4 else "")
        raise FamilyError(
            f"family pattern {pattern!r} matches no convolution; the model's convolutions are "
            f"{shown or 'none'}"
        )
    geometry = Counter(_geometry(conv) for _, _, conv in matched)
    chosen, _ = geometry.most_common(1)[0]
    left_out = [
        f"{name} (shape {_show_geometry(_geometry(conv))}; the family's is "
        f"{_show_geometry(chosen)})"
        for _, name, conv in matched
        if _geometry(conv) != chosen
    ]
    cells = {
        tuple(parts[m] for m in modes): name
        for parts, name, conv in matched
        if _geometry(conv) == chosen
    }
    values = [_ordered(cell[k] for cell in cells) for k in range(len(modes))]
    values, dropped = _full_grid(cells, values, modes)
    left_out += [f"{cells[cell]} (outside the full grid: {why})" for cell, why in dropped]
    members = []
    for index in _row_major([len(v) for v in values]):
        cell = tuple(values[k][i] for k, i in enumerate(index))
        members.append((index, cells[cell]))
    if len(members) < 2:
        raise FamilyError(
            f"family pattern {pattern!r} leaves {len(members)} convolution to stack "
            f"({'; '.join(left_out) or 'no other match'}); expected at least 2 of one shape"
        )
    return KernelFamily(
        modes,
        tuple(len(v) for v in values),
        tuple(members),
        tuple(tuple(v) for v in values),
        tuple(left_out),
    )


def _geometry(conv: nn.Conv2d) -> tuple:
    return (
        tuple(conv.weight.shape),
        tuple(conv.stride),
        conv.padding if isinstance(conv.padding, str) else tuple(conv.padding),
        tuple(conv.dilation),
        conv.groups,
        conv.padding_mode,
    )


def _show_geometry(geometry: tuple) -> str:
    shape, stride, padding, dilation, groups, _ = geometry
    text = "x".join(map(str, shape))
    extras = [
        f"stride {stride}" if stride != (1, 1) else "",
        f"groups {groups}" if groups != 1 else "",
    ]
    extras += [f"padding {padding}", f"dilation {dilation}" if dilation != (1, 1) else ""]
    return text + "".join(f", {e}" for e in extras if e)


def _ordered(parts) -> list[str]:
    unique = list(dict.fromkeys(parts))
    if all(p.isdigit() for p in unique):
        return sorted(unique, key=int)
    return unique


def _row_major(grid: Sequence[int]) -> list[tuple[int, ...]]:
    indices = [()]
    for size in grid:
        indices = [(*index, i) for index in indices for i in range(size)]
    return indices


def _full_grid(cells: Mapping[tuple, str], values: list[list[str]], modes: Sequence[str]):
    """Remove mode values until every cell of the grid holds a kernel; (values, dropped cells
    with the reason)."""
    values = [list(v) for v in values]
    dropped: list[tuple[tuple, str]] = []
    while True:
        present = [c for c in cells if all(c[k] in values[k] for k in range(len(values)))]
        if len(present) == math.prod(len(v) for v in values):
            return values, dropped
        worst, worst_key = None, None
        for k, vals in enumerate(values):
            slice_size = math.prod(len(v) for j, v in enumerate(values) if j != k)
            for value in vals:
                have = sum(1 for c in present if c[k] == value)
                # Most empty cells first; among equals, the value that drops fewest kernels.
                key = ((slice_size - have) / slice_size, -have)
                if worst_key is None or key > worst_key:
                    worst, worst_key = (k, value), key
        k, value = worst
        values[k].remove(value)
        for c in present:
            if c[k] == value:
                dropped.append((c, f"{modes[k]} {value!r} lacks kernels of the family's shape"))
