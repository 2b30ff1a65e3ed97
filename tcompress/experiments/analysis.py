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


@dataclass
class Analysis:
    config: dict
    mode_names: list[str]
    mode_sizes: list[int]
    params_before: int
    tensor_params: int
    energy: dict[str, list[float]]  # mode -> fraction of ||W||^2 kept at rank 1, 2, ..., D
    sweep: list[SweepPoint] = field(default_factory=list)
    original_pckh: float | None = None

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
    data: str | None = None,
    val_samples: int = 200,
    image_size: int = 256,
    points: int = 8,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Analysis:
    """Spectra and a one-mode-at-a-time Tucker sweep of a dense hourglass's W.

    Parameters
    ----------
    model
        A dense :class:`~tcompress.models.StackedHourglass` or its checkpoint.
    data
        Labelled data (``"synthetic"`` or a path): also evaluate PCKh@0.5 of the original and of
        every sweep point, converted and not fine-tuned, on ``val_samples`` validation samples.
    points
        About how many ranks of a large mode are swept (small modes: every rank).
    """
    from tcompress.conversion import convert
    from tcompress.decompose.spectra import mode_spectra
    from tcompress.source import read_source

    say = progress or (lambda message: None)
    say("Reading the checkpoint")
    src = read_source(model)
    state, mode_names = src.state, src.family.all_mode_names
    with torch.no_grad():
        W = src.family.stack(state)
    say("Computing the spectrum of every mode")
    spectra = mode_spectra(W)
    shape = list(W.shape)
    total = float(spectra[0].sum()) or 1.0
    energy = {
        name: [float(v) for v in (s.cumsum(0) / total).clamp(max=1.0)]
        for name, s in zip(mode_names, spectra)
    }
    params_before = src.params_before
    other = params_before - W.numel()
    config = dict(src.architecture["config"])
    result = Analysis(config, list(mode_names), shape, params_before, W.numel(), energy)
    val = None
    if data is not None:
        from tcompress.data import make_dataset

        say("Evaluating the original")
        val = make_dataset(data, "val", image_size, image_size // 4, n=val_samples, seed=seed)
        dense = model if isinstance(model, nn.Module) else src.module()
        result.original_pckh = _pckh(dense.eval(), val)
    for k, (name, size) in enumerate(zip(mode_names, shape)):
        for rank in sweep_ranks(size, points):
            ranks = list(shape)
            ranks[k] = rank
            after = tucker_params(shape, ranks) + other
            error = math.sqrt(max(float(spectra[k][rank:].sum()), 0.0) / total)
            point = SweepPoint(name, rank, ranks, after, params_before / after, error)
            if val is not None:
                say(f"Evaluating {name} at rank {rank}")
                tnet = convert(state, method="tucker", ranks=ranks).eval()  # read once, above
                point.pckh = _pckh(tnet, val)
            result.sweep.append(point)
    return result


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
    for name, curve in analysis.energy.items():
        size = len(curve)
        x = [(r + 1) / size for r in range(size)]
        left.plot(x, curve, marker="o" if size <= 8 else None, ms=3, label=f"{name} ({size})")
    left.set_xlabel("rank / mode size")
    left.set_ylabel("fraction of ||W||² kept")
    left.set_title("Spectrum of every mode")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    for name in analysis.mode_names:
        points = [p for p in analysis.sweep if p.mode == name]
        if points:
            xs = [p.compression_ratio for p in points]
            right.plot(xs, [p.relative_error for p in points], marker="o", ms=3, label=name)
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
