"""``tcompress train`` and ``tcompress finetune``: one process, or many under ``torchrun``."""

from __future__ import annotations

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
    config = dict(
        n_stacks=stacks, depth=depth, block_depth=block_depth, features=features, n_joints=joints
    )
    _run(None, config=config, **options)


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
    _run(
        model,
        teacher=distill_from,
        distill_weight=distill_weight,
        recalibrate_images=recalibrate_images,
        forward=forward,
        **options,
    )


def _run(
    model_path,
    *,
    config=None,
    teacher=None,
    distill_weight=None,
    recalibrate_images=0,
    forward=None,
    data,
    images,
    val_data,
    train_samples,
    cache,
    steps,
    batch_size,
    optimizer,
    lr,
    schedule,
    precision,
    milestones,
    gamma,
    weight_decay,
    no_bias_correction,
    image_size,
    eval_every,
    eval_samples,
    save_every,
    resume,
    workers,
    device,
    seed,
    output,
    force,
    as_json,
):
    """Load or build the model, the data and the process group; train; rank 0 writes."""
    import torch
    from torch.utils.data import Subset

    from tcompress.checkpoint import check_output
    from tcompress.cli.render import print_json, stderr, stdout
    from tcompress.data import ImageFolder, make_dataset
    from tcompress.models import StackedHourglass
    from tcompress.serialize import load, save_model
    from tcompress.train import TrainSettings, fit, native_bf16, recalibrate_batchnorm
    from tcompress.train.distributed import setup, teardown

    inputs = tuple(p for p in (model_path, teacher, resume) if p is not None)
    out = check_output(output, force=force, inputs=inputs)
    state_path = Path(f"{out}.state") if save_every else None
    context = setup(device)
    try:
        if model_path is None:
            torch.manual_seed(seed)
            model = StackedHourglass(**config)
        else:
            model = load(model_path, forward=forward) if forward else load(model_path)
        teacher_model = load(teacher) if teacher is not None else None
        heatmap = image_size // 4
        train_data = make_dataset(
            data, "train", image_size, heatmap, n=train_samples, seed=seed, images=images
        )
        source = train_data.dataset if isinstance(train_data, Subset) else train_data
        labelled = not isinstance(source, ImageFolder)
        if distill_weight is None:
            distill_weight = 0.0 if teacher is None else (0.5 if labelled else 1.0)
        val_spec = val_data if val_data is not None else (data if labelled else None)
        val = None
        if val_spec is not None:
            root = images if val_data is None else None  # --images belongs to --data
            val = make_dataset(
                val_spec, "val", image_size, heatmap, n=eval_samples, seed=seed, images=root
            )
            if isinstance(val, ImageFolder) or len(val) == 0:
                val = None
        settings = TrainSettings(
            steps=steps,
            batch_size=batch_size,
            optimizer=optimizer,
            lr=lr,
            milestones=milestones,
            gamma=gamma,
            weight_decay=weight_decay,
            distill_weight=distill_weight,
            seed=seed,
            bias_correction=not no_bias_correction,
            schedule=schedule,
            precision=precision,
        )
        show = context.main and not as_json
        if precision == "bf16" and context.main and not native_bf16(context.device):
            click.echo(
                f"warning: {context.device.type} has no native bfloat16 arithmetic here; "
                "--precision bf16 is likely slower than fp32",
                err=True,
            )
        summary = {"recalibrated_images": 0, "cached_samples": 0}
        if cache:
            train_data = _cached(train_data, workers, seed, show)
            summary["cached_samples"] = len(train_data)
            workers = 0  # a lookup is cheaper than handing samples between processes
        if recalibrate_images and resume is None:
            loader = torch.utils.data.DataLoader(
                torch.utils.data.Subset(
                    train_data, range(min(recalibrate_images, len(train_data)))
                ),
                batch_size=batch_size,
                num_workers=workers,
            )
            status = stderr().status("Re-estimating BatchNorm statistics") if show else None
            if status:
                status.start()
            report = recalibrate_batchnorm(model, loader, device=context.device)
            if status:
                status.stop()
            summary["recalibrated_images"] = report.images
        with _progress(show, steps) as progress:
            result = fit(
                model,
                train_data,
                settings,
                teacher=teacher_model,
                val_data=val,
                eval_every=eval_every,
                context=context,
                num_workers=workers,
                checkpoint=state_path,
                save_every=save_every,
                resume=resume,
                on_event=progress.event,
            )
        if context.main:
            save_model(model.cpu().eval(), out)
        context.barrier()
    except KeyboardInterrupt:
        if context.main:
            kept = state_path is not None and state_path.exists()
            click.echo(
                "Interrupted; nothing written"
                + (f" but {state_path}: continue with --resume {state_path}" if kept else ""),
                err=True,
            )
        raise SystemExit(130) from None
    finally:
        teardown(context)
    if not context.main:
        return
    summary.update(
        {
            "output": str(out),
            "state": str(state_path) if state_path else None,
            "processes": context.world,
            "settings": settings.to_dict(),
            **result.to_dict(),
        }
    )
    if as_json:
        print_json(summary)
        return
    console = stdout()
    last = result.evaluations[-1]["pckh"] if result.evaluations else None
    console.print(
        f"{result.steps} steps, {result.images} images in {result.seconds / 60:.1f} min on "
        f"{context.world} process(es); final loss {result.final_loss:.3g}"
        + (f"; PCKh@0.5 {last:.1f}%" if last is not None else "")
    )
    console.print(f"wrote {out}" + (f" and {state_path}" if state_path else ""))


def _cached(data, workers: int, seed: int, show: bool):
    """``data`` generated once into a :class:`~tcompress.data.SampleCache`, with a status line."""
    from tcompress.cli.render import quiet_status, stderr
    from tcompress.data import SampleCache

    status = stderr().status(f"Caching {len(data)} training samples") if show else quiet_status()
    with status:
        return SampleCache(
            data,
            workers=workers,
            seed=seed,
            progress=lambda done: status.update(f"Caching training samples: {done}/{len(data)}"),
        )


class _progress:
    """A rich progress bar (loss, learning rate, speed) on rank 0, or nothing."""

    def __init__(self, show: bool, steps: int) -> None:
        self.show, self.steps = show, steps

    def __enter__(self):
        if self.show:
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
            self.task = self.bar.add_task("Training", total=self.steps, info="")
            import time

            self.clock, self.last = time.perf_counter, None
        return self

    def __exit__(self, *exc):
        if self.show:
            self.bar.stop()
        return False

    def event(self, event: dict) -> None:
        if not self.show:
            return
        if event["kind"] == "step":
            now = self.clock()
            speed = "" if self.last is None else f" {1 / max(now - self.last, 1e-9):.2f} step/s"
            self.last = now
            info = f"loss {event['loss']:.3g} lr {event['lr']:.2g}{speed}"
            self.bar.update(self.task, completed=event["step"], info=info)
        elif event["kind"] == "eval":
            self.bar.console.print(f"step {event['step']}: PCKh@0.5 {event['pckh']:.1f}%")
            self.last = None
