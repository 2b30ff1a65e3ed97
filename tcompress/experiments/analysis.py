"""Where the redundancy of W lies: the spectrum of every mode, and one mode compressed at a time.

The sweep is the paper's Table 2 in miniature: every mode of W is truncated alone (Tucker, the
other modes at full rank) to each rank in a list, and the whole-network compression ratio and the
relative reconstruction error are reported. Truncating a single mode of a HOSVD is the orthogonal
projection on that mode's leading singular vectors, so the error is exactly
``sqrt(sum_{i > R} s_i^2) / ||W||``, read off the mode's spectrum without decomposing anything.
With data, every point is also converted and evaluated (PCKh before any fine-tuning).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from tcompress.errors import TcompressError, param
from tcompress.family import KernelFamily
from tcompress.layouts import CUSTOM
from tcompress.methods.tucker import tucker_params

__all__ = ["Analysis", "SweepPoint", "analyze", "plot_analysis", "sweep_ranks"]


@dataclass
class SweepPoint:
    mode: str
    rank: int
    ranks: list[int]
    params_after: int
    compression_ratio: float
    relative_error: float
    pckh: float | None = None
    group: str | None = None  # the tensor whose mode is truncated, when there are several


@dataclass
class Analysis:
    """Spectra and sweep of W. ``config`` is the architecture's configuration (a network built
    by the user's factory: its ``factory`` and ``pattern``); ``mode_values`` the values of the
    grid modes of a family read off module names (empty for the hourglass layouts). With several
    tensors (one per group of same-shape kernels), ``groups`` holds one entry per tensor (name,
    members, modes, sizes, values, entries, energy), every sweep point names its ``group``, and
    the fields of the modes are the first tensor's."""

    config: dict
    mode_names: list[str]
    mode_sizes: list[int]
    params_before: int
    tensor_params: int
    energy: dict[str, list[float]]  # mode -> fraction of ||W||^2 kept at rank 1, 2, ..., D
    sweep: list[SweepPoint] = field(default_factory=list)
    original_pckh: float | None = None
    architecture: str = "StackedHourglass"
    mode_values: list[list[str]] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def sweep_ranks(size: int, points: int = 8) -> list[int]:
    """Every rank below ``size`` for a small mode; about ``points`` evenly spaced ones (and 1)
    for a large one."""
    if size <= points + 1:
        return list(range(1, size))
    step = size / points
    return sorted({1, *(max(1, round(step * i)) for i in range(1, points))} - {size})


def analyze(
    model: str | os.PathLike | nn.Module,
    *,
    arch: str | None = None,
    family: str | None = None,
    data: str | None = None,
    val_samples: int = 200,
    image_size: int = 256,
    points: int = 8,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Analysis:
    """Spectra and a one-mode-at-a-time Tucker sweep of a dense network's W.

    Parameters
    ----------
    model
        A dense hourglass of a known layout or its checkpoint; with ``arch`` and ``family``, any
        network's checkpoint, state_dict or module (read as :func:`tcompress.convert` reads it).
    arch, family
        ``"MODULE:FACTORY"`` and the pattern over module names that selects the stacked
        convolutions (:func:`tcompress.family.pattern_family`), as for :func:`tcompress.convert`.
    data
        Labelled pose data (``"synthetic"`` or a path): also evaluate PCKh@0.5 of the original
        and of every sweep point, converted and not fine-tuned, on ``val_samples`` validation
        samples. Not with ``arch``: PCKh scores the hourglasses' heatmaps.
    points
        About how many ranks of a large mode are swept (small modes: every rank).
    """
    from tcompress.conversion import convert
    from tcompress.decompose.spectra import mode_spectra
    from tcompress.source import read_source

    if data is not None and arch is not None:
        raise TcompressError(
            f"{param('data', data)} scores every sweep point by PCKh@0.5 on pose heatmaps, and "
            f"the network of {param('arch', arch)} is your own (its task unknown to tcompress); "
            f"analyze it without {param('data')}: the spectra and the sweep need no images"
        )
    say = progress or (lambda message: None)
    say("Reading the checkpoint")
    src = read_source(model, arch=arch, family=family)
    architecture = src.architecture
    if architecture["name"] == CUSTOM:
        config = {"factory": architecture["factory"], "pattern": architecture["pattern"]}
    else:
        config = dict(architecture["config"])
    params_before = src.params_before
    tensors = []
    for name, kernels in _families(src):
        with torch.no_grad():
            W = kernels.stack(src.state)
        say("Computing the spectrum of every mode" + (f" of {name}" if name else ""))
        tensors.append((name, kernels, W, mode_spectra(W)))
    _, first, W, _ = tensors[0]
    energies = [_energy(kernels.all_mode_names, spectra) for _, kernels, _, spectra in tensors]
    result = Analysis(
        config,
        list(first.all_mode_names),
        list(W.shape),
        params_before,
        W.numel(),
        energies[0],
        architecture=architecture["name"],
        mode_values=[list(v) for v in first.mode_values],
    )
    if len(tensors) > 1:
        result.groups = [
            {
                "name": name,
                "members": len(kernels.members),
                "mode_names": list(kernels.all_mode_names),
                "mode_sizes": list(W.shape),
                "mode_values": [list(v) for v in kernels.mode_values],
                "tensor_params": W.numel(),
                "energy": energy,
            }
            for (name, kernels, W, _), energy in zip(tensors, energies)
        ]
    val = None
    if data is not None:
        from tcompress.data import make_dataset

        say("Evaluating the original")
        val = make_dataset(data, "val", image_size, image_size // 4, n=val_samples, seed=seed)
        dense = model if isinstance(model, nn.Module) else src.module()
        result.original_pckh = _pckh(dense.eval(), val)
    for name, kernels, W, spectra in tensors:
        shape = list(W.shape)
        other = params_before - W.numel()
        total = float(spectra[0].sum()) or 1.0
        for k, mode in enumerate(kernels.all_mode_names):
            for rank in sweep_ranks(shape[k], points):
                ranks = list(shape)
                ranks[k] = rank
                after = tucker_params(shape, ranks) + other
                error = math.sqrt(max(float(spectra[k][rank:].sum()), 0.0) / total)
                point = SweepPoint(mode, rank, ranks, after, params_before / after, error)
                point.group = name if len(tensors) > 1 else None
                if val is not None:
                    say(f"Evaluating {mode} at rank {rank}")
                    tnet = convert(src.state, method="tucker", ranks=ranks).eval()  # read once
                    point.pckh = _pckh(tnet, val)
                result.sweep.append(point)
    return result


def _families(src) -> list[tuple[str, KernelFamily]]:
    """The tensors of ``src``: (group name, kernel family) each, one per group of same-shape
    kernels (:attr:`~tcompress.family.KernelFamily.groups`)."""
    return [(group.group_name, group) for group in src.family.groups]


def _energy(mode_names, spectra) -> dict[str, list[float]]:
    """Mode -> the fraction of ||W||^2 kept at rank 1, 2, ..., D."""
    total = float(spectra[0].sum()) or 1.0
    return {
        name: [float(v) for v in (s.cumsum(0) / total).clamp(max=1.0)]
        for name, s in zip(mode_names, spectra)
    }


def _pckh(model: nn.Module, data) -> float | None:
    """PCKh@0.5 of ``model`` on ``data`` in percent; None where no joint is visible."""
    from tcompress.evaluation.run import pckh_of

    return pckh_of(model, data).result().to_dict()["mean"]


def plot_analysis(analysis: Analysis, path: str | os.PathLike, *, force: bool = True) -> None:
    """Two panels: energy kept against rank / mode size for every mode, and relative error
    against whole-network compression for every mode truncated alone, written to ``path`` as PNG
    (atomically; ``force=False`` refuses an existing file). Needs matplotlib."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    tensors = [(g["name"], g["mode_names"], g["energy"]) for g in analysis.groups] or [
        (None, analysis.mode_names, analysis.energy)
    ]
    for group, names, energy in tensors:
        prefix = f"{group}: " if group else ""
        for name in names:
            curve = energy[name]
            size = len(curve)
            x = [(r + 1) / size for r in range(size)]
            marker = "o" if size <= 8 else None
            left.plot(x, curve, marker=marker, ms=3, label=f"{prefix}{name} ({size})")
    left.set_xlabel("rank / mode size")
    left.set_ylabel("fraction of ||W||² kept")
    left.set_title("Spectrum of every mode")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    for group, names, _ in tensors:
        for name in names:
            points = [p for p in analysis.sweep if p.mode == name and p.group == group]
            if points:
                xs = [p.compression_ratio for p in points]
                label = f"{group}: {name}" if group else name
                right.plot(xs, [p.relative_error for p in points], marker="o", ms=3, label=label)
    right.set_xlabel("whole-network compression ratio")
    right.set_ylabel("relative error of W")
    right.set_title("One mode truncated at a time (Tucker)")
    right.set_xscale("log")
    ticks = matplotlib.ticker.FormatStrFormatter("%gx")
    right.xaxis.set_major_formatter(ticks)
    right.xaxis.set_minor_formatter(ticks)
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    from tcompress.checkpoint import atomic_write

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"), force=force)
    finally:
        plt.close(fig)
