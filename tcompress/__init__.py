"""tcompress: compress pretrained convolutional networks into single-tensor T-Nets.

Public API::

    import tcompress
    tnet = tcompress.convert("hg.pth", method="tucker", ranks=(4, 4, 3, 2, 64, 64, 3, 3))
    tcompress.save(tnet, "tnet.pt")
    tnet = tcompress.load("tnet.pt", forward="factorized")
    tcompress.export_onnx(tnet, "tnet.onnx", form="factorized")   # or form="dense"
    tcompress.finetune("tnet.pt", "synthetic", steps=500, output="tnet-ft.pt")
    tcompress.evaluate("tnet-ft.pt", "synthetic", n=500).result.mean   # PCKh@0.5

Heavy modules (torch) are imported on first use, so that ``tcompress --help`` starts instantly.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "convert": "tcompress.conversion",
    "ConversionSummary": "tcompress.conversion",
    "save": "tcompress.serialize",
    "load": "tcompress.serialize",
    "TNet": "tcompress.tnet",
    "LayerwiseNet": "tcompress.layerwise",
    "random_tnet": "tcompress.scratch",
    "TcompressError": "tcompress.errors",
    "export_onnx": "tcompress.export.onnx",
    # train() is tcompress.train.train: the name tcompress.train is the subpackage's.
    "finetune": "tcompress.train",
    "evaluate": "tcompress.evaluation",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tcompress' has no attribute {name!r}")
