"""Checkpoint layouts: recognise the architecture from a state_dict's keys and shapes, build it.

The user passes no configuration: the number of stacks, levels, convolutions per block, width,
joints and input channels are all read off the keys and shapes. Three layouts are known:

- ``StackedHourglass``: tcompress's own (``hourglasses.0.levels.0.skip.convs.0.weight``);
- ``BearpawHourglass``: the ``hg`` model of bearpaw/pytorch-pose (``hg.0.hg.3.1.0.conv2.weight``);
- ``PoseNet``: princeton-vl/pytorch_stacked_hourglass (``hgs.0.0.low2.up1.conv2.conv.weight``).

Wrapper prefixes (``module.``, ``model.module.``) are removed before detection
(:func:`tcompress.checkpoint.strip_prefixes`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from tcompress.errors import CheckpointError, param
from tcompress.models import HourglassConfig, StackedHourglass
from tcompress.models.bearpaw import BearpawConfig, BearpawHourglass
from tcompress.models.posenet import PoseNet, PoseNetConfig

_BLOCK_KEY = re.compile(
    r"^hourglasses\.(\d+)\.levels\.(\d+)\.(skip|down|up)\.convs\.(\d+)\.weight$"
)
_STEM_KEY = "stem.conv.0.weight"
_SCORE_KEY = "scores.0.weight"


def infer_hourglass_config(state: Mapping[str, torch.Tensor], path: str) -> HourglassConfig:
    """Read a :class:`StackedHourglass` configuration off a state_dict, or say why it is not one."""
    stacks, levels, convs = set(), set(), set()
    for key in state:
        m = _BLOCK_KEY.match(key)
        if m:
            stacks.add(int(m.group(1)))
            levels.add(int(m.group(2)))
            convs.add(int(m.group(4)))
    if _STEM_KEY not in state or _SCORE_KEY not in state or not stacks:
        expected = [
            k
            for k in (_STEM_KEY, "hourglasses.0.levels.0.skip.convs.0.weight", _SCORE_KEY)
            if k not in state
        ]
        found = ", ".join(f"'{k}'" for k in list(state)[:3]) or "no keys"
        raise CheckpointError(
            f"checkpoint '{path}' is not a stacked hourglass tcompress knows: missing keys "
            f"{', '.join(repr(k) for k in expected)}; found {found}, ..."
        )
    stem = state[_STEM_KEY]
    score = state[_SCORE_KEY]
    if stem.dim() != 4 or score.dim() != 4:
        raise CheckpointError(
            f"checkpoint '{path}': '{_STEM_KEY}' has shape {tuple(stem.shape)} and "
            f"'{_SCORE_KEY}' {tuple(score.shape)}; expected 4-d convolution kernels"
        )
    return HourglassConfig(
        n_stacks=max(stacks) + 1,
        depth=max(levels) + 1,
        block_depth=max(convs) + 1,
        features=int(score.shape[1]),
        n_joints=int(score.shape[0]),
        in_channels=int(stem.shape[1]),
    )


_BEARPAW_KEY = re.compile(r"^hg\.(\d+)\.hg\.(\d+)\.(\d+)\.(\d+)\.conv2\.weight$")
_POSENET_KEY = re.compile(r"^hgs\.(\d+)\.0\.((?:low2\.)*)up1\.conv2\.conv\.weight$")


def infer_bearpaw_config(state: Mapping[str, torch.Tensor], path: str) -> BearpawConfig:
    """Read a :class:`BearpawConfig` off a state_dict of bearpaw/pytorch-pose's ``hg`` model."""
    stacks, levels, blocks = set(), set(), set()
    for key in state:
        m = _BEARPAW_KEY.match(key)
        if m:
            stacks.add(int(m.group(1)))
            levels.add(int(m.group(2)))
            if m.group(2) == "0" and m.group(3) == "0":
                blocks.add(int(m.group(4)))
    conv1, bottleneck, score = (
        _need(state, key, path, "the bearpaw/pytorch-pose hg layout")
        for key in ("conv1.weight", "hg.0.hg.0.0.0.conv3.weight", "score.0.weight")
    )
    return BearpawConfig(
        n_stacks=max(stacks) + 1,
        n_blocks=max(blocks) + 1,
        n_joints=int(score.shape[0]),
        depth=max(levels) + 1,
        features=int(bottleneck.shape[0]),
        stem_features=int(conv1.shape[0]),
        in_channels=int(conv1.shape[1]),
    )


def infer_posenet_config(state: Mapping[str, torch.Tensor], path: str) -> PoseNetConfig:
    """Read a :class:`PoseNetConfig` off a state_dict of princeton-vl's ``PoseNet``."""
    stacks, levels = set(), set()
    for key in state:
        m = _POSENET_KEY.match(key)
        if m:
            stacks.add(int(m.group(1)))
            levels.add(m.group(2).count("low2."))
    what = "the princeton-vl PoseNet layout"
    pre, stem, outer, down, outs = (
        _need(state, key, path, what)
        for key in (
            "pre.0.conv.weight",
            "pre.1.conv3.conv.weight",
            "hgs.0.0.up1.conv3.conv.weight",
            "hgs.0.0.low1.conv3.conv.weight",
            "outs.0.conv.weight",
        )
    )
    if down.shape[0] != outer.shape[0]:
        raise CheckpointError(
            f"checkpoint '{path}': 'hgs.0.0.low1.conv3.conv.weight' has {down.shape[0]} output "
            f"channels and the hourglass {outer.shape[0]}; a PoseNet trained with increase="
            f"{down.shape[0] - outer.shape[0]} has levels of different widths, expected "
            "increase=0"
        )
    return PoseNetConfig(
        n_stacks=max(stacks) + 1,
        depth=max(levels) + 1,
        features=int(outer.shape[0]),
        n_joints=int(outs.shape[0]),
        stem_features=int(pre.shape[0]),
        stem_width=int(stem.shape[0]),
        in_channels=int(pre.shape[1]),
    )


def _need(state: Mapping[str, torch.Tensor], key: str, path: str, what: str) -> torch.Tensor:
    value = state.get(key)
    if value is None or value.dim() != 4:
        found = "missing" if value is None else f"of shape {tuple(value.shape)}"
        raise CheckpointError(
            f"checkpoint '{path}': key '{key}' is {found}; expected a 4-d convolution kernel "
            f"in {what}"
        )
    return value


@dataclass(frozen=True)
class Architecture:
    """A network tcompress can build: its model class, configuration class and how to read the
    configuration off a state_dict."""

    name: str
    model: type[torch.nn.Module]
    config: type
    infer: Callable[[Mapping[str, torch.Tensor], str], object]
    marker: re.Pattern
    example_key: str


ARCHITECTURES = {
    a.name: a
    for a in (
        Architecture(
            "StackedHourglass",
            StackedHourglass,
            HourglassConfig,
            lambda state, path: infer_hourglass_config(state, path),
            re.compile(r"^(hourglasses\.\d+\.|stem\.conv\.)"),
            "hourglasses.0.levels.0.skip.convs.0.weight",
        ),
        Architecture(
            "BearpawHourglass",
            BearpawHourglass,
            BearpawConfig,
            infer_bearpaw_config,
            re.compile(r"^hg\.\d+\.hg\."),
            "hg.0.hg.3.1.0.conv2.weight",
        ),
        Architecture(
            "PoseNet",
            PoseNet,
            PoseNetConfig,
            infer_posenet_config,
            re.compile(r"^hgs\.\d+\.0\."),
            "hgs.0.0.low2.up1.conv2.conv.weight",
        ),
    )
}


def detect_architecture(
    state: Mapping[str, torch.Tensor], path: str
) -> tuple[Architecture, object]:
    """The architecture whose keys ``state`` has, and its configuration read off the shapes."""
    for arch in ARCHITECTURES.values():
        if any(arch.marker.match(key) for key in state):
            return arch, arch.infer(state, path)
    others = ", ".join(
        f"{a.name} ('{a.example_key}')"
        for a in ARCHITECTURES.values()
        if a.name != "StackedHourglass"
    )
    try:
        infer_hourglass_config(state, path)
    except CheckpointError as e:
        raise CheckpointError(
            f"{e}; other known layouts: {others}; any other network converts with "
            f"{param('arch')} and {param('family')}"
        ) from None
    raise AssertionError("unreachable: a StackedHourglass state has its marker keys")


#: The architecture name of networks built by a user's factory (``--arch MODULE:FACTORY``).
CUSTOM = "custom"
KNOWN_MODELS = (StackedHourglass, BearpawHourglass, PoseNet)


def refuse_custom(model, what: str) -> None:
    """Raise for a compressed network of the user's own (converted with ``arch=``): ``what``
    (fine-tuning on pose heatmaps, scoring PCKh) needs a pose network of a known layout."""
    architecture = (getattr(model, "meta", None) or {}).get("architecture") or {}
    if architecture.get("name") == CUSTOM:
        raise CheckpointError(
            f"the network was converted with arch={architecture.get('factory')!r}; {what} "
            "expects a stacked hourglass of a layout tcompress knows: train or score it in your "
            "own loop, as examples/custom_network.py does"
        )


def build_factory(spec: str) -> torch.nn.Module:
    """Import ``MODULE:FACTORY`` and call it without arguments: the user's dense network.

    Only names the user passes are imported; a T-Net file never makes tcompress import code by
    itself (:func:`tcompress.load` asks for the factory again).
    """
    import importlib

    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise CheckpointError(
            f"arch is {spec!r}; expected MODULE:FACTORY, e.g. 'mymodels:resnet' (a function "
            "that builds the dense network without arguments)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise CheckpointError(
            f"arch {spec!r}: module {module_name!r} cannot be imported ({e}); expected an "
            "importable module (is it on PYTHONPATH?)"
        ) from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise CheckpointError(
            f"arch {spec!r}: module {module_name!r} has no callable {attr!r}; expected a "
            "function that builds the dense network"
        )
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise CheckpointError(
            f"arch {spec!r} returned a {type(model).__name__}; expected a torch.nn.Module"
        )
    return model


def build(name: str, config: Mapping | object, *, meta: bool = True) -> torch.nn.Module:
    """The dense network ``name`` with ``config`` (a dict or the config dataclass); on the meta
    device (no storage, no time spent on initialisation) unless ``meta`` is False."""
    arch = ARCHITECTURES.get(name)
    if arch is None:
        raise CheckpointError(
            f"architecture {name!r} is unknown; expected one of {', '.join(ARCHITECTURES)}"
        )
    values = dict(config) if isinstance(config, Mapping) else config.to_dict()
    if not meta:
        return arch.model(**values)
    with torch.device("meta"):
        return arch.model(**values)


@dataclass(frozen=True)
class StateSpec:
    """The state_dict an architecture expects: key -> (shape, is floating point), and its
    number of parameters."""

    entries: dict[str, tuple[tuple[int, ...], bool]]
    n_params: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> StateSpec:
        """The state_dict ``model`` expects (it may live on the meta device)."""
        entries = {
            k: (tuple(v.shape), v.is_floating_point()) for k, v in model.state_dict().items()
        }
        return cls(entries, sum(p.numel() for p in model.parameters()))


def check_state_matches(expected: StateSpec, state: Mapping[str, torch.Tensor], path: str) -> None:
    """Every key present with the expected shape, and no other key; else one line saying which."""
    entries = expected.entries
    missing = [k for k in entries if k not in state]
    unexpected = [k for k in state if k not in entries]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({_few(unexpected)})")
        raise CheckpointError(
            f"checkpoint '{path}' does not match the architecture its keys describe: "
            + "; ".join(parts)
        )
    for key, (shape, is_float) in entries.items():
        value = state[key]
        if tuple(value.shape) != shape:
            raise CheckpointError(
                f"checkpoint '{path}': '{key}' has shape {tuple(value.shape)}; "
                f"expected {shape} for this architecture"
            )
        if value.is_floating_point() != is_float:
            raise CheckpointError(
                f"checkpoint '{path}': '{key}' has dtype {value.dtype}; expected a "
                + ("floating-point tensor" if is_float else "tensor of integers")
            )


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:n])
    return shown + (", ..." if len(keys) > n else "")
