"""BatchNorm re-estimation without labels.

Conversion changes every block's output a little, so the running statistics of the BatchNorms
after them no longer match what they normalise. Re-estimating them from forward passes over
unlabeled images (no gradient, no label) recovers part of the accuracy lost before any
fine-tuning. The statistics are the plain average over every batch seen (BatchNorm with
``momentum=None``), not an exponential moving average, so the order of batches does not matter.

:func:`recalibrate_batchnorm` re-estimates a module's statistics from any batches;
:func:`recalibrate_model` is the whole of ``tcompress recalibrate`` (a file in, the data set, a
file out).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tcompress.models.io import heatmaps_of


@dataclass
class RecalibrationReport:
    """The BatchNorms re-estimated, from how many images in how many batches; ``output`` the
    file written and ``model`` the network re-estimated (:func:`recalibrate_model`)."""

    batchnorms: int
    images: int
    batches: int
    output: Path | None = None
    model: nn.Module | None = None

    def to_dict(self) -> dict:
        """The summary ``tcompress recalibrate --json`` prints."""
        counts = {"batchnorms": self.batchnorms, "images": self.images, "batches": self.batches}
        return {**counts, "output": None if self.output is None else str(self.output)}


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


def recalibrate_model(
    model: str | os.PathLike | nn.Module,
    data: str | os.PathLike,
    *,
    n: int = 512,
    batch_size: int = 16,
    image_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
    images: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RecalibrationReport:
    """Re-estimate every BatchNorm's statistics of ``model`` (a file :func:`tcompress.load`
    reads, or a module, changed in place) from the first ``n`` training images of ``data``
    (:func:`~tcompress.data.make_dataset`: ``"synthetic"``, an MPII-style set or a folder of
    unlabeled images), and write it to ``output``.

    Parameters
    ----------
    images
        MPII: the folder the annotations' image paths are relative to.
    output, force
        Where the network is written (atomically, with
        :func:`~tcompress.serialize.save_model`); an existing file only with ``force``. Checked
        before anything is loaded. None: nothing written.
    progress
        Called with (batches done, batches in all).
    """
    from tcompress.checkpoint import check_output
    from tcompress.data import make_dataset
    from tcompress.serialize import load, save_model

    paths = (model,) if isinstance(model, str | os.PathLike) else ()
    out = None if output is None else check_output(output, force=force, inputs=paths)
    net = model.to(device) if isinstance(model, nn.Module) else load(model, device=device)
    dataset = make_dataset(
        data, "train", image_size, image_size // 4, n=n, seed=seed, images=images
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    report = recalibrate_batchnorm(
        net,
        loader,
        device=device,
        progress=None if progress is None else lambda done: progress(done, len(loader)),
    )
    if out is not None:
        save_model(net, out, force=force)
    report.output, report.model = out, net
    return report
