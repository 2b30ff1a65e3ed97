"""``tcompress train`` and ``tcompress finetune``: one process, or many under ``torchrun``."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from tcompress.cli import handle_errors, images_option, main


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
            type=click.Choice(["rmsprop", "adam", "sgd"]),
            default="rmsprop",
            show_default=True,
        ),
        click.option(
            "--lr", type=click.FloatRange(min=0, min_open=True), default=lr, show_default=True
        ),
        click.option(
            "--schedule",
            type=click.Choice(["step", "cosine", "linear"]),
            default=schedule,
            show_default=True,
            help="Learning rate: step (times --gamma at each milestone), or cosine or linear "
            "decay to zero at the last step.",
        ),
        click.option(
            "--precision",
            type=click.Choice(["fp32", "bf16"]),
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


@main.command()
@click.option("--stacks", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--depth", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--block-depth", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--features", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--joints", type=click.IntRange(min=1), default=16, show_default=True)
@training_options(steps=4000, lr=2.5e-4, schedule="step")
@handle_errors
def train(stacks, depth, block_depth, features, joints, **options):
    """Train an uncompressed stacked hourglass from scratch (the paper's configuration by
    default) with heatmap loss on every stack; RMSprop with a multi-step schedule.

    \b
    Examples:
      tcompress train --data synthetic --stacks 2 --features 32 --steps 4000 -o hg.pth
      torchrun --nproc_per_node 2 -m tcompress train --data mpii/ -o hg.pth
    """
    from tcompress.models import HourglassConfig
    from tcompress.train import train as train_new

    config = HourglassConfig(
        n_stacks=stacks, depth=depth, block_depth=block_depth, features=features, n_joints=joints
    )
    _run(functools.partial(train_new, config), **options)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--distill-from",
    type=click.Path(path_type=Path),
    default=None,
    help="The uncompressed network: match its heatmaps (works with unlabeled images).",
)
@click.option(
    "--distill-weight",
    type=click.FloatRange(0, 1),
    default=None,
    help="Loss = (1-w) supervised + w distillation [default: 1 without labels, else 0.5].",
)
@click.option(
    "--recalibrate",
    "recalibrate_images",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="First re-estimate every BatchNorm's statistics from this many training images.",
)
@click.option(
    "--forward",
    type=click.Choice(["reconstructed", "factorized"]),
    default=None,
    help="T-Net forward form to train in [default: the file's].",
)
@training_options(steps=500, lr=1e-4, schedule="cosine")
@handle_errors
def finetune(model, distill_from, distill_weight, recalibrate_images, forward, **options):
    """Fine-tune MODEL (a T-Net, or a dense hourglass) with heatmap loss on every stack, with
    distillation from the uncompressed network, or both; RMSprop, its learning rate falling to
    zero along a cosine by default.

    \b
    Examples:
      tcompress finetune tnet.pt --data synthetic --steps 500 --recalibrate 512 -o tnet-ft.pt
      tcompress finetune tnet.pt --data images/ --distill-from hg.pth -o tnet-ft.pt
      torchrun --nproc_per_node 2 -m tcompress finetune tnet.pt --data synthetic -o tnet-ft.pt
    """
    from tcompress.train import finetune as finetune_model

    _run(
        functools.partial(finetune_model, model),
        teacher=distill_from,
        distill_weight=distill_weight,
        recalibrate=recalibrate_images,
        forward=forward,
        **options,
    )


def _run(run, *, no_bias_correction, as_json, **options):
    """``run`` (:func:`tcompress.train.finetune` or ``train``) with the options as its arguments
    and the display as its callbacks; rank 0 prints the summary."""
    from tcompress.cli.render import print_json, stdout
    from tcompress.train import TrainingInterrupted

    try:
        with _progress(show=not as_json) as display:
            result = run(
                bias_correction=not no_bias_correction,
                on_event=display.event,
                progress=display.status,
                **options,
            )
    except TrainingInterrupted as stop:
        if stop.main:
            click.echo(
                "Interrupted; nothing written"
                + (f" but {stop.state}: continue with --resume {stop.state}" if stop.state else ""),
                err=True,
            )
        raise SystemExit(130) from None
    if not result.main:
        return
    if as_json:
        print_json(result.to_dict())
        return
    done, console = result.training, stdout()
    last = done.evaluations[-1]["pckh"] if done.evaluations else None
    console.print(
        f"{done.steps} steps, {done.images} images in {done.seconds / 60:.1f} min on "
        f"{result.processes} process(es); final loss {done.final_loss:.3g}"
        + (f"; PCKh@0.5 {last:.1f}%" if last is not None else "")
    )
    console.print(f"wrote {result.output}" + (f" and {result.state}" if result.state else ""))


#: The library's warnings in the command line's words (its flags for the library's parameters).
WARNINGS = {
    "bf16-emulated": "{device} has no native bfloat16 arithmetic here; --precision bf16 is likely "
    "slower than fp32",
}


class _progress:
    """On rank 0: a status line while the data is prepared, then a progress bar (loss, learning
    rate, speed); with ``show`` False, warnings only."""

    def __init__(self, show: bool) -> None:
        self.show, self.spinner, self.bar = show, None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop_status()
        if self.bar is not None:
            self.bar.stop()
        return False

    def status(self, message: str) -> None:
        if not self.show:
            return
        if self.spinner is None:
            from tcompress.cli.render import stderr

            self.spinner = stderr().status(message)
            self.spinner.start()
        else:
            self.spinner.update(message)

    def _stop_status(self) -> None:
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None

    def event(self, event: dict) -> None:
        if event["kind"] == "warning":
            words = WARNINGS.get(event["name"])
            click.echo(f"warning: {words.format(**event) if words else event['message']}", err=True)
        if not self.show:
            return
        if event["kind"] == "start":
            self._stop_status()
            self._start_bar(event["steps"])
        elif event["kind"] == "step":
            now = self.clock()
            speed = "" if self.last is None else f" {1 / max(now - self.last, 1e-9):.2f} step/s"
            self.last = now
            info = f"loss {event['loss']:.3g} lr {event['lr']:.2g}{speed}"
            self.bar.update(self.task, completed=event["step"], info=info)
        elif event["kind"] == "eval":
            self.bar.console.print(f"step {event['step']}: PCKh@0.5 {event['pckh']:.1f}%")
            self.last = None

    def _start_bar(self, steps: int) -> None:
        import time

        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from tcompress.cli.render import stderr

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=stderr(),
        )
        self.bar.start()
        self.task = self.bar.add_task("Training", total=steps, info="")
        self.clock, self.last = time.perf_counter, None
