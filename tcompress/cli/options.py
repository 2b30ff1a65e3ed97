"""Option groups that several commands share."""

from __future__ import annotations

from pathlib import Path

import click

from tcompress.cli import images_option
from tcompress.vocabulary import OPTIMIZERS, PRECISIONS, SCHEDULES


def _milestones(ctx, param, value):
    if value is None:
        return None
    try:
        steps = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of steps") from None
    if any(s < 1 for s in steps):
        raise click.BadParameter("milestones are positive step numbers")
    return steps


def training_options(steps: int, lr: float, schedule: str):
    """The options ``train`` and ``finetune`` share (data, schedule, evaluation, checkpoints)."""
    options = [
        click.option(
            "--data",
            required=True,
            help="'synthetic', an MPII-style annotation JSON or folder, or (finetune with "
            "--distill-from) a folder of unlabeled images.",
        ),
        images_option,
        click.option(
            "--val-data",
            default=None,
            help="Labelled data for PCKh [default: the validation split of --data when it has "
            "one].",
        ),
        click.option(
            "--train-samples",
            type=click.IntRange(min=1),
            default=None,
            help="Train on the first N samples of --data [default: all; 10000 for synthetic].",
        ),
        click.option(
            "--cache",
            is_flag=True,
            help="Generate every training sample once (in --workers processes), keep it in "
            "memory (about 0.5 MB per 256x256 sample) and serve it again in later epochs, "
            "mirrored at random. Synthetic rendering costs as much CPU time as a training step: "
            "use it with --train-samples for short runs on CPUs.",
        ),
        click.option("--steps", type=click.IntRange(min=1), default=steps, show_default=True),
        click.option(
            "--batch-size",
            type=click.IntRange(min=2),
            default=16,
            show_default=True,
            help="Per process; under torchrun the effective batch is this times the processes.",
        ),
        click.option(
            "--optimizer",
            type=click.Choice(OPTIMIZERS),
            default="rmsprop",
            show_default=True,
        ),
        click.option(
            "--lr", type=click.FloatRange(min=0, min_open=True), default=lr, show_default=True
        ),
        click.option(
            "--schedule",
            type=click.Choice(SCHEDULES),
            default=schedule,
            show_default=True,
            help="Learning rate: step (times --gamma at each milestone), or cosine or linear "
            "decay to zero at the last step.",
        ),
        click.option(
            "--warmup",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Raise the learning rate linearly from zero over the first N steps, then follow "
            "--schedule.",
        ),
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            default="fp32",
            show_default=True,
            help="bf16: mixed precision (bfloat16 autocast), several times faster on CPUs with "
            "AVX512-BF16 or AMX and on recent GPUs, slower elsewhere.",
        ),
        click.option(
            "--milestones",
            callback=_milestones,
            default=None,
            help="Steps at which the learning rate is multiplied by --gamma, e.g. 3000,4000 "
            "[default: 60% and 85% of --steps].",
        ),
        click.option(
            "--gamma", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True
        ),
        click.option(
            "--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True
        ),
        click.option(
            "--no-bias-correction",
            is_flag=True,
            help="Plain RMSprop: no correction of its squared-gradient average's zero start "
            "(whose first steps are up to 10x the learning rate).",
        ),
        click.option(
            "--image-size",
            type=click.IntRange(min=16),
            default=256,
            show_default=True,
            help="Input side; heatmaps are a quarter of it.",
        ),
        click.option(
            "--eval-every",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Evaluate PCKh every N steps (0: at the end only).",
        ),
        click.option("--eval-samples", type=click.IntRange(min=1), default=500, show_default=True),
        click.option(
            "--save-every",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Write the training state to OUTPUT.state every N steps (and at the end).",
        ),
        click.option(
            "--resume",
            type=click.Path(path_type=Path),
            default=None,
            help="Continue from a training state written by --save-every; the result is the "
            "same as an uninterrupted run's.",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Data loading processes.",
        ),
        click.option(
            "--device",
            default="cpu",
            show_default=True,
            help="cpu, cuda or cuda:N (under torchrun: cuda means one GPU per process).",
        ),
        click.option(
            "--seed",
            default=0,
            show_default=True,
            help="Seed of the data order, the synthetic data and new weights.",
        ),
        click.option("--output", "-o", type=click.Path(path_type=Path), required=True),
        click.option("--force", is_flag=True, help="Overwrite the output file if it exists."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end."),
    ]

    def wrap(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return wrap
