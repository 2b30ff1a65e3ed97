"""What every compression method provides, and the one value type ranks are parsed into.

Two kinds of method (:mod:`tcompress.methods`):

- :class:`TensorMethod`: a T-Net; the stacked kernels W (grid modes..., f_in, f_out, h, w) become
  one low-rank tensor, a :class:`SharedTensor` whose parameters are the only copy of the kernels;
- :class:`LayerMethod`: every kernel K (f_out, f_in, h, w) of the family replaced by a small chain
  of plain convolutions of its own.

Ranks cross into the library once, as a :class:`RankSpec` (:meth:`RankSpec.parse` takes the
command line's strings and Python's sequences and dicts alike); each method then checks a spec
against the tensor it is meant for (:meth:`Method.resolve`) and says what it capped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from tcompress.errors import MethodError, RankError, TcompressError, param
from tcompress.methods.selection import GroupChoice, RankChoice, allocate, allocate_groups

_FULL = ("full", "-")


class Bad:
    """An entry of a rank list that is not a whole number (kept to be named in the error)."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True)
class RankSpec:
    """Ranks as the user gave them, parsed once.

    ``values``: positional entries; ``named``: (mode name, entry) pairs; neither: full ranks. An
    entry is an ``int``, ``None`` (``full`` or ``-``: keep or let choose) or a :class:`Bad` value.
    ``shown`` is the spec as given, for messages.
    """

    values: tuple = ()
    named: tuple[tuple[str, object], ...] | None = None
    shown: str = "'full'"

    @property
    def full(self) -> bool:
        return not self.values and self.named is None

    @classmethod
    def parse(cls, ranks) -> RankSpec:
        """``None``, ``"full"``, ``"4,4,-,2"``, ``"f_in=64,f_out=64"``, ``256``, a sequence
        (``None`` keeps a mode) or a dict of named modes."""
        if isinstance(ranks, RankSpec):
            return ranks
        shown = _show(ranks)
        if ranks is None or (isinstance(ranks, str) and ranks.strip().lower() in ("", *_FULL)):
            return cls(shown=shown)
        if isinstance(ranks, str) and "=" in ranks:
            ranks = _named(ranks)
        if isinstance(ranks, Mapping):
            return cls(named=tuple((str(k), _entry(v)) for k, v in ranks.items()), shown=shown)
        if isinstance(ranks, str):
            items = [s.strip() for s in ranks.split(",")]
        elif isinstance(ranks, int | float):
            items = [ranks]
        else:
            try:
                items = list(ranks)
            except TypeError:
                raise RankError(
                    f"ranks {ranks!r} are neither a list of integers nor a string"
                ) from None
        return cls(values=tuple(_entry(v) for v in items), shown=shown)

    def by_mode(self, names: Sequence[str]) -> list:
        """The entries in mode order: named ones placed by name (the others ``None``)."""
        if self.named is None:
            return list(self.values)
        given = dict(self.named)
        unknown = [k for k in given if k not in names]
        if unknown:
            raise RankError(
                f"ranks name unknown mode(s) {', '.join(map(repr, unknown))}; "
                f"expected mode names from {', '.join(names)}"
            )
        return [given.get(name) for name in names]


@dataclass(frozen=True)
class GroupRanks:
    """Ranks for a family of one tensor per group (:class:`~tcompress.family.KernelGroups`),
    parsed once: ``plain`` (a :class:`RankSpec`) applies to every group where it fits,
    ``named`` gives (group name, spec) pairs, each for its group alone. ``shown`` is the spec as
    given, for messages.

    The forms (:meth:`parse`): anything :meth:`RankSpec.parse` takes (``full``,
    ``"f_in=64,f_out=64"``, ...: the plain spec); a string of ``;``-separated parts, each
    ``GROUP:RANKS`` or (at most one) plain ``RANKS``, e.g.
    ``"layer1:f_in=32;layer3:f_in=128,f_out=128"``; or a dict group name -> ranks whose values
    are dicts, sequences, :class:`RankSpec` or strings holding ``=`` or ``,`` (a dict of plain
    values names modes, as :meth:`RankSpec.parse` reads it).
    """

    plain: RankSpec = RankSpec()
    named: tuple[tuple[str, RankSpec], ...] = ()
    shown: str = "'full'"

    @property
    def full(self) -> bool:
        return self.plain.full and all(spec.full for _, spec in self.named)

    @classmethod
    def parse(cls, ranks) -> GroupRanks:
        if isinstance(ranks, GroupRanks):
            return ranks
        if isinstance(ranks, str) and (";" in ranks or ":" in ranks):
            return cls._parse_text(ranks)
        if isinstance(ranks, Mapping) and any(_is_group_value(v) for v in ranks.values()):
            named = []
            for name, value in ranks.items():
                named.append((str(name).strip(), RankSpec.parse(value)))
            return cls(RankSpec(), cls._unique(named, _show(ranks)), _show(ranks))
        spec = RankSpec.parse(ranks)
        return cls(spec, (), spec.shown)

    @classmethod
    def _parse_text(cls, text: str) -> GroupRanks:
        plain, named = None, []
        for part in (p.strip() for p in text.split(";")):
            if not part:
                continue
            if ":" not in part:
                if plain is not None:
                    raise RankError(
                        f"ranks {text!r} have two parts without a group ({plain.shown}, "
                        f"{part!r}); expected at most one, the others as GROUP:RANKS"
                    )
                plain = RankSpec.parse(part)
                continue
            name, spec = (s.strip() for s in part.split(":", 1))
            if not name:
                raise RankError(
                    f"ranks {text!r} have a part {part!r} without its group's name; expected "
                    "GROUP:RANKS, e.g. 'layer2:f_in=64,f_out=64'"
                )
            named.append((name, RankSpec.parse(spec)))
        return cls(plain or RankSpec(), cls._unique(named, repr(text)), repr(text))

    @staticmethod
    def _unique(named: list, shown: str) -> tuple:
        names = [name for name, _ in named]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise RankError(
                f"ranks {shown} give group {twice[0]!r} twice; expected each group once"
            )
        return tuple(named)

    def for_groups(
        self, groups: Sequence[str], fits: Callable[[int, RankSpec], object]
    ) -> tuple[list[RankSpec], list[str]]:
        """The spec of each group of ``groups`` (names, in order) and notes.

        A group named in ``named`` takes its own spec; the others take ``plain``, with one group
        as it is (the method's errors are its errors), with several only where ``fits(g, plain)``
        returns (raises no :class:`~tcompress.errors.TcompressError`; a note says where it did
        not, and that group keeps full or chosen ranks). ``plain`` that fits none of the groups
        it applies to, or a group name not in ``groups``, is a RankError."""
        given = dict(self.named)
        unknown = [name for name in given if name not in groups]
        if unknown:
            raise RankError(
                f"ranks {self.shown} name group {unknown[0]!r}, which the family has not; "
                f"expected one of {', '.join(groups)}"
            )
        specs, notes, misfits = [], [], []
        rest = [g for g, name in enumerate(groups) if name not in given]
        for g, name in enumerate(groups):
            spec = given.get(name, self.plain)
            if name not in given and not spec.full and len(groups) > 1:
                try:
                    fits(g, spec)
                except TcompressError as e:
                    misfits.append(f"{name}: {e}")
                    notes.append(f"ranks {spec.shown} do not fit group {name} ({e}); not applied")
                    spec = RankSpec()
            specs.append(spec)
        if rest and len(misfits) == len(rest) and len(groups) > 1 and not self.plain.full:
            raise RankError(
                f"ranks {self.plain.shown} fit none of the groups they apply to "
                f"({'; '.join(misfits)}); expected ranks that fit at least one, or GROUP:RANKS"
            )
        return specs, notes


def _is_group_value(value) -> bool:
    """A dict value that is a group's ranks rather than one named mode's rank."""
    if isinstance(value, str):
        return "=" in value or "," in value
    return isinstance(value, Mapping | RankSpec | list | tuple)


def _named(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise RankError(
                f"ranks {text!r} mix named and positional values; use either "
                "'f_in=64,f_out=64' or one value per mode"
            )
        key, value = (s.strip() for s in part.split("=", 1))
        out[key] = value
    return out


def _entry(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return Bad(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _FULL:
            return None
        try:
            return int(text)
        except ValueError:
            return Bad(text)
    if isinstance(value, float):
        return int(value) if value.is_integer() else Bad(value)
    if isinstance(value, int):
        return value
    return Bad(value)


def _show(ranks) -> str:
    if isinstance(ranks, str):
        return repr(ranks)
    if isinstance(ranks, Mapping):
        return ",".join(f"{k}={v}" for k, v in ranks.items())
    try:
        return ",".join(str(v) for v in ranks)
    except TypeError:
        return repr(ranks)


def check_rank(entry, what: str, size: int, *, cap: bool = False, limit: str = "mode size") -> int:
    """One rank: an integer in [1, size] (or >= 1 when ``cap``); ``None`` gives ``size``."""
    allowed = "at least 1" if cap else f"from 1 to {size}"
    if entry is None:
        return size
    if isinstance(entry, Bad):
        tail = ", 'full' or '-'" if isinstance(entry.value, str) else ""
        raise RankError(f"{what} is {entry!r}; expected an integer {allowed}{tail}")
    if entry < 1 or (not cap and entry > size):
        raise RankError(
            f"{what} is {entry}; expected an integer {allowed}"
            + ("" if cap else f" ({limit} {size})")
        )
    return entry


@dataclass(frozen=True)
class ResolvedRanks:
    """Validated ranks of one method for one tensor shape; ``notes`` says what was capped."""

    method: str
    ranks: tuple[int, ...]
    notes: tuple[str, ...] = field(default=())


@dataclass
class Decomposition:
    """A T-Net method's result on W: the shared tensor, the relative error after each sweep (or
    the one error) and the final relative error ||W - W_hat|| / ||W||."""

    tensor: nn.Module
    errors: list[float]
    relative_error: float


class Method:
    """What both kinds share: a name, a rank grammar, a parameter count and a description."""

    name: str = ""
    kind: str = ""
    #: How the summary and ``tcompress info`` name the method ("Tucker", "MPS (tensor train)").
    title: str = ""
    #: What ``refine`` counts ("HOOI sweeps"), or None where it does not apply.
    sweeps: str | None = None
    #: Why ``refine`` does not apply, when ``sweeps`` is None.
    no_sweeps: str = "it has no iterative refinement"
    #: A layer-wise method whose ``layer_spectra`` bound each layer's error, so that every layer
    #: can take ranks of its own (``convert(per_layer=True)``).
    per_layer_bound: bool = False

    @property
    def rank_help(self) -> str:
        """The rank grammar in words, as registered (:data:`tcompress.methods.REGISTRY`)."""
        from tcompress.methods import REGISTRY

        return REGISTRY[self.name].ranks

    def resolve(self, spec: RankSpec, shape: Sequence[int], names: Sequence[str]) -> ResolvedRanks:
        raise NotImplementedError

    def params(self, shape: Sequence[int], ranks: Sequence[int]) -> int:
        raise NotImplementedError

    def check_refine(self, refine) -> int:
        if not isinstance(refine, int) or isinstance(refine, bool) or refine < 0:
            raise TcompressError(f"refine is {refine!r}; expected a whole number of sweeps >= 0")
        if refine and self.sweeps is None:
            raise TcompressError(
                f"{param('refine', refine)} does not apply to {self.name} ({self.no_sweeps}); "
                "expected 0"
            )
        return refine

    def initialisation(self, summary: Mapping) -> str:
        """How the factors were found, for the conversion summary ("HOSVD + 2 HOOI sweep(s)")."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.kind} method {self.name!r}>"


class TensorMethod(Method):
    """A T-Net method. Subclasses set :attr:`tensor_type` and implement the rank grammar,
    :meth:`params`, :meth:`decompose` and :meth:`empty`; those with an error bound on W give
    :meth:`spectra`, :meth:`limits` and (where ranks constrain each other) :meth:`cap`, and
    :meth:`choose` allocates on the bound. :meth:`random` (and :meth:`uniform_ranks` where the
    limits do not say it) start a T-Net trained from scratch."""

    kind = "tnet"
    tensor_type: type[nn.Module]
    #: Whether the bound tables show one rank per mode (Tucker) rather than bonds between modes.
    per_mode: bool = False
    #: Whether the summary lists the ranks as bonds between neighbouring modes.
    bonds: bool = False
    #: Whether the greedy allocation may enumerate the small modes when its steps are too coarse.
    enumerate_small_modes: bool = False
    #: Whether ranks given with a target stay fixed while the others are chosen (else the
    #: method's choice refuses ranks given with a target).
    fixes_ranks: bool = True
    #: Whether :meth:`decompose` takes ``grams``, the Grams of mode unfoldings of W that the
    #: caller has (``{mode: W_(k) W_(k)^T}``).
    takes_grams: bool = False

    # -- ranks ------------------------------------------------------------------------------
    def limits(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The largest value of every rank."""
        raise NotImplementedError

    def cap(self, ranks: Sequence[int], shape: Sequence[int]) -> list[int]:
        """Ranks the decomposition can realise from ``ranks`` (default: as they are)."""
        return list(ranks)

    def fixed(self, spec: RankSpec, shape: Sequence[int], names: Sequence[str]) -> list:
        """The ranks a user fixed when the others are to be chosen: one entry per rank, ``None``
        where it is free."""
        limits = self.limits(shape)
        if spec.full:
            return [None] * len(limits)
        values = self.fixed_entries(spec, names)
        if len(values) != len(limits):
            raise RankError(
                f"got {len(values)} rank(s) ({spec.shown}); expected {len(limits)} for "
                f"{self.name}, with 'full' or '-' where the rank is to be chosen"
            )
        return [
            None if v is None else check_rank(v, self.rank_name(k, names), limit)
            for k, (v, limit) in enumerate(zip(values, limits))
        ]

    def fixed_entries(self, spec: RankSpec, names: Sequence[str]) -> list:
        if spec.named is not None:
            raise RankError(f"{self.title} ranks cannot be named; named modes apply to Tucker only")
        return list(spec.values)

    def rank_name(self, k: int, names: Sequence[str]) -> str:
        return f"rank {k + 1}"

    def spectra(self, W: torch.Tensor) -> list[torch.Tensor] | None:
        """The squared singular values the error bound is made of (None: no bound)."""
        return None

    def choose(
        self,
        W: torch.Tensor,
        spec: RankSpec,
        names: Sequence[str],
        *,
        ratio: float | None,
        energy: float | None,
        other_params: int,
        costs: Sequence[Sequence[float]] | None = None,
    ) -> RankChoice:
        """Ranks for a whole-network ``ratio`` or an ``energy`` fraction of ||W||^2 kept, greedily
        on the method's error bound (:mod:`tcompress.methods.selection`), or on measured
        truncation costs (``costs``, from :meth:`data_costs`)."""
        shape = tuple(W.shape)
        fixed = self.fixed(spec, shape, names)
        with torch.no_grad():
            spectra = self.spectra(W) if costs is None else None
        return allocate(
            self,
            shape,
            spectra,
            ratio=ratio,
            energy=energy,
            fixed=fixed,
            other_params=other_params,
            costs=costs,
        )

    def choose_groups(
        self,
        Ws: Sequence[torch.Tensor],
        specs: Sequence[RankSpec],
        names: Sequence[Sequence[str]],
        *,
        ratio: float | None,
        energy: float | None,
        other_params: int,
        costs: Sequence[Sequence[Sequence[float]]] | None = None,
    ) -> GroupChoice:
        """Ranks for several tensors (one per group, ``specs`` and mode ``names`` for each) under
        one whole-network target, greedily on the sum of their error bounds
        (:func:`~tcompress.methods.selection.allocate_groups`), or of their measured truncation
        costs (``costs``, one :meth:`data_costs` per group); ranks a spec fixes stay.

        Each group's bound is weighted by its kernels over its ``||W_g||^2`` (``kernel_weights``):
        the sum is then the kernels' squared relative errors added up (each kernel at its group's
        mean norm), which a BatchNorm after each convolution makes the error that matters, and
        not one group's absolute scale (wide layers start with small weights). An ``energy``
        target is the fraction of that weighted sum kept. With one group the weight is a
        constant and the allocation that of :meth:`choose`.

        With ``costs``, each group's (a fraction of its layers' normalised output energy) is
        weighted by its layers: the sum is then the layers' relative output errors added up, each
        layer at its group's mean output energy, the measured counterpart of the bound's
        weighting."""
        shapes = [tuple(W.shape) for W in Ws]
        fixed = [self.fixed(spec, shape, n) for spec, shape, n in zip(specs, shapes, names)]
        with torch.no_grad():
            if costs is None:
                spectra = [self.spectra(W) for W in Ws]
                weights = kernel_weights(Ws)
            else:
                spectra = [None] * len(Ws)
                weights = [float(layer_count(W)) for W in Ws]
        return allocate_groups(
            self,
            shapes,
            spectra,
            ratio=ratio,
            energy=energy,
            fixed=fixed,
            other_params=other_params,
            costs=costs,
            weights=weights,
        )

    def data_costs(self, W: torch.Tensor, stats) -> list[list[float]] | None:
        """Measured truncation costs for :func:`~tcompress.methods.selection.allocate`
        (``costs``) from :class:`~tcompress.passes.data_aware.BlockStatistics`; None: this
        method allocates on its bound even with data."""
        return None

    # -- the tensor ------------------------------------------------------------------------
    def decompose(
        self, W: torch.Tensor, ranks: Sequence[int], *, n_iter: int, seed: int
    ) -> Decomposition:
        raise NotImplementedError

    def balance(self, tensor: nn.Module) -> bool:
        """Rescale a converted ``tensor``'s parameters in place for fine-tuning, W unchanged;
        whether anything was rescaled (nothing by default). A decomposition leaves its scale
        where its algorithm puts it; RMSprop and Adam move every parameter by about the
        learning rate a step whatever its size, so where the scale sits sets how fast
        fine-tuning moves W."""
        return False

    def empty(self, shape: Sequence[int], ranks: Sequence[int]) -> nn.Module:
        """The shared tensor with uninitialised parameters (built under ``torch.device('meta')``
        by the caller), for ``load_state_dict(assign=True)``."""
        raise NotImplementedError

    def random(
        self,
        shape: Sequence[int],
        ranks: Sequence[int],
        *,
        std: float,
        n_grid: int,
        generator: torch.Generator,
    ) -> nn.Module:
        """The shared tensor of a T-Net trained from scratch: random factors of ``ranks`` whose
        rebuilt W has zero-mean entries of standard deviation ``std``, spread so that every
        block kernel (the slice at one index of the first ``n_grid`` modes) is about as large
        as any other. Drawn from ``generator`` alone (:mod:`tcompress.scratch`)."""
        raise MethodError(
            f"{self.name} has no random initialisation; a T-Net trained from scratch takes one "
            "of the T-Net methods that have one"
        )

    def uniform_ranks(self, r: int, shape: Sequence[int]) -> tuple[int, ...]:
        """Every rank at ``r`` or below: its limit where that is lower (:meth:`limits`, then
        :meth:`cap`). A T-Net trained from scratch for a ratio takes the largest ``r`` whose
        network meets it: with no trained W there is no error bound to allocate on."""
        limits = self.limits(shape)
        return tuple(self.cap([min(r, limit) for limit in limits], shape))

    def initialisation(self, summary: Mapping) -> str:
        """How the factors were found, for the summary: the decomposition a conversion started
        them with (:meth:`fitted_by`), or the random start of a T-Net trained from scratch (its
        summary's ``scratch``)."""
        scratch = summary.get("scratch")
        if scratch:
            return (
                f"random factors, seed {scratch['seed']} (block kernels of std "
                f"{scratch['kernel_std']:.3g}, as nn.Conv2d's default initialisation draws them): "
                "trained from scratch, no source checkpoint"
            )
        return self.fitted_by(summary)

    def fitted_by(self, summary: Mapping) -> str:
        """The decomposition a conversion started the factors with ("HOSVD + 2 HOOI sweep(s)")."""
        return self.title

    def error_detail(self, summary: Mapping) -> str:
        """What follows the relative error in the summary (" (HOSVD .. -> after HOOI ..)")."""
        if summary.get("scratch"):
            return " (trained from scratch: there is no source W to compare with)"
        return ""


class LayerMethod(Method):
    """A layer-wise method: one decomposition per kernel K (f_out, f_in, h, w), each run as a
    chain of plain convolutions (an ``nn.Sequential``)."""

    kind = "layerwise"
    #: The per-layer rank names, for the summary ("R_in,R_out[,R_h,R_w]").
    rank_names: str = ""

    def layer_spectra(self, kernel: torch.Tensor) -> list[torch.Tensor] | None:
        """One spectrum per rank of a layer (squared singular values, descending, float64),
        whose tail beyond a rank bounds what keeping that rank loses of ``||K||^2``: the bound
        per-layer ranks are allocated on. None: the method has no such bound (CP)."""
        return None

    def truncations(self, kernel: torch.Tensor) -> list:
        """One function per rank of a layer: ``f(r)``, the kernel (f_out, f_in, h, w) the
        decomposition keeps with that rank at ``r`` and the others full, for the costs of
        per-layer ranks measured on data. Only where :attr:`per_layer_bound`."""
        raise NotImplementedError

    def candidates(self, kernel_shape: Sequence[int]) -> list[tuple[int, ...]]:
        """The per-layer ranks a ratio target chooses among, smallest model first."""
        raise NotImplementedError

    def skeleton(
        self, ranks: Sequence[int], conv: nn.Conv2d, *, device=None, dtype=None
    ) -> nn.Sequential:
        """The chain that replaces ``conv`` (uninitialised weights)."""
        raise NotImplementedError

    def kernel(self, layers: nn.Sequential) -> torch.Tensor:
        """The dense kernel (f_out, f_in, h, w) a chain computes (differentiable)."""
        raise NotImplementedError

    def geometry(self, layers: nn.Sequential):
        """Stride, padding and dilation of the convolution the chain replaced."""
        raise NotImplementedError

    def weights(
        self, kernel: torch.Tensor, ranks: Sequence[int], *, n_iter: int, seed: int
    ) -> list[torch.Tensor]:
        """The chain's weights for ``kernel``, in the order of its parameters (bias excluded)."""
        raise NotImplementedError

    def initialisation(self, summary: Mapping) -> str:
        return self.title


class SharedTensor(nn.Module):
    """A T-Net's low-rank tensor W (grid modes..., f_in, f_out, h, w). Subclasses give
    :attr:`method`, :attr:`shape`, :attr:`ranks`, :meth:`full` and :meth:`factorized_weights`.

    The weights of a forward pass are (1x1 before, kernel, 1x1 after) as functions of a layer's
    grid index; a weight every layer shares is the same tensor for every index.
    """

    method: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def ranks(self) -> tuple[int, ...]:
        raise NotImplementedError

    def full(self) -> torch.Tensor:
        raise NotImplementedError

    def reconstructed_weights(self, n_grid: int) -> tuple[Callable, Callable, Callable]:
        """No 1x1s; the kernel is the layer's slice of W, laid out as a Conv2d kernel."""
        kernels = self.full().transpose(n_grid, n_grid + 1).contiguous()
        return none, per_layer(kernels, n_grid), none

    def factorized_weights(self, n_grid: int) -> tuple[Callable, Callable, Callable]:
        raise NotImplementedError


class CoreTensor(SharedTensor):
    """A shared tensor made of order-3 cores G_k (R_{k-1}, D_k, R_k), one per mode (a train or a
    ring)."""

    def __init__(self, cores: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.cores = nn.ParameterList(nn.Parameter(g) for g in cores)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(g.shape[1] for g in self.cores)


class FactorTensor(SharedTensor):
    """A shared tensor with one factor matrix U_k (D_k, R_k) per mode and a core (Tucker) or
    weights (CP) named by ``kernel_name``."""

    kernel_name = "core"

    def __init__(self, kernel: torch.Tensor, factors: Sequence[torch.Tensor]) -> None:
        super().__init__()
        setattr(self, self.kernel_name, nn.Parameter(kernel))
        self.factors = nn.ParameterList(nn.Parameter(u) for u in factors)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(u.shape[0] for u in self.factors)


def per_layer(stacked: torch.Tensor, n_grid: int) -> Callable[[tuple[int, ...]], torch.Tensor]:
    """Index -> that layer's slice of ``stacked`` (grid modes first).

    The slices come from one ``unbind``, whose backward stacks the layers' gradients once;
    indexing each layer separately would make every backward step allocate a gradient the size
    of the whole tensor.
    """
    grid = stacked.shape[:n_grid]
    slices = stacked.reshape(-1, *stacked.shape[n_grid:]).unbind(0)

    def at(index: tuple[int, ...]) -> torch.Tensor:
        flat = 0
        for i, size in zip(index, grid):
            flat = flat * size + i
        return slices[flat]

    return at


def none(index: tuple[int, ...]) -> None:
    return None


def constant(weight) -> Callable[[tuple[int, ...]], object]:
    return lambda index: weight


def mode_dot(x: torch.Tensor, u: torch.Tensor, mode: int) -> torch.Tensor:
    """x x_mode u: replace mode ``mode`` of size R by size D, with u of shape (D, R)."""
    return torch.movedim(torch.tensordot(x, u, dims=([mode], [1])), -1, mode)


def chain(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Contract consecutive cores (R_a, D, R_b): (R_a, D_a, ..., D_b, R_b)."""
    x = cores[0]
    for g in cores[1:]:
        x = torch.tensordot(x, g, dims=([-1], [0]))
    return x


def kernel_weights(Ws: Sequence[torch.Tensor]) -> list[float]:
    """Each tensor's kernels (the product of its grid modes, all but the last four) over its
    ``||W||^2``: the weight that turns its squared error into its kernels' squared relative
    errors added up (:meth:`TensorMethod.choose_groups`)."""
    weights = []
    for W in Ws:
        kernels = layer_count(W)
        energy = float(W.double().square().sum())
        weights.append(kernels / energy if energy > 0 else 1.0)
    return weights


def layer_count(W: torch.Tensor) -> int:
    """The kernels a stacked tensor holds: the product of its grid modes (all but the last
    four, f_in, f_out, h, w)."""
    return math.prod(W.shape[: W.dim() - 4])


def whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def prod(values) -> int:
    return math.prod(values)
