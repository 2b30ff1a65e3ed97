"""PCKh and PCK: the percentage of joints predicted within a fraction of a per-sample size.

A visible joint is correct when ``||pred - joint|| <= threshold * normalizer`` (inclusive; MPII's
own evaluation, :mod:`tcompress.evaluation.mpii`, uses ``<``: ``strict=True``); invisible
(unannotated) joints are ignored. :class:`PCKAccumulator` sums hits and counts over
batches (and over ``torch.distributed`` ranks), so evaluation never holds the whole set.

Conventions (MPII, as in its official evaluation):

- the headline ``mean`` is over all visible joint instances (joints weighted by their counts,
  ``mean_instances``), excluding pelvis and thorax (``mean_excludes``) when the joints are the 16
  MPII ones; ``mean_joints`` is the unweighted mean of the per-joint accuracies over the same
  joints, and the headline with ``headline="joints"`` (MPII's own Mean);
- the summary groups (Head = head_top and upper_neck, Shoulder, Elbow, Wrist, Hip, Knee, Ankle)
  are the unweighted mean of their members' per-joint accuracies (left and right).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tcompress.data.skeleton import JOINTS
from tcompress.evaluation.decode import EvaluationError

__all__ = [
    "MPII_GROUPS",
    "MPII_JOINTS",
    "MPII_MEAN_EXCLUDES",
    "PCKAccumulator",
    "PCKResult",
    "bbox_size",
    "pck_bbox",
    "pckh",
]

#: The 16 MPII joint names, in channel order (from :mod:`tcompress.data.skeleton`).
MPII_JOINTS: tuple[str, ...] = JOINTS
MPII_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Head", ("head_top", "upper_neck")),
    ("Shoulder", ("r_shoulder", "l_shoulder")),
    ("Elbow", ("r_elbow", "l_elbow")),
    ("Wrist", ("r_wrist", "l_wrist")),
    ("Hip", ("r_hip", "l_hip")),
    ("Knee", ("r_knee", "l_knee")),
    ("Ankle", ("r_ankle", "l_ankle")),
)
#: Joints left out of the MPII means (they are still reported per joint).
MPII_MEAN_EXCLUDES: tuple[str, ...] = ("pelvis", "thorax")


@dataclass(frozen=True)
class PCKResult:
    """Accuracies of a :class:`PCKAccumulator`, in percent; NaN where no joint was visible.

    Attributes
    ----------
    name, threshold
        The metric, e.g. ``"PCKh"`` and 0.5; ``label`` joins them as ``"PCKh@0.5"``.
    joint_names
        One name per joint.
    hits, counts
        Per joint: correct visible instances, and visible instances.
    per_joint
        Per joint: ``100 * hits / counts``.
    mean
        The headline: ``mean_instances``, or ``mean_joints`` when ``headline`` is ``"joints"``.
    mean_joints
        Unweighted mean of ``per_joint`` over the same joints, those with a count only.
    mean_instances
        ``100 * sum(hits) / sum(counts)`` over the joints not in ``mean_excludes``.
    headline
        Which mean ``mean`` is: ``"instances"`` or ``"joints"``.
    groups
        MPII summary groups whose joints are all present, name -> mean of their members'
        accuracies (members with a count only).
    mean_excludes
        Joint names left out of both means.
    n_samples
        Samples with at least one visible joint.

    Shapes
    ------
    hits, counts, per_joint : (J,)
    """

    name: str
    threshold: float
    joint_names: tuple[str, ...]
    hits: tuple[int, ...]
    counts: tuple[int, ...]
    per_joint: tuple[float, ...]
    mean: float
    mean_joints: float
    groups: dict[str, float] = field(default_factory=dict)
    mean_excludes: tuple[str, ...] = ()
    n_samples: int = 0
    mean_instances: float = math.nan
    headline: str = "instances"

    @property
    def label(self) -> str:
        return f"{self.name}@{self.threshold:g}"

    def to_dict(self) -> dict:
        """JSON-ready summary (NaN becomes ``None``)."""
        return {
            "metric": self.label,
            "name": self.name,
            "threshold": self.threshold,
            "mean": _json(self.mean),
            "mean_joints": _json(self.mean_joints),
            "mean_instances": _json(self.mean_instances),
            "headline": self.headline,
            "groups": {k: _json(v) for k, v in self.groups.items()},
            "joints": {
                name: {"accuracy": _json(acc), "hits": hit, "count": count}
                for name, acc, hit, count in zip(
                    self.joint_names, self.per_joint, self.hits, self.counts
                )
            },
            "mean_excludes": list(self.mean_excludes),
            "n_samples": self.n_samples,
            "n_visible": sum(self.counts),
        }


class PCKAccumulator:
    """Sums correct and visible joints over batches; :meth:`result` turns them into accuracies.

    Parameters
    ----------
    threshold
        Fraction of the normaliser within which a joint is correct (0.5 for PCKh@0.5).
    n_joints
        Joints per sample.
    joint_names
        One name per joint; by default the MPII names for 16 joints, else ``joint_0``, ...
    mean_excludes
        Joint names left out of the means; by default pelvis and thorax when the names are the
        MPII ones, else none.
    name
        Metric name carried into the result (``"PCKh"``, ``"PCK"``).
    keep_samples
        Also keep, per sample, the hits and visible counts over the joints of the mean
        (``sample_hits``, ``sample_counts``), for confidence intervals by resampling images.
    strict
        Correct means strictly within the threshold (``<``, MPII's rule) instead of ``<=``.
    groups
        Summary groups, (name, member joint names); default ``MPII_GROUPS``.
    headline
        ``"instances"`` (default) or ``"joints"``: which mean is the result's ``mean``.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        n_joints: int = 16,
        joint_names: Sequence[str] | None = None,
        *,
        mean_excludes: Sequence[str] | None = None,
        name: str = "PCKh",
        keep_samples: bool = False,
        strict: bool = False,
        groups: Sequence[tuple[str, Sequence[str]]] = MPII_GROUPS,
        headline: str = "instances",
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise EvaluationError(f"threshold {threshold!r}; expected a positive number")
        if not (math.isfinite(threshold) and threshold > 0):
            raise EvaluationError(f"threshold {threshold!r}; expected a positive number")
        if isinstance(n_joints, bool) or not isinstance(n_joints, int) or n_joints < 1:
            raise EvaluationError(f"n_joints {n_joints!r}; expected a positive integer")
        if joint_names is None:
            names = MPII_JOINTS if n_joints == 16 else tuple(f"joint_{k}" for k in range(n_joints))
        else:
            names = tuple(str(s) for s in joint_names)
            if len(names) != n_joints or len(set(names)) != n_joints:
                raise EvaluationError(
                    f"joint_names {list(names)!r}; expected {n_joints} distinct names"
                )
        if mean_excludes is None:
            excludes = MPII_MEAN_EXCLUDES if names == MPII_JOINTS else ()
        else:
            excludes = tuple(str(s) for s in mean_excludes)
            unknown = [s for s in excludes if s not in names]
            if unknown:
                raise EvaluationError(
                    f"mean_excludes names unknown joint(s) {unknown!r}; expected names from "
                    f"{list(names)!r}"
                )
        self.threshold = float(threshold)
        self.joint_names = names
        self.mean_excludes = excludes
        if headline not in ("instances", "joints"):
            raise EvaluationError(f"headline {headline!r}; expected 'instances' or 'joints'")
        self.name = str(name)
        self.keep_samples = bool(keep_samples)
        self.strict = bool(strict)
        self.groups = tuple((str(g), tuple(str(m) for m in members)) for g, members in groups)
        self.headline = headline
        self.reset()

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    def reset(self) -> None:
        """Forget every update."""
        self.hits = torch.zeros(self.n_joints, dtype=torch.int64)
        self.counts = torch.zeros(self.n_joints, dtype=torch.int64)
        self.n_samples = 0
        self._sample_hits: list[Tensor] = []
        self._sample_counts: list[Tensor] = []

    @property
    def sample_hits(self) -> Tensor:
        """(N,) hits over the mean's joints of every sample seen (``keep_samples=True``)."""
        return torch.cat(self._sample_hits) if self._sample_hits else torch.zeros(0, dtype=int)

    @property
    def sample_counts(self) -> Tensor:
        """(N,) visible joints counted in the mean, per sample (``keep_samples=True``)."""
        return torch.cat(self._sample_counts) if self._sample_counts else torch.zeros(0, dtype=int)

    def update(self, pred, joints, visible, normalizer) -> None:
        """Add a batch.

        Parameters
        ----------
        pred, joints
            Predicted and true ``(x, y)``, in the units of ``normalizer`` (heatmap pixels for the
            data sets' ``head_size``). Non-finite predictions count as misses; true coordinates
            of invisible joints are ignored.
        visible
            Nonzero where the joint is annotated.
        normalizer
            Per-sample size (the head size for PCKh), or one number for the batch; must be
            positive for every sample with a visible joint.

        Shapes
        ------
        pred, joints : (N, J, 2)
        visible : (N, J)
        normalizer : (N,) or ()
        """
        pred = _array(pred, "pred", ("N", self.n_joints, 2))
        n = pred.shape[0]
        joints = _array(joints, "joints", (n, self.n_joints, 2))
        visible = _array(visible, "visible", (n, self.n_joints)) > 0
        size = _array(normalizer, "normalizer", None)
        if size.dim() == 0:
            size = size.expand(n)
        if size.shape != (n,):
            raise EvaluationError(
                f"normalizer of shape {tuple(size.shape)}; expected ({n},) or a single number"
            )
        _check_visible(joints, visible)
        used = visible.any(dim=1)
        bad = used & ~(torch.isfinite(size) & (size > 0))
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            raise EvaluationError(
                f"normalizer[{k}] is {float(size[k])!r} for a sample with visible joints; "
                f"expected a positive size"
            )
        dist = torch.linalg.vector_norm(pred - joints, dim=-1)
        limit = self.threshold * size.unsqueeze(1)
        hit = ((dist < limit) if self.strict else (dist <= limit)) & visible
        self.hits += hit.sum(dim=0)
        self.counts += visible.sum(dim=0)
        self.n_samples += int(used.sum())
        if self.keep_samples:
            kept = torch.tensor([s not in self.mean_excludes for s in self.joint_names])
            self._sample_hits.append(hit[:, kept].sum(dim=1))
            self._sample_counts.append(visible[:, kept].sum(dim=1))

    def merge(self, other: PCKAccumulator) -> PCKAccumulator:
        """Add another accumulator's counts (same threshold, joints, name); returns ``self``."""
        if not isinstance(other, PCKAccumulator):
            raise EvaluationError(
                f"cannot merge a {type(other).__name__}; expected a PCKAccumulator"
            )
        mine, theirs = self._config(), other._config()
        if mine != theirs:
            raise EvaluationError(
                f"cannot merge an accumulator with settings {theirs!r}; expected {mine!r}"
            )
        self.hits += other.hits
        self.counts += other.counts
        self.n_samples += other.n_samples
        return self

    def all_reduce(self, group=None) -> PCKAccumulator:
        """Sum the counts over all ``torch.distributed`` ranks; a no-op when not initialised.

        Call it once, on every rank, after the last update: every rank then holds the totals
        (calling it again would count them again). Returns ``self``.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        device = torch.device("cpu")
        if dist.get_backend(group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        packed = torch.cat((self.hits, self.counts, torch.tensor([self.n_samples]))).to(device)
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
        packed = packed.cpu()
        j = self.n_joints
        self.hits, self.counts = packed[:j].clone(), packed[j : 2 * j].clone()
        self.n_samples = int(packed[2 * j])
        return self

    def result(self) -> PCKResult:
        """Accuracies so far (see :class:`PCKResult`)."""
        hits, counts = self.hits.tolist(), self.counts.tolist()
        per_joint = tuple(100.0 * h / c if c else math.nan for h, c in zip(hits, counts))
        kept = [k for k, s in enumerate(self.joint_names) if s not in self.mean_excludes]
        total = sum(counts[k] for k in kept)
        instances = 100.0 * sum(hits[k] for k in kept) / total if total else math.nan
        joints = _mean([per_joint[k] for k in kept if counts[k]])
        index = {s: k for k, s in enumerate(self.joint_names)}
        groups = {
            group: _mean([per_joint[index[s]] for s in members if counts[index[s]]])
            for group, members in self.groups
            if all(s in index for s in members)
        }
        return PCKResult(
            name=self.name,
            threshold=self.threshold,
            joint_names=self.joint_names,
            hits=tuple(hits),
            counts=tuple(counts),
            per_joint=per_joint,
            mean=joints if self.headline == "joints" else instances,
            mean_joints=joints,
            groups=groups,
            mean_excludes=self.mean_excludes,
            n_samples=self.n_samples,
            mean_instances=instances,
            headline=self.headline,
        )

    def _config(self) -> tuple:
        return (
            self.name,
            self.threshold,
            self.joint_names,
            self.mean_excludes,
            self.strict,
            self.groups,
            self.headline,
        )


def pckh(
    pred,
    joints,
    visible,
    head_size,
    threshold: float = 0.5,
    joint_names: Sequence[str] | None = None,
    *,
    mean_excludes: Sequence[str] | None = None,
) -> PCKResult:
    """PCKh in one pass: correct within ``threshold * head_size``.

    Shapes
    ------
    pred, joints : (N, J, 2)
    visible : (N, J)
    head_size : (N,)
    """
    acc = _accumulator(pred, threshold, joint_names, mean_excludes, "PCKh")
    acc.update(pred, joints, visible, head_size)
    return acc.result()


def pck_bbox(
    pred,
    joints,
    visible,
    threshold: float = 0.2,
    joint_names: Sequence[str] | None = None,
    *,
    mean_excludes: Sequence[str] | None = None,
) -> PCKResult:
    """PCK in one pass: correct within ``threshold * bbox_size(joints, visible)``.

    For data without head boxes. Samples whose box is degenerate (size 0: fewer than two
    distinct visible positions) are left out. Over batches, use
    ``PCKAccumulator(threshold, name="PCK")`` with ``normalizer=bbox_size(joints, visible)`` and
    ``visible & (size > 0)[:, None]``.

    Shapes
    ------
    pred, joints : (N, J, 2)
    visible : (N, J)
    """
    acc = _accumulator(pred, threshold, joint_names, mean_excludes, "PCK")
    size = bbox_size(joints, visible)
    visible = _array(visible, "visible", (size.shape[0], acc.n_joints)) > 0
    acc.update(pred, joints, visible & (size > 0).unsqueeze(1), size)
    return acc.result()


def bbox_size(joints, visible) -> Tensor:
    """Longer side of the box around each sample's visible joints (0 when none is visible).

    Shapes
    ------
    joints : (N, J, 2)
    visible : (N, J)
    return : (N,), float64
    """
    joints = _array(joints, "joints", ("N", "J", 2))
    visible = _array(visible, "visible", tuple(joints.shape[:2])) > 0
    _check_visible(joints, visible)
    mask = visible.unsqueeze(-1)
    low = torch.where(mask, joints, torch.inf).amin(dim=1)
    high = torch.where(mask, joints, -torch.inf).amax(dim=1)
    size = (high - low).amax(dim=-1)
    return torch.where(visible.any(dim=1), size, torch.zeros_like(size))


def _accumulator(pred, threshold, joint_names, mean_excludes, name) -> PCKAccumulator:
    n_joints = _array(pred, "pred", ("N", "J", 2)).shape[1]
    return PCKAccumulator(threshold, n_joints, joint_names, mean_excludes=mean_excludes, name=name)


def _array(value, what: str, shape: Sequence[int | str] | None) -> Tensor:
    """``value`` as a float64 CPU tensor; ``shape`` holds sizes, or names for free sizes."""
    try:
        if isinstance(value, Tensor):
            out = value.detach().to("cpu", torch.float64)
        else:
            out = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise EvaluationError(f"{what} of type {type(value).__name__}; expected numbers") from None
    if shape is not None and (
        out.dim() != len(shape)
        or any(isinstance(e, int) and e != s for e, s in zip(shape, out.shape))
    ):
        expected = ", ".join(str(e) for e in shape)
        raise EvaluationError(f"{what} of shape {tuple(out.shape)}; expected ({expected})")
    return out


def _check_visible(joints: Tensor, visible: Tensor) -> None:
    bad = visible & ~torch.isfinite(joints).all(dim=-1)
    if bool(bad.any()):
        n, j = bad.nonzero()[0].tolist()
        raise EvaluationError(
            f"joints[{n}, {j}] is {joints[n, j].tolist()!r} for a visible joint; expected finite"
        )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _json(value: float) -> float | None:
    return None if math.isnan(value) else value
