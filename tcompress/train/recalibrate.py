"""BatchNorm re-estimation without labels.

Conversion changes every block's output a little, so the running statistics of the BatchNorms
after them no longer match what they normalise. Re-estimating them from forward passes over
unlabeled images (no gradient, no label) recovers part of the accuracy lost before any
fine-tuning. The statistics are the plain average over every batch seen (BatchNorm with
``momentum=None``), not an exponential moving average, so the order of batches does not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from tcompress.models.io import heatmaps_of


@dataclass
class RecalibrationReport:
    batchnorms: int
    images: int
    batches: int


def recalibrate_batchnorm(
    model: nn.Module,
    batches: Iterable[torch.Tensor | dict],
    *,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[int], None] | None = None,
) -> RecalibrationReport:
    """Re-estimate every BatchNorm's running mean and variance of ``model`` in place.

    Parameters
    ----------
    model
        Any module (a dense hourglass or a T-Net); its parameters are not changed.
    batches
        Image batches, or dicts with an ``"image"`` entry (a data loader over any data set).
    max_batches
        Stop after this many batches.
    device
        Where to run; default: where the model's parameters are.
    progress
        Called with the number of batches done.

    Shapes
    ------
    each batch: (N, C, H, W).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return RecalibrationReport(0, 0, 0)
    device = device or next(model.parameters()).device
    flags = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    images = done = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
            m.train()
        with torch.no_grad():
            for batch in batches:
                if max_batches is not None and done >= max_batches:
                    break
                x = batch["image"] if isinstance(batch, dict) else batch
                heatmaps_of(model, x.to(device))
                images += x.shape[0]
                done += 1
                if progress:
                    progress(done)
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, flag in flags.items():
            m.train(flag)
    return RecalibrationReport(len(norms), images, done)
