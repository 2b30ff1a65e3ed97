"""Training-side operations on dense hourglasses and T-Nets: training and fine-tuning
(supervised, distilled, distributed) and BatchNorm re-estimation.

:func:`finetune` and :func:`train` are whole runs (data, BatchNorm re-estimation, the written
model), as the command line does them, and so is :func:`recalibrate_model`; :func:`fit` is the
loop they call. :func:`train` trains a new dense hourglass, or with ``method=`` and ``ranks=`` /
``ratio=`` a T-Net from scratch (:mod:`tcompress.scratch`)."""

from tcompress.train.finetune import FinetuneResult, TrainingInterrupted, finetune, train
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
from tcompress.train.recalibrate import (
    RecalibrationReport,
    recalibrate_batchnorm,
    recalibrate_model,
)

__all__ = [
    "FinetuneResult",
    "RecalibrationReport",
    "TrainResult",
    "TrainSettings",
    "TrainingInterrupted",
    "distillation_loss",
    "evaluate_pck",
    "finetune",
    "fit",
    "heatmap_loss",
    "native_bf16",
    "read_state",
    "recalibrate_batchnorm",
    "recalibrate_model",
    "train",
]
