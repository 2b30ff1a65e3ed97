"""Training samples generated once and kept in memory.

Rendering a synthetic sample costs about as much CPU time as the training step that consumes
it, so a fine-tuning run on a few CPU cores spends much of its time drawing pictures. A
:class:`SampleCache` renders (or decodes) every sample of a finite training set once, in
parallel worker processes, and serves it again in later epochs mirrored left-right with
probability 1/2, the left and right joints swapped: the variety of a mirrored sample for the
price of a copy. Images and heatmaps are kept in float16, whose rounding (2^-11 relative) is
finer than 8-bit image data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from tcompress.data.skeleton import N_JOINTS
from tcompress.data.transforms import flip_heatmaps, flip_joints, sample_rng
from tcompress.errors import DataError

__all__ = ["SampleCache"]

#: Entries stored in float16 (everything else keeps its dtype).
_HALF = ("image", "heatmaps")


class SampleCache(Dataset):
    """Every sample of ``data`` (its epoch-0 draw) kept in memory.

    In epoch ``e >= 1`` sample ``i`` is mirrored when a generator seeded by
    ``(seed, i, e)`` says so (probability 1/2): the image and heatmaps flipped along their
    width, joints mirrored (``x -> w - 1 - x``, pixel-centre convention) and left and right
    swapped. Epoch 0 serves the samples as they were drawn. Samples with heatmaps of another
    joint set than the MPII 16 are never mirrored (which joints swap is unknown).

    Parameters
    ----------
    data
        A map-style data set of dicts (``image`` and, when labelled, ``heatmaps``, ``joints``,
        ``visible``, ``head_size``, ``index``) of equal shapes.
    workers
        Processes that generate the samples (0: this process).
    seed
        Seed of the mirroring.
    progress
        Called with the number of samples stored so far.

    Raises
    ------
    DataError
        For an empty data set.
    """

    def __init__(
        self,
        data: Dataset,
        *,
        workers: int = 0,
        seed: int = 0,
        batch_size: int = 32,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        n = len(data)
        if n == 0:
            raise DataError("there are no samples to cache")
        self.seed, self.epoch, self.n = int(seed), 0, n
        self.store: dict[str, torch.Tensor] = {}
        loader = DataLoader(data, batch_size=batch_size, num_workers=workers)
        done = 0
        for batch in loader:
            for key, value in batch.items():
                value = torch.as_tensor(value)
                if key not in self.store:
                    dtype = torch.float16 if key in _HALF else value.dtype
                    self.store[key] = torch.empty((n, *value.shape[1:]), dtype=dtype)
                self.store[key][done : done + len(value)] = value
            done += len(value)
            if progress is not None:
                progress(done)
        heatmaps = self.store.get("heatmaps")
        self.mirrors = heatmaps is None or heatmaps.shape[1] == N_JOINTS

    @property
    def nbytes(self) -> int:
        """Memory held by the stored samples."""
        return sum(t.numel() * t.element_size() for t in self.store.values())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for a data set of {self.n} samples")
        sample = {
            key: value[index].float() if key in _HALF else value[index]
            for key, value in self.store.items()
        }
        if "index" in sample:
            sample["index"] = int(sample["index"])
        if self.epoch and self.mirrors and self._mirrored(index):
            sample = _mirror(sample)
        return sample

    def _mirrored(self, index: int) -> bool:
        return bool(sample_rng("cache-mirror", self.seed, int(index), self.epoch).random() < 0.5)


def _mirror(sample: dict) -> dict:
    out = dict(sample)
    out["image"] = sample["image"].flip(-1)
    if "heatmaps" in sample:
        out["heatmaps"] = flip_heatmaps(sample["heatmaps"])
        joints, visible = flip_joints(
            sample["joints"].numpy(), sample["visible"].numpy(), sample["heatmaps"].shape[-1]
        )
        out["joints"] = torch.as_tensor(joints, dtype=sample["joints"].dtype)
        out["visible"] = torch.as_tensor(visible, dtype=sample["visible"].dtype)
    return out
