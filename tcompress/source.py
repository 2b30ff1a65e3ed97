"""The one reader of dense networks: a module, a state_dict or a checkpoint file becomes a
validated :class:`Source` (its state, its kernel family, the dense network it loads into).

:func:`tcompress.convert`, :func:`tcompress.load`, ``tcompress info`` and ``tcompress analyze``
all read dense networks here: the layout is detected from the keys (or built by the user's
factory with a kernel family pattern), the state is loaded strictly and checked finite.
"""

from __future__ import annotations

import copy
import functools
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules import module as _module_impl
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.parameter import is_lazy

from tcompress import __version__
from tcompress.checkpoint import Checkpoint, check_finite, read_checkpoint
from tcompress.decompose._threads import one_thread
from tcompress.errors import CheckpointError, FamilyError, TcompressError, param
from tcompress.family import KernelFamily, KernelGroups, layout_family, pattern_family
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
    file records about its architecture.

    ``dense`` is never changed: :meth:`module` and :meth:`without_kernels` work on copies (for
    the known layouts it is one network shared by every source of that layout and
    configuration)."""

    state: dict[str, torch.Tensor]
    family: KernelFamily | KernelGroups
    dense: nn.Module
    architecture: dict
    params_before: int
    source: str | None = None
    sha256: str | None = None
    where: str = "model"

    def stacked(self) -> torch.Tensor:
        """W: the family's kernels stacked, (grid modes..., f_in, f_out, h, w), for a family of
        one tensor (:meth:`stacked_groups` gives every group's)."""
        if len(self.family.groups) > 1:
            raise FamilyError(
                f"the kernel family has {len(self.family.groups)} groups "
                f"({', '.join(g.group_name for g in self.family.groups)}), one tensor each; "
                "expected one group (stacked_groups() gives each group's tensor)"
            )
        return self.family.stack(self.state)

    def stacked_groups(self) -> list[torch.Tensor]:
        """Each group's W, in the family's order (one tensor for a family of one group)."""
        return [group.stack(self.state) for group in self.family.groups]

    def module(self, device: str | torch.device | None = None) -> nn.Module:
        """A copy of the dense network holding the state (tensors shared, not copied)."""
        net = self._copy_dense()
        state = self.state
        if device is not None:
            with one_thread():
                state = {k: v.to(device) for k, v in state.items()}
        assign_state(net, state)
        return net

    def without_kernels(self, replace, device: str | torch.device | None = None) -> nn.Module:
        """A copy of the dense network after ``replace(net, family)`` swapped every family member
        (of every group) for modules of its own, the rest of the weights copied from the state
        (so fine-tuning never touches the source model)."""
        net = replace(self._copy_dense(), self.family)
        kernels = set(self.family.weight_keys())
        # Hundreds of small copies: on one thread (a parallel copy's barrier waits for a
        # descheduled thread on busy cores, see tcompress.decompose._threads; same values).
        with one_thread():
            rest = {k: v.detach().clone() for k, v in self.state.items() if k not in kernels}
            if device is not None:
                rest = {k: v.to(device) for k, v in rest.items()}
        assign_state(net, rest)
        return net.to(device) if device is not None else net

    def _copy_dense(self) -> nn.Module:
        """A copy of ``dense``: :func:`copy_meta_network` for a known layout (tcompress's network,
        built on the meta device), ``copy.deepcopy`` for a network of the user's factory."""
        if self.architecture.get("name") == CUSTOM:
            return copy.deepcopy(self.dense)
        return copy_meta_network(self.dense)


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
        spec = StateSpec.of(dense)
    elif isinstance(model, nn.Module) and not isinstance(model, KNOWN_MODELS):
        raise CheckpointError(
            f"model is a {type(model).__name__}; expected a StackedHourglass, BearpawHourglass "
            "or PoseNet, or arch='MODULE:FACTORY' with family='PATTERN' for another network"
        )
    else:
        layout, config = detect_architecture(state, where)
        dense, spec = _meta_template(layout, config)
        kernels = layout_family(dense)
        architecture = {"name": layout.name, "config": config.to_dict()}
    check_state_matches(spec, state, where)
    skip = {k for k, v in state.items() if v.is_meta}  # a meta tensor has no values to check
    if not check_kernels:
        skip |= set(kernels.weight_keys())
    _check_finite(state, where, skip)
    architecture = {**architecture, "family": kernels.to_dict(), "tcompress": __version__}
    return Source(state, kernels, dense, architecture, spec.n_params, source, sha256, where)


def _check_finite(state: Mapping[str, torch.Tensor], where: str, skip: set[str]) -> None:
    """:func:`~tcompress.checkpoint.check_finite` (``state`` but ``skip``), faster when every
    value is finite, as nearly always: one sum per tensor in its own precision decides (the
    float64 sums of ``check_finite`` cost three times as much on hundreds of small tensors).
    A sum that is not finite (a NaN or Inf, or a sum that overflows) leaves the verdict to
    ``check_finite``. On one thread, as hundreds of small reductions are fastest (see
    :mod:`tcompress.decompose._threads`); the verdict is the same on any number."""
    with one_thread():
        sums = [
            v.sum()
            for k, v in state.items()
            if k not in skip and v.is_floating_point() and v.numel()
        ]
        if not sums or bool(torch.isfinite(torch.stack(sums).sum())):
            return
        check_finite(state, where, skip=skip)


@functools.lru_cache(maxsize=16)
def _meta_template(layout, config) -> tuple[nn.Module, StateSpec]:
    """The dense network of a known layout and configuration on the meta device, and the state it
    expects: built once per process (constructing a network of hundreds of modules takes several
    times longer than :func:`copy_meta_network`), never changed (:class:`Source` copies it)."""
    dense = build(layout.name, config)
    return dense, StateSpec.of(dense)


def copy_meta_network(module: nn.Module) -> nn.Module:
    """``copy.deepcopy(module)`` for a network of a known layout on the meta device, in a
    fraction of the time.

    ``copy.deepcopy`` of a network of hundreds of modules spends its time in the generic
    machinery (every hook dictionary, every tuple of every module). This copies module by module
    what deepcopy copies of these networks (their ``__dict__``; their classes keep no other
    state): every module its own instance with its own dictionaries, every parameter and buffer
    a new meta tensor, values of immutable types shared, anything else deep-copied. A network
    with values (not on the meta device) goes to ``copy.deepcopy``.
    """
    if not _all_meta(module):
        return copy.deepcopy(module)
    with torch.no_grad():  # as Tensor.__deepcopy__ copies
        return _copy_meta(module, {})


def _all_meta(module: nn.Module) -> bool:
    """Every parameter and buffer of ``module`` is on the meta device."""
    for m in module.modules():
        for table in (m._parameters, m._buffers):
            for t in table.values():
                if t is not None and not t.is_meta:
                    return False
    return True


def _copy_meta(module: nn.Module, memo: dict) -> nn.Module:
    if id(module) in memo:  # a module reached twice stays one module, as deepcopy keeps it
        return memo[id(module)]
    new = object.__new__(type(module))
    memo[id(module)] = new
    state = module.__dict__.copy()
    state.pop("_compiled_call_impl", None)  # as nn.Module.__getstate__ leaves it out
    for key, value in state.items():
        kind = type(value)
        if kind in _ATOM_TYPES:
            continue
        if key == "_modules":
            value = {k: None if m is None else _copy_meta(m, memo) for k, m in value.items()}
        elif key == "_parameters" or key == "_buffers":
            value = {k: None if t is None else _copy_tensor(t, memo) for k, t in value.items()}
        elif kind in _CONTAINERS and not value:  # the hook dictionaries, mostly
            value = kind()
        elif not _immutable(value):
            value = copy.deepcopy(value, memo)
        state[key] = value
    new.__dict__.update(state)
    return new


def _copy_tensor(tensor: torch.Tensor, memo: dict) -> torch.Tensor:
    """A meta tensor's copy as ``copy.deepcopy`` makes it, short-cut for the plain cases."""
    if id(tensor) in memo:
        return memo[id(tensor)]
    if type(tensor) is nn.Parameter:  # Parameter.__deepcopy__, without its lookups
        data = tensor.data.clone(memory_format=torch.preserve_format)
        new = nn.Parameter(data, tensor.requires_grad)
    elif type(tensor) is torch.Tensor and tensor.grad is None and not tensor.__dict__:
        new = tensor.clone()  # Tensor.__deepcopy__ of a meta tensor: a clone
        if tensor.requires_grad:
            new.requires_grad_()
    else:
        new = copy.deepcopy(tensor, memo)
    memo[id(tensor)] = new
    return new


def assign_state(net: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """``net.load_state_dict(state, strict=True, assign=True)``, without its per-module overhead
    where nothing but plain assignment would happen.

    That is: no swap-tensors mode, no global registration hooks, no module with load hooks, extra
    state or a loader of its own (BatchNorm's only fills in a missing ``num_batches_tracked``),
    and ``state`` holding exactly the module's keys, as plain tensors of the right shapes. Then
    every parameter becomes ``nn.Parameter(state[key], requires_grad=<the module's>)`` and every
    persistent buffer ``state[key]``, in ``load_state_dict``'s order. Anything else goes to
    ``load_state_dict`` (which also raises its errors).
    """
    plan = _assignments(net, state)
    if plan is None:
        net.load_state_dict(state, strict=True, assign=True)
        return
    with torch.no_grad():
        for table, name, value, requires_grad in plan:
            table[name] = value if requires_grad is None else nn.Parameter(value, requires_grad)


_PLAIN_LOADERS = (nn.Module._load_from_state_dict, _NormBase._load_from_state_dict)


def _assignments(net: nn.Module, state: Mapping[str, torch.Tensor]) -> list | None:
    """(dictionary, name, tensor, requires_grad or None for a buffer) of every assignment
    ``load_state_dict(state, strict=True, assign=True)`` would make, or None where it might do
    anything else."""
    if torch.__future__.get_swap_module_params_on_conversion():
        return None
    if _module_impl._global_parameter_registration_hooks:
        return None
    if _module_impl._global_buffer_registration_hooks:
        return None
    plan, keys = [], set()
    for prefix, module in net.named_modules(remove_duplicate=False):
        cls = type(module)
        if (
            cls._load_from_state_dict not in _PLAIN_LOADERS
            or cls.set_extra_state is not nn.Module.set_extra_state
            or module._load_state_dict_pre_hooks
            or module._load_state_dict_post_hooks
        ):
            return None
        head = f"{prefix}." if prefix else ""
        tables = ((module._parameters, True), (module._buffers, False))
        for table, is_param in tables:
            for name, current in table.items():
                if current is None or (not is_param and name in module._non_persistent_buffers_set):
                    continue
                key = head + name
                value = state.get(key)
                if (
                    type(value) is not torch.Tensor
                    or is_lazy(current)
                    or value.shape != current.shape
                    or (is_param and not isinstance(current, nn.Parameter))
                ):
                    return None
                plan.append((table, name, value, current.requires_grad if is_param else None))
                keys.add(key)
    if len(keys) != len(state):  # keys not in the module: load_state_dict says which
        return None
    return plan


_CONTAINERS = (dict, OrderedDict, set, list)
_ATOM_TYPES = frozenset(
    (int, float, complex, bool, str, bytes, type(None), torch.dtype, torch.device)
)


def _immutable(value) -> bool:
    """A value deepcopy would only duplicate, never change: atoms, tuples and frozensets of
    them, frozen dataclasses of them."""
    if type(value) in _ATOM_TYPES:
        return True
    if type(value) in (tuple, frozenset):
        return all(_immutable(v) for v in value)
    params = getattr(type(value), "__dataclass_params__", None)
    if params is not None and params.frozen:
        return all(_immutable(getattr(value, f)) for f in value.__dataclass_fields__)
    return False


def read_dense(model, **options) -> nn.Module:
    """The dense network ``model`` describes, its state loaded strictly (:func:`read_source`)."""
    return read_source(model, **options).module()
