"""Training and fine-tuning of dense hourglasses and T-Nets: heatmap loss on every stack,
distillation from a teacher's heatmaps, evaluation as it goes, and checkpoints that resume
exactly.

One step reads one batch per process, sums the losses of every stack, and takes one optimizer
step (DistributedDataParallel averages the gradients over processes). Nothing in a step draws
from a global random generator: the data order is a function of ``(seed, epoch)`` and every
sample of ``(seed, index, epoch)``, so a run resumed from a checkpoint repeats the steps of an
uninterrupted one bit for bit.
"""

from __future__ import annotations

import bisect
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from tcompress.errors import CheckpointError, DataError, TcompressError, param
from tcompress.models.io import heatmaps_of
from tcompress.train.distributed import Distributed, ShardSampler
from tcompress.vocabulary import OPTIMIZERS, PRECISIONS, SCHEDULES

__all__ = [
    "OPTIMIZERS",
    "PRECISIONS",
    "TrainResult",
    "TrainSettings",
    "distillation_loss",
    "evaluate_pck",
    "fit",
    "heatmap_loss",
    "native_bf16",
    "read_state",
]

# OPTIMIZERS; SCHEDULES: ``step`` multiplies by ``gamma`` at each milestone, ``cosine`` and
# ``linear`` fall from ``lr`` to zero over the run; PRECISIONS: ``fp32``, or ``bf16`` mixed
# precision (autocast: convolutions and matrix products in bfloat16, parameters, optimizer state
# and losses in float32). Defined in tcompress.vocabulary.
#: Smoothing of RMSprop's running average of squared gradients (PyTorch's default).
RMSPROP_ALPHA = 0.99
STATE_FORMAT = "tcompress.train-state"
STATE_VERSION = 1


@dataclass(frozen=True)
class TrainSettings:
    """What a run does. ``milestones`` are steps at which the learning rate is multiplied by
    ``gamma``; ``None`` means 60% and 85% of ``steps`` (a multi-step schedule, as the paper's
    RMSprop training).

    ``distill_weight`` mixes the two losses: ``(1 - w) * supervised + w * distillation``; 0 needs
    labels and no teacher, 1 needs a teacher and no labels.

    ``bias_correction`` (RMSprop only) scales step ``k``'s learning rate by
    ``sqrt(1 - alpha^k)``, which undoes the bias of RMSprop's running average of squared gradients
    towards its zero start, as Adam does. Without it the first update is about ten times the
    learning rate in every coordinate (``alpha = 0.99``) and the first hundred steps stay above
    it: five uncorrected steps at a constant 5e-4 take the bundled model from 82.3% to 61.9% PCKh
    (79.9% with the correction; ``benchmarks/bench_bias_correction.py``, record
    ``docs/records/bias_correction.json``), a damage a short fine-tuning spends much of its budget
    repairing.

    ``precision`` ``"bf16"`` runs the passes under bfloat16 autocast, on channels-last
    activations and kernels. On CPUs with native bfloat16 (AVX512-BF16 or AMX) and on recent
    GPUs it is several times faster than ``"fp32"``; elsewhere it can be slower. A T-Net
    rebuilds its weights in float32 either way.

    ``warmup`` steps raise the learning rate linearly from ``lr / warmup`` to the schedule's rate
    (step ``k < warmup`` takes ``(k + 1) / warmup`` of it); the schedule itself still runs over
    all ``steps``. 0 (the default) starts at the schedule's rate.
    """

    steps: int
    batch_size: int = 16
    optimizer: str = "rmsprop"
    lr: float = 2.5e-4
    milestones: tuple[int, ...] | None = None
    gamma: float = 0.1
    weight_decay: float = 0.0
    distill_weight: float = 0.0
    seed: int = 0
    bias_correction: bool = True
    schedule: str = "step"
    precision: str = "fp32"
    warmup: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise TcompressError(f"steps must be a positive integer, got {self.steps!r}")
        if self.batch_size < 1:
            raise TcompressError(f"batch size must be positive, got {self.batch_size}")
        if self.schedule not in SCHEDULES:
            raise TcompressError(f"schedule {self.schedule!r} is not one of {SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise TcompressError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.optimizer not in OPTIMIZERS:
            raise TcompressError(f"optimizer {self.optimizer!r} is not one of {OPTIMIZERS}")
        if (
            isinstance(self.warmup, bool)
            or not isinstance(self.warmup, int)
            or not 0 <= self.warmup < self.steps
        ):
            raise TcompressError(
                f"warm-up must be 0 to {self.steps - 1} steps (fewer than steps), "
                f"got {self.warmup!r}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TcompressError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.distill_weight <= 1:
            raise TcompressError(
                f"distillation weight must be in [0, 1], got {self.distill_weight}"
            )
        if self.milestones is not None:
            object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))

    @property
    def milestone_steps(self) -> tuple[int, ...]:
        if self.milestones is not None:
            return self.milestones
        return tuple(sorted({max(1, round(self.steps * f)) for f in (0.6, 0.85)}))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["milestones"] = list(self.milestone_steps)
        return out


@dataclass
class TrainResult:
    """What a run did: ``history`` holds one entry per logged step and evaluation."""

    steps: int
    images: int
    seconds: float
    final_loss: float
    history: list[dict] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _stacks(outputs) -> list[Tensor]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def heatmap_loss(outputs, targets: Tensor) -> Tensor:
    """Mean squared error of every stack's heatmaps against the targets, summed over stacks
    (intermediate supervision, Newell et al.).

    Shapes: each output and ``targets`` (N, J, h, w).
    """
    stacks = _stacks(outputs)
    if stacks and stacks[0].shape[1:] != targets.shape[1:]:
        got, want = stacks[0].shape[1:], targets.shape[1:]
        raise DataError(
            f"the model gives {got[0]} heatmaps of {got[1]}x{got[2]}; the data's targets are "
            f"{want[0]} of {want[1]}x{want[2]}; expected a model of the data set's joints whose "
            "heatmaps are a quarter of the image size"
        )
    return sum(torch.nn.functional.mse_loss(out, targets) for out in stacks)


def distillation_loss(outputs, teacher_outputs) -> Tensor:
    """Mean squared error to a teacher's heatmaps, summed over the student's stacks: stack ``i``
    against the teacher's stack ``i`` when both have as many stacks, otherwise every stack
    against the teacher's last."""
    stacks, teacher = _stacks(outputs), _stacks(teacher_outputs)
    if len(teacher) != len(stacks):
        teacher = [teacher[-1]] * len(stacks)
    return sum(torch.nn.functional.mse_loss(s, t) for s, t in zip(stacks, teacher))


def learning_rate_factor(settings: TrainSettings) -> Callable[[int], float]:
    """Step (0-based) -> the factor on ``settings.lr``: ``gamma`` per milestone passed (or the
    cosine or linear decay), times the warm-up's ``(step + 1) / warmup`` during the warm-up, times
    RMSprop's bias correction ``sqrt(1 - alpha^(step + 1))`` when it is on."""
    milestones = list(settings.milestone_steps)
    correct = settings.optimizer == "rmsprop" and settings.bias_correction

    def factor(step: int) -> float:
        if settings.schedule == "cosine":
            decay = 0.5 * (1 + math.cos(math.pi * step / settings.steps))
        elif settings.schedule == "linear":
            decay = 1 - step / settings.steps
        else:
            decay = settings.gamma ** bisect.bisect_right(milestones, step)
        if step < settings.warmup:
            decay *= (step + 1) / settings.warmup
        return decay * math.sqrt(1 - RMSPROP_ALPHA ** (step + 1)) if correct else decay

    return factor


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (oneDNN's check on CPUs: AVX512 or
    newer; compute capability 8 on GPUs), so that ``precision="bf16"`` pays off."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def make_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=settings.lr, alpha=RMSPROP_ALPHA, weight_decay=settings.weight_decay
        )
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(params, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay)


def evaluate_pck(
    model: nn.Module,
    data: Dataset,
    *,
    batch_size: int = 16,
    context: Distributed | None = None,
    flip: bool = False,
) -> dict:
    """PCKh@0.5 of ``model`` on ``data``, every rank evaluating its own shard; the totals are
    summed over ranks. Returns :meth:`PCKResult.to_dict`."""
    from tcompress.evaluation.run import pckh_of

    context = context or Distributed(device=next(model.parameters()).device)
    shard = torch.utils.data.Subset(data, range(context.rank, len(data), context.world))
    accumulator = pckh_of(model, shard, batch_size, context.device, flip=flip)
    return accumulator.all_reduce().result().to_dict()


def _labelled(data: Dataset) -> bool:
    sample = data[0]
    return isinstance(sample, dict) and "heatmaps" in sample


def _sync_buffers(model: nn.Module, context: Distributed) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank.

    DistributedDataParallel broadcasts them before each forward, but every rank then updates its
    own from its own batch; evaluation and the written model use rank 0's.
    """
    if context.active:
        import torch.distributed as dist

        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def read_state(path: str | os.PathLike) -> dict:
    """A training state written by :func:`fit` (``checkpoint=``), read with ``weights_only``."""
    from tcompress.checkpoint import read_checkpoint

    payload = read_checkpoint(path).payload
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"'{path}' is not a training state to resume from (written by {param('save_every')})"
        )
    if payload.get("format_version") != STATE_VERSION:
        raise CheckpointError(
            f"training state '{path}' has version {payload.get('format_version')!r}; "
            f"this tcompress reads version {STATE_VERSION}"
        )
    return payload


def _check_resumable(state: dict, settings: TrainSettings, path: str) -> None:
    # States written before the schedule, the precision and the warm-up were settings used the
    # multi-step schedule, float32 and no warm-up.
    saved = {"schedule": "step", "precision": "fp32", "warmup": 0, **state.get("settings", {})}
    mine = settings.to_dict()
    differ = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in mine.items() if saved.get(k) != v]
    if differ:
        raise CheckpointError(
            f"training state '{path}' was written with other settings ({'; '.join(differ)}); "
            "resume with the settings it was started with"
        )


def fit(
    model: nn.Module,
    data: Dataset,
    settings: TrainSettings,
    *,
    teacher: nn.Module | None = None,
    val_data: Dataset | None = None,
    eval_every: int = 0,
    eval_batch_size: int = 16,
    context: Distributed | None = None,
    num_workers: int = 0,
    log_every: int = 10,
    checkpoint: str | os.PathLike | None = None,
    save_every: int = 0,
    resume: str | os.PathLike | dict | None = None,
    on_event: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``settings.steps`` optimizer steps.

    Parameters
    ----------
    model
        A dense :class:`~tcompress.models.StackedHourglass` or a T-Net (any module returning a
        list of per-stack heatmaps); trained in its current forward form.
    data
        Yields dicts with ``image`` and, for the supervised loss, ``heatmaps``.
    teacher
        The network to distill from (kept in eval mode, no gradient).
    val_data
        Labelled data for PCKh, evaluated every ``eval_every`` steps (0: at the end only).
    context
        The process group (:func:`~tcompress.train.distributed.setup`); one process if None.
    checkpoint, save_every
        Every ``save_every`` steps and at the end, rank 0 writes the training state (model,
        optimizer, schedule, step) to ``checkpoint``, atomically.
    resume
        A training state (or its path) to continue from: the run then repeats exactly the steps
        an uninterrupted run would have taken.
    on_event
        Called on rank 0 with ``{"kind": "step" | "eval" | "save", ...}``.

    Raises
    ------
    DataError
        Labels are needed but ``data`` has none, or there are fewer samples than one batch
        per process.
    """
    context = context or Distributed(device=next(model.parameters()).device)
    emit = on_event if (on_event and context.main) else (lambda event: None)
    w = settings.distill_weight
    labelled = _labelled(data)
    if w < 1 and not labelled:
        raise DataError(
            "the data has no heatmap labels (a plain image folder?): train with a teacher and "
            f"distillation weight 1 ({param('teacher', metavar='ORIGINAL')}), or give a "
            "labelled data set"
        )
    if w > 0 and teacher is None:
        raise TcompressError("a distillation weight above 0 needs a teacher network")
    per_epoch = ShardSampler.batches_per_epoch(len(data), settings.batch_size, context.world)
    if per_epoch < 1:
        raise DataError(
            f"{len(data)} samples do not fill one batch of {settings.batch_size} on each of "
            f"{context.world} process(es)"
        )
    # bf16 runs on channels-last activations and kernels (faster convolutions on CPUs and on
    # GPUs with tensor cores) and gives the model back in the default layout; fp32 keeps the
    # default layout, so that it repeats the arithmetic of earlier runs bit for bit.
    layout = torch.channels_last if settings.precision == "bf16" else torch.preserve_format
    model.to(context.device, memory_format=layout).train()
    if teacher is not None:
        teacher.to(context.device, memory_format=layout).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    network = model
    if context.active:
        device_ids = [context.device] if context.device.type == "cuda" else None
        network = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], settings)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(settings))
    step, result = 0, TrainResult(0, 0, 0.0, math.nan)
    if resume is not None:
        state = read_state(resume) if not isinstance(resume, dict) else resume
        _check_resumable(state, settings, str(resume) if not isinstance(resume, dict) else "")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(
                f"training state does not match the model: {str(e).splitlines()[0]}"
            ) from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        result = TrainResult(**state["result"])

    def save_state() -> None:
        if checkpoint is None or not context.main:
            return
        from tcompress.checkpoint import save_torch

        save_torch(
            {
                "format": STATE_FORMAT,
                "format_version": STATE_VERSION,
                "settings": settings.to_dict(),
                "step": step,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "result": result.to_dict(),
            },
            checkpoint,
        )
        emit({"kind": "save", "step": step, "path": os.fspath(checkpoint)})

    def run_eval() -> None:
        _sync_buffers(model, context)
        if val_data is None:
            return
        scores = evaluate_pck(model, val_data, batch_size=eval_batch_size, context=context)
        model.train()
        entry = {"step": step, "pckh": scores["mean"], "groups": scores["groups"]}
        result.evaluations.append(entry)
        emit({"kind": "eval", **entry})

    mixed = torch.autocast(
        context.device.type, dtype=torch.bfloat16, enabled=settings.precision == "bf16"
    )
    started, window_loss, window_n, window_t = time.perf_counter(), 0.0, 0, time.perf_counter()
    seconds_before = result.seconds
    while step < settings.steps:
        epoch, offset = divmod(step, per_epoch)
        if hasattr(data, "set_epoch"):
            data.set_epoch(epoch)
        sampler = ShardSampler(
            len(data),
            settings.batch_size,
            rank=context.rank,
            world=context.world,
            seed=settings.seed,
            epoch=epoch,
            skip=offset * settings.batch_size,
        )
        loader = DataLoader(
            data,
            batch_size=settings.batch_size,
            sampler=sampler,
            num_workers=num_workers,
            drop_last=True,
            persistent_workers=False,
        )
        for batch in loader:
            images = batch["image"].to(context.device, non_blocking=True)
            if layout is torch.channels_last:
                images = images.contiguous(memory_format=layout)
            with mixed:
                outputs = [out.float() for out in _stacks(heatmaps_of(network, images))]
                if w > 0:
                    with torch.no_grad():
                        target = [out.float() for out in _stacks(heatmaps_of(teacher, images))]
            loss = outputs[0].new_zeros(())
            if w < 1:
                loss = loss + (1 - w) * heatmap_loss(outputs, batch["heatmaps"].to(context.device))
            if w > 0:
                loss = loss + w * distillation_loss(outputs, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            used_lr = optimizer.param_groups[0]["lr"]  # the rate of this step, before the update
            scheduler.step()
            step += 1
            value = loss.item()
            if not math.isfinite(value):
                raise TcompressError(
                    f"the loss became {value} at step {step}; lower the learning rate "
                    f"({param('lr')})"
                )
            result.images += images.shape[0] * context.world
            window_loss, window_n = window_loss + value, window_n + 1
            result.final_loss = value
            if step % log_every == 0 or step == settings.steps:
                now = time.perf_counter()
                entry = {
                    "step": step,
                    "loss": window_loss / window_n,
                    "lr": used_lr,
                    "images_per_s": window_n * images.shape[0] * context.world / (now - window_t),
                }
                result.history.append(entry)
                window_loss, window_n, window_t = 0.0, 0, now
            emit(
                {
                    "kind": "step",
                    "step": step,
                    "loss": value,
                    "lr": used_lr,
                }
            )
            result.steps = step
            result.seconds = seconds_before + time.perf_counter() - started
            if eval_every and step % eval_every == 0 and step < settings.steps:
                run_eval()
            if save_every and step % save_every == 0 and step < settings.steps:
                save_state()
            if step >= settings.steps:
                break
    run_eval()  # also gives every rank rank 0's BatchNorm statistics
    result.seconds = seconds_before + time.perf_counter() - started
    save_state()
    if layout is torch.channels_last:
        for net in (model, teacher):
            if net is not None:
                net.to(memory_format=torch.contiguous_format)
    return result
