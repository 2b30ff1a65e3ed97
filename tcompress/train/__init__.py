"""Training-side operations on dense hourglasses and T-Nets (BatchNorm re-estimation so far)."""

from tcompress.train.recalibrate import RecalibrationReport, recalibrate_batchnorm

__all__ = ["RecalibrationReport", "recalibrate_batchnorm"]
