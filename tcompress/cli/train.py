"""``tcompress train`` and ``tcompress finetune``: one process, or many under ``torchrun``."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from tcompress import methods
from tcompress.cli import handle_errors, main
from tcompress.cli.options import training_options
from tcompress.vocabulary import FORWARD_FORMS

#: The library's parameters that are other flags here (``teacher``: a run that needs one).
FLAGS = {"teacher": "--distill-from"}


@main.command()
@click.option("--stacks", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--depth", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--block-depth", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--features", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--joints", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--method",
    "-m",
    default=None,
    help=f"Train a T-Net from scratch instead: {', '.join(methods.names(methods.TNET))} "
    "[default: tucker with --ranks or --ratio; without them, an uncompressed hourglass].",
)
@click.option(
    "--ranks",
    "-r",
    default=None,
    help="The T-Net's ranks, in the method's grammar as for convert (modes stack,depth,pathway,"
    "block,f_in,f_out,h,w; 'full' keeps every mode whole). "
    + " ".join(f"{n}: {methods.REGISTRY[n].ranks}." for n in methods.names(methods.TNET)),
)
@click.option(
    "--ratio",
    type=float,
    default=None,
    help="Instead of --ranks: the T-Net's whole-network compression ratio against the "
    "hourglass of these options (every rank at the largest common value, or its limit, that "
    "meets it).",
)
@click.option(
    "--forward",
    type=click.Choice(FORWARD_FORMS),
    default=None,
    help="T-Net forward form to train in and save [default: reconstructed].",
)
@training_options(steps=4000, lr=2.5e-4, schedule="step")
@handle_errors(**FLAGS)
def train(stacks, depth, block_depth, features, joints, method, ranks, ratio, forward, **options):
    """Train a new stacked hourglass from scratch (the paper's configuration by default) with
    heatmap loss on every stack; RMSprop with a multi-step schedule. Uncompressed by default;
    with --method/--ranks/--ratio, a T-Net whose block kernels are one random low-rank tensor
    (each rebuilt kernel as spread as nn.Conv2d's default initialisation), written as a T-Net
    file.

    \b
    Examples:
      tcompress train --data synthetic --stacks 2 --features 32 --steps 4000 -o hg.pth
      tcompress train --data synthetic --stacks 2 --features 32 --ranks 2,4,3,2,16,16,3,3 -o t.pt
      tcompress train --data synthetic --stacks 2 --features 32 --method mps --ratio 3 -o t.pt
      torchrun --nproc_per_node 2 -m tcompress train --data mpii/ -o hg.pth
    """
    from tcompress.models import HourglassConfig
    from tcompress.train import train as train_new

    config = HourglassConfig(
        n_stacks=stacks, depth=depth, block_depth=block_depth, features=features, n_joints=joints
    )
    as_json = options["as_json"]
    result = _run(
        functools.partial(train_new, config, method=method, ranks=ranks, ratio=ratio),
        forward=forward,
        **options,
    )
    summary = getattr(result.model, "summary", None) if result.main else None
    if summary and not as_json:
        from tcompress.cli.render import stdout

        stdout().print(
            f"T-Net trained from scratch: {summary['method']}, ranks "
            f"{','.join(map(str, summary['ranks']))}"
            + (f" (chosen for {summary['target']})" if summary.get("target") else "")
            + f"; {summary['params_before']:,} -> {summary['params_after']:,} parameters "
            f"({summary['compression_ratio']:.2f}x)"
        )


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
    type=click.Choice(FORWARD_FORMS),
    default=None,
    help="T-Net forward form to train in [default: the file's].",
)
@training_options(steps=500, lr=1e-4, schedule="cosine")
@handle_errors(**FLAGS)
def finetune(model, distill_from, distill_weight, recalibrate_images, forward, **options):
    """Fine-tune MODEL (a T-Net, or a dense hourglass) with heatmap loss on every stack, with
    distillation from the uncompressed network, or both; RMSprop, its learning rate falling to
    zero along a cosine by default.

    A network converted with --arch (your own, whose task tcompress does not know) is refused:
    a T-Net is an nn.Module, fine-tune it in your own training loop (tcompress.load(FILE,
    arch=...)), as examples/custom_network.py does.

    \b
    Examples:
      tcompress finetune tnet.pt --data synthetic --steps 500 --recalibrate 512 -o tnet-ft.pt
      tcompress finetune tnet.pt --data images/ --distill-from hg.pth -o tnet-ft.pt
      torchrun --nproc_per_node 2 -m tcompress finetune tnet.pt --data synthetic -o tnet-ft.pt
    """
    from tcompress.cli.render import refuse_custom_network
    from tcompress.train import finetune as finetune_model

    refuse_custom_network(
        model,
        "finetune",
        "trains on pose heatmaps (heatmap loss on every stack, PCKh@0.5 on joints)",
        "Fine-tune it in your own PyTorch training loop: {load} is an nn.Module",
    )
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
    and the display as its callbacks; rank 0 prints the summary. Returns the run's result."""
    from tcompress.cli.progress import TrainingProgress
    from tcompress.cli.render import print_json, stdout
    from tcompress.train import TrainingInterrupted

    try:
        with TrainingProgress(show=not as_json) as display:
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
        return result
    if as_json:
        print_json(result.to_dict())
        return result
    done, console = result.training, stdout()
    last = done.evaluations[-1]["pckh"] if done.evaluations else None
    console.print(
        f"{done.steps} steps, {done.images} images in {done.seconds / 60:.1f} min on "
        f"{result.processes} process(es); final loss {done.final_loss:.3g}"
        + (f"; PCKh@0.5 {last:.1f}%" if last is not None else "")
    )
    console.print(f"wrote {result.output}" + (f" and {result.state}" if result.state else ""))
    return result
