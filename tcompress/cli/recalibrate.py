"""``tcompress recalibrate``: re-estimate BatchNorm statistics from unlabeled images."""

from __future__ import annotations

from pathlib import Path

import click

from tcompress.cli import handle_errors, images_option, main


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--data",
    required=True,
    help="A folder of images (no labels needed), 'synthetic', or an MPII-style set.",
)
@images_option
@click.option(
    "-n",
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Number of images to run.",
)
@click.option("--batch-size", type=click.IntRange(min=2), default=16, show_default=True)
@click.option("--image-size", type=click.IntRange(min=16), default=256, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic data set.")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True)
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@handle_errors
def recalibrate(
    model, data, images, n, batch_size, image_size, device, seed, output, force, as_json
):
    """Re-estimate every BatchNorm's running statistics of MODEL (dense or T-Net) from forward
    passes over unlabeled images; weights are unchanged.

    The images are prepared as the hourglasses expect them (crop, size, pixel scale). A network
    converted with --arch (your own, with its own preprocessing) is refused: re-estimate its
    statistics on your own image batches with tcompress.train.recalibrate_batchnorm, as
    examples/custom_network.py does.

    \b
    Examples:
      tcompress recalibrate tnet.pt --data images/ -o tnet-recal.pt
      tcompress recalibrate tnet.pt --data synthetic -n 256 -o tnet-recal.pt
    """
    from tcompress.cli.render import (
        print_json,
        quiet_status,
        refuse_custom_network,
        stderr,
        stdout,
    )
    from tcompress.train import recalibrate_model

    refuse_custom_network(
        model,
        "recalibrate",
        "feeds it images prepared as the hourglasses expect them (crop, size, pixel scale), "
        "not as your network's own preprocessing does",
        "Re-estimate its BatchNorm statistics on your own image batches with "
        "tcompress.train.recalibrate_batchnorm({load}, batches)",
    )

    status = quiet_status() if as_json else stderr().status("Re-estimating", spinner="dots")
    with status:
        report = recalibrate_model(
            model,
            data,
            n=n,
            batch_size=batch_size,
            image_size=image_size,
            device=device,
            seed=seed,
            images=images,
            output=output,
            force=force,
            progress=lambda done, total: status.update(f"Re-estimating: batch {done}/{total}"),
        )
    if as_json:
        print_json(report.to_dict())
    else:
        stdout().print(
            f"re-estimated {report.batchnorms} BatchNorms from {report.images} images "
            f"({report.batches} batches); wrote {report.output}"
        )
