"""The pretrained hourglass that ships inside the package (``tcompress/assets``).

A 2-stack hourglass of 32 features trained on the procedural synthetic pose data by
``examples/train_bundled_model.py``; its training record (settings, loss and PCKh curves) sits
next to the weights as JSON.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

from tcompress.errors import CheckpointError
from tcompress.models.hourglass import StackedHourglass

__all__ = ["PRETRAINED", "pretrained", "pretrained_info", "pretrained_path"]

#: Name of the bundled model; its files are ``assets/<name>.pth`` and ``assets/<name>.json``.
PRETRAINED = "hourglass-synthetic"


def pretrained_path() -> Path:
    """The bundled checkpoint (a plain state dict: ``tcompress convert`` reads it directly)."""
    path = Path(str(resources.files("tcompress") / "assets" / f"{PRETRAINED}.pth"))
    if not path.is_file():
        raise CheckpointError(
            f"the bundled model '{path}' is missing from this installation of tcompress"
        )
    return path


def pretrained_info() -> dict:
    """The bundled model's training record: architecture, input size, settings, curves."""
    with open(pretrained_path().with_suffix(".json")) as f:
        return json.load(f)


def pretrained(device: str | torch.device = "cpu") -> StackedHourglass:
    """The bundled pretrained hourglass, in eval mode."""
    from tcompress.serialize import load

    return load(pretrained_path(), device=device).eval()
