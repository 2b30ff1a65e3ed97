"""The kernel family: which convolutions of a network form the T-Net tensors, at which index.

For the known hourglass layouts the family is fixed by the architecture (stack, depth, pathway,
block): one tensor. For any other network, :func:`pattern_family` reads it off the module names
with a pattern whose ``{named}`` parts become the leading modes: ``layer{stage}.{block}.conv{conv}``
stacks a ResNet's block convolutions into tensors (block, conv, f_in, f_out, h, w), one per group
of kernels of one geometry (:class:`KernelGroups`), each group a :class:`KernelFamily`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

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
    and why; ``name`` names the group in rank strings and summaries (empty for the known layouts,
    whose files do not record it: :attr:`group_name` then derives it).

    A family is also the one group of itself (:attr:`groups`), so code that takes a
    :class:`KernelGroups` takes a family too."""

    mode_names: tuple[str, ...]
    grid: tuple[int, ...]
    members: tuple[tuple[tuple[int, ...], str], ...]
    mode_values: tuple[tuple[str, ...], ...] = ()
    left_out: tuple[str, ...] = field(default=())
    name: str = ""

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
    def group_name(self) -> str:
        """``name``, or else the longest common dotted prefix of the members' names (``W`` when
        they have none)."""
        return self.name or common_prefix(self.names) or "W"

    @property
    def groups(self) -> tuple[KernelFamily, ...]:
        """The tensors of the family: this one."""
        return (self,)

    @property
    def all_mode_names(self) -> tuple[str, ...]:
        return (*self.mode_names, *KERNEL_MODES)

    def weight_keys(self) -> list[str]:
        return [f"{name}.weight" for name in self.names]

    def stack(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """W from a state_dict: (*grid, f_in, f_out, h, w)."""
        return stack_kernels([state[key] for key in self.weight_keys()], self.grid)

    def to_dict(self) -> dict:
        out = {
            "mode_names": list(self.mode_names),
            "grid": list(self.grid),
            "members": [[list(index), name] for index, name in self.members],
            "mode_values": [list(v) for v in self.mode_values],
            "left_out": list(self.left_out),
        }
        if self.name:  # the known layouts' records stay as they were
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> KernelFamily:
        return cls(
            tuple(data["mode_names"]),
            tuple(int(g) for g in data["grid"]),
            tuple((tuple(int(i) for i in index), str(name)) for index, name in data["members"]),
            tuple(tuple(v) for v in data.get("mode_values", ())),
            tuple(data.get("left_out", ())),
            str(data.get("name", "")),
        )


@dataclass(frozen=True)
class KernelGroups:
    """A kernel family of several tensors: the matching kernels of each geometry (at least two
    of it) form a group, one :class:`KernelFamily` and one tensor each, in the order the network
    first uses them; ``left_out`` says which matching convolutions stay dense, and why.

    It answers what a one-tensor family answers about all its kernels (:attr:`names`,
    :meth:`weight_keys`, :attr:`left_out`); per tensor, iterate :attr:`groups`."""

    groups: tuple[KernelFamily, ...]
    left_out: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [g.group_name for g in self.groups]
        if len(self.groups) < 2 or len(set(names)) != len(names):
            raise FamilyError(
                f"kernel groups are named {names}; expected at least 2 groups, each with a name "
                "of its own"
            )

    @property
    def names(self) -> list[str]:
        """Every member's module name, group after group."""
        return [name for g in self.groups for name in g.names]

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(g.group_name for g in self.groups)

    def group(self, name: str) -> KernelFamily:
        """The group called ``name``."""
        for g in self.groups:
            if g.group_name == name:
                return g
        raise FamilyError(
            f"the family has no group {name!r}; expected one of {', '.join(self.group_names)}"
        )

    def weight_keys(self) -> list[str]:
        return [f"{name}.weight" for name in self.names]

    def to_dict(self) -> dict:
        return {"groups": [g.to_dict() for g in self.groups], "left_out": list(self.left_out)}

    @classmethod
    def from_dict(cls, data: Mapping) -> KernelGroups:
        groups = tuple(KernelFamily.from_dict(g) for g in data["groups"])
        return cls(groups, tuple(data.get("left_out", ())))


def family_from_dict(data: Mapping) -> KernelFamily | KernelGroups:
    """The family a file records: :class:`KernelGroups` for several tensors, else one
    :class:`KernelFamily`."""
    return KernelGroups.from_dict(data) if "groups" in data else KernelFamily.from_dict(data)


def common_prefix(names: Sequence[str]) -> str:
    """The longest dotted prefix every name starts with, whole parts only (``layer2`` for
    ``layer2.0.conv2`` and ``layer2.1.conv1``; empty when the first parts differ)."""
    split = [n.split(".") for n in names]
    if not split:
        return ""
    common = []
    for parts in zip(*split):
        if any(p != parts[0] for p in parts):
            break
        common.append(parts[0])
    if len(common) == min(len(p) for p in split) and len(set(names)) > 1:
        common = common[:-1]  # a whole name is not a prefix of the others' group
    return ".".join(common)


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


def pattern_family(model: nn.Module, pattern: str) -> KernelFamily | KernelGroups:
    """The convolutions of ``model`` whose names match ``pattern`` (see :func:`compile_pattern`),
    stacked over the values of its named parts, one tensor per geometry.

    The matching convolutions are grouped by geometry (kernel shape, stride, padding, dilation);
    every group of at least two kernels becomes a tensor, a convolution alone of its geometry
    stays dense, and so does a grouped convolution (``groups`` > 1) or one padding other than
    with zeros (each listed in ``left_out`` with the reason). Values are ordered: numbers in
    numeric order, names in order of appearance.

    - When every match has one geometry and the matches fill the grid of every named part's
      values, the family is that grid, as for a single tensor (a part with one value stays a
      mode of size 1): a :class:`KernelFamily`.
    - Otherwise each group's grid has the named parts whose value varies inside it (a part with
      one value there is no mode of that tensor). Where the group's kernels do not fill that
      grid (a ResNet stage whose first convolution has another stride), its varying parts
      become one mode listing the kernels present, named by joining the parts' names with
      ``_`` (``block_conv``, values ``0.2``, ``1.1``, ...): no kernel is left out.

    Each group is named by the longest common dotted prefix of its members' names (``layer2``),
    or, where that is empty or another group's too, by its geometry (``128x128x3x3``). One group
    is a :class:`KernelFamily` carrying ``left_out``; several are :class:`KernelGroups`.
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
    by_geometry: dict[tuple, list[tuple[tuple[str, ...], str]]] = {}
    unfit = []
    for parts, name, conv in matched:
        if conv.groups != 1 or conv.padding_mode != "zeros":
            why = "a grouped convolution" if conv.groups != 1 else f"{conv.padding_mode} padding"
            unfit.append(f"{name} (shape {_show_geometry(_geometry(conv))}; {why} stays dense)")
            continue
        by_geometry.setdefault(_geometry(conv), []).append((tuple(parts[m] for m in modes), name))
    left_out = unfit + [
        f"{kernels[0][1]} (shape {_show_geometry(geometry)}; no other matching convolution has "
        "this geometry)"
        for geometry, kernels in by_geometry.items()
        if len(kernels) == 1
    ]
    stacked = {g: kernels for g, kernels in by_geometry.items() if len(kernels) > 1}
    if not stacked:
        raise FamilyError(
            f"family pattern {pattern!r} leaves 1 convolution to stack "
            f"({'; '.join(left_out)}); expected at least 2 of one shape"
        )
    for kernels in stacked.values():
        _check_distinct(kernels, modes, pattern)
    names = _group_names(stacked)
    if len(by_geometry) == 1 and not unfit:
        ((geometry, kernels),) = stacked.items()
        values = [_ordered(cell[k] for cell, _ in kernels) for k in range(len(modes))]
        if len(kernels) == math.prod(len(v) for v in values):
            return _grid_family(kernels, modes, values, name=names[geometry])
    groups = tuple(_group(kernels, modes, names[g]) for g, kernels in stacked.items())
    if len(groups) == 1:
        return replace(groups[0], left_out=tuple(left_out))
    return KernelGroups(groups, tuple(left_out))


def _check_distinct(kernels, modes: Sequence[str], pattern: str) -> None:
    seen: dict[tuple[str, ...], str] = {}
    for cell, name in kernels:
        if cell in seen:
            where = ", ".join(f"{m} {v!r}" for m, v in zip(modes, cell))
            raise FamilyError(
                f"family pattern {pattern!r} gives '{seen[cell]}' and '{name}' the same place "
                f"({where}); expected a {{named}} part wherever matching names differ"
            )
        seen[cell] = name


def _grid_family(kernels, modes, values, *, name: str) -> KernelFamily:
    """The kernels on the full grid of ``values`` (one list per mode), row-major."""
    cells = {cell: member for cell, member in kernels}
    members = []
    for index in _row_major([len(v) for v in values]):
        members.append((index, cells[tuple(values[k][i] for k, i in enumerate(index))]))
    grid = tuple(len(v) for v in values)
    return KernelFamily(
        tuple(modes), grid, tuple(members), tuple(tuple(v) for v in values), (), name
    )


def _group(kernels, modes: Sequence[str], name: str) -> KernelFamily:
    """One geometry's kernels as a tensor over the modes that vary among them; their product
    grid, or one merged mode listing the kernels present where they do not fill it."""
    values = [_ordered(cell[k] for cell, _ in kernels) for k in range(len(modes))]
    varying = [k for k, v in enumerate(values) if len(v) > 1]
    cells = [(tuple(cell[k] for k in varying), member) for cell, member in kernels]
    values = [values[k] for k in varying]
    names = [modes[k] for k in varying]
    if len(cells) == math.prod(len(v) for v in values):
        return _grid_family(cells, names, values, name=name)
    order = {k: {v: i for i, v in enumerate(vals)} for k, vals in enumerate(values)}
    cells.sort(key=lambda c: tuple(order[k][v] for k, v in enumerate(c[0])))
    merged = "_".join(names)
    while merged in KERNEL_MODES:  # joined names must not pose as a kernel mode
        merged += "_"
    present = [".".join(cell) for cell, _ in cells]
    members = tuple(((i,), member) for i, (_, member) in enumerate(cells))
    return KernelFamily((merged,), (len(cells),), members, (tuple(present),), (), name)


def _group_names(stacked: Mapping[tuple, list]) -> dict[tuple, str]:
    """Each group's name: its members' common dotted prefix where that is non-empty, no other
    group's and fit for a rank string, else its shape (with its stride, padding, ... where
    another group has that shape too); a number is appended to any name still shared."""
    prefixes = {g: common_prefix([n for _, n in kernels]) for g, kernels in stacked.items()}
    count = Counter(prefixes.values())
    names = {
        g: p for g, p in prefixes.items() if p and count[p] == 1 and not _RANK_SYNTAX.search(p)
    }
    shapes = Counter("x".join(map(str, g[0])) for g in stacked if g not in names)
    for g in stacked:
        if g not in names:
            shape = "x".join(map(str, g[0]))
            names[g] = shape if shapes[shape] == 1 else f"{shape}_{_geometry_tag(g)}"
    shared = {n for n, c in Counter(names.values()).items() if c > 1}
    return {
        g: f"{names[g]}_{i + 1}" if names[g] in shared else names[g] for i, g in enumerate(stacked)
    }


#: Characters a group name cannot hold: the rank grammar's separators ("layer2:f_in=64;...").
_RANK_SYNTAX = re.compile(r"[;:,=\s]")


def _geometry_tag(geometry: tuple) -> str:
    """Stride, padding and dilation in a name's characters (``s2x2_p1x1_d1x1``)."""
    _, stride, padding, dilation, _, _ = geometry
    pad = padding if isinstance(padding, str) else "x".join(map(str, padding))
    return f"s{'x'.join(map(str, stride))}_p{pad}_d{'x'.join(map(str, dilation))}"


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
