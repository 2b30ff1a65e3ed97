"""Checkpoint layouts: recognise the architecture from a state_dict's keys and shapes, build it.

The user passes no configuration: the number of stacks, levels, convolutions per block, width,
joints and input channels are all read off the keys and shapes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from tcompress.errors import CheckpointError
from tcompress.models import HourglassConfig, StackedHourglass

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


@functools.lru_cache(maxsize=16)
def state_spec(config: HourglassConfig) -> StateSpec:
    """The dense hourglass's :class:`StateSpec`, built once per configuration."""
    return StateSpec.of(skeleton(config))


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


def skeleton(config: HourglassConfig) -> StackedHourglass:
    """The architecture without storage (meta device): no time spent on random initialisation."""
    with torch.device("meta"):
        return StackedHourglass(**config.to_dict())


def dense_from_state(state: Mapping[str, torch.Tensor], path: str) -> StackedHourglass:
    """Build the dense hourglass a state_dict describes and load it strictly."""
    config = infer_hourglass_config(state, path)
    check_state_matches(state_spec(config), state, path)
    model = skeleton(config)
    model.load_state_dict(dict(state), strict=True, assign=True)
    return model


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:n])
    return shown + (", ..." if len(keys) > n else "")
