"""Task-level validation of an export: PCKh of the exported file against the PyTorch model it
came from, on the same labelled images.

An output comparison says how far the numbers moved; this says what it costs the user's task. It
is what judges an fp16 or INT8 file, whose outputs differ by design: the export is refused when
the file's PCKh@0.5 falls more than ``max_drop`` points below the PyTorch model's.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from torch import nn

from tcompress.errors import ExportError, param

#: Largest PCKh drop (points) an export may show against its PyTorch model, by precision. fp32
#: files compute the same network (a drop means a broken export); fp16 rounds every weight and
#: activation to 11 significant bits; INT8 quantizes, the issue's budget being one point.
MAX_DROP = {"fp32": 0.25, "fp16": 0.5, "int8": 1.0}
#: Images scored by default.
CHECK_SAMPLES = 200


@dataclass
class TaskCheck:
    """PCKh@0.5 (percent) of the exported file and of its PyTorch model on ``images`` images of
    ``data``; ``passed`` when the file is at most ``max_drop`` points below."""

    data: str
    images: int
    pckh_pytorch: float
    pckh_exported: float
    max_drop: float

    @property
    def drop(self) -> float:
        return self.pckh_pytorch - self.pckh_exported

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop

    def to_dict(self) -> dict:
        return dict(asdict(self), drop=self.drop, passed=self.passed)


def task_check(
    path: str | os.PathLike,
    reference: nn.Module,
    data: str | os.PathLike,
    *,
    n: int = CHECK_SAMPLES,
    max_drop: float,
    image_size: int,
    images: str | os.PathLike | None = None,
    seed: int = 0,
) -> TaskCheck:
    """Score the exported file at ``path`` and ``reference`` on the first ``n`` validation
    images of ``data`` (``"synthetic"``, an MPII-style set: labelled data), at ``image_size``."""
    from tcompress.data import make_dataset
    from tcompress.evaluation.run import OnnxModel, pckh_of

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ExportError(f"{param('check_samples')} is {n!r}; expected a whole number >= 1")
    dataset = make_dataset(data, "val", image_size, image_size // 4, n=n, seed=seed, images=images)
    if len(dataset) == 0 or "joints" not in dataset[0]:
        raise ExportError(
            f"check data {os.fspath(data)!r} has no labels; the task check scores PCKh and "
            "needs labelled images ('synthetic' or an MPII-style set)"
        )
    # A refused INT8 check names the remedy for a saturating CPU itself (export_onnx).
    exported = pckh_of(OnnxModel(os.fspath(path), warn=False), dataset).result().mean
    original = pckh_of(reference, dataset).result().mean
    return TaskCheck(os.fspath(data), len(dataset), original, exported, float(max_drop))
