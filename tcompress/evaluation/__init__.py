"""Evaluation of pose networks: heatmap decoding, flip testing and PCKh / PCK.

Typical use over a data loader (coordinates in heatmap pixels throughout)::

    from tcompress.evaluation import PCKAccumulator, predict

    acc = PCKAccumulator(threshold=0.5)
    for batch in loader:
        coords, _ = predict(model, batch["image"], flip=True)
        acc.update(coords, batch["joints"], batch["visible"], batch["head_size"])
    result = acc.all_reduce().result()   # all_reduce: a no-op outside torch.distributed
    result.mean, result.groups, result.to_dict()

A whole evaluation of a model file (``tcompress evaluate``, also ``tcompress.evaluate``)::

    report = tcompress.evaluate("tnet.pt", "data/mpii/", flip=True, preds_mat="preds.mat")
    report.result.mean, report.to_dict()
"""

from tcompress.evaluation.decode import (
    MPII_FLIP_PAIRS,
    REFINEMENTS,
    EvaluationError,
    decode_heatmaps,
    flip_average,
    last_stack,
    predict,
)
from tcompress.evaluation.pck import (
    MPII_GROUPS,
    MPII_JOINTS,
    MPII_MEAN_EXCLUDES,
    PCKAccumulator,
    PCKResult,
    bbox_size,
    pck_bbox,
    pckh,
)
from tcompress.evaluation.run import Evaluation, OnnxModel, evaluate

__all__ = [
    "MPII_FLIP_PAIRS",
    "MPII_GROUPS",
    "MPII_JOINTS",
    "MPII_MEAN_EXCLUDES",
    "REFINEMENTS",
    "Evaluation",
    "EvaluationError",
    "OnnxModel",
    "PCKAccumulator",
    "PCKResult",
    "bbox_size",
    "decode_heatmaps",
    "evaluate",
    "flip_average",
    "last_stack",
    "pck_bbox",
    "pckh",
    "predict",
]
