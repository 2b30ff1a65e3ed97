"""``tcompress compare``: every compression method at every ratio, fine-tuned alike."""

from __future__ import annotations

from pathlib import Path

import click

from tcompress.cli import handle_errors, main
from tcompress.vocabulary import PRECISIONS, SCHEDULES, SPLITS


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{text!r}; expected comma-separated numbers such as 1.5,2,3.7"
        ) from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{text!r}; expected comma-separated integers such as 0,1,2"
        ) from None


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--data",
    default="synthetic",
    show_default=True,
    help="Labelled data: 'synthetic' or an MPII-style set (its validation split is held out).",
)
@click.option(
    "--ratios", default="1.5,2,3.7,5", show_default=True, help="Whole-network compression ratios."
)
@click.option(
    "--methods",
    default="tucker,mps,layerwise-tucker,layerwise-cp,tai,trimmed",
    show_default=True,
    help="tucker, mps, cp (T-Nets), layerwise-tucker, "
    "layerwise-cp, tai, and trimmed (fewer features, trained from scratch).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Fine-tuning steps, the same for every method.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=5e-4, show_default=True)
@click.option(
    "--seeds",
    default="0,1,2",
    show_default=True,
    help="Fine-tuning seeds (data order); the accuracy is their mean.",
)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default="step",
    show_default=True,
    help="Learning-rate schedule of the fine-tuning (step: x0.1 at 60% and 85%).",
)
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@click.option(
    "--train-samples",
    type=click.IntRange(min=1),
    default=None,
    help="Fine-tune on the first N training samples of each seed [default: all].",
)
@click.option(
    "--cache",
    is_flag=True,
    help="Render the training samples once per seed and serve them again, mirrored.",
)
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Data processes."
)
@click.option(
    "--split",
    type=click.Choice(SPLITS[1:]),
    default="val",
    show_default=True,
    help="Held-out images to score: 'val' while choosing, 'test' for a reported table.",
)
@click.option("--val-samples", type=click.IntRange(min=1), default=500, show_default=True)
@click.option(
    "--recalibrate",
    type=click.IntRange(min=0),
    default=256,
    show_default=True,
    help="Images for BatchNorm re-estimation after conversion.",
)
@click.option(
    "--refine-data",
    is_flag=True,
    help="Fit the T-Nets' factors to the data before fine-tuning (data-aware).",
)
@click.option(
    "--rank-data",
    is_flag=True,
    help="Choose the T-Nets' ranks on the data (convert --ratio X --data DATA) instead of on "
    "the error bound.",
)
@click.option(
    "--per-layer",
    is_flag=True,
    help="Give layer-wise Tucker and Tai ranks of each layer's own, on the kernels' spectra "
    "(convert --per-layer) instead of one rank for every layer.",
)
@click.option("--image-size", type=click.IntRange(min=16), default=256, show_default=True)
@click.option(
    "--bootstrap",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Resamples of the held-out images for the 95% intervals.",
)
@click.option(
    "--onnx-repeats",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Timed ONNX Runtime rounds per exported model.",
)
@click.option(
    "--no-baseline",
    is_flag=True,
    help="Skip fine-tuning the uncompressed model (when another run already has that row).",
)
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where compare.json, compare.png and the ONNX files go "
    "[default: CHECKPOINT's name + .compare].",
)
@click.option("--force", is_flag=True, help="Overwrite the files already in --output-dir.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@handle_errors
def compare(
    checkpoint,
    data,
    ratios,
    methods,
    steps,
    batch_size,
    lr,
    seeds,
    schedule,
    precision,
    train_samples,
    cache,
    workers,
    split,
    val_samples,
    recalibrate,
    refine_data,
    rank_data,
    per_layer,
    image_size,
    bootstrap,
    onnx_repeats,
    no_baseline,
    device,
    output_dir,
    force,
    as_json,
):
    """Does one tensor for the whole network beat decomposing each layer? Converts CHECKPOINT
    with every method at every ratio, re-estimates BatchNorm, fine-tunes each model with the same
    budget from every seed, and reports PCKh@0.5 before and after with 95% bootstrap intervals
    (paired: the same resampled images for every row), parameters, and the ONNX speed-up of the
    factorized form over the uncompressed model.

    \b
    Examples:
      tcompress compare hg.pth --ratios 2,3 --methods tucker,layerwise-cp --steps 50
      tcompress compare hg.pth --ratios 3 --methods tucker,layerwise-cp --steps 860 --lr 1.5e-3 \\
          --schedule cosine --precision bf16 --train-samples 3000 --cache --recalibrate 512 \\
          --split test --val-samples 1000
      tcompress compare hg.pth --data mpii/ --steps 500 --seeds 0,1,2 -o comparison/
    """

    from tcompress.cli.render import (
        check_record_files,
        print_json,
        print_written,
        quiet_status,
        stderr,
        stdout,
        write_record,
    )
    from tcompress.experiments.compare import CompareSettings, plot_comparison
    from tcompress.experiments.compare import compare as run_compare

    settings = CompareSettings(
        ratios=_floats(ratios),
        methods=tuple(m.strip() for m in methods.split(",")),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seeds=_ints(seeds),
        val_samples=val_samples,
        recalibrate=recalibrate,
        refine_data=refine_data,
        rank_data=rank_data,
        per_layer=per_layer,
        image_size=image_size,
        bootstrap=bootstrap,
        onnx_repeats=onnx_repeats,
        baseline=not no_baseline,
        schedule=schedule,
        precision=precision,
        train_samples=train_samples,
        cache=cache,
        workers=workers,
        split=split,
    )
    out_dir = output_dir or checkpoint.with_name(checkpoint.name + ".compare")
    check_record_files(out_dir, "compare", force)
    status = quiet_status() if as_json else stderr().status("Comparing", spinner="dots")
    with status:
        report = run_compare(
            checkpoint,
            data,
            settings,
            out_dir=out_dir,
            device=device,
            force=force,
            progress=status.update,
        )
    record = report.to_dict()
    json_path, figure = write_record(
        out_dir,
        "compare",
        record,
        lambda path, force: plot_comparison(report, path, force=force),
        force=force,
    )
    if as_json:
        print_json(dict(record, json=str(json_path), png=figure and str(figure)))
        return
    from tcompress.cli.tables import comparison_table, difference_table

    console = stdout()
    console.print(comparison_table(record))
    differences = difference_table(report)
    if differences is not None:
        console.print(differences)
    print_written(console, json_path, figure)
