"""A whole training run, as ``tcompress finetune`` and ``tcompress train`` do it: the network
loaded (or built), the training and validation sets, the distillation weight, BatchNorm
re-estimation, :func:`~tcompress.train.fit` in one process or many under ``torchrun``, and the
written model.

:func:`~tcompress.train.fit` is the loop; this module is the policy around it. It never prints:
it reports through ``progress`` (status lines) and ``on_event`` (the loop's events, and its own
``warning`` and ``start``), on rank 0 only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from tcompress.errors import OutputError, TcompressError, param
from tcompress.layouts import refuse_custom
from tcompress.models import HourglassConfig, StackedHourglass
from tcompress.train.distributed import Distributed, setup, teardown
from tcompress.train.loop import TrainResult, TrainSettings, fit
from tcompress.train.recalibrate import recalibrate_batchnorm

__all__ = [
    "FINETUNE_DEFAULTS",
    "TRAIN_DEFAULTS",
    "FinetuneResult",
    "TrainingInterrupted",
    "finetune",
    "train",
]

log = logging.getLogger(__name__)

#: Settings a fine-tuning leaves unsaid (those of ``tcompress finetune``): a short run whose
#: learning rate falls to zero along a cosine.
FINETUNE_DEFAULTS = {"steps": 500, "lr": 1e-4, "schedule": "cosine"}
#: Settings a new network's training leaves unsaid (those of ``tcompress train``): the paper's
#: RMSprop with a multi-step schedule.
TRAIN_DEFAULTS = {"steps": 4000, "lr": 2.5e-4, "schedule": "step"}
_SETTINGS_FIELDS = tuple(f.name for f in dataclasses.fields(TrainSettings))

Source = str | os.PathLike


@dataclass
class FinetuneResult:
    """What :func:`finetune` or :func:`train` did; :meth:`to_dict` is the summary that
    ``tcompress finetune --json`` prints.

    ``model`` is the trained network (on the CPU, in eval mode); ``output`` and ``state`` the
    files written (rank 0 writes them, every rank reports them); ``rank`` this process's among
    ``processes``.
    """

    model: nn.Module
    settings: TrainSettings
    training: TrainResult
    output: Path | None
    state: Path | None
    processes: int = 1
    rank: int = 0
    recalibrated_images: int = 0
    cached_samples: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that wrote the files."""
        return self.rank == 0

    def to_dict(self) -> dict:
        return {
            "recalibrated_images": self.recalibrated_images,
            "cached_samples": self.cached_samples,
            "output": None if self.output is None else str(self.output),
            "state": None if self.state is None else str(self.state),
            "processes": self.processes,
            "settings": self.settings.to_dict(),
            **self.training.to_dict(),
        }


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by a KeyboardInterrupt (Ctrl-C) before its model was written.

    ``state`` is the training state written every ``save_every`` steps, which ``resume=``
    continues from (None when there is none); ``rank`` is the process that stopped.
    """

    def __init__(self, state: Path | None, rank: int = 0) -> None:
        super().__init__(f"interrupted; resume from {state}" if state else "interrupted")
        self.state, self.rank = state, rank

    @property
    def main(self) -> bool:
        return self.rank == 0


def finetune(
    model: Source | nn.Module | None,
    data: Source,
    *,
    config: HourglassConfig | Mapping[str, int] | None = None,
    method: str | None = None,
    ranks: Any = None,
    ratio: float | None = None,
    settings: TrainSettings | None = None,
    teacher: Source | nn.Module | None = None,
    forward: str | None = None,
    images: Source | None = None,
    val_data: Source | None = None,
    train_samples: int | None = None,
    cache: bool = False,
    recalibrate: int = 0,
    image_size: int = 256,
    eval_every: int = 0,
    eval_samples: int = 500,
    output: Source | None = None,
    force: bool = False,
    save_every: int = 0,
    resume: Source | None = None,
    workers: int = 0,
    device: str | torch.device = "cpu",
    on_event: Callable[[dict], None] | None = None,
    progress: Callable[[str], None] | None = None,
    **fields: Any,
) -> FinetuneResult:
    """Fine-tune ``model`` (a T-Net, a layer-wise network or a dense hourglass) on ``data``, with
    heatmap loss on every stack, distillation from ``teacher``, or both; write it to ``output``.

    Under ``torchrun`` every process runs this with the same arguments: each trains on its
    shard, rank 0 alone writes files and reports.

    Parameters
    ----------
    model
        A file (:func:`tcompress.load` reads it) or a module, trained in place. None with
        ``config``: a new network.
    data
        A spec as :func:`~tcompress.data.make_dataset` takes it: ``"synthetic"``, an MPII-style
        annotation file or folder, or (with ``teacher``) a folder of unlabeled images.
    config
        A :class:`~tcompress.models.HourglassConfig` (or a mapping of its fields): train a new
        :class:`~tcompress.models.StackedHourglass`, its weights drawn from the seed, as
        :func:`train` does.
    method, ranks, ratio
        With ``config``: train a T-Net of this method from scratch instead
        (:func:`~tcompress.scratch.random_tnet`: its block kernels one random low-rank tensor of
        ``ranks``, or of the ranks that meet a whole-network ``ratio``; give one of them); the
        written file is a T-Net. ``method`` defaults to ``"tucker"`` when ``ranks`` or
        ``ratio`` is given.
    settings, **fields
        The run's :class:`~tcompress.train.TrainSettings`, or its fields as keywords
        (``steps=``, ``lr=``, ``batch_size=``, ``schedule=``, ``precision=``, ``seed=`` ...),
        which also override those of ``settings``. Fields left unsaid take
        :data:`FINETUNE_DEFAULTS` (:data:`TRAIN_DEFAULTS` with ``config``), then the
        dataclass's. Without ``settings``, ``distill_weight=None`` (or unsaid) is chosen: 1
        without labels, 0.5 with a teacher and labels, 0 without a teacher. ``seed`` also seeds
        the synthetic data, the augmentation, the sample cache and a new network's weights.
    teacher
        The uncompressed network (a file or a module) whose heatmaps the model learns to match.
    forward
        ``"reconstructed"`` or ``"factorized"``: the T-Net forward form to train in; default:
        the file's (or the module's; ``"reconstructed"`` for a T-Net from scratch). Does not
        apply to dense and layer-wise networks.
    images
        MPII: the folder the annotations' image paths are relative to (for ``data`` only).
    val_data
        Labelled data for PCKh; default: the validation split of ``data`` when it has one.
    train_samples
        Train on the first this many samples of ``data``; default: all (10000 for synthetic).
    cache
        Generate every training sample once (in ``workers`` processes) into a
        :class:`~tcompress.data.SampleCache` and serve it again, mirrored, in later epochs.
    recalibrate
        First re-estimate every BatchNorm's statistics from this many training images (not when
        resuming: the state holds them).
    image_size
        Input side; heatmaps are a quarter of it.
    eval_every, eval_samples
        Evaluate PCKh on ``eval_samples`` validation samples every ``eval_every`` steps (0: at
        the end only).
    output, force
        Where rank 0 writes the trained network (atomically, with
        :func:`~tcompress.serialize.save_model`); an existing file only with ``force``. None:
        nothing written, the network is in the result.
    save_every, resume
        Write the training state to ``OUTPUT.state`` every ``save_every`` steps and at the end;
        ``resume`` continues from such a state, to the result of an uninterrupted run.
    workers
        Data loading processes.
    device
        ``cpu``, ``cuda`` or ``cuda:N``; under ``torchrun``, ``cuda`` is one GPU per process.
    on_event
        Called on rank 0 with ``{"kind": ..., ...}``: ``"warning"`` (``name``, ``message``;
        without ``on_event`` warnings are logged), ``"start"`` (``steps``) before the first
        step, then :func:`~tcompress.train.fit`'s ``"step"``, ``"eval"`` and ``"save"``.
    progress
        Called on rank 0 with a status line as preparation phases start and advance (caching,
        BatchNorm re-estimation).

    Returns
    -------
    FinetuneResult

    Raises
    ------
    TrainingInterrupted
        On a KeyboardInterrupt: nothing was written but the last training state.
    TcompressError
        For bad arguments, naming the parameter, and for bad data, models or files.
    """
    if (model is None) == (config is None):
        raise TcompressError(
            "give model= (a network to fine-tune, a file or a module) or config= (a new "
            f"StackedHourglass), one of them; got model={_name(model)} and "
            f"config={_name(config)}"
        )
    scratch = _scratch(method, ranks, ratio)
    if scratch is not None and config is None:
        raise TcompressError(
            f"{param('method')}, {param('ranks')} and {param('ratio')} build a new T-Net "
            f"(with config=); a model given is trained as it is, got model={_name(model)}"
        )
    defaults = FINETUNE_DEFAULTS if config is None else TRAIN_DEFAULTS
    settings, choose_weight = _settings(settings, fields, defaults)
    _check_counts(
        train_samples=train_samples,
        recalibrate=recalibrate,
        image_size=image_size,
        eval_every=eval_every,
        eval_samples=eval_samples,
        save_every=save_every,
        workers=workers,
    )
    if save_every and output is None:
        raise OutputError(
            f"save_every={save_every} writes the training state beside the output "
            "(OUTPUT.state); give output="
        )
    from tcompress.checkpoint import check_output

    paths = tuple(p for p in (model, teacher, resume) if isinstance(p, str | os.PathLike))
    out = None if output is None else check_output(output, force=force, inputs=paths)
    state = Path(f"{out}.state") if save_every else None
    context = setup(device)
    say = progress if progress is not None and context.main else _ignore
    emit = on_event if on_event is not None and context.main else _ignore
    try:
        net = _network(model, config, forward, settings.seed, scratch)
        teacher_net = None if teacher is None else _network(teacher, None, None, settings.seed)
        train_data, val, labelled = _datasets(
            data, val_data, images, train_samples, image_size, eval_samples, settings.seed
        )
        if choose_weight:
            weight = 0.0 if teacher is None else (0.5 if labelled else 1.0)
            settings = dataclasses.replace(settings, distill_weight=weight)
        if settings.precision == "bf16" and context.main and _emulated_bf16(context.device):
            _warn(on_event, "bf16-emulated", context.device)
        cached = recalibrated = 0
        if cache:
            train_data = _cached(train_data, workers, settings.seed, say)
            cached = len(train_data)
            workers = 0  # a lookup is cheaper than handing samples between processes
        if recalibrate and resume is None:
            say("Re-estimating BatchNorm statistics")
            recalibrated = _recalibrate(net, train_data, recalibrate, settings, workers, context)
        emit({"kind": "start", "steps": settings.steps})
        training = fit(
            net,
            train_data,
            settings,
            teacher=teacher_net,
            val_data=val,
            eval_every=eval_every,
            context=context,
            num_workers=workers,
            checkpoint=state,
            save_every=save_every,
            resume=resume,
            on_event=on_event,
        )
        net.cpu().eval()
        if context.main and out is not None:
            from tcompress.serialize import save_model

            save_model(net, out, force=force)
        context.barrier()
    except KeyboardInterrupt:
        kept = state if state is not None and state.exists() else None
        raise TrainingInterrupted(kept, rank=context.rank) from None
    finally:
        teardown(context)
    return FinetuneResult(
        net,
        settings,
        training,
        out,
        state,
        processes=context.world,
        rank=context.rank,
        recalibrated_images=recalibrated,
        cached_samples=cached,
    )


def train(
    config: HourglassConfig | Mapping[str, int],
    data: Source,
    *,
    method: str | None = None,
    ranks: Any = None,
    ratio: float | None = None,
    **options: Any,
) -> FinetuneResult:
    """Train a new :class:`~tcompress.models.StackedHourglass` of ``config`` (a
    :class:`~tcompress.models.HourglassConfig` or a mapping of its fields) on ``data``, its
    weights drawn from the seed; the settings left unsaid take :data:`TRAIN_DEFAULTS`.

    With ``method`` (``"tucker"``, ``"mps"``, ``"cp"``, ``"tr"``; Tucker when only ``ranks``
    or ``ratio`` is given) and ``ranks`` or ``ratio``: a T-Net of that hourglass trained from
    scratch (:func:`~tcompress.scratch.random_tnet`), written as a T-Net file.

    ``options`` are those of :func:`finetune` (``output=``, ``steps=``, ``lr=`` ...).
    """
    return finetune(None, data, config=config, method=method, ranks=ranks, ratio=ratio, **options)


def _ignore(*args: Any) -> None:
    pass


def _name(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def _settings(
    settings: TrainSettings | None, fields: dict[str, Any], defaults: dict[str, Any]
) -> tuple[TrainSettings, bool]:
    """The run's settings, and whether the distillation weight is left to choose."""
    unknown = sorted(set(fields) - set(_SETTINGS_FIELDS))
    if unknown:
        raise TypeError(
            f"finetune() got unexpected keyword argument(s) {', '.join(unknown)}; expected "
            f"its parameters or the TrainSettings fields {', '.join(_SETTINGS_FIELDS)}"
        )
    fields = {k: v for k, v in fields.items() if not (k == "distill_weight" and v is None)}
    if settings is not None:
        return dataclasses.replace(settings, **fields), False
    return TrainSettings(**{**defaults, **fields}), "distill_weight" not in fields


def _check_counts(**counts: int | None) -> None:
    minimum = {"train_samples": 1, "image_size": 16, "eval_samples": 1}
    for name, value in counts.items():
        if value is None and name == "train_samples":
            continue
        least = minimum.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise TcompressError(f"{name}= must be an integer >= {least}, got {value!r}")


def _scratch(method: str | None, ranks: Any, ratio: float | None) -> dict | None:
    """The T-Net to train from scratch (``random_tnet``'s arguments), None for none."""
    if method is None and ranks is None and ratio is None:
        return None
    return {"method": "tucker" if method is None else method, "ranks": ranks, "ratio": ratio}


def _network(
    source: Source | nn.Module | None,
    config: HourglassConfig | Mapping[str, int] | None,
    forward: str | None,
    seed: int,
    scratch: dict | None = None,
) -> nn.Module:
    """The network a file holds, a module as given, a new hourglass of ``config``, or with
    ``scratch`` a new T-Net of it."""
    from tcompress.serialize import load
    from tcompress.tnet import TNet

    if config is not None:
        if scratch is not None:
            from tcompress.scratch import random_tnet

            return random_tnet(config, **scratch, seed=seed, forward=forward or "reconstructed")
        if not isinstance(config, HourglassConfig):
            config = HourglassConfig(**config)
        torch.manual_seed(seed)
        return StackedHourglass(**dataclasses.asdict(config))
    if isinstance(source, nn.Module):
        refuse_custom(source, "tcompress.finetune trains on pose heatmaps and")
        if forward is not None and isinstance(source, TNet):
            source.set_forward(forward)
        return source
    return load(source, forward=forward)


def _datasets(
    data: Source,
    val_data: Source | None,
    images: Source | None,
    train_samples: int | None,
    image_size: int,
    eval_samples: int,
    seed: int,
) -> tuple[Dataset, Dataset | None, bool]:
    """The training set, the validation set (None when there is no labelled one) and whether
    the training set has labels."""
    from tcompress.data import ImageFolder, make_dataset

    heatmap = image_size // 4
    train_data = make_dataset(
        data, "train", image_size, heatmap, n=train_samples, seed=seed, images=images
    )
    source = train_data.dataset if isinstance(train_data, Subset) else train_data
    labelled = not isinstance(source, ImageFolder)
    spec = val_data if val_data is not None else (data if labelled else None)
    if spec is None:
        return train_data, None, labelled
    root = images if val_data is None else None  # images= belongs to data=
    val = make_dataset(spec, "val", image_size, heatmap, n=eval_samples, seed=seed, images=root)
    if isinstance(val, ImageFolder) or len(val) == 0:
        val = None
    return train_data, val, labelled


def _emulated_bf16(device: torch.device) -> bool:
    # Looked up on the package, where native_bf16 is public (and where tests replace it).
    from tcompress import train as package

    return not package.native_bf16(device)


def _warn(on_event: Callable[[dict], None] | None, name: str, device: torch.device) -> None:
    message = (
        f"{device.type} has no native bfloat16 arithmetic here; precision='bf16' is likely "
        "slower than 'fp32'"
    )
    if on_event is None:
        log.warning(message)
    else:
        on_event({"kind": "warning", "name": name, "device": device.type, "message": message})


def _cached(data: Dataset, workers: int, seed: int, say: Callable[[str], None]) -> Dataset:
    from tcompress.data import SampleCache

    n = len(data)
    say(f"Caching {n} training samples")
    return SampleCache(
        data,
        workers=workers,
        seed=seed,
        progress=lambda done: say(f"Caching training samples: {done}/{n}"),
    )


def _recalibrate(
    model: nn.Module,
    data: Dataset,
    n: int,
    settings: TrainSettings,
    workers: int,
    context: Distributed,
) -> int:
    """Re-estimate the BatchNorm statistics from the first ``n`` samples; the images used."""
    loader = DataLoader(
        Subset(data, range(min(n, len(data)))),
        batch_size=settings.batch_size,
        num_workers=workers,
    )
    return recalibrate_batchnorm(model, loader, device=context.device).images
