"""``tcompress demo``: convert, fine-tune, evaluate and export the bundled pretrained hourglass."""

from __future__ import annotations

from pathlib import Path

import click

from tcompress.cli import handle_errors, main


@main.command()
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep the checkpoint, the T-Net and the ONNX files here [default: a temporary directory].",
)
@click.option("--ranks", default=None, help="Tucker ranks of the T-Net [default: about 3x].")
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Fine-tuning steps of 16 images [default: 400, a few minutes on 2 CPU cores].",
)
@click.option(
    "--train-samples",
    type=click.IntRange(min=1),
    default=None,
    help="Synthetic training samples, rendered once and reused [default: 1600].",
)
@click.option("--val-samples", type=click.IntRange(min=1), default=500, show_default=True)
@click.option(
    "--image-size",
    type=click.IntRange(min=16),
    default=256,
    show_default=True,
    help="Input side (the bundled model was trained at 256).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic data.")
@click.option("--force", is_flag=True, help="Overwrite the files already in --output-dir.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@handle_errors
def demo(output_dir, ranks, steps, train_samples, val_samples, image_size, seed, force, as_json):
    """Compress the bundled pretrained hourglass: convert to a T-Net, re-estimate BatchNorm,
    fine-tune, evaluate PCKh after every stage, export to ONNX; no files or downloads needed.

    \b
    Example:
      tcompress demo
      tcompress demo --ranks 2,4,3,2,20,20,3,3 --steps 300 -o demo/
    """
    from tcompress.cli.render import print_json, quiet_status, stderr, stdout
    from tcompress.experiments.demo import run_demo

    status = quiet_status() if as_json else stderr().status("Starting", spinner="dots")
    with status:
        report = run_demo(
            output_dir,
            ranks=ranks,
            steps=steps,
            train_samples=train_samples,
            val_samples=val_samples,
            image_size=image_size,
            seed=seed,
            force=force,
            progress=status.update,
        )
    if as_json:
        print_json(report.to_dict())
        return
    print_demo(report)
    if output_dir:
        stdout().print(f"files kept in {output_dir}")


def print_demo(report) -> None:
    """The bundled model, the exactness check, the table of stages and how they were run."""
    from rich.table import Table

    from tcompress.cli.render import stdout
    from tcompress.experiments.demo import DEMO_CALIBRATION, DEMO_LR
    from tcompress.models import pretrained_info

    info, console = pretrained_info(), stdout()
    trained = info["result"]
    console.print(
        "[bold]Bundled model[/bold] StackedHourglass("
        + ", ".join(f"{k}={v}" for k, v in report.config.items())
        + f"), trained {trained['steps']} steps on synthetic poses at "
        f"{info['image_size']}x{info['image_size']}"
    )
    console.print(
        f"Full-rank Tucker conversion reproduces it: worst output error "
        f"{report.full_rank_error:.1e} (max |T-Net - original| / max |original|)."
    )
    table = Table(
        title=f"Tucker T-Net, ranks {report.ranks}: PCKh@0.5 on {report.val_samples} held-out "
        "synthetic images",
        title_justify="left",
    )
    columns = ("model", "parameters", "compression", "PCKh@0.5", "ONNX speed-up", "file size")
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for stage in report.stages:
        table.add_row(
            stage.name,
            f"{stage.params:,}",
            f"{stage.compression:.2f}x",
            f"{stage.pckh:.1f}%",
            "" if stage.onnx_speedup is None else f"{stage.onnx_speedup:.2f}x ({stage.onnx_form})",
            "" if stage.file_ratio is None else f"{1 / stage.file_ratio:.2f}x",
        )
    console.print(table)
    console.print(
        f"BatchNorm re-estimated from {report.recalibration_images} unlabeled images; fine-tuned "
        f"{report.finetune_steps} steps of 16 images (RMSprop, cosine decay from "
        f"{_short(DEMO_LR)}, heatmap loss on every stack, {report.precision}) in "
        f"{report.finetune_seconds / 60:.1f} min, on {report.train_samples:,} synthetic samples "
        f"rendered once in {report.cache_seconds:.0f} s and mirrored at random when they come "
        "again. ONNX speed-up: latency of the original's export "
        "/ the T-Net's, in the faster of its two forms (factorized or fused dense), ONNX Runtime "
        "on the CPU, batch 1, median of 10 interleaved rounds; file size: the export's bytes / "
        "the original's. INT8 export: ONNX Runtime's static quantization (QDQ, per-channel 7-bit "
        f"weights, uint8 activations, percentile ranges) calibrated on {DEMO_CALIBRATION} "
        "synthetic training "
        "images, its PCKh that of the file."
    )


def _short(value: float) -> str:
    """1.5e-3, not 0.0015 or 1.5e-03."""
    return f"{value:.1e}".replace("e-0", "e-")
