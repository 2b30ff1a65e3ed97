"""Building blocks the layer-wise methods share: convolutions with part of another's geometry,
and the one-rank grammar of CP and Tai."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

from torch import nn

from tcompress.errors import RankError
from tcompress.methods.base import LayerMethod, RankSpec, ResolvedRanks, check_rank


def conv(
    c_in: int,
    c_out: int,
    size: Sequence[int],
    geometry=None,
    *,
    axis: int | None = None,
    groups: int = 1,
    bias: bool = False,
    device=None,
    dtype=None,
) -> nn.Conv2d:
    """A convolution with the stride, padding and dilation of ``geometry`` (none when it is
    ``None``); with ``axis`` 0 or 1, only those along the height or the width."""

    def along(value):
        if geometry is None:
            return 1 if value != "padding" else 0
        v = getattr(geometry, value)
        if axis is None or isinstance(v, str):  # padding "same" / "valid" applies per axis
            return v
        neutral = 0 if value == "padding" else 1
        return (v[0], neutral) if axis == 0 else (neutral, v[1])

    return nn.Conv2d(
        c_in,
        c_out,
        tuple(size),
        stride=along("stride"),
        padding=along("padding"),
        dilation=along("dilation"),
        groups=groups,
        bias=bias,
        device=device,
        dtype=dtype,
    )


def joined_geometry(vertical: nn.Conv2d, horizontal: nn.Conv2d) -> SimpleNamespace:
    """The geometry of the h x w convolution split into a vertical and a horizontal one: the
    vertical one's along the height, the horizontal one's along the width."""

    def joined(value):
        v, h = getattr(vertical, value), getattr(horizontal, value)
        return v if isinstance(v, str) else (v[0], h[1])

    return SimpleNamespace(**{k: joined(k) for k in ("stride", "padding", "dilation")})


class OneRankMethod(LayerMethod):
    """A layer-wise method with one rank per layer (CP's R, Tai's K): ``full`` is the
    :meth:`exact` rank; above it, a rank is capped with a note (``caps``) or refused."""

    #: How messages name the rank ("layerwise-cp rank R") and what a spec must hold.
    rank_what: str = ""
    rank_expected: str = ""
    caps: bool = False

    def exact(self, shape: Sequence[int]) -> int:
        """The rank that represents every kernel of ``shape`` exactly."""
        raise NotImplementedError

    def resolve(self, spec: RankSpec, shape, names=()) -> ResolvedRanks:
        exact = self.exact(shape)
        if spec.named is not None:
            raise RankError(
                f"ranks {spec.shown} name modes; layer-wise method {self.name!r} takes "
                f"{self.rank_expected}"
            )
        if spec.full:
            return ResolvedRanks(self.name, (exact,))
        if len(spec.values) != 1:
            raise RankError(
                f"got {len(spec.values)} rank(s) ({spec.shown}) for {self.name}; expected "
                f"{self.rank_expected}"
            )
        if not self.caps:
            rank = check_rank(spec.values[0], self.rank_what, exact, limit="exact rank")
            return ResolvedRanks(self.name, (rank,))
        rank = check_rank(spec.values[0], self.rank_what, exact, cap=True)
        if rank > exact:
            note = (
                f"{self.rank_what} {rank} capped at {exact}, the rank that represents every "
                "kernel exactly"
            )
            return ResolvedRanks(self.name, (exact,), (note,))
        return ResolvedRanks(self.name, (rank,))

    def candidates(self, shape) -> list[tuple[int, ...]]:
        return [(r,) for r in range(1, self.exact(shape) + 1)]
