"""Training-side operations on dense hourglasses and T-Nets: training and fine-tuning
(supervised, distilled, distributed) and BatchNorm re-estimation."""

from tcompress.train.loop import (
    TrainResult,
    TrainSettings,
    distillation_loss,
    evaluate_pck,
    fit,
    heatmap_loss,
    native_bf16,
    read_state,
)
from tcompress.train.recalibrate import RecalibrationReport, recalibrate_batchnorm

__all__ = [
    "RecalibrationReport",
    "TrainResult",
    "TrainSettings",
    "distillation_loss",
    "evaluate_pck",
    "fit",
    "heatmap_loss",
    "native_bf16",
    "read_state",
    "recalibrate_batchnorm",
]
